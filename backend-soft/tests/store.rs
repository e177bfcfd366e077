//! Soft-store behaviour below the keystore: KEKs, the header, atomicity,
//! locking and record binding. (The conformance suite covers the rest.)

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, Error, SecretBytes};
use keystore_backend::Aead;
use keystore_backend::BackendKey;
use keystore_backend::ErrorKind;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::Signing;
use std::path::Path;

fn pass(p: &str) -> Unlock {
    Unlock::Passphrase(SecretBytes::from_slice(p.as_bytes()))
}

/// The kind of `r`'s error; an `Ok` fails the test.
#[track_caller]
fn kind<T>(r: Result<T, Error>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.kind(),
    }
}

const CHEAP_PBKDF2: Kdf = Kdf::Pbkdf2Sha256 {
    iterations: Kdf::MIN_PBKDF2_ITERATIONS,
};

#[test]
fn passphrase_store_round_trip_and_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("s");
    let store = SoftStore::create(&d, &pass("correct horse"), Kdf::default_passphrase()).unwrap();
    assert_eq!(store.kdf(), Kdf::default_passphrase());
    let key = store
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap();
    let sig = store
        .sign(
            &BackendKey::new(key.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .unwrap();
    drop(store);
    assert_eq!(
        kind(SoftStore::open(&d, &pass("wrong horse"))),
        ErrorKind::Auth
    );
    assert_eq!(
        kind(SoftStore::open(&d, &pass(""))),
        ErrorKind::InvalidInput
    );
    let kf = dir.path().join("k");
    create_key_file(&kf).unwrap();
    assert_eq!(
        kind(SoftStore::open(&d, &Unlock::KeyFile(kf))),
        ErrorKind::Auth
    );
    let store = SoftStore::open(&d, &pass("correct horse")).unwrap();
    let pk = store
        .public_key(&BackendKey::new(
            key.handle.clone(),
            Algorithm::EcdsaP256Sha256,
        ))
        .unwrap();
    pk.verify(b"m", &sig).unwrap();
}

#[test]
fn argon2id_store_and_parameter_floors() {
    let dir = tempfile::tempdir().unwrap();
    let low_pbkdf2 = Kdf::Pbkdf2Sha256 { iterations: 1000 };
    assert_eq!(
        kind(SoftStore::create(
            &dir.path().join("a"),
            &pass("pw"),
            low_pbkdf2
        )),
        ErrorKind::Policy
    );
    let low_argon = Kdf::Argon2id {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    assert_eq!(
        kind(SoftStore::create(
            &dir.path().join("b"),
            &pass("pw"),
            low_argon
        )),
        ErrorKind::Policy
    );
    let kdf = Kdf::Argon2id {
        memory_kib: Kdf::MIN_ARGON2_MEMORY_KIB,
        iterations: 2,
        parallelism: 1,
    };
    let d = dir.path().join("c");
    let store = SoftStore::create(&d, &pass("argon pass"), kdf).unwrap();
    let h = store
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&[1; 32]),
        )
        .unwrap();
    let tag = store
        .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
        .unwrap();
    drop(store);
    assert_eq!(
        kind(SoftStore::open(&d, &pass("argon pasS"))),
        ErrorKind::Auth
    );
    let store = SoftStore::open(&d, &pass("argon pass")).unwrap();
    assert_eq!(store.kdf(), kdf);
    assert_eq!(
        store
            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
            .unwrap(),
        tag
    );
}

#[test]
fn change_unlock_raises_parameters_and_keeps_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("s");
    let store = SoftStore::create(&d, &pass("old"), CHEAP_PBKDF2).unwrap();
    let h = store
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&[2; 32]),
        )
        .unwrap();
    let tag = store
        .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
        .unwrap();
    let raised = Kdf::Pbkdf2Sha256 {
        iterations: 200_000,
    };
    store.change_unlock(&pass("new"), raised).unwrap();
    assert_eq!(
        kind(store.change_unlock(&pass("x"), Kdf::Pbkdf2Sha256 { iterations: 10 })),
        ErrorKind::Policy
    );
    drop(store);
    assert_eq!(kind(SoftStore::open(&d, &pass("old"))), ErrorKind::Auth);
    let store = SoftStore::open(&d, &pass("new")).unwrap();
    assert_eq!(store.kdf(), raised);
    assert_eq!(
        store
            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
            .unwrap(),
        tag
    );
}

fn key_file_store(root: &Path, name: &str) -> (std::path::PathBuf, Unlock) {
    let kf = root.join(format!("{name}.key"));
    create_key_file(&kf).unwrap();
    (root.join(name), Unlock::KeyFile(kf))
}

#[test]
fn damaged_header_is_integrity_not_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    drop(SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap());
    let hdr = d.join("store.hdr");
    let good = std::fs::read(&hdr).unwrap();
    for i in [0, 7, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&hdr, &bad).unwrap();
        assert_eq!(
            kind(SoftStore::open(&d, &unlock)),
            ErrorKind::Integrity,
            "flipped byte {i}"
        );
    }
    std::fs::write(&hdr, &good[..good.len() - 5]).unwrap();
    assert_eq!(kind(SoftStore::open(&d, &unlock)), ErrorKind::Integrity);
    std::fs::write(&hdr, b"").unwrap();
    assert_eq!(kind(SoftStore::open(&d, &unlock)), ErrorKind::Integrity);
    std::fs::write(&hdr, &good).unwrap();
    SoftStore::open(&d, &unlock).unwrap();
}

#[test]
fn missing_store_and_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    assert_eq!(kind(SoftStore::open(&d, &unlock)), ErrorKind::NotFound);
    drop(SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap());
    assert_eq!(
        kind(SoftStore::create(&d, &unlock, Kdf::KeyFile)),
        ErrorKind::AlreadyExists
    );
}

#[test]
fn several_openers_share_a_store_and_see_each_others_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let first = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    let second = SoftStore::open(&d, &unlock).expect("a second opener is not refused");
    let h = first
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&[5; 32]),
        )
        .unwrap();
    assert_eq!(
        second
            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
            .unwrap(),
        first
            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
            .unwrap(),
        "a key made by one opener is used by the other at its next call"
    );
    assert_eq!(second.list().unwrap(), vec![h.clone()]);
    second.destroy(&h).unwrap();
    assert_eq!(kind(first.destroy(&h)), ErrorKind::NotFound);
    // Creating over a store that exists is refused, open or not.
    assert_eq!(
        kind(SoftStore::create(&d, &unlock, Kdf::KeyFile)),
        ErrorKind::AlreadyExists
    );
}

#[test]
fn another_openers_write_in_flight_is_not_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let first = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    // A temporary file of a write that `first` has in flight.
    let tmp = d.join(".tmp-feedface.rec-8899aabbccddeeff");
    std::fs::write(&tmp, b"KSREC\x01in flight").unwrap();
    let _second = SoftStore::open(&d, &unlock).unwrap();
    assert!(tmp.exists(), "a live process's temporary was deleted");
    drop(first);
}

#[test]
fn crash_leftovers_are_removed_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let store = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    let h = store
        .import(
            &NewKey::new(Algorithm::Aes256Gcm, "k"),
            &SecretBytes::from_slice(&[3; 32]),
        )
        .unwrap();
    drop(store);
    // A crash mid-write leaves a temporary file, possibly half-written,
    // beside the records directory (older releases left it inside, where the
    // listing ignores it).
    let tmp = d.join(".tmp-deadbeef.rec-0011223344556677");
    std::fs::write(&tmp, b"KSREC\x01half").unwrap();
    let old_tmp = d.join("records").join(".tmp-deadbeef.rec-8899aabbccddeeff");
    std::fs::write(&old_tmp, b"KSREC\x01half").unwrap();
    std::fs::write(d.join(".tmp-store.hdr-00"), b"junk").unwrap();
    let store = SoftStore::open(&d, &unlock).unwrap();
    assert!(!tmp.exists(), "temporary file removed at open");
    assert_eq!(store.list().unwrap(), vec![h.clone()]);
    let sealed = store
        .encrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"aad",
            b"pt",
        )
        .unwrap();
    assert_eq!(
        store
            .decrypt(
                &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
                b"aad",
                &sealed.nonce,
                &sealed.ciphertext
            )
            .unwrap()
            .expose(),
        b"pt"
    );
}

#[test]
fn record_from_another_store_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let kf = dir.path().join("shared.key");
    create_key_file(&kf).unwrap();
    let unlock = Unlock::KeyFile(kf);
    let a = SoftStore::create(&dir.path().join("a"), &unlock, Kdf::KeyFile).unwrap();
    let b = SoftStore::create(&dir.path().join("b"), &unlock, Kdf::KeyFile).unwrap();
    let ha = a
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&[4; 32]),
        )
        .unwrap();
    std::fs::copy(a.record_path(&ha).unwrap(), b.record_path(&ha).unwrap()).unwrap();
    assert_eq!(
        kind(b.hmac_sha256(&BackendKey::new(ha.clone(), Algorithm::HmacSha256), b"x")),
        ErrorKind::Integrity
    );
    assert!(a
        .hmac_sha256(&BackendKey::new(ha.clone(), Algorithm::HmacSha256), b"x")
        .is_ok());
}

#[test]
fn wrong_algorithm_for_a_handle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let store = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    let h = store
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&[5; 32]),
        )
        .unwrap();
    drop(store);
    let store = SoftStore::open(&d, &unlock).unwrap();
    assert_eq!(
        kind(store.sign(
            &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(store.encrypt(&BackendKey::new(h.clone(), Algorithm::Aes256Gcm), b"", b"m")),
        ErrorKind::Integrity
    );
}

#[test]
fn wipe_crypto_erases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let store = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    let h = store
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap()
        .handle;
    store.wipe().unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        kind(store.sign(
            &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::NotFound
    );
    assert!(!d.join("store.hdr").exists());
    drop(store);
    assert_eq!(kind(SoftStore::open(&d, &unlock)), ErrorKind::NotFound);
}

#[test]
fn debug_redacts() {
    let u = pass("super secret passphrase");
    assert!(!format!("{u:?}").contains("super"));
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "s");
    let store = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    assert!(format!("{store:?}").contains("REDACTED"));
}

#[test]
fn more_keys_than_the_cache_holds_stay_right_across_threads() {
    // 300 imported HMAC keys (the parsed-key cache holds 256), used round
    // robin from two threads twice over: every tag must be the one an
    // independent HMAC gives for that key, whether the key came from the
    // cache or was evicted and read back from its record.
    use hmac::{Hmac, Mac};
    let dir = tempfile::tempdir().unwrap();
    let (d, unlock) = key_file_store(dir.path(), "cache");
    let store = SoftStore::create(&d, &unlock, Kdf::KeyFile).unwrap();
    let keys: Vec<([u8; 32], keystore_api::KeyHandle)> = (0..300u16)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..2].copy_from_slice(&i.to_be_bytes());
            let h = store
                .import(
                    &NewKey::new(Algorithm::HmacSha256, "k"),
                    &SecretBytes::from_slice(&k),
                )
                .unwrap();
            (k, h)
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..2usize {
            let (store, keys) = (&store, &keys);
            s.spawn(move || {
                for round in 0..2 {
                    for (i, (k, h)) in keys.iter().enumerate().skip(t) {
                        let msg = [round as u8, i as u8];
                        let tag = store
                            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), &msg)
                            .unwrap();
                        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
                        mac.update(&msg);
                        assert_eq!(&tag[..], &mac.finalize().into_bytes()[..], "key {i}");
                    }
                }
            });
        }
    });
}

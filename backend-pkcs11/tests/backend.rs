//! Backend-level behaviour on SoftHSM2: configuration and login, sessions,
//! the object model, damage detection and reconciliation; ECDSA P-384 and
//! Ed25519 (verified by OpenSSL), ECDH P-256 with the one-step KDF (checked
//! against the `p256` crate), and ML-DSA-65 not offered.

use backend_pkcs11::testing::{self, softhsm_or_skip, TestToken, CKO_PRIVATE_KEY, CKO_SECRET_KEY};
use backend_pkcs11::{admin, PinSource, Pkcs11Backend, Pkcs11Config, TokenSelector};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use keystore_api::{Algorithm, KeyHandle, SecretBytes};
use keystore_backend::Aead;
use keystore_backend::BackendKey;
use keystore_backend::ErrorKind;
use keystore_backend::KeyAgreement;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::PeerPublicKey;
use keystore_backend::Signing;
use std::time::Duration;

/// A fresh token, or `None` when SoftHSM2 is missing and
/// `KEYSTORE_TEST_SKIP` names pkcs11 (missing otherwise fails with a hint).
fn token(prefix: &str) -> Option<TestToken> {
    Some(softhsm_or_skip()?.new_token(prefix).expect("new token"))
}

/// The kind of `r`'s error; an `Ok` fails the test.
#[track_caller]
fn kind<T>(r: keystore_api::Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.kind(),
    }
}

/// Counts the objects of a key with a raw session.
fn objects_with_id(t: &TestToken, h: &KeyHandle) -> usize {
    let s = t.raw_session().expect("raw session");
    s.login().expect("login");
    s.count(&[Attribute::Id(h.as_bytes().to_vec())])
        .expect("count")
        + s.count(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Value(h.as_bytes().to_vec()),
        ])
        .expect("count")
}

#[test]
fn configuration_errors_are_precise() {
    let Some(t) = token("cfg") else { return };
    assert_eq!(
        kind(Pkcs11Backend::open(&t.config_with_pin("000000"))),
        ErrorKind::Auth
    );
    let missing_token = Pkcs11Config::new(
        TokenSelector::Label("no-such-token".into()),
        PinSource::Value(SecretBytes::from_slice(t.user_pin.as_bytes())),
    )
    .with_module(&t.module)
    .with_token_wait(Duration::from_millis(300));
    // A token that is not there is looked for during the token wait (it
    // could be hidden by another process's write), then NotFound.
    let start = std::time::Instant::now();
    assert_eq!(
        kind(Pkcs11Backend::open(&missing_token)),
        ErrorKind::NotFound
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    // A wrong PIN is not retried (that would use up the token's attempts).
    let start = std::time::Instant::now();
    assert_eq!(
        kind(Pkcs11Backend::open(&t.config_with_pin("111111"))),
        ErrorKind::Auth
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let missing_module = t.config().with_module("/nonexistent/libpkcs11.so");
    let e = Pkcs11Backend::open(&missing_module).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("apt-get install softhsm2"), "{e}");
    let unset = Pkcs11Config::new(
        TokenSelector::Label(t.label.clone()),
        PinSource::Env("KEYSTORE_PKCS11_TEST_UNSET_PIN".into()),
    )
    .with_module(&t.module);
    assert_eq!(kind(Pkcs11Backend::open(&unset)), ErrorKind::InvalidInput);
    // By serial, and the PIN from a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{}\n", t.user_pin)).expect("write pin");
    let by_serial = Pkcs11Config::new(
        TokenSelector::Serial(t.serial.clone()),
        PinSource::File(pin_file),
    )
    .with_module(&t.module);
    let b = Pkcs11Backend::open(&by_serial).expect("open by serial");
    assert_eq!(b.token_label(), t.label);
    // Nothing secret in Debug.
    let dbg = format!("{b:?} {by_serial:?}");
    assert!(!dbg.contains(&t.user_pin), "{dbg}");
    b.close().expect("close");
}

#[test]
fn a_second_backend_on_a_logged_in_token_still_needs_the_right_pin() {
    let Some(t) = token("login") else { return };
    let a = t.open().expect("first backend");
    // The token answers CKR_USER_ALREADY_LOGGED_IN without checking the
    // PIN; the backend checks it against the login it made.
    assert_eq!(
        kind(Pkcs11Backend::open(&t.config_with_pin("999999"))),
        ErrorKind::Auth
    );
    let b = t.open().expect("second backend, right PIN");
    let h = a
        .generate(&NewKey::new(Algorithm::HmacSha256, "shared"))
        .expect("generate")
        .handle;
    assert_eq!(
        *a.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
            .expect("mac"),
        *b.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
            .expect("mac")
    );
    drop(a);
    b.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
        .expect("still logged in through b");
    drop(b);
    // Everything closed: a wrong PIN is checked by the token again.
    assert_eq!(
        kind(Pkcs11Backend::open(&t.config_with_pin("999999"))),
        ErrorKind::Auth
    );
    t.open().expect("reopen");
}

#[test]
fn operations_reuse_pooled_sessions() {
    let Some(t) = token("pool") else { return };
    let b = t.open().expect("open");
    let h = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "p"))
        .expect("generate")
        .handle;
    b.sign(
        &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
        b"warm",
    )
    .expect("sign");
    let warm = b.sessions_opened();
    for i in 0..200u32 {
        b.sign(
            &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
            &i.to_be_bytes(),
        )
        .expect("sign");
    }
    assert_eq!(b.sessions_opened(), warm, "no session opened per operation");
    b.close().expect("close");
}

#[test]
fn aes_gcm_refuses_empty_aad_at_the_backend() {
    let Some(t) = token("aad") else { return };
    let b = t.open().expect("open");
    let h = b
        .generate(&NewKey::new(Algorithm::Aes256Gcm, "aes"))
        .expect("generate")
        .handle;
    assert_eq!(
        kind(b.encrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"",
            b"pt"
        )),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(b.decrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"",
            &[0; 12],
            &[0; 16]
        )),
        ErrorKind::InvalidInput
    );
    let sealed = b
        .encrypt(&BackendKey::new(h.clone(), Algorithm::Aes256Gcm), b"a", b"")
        .expect("empty plaintext");
    assert_eq!(sealed.ciphertext.len(), 16);
    assert!(b
        .decrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"a",
            &sealed.nonce,
            &sealed.ciphertext
        )
        .expect("decrypt")
        .is_empty());
    // SoftHSM reports a wrong tag as CKR_GENERAL_ERROR: still Integrity.
    assert_eq!(
        kind(b.decrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"b",
            &sealed.nonce,
            &sealed.ciphertext
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(b.decrypt(
            &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
            b"a",
            &sealed.nonce,
            &[0; 15]
        )),
        ErrorKind::Integrity
    );
}

#[test]
fn keys_are_bound_to_one_algorithm() {
    let Some(t) = token("bind") else { return };
    let b = t.open().expect("open");
    let aes = b
        .generate(&NewKey::new(Algorithm::Aes256Gcm, "aes"))
        .expect("aes")
        .handle;
    let pss = b
        .generate(&NewKey::new(Algorithm::Rsa2048PssSha256, "pss"))
        .expect("rsa")
        .handle;
    // An AES handle is not an HMAC key, and vice versa.
    assert_eq!(
        kind(b.hmac_sha256(&BackendKey::new(aes.clone(), Algorithm::HmacSha256), b"x")),
        ErrorKind::Integrity
    );
    // A PSS key does not sign PKCS#1 v1.5 (CKA_ALLOWED_MECHANISMS).
    let e = b
        .sign(
            &BackendKey::new(pss.clone(), Algorithm::Rsa2048Pkcs1Sha256),
            b"x",
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("CKA_ALLOWED_MECHANISMS"), "{e}");
    b.sign(
        &BackendKey::new(pss.clone(), Algorithm::Rsa2048PssSha256),
        b"x",
    )
    .expect("PSS signs");
    assert_eq!(
        kind(b.sign(&BackendKey::new(aes.clone(), Algorithm::Aes256Gcm), b"x")),
        ErrorKind::Policy
    );
    assert_eq!(
        kind(b.public_key(&BackendKey::new(aes.clone(), Algorithm::Aes256Gcm))),
        ErrorKind::Policy
    );
    assert_eq!(
        kind(b.import(
            &NewKey::new(Algorithm::EcdsaP256Sha256, "x"),
            &SecretBytes::from_slice(&[1; 32])
        )),
        ErrorKind::Policy
    );
    assert_eq!(
        kind(b.import(
            &NewKey::new(Algorithm::HmacSha256, "x"),
            &SecretBytes::from_slice(&[1; 31])
        )),
        ErrorKind::InvalidInput
    );
}

#[test]
fn namespaces_separate_stores_on_one_token() {
    let Some(t) = token("ns") else { return };
    let a = Pkcs11Backend::open(&t.config().with_namespace("store-a")).expect("a");
    let b = Pkcs11Backend::open(&t.config().with_namespace("store-b")).expect("b");
    let ha = a
        .generate(&NewKey::new(Algorithm::HmacSha256, "k"))
        .expect("generate")
        .handle;
    let hb = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .expect("generate")
        .handle;
    assert_eq!(a.list().expect("list"), vec![ha.clone()]);
    assert_eq!(b.list().expect("list"), vec![hb.clone()]);
    assert_eq!(
        kind(a.hmac_sha256(&BackendKey::new(hb.clone(), Algorithm::HmacSha256), b"x")),
        ErrorKind::NotFound
    );
    assert_eq!(kind(b.destroy(&ha)), ErrorKind::NotFound);
    a.wipe().expect("wipe a");
    assert!(a.list().expect("list").is_empty());
    assert_eq!(
        b.list().expect("list"),
        vec![hb.clone()],
        "b's keys survive a's wipe"
    );
    b.sign(
        &BackendKey::new(hb.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("b still signs");
}

#[test]
fn a_vanished_key_object_is_integrity_not_notfound() {
    let Some(t) = token("vanish") else { return };
    let b = t.open().expect("open");
    let mac = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "mac"))
        .expect("mac")
        .handle;
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
        .expect("ec")
        .handle;
    let s = t.raw_session().expect("raw");
    for (h, class) in [
        (&mac, ObjectClass::SECRET_KEY),
        (&ec, ObjectClass::PRIVATE_KEY),
    ] {
        let objs = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(h.as_bytes().to_vec()),
            ])
            .expect("find");
        assert_eq!(objs.len(), 1);
        s.destroy_object(objs[0])
            .expect("destroy behind the backend's back");
    }
    assert_eq!(
        kind(b.hmac_sha256(&BackendKey::new(mac.clone(), Algorithm::HmacSha256), b"x")),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(b.sign(
            &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
            b"x"
        )),
        ErrorKind::Integrity
    );
    // Still listed (held, damaged), so the keystore does not mistake it for
    // an orphan-free missing key; destroy removes what is left.
    assert!(b.list().expect("list").contains(&mac));
    b.destroy(&mac).expect("destroy the rest");
    b.destroy(&ec).expect("destroy the rest");
    assert_eq!(kind(b.destroy(&mac)), ErrorKind::NotFound);
    assert!(b.list().expect("list").is_empty());
}

#[test]
fn contains_answers_per_handle_from_a_fresh_search() {
    let Some(t) = token("contains") else { return };
    let b = t.open().expect("open");
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
        .expect("ec")
        .handle;
    let mac = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "mac"))
        .expect("mac")
        .handle;
    assert!(b.contains(&ec).expect("contains ec"));
    assert!(b.contains(&mac).expect("contains mac"));
    // A key whose key object vanished is still held (using it is Integrity).
    let s = t.raw_session().expect("raw");
    let objs = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(mac.as_bytes().to_vec()),
        ])
        .expect("find");
    s.destroy_object(objs[0])
        .expect("destroy behind the backend's back");
    drop(s);
    assert!(b.contains(&mac).expect("contains damaged mac"));
    b.destroy(&ec).expect("destroy ec");
    b.destroy(&mac).expect("destroy the rest of mac");
    assert!(!b.contains(&ec).expect("contains destroyed ec"));
    assert!(!b.contains(&mac).expect("contains destroyed mac"));
    // Not this store's handles: absent, not an error.
    assert!(!b.contains(&KeyHandle::new(vec![1, 2, 3])).expect("foreign"));
    let other = Pkcs11Backend::open(&t.config().with_namespace("other")).expect("other ns");
    let theirs = other
        .generate(&NewKey::new(Algorithm::HmacSha256, "theirs"))
        .expect("theirs")
        .handle;
    assert!(!b.contains(&theirs).expect("other namespace"));
    assert!(other.contains(&theirs).expect("own namespace"));
}

#[test]
fn a_missing_public_key_object_stops_signing() {
    let Some(t) = token("pub") else { return };
    let h = {
        let b = t.open().expect("open");
        b.generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
            .expect("ec")
            .handle
    };
    let s = t.raw_session().expect("raw");
    s.login().expect("login");
    let objs = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(h.as_bytes().to_vec()),
        ])
        .expect("find");
    s.destroy_object(objs[0])
        .expect("destroy the public key object");
    drop(s);
    let b = t.open().expect("reopen");
    assert_eq!(
        kind(b.sign(
            &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
            b"x"
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(b.public_key(&BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256))),
        ErrorKind::Integrity
    );
}

/// Damages the object file of the key object of `h` (class `raw_class`).
fn damage(
    t: &TestToken,
    h: &KeyHandle,
    class: ObjectClass,
    raw_class: u64,
    f: impl Fn(&mut Vec<u8>, &testing::ObjectFile),
) {
    let s = t.raw_session().expect("raw");
    s.login().expect("login");
    let q = [
        Attribute::Class(class),
        Attribute::Id(h.as_bytes().to_vec()),
    ];
    let path = t
        .locate_object_file(raw_class, &|| Ok(s.count(&q)? > 0))
        .expect("locate");
    let mut bytes = std::fs::read(&path).expect("read");
    let parsed = testing::ObjectFile::parse(&bytes).expect("parse");
    f(&mut bytes, &parsed);
    testing::set_generation(&mut bytes, parsed.generation + 100);
    std::fs::write(&path, bytes).expect("write");
}

#[test]
fn damaged_key_objects_are_detected() {
    let Some(t) = token("damage") else { return };
    let mut b = t.open().expect("open");
    // Check cached key objects before every use, so the damage below shows
    // on the very next operation (by default it shows within
    // PROTECTION_RECHECK_INTERVAL, or at the next open: see the end).
    b.set_protection_recheck_interval(Duration::ZERO);
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
        .expect("ec")
        .handle;
    let mac = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "mac"))
        .expect("mac")
        .handle;
    let mac2 = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "mac2"))
        .expect("mac2")
        .handle;
    let bystander = b
        .import(
            &NewKey::new(Algorithm::HmacSha256, "by"),
            &SecretBytes::from_slice(&[7; 32]),
        )
        .expect("import");
    let by_tag = b
        .hmac_sha256(
            &BackendKey::new(bystander.clone(), Algorithm::HmacSha256),
            b"x",
        )
        .expect("mac");
    b.sign(
        &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
        b"before",
    )
    .expect("sign");

    // A bit flipped in the stored private value: the token signs with
    // another scalar, and the host-side check of the first signature after
    // the key object's re-check notices.
    damage(
        &t,
        &ec,
        ObjectClass::PRIVATE_KEY,
        CKO_PRIVATE_KEY,
        |bytes, f| {
            let v = f.attr(testing::CKA_VALUE).expect("CKA_VALUE");
            bytes[v.offset + 15] ^= 1;
        },
    );
    assert_eq!(
        kind(b.sign(
            &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
            b"after"
        )),
        ErrorKind::Integrity
    );
    // A backend opened now, with the default settings, notices it on its
    // first signature.
    let fresh = t.open().expect("open again");
    assert_eq!(
        kind(fresh.sign(
            &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
            b"after"
        )),
        ErrorKind::Integrity
    );
    drop(fresh);

    // Cut at an attribute boundary: SoftHSM loads what is left as a valid
    // object with defaults; the missing protection attributes give it away.
    damage(
        &t,
        &mac,
        ObjectClass::SECRET_KEY,
        CKO_SECRET_KEY,
        |bytes, f| {
            let cut = f
                .attrs
                .iter()
                .find(|a| a.ty == 0x162) // CKA_EXTRACTABLE
                .map(|a| a.offset - 16)
                .expect("CKA_EXTRACTABLE");
            bytes.truncate(cut);
        },
    );
    let e = b
        .hmac_sha256(&BackendKey::new(mac.clone(), Algorithm::HmacSha256), b"x")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("CKA_ALLOWED_MECHANISMS"), "{e}");

    // Cut inside a value: SoftHSM drops the object; its marker remains.
    damage(
        &t,
        &mac2,
        ObjectClass::SECRET_KEY,
        CKO_SECRET_KEY,
        |bytes, f| {
            let v = f.attr(testing::CKA_VALUE).expect("CKA_VALUE");
            bytes.truncate(v.offset + 5);
        },
    );
    assert_eq!(
        kind(b.hmac_sha256(&BackendKey::new(mac2.clone(), Algorithm::HmacSha256), b"x")),
        ErrorKind::Integrity
    );

    assert_eq!(
        *b.hmac_sha256(
            &BackendKey::new(bystander.clone(), Algorithm::HmacSha256),
            b"x"
        )
        .expect("bystander"),
        *by_tag
    );
    let report = b
        .reconcile(
            &[ec.clone(), mac.clone(), mac2.clone(), bystander.clone()],
            false,
        )
        .expect("reconcile");
    // The two cut objects show without using them; a changed key value
    // only shows on use.
    let mut want = vec![mac.clone(), mac2.clone()];
    want.sort();
    assert_eq!(report.damaged, want, "{report:?}");
}

#[test]
fn reconcile_reports_missing_damaged_orphans_and_foreign() {
    let Some(t) = token("recon") else { return };
    let b = t.open().expect("open");
    let kept = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "kept"))
        .expect("gen")
        .handle;
    let orphan = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "orphan"))
        .expect("gen")
        .handle;
    let gone = b
        .generate(&NewKey::new(Algorithm::Aes256Gcm, "gone"))
        .expect("gen")
        .handle;
    let half = b
        .generate(&NewKey::new(Algorithm::HmacSha256, "half"))
        .expect("gen")
        .handle;
    b.destroy(&gone).expect("destroy");
    {
        let s = t.raw_session().expect("raw");
        let objs = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(half.as_bytes().to_vec()),
            ])
            .expect("find");
        s.destroy_object(objs[0]).expect("destroy key object only");
    }
    let foreign = KeyHandle::new(vec![1, 2, 3]);
    let known = [kept.clone(), gone.clone(), half.clone(), foreign.clone()];
    let report = b.reconcile(&known, false).expect("reconcile");
    assert_eq!(report.missing, vec![gone.clone()]);
    assert_eq!(report.damaged, vec![half.clone()]);
    assert_eq!(report.orphans, vec![orphan.clone()]);
    assert_eq!(report.foreign, vec![foreign]);
    assert!(report.removed.is_empty());
    assert_eq!(objects_with_id(&t, &orphan), 2, "reporting removes nothing");
    let report = b.reconcile(&known, true).expect("reconcile");
    assert_eq!(report.removed, vec![orphan.clone()]);
    assert_eq!(objects_with_id(&t, &orphan), 0);
    b.sign(
        &BackendKey::new(kept.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("kept key intact");
    assert!(!b
        .reconcile(&[kept.clone(), half.clone()], true)
        .expect("again")
        .is_clean());
}

#[test]
fn destroy_and_wipe_leave_no_object_and_no_file() {
    let Some(t) = token("wipe") else { return };
    let b = t.open().expect("open");
    let mut handles = Vec::new();
    for alg in Algorithm::ALL {
        if alg == Algorithm::MlDsa65 {
            continue; // not offered (see `ml_dsa_65_is_not_offered`)
        }
        handles.push(
            b.generate(&NewKey::new(alg, &format!("w-{}", alg.id())))
                .expect("generate")
                .handle,
        );
    }
    let one = handles.remove(0);
    b.destroy(&one).expect("destroy");
    assert_eq!(objects_with_id(&t, &one), 0);
    b.wipe().expect("wipe");
    assert!(b.list().expect("list").is_empty());
    for h in handles.iter().chain([&one]) {
        assert_eq!(objects_with_id(&t, h), 0, "{h:?}");
        for f in t.files() {
            let bytes = std::fs::read(&f).expect("read");
            assert!(
                !bytes.windows(h.as_bytes().len()).any(|w| w == h.as_bytes()),
                "{} holds {h:?}",
                f.display()
            );
        }
    }
    // Only SoftHSM's own files remain.
    let objects = t.object_files();
    assert!(objects.is_empty(), "{objects:?}");
}

#[test]
fn admin_initialises_and_decommissions_tokens() {
    let Some(hsm) = softhsm_or_skip() else {
        return;
    };
    let Some(t) = token("admin") else { return };
    let e = admin::init_token(
        hsm.module(),
        &t.label,
        &SecretBytes::from_slice(b"123456"),
        &SecretBytes::from_slice(b"654321"),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let h = {
        let b = t.open().expect("open");
        b.generate(&NewKey::new(Algorithm::HmacSha256, "k"))
            .expect("generate")
            .handle
    };
    let selector = TokenSelector::Serial(t.serial.clone());
    assert_eq!(
        admin::reinitialize_token(
            hsm.module(),
            &selector,
            &SecretBytes::from_slice(b"wrong-so")
        )
        .unwrap_err()
        .kind(),
        ErrorKind::Auth
    );
    admin::reinitialize_token(
        hsm.module(),
        &selector,
        &SecretBytes::from_slice(t.so_pin.as_bytes()),
    )
    .expect("decommission");
    // The user PIN is gone with every object.
    assert_eq!(kind(t.open()), ErrorKind::Auth);
    assert!(t.object_files().is_empty());
    let _ = h;
}

/// A flipped bit in the stored private value of `h` (an EC key).
fn flip_private_value(t: &TestToken, h: &KeyHandle) {
    damage(
        t,
        h,
        ObjectClass::PRIVATE_KEY,
        CKO_PRIVATE_KEY,
        |bytes, f| {
            let v = f.attr(testing::CKA_VALUE).expect("CKA_VALUE");
            bytes[v.offset + 15] ^= 1;
        },
    );
}

/// Long enough that no cached handle is re-checked during a test.
const NO_RECHECK: Duration = Duration::from_secs(3600);

#[test]
fn first_use_verifies_the_first_signature_and_catches_a_mismatched_pair() {
    let Some(t) = token("first") else { return };
    let mut b = t.open().expect("open");
    b.set_protection_recheck_interval(NO_RECHECK);
    let a = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "a"))
        .expect("a");
    let other = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "other"))
        .expect("other");
    let a_pk = a.public_key.clone().expect("public key");
    for i in 0..5u8 {
        let sig = b
            .sign(
                &BackendKey::new(a.handle.clone(), Algorithm::EcdsaP256Sha256),
                &[i],
            )
            .expect("sign");
        a_pk.verify(&[i], &sig).expect("a valid signature");
    }
    assert_eq!(b.signatures_verified(), 1, "only the first one is verified");
    b.sign(
        &BackendKey::new(other.handle.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("sign");
    assert_eq!(b.signatures_verified(), 2, "the first one of each key");

    // Pair a's private key with other's public key: a's public key object
    // is replaced by one carrying a's CKA_ID and other's point.
    {
        let s = t.raw_session().expect("raw");
        s.login().expect("login");
        let public = |h: &KeyHandle| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(h.as_bytes().to_vec()),
            ])
            .expect("find")[0]
        };
        let point = s
            .get_attributes(public(&other.handle), &[AttributeType::EcPoint])
            .expect("read")
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .expect("CKA_EC_POINT");
        s.destroy_object(public(&a.handle)).expect("destroy");
        s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Id(a.handle.as_bytes().to_vec()),
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::EcPoint(point),
        ])
        .expect("plant the mismatched public key");
    }
    // A backend opened now verifies its first signature with the key and
    // refuses to return it, every time.
    let fresh = t.open().expect("open again");
    for _ in 0..2 {
        let e = fresh
            .sign(
                &BackendKey::new(a.handle.clone(), Algorithm::EcdsaP256Sha256),
                b"m",
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(e.to_string().contains("mismatched"), "{e}");
    }
    fresh
        .sign(
            &BackendKey::new(other.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .expect("the other key is intact");
}

/// DER of the P-256 curve OID.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

#[test]
fn always_verifies_every_signature() {
    let Some(t) = token("always") else { return };
    let mut b = Pkcs11Backend::open(
        &t.config()
            .with_signature_check(backend_pkcs11::SignatureCheck::Always),
    )
    .expect("open");
    b.set_protection_recheck_interval(NO_RECHECK);
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
        .expect("ec")
        .handle;
    let rsa = b
        .generate(&NewKey::new(Algorithm::Rsa2048PssSha256, "rsa"))
        .expect("rsa")
        .handle;
    for i in 0..3u8 {
        b.sign(
            &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
            &[i],
        )
        .expect("ec");
        b.sign(
            &BackendKey::new(rsa.clone(), Algorithm::Rsa2048PssSha256),
            &[i],
        )
        .expect("rsa");
    }
    assert_eq!(b.signatures_verified(), 6);
    // Damage made after the key's first use is caught on the next
    // signature, with no re-check of the key object in between.
    flip_private_value(&t, &ec);
    assert_eq!(
        kind(b.sign(
            &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
            b"after"
        )),
        ErrorKind::Integrity
    );
    b.sign(
        &BackendKey::new(rsa.clone(), Algorithm::Rsa2048PssSha256),
        b"after",
    )
    .expect("rsa intact");
}

#[test]
fn a_key_destroyed_elsewhere_is_not_found_not_a_wrong_key() {
    let Some(t) = token("elsewhere") else { return };
    let mut b = t.open().expect("open");
    // Cached handles are trusted throughout, so each use below runs into
    // the destroyed object rather than a fresh lookup.
    b.set_protection_recheck_interval(NO_RECHECK);
    let gen = |alg, label| b.generate(&NewKey::new(alg, label)).expect("generate");
    let by_backend = gen(Algorithm::EcdsaP256Sha256, "by-backend").handle;
    let by_raw = gen(Algorithm::EcdsaP256Sha256, "by-raw").handle;
    let mac = gen(Algorithm::HmacSha256, "mac").handle;
    let aes = gen(Algorithm::Aes256Gcm, "aes").handle;
    let kept = gen(Algorithm::EcdsaP256Sha256, "kept");
    for h in [&by_backend, &by_raw, &kept.handle] {
        b.sign(
            &BackendKey::new(h.clone(), Algorithm::EcdsaP256Sha256),
            b"warm",
        )
        .expect("sign");
    }
    b.hmac_sha256(
        &BackendKey::new(mac.clone(), Algorithm::HmacSha256),
        b"warm",
    )
    .expect("mac");
    let sealed = b
        .encrypt(
            &BackendKey::new(aes.clone(), Algorithm::Aes256Gcm),
            b"aad",
            b"pt",
        )
        .expect("encrypt");

    // Another backend instance on the token (another process, as far as
    // `b` knows) destroys one key; raw sessions destroy every object of
    // the others.
    let other = t.open().expect("second backend");
    other.destroy(&by_backend).expect("destroy");
    drop(other);
    {
        let s = t.raw_session().expect("raw");
        s.login().expect("login");
        for h in [&by_raw, &mac, &aes] {
            let mut objs = s
                .find_objects(&[Attribute::Id(h.as_bytes().to_vec())])
                .expect("find");
            objs.extend(
                s.find_objects(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Value(h.as_bytes().to_vec()),
                ])
                .expect("find markers"),
            );
            assert!(!objs.is_empty());
            for o in objs {
                s.destroy_object(o).expect("destroy");
            }
        }
    }
    for _ in 0..2 {
        assert_eq!(
            kind(b.sign(
                &BackendKey::new(by_backend.clone(), Algorithm::EcdsaP256Sha256),
                b"m"
            )),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(b.sign(
                &BackendKey::new(by_raw.clone(), Algorithm::EcdsaP256Sha256),
                b"m"
            )),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(b.hmac_sha256(&BackendKey::new(mac.clone(), Algorithm::HmacSha256), b"m")),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(b.encrypt(
                &BackendKey::new(aes.clone(), Algorithm::Aes256Gcm),
                b"aad",
                b"pt"
            )),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(b.decrypt(
                &BackendKey::new(aes.clone(), Algorithm::Aes256Gcm),
                b"aad",
                &sealed.nonce,
                &sealed.ciphertext
            )),
            ErrorKind::NotFound
        );
    }
    // The survivor and a new key still sign with their own keys.
    let pk = kept.public_key.expect("public key");
    let sig = b
        .sign(
            &BackendKey::new(kept.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .expect("kept");
    pk.verify(b"m", &sig).expect("kept's own key");
    let new = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "new"))
        .expect("generate");
    let sig = b
        .sign(
            &BackendKey::new(new.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .expect("new");
    new.public_key
        .expect("public key")
        .verify(b"m", &sig)
        .expect("new's own key");
    assert!(b
        .list()
        .expect("list")
        .iter()
        .all(|h| *h == kept.handle || *h == new.handle));
}

// ---------------------------------------------------------------------------
// ECDSA P-384, Ed25519, ECDH P-256, ML-DSA-65.

/// Writes `files` into a fresh directory and runs `openssl args…` there;
/// true if it printed "Verified" / "Signature Verified Successfully".
fn openssl_verifies(files: &[(&str, &[u8])], args: &[&str]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    out.status.success() && text.contains("Verified")
}

#[test]
fn ecdsa_p384_signs_and_openssl_verifies() {
    let Some(t) = token("p384") else { return };
    let b = t.open().expect("open");
    let alg = Algorithm::EcdsaP384Sha384;
    assert!(b
        .capabilities()
        .supports(alg, keystore_backend::Operation::Sign));
    let gen = b.generate(&NewKey::new(alg, "p384")).expect("generate");
    let pk = gen.public_key.expect("public key");
    let key = BackendKey::new(gen.handle.clone(), alg);
    assert_eq!(b.public_key(&key).expect("public key"), pk);
    keystore_backend::PublicKey::from_spki_der(alg, pk.spki_der().to_vec()).expect("a P-384 SPKI");
    // id-ecPublicKey with the secp384r1 OID.
    let secp384r1 = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    assert!(pk.spki_der().windows(7).any(|w| w == secp384r1));
    let msg = b"telemetry frame 42";
    let sig = b.sign(&key, msg).expect("sign");
    assert_eq!(sig.len(), 96, "fixed r||s");
    pk.verify(msg, &sig).expect("host verification (p384)");
    let der = p384::ecdsa::Signature::from_slice(&sig)
        .expect("r||s")
        .to_der();
    let pem = pk.to_pem();
    let args = [
        "dgst",
        "-sha384",
        "-verify",
        "pub.pem",
        "-signature",
        "sig.der",
        "msg",
    ];
    assert!(openssl_verifies(
        &[
            ("pub.pem", pem.as_bytes()),
            ("sig.der", der.as_bytes()),
            ("msg", msg)
        ],
        &args
    ));
    assert!(!openssl_verifies(
        &[
            ("pub.pem", pem.as_bytes()),
            ("sig.der", der.as_bytes()),
            ("msg", b"telemetry frame 43")
        ],
        &args
    ));
    // Every signature of a fresh backend is checked on the host first.
    let fresh = t.open().expect("reopen");
    let sig = fresh.sign(&key, b"again").expect("sign");
    pk.verify(b"again", &sig).expect("verifies");
    assert_eq!(fresh.signatures_verified(), 1);
}

#[test]
fn ed25519_signs_and_openssl_verifies() {
    let Some(t) = token("ed25519") else { return };
    let b = t.open().expect("open");
    let alg = Algorithm::Ed25519;
    assert!(b
        .capabilities()
        .supports(alg, keystore_backend::Operation::Sign));
    let gen = b.generate(&NewKey::new(alg, "ed")).expect("generate");
    let pk = gen.public_key.expect("public key");
    let key = BackendKey::new(gen.handle.clone(), alg);
    assert_eq!(b.public_key(&key).expect("public key"), pk);
    assert_eq!(pk.spki_der().len(), 44, "RFC 8410 SPKI");
    let raw: [u8; 32] = pk.spki_der()[12..].try_into().expect("32 bytes");
    assert_eq!(
        keystore_backend::public_key::ed25519_spki(&raw),
        pk.spki_der()
    );
    let msg = b"firmware manifest v7";
    let sig = b.sign(&key, msg).expect("sign");
    assert_eq!(sig.len(), 64);
    assert_eq!(
        b.sign(&key, msg).expect("sign"),
        sig,
        "pure Ed25519 is deterministic"
    );
    pk.verify(msg, &sig)
        .expect("host verification (ed25519-dalek, strict)");
    let pem = pk.to_pem();
    let args = [
        "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg", "-sigfile",
        "sig",
    ];
    assert!(openssl_verifies(
        &[("pub.pem", pem.as_bytes()), ("sig", &sig), ("msg", msg)],
        &args
    ));
    assert!(!openssl_verifies(
        &[
            ("pub.pem", pem.as_bytes()),
            ("sig", &sig),
            ("msg", b"firmware manifest v8")
        ],
        &args
    ));
    let fresh = t.open().expect("reopen");
    fresh.sign(&key, b"m").expect("sign, checked on the host");
    assert_eq!(fresh.signatures_verified(), 1);
}

/// A random P-256 secret key (the peer's).
fn peer_secret() -> p256::SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("random");
        if let Ok(sk) = p256::SecretKey::from_slice(&bytes) {
            return sk;
        }
    }
}

/// `SHA-256(be32(i) ‖ z ‖ info)` for i = 1.., truncated to `len`.
fn one_step_kdf(z: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut i = 1u32;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(i.to_be_bytes());
        h.update(z);
        h.update(info);
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Session objects (`CKA_TOKEN=false`) of this process on the token.
fn session_objects(t: &TestToken) -> usize {
    let s = t.raw_session().expect("raw session");
    s.login().expect("login");
    s.count(&[Attribute::Token(false)]).expect("count")
}

/// What the agreement probe saw of a shared-secret object.
#[derive(Debug, Default, Clone)]
struct Seen {
    value: Option<cryptoki::object::AttributeInfo>,
    token: Option<bool>,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    modifiable: Option<bool>,
    key_type: Option<KeyType>,
    session_objects: usize,
}

#[test]
fn ecdh_p256_agreement_matches_an_independent_computation() {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    use std::sync::{Arc, Mutex};
    let Some(t) = token("ecdh") else { return };
    let mut b = t.open().expect("open");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    b.set_agreement_probe(Box::new(move |s, z| {
        let bool_of = |ty| {
            s.get_attributes(z, &[ty])
                .expect("read")
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Token(v)
                    | Attribute::Sensitive(v)
                    | Attribute::Extractable(v)
                    | Attribute::Modifiable(v) => Some(v),
                    _ => None,
                })
        };
        let seen = Seen {
            value: s
                .get_attribute_info(z, &[AttributeType::Value])
                .expect("info")
                .into_iter()
                .next(),
            token: bool_of(AttributeType::Token),
            sensitive: bool_of(AttributeType::Sensitive),
            extractable: bool_of(AttributeType::Extractable),
            modifiable: bool_of(AttributeType::Modifiable),
            key_type: s
                .get_attributes(z, &[AttributeType::KeyType])
                .expect("read")
                .into_iter()
                .find_map(|a| match a {
                    Attribute::KeyType(k) => Some(k),
                    _ => None,
                }),
            session_objects: s
                .find_objects(&[Attribute::Token(false)])
                .expect("find")
                .len(),
        };
        log.lock().expect("log").push(seen);
    }));
    let alg = Algorithm::EcdhP256;
    assert!(b
        .capabilities()
        .supports(alg, keystore_backend::Operation::Agree));
    let gen = b.generate(&NewKey::new(alg, "ecdh")).expect("generate");
    let pk = gen.public_key.expect("public key");
    let key = BackendKey::new(gen.handle.clone(), alg);
    assert_eq!(b.public_key(&key).expect("public key"), pk);
    let token_pk = p256::PublicKey::from_public_key_der(pk.spki_der()).expect("a P-256 SPKI");

    let peer_sk = peer_secret();
    let peer_point = peer_sk.public_key().to_encoded_point(false);
    let peer = PeerPublicKey::parse(alg, peer_point.as_bytes()).expect("peer");
    let shared = p256::ecdh::diffie_hellman(peer_sk.to_nonzero_scalar(), token_pk.as_affine());
    let z = shared.raw_secret_bytes();
    let before = session_objects(&t);
    for (len, info) in [
        (16, &b"ctx-16"[..]),
        (32, b"ctx-32"),
        (33, b""),
        (64, b"session 7 / gateway 42"),
    ] {
        let got = b.agree_sha256_kdf(&key, &peer, info, len).expect("agree");
        assert_eq!(got.len(), len);
        assert_eq!(got.expose(), one_step_kdf(z, info, len), "len {len}");
        let reference =
            keystore_backend::agreement::one_step_kdf_sha256(z, info, len).expect("reference kdf");
        assert_eq!(got.expose(), reference.expose());
        assert!(!format!("{got:?}").contains(&hex::encode(&got.expose()[..4])));
    }
    // The same agreement from the peer's side, through a PEM SPKI.
    let peer_pem = {
        use p256::pkcs8::EncodePublicKey;
        peer_sk
            .public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem")
    };
    let again = PeerPublicKey::parse(alg, peer_pem.as_bytes()).expect("peer from PEM");
    assert_eq!(
        b.agree_sha256_kdf(&key, &again, b"x", 32)
            .expect("agree")
            .expose(),
        one_step_kdf(z, b"x", 32)
    );
    // Another peer, another secret.
    let other = PeerPublicKey::parse(
        alg,
        peer_secret().public_key().to_encoded_point(true).as_bytes(),
    )
    .expect("compressed peer");
    assert_ne!(
        b.agree_sha256_kdf(&key, &other, b"x", 32)
            .expect("agree")
            .expose(),
        one_step_kdf(z, b"x", 32)
    );

    // The shared secret existed only as a sensitive, non-extractable
    // session object, unreadable, and was destroyed after each agreement.
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    for s in &seen {
        assert!(
            matches!(s.value, Some(cryptoki::object::AttributeInfo::Sensitive)),
            "CKA_VALUE is not readable: {s:?}"
        );
        assert_eq!(s.token, Some(false), "{s:?}");
        assert_eq!(s.sensitive, Some(true), "{s:?}");
        assert_eq!(s.extractable, Some(false), "{s:?}");
        assert_eq!(s.modifiable, Some(false), "{s:?}");
        assert_eq!(s.key_type, Some(KeyType::GENERIC_SECRET), "{s:?}");
        assert_eq!(s.session_objects, before + 1, "{s:?}");
    }
    assert_eq!(session_objects(&t), before, "no session object left");
    assert_eq!(before, 0);
    // The key pair is two token objects, and the private one derives only.
    assert_eq!(objects_with_id(&t, &gen.handle), 2);
    let s = t.raw_session().expect("raw");
    s.login().expect("login");
    let private = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(gen.handle.as_bytes().to_vec()),
        ])
        .expect("find")[0];
    let attrs = s
        .get_attributes(
            private,
            &[
                AttributeType::Derive,
                AttributeType::Sign,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .expect("read");
    for want in [
        Attribute::Derive(true),
        Attribute::Sign(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ] {
        assert!(attrs.contains(&want), "{want:?} in {attrs:?}");
    }
}

#[test]
fn mismatched_keys_and_operations_are_refused_with_the_right_kind() {
    let Some(t) = token("mismatch") else { return };
    let b = t.open().expect("open");
    let gen = |alg| b.generate(&NewKey::new(alg, "k")).expect("generate").handle;
    let p256 = gen(Algorithm::EcdsaP256Sha256);
    let p384 = gen(Algorithm::EcdsaP384Sha384);
    let ed = gen(Algorithm::Ed25519);
    let ecdh = gen(Algorithm::EcdhP256);
    let hmac = gen(Algorithm::HmacSha256);
    let peer = {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        PeerPublicKey::parse(
            Algorithm::EcdhP256,
            peer_secret()
                .public_key()
                .to_encoded_point(false)
                .as_bytes(),
        )
        .expect("peer")
    };
    let before = session_objects(&t);
    let agree = |h: &KeyHandle, alg, len| {
        b.agree_sha256_kdf(&BackendKey::new(h.clone(), alg), &peer, b"info", len)
    };
    // Agreement with keys of a signing algorithm: Policy.
    for (h, alg) in [
        (&p256, Algorithm::EcdsaP256Sha256),
        (&hmac, Algorithm::HmacSha256),
    ] {
        let e = agree(h, alg, 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Policy, "{e}");
    }
    // A signing key's object passed off as an ECDH key: Integrity.
    for h in [&p256, &p384] {
        let e = agree(h, Algorithm::EcdhP256, 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(e.to_string().contains("CKA_ALLOWED_MECHANISMS"), "{e}");
    }
    assert_eq!(
        kind(agree(&ed, Algorithm::EcdhP256, 32)),
        ErrorKind::Integrity
    );
    // Bad KDF input: InvalidInput.
    for len in [0, 255 * 32 + 1] {
        assert_eq!(
            kind(agree(&ecdh, Algorithm::EcdhP256, len)),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        session_objects(&t),
        before,
        "failed agreements leave nothing"
    );
    // Signing with an ECDH key: Policy; its object as a signing key:
    // Integrity.
    let sign = |h: &KeyHandle, alg| b.sign(&BackendKey::new(h.clone(), alg), b"m");
    assert_eq!(kind(sign(&ecdh, Algorithm::EcdhP256)), ErrorKind::Policy);
    let e = sign(&ecdh, Algorithm::EcdsaP256Sha256).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    // Curves and key types swapped: Integrity, never a signature.
    for (h, alg) in [
        (&p384, Algorithm::EcdsaP256Sha256),
        (&p256, Algorithm::EcdsaP384Sha384),
        (&ed, Algorithm::EcdsaP256Sha256),
        (&p256, Algorithm::Ed25519),
    ] {
        let e = sign(h, alg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{alg}: {e}");
    }
    assert_eq!(
        kind(b.public_key(&BackendKey::new(p256.clone(), Algorithm::EcdsaP384Sha384))),
        ErrorKind::Integrity
    );
    // The right pairings still work.
    b.sign(
        &BackendKey::new(p256.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("p256");
    b.sign(
        &BackendKey::new(p384.clone(), Algorithm::EcdsaP384Sha384),
        b"m",
    )
    .expect("p384");
    b.sign(&BackendKey::new(ed.clone(), Algorithm::Ed25519), b"m")
        .expect("ed25519");
    agree(&ecdh, Algorithm::EcdhP256, 32).expect("ecdh");
    assert_eq!(session_objects(&t), before);
    // Private keys are never imported.
    for alg in [
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::EcdhP256,
    ] {
        assert_eq!(
            kind(b.import(&NewKey::new(alg, "x"), &SecretBytes::from_slice(&[1; 32]))),
            ErrorKind::Policy
        );
    }
}

#[test]
fn ml_dsa_65_is_not_offered() {
    let Some(t) = token("mldsa") else { return };
    let b = t.open().expect("open");
    let alg = Algorithm::MlDsa65;
    let caps = b.capabilities();
    assert!(!caps.algorithms().contains(&alg));
    assert!(!caps.supports(alg, keystore_backend::Operation::Sign));
    for other in [
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::EcdhP256,
    ] {
        assert!(caps.algorithms().contains(&other), "{other}");
    }
    let e = b.generate(&NewKey::new(alg, "pq")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("ML-DSA"), "{e}");
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "ec"))
        .expect("generate")
        .handle;
    let key = BackendKey::new(ec, alg);
    assert_eq!(kind(b.sign(&key, b"m")), ErrorKind::Unsupported);
    assert_eq!(kind(b.public_key(&key)), ErrorKind::Unsupported);
    assert_eq!(b.list().expect("list").len(), 1, "nothing left behind");
}

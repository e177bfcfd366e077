//! Backend-level tests on a swtpm of their own: algorithms against
//! independent implementations (P-384 signatures, ECDH agreement), the
//! algorithms TPM 2.0 lacks, HMAC sequences up to the keystore's 16 MiB
//! limit, attributes, every kind of damaged handle, slot accounting,
//! reconnection, the registry, credentials and `Debug` redaction.

use backend_tpm::probe::Attempt;
use backend_tpm::swtpm::Swtpm;
use backend_tpm::{admin, rc_code, TpmBackend, TpmConfig};
use keystore_api::{Algorithm, KeyHandle, SecretBytes};
use keystore_backend::BackendKey;
use keystore_backend::ErrorKind;
use keystore_backend::KeyAgreement;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::PeerPublicKey;
use keystore_backend::Signing;
use std::path::PathBuf;
use tempfile::TempDir;

struct Env {
    dir: TempDir,
    swtpm: Swtpm,
    owner: SecretBytes,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
        let owner = SecretBytes::from_slice(b"owner secret");
        admin::change_owner_auth(&swtpm.tcti(), &SecretBytes::default(), &owner)
            .expect("set owner auth");
        Env { dir, swtpm, owner }
    }

    fn config(&self) -> TpmConfig {
        TpmConfig::new(self.swtpm.tcti())
            .with_owner_auth(SecretBytes::from_slice(self.owner.expose()))
            .expect("config")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn open(&self) -> TpmBackend {
        TpmBackend::open(self.config(), &self.store()).unwrap_or_else(|e| panic!("open: {e:?}"))
    }
}

/// The kind of `r`'s error; an `Ok` fails the test.
#[track_caller]
fn kind<T>(r: keystore_api::Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.kind(),
    }
}

fn hmac_ref(k: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).expect("key");
    m.update(data);
    m.finalize().into_bytes().into()
}

#[test]
fn every_supported_algorithm_signs_and_verifies_independently() {
    let env = Env::new();
    let be = env.open();
    let caps = be.capabilities();
    assert!(!caps.supports(Algorithm::Aes256Gcm, keystore_api::Operation::Generate));
    assert_eq!(
        kind(be.generate(&NewKey::new(Algorithm::Aes256Gcm, "a"))),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(be.import(
            &NewKey::new(Algorithm::Aes256Gcm, "a"),
            &SecretBytes::zeroed(32)
        )),
        ErrorKind::Unsupported
    );
    for alg in [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Rsa2048PssSha256,
        Algorithm::Rsa2048Pkcs1Sha256,
        Algorithm::Rsa3072PssSha256,
        Algorithm::Rsa3072Pkcs1Sha256,
    ] {
        if !caps.supports(alg, keystore_api::Operation::Generate) {
            assert_eq!(
                kind(be.generate(&NewKey::new(alg, "x"))),
                ErrorKind::Unsupported,
                "{alg}"
            );
            continue;
        }
        let g = be.generate(&NewKey::new(alg, "x")).expect("generate");
        let pk = g.public_key.clone().expect("public key");
        assert_eq!(
            be.public_key(&BackendKey::new(g.handle.clone(), alg))
                .expect("public key"),
            pk
        );
        for msg in [&b""[..], b"abc", &[7u8; 5000][..]] {
            let sig = be
                .sign(&BackendKey::new(g.handle.clone(), alg), msg)
                .expect("sign");
            pk.verify(msg, &sig).expect("verifies");
            assert!(pk.verify(b"other", &sig).is_err());
            assert_eq!(Some(sig.len()), alg.signature_len(), "{alg}: fixed r||s");
        }
        let rp = be.read_public(&g.handle).expect("read public");
        assert!(rp.attributes.fixed_tpm && rp.attributes.fixed_parent);
        assert!(rp.attributes.sensitive_data_origin && rp.attributes.sign);
        assert!(rp.matches_blob);
        // A signing key cannot MAC: the handle names its algorithm.
        assert_eq!(
            kind(be.hmac_sha256(
                &BackendKey::new(g.handle.clone(), Algorithm::HmacSha256),
                b"m"
            )),
            ErrorKind::Integrity
        );
    }
}

#[test]
fn hmac_matches_reference_across_chunk_boundaries_up_to_16_mib() {
    let env = Env::new();
    let be = env.open();
    let k = [0xC3u8; 32];
    let h = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "m"),
            &SecretBytes::from_slice(&k),
        )
        .expect("import");
    let rp = be.read_public(&h).expect("read public");
    assert!(
        !rp.attributes.sensitive_data_origin,
        "an imported key is not TPM-generated"
    );
    assert!(rp.attributes.fixed_tpm && rp.attributes.fixed_parent);
    for n in [0usize, 1, 1023, 1024, 1025, 2047, 2048, 2049, 10_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(
            *be.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), &data)
                .expect("hmac"),
            hmac_ref(&k, &data),
            "length {n}"
        );
    }
    let big = vec![0x5Au8; keystore_api::limits::MAX_DATA_LEN];
    assert_eq!(
        *be.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), &big)
            .expect("16 MiB"),
        hmac_ref(&k, &big)
    );
    let too_big = vec![0u8; keystore_api::limits::MAX_DATA_LEN + 1];
    assert_eq!(
        kind(be.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), &too_big)),
        ErrorKind::InvalidInput
    );
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert!(
        objects.len() <= 3 && sessions.is_empty(),
        "{objects:x?} {sessions:x?}"
    );
    // Generated HMAC keys are TPM-generated.
    let g = be
        .generate(&NewKey::new(Algorithm::HmacSha256, "g"))
        .expect("generate");
    assert!(
        be.read_public(&g.handle)
            .expect("rp")
            .attributes
            .sensitive_data_origin
    );
    assert_ne!(
        be.hmac_sha256(
            &BackendKey::new(g.handle.clone(), Algorithm::HmacSha256),
            b"x"
        )
        .unwrap(),
        be.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"x")
            .unwrap()
    );
}

#[test]
fn import_rules() {
    let env = Env::new();
    let be = env.open();
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Rsa2048PssSha256] {
        assert_eq!(
            kind(be.import(&NewKey::new(alg, "p"), &SecretBytes::zeroed(32))),
            ErrorKind::Policy
        );
    }
    for n in [0, 31, 33] {
        assert_eq!(
            kind(be.import(
                &NewKey::new(Algorithm::HmacSha256, "p"),
                &SecretBytes::zeroed(n)
            )),
            ErrorKind::InvalidInput
        );
    }
    assert!(be.list().expect("list").is_empty());
}

fn with_private(
    handle: &KeyHandle,
    f: impl FnOnce(&mut Vec<u8>, std::ops::Range<usize>),
) -> KeyHandle {
    let mut b = handle.as_bytes().to_vec();
    let layout = backend_tpm::handle_layout(&b).expect("layout");
    f(&mut b, layout.private);
    KeyHandle::new(b)
}

#[test]
fn damaged_handles_are_refused_with_the_right_error() {
    let env = Env::new();
    let be = env.open();
    let a = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "a"),
            &SecretBytes::from_slice(&[1; 32]),
        )
        .expect("a");
    let b = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "b"),
            &SecretBytes::from_slice(&[2; 32]),
        )
        .expect("b");
    let ec = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "e"))
        .expect("ec")
        .handle;
    let tag_a = be
        .hmac_sha256(&BackendKey::new(a.clone(), Algorithm::HmacSha256), b"m")
        .expect("mac");

    // A flipped bit in the encrypted private area: TPM2_Load's integrity check.
    let flipped = with_private(&a, |v, r| v[r.start + 2 + (r.len() - 2) / 2] ^= 1);
    let e = be
        .hmac_sha256(
            &BackendKey::new(flipped.clone(), Algorithm::HmacSha256),
            b"m",
        )
        .expect_err("flipped");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(e.to_string().contains("TPM_RC_INTEGRITY"), "{e}");

    // Another key's private area under a's public area: the TPM binds the
    // private blob to the public area's Name.
    let b_private = {
        let l = backend_tpm::handle_layout(b.as_bytes()).expect("layout");
        b.as_bytes()[l.private].to_vec()
    };
    let swapped_private = {
        let l = backend_tpm::handle_layout(a.as_bytes()).expect("layout");
        let mut v = a.as_bytes()[..l.private.start].to_vec();
        v.extend_from_slice(&b_private);
        KeyHandle::new(v)
    };
    let e = be
        .hmac_sha256(
            &BackendKey::new(swapped_private.clone(), Algorithm::HmacSha256),
            b"m",
        )
        .expect_err("swapped private");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");
    assert!(e.to_string().contains("TPM_RC_INTEGRITY"), "{e}");

    // b's whole blob pair under a's id: the registry's Name binding.
    let swapped_pair = {
        let la = backend_tpm::handle_layout(a.as_bytes()).expect("layout");
        let lb = backend_tpm::handle_layout(b.as_bytes()).expect("layout");
        let mut v = a.as_bytes()[..la.public.start].to_vec();
        v.extend_from_slice(&b.as_bytes()[lb.public.start..]);
        KeyHandle::new(v)
    };
    let e = be
        .hmac_sha256(
            &BackendKey::new(swapped_pair.clone(), Algorithm::HmacSha256),
            b"m",
        )
        .expect_err("swapped pair");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e:?}");

    // Truncated, or with trailing bytes: the framing.
    let truncated = KeyHandle::new(a.as_bytes()[..a.as_bytes().len() / 2].to_vec());
    assert_eq!(
        kind(be.hmac_sha256(
            &BackendKey::new(truncated.clone(), Algorithm::HmacSha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    let mut longer = a.as_bytes().to_vec();
    longer.push(0);
    assert_eq!(
        kind(be.hmac_sha256(
            &BackendKey::new(KeyHandle::new(longer), Algorithm::HmacSha256),
            b"m"
        )),
        ErrorKind::Integrity
    );

    // Not a TPM handle at all, or an unknown id: NotFound.
    for bogus in [vec![], vec![0xEE; 16], b"KT\x01\x07".to_vec()] {
        assert_eq!(
            kind(be.hmac_sha256(
                &BackendKey::new(KeyHandle::new(bogus.clone()), Algorithm::HmacSha256),
                b"m"
            )),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(be.destroy(&KeyHandle::new(bogus))),
            ErrorKind::NotFound
        );
    }
    let mut unknown = a.as_bytes().to_vec();
    unknown[10] ^= 0xFF;
    assert_eq!(
        kind(be.hmac_sha256(
            &BackendKey::new(KeyHandle::new(unknown), Algorithm::HmacSha256),
            b"m"
        )),
        ErrorKind::NotFound
    );

    // Wrong algorithm for the handle.
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(a.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(be.public_key(&BackendKey::new(a.clone(), Algorithm::HmacSha256))),
        ErrorKind::Policy
    );

    // Nothing else was harmed, and nothing leaked into the TPM.
    assert_eq!(
        be.hmac_sha256(&BackendKey::new(a.clone(), Algorithm::HmacSha256), b"m")
            .expect("mac"),
        tag_a
    );
    be.sign(
        &BackendKey::new(ec.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("sign");
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert!(
        objects.len() <= 3 && sessions.is_empty(),
        "{objects:x?} {sessions:x?}"
    );
}

#[test]
fn destroy_list_wipe_and_a_damaged_registry_entry() {
    let env = Env::new();
    let be = env.open();
    let a = be
        .generate(&NewKey::new(Algorithm::HmacSha256, "a"))
        .expect("a")
        .handle;
    let b = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "b"))
        .expect("b")
        .handle;
    let c = be
        .generate(&NewKey::new(Algorithm::HmacSha256, "c"))
        .expect("c")
        .handle;
    let mut listed = be.list().expect("list");
    listed.sort();
    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(listed, want);

    be.destroy(&a).expect("destroy");
    assert_eq!(kind(be.destroy(&a)), ErrorKind::NotFound);
    assert_eq!(
        kind(be.hmac_sha256(&BackendKey::new(a.clone(), Algorithm::HmacSha256), b"m")),
        ErrorKind::NotFound
    );
    assert!(!be.list().expect("list").contains(&a));
    // The blob still loads, but the TPM refuses it without the shredded auth.
    match be.try_use_without_auth(&a).expect("probe") {
        Attempt::Refused(rc) => assert!(rc.is(rc_code::BAD_AUTH), "{rc}"),
        Attempt::Complied => panic!("a destroyed key is usable"),
    }

    // A damaged registry entry: that key is Integrity, the others work.
    drop(be);
    let id = hex::encode(&c.as_bytes()[4..20]);
    let entry = env.store().join("keys").join(format!("{id}.key"));
    let mut bytes = std::fs::read(&entry).expect("entry");
    bytes[10] ^= 1;
    std::fs::write(&entry, bytes).expect("write");
    let be = env.open();
    assert_eq!(
        kind(be.hmac_sha256(&BackendKey::new(c.clone(), Algorithm::HmacSha256), b"m")),
        ErrorKind::Integrity
    );
    be.sign(
        &BackendKey::new(b.clone(), Algorithm::EcdsaP256Sha256),
        b"m",
    )
    .expect("b still signs");
    be.destroy(&c)
        .expect("a damaged entry can still be destroyed");

    be.wipe().expect("wipe");
    assert!(be.list().expect("list").is_empty());
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(b.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::NotFound
    );
    let keys_dir = env.store().join("keys");
    assert_eq!(std::fs::read_dir(keys_dir).expect("dir").count(), 0);
}

#[test]
fn slots_are_never_exceeded_and_nothing_leaks() {
    let env = Env::new();
    let be = env.open();
    let keys: Vec<_> = (0..6)
        .map(|i| {
            be.generate(&NewKey::new(Algorithm::HmacSha256, &format!("k{i}")))
                .expect("gen")
                .handle
        })
        .collect();
    let long = vec![1u8; 3000];
    for round in 0..30 {
        for (i, k) in keys.iter().enumerate() {
            if (round + i) % 3 == 0 {
                be.hmac_sha256(&BackendKey::new(k.clone(), Algorithm::HmacSha256), &long)
                    .expect("sequence");
            } else {
                be.hmac_sha256(&BackendKey::new(k.clone(), Algorithm::HmacSha256), b"short")
                    .expect("hmac");
            }
        }
        let (objects, sessions) = be.loaded_handles().expect("handles");
        assert!(objects.len() <= 3, "round {round}: {objects:x?}");
        assert_eq!(objects.len(), 1 + be.cached_keys());
        assert!(sessions.is_empty());
    }
    // Policy sessions of the probes are flushed.
    for k in &keys[..3] {
        assert!(matches!(
            be.try_duplicate(k).expect("probe"),
            Attempt::Refused(_)
        ));
    }
    assert!(be.loaded_handles().expect("handles").1.is_empty());
    drop(be);
    // Dropping the backend flushed everything: a new connection finds nothing.
    let be = env.open();
    assert_eq!(
        be.loaded_handles().expect("handles").0.len(),
        1,
        "only the primary"
    );
}

#[test]
fn reconnects_after_a_simulator_restart() {
    let mut env = Env::new();
    let be = env.open();
    let g = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "e"))
        .expect("gen");
    let pk = g.public_key.expect("pk");
    env.swtpm.restart().expect("restart");
    let sig = be
        .sign(
            &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"after",
        )
        .expect("sign after restart");
    pk.verify(b"after", &sig).expect("verifies");
    env.swtpm.kill();
    let e = be
        .sign(
            &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"gone",
        )
        .expect_err("sign without a TPM");
    assert_eq!(e.kind(), ErrorKind::Backend, "{e:?}");
    env.swtpm.restart().expect("restart");
    be.sign(
        &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
        b"back",
    )
    .expect("sign once the TPM is back");
}

#[test]
fn credentials_lock_and_redaction() {
    let env = Env::new();
    let be = env.open();
    // Any number of backends may have a store directory open (a shared
    // lock; tests/multi_process.rs runs several processes). Over a direct
    // TCTI they would share the TPM's slots, so this one closes at once.
    drop(TpmBackend::open(env.config(), &env.store()).expect("a second open"));
    drop(be);
    let wrong = TpmConfig::new(env.swtpm.tcti())
        .with_owner_auth(SecretBytes::from_slice(b"not the owner secret"))
        .expect("config");
    assert_eq!(kind(TpmBackend::open(wrong, &env.store())), ErrorKind::Auth);
    assert_eq!(
        kind(TpmConfig::new("x").with_owner_auth(SecretBytes::zeroed(65))),
        ErrorKind::InvalidInput
    );
    let unreachable = TpmConfig::new("swtpm:host=127.0.0.1,port=1");
    assert_eq!(
        kind(TpmBackend::open(unreachable, &env.store())),
        ErrorKind::Backend
    );
    let be = env.open();
    for text in [format!("{be:?}"), format!("{:?}", env.config())] {
        assert!(!text.contains("owner secret"), "{text}");
        assert!(text.contains("REDACTED"), "{text}");
    }
    assert_eq!(be.name(), "tpm");
}

/// The resolved-handle cache (registry checks done once per exact handle
/// bytes): a cached handle is still refused for the wrong algorithm, a
/// damaged copy of it is refused and not cached, destroy and wipe take
/// effect on the next use, and the cache stays bounded, beside a loaded-key
/// LRU that never exceeds the TPM's slots, over more keys than it holds.
#[test]
fn resolved_handles_are_exact_bounded_and_follow_the_registry() {
    let env = Env::new();
    let be = env.open();
    let ec = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "e"))
        .expect("ec");
    let pk = ec.public_key.clone().expect("pk");
    let e = ec.handle;
    let sig = be
        .sign(
            &BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .expect("sign");
    pk.verify(b"m", &sig).expect("verifies");
    assert_eq!(be.resolved_handles(), 1);

    // Cached, yet the algorithm is still checked.
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(e.clone(), Algorithm::Rsa2048PssSha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(be.hmac_sha256(&BackendKey::new(e.clone(), Algorithm::HmacSha256), b"m")),
        ErrorKind::Integrity
    );
    assert_eq!(
        be.public_key(&BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256))
            .expect("pk"),
        pk
    );

    // Damaged copies of a cached handle miss the cache and are refused,
    // every time, without being cached or leaking objects.
    let flipped = with_private(&e, |v, r| v[r.start + 2 + (r.len() - 2) / 2] ^= 1);
    let mut longer = e.as_bytes().to_vec();
    longer.push(0);
    let longer = KeyHandle::new(longer);
    let shorter = KeyHandle::new(e.as_bytes()[..e.as_bytes().len() - 1].to_vec());
    for _ in 0..3 {
        let err = be
            .sign(
                &BackendKey::new(flipped.clone(), Algorithm::EcdsaP256Sha256),
                b"m",
            )
            .expect_err("flipped");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
        assert!(err.to_string().contains("TPM_RC_INTEGRITY"), "{err}");
        assert_eq!(
            kind(be.sign(
                &BackendKey::new(longer.clone(), Algorithm::EcdsaP256Sha256),
                b"m"
            )),
            ErrorKind::Integrity
        );
        assert_eq!(
            kind(be.sign(
                &BackendKey::new(shorter.clone(), Algorithm::EcdsaP256Sha256),
                b"m"
            )),
            ErrorKind::Integrity
        );
        let sig = be
            .sign(
                &BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256),
                b"m",
            )
            .expect("genuine");
        pk.verify(b"m", &sig).expect("verifies");
    }
    assert_eq!(be.resolved_handles(), 1, "only the genuine handle");

    // More keys than the cache holds, used round robin: every MAC is the
    // right key's, the cache stays bounded, the TPM's slots are respected.
    let n = backend_tpm::RESOLVED_CACHE_CAPACITY + 6;
    let keys: Vec<_> = (0..n)
        .map(|i| {
            let secret = [i as u8; 32];
            let h = be
                .import(
                    &NewKey::new(Algorithm::HmacSha256, "k"),
                    &SecretBytes::from_slice(&secret),
                )
                .expect("import");
            (secret, h)
        })
        .collect();
    for round in 0..2 {
        for (secret, h) in &keys {
            let tag = be
                .hmac_sha256(
                    &BackendKey::new(h.clone(), Algorithm::HmacSha256),
                    b"round robin",
                )
                .expect("mac");
            assert_eq!(*tag, hmac_ref(secret, b"round robin"), "round {round}");
            assert!(be.resolved_handles() <= backend_tpm::RESOLVED_CACHE_CAPACITY);
        }
        let (objects, sessions) = be.loaded_handles().expect("handles");
        assert!(objects.len() <= 3, "{objects:x?}");
        assert_eq!(objects.len(), 1 + be.cached_keys());
        assert!(sessions.is_empty());
    }
    assert_eq!(be.resolved_handles(), backend_tpm::RESOLVED_CACHE_CAPACITY);

    // Destroy takes effect on the next use of the cached handle.
    let (_, last) = &keys[n - 1];
    be.destroy(last).expect("destroy");
    assert_eq!(
        kind(be.hmac_sha256(&BackendKey::new(last.clone(), Algorithm::HmacSha256), b"m")),
        ErrorKind::NotFound
    );
    let sig = be
        .sign(
            &BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .expect("others still work");
    pk.verify(b"m", &sig).expect("verifies");
    be.destroy(&e).expect("destroy");
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(be.public_key(&BackendKey::new(e.clone(), Algorithm::EcdsaP256Sha256))),
        ErrorKind::NotFound
    );

    // So does wipe, for every handle, and nothing stays cached or loaded.
    let (secret, first) = &keys[0];
    assert_eq!(
        *be.hmac_sha256(&BackendKey::new(first.clone(), Algorithm::HmacSha256), b"m")
            .expect("mac"),
        hmac_ref(secret, b"m")
    );
    be.wipe().expect("wipe");
    for (_, h) in &keys {
        assert_eq!(
            kind(be.hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")),
            ErrorKind::NotFound
        );
    }
    assert_eq!(be.resolved_handles(), 0);
    assert_eq!(be.cached_keys(), 0);
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert_eq!(objects.len(), 1, "only the primary: {objects:x?}");
    assert!(sessions.is_empty());
}

/// `openssl dgst -sha384 -verify` on the PEM public key and the DER form of
/// a fixed `r‖s` signature.
fn openssl_verifies_p384(pk: &keystore_api::PublicKey, msg: &[u8], rs: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let der = p384::ecdsa::Signature::from_slice(rs)
        .expect("r||s")
        .to_der();
    let (pem, sig, data) = (
        dir.path().join("pub.pem"),
        dir.path().join("sig.der"),
        dir.path().join("msg"),
    );
    std::fs::write(&pem, pk.to_pem()).expect("pem");
    std::fs::write(&sig, der.as_bytes()).expect("sig");
    std::fs::write(&data, msg).expect("msg");
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha384", "-verify"])
        .arg(&pem)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .expect("run openssl");
    out.status.success()
}

#[test]
fn p384_keys_sign_with_sha384_verified_by_openssl_and_p384() {
    use p384::ecdsa::signature::Verifier;
    use p384::pkcs8::DecodePublicKey;
    let env = Env::new();
    let be = env.open();
    let alg = Algorithm::EcdsaP384Sha384;
    assert!(
        be.capabilities()
            .supports(alg, keystore_api::Operation::Generate)
            && be
                .capabilities()
                .supports(alg, keystore_api::Operation::Sign),
        "swtpm supports P-384"
    );
    let g = be.generate(&NewKey::new(alg, "p384")).expect("generate");
    let pk = g.public_key.clone().expect("public key");
    let key = BackendKey::new(g.handle.clone(), alg);
    assert_eq!(be.public_key(&key).expect("public key"), pk);
    // An SPKI of id-ecPublicKey on secp384r1, read independently.
    let vk = p384::ecdsa::VerifyingKey::from_public_key_der(pk.spki_der()).expect("P-384 SPKI");
    assert!(pk.to_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    for msg in [&b""[..], b"abc", &[0x38u8; 5000][..]] {
        let sig = be.sign(&key, msg).expect("sign");
        assert_eq!(sig.len(), 96, "fixed r||s, 48 bytes each");
        let parsed = p384::ecdsa::Signature::from_slice(&sig).expect("r||s");
        vk.verify(msg, &parsed).expect("p384 verifies (SHA-384)");
        assert!(vk.verify(b"other", &parsed).is_err());
        assert!(openssl_verifies_p384(&pk, msg, &sig), "openssl verifies");
        assert!(!openssl_verifies_p384(&pk, b"other", &sig));
        pk.verify(msg, &sig).expect("the keystore's host check");
    }
    let rp = be.read_public(&g.handle).expect("read public");
    assert!(rp.attributes.fixed_tpm && rp.attributes.fixed_parent);
    assert!(rp.attributes.sensitive_data_origin && rp.attributes.user_with_auth);
    assert!(rp.attributes.no_da && rp.attributes.sign);
    assert!(!rp.attributes.decrypt && !rp.attributes.restricted);
    assert!(rp.matches_blob);
    // Not a P-256 key, and no key agreement.
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    let peer = p256_peer(7);
    assert_eq!(
        kind(be.agree_sha256_kdf(&key, &peer.1, b"", 32)),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(be.import(&NewKey::new(alg, "i"), &SecretBytes::zeroed(48))),
        ErrorKind::Policy
    );
    // Destroyed: the blob still loads, the TPM refuses it without the auth.
    be.destroy(&g.handle).expect("destroy");
    match be.try_use_without_auth(&g.handle).expect("probe") {
        Attempt::Refused(rc) => assert!(rc.is(rc_code::BAD_AUTH), "{rc}"),
        Attempt::Complied => panic!("a destroyed key is usable"),
    }
}

/// A peer key pair on P-256 from a fixed seed: the secret (for the
/// independent computation) and its validated public key.
fn p256_peer(seed: u8) -> (p256::SecretKey, PeerPublicKey) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use sha2::Digest;
    let scalar = sha2::Sha256::digest([b"peer".as_slice(), &[seed]].concat());
    let secret = p256::SecretKey::from_slice(&scalar).expect("a valid scalar");
    let point = secret.public_key().to_encoded_point(false);
    let peer = PeerPublicKey::parse(Algorithm::EcdhP256, point.as_bytes()).expect("peer");
    (secret, peer)
}

/// The expected agreement, computed without the keystore: ECDH with the
/// `p256` crate, then `K_i = SHA-256(be32(i) ‖ Z ‖ FixedInfo)`.
fn expected_agreement(
    peer_secret: &p256::SecretKey,
    tpm_key: &keystore_api::PublicKey,
    fixed_info: &[u8],
    len: usize,
) -> (Vec<u8>, [u8; 32]) {
    use p256::pkcs8::DecodePublicKey;
    use sha2::Digest;
    let ours = p256::PublicKey::from_public_key_der(tpm_key.spki_der()).expect("P-256 SPKI");
    let shared = p256::ecdh::diffie_hellman(peer_secret.to_nonzero_scalar(), ours.as_affine());
    let z: [u8; 32] = (*shared.raw_secret_bytes()).into();
    let mut out = Vec::new();
    let mut i = 1u32;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(i.to_be_bytes());
        h.update(z);
        h.update(fixed_info);
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    (out, z)
}

#[test]
fn ecdh_agreement_matches_p256_and_the_one_step_kdf() {
    use p256::pkcs8::EncodePublicKey;
    let env = Env::new();
    let be = env.open();
    let alg = Algorithm::EcdhP256;
    let caps = be.capabilities();
    assert!(
        caps.supports(alg, keystore_api::Operation::Generate)
            && caps.supports(alg, keystore_api::Operation::Agree)
            && !caps.supports(alg, keystore_api::Operation::Sign),
        "swtpm supports ECDH on P-256"
    );
    let g = be.generate(&NewKey::new(alg, "ecdh")).expect("generate");
    let pk = g.public_key.clone().expect("public key");
    let key = BackendKey::new(g.handle.clone(), alg);
    assert_eq!(be.public_key(&key).expect("public key"), pk);
    {
        // The same SPKI as an ECDSA P-256 key: id-ecPublicKey, prime256v1.
        use p256::pkcs8::DecodePublicKey;
        let k = p256::PublicKey::from_public_key_der(pk.spki_der()).expect("P-256 SPKI");
        assert_eq!(
            k.to_public_key_der().expect("der").as_bytes(),
            pk.spki_der()
        );
    }
    let rp = be.read_public(&g.handle).expect("read public");
    let a = rp.attributes;
    assert!(a.fixed_tpm && a.fixed_parent && a.sensitive_data_origin);
    assert!(a.user_with_auth && a.no_da && a.decrypt);
    assert!(
        !a.sign && !a.restricted,
        "an unrestricted decrypt key, not a signing key"
    );
    assert!(rp.matches_blob);

    let (secret, peer) = p256_peer(1);
    for len in [16, 32, 33, 64] {
        for fixed_info in [&b""[..], b"keystore ecdh test \x00\x01", &[0xAB; 300][..]] {
            let out = be
                .agree_sha256_kdf(&key, &peer, fixed_info, len)
                .expect("agree");
            let (want, z) = expected_agreement(&secret, &pk, fixed_info, len);
            assert_eq!(out.expose(), &want[..], "len {len}");
            let debug = format!("{out:?}");
            for secret_bytes in [&want[..8], &z[..8]] {
                assert!(!debug.contains(&hex::encode(secret_bytes)), "{debug}");
            }
        }
    }
    // The peer key in its other forms (SPKI DER, compressed), and another peer.
    let spki = secret
        .public_key()
        .to_public_key_der()
        .expect("der")
        .as_bytes()
        .to_vec();
    let from_spki = PeerPublicKey::parse(alg, &spki).expect("SPKI peer");
    assert_eq!(
        be.agree_sha256_kdf(&key, &from_spki, b"x", 32)
            .expect("agree")
            .expose(),
        &expected_agreement(&secret, &pk, b"x", 32).0[..]
    );
    let (other_secret, other) = p256_peer(2);
    let out = be.agree_sha256_kdf(&key, &other, b"x", 32).expect("agree");
    assert_eq!(
        out.expose(),
        &expected_agreement(&other_secret, &pk, b"x", 32).0[..]
    );
    assert_ne!(
        out.expose(),
        &expected_agreement(&secret, &pk, b"x", 32).0[..]
    );

    // Bad KDF input.
    for (info, len) in [(0usize, 0usize), (0, 255 * 32 + 1), (4097, 32)] {
        assert_eq!(
            kind(be.agree_sha256_kdf(&key, &peer, &vec![0; info], len)),
            ErrorKind::InvalidInput
        );
    }

    // A peer point the TPM refuses (not on the curve): InvalidInput naming
    // the TPM's code, and the key still works afterwards.
    let mut y = peer.y().to_vec();
    y[31] ^= 1;
    let e = be
        .agree_with_unchecked_point(&key, peer.x(), &y, b"", 32)
        .expect_err("off-curve point");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    assert!(e.to_string().contains("TPM_RC_ECC_POINT"), "{e}");
    let e = be
        .agree_with_unchecked_point(&key, &[0; 32], &[0; 32], b"", 32)
        .expect_err("(0, 0)");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    assert_eq!(
        be.agree_sha256_kdf(&key, &peer, b"after", 33)
            .expect("agree")
            .expose(),
        &expected_agreement(&secret, &pk, b"after", 33).0[..]
    );

    // Mismatches: an ECDH key does not sign or MAC, a signing key does not agree.
    assert_eq!(kind(be.sign(&key, b"m")), ErrorKind::Policy);
    assert_eq!(
        kind(be.sign(
            &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(be.hmac_sha256(
            &BackendKey::new(g.handle.clone(), Algorithm::HmacSha256),
            b"m"
        )),
        ErrorKind::Integrity
    );
    let ec = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "sig"))
        .expect("ecdsa")
        .handle;
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::EcdhP256] {
        assert_eq!(
            kind(be.agree_sha256_kdf(&BackendKey::new(ec.clone(), alg), &peer, b"", 32)),
            ErrorKind::Integrity,
            "{alg}"
        );
    }
    assert_eq!(
        kind(be.import(&NewKey::new(alg, "i"), &SecretBytes::zeroed(32))),
        ErrorKind::Policy
    );
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert!(
        objects.len() <= 3 && sessions.is_empty(),
        "{objects:x?} {sessions:x?}"
    );

    // Survives a reopen; destroyed, it is gone and its blob is useless.
    drop(be);
    let be = env.open();
    assert_eq!(
        be.agree_sha256_kdf(&key, &peer, b"reopened", 16)
            .expect("agree")
            .expose(),
        &expected_agreement(&secret, &pk, b"reopened", 16).0[..]
    );
    be.destroy(&g.handle).expect("destroy");
    assert_eq!(
        kind(be.agree_sha256_kdf(&key, &peer, b"", 32)),
        ErrorKind::NotFound
    );
    match be.try_use_without_auth(&g.handle).expect("probe") {
        Attempt::Refused(rc) => assert!(rc.is(rc_code::BAD_AUTH), "{rc}"),
        Attempt::Complied => panic!("a destroyed key is usable"),
    }
}

#[test]
fn ed25519_and_ml_dsa_are_not_offered() {
    let env = Env::new();
    let be = env.open();
    for alg in [Algorithm::Ed25519, Algorithm::MlDsa65] {
        let caps = be.capabilities();
        assert!(
            !caps.supports(alg, keystore_api::Operation::Generate),
            "{alg}"
        );
        assert!(!caps.supports(alg, keystore_api::Operation::Sign), "{alg}");
        let e = be.generate(&NewKey::new(alg, "x")).expect_err("generate");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
        assert!(
            e.to_string().contains("not offered by the tpm backend"),
            "{e}"
        );
        // Private keys are never imported, whatever the device: Policy first.
        assert_eq!(
            kind(be.import(&NewKey::new(alg, "x"), &SecretBytes::zeroed(32))),
            ErrorKind::Policy
        );
    }
    assert!(be.list().expect("list").is_empty());
}

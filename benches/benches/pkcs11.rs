//! The PKCS#11 backend through the Keystore against a raw cryptoki session
//! on the same SoftHSM2 token, in the same run.
//!
//! Set-up: one fresh token from `backend_pkcs11::testing` (a temporary
//! SoftHSM2 configuration, random PINs), one keystore on it holding the
//! standard benchmark keys.
//!
//! Baseline (`raw-pkcs11`): a session of our own on that token (opened
//! through the test helper, which shares the backend's one `C_Initialize`;
//! logged in, which the backend's login already is for the whole
//! application), the key's object found once by its `CKA_ID` (the key
//! handle's bytes), then per operation exactly the mechanism the backend
//! uses and nothing else:
//! - ECDSA P-256: SHA-256 on the host, `C_SignInit`/`C_Sign` with `CKM_ECDSA`;
//! - RSA-2048: `CKM_SHA256_RSA_PKCS` over the message;
//! - HMAC: `CKM_SHA256_HMAC`; HKDF: that HMAC over the salt (the extract
//!   step, on the token) and HKDF-Expand on the host;
//! - AES-256-GCM: `CKM_AES_GCM` with a fresh 96-bit IV from the OS RNG and
//!   an 11-byte AAD (the keystore's: envelope header ‖ "aad").
//!
//! The keystore path adds its own work on top: the active-version lookup,
//! the backend's per-use check of the key object (`C_GetAttributeValue` of
//! its id and protection attributes), the host-side verification of every
//! signature against the public key, the envelope.

use backend_pkcs11::testing::{self, RawSession, TestToken};
use backend_pkcs11::Pkcs11Backend;
use benches::{bench_dir, spread, standard_keys};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use keystore_api::{Keystore, SignatureFormat};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const MSG: &[u8] = b"gateway telemetry frame: 64 bytes of typical payload..........";

/// ECDSA P-384, Ed25519 and ECDH P-256 (`pkcs11/algorithms.rs`).
#[path = "pkcs11/algorithms.rs"]
mod algorithms;
/// The raw AES-GCM AAD: as long as the keystore's (8-byte header ‖ "aad").
const RAW_AAD: &[u8] = b"hdr-8B..aad";

/// The token, the keystore on it and the metadata directory. Fields drop
/// in order: the keystore (closing its sessions) before the rest.
struct Env {
    ks: Keystore<Pkcs11Backend>,
    token: TestToken,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let hsm = testing::softhsm().unwrap_or_else(|e| panic!("{e}"));
        let token = hsm.new_token("bench").unwrap_or_else(|e| panic!("{e}"));
        let dir = bench_dir();
        let backend = token.open().expect("open the PKCS#11 backend");
        let ks = Keystore::open(backend, &dir.path().join("metadata.sqlite")).expect("keystore");
        standard_keys(&ks);
        Env {
            ks,
            token,
            _dir: dir,
        }
    }

    /// A logged-in raw session of our own on the token.
    fn session(&self) -> RawSession {
        let s = self.token.raw_session().expect("raw session");
        s.login().expect("login");
        s
    }

    /// The key object of `name` (version 1), found by its `CKA_ID`.
    fn object(&self, s: &RawSession, name: &str, class: ObjectClass) -> ObjectHandle {
        let handle = self.ks.backend_handle(name, 1).expect("handle");
        let id = self.ks.backend().cka_id(&handle).expect("CKA_ID");
        let found = s
            .find_objects(&[Attribute::Class(class), Attribute::Id(id)])
            .expect("C_FindObjects");
        match found[..] {
            [obj] => obj,
            _ => panic!(
                "expected one {class} object for '{name}', found {}",
                found.len()
            ),
        }
    }
}

fn raw_ecdsa(s: &RawSession, key: ObjectHandle, msg: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(msg);
    s.sign(&Mechanism::Ecdsa, key, &digest).expect("C_Sign")
}

fn sign(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let s = env.session();

    let mut g = c.benchmark_group("ecdsa-p256-sign");
    let key = env.object(&s, "ecdsa", ObjectClass::PRIVATE_KEY);
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| raw_ecdsa(&s, key, black_box(MSG)))
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.sign("ecdsa", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rsa-2048-sign");
    let key = env.object(&s, "rsa", ObjectClass::PRIVATE_KEY);
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| {
            s.sign(&Mechanism::Sha256RsaPkcs, key, black_box(MSG))
                .expect("C_Sign")
        })
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.sign("rsa", black_box(MSG), SignatureFormat::Der)
                .expect("sign")
        })
    });
    g.finish();
}

fn derive_and_mac(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let s = env.session();
    let key = env.object(&s, "hmac", ObjectClass::SECRET_KEY);
    let kdf = env.object(&s, "kdf", ObjectClass::SECRET_KEY);
    let salt = b"session-nonce-000000000001";
    let info = b"tls 1.3 exporter";

    let mut g = c.benchmark_group("hkdf-derive-32");
    g.bench_function("raw-pkcs11", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            let prk = s
                .sign(&Mechanism::Sha256Hmac, kdf, black_box(salt))
                .expect("C_Sign");
            hkdf::Hkdf::<Sha256>::from_prk(&prk)
                .expect("prk")
                .expand(info, &mut out)
                .expect("expand");
            out
        })
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.derive_hkdf_sha256("kdf", black_box(salt), info, 32)
                .expect("derive")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hmac-sha256-64");
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| {
            s.sign(&Mechanism::Sha256Hmac, key, black_box(MSG))
                .expect("C_Sign")
        })
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| ks.mac("hmac", black_box(MSG)).expect("mac"))
    });
    g.finish();
    // Same key, same input: the raw session really used the keystore's key.
    let raw = s.sign(&Mechanism::Sha256Hmac, key, MSG).expect("C_Sign");
    assert_eq!(raw[..], ks.mac("hmac", MSG).expect("mac")[..]);
}

fn aead(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let s = env.session();
    let key = env.object(&s, "aes", ObjectClass::SECRET_KEY);
    for size in [1024usize, 64 * 1024] {
        let mut g = c.benchmark_group(format!("aes-256-gcm-encrypt-{}k", size / 1024));
        g.throughput(Throughput::Bytes(size as u64));
        let pt = vec![0x5au8; size];
        g.bench_function("raw-pkcs11", |b| {
            b.iter(|| {
                let mut iv = [0u8; 12];
                getrandom::getrandom(&mut iv).expect("OS RNG");
                let params = GcmParams::new(&mut iv, RAW_AAD, 128u64.into()).expect("params");
                s.encrypt(&Mechanism::AesGcm(params), key, black_box(&pt))
                    .expect("C_Encrypt")
            })
        });
        g.bench_function("keystore-pkcs11", |b| {
            b.iter(|| ks.encrypt("aes", black_box(&pt), b"aad").expect("encrypt"))
        });
        g.finish();
    }
}

/// One and two threads: through one keystore (its session pool), and raw
/// with a session per thread.
fn threads(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let mut sessions = [env.session(), env.session()];
    let key = env.object(&sessions[0], "ecdsa", ObjectClass::PRIVATE_KEY);
    let mut g = c.benchmark_group("ecdsa-p256-sign-threads");
    for n in [1usize, 2] {
        g.bench_with_input(BenchmarkId::new("raw-pkcs11", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                spread(iters, &mut sessions[..n], |s| {
                    black_box(raw_ecdsa(s, key, MSG));
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("keystore-pkcs11", n), &n, |b, &n| {
            let mut states = vec![(); n];
            b.iter_custom(|iters| {
                spread(iters, &mut states, |_| {
                    black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
                })
            })
        });
    }
    g.finish();
}

fn pkcs11(c: &mut Criterion) {
    if testing::softhsm_or_skip().is_none() {
        return;
    }
    let env = Env::new();
    sign(c, &env);
    derive_and_mac(c, &env);
    aead(c, &env);
    threads(c, &env);
    algorithms::sign(c, &env);
    algorithms::agree(c, &env);
}

criterion_group!(benches, pkcs11);
criterion_main!(benches);

//! The TPM backend through the Keystore against raw TPM commands on the
//! same, already-loaded key, in the same run.
//!
//! Set-up: a swtpm of its own (`backend_tpm::swtpm`, factory-fresh state
//! in a temporary directory, empty owner auth, killed at the end) and one
//! keystore on it holding the standard benchmark keys (no AES: TPM 2.0 has
//! no GCM, so the AES groups are absent here).
//!
//! Baseline (`raw-tpm`): `TpmBackend::loaded_key` (test-support) loads the
//! key once, as the backend does, and holds the backend's one ESYS
//! connection; each operation is then one ESYS command on the loaded
//! object, i.e. what an application calling tss-esapi with the key already
//! loaded pays:
//! - sign: SHA-256 on the host, `TPM2_Sign` (ECDSA, or RSASSA-PKCS1 v1.5
//!   for RSA) with a NULL ticket; the result is left as the ESYS signature
//!   structure (no conversion to bytes);
//! - HMAC: one `TPM2_HMAC`; HKDF: that HMAC over the salt (the extract
//!   step, in the TPM) and HKDF-Expand on the host.
//!
//! Both paths pay the same transport: tpm2-tss's swtpm TCTI opens a TCP
//! connection per command. The keystore path adds the active-version
//! lookup, the backend's lookup of the handle among those already checked
//! against its registry (the full check — parse the blob, re-marshal the
//! public area, compare its Name — runs once per handle and registry
//! change), the loaded-key cache lookup and the conversion of the signature
//! to bytes.

use backend_tpm::swtpm::{self, Swtpm};
use backend_tpm::{TpmBackend, TpmConfig};
use benches::{bench_dir, standard_keys};
use criterion::{criterion_group, criterion_main, Criterion};
use keystore_api::{Algorithm, Keystore, SignatureFormat};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const MSG: &[u8] = b"gateway telemetry frame: 64 bytes of typical payload..........";

/// ECDSA P-384 and ECDH P-256 (`tpm/algorithms.rs`).
#[path = "tpm/algorithms.rs"]
mod algorithms;

/// Fields drop in order: the keystore (flushing what it loaded) before the
/// simulator is killed, and the simulator before its state directory goes.
struct Env {
    ks: Keystore<TpmBackend>,
    _swtpm: Swtpm,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = bench_dir();
        let swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
        let backend = TpmBackend::open(TpmConfig::new(swtpm.tcti()), &dir.path().join("tpm"))
            .expect("open the TPM backend");
        let ks = Keystore::open(backend, &dir.path().join("metadata.sqlite")).expect("keystore");
        standard_keys(&ks);
        Env {
            ks,
            _swtpm: swtpm,
            _dir: dir,
        }
    }
}

/// True (after printing SKIPPED) when swtpm is missing and
/// `KEYSTORE_TEST_SKIP` names tpm; missing without that is a panic with
/// the install hint, as in the tests.
fn skip() -> bool {
    if swtpm::available() {
        return false;
    }
    let skip = std::env::var("KEYSTORE_TEST_SKIP")
        .map(|v| v.split(',').any(|b| b.trim() == "tpm"))
        .unwrap_or(false);
    if skip {
        eprintln!(
            "SKIPPED (KEYSTORE_TEST_SKIP names tpm): {}",
            swtpm::INSTALL_HINT
        );
        return true;
    }
    panic!(
        "{}\n(set KEYSTORE_TEST_SKIP=tpm to skip knowingly; CI never does)",
        swtpm::INSTALL_HINT
    );
}

fn sign(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    for (group, name, alg, format) in [
        (
            "ecdsa-p256-sign",
            "ecdsa",
            Algorithm::EcdsaP256Sha256,
            SignatureFormat::Fixed,
        ),
        (
            "rsa-2048-sign",
            "rsa",
            Algorithm::Rsa2048Pkcs1Sha256,
            SignatureFormat::Der,
        ),
    ] {
        let mut g = c.benchmark_group(group);
        {
            let handle = ks.backend_handle(name, 1).expect("handle");
            let mut key = ks.backend().loaded_key(&handle, alg).expect("load");
            g.bench_function("raw-tpm", |b| {
                b.iter(|| {
                    let digest: [u8; 32] = Sha256::digest(black_box(MSG)).into();
                    key.sign_digest(&digest).expect("TPM2_Sign")
                })
            });
            // The connection is released here, before the keystore uses it.
        }
        g.bench_function("keystore-tpm", |b| {
            b.iter(|| ks.sign(name, black_box(MSG), format).expect("sign"))
        });
        g.finish();
    }
}

fn derive_and_mac(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let handle = ks.backend_handle("hmac", 1).expect("handle");
    let kdf = ks.backend_handle("kdf", 1).expect("handle");
    let salt = b"session-nonce-000000000001";
    let info = b"tls 1.3 exporter";

    let mut g = c.benchmark_group("hkdf-derive-32");
    {
        let mut key = ks
            .backend()
            .loaded_key(&kdf, Algorithm::HmacSha256)
            .expect("load");
        g.bench_function("raw-tpm", |b| {
            let mut out = [0u8; 32];
            b.iter(|| {
                let prk = key.hmac(black_box(salt)).expect("TPM2_HMAC");
                hkdf::Hkdf::<Sha256>::from_prk(&prk[..])
                    .expect("prk")
                    .expand(info, &mut out)
                    .expect("expand");
                out
            })
        });
    }
    g.bench_function("keystore-tpm", |b| {
        b.iter(|| {
            ks.derive_hkdf_sha256("kdf", black_box(salt), info, 32)
                .expect("derive")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hmac-sha256-64");
    let raw_tag = {
        let mut key = ks
            .backend()
            .loaded_key(&handle, Algorithm::HmacSha256)
            .expect("load");
        g.bench_function("raw-tpm", |b| {
            b.iter(|| key.hmac(black_box(MSG)).expect("TPM2_HMAC"))
        });
        key.hmac(MSG).expect("TPM2_HMAC")
    };
    g.bench_function("keystore-tpm", |b| {
        b.iter(|| ks.mac("hmac", black_box(MSG)).expect("mac"))
    });
    g.finish();
    // Same key, same input: the raw call really used the keystore's key.
    assert_eq!(raw_tag[..], ks.mac("hmac", MSG).expect("mac")[..]);
}

fn tpm(c: &mut Criterion) {
    if skip() {
        return;
    }
    let env = Env::new();
    sign(c, &env);
    derive_and_mac(c, &env);
    algorithms::sign(c, &env);
    algorithms::agree(c, &env);
}

criterion_group!(benches, tpm);
criterion_main!(benches);

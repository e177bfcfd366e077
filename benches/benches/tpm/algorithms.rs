//! The newer algorithms on the TPM backend (ECDSA P-384, ECDH P-256 with
//! the one-step KDF on the host) through the Keystore against raw TPM
//! commands on the same, already-loaded key, in the same run. Ed25519 and
//! ML-DSA are not here: TPM 2.0 has neither.
//!
//! Baselines (`raw-tpm`, `TpmBackend::loaded_key` as in the other groups):
//! - P-384: SHA-384 on the host, `TPM2_Sign` (ECDSA, SHA-384 scheme) with a
//!   NULL ticket, the result left as the ESYS signature structure;
//! - ECDH: one `TPM2_ECDH_ZGen` (its result encrypted on the bus by the
//!   connection's session, as in the backend) with the peer point, then one
//!   SHA-256 block `SHA-256(be32(1) ‖ Z ‖ FixedInfo)` on the host.

use super::Env;
use criterion::Criterion;
use keystore_api::{Algorithm, KeySpec, SignatureFormat};
use sha2::{Digest, Sha256, Sha384};
use std::hint::black_box;

use super::MSG;

/// The KDF's FixedInfo in the agreement benchmark (raw and keystore).
const INFO: &[u8] = b"AlgorithmID|PartyUInfo|PartyVInfo";

/// ECDSA P-384 sign.
pub fn sign(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    ks.create(
        &benches::officer(),
        "p384",
        KeySpec::new(Algorithm::EcdsaP384Sha384),
    )
    .expect("p384");
    let mut g = c.benchmark_group("ecdsa-p384-sign");
    {
        let handle = ks.backend_handle("p384", 1).expect("handle");
        let mut key = ks
            .backend()
            .loaded_key(&handle, Algorithm::EcdsaP384Sha384)
            .expect("load");
        g.bench_function("raw-tpm", |b| {
            b.iter(|| {
                let digest = Sha384::digest(black_box(MSG));
                key.sign_digest(&digest).expect("TPM2_Sign")
            })
        });
        // The connection is released here, before the keystore uses it.
    }
    g.bench_function("keystore-tpm", |b| {
        b.iter(|| {
            ks.sign("p384", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();
}

/// ECDH P-256 and the one-step KDF to 32 bytes.
pub fn agree(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    ks.create(
        &benches::officer(),
        "ecdh",
        KeySpec::new(Algorithm::EcdhP256),
    )
    .expect("ecdh");
    // The peer's key: an uncompressed SEC1 point for the keystore, its
    // coordinates for the raw command.
    let peer = p256::SecretKey::from_bytes(&[9u8; 32].into())
        .expect("peer key")
        .public_key();
    let peer = p256::EncodedPoint::from(peer);
    let (x, y) = (peer.x().expect("x").to_vec(), peer.y().expect("y").to_vec());
    let peer = peer.as_bytes().to_vec();

    let mut g = c.benchmark_group("ecdh-p256-agree-32");
    let raw_out = {
        let handle = ks.backend_handle("ecdh", 1).expect("handle");
        let mut key = ks
            .backend()
            .loaded_key(&handle, Algorithm::EcdhP256)
            .expect("load");
        let mut raw_agree = |x: &[u8], y: &[u8]| {
            let z = key.ecdh_zgen(x, y).expect("TPM2_ECDH_ZGen");
            let mut h = Sha256::new();
            h.update(1u32.to_be_bytes());
            h.update(&z[..]);
            h.update(INFO);
            <[u8; 32]>::from(h.finalize())
        };
        g.bench_function("raw-tpm", |b| b.iter(|| raw_agree(black_box(&x), &y)));
        raw_agree(&x, &y)
    };
    g.bench_function("keystore-tpm", |b| {
        b.iter(|| {
            ks.agree_sha256_kdf("ecdh", black_box(&peer), INFO, 32)
                .expect("agree")
        })
    });
    g.finish();
    // Same key, same peer: the raw command computed the keystore's output.
    let via = ks.agree_sha256_kdf("ecdh", &peer, INFO, 32).expect("agree");
    assert_eq!(raw_out[..], via.expose()[..]);
}

//! The newer algorithms on the soft backend (ECDSA P-384, Ed25519,
//! ML-DSA-65, ECDH P-256 with the one-step KDF) through the Keystore
//! against raw aws-lc-rs in the same run, on a store of their own.
//!
//! Baselines (`raw-aws-lc`), each with a key of the same kind:
//! - P-384: `EcdsaKeyPair` with `ECDSA_P384_SHA384_FIXED_SIGNING`;
//! - Ed25519: `Ed25519KeyPair`;
//! - ML-DSA-65: `PqdsaKeyPair` with `ML_DSA_65_SIGNING` (empty context),
//!   verify with `UnparsedPublicKey` and `ML_DSA_65` over the raw public
//!   key (the keystore verifies on the host with RustCrypto `ml-dsa`);
//! - ECDH: `agreement::agree` with the peer's uncompressed point, then one
//!   SHA-256 block `SHA-256(be32(1) ‖ Z ‖ FixedInfo)` (32 bytes out).

use aws_lc_rs::agreement;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, PqdsaKeyPair, UnparsedPublicKey,
    ECDSA_P384_SHA384_FIXED_SIGNING, ML_DSA_65, ML_DSA_65_SIGNING,
};
use benches::{bench_dir, officer, raw, soft_keystore};
use criterion::Criterion;
use keystore_api::{Algorithm, KeySpec, SignatureFormat};
use sha2::{Digest, Sha256};
use std::hint::black_box;

use super::MSG;

/// The KDF's FixedInfo in the agreement benchmarks (raw and keystore).
const INFO: &[u8] = b"AlgorithmID|PartyUInfo|PartyVInfo";

/// ECDSA P-384 and Ed25519 sign; ML-DSA-65 sign and verify.
pub fn sign(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    let so = officer();
    for (name, alg) in [
        ("p384", Algorithm::EcdsaP384Sha384),
        ("ed25519", Algorithm::Ed25519),
        ("mldsa", Algorithm::MlDsa65),
    ] {
        ks.create(&so, name, KeySpec::new(alg)).expect(name);
    }
    let rng = raw::rng();

    let mut g = c.benchmark_group("ecdsa-p384-sign");
    let kp = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("p384");
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| kp.sign(&rng, black_box(MSG)).expect("sign"))
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.sign("p384", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ed25519-sign");
    let kp = Ed25519KeyPair::generate().expect("ed25519");
    g.bench_function("raw-aws-lc", |b| b.iter(|| kp.sign(black_box(MSG))));
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.sign("ed25519", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let kp = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING).expect("ml-dsa-65");
    let mut sig = vec![0u8; ML_DSA_65_SIGNING.signature_len()];
    let mut g = c.benchmark_group("ml-dsa-65-sign");
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| kp.sign(black_box(MSG), &mut sig).expect("sign"))
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.sign("mldsa", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let raw_sig = {
        let n = kp.sign(MSG, &mut sig).expect("sign");
        sig[..n].to_vec()
    };
    let public = UnparsedPublicKey::new(&ML_DSA_65, kp.public_key().as_ref().to_vec());
    let ks_sig = ks
        .sign("mldsa", MSG, SignatureFormat::Fixed)
        .expect("sign")
        .bytes;
    let mut g = c.benchmark_group("ml-dsa-65-verify");
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| public.verify(black_box(MSG), &raw_sig).expect("verify"))
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.verify("mldsa", black_box(MSG), &ks_sig, None)
                .expect("verify")
        })
    });
    g.finish();
}

/// ECDH P-256 and the one-step KDF to 32 bytes.
pub fn agree(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    ks.create(&officer(), "ecdh", KeySpec::new(Algorithm::EcdhP256))
        .expect("ecdh");
    // The peer's key: an uncompressed SEC1 point, given to both paths.
    let peer_key = agreement::PrivateKey::generate(&agreement::ECDH_P256).expect("peer");
    let peer = peer_key
        .compute_public_key()
        .expect("peer public key")
        .as_ref()
        .to_vec();
    let key = agreement::PrivateKey::generate(&agreement::ECDH_P256).expect("ecdh");

    let mut g = c.benchmark_group("ecdh-p256-agree-32");
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| {
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, black_box(&peer));
            agreement::agree(&key, peer, (), |z| {
                let mut h = Sha256::new();
                h.update(1u32.to_be_bytes());
                h.update(z);
                h.update(INFO);
                Ok(<[u8; 32]>::from(h.finalize()))
            })
            .expect("agree")
        })
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.agree_sha256_kdf("ecdh", black_box(&peer), INFO, 32)
                .expect("agree")
        })
    });
    g.finish();
}

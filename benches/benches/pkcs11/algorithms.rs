//! The newer algorithms on the PKCS#11 backend (ECDSA P-384, Ed25519,
//! ECDH P-256 with the one-step KDF on the token) through the Keystore
//! against a raw session on the same key objects, in the same run. ML-DSA
//! is not here: SoftHSM 2.6 has none.
//!
//! Baselines (`raw-pkcs11`), per operation exactly the mechanisms the
//! backend uses (`backend-pkcs11/src/keys/{usage,agree}.rs`):
//! - P-384: SHA-384 on the host, `C_SignInit`/`C_Sign` with `CKM_ECDSA`;
//! - Ed25519: `CKM_EDDSA` (pure, no parameters) over the message;
//! - ECDH: `C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL, peer point)` into a
//!   sensitive, non-extractable session object (the backend's template),
//!   then `C_DigestInit`/`C_DigestUpdate(be32(1))`/`C_DigestKey`/
//!   `C_DigestUpdate(FixedInfo)`/`C_DigestFinal`, then `C_DestroyObject`.
//!   The backend also reads the object's `CKA_VALUE_LEN` once per call;
//!   the baseline does not.

use super::Env;
use criterion::Criterion;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keystore_api::{Algorithm, KeySpec, SignatureFormat};
use sha2::{Digest, Sha384};
use std::hint::black_box;

use super::MSG;

/// The KDF's FixedInfo in the agreement benchmark (raw and keystore).
const INFO: &[u8] = b"AlgorithmID|PartyUInfo|PartyVInfo";

/// ECDSA P-384 and Ed25519 sign.
pub fn sign(c: &mut Criterion, env: &Env) {
    let ks = &env.ks;
    let so = benches::officer();
    ks.create(&so, "p384", KeySpec::new(Algorithm::EcdsaP384Sha384))
        .expect("p384");
    ks.create(&so, "ed25519", KeySpec::new(Algorithm::Ed25519))
        .expect("ed25519");
    let s = env.session();

    let mut g = c.benchmark_group("ecdsa-p384-sign");
    let key = env.object(&s, "p384", ObjectClass::PRIVATE_KEY);
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| {
            let digest = Sha384::digest(black_box(MSG));
            s.sign(&Mechanism::Ecdsa, key, &digest).expect("C_Sign")
        })
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.sign("p384", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ed25519-sign");
    let key = env.object(&s, "ed25519", ObjectClass::PRIVATE_KEY);
    let eddsa = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| s.sign(&eddsa, key, black_box(MSG)).expect("C_Sign"))
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.sign("ed25519", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();
    // Ed25519 is deterministic: the raw session really used the keystore's key.
    let raw = s.sign(&eddsa, key, MSG).expect("C_Sign");
    let via = ks
        .sign("ed25519", MSG, SignatureFormat::Fixed)
        .expect("sign");
    assert_eq!(raw[..], via.bytes[..]);
}

/// ECDH into a session object, one SHA-256 block of the KDF on the token
/// over it, then the object destroyed.
fn raw_agree(s: &Session, key: ObjectHandle, peer: &[u8], template: &[Attribute]) -> Vec<u8> {
    let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
    let z = s
        .derive_key(&Mechanism::Ecdh1Derive(params), key, template)
        .expect("C_DeriveKey");
    s.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
    s.digest_update(&1u32.to_be_bytes())
        .expect("C_DigestUpdate");
    s.digest_key(z).expect("C_DigestKey");
    s.digest_update(INFO).expect("C_DigestUpdate");
    let out = s.digest_final().expect("C_DigestFinal");
    s.destroy_object(z).expect("C_DestroyObject");
    out
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
    let s = env.session();
    let key = env.object(&s, "ecdh", ObjectClass::PRIVATE_KEY);
    // The peer's key: an uncompressed SEC1 point, given to both paths.
    let peer = p256::SecretKey::from_bytes(&[9u8; 32].into())
        .expect("peer key")
        .public_key();
    let peer = p256::EncodedPoint::from(peer).as_bytes().to_vec();
    let template = backend_pkcs11::testing::shared_secret_template();

    let mut g = c.benchmark_group("ecdh-p256-agree-32");
    g.bench_function("raw-pkcs11", |b| {
        b.iter(|| raw_agree(&s, key, black_box(&peer), &template))
    });
    g.bench_function("keystore-pkcs11", |b| {
        b.iter(|| {
            ks.agree_sha256_kdf("ecdh", black_box(&peer), INFO, 32)
                .expect("agree")
        })
    });
    g.finish();
    // Same key, same peer: the raw session computed the keystore's output.
    let raw = raw_agree(&s, key, &peer, &template);
    let via = ks.agree_sha256_kdf("ecdh", &peer, INFO, 32).expect("agree");
    assert_eq!(raw[..], via.expose()[..]);
}

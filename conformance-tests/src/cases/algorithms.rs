//! The algorithms added for device fleets: ECDSA P-384, Ed25519 and
//! ML-DSA-65 signatures, and ECDH P-256 key agreement with the one-step KDF
//! of SP 800-56C (SHA-256), each checked by independent implementations
//! (RustCrypto crates and the `openssl` command) or proven `Unsupported`.

use crate::support::so;
use crate::support::{
    create_or_prove_unsupported, expect_err, sign_verify_case, spki, unsupported, Bystanders,
};
use crate::{Fixture, Outcome};
use keystore_api::agreement::{MAX_AGREE_LEN, MAX_FIXED_INFO_LEN};
use keystore_api::{Algorithm, ErrorKind, KeyState, Keystore, SignatureFormat};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sha2::Digest;
use time::Duration;

/// TEST-KEY-60
pub fn ecdsa_p384_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::EcdsaP384Sha384)
}

/// TEST-KEY-61
pub fn ed25519_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::Ed25519)
}

/// TEST-KEY-62
pub fn ml_dsa_65_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    if let Some(info) = create_or_prove_unsupported::<F>(&ks, "pq", Algorithm::MlDsa65) {
        // FIPS 204 sizes for ML-DSA-65: a 1,952-byte key (in a 1,974-byte
        // SPKI) and 3,309-byte signatures.
        assert_eq!(spki(&info).len(), 1974);
        let sig = ks
            .sign("pq", b"firmware image", SignatureFormat::Der)
            .expect("sign");
        assert_eq!(sig.bytes.len(), 3309);
        drop(ks);
        return sign_verify_case(fx, Algorithm::MlDsa65);
    }
    unsupported(Algorithm::MlDsa65, "generate/sign")
}

/// TEST-KEY-63
pub fn new_algorithms_rotate_and_revoke<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let mut ran = Vec::new();
    for alg in [
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::MlDsa65,
        Algorithm::EcdhP256,
    ] {
        let name = format!("rot-{}", alg.id());
        if create_or_prove_unsupported::<F>(&ks, &name, alg).is_none() {
            continue;
        }
        ran.push(alg);
        let use_key = |ks: &Keystore<F::Backend>| -> keystore_api::Result<Vec<u8>> {
            if alg.signs() {
                ks.sign(&name, b"m", SignatureFormat::Der).map(|s| s.bytes)
            } else {
                ks.agree_sha256_kdf(&name, &peer(1).1, b"rot", 32)
                    .map(|k| k.expose().to_vec())
            }
        };
        let first = use_key(&ks).expect("use v1");
        let v1_spki = spki(&ks.info(&name).expect("info"));
        let info = ks.rotate(&so(), &name, Duration::hours(1)).expect("rotate");
        assert_eq!(info.active().expect("active").version, 2);
        assert_ne!(spki(&info), v1_spki, "{alg}: rotation made a new key");
        let second = use_key(&ks).expect("use v2");
        if alg.signs() {
            assert_eq!(
                ks.verify(&name, b"m", &first, None).expect("v1 in grace"),
                1
            );
            assert_eq!(ks.verify(&name, b"m", &second, None).expect("v2"), 2);
        } else {
            assert_ne!(first, second, "{alg}: v2 agrees with its own key");
        }
        ks.revoke(&so(), &name, 2, "compromised in test")
            .expect("revoke");
        let e = expect_err(use_key(&ks), ErrorKind::KeyState, "use after revoke");
        assert!(e.to_string().contains(&name), "{e}");
        let v2 = ks
            .info(&name)
            .expect("info")
            .versions
            .into_iter()
            .find(|v| v.version == 2)
            .expect("v2");
        assert_eq!(v2.state, KeyState::Compromised);
        if alg.signs() {
            expect_err(
                ks.verify(&name, b"m", &second, Some(2)),
                ErrorKind::KeyState,
                "verify with a revoked version",
            );
        }
    }
    if ran.is_empty() {
        return unsupported(Algorithm::EcdsaP384Sha384, "any of the new algorithms");
    }
    Outcome::Passed
}

/// A peer key pair for ECDH from a fixed seed: the secret and its public key
/// as a DER SPKI.
fn peer(seed: u8) -> (p256::SecretKey, Vec<u8>) {
    let mut scalar = [seed; 32];
    scalar[0] = 0x11;
    let sk = p256::SecretKey::from_slice(&scalar).expect("valid scalar");
    let der = sk
        .public_key()
        .to_public_key_der()
        .expect("spki")
        .as_bytes()
        .to_vec();
    (sk, der)
}

/// The reference: ECDH with the `p256` crate, then
/// `SHA-256(be32(i) ‖ Z ‖ info)` blocks, truncated.
fn reference(peer: &p256::SecretKey, ours: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let ours = p256::PublicKey::from_public_key_der(ours).expect("our SPKI");
    let z = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), ours.as_affine());
    let mut out = Vec::new();
    let mut i = 1u32;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(i.to_be_bytes());
        h.update(z.raw_secret_bytes());
        h.update(info);
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The same with the `openssl` command: `pkeyutl -derive` then `kdf SSKDF`.
fn openssl_reference(peer: &p256::SecretKey, ours_pem: &str, info: &[u8], len: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (peer_pem, ours, z) = (
        dir.path().join("peer.pem"),
        dir.path().join("ours.pem"),
        dir.path().join("z.bin"),
    );
    let pem = peer
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .expect("peer pem");
    std::fs::write(&peer_pem, pem.as_bytes()).expect("write");
    std::fs::write(&ours, ours_pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(&peer_pem)
        .arg("-peerkey")
        .arg(&ours)
        .arg("-out")
        .arg(&z)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl pkeyutl -derive: {out:?}");
    let z = std::fs::read(&z).expect("read z");
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["kdf", "-keylen", &len.to_string(), "-binary"])
        .args(["-kdfopt", "digest:SHA256"])
        .args(["-kdfopt", &format!("hexkey:{}", hex::encode(&z))]);
    if !info.is_empty() {
        cmd.args(["-kdfopt", &format!("hexinfo:{}", hex::encode(info))]);
    }
    let out = cmd.arg("SSKDF").output().expect("run openssl kdf");
    assert!(out.status.success(), "openssl kdf SSKDF: {out:?}");
    out.stdout
}

fn ed25519_spki() -> Vec<u8> {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    ed25519_dalek::SigningKey::from_bytes(&[1u8; 32])
        .verifying_key()
        .to_public_key_der()
        .expect("ed25519 spki")
        .as_bytes()
        .to_vec()
}

/// TEST-KEY-64
pub fn ecdh_p256_agreement<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let Some(info) = create_or_prove_unsupported::<F>(&ks, "agree", Algorithm::EcdhP256) else {
        return unsupported(Algorithm::EcdhP256, "generate/agree");
    };
    let ours = spki(&info);
    let ours_pem = ks.public_key("agree").expect("public key").to_pem();
    for (seed, info_bytes, len) in [
        (1u8, &b""[..], 32usize),
        (2, b"fixed info: device 42", 16),
        (3, b"AlgorithmID||PartyUInfo||PartyVInfo", 33),
        (4, &[0xA5u8; 300][..], 64),
        (5, b"k", 100),
    ] {
        let (peer_sk, peer_der) = peer(seed);
        let got = ks
            .agree_sha256_kdf("agree", &peer_der, info_bytes, len)
            .expect("agree");
        assert_eq!(got.len(), len);
        let want = reference(&peer_sk, &ours, info_bytes, len);
        assert_eq!(
            got.expose(),
            &want[..],
            "{len} bytes: differs from p256 + SHA-256"
        );
        assert_eq!(
            got.expose(),
            &openssl_reference(&peer_sk, &ours_pem, info_bytes, len)[..],
            "{len} bytes: differs from openssl SSKDF"
        );
        // The same peer as a SEC1 point (both forms) and as PEM.
        let pk = peer_sk.public_key();
        for form in [
            pk.to_encoded_point(false).as_bytes().to_vec(),
            pk.to_encoded_point(true).as_bytes().to_vec(),
            pk.to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .expect("pem")
                .into_bytes(),
        ] {
            let again = ks
                .agree_sha256_kdf("agree", &form, info_bytes, len)
                .expect("agree");
            assert_eq!(again.expose(), got.expose());
        }
    }
    // The longest output and FixedInfo are accepted.
    let (peer_sk, peer_der) = peer(9);
    let long = ks
        .agree_sha256_kdf(
            "agree",
            &peer_der,
            &[7u8; MAX_FIXED_INFO_LEN],
            MAX_AGREE_LEN,
        )
        .expect("longest");
    assert_eq!(
        long.expose(),
        &reference(&peer_sk, &ours, &[7u8; MAX_FIXED_INFO_LEN], MAX_AGREE_LEN)[..]
    );
    // The derived bytes are redacted in Debug.
    assert!(!format!("{long:?}").contains(&hex::encode(&long.expose()[..8])));
    // Survives a restart.
    let ks = fx.restart(ks);
    let (peer_sk, peer_der) = peer(1);
    assert_eq!(
        ks.agree_sha256_kdf("agree", &peer_der, b"", 32)
            .expect("agree after restart")
            .expose(),
        &reference(&peer_sk, &ours, b"", 32)[..]
    );
    Outcome::Passed
}

/// TEST-KEY-65
pub fn ecdh_peer_keys_validated<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let by = Bystanders::create::<F>(&ks);
    if create_or_prove_unsupported::<F>(&ks, "agree", Algorithm::EcdhP256).is_none() {
        return unsupported(Algorithm::EcdhP256, "generate/agree");
    }
    let (sk, good) = peer(1);
    let point = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    let mut x_too_big = point.clone();
    x_too_big[1..33].copy_from_slice(&[0xFF; 32]);
    let p384_spki = {
        let sk = p384::SecretKey::from_slice(&[0x22; 48]).expect("p384 scalar");
        p384::pkcs8::EncodePublicKey::to_public_key_der(&sk.public_key())
            .expect("p384 spki")
            .as_bytes()
            .to_vec()
    };
    let mut bad_spki = good.clone();
    let n = bad_spki.len();
    bad_spki[n - 1] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("off-curve point", off_curve),
        ("x not a field element", x_too_big),
        ("identity", vec![0u8]),
        ("truncated point", point[..64].to_vec()),
        ("long point", [point.clone(), vec![0]].concat()),
        ("empty", Vec::new()),
        ("P-384 key (wrong curve)", p384_spki),
        ("SPKI with a point off the curve", bad_spki),
        ("Ed25519 SPKI", ed25519_spki()),
        (
            "not PEM",
            b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n".to_vec(),
        ),
        ("garbage", vec![0x30, 0x03, 0x01, 0x02, 0x03]),
    ];
    for (what, bytes) in &cases {
        let e = expect_err(
            ks.agree_sha256_kdf("agree", bytes, b"", 32),
            ErrorKind::InvalidInput,
            what,
        );
        assert_eq!(e.key(), Some("agree"), "{what}: {e}");
    }
    for len in [0, MAX_AGREE_LEN + 1] {
        expect_err(
            ks.agree_sha256_kdf("agree", &good, b"", len),
            ErrorKind::InvalidInput,
            "output length",
        );
    }
    expect_err(
        ks.agree_sha256_kdf("agree", &good, &vec![0u8; MAX_FIXED_INFO_LEN + 1], 32),
        ErrorKind::InvalidInput,
        "FixedInfo too long",
    );
    // An agreement key does not sign, and a signing key does not agree.
    expect_err(
        ks.sign("agree", b"m", SignatureFormat::Der),
        ErrorKind::Policy,
        "sign with an ECDH key",
    );
    if ks.info("bystander-ec").is_ok() {
        expect_err(
            ks.agree_sha256_kdf("bystander-ec", &good, b"", 32),
            ErrorKind::Policy,
            "agree with an ECDSA key",
        );
    }
    expect_err(
        ks.agree_sha256_kdf("no-such-key", &good, b"", 32),
        ErrorKind::NotFound,
        "agree with a missing key",
    );
    // After every refusal the key and its neighbours still work.
    let out = ks.agree_sha256_kdf("agree", &good, b"", 32).expect("agree");
    assert_eq!(
        out.expose(),
        &reference(&sk, &spki(&ks.info("agree").expect("info")), b"", 32)[..]
    );
    by.assert_intact::<F>(&ks);
    Outcome::Passed
}

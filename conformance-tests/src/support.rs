//! Helpers shared by the cases: independent verifiers, error assertions,
//! capability-aware key creation.

use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::{Actor, Algorithm, Error, KeyInfo, KeySpec, Keystore, Operation, Result, Role};

/// The security officer the suite acts as for lifecycle operations.
pub fn so() -> Actor {
    Actor::new("suite-security-officer", Role::SecurityOfficer).expect("valid actor")
}

/// An operator.
pub fn operator() -> Actor {
    Actor::new("suite-operator", Role::Operator).expect("valid actor")
}

/// An auditor.
pub fn auditor() -> Actor {
    Actor::new("suite-auditor", Role::Auditor).expect("valid actor")
}

/// Asserts that `res` failed with an error of `kind`, and returns the error.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(res: Result<T>, kind: ErrorKind, what: &str) -> Error {
    match res {
        Ok(v) => panic!("{what}: expected {kind}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: expected {kind}, got {e:?}");
            e
        }
    }
}

/// Creates `name` as `alg` if the backend claims it can; otherwise proves
/// that it answers `Unsupported` and returns `None`.
#[track_caller]
pub fn create_or_prove_unsupported<F: Fixture>(
    ks: &Keystore<F::Backend>,
    name: &str,
    alg: Algorithm,
) -> Option<KeyInfo> {
    if ks
        .backend()
        .capabilities()
        .supports(alg, Operation::Generate)
    {
        Some(
            ks.create(&so(), name, KeySpec::new(alg))
                .unwrap_or_else(|e| panic!("create {alg} on {}: {e:?}", F::NAME)),
        )
    } else {
        expect_err(
            ks.create(&so(), name, KeySpec::new(alg)),
            ErrorKind::Unsupported,
            &format!("{} claims no {alg} generation", F::NAME),
        );
        None
    }
}

/// The outcome for an algorithm the backend proved unsupported.
pub fn unsupported(alg: Algorithm, op: &str) -> Outcome {
    Outcome::UnsupportedVerified(format!("{alg} {op}"))
}

/// Verifies with the RustCrypto crates directly (never the backend, never the
/// keystore). ECDSA accepts DER or fixed form.
pub fn verify_independently(alg: Algorithm, spki: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use sha2::Sha256;
    match alg {
        Algorithm::EcdsaP256Sha256 => {
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let Ok(vk) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) else {
                return false;
            };
            let sig = match sig.len() {
                64 => p256::ecdsa::Signature::from_slice(sig),
                _ => p256::ecdsa::Signature::from_der(sig),
            };
            sig.map(|s| vk.verify(msg, &s).is_ok()).unwrap_or(false)
        }
        Algorithm::EcdsaP384Sha384 => {
            use p384::ecdsa::signature::Verifier;
            use p384::pkcs8::DecodePublicKey;
            let Ok(vk) = p384::ecdsa::VerifyingKey::from_public_key_der(spki) else {
                return false;
            };
            let sig = match sig.len() {
                96 => p384::ecdsa::Signature::from_slice(sig),
                _ => p384::ecdsa::Signature::from_der(sig),
            };
            sig.map(|s| vk.verify(msg, &s).is_ok()).unwrap_or(false)
        }
        Algorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::DecodePublicKey;
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_public_key_der(spki) else {
                return false;
            };
            ed25519_dalek::Signature::from_slice(sig)
                .map(|s| vk.verify_strict(msg, &s).is_ok())
                .unwrap_or(false)
        }
        Algorithm::MlDsa65 => {
            use ml_dsa::pkcs8::DecodePublicKey;
            use ml_dsa::signature::Verifier;
            let Ok(vk) = ml_dsa::VerifyingKey::<ml_dsa::MlDsa65>::from_public_key_der(spki) else {
                return false;
            };
            ml_dsa::Signature::<ml_dsa::MlDsa65>::try_from(sig)
                .map(|s| vk.verify(msg, &s).is_ok())
                .unwrap_or(false)
        }
        alg if alg.rsa_bits().is_some() => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let Ok(pk) = rsa::RsaPublicKey::from_public_key_der(spki) else {
                return false;
            };
            if alg.is_rsa_pss() {
                let vk = rsa::pss::VerifyingKey::<Sha256>::new(pk);
                rsa::pss::Signature::try_from(sig)
                    .map(|s| vk.verify(msg, &s).is_ok())
                    .unwrap_or(false)
            } else {
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
                rsa::pkcs1v15::Signature::try_from(sig)
                    .map(|s| vk.verify(msg, &s).is_ok())
                    .unwrap_or(false)
            }
        }
        _ => false,
    }
}

/// True if `openssl` verifies `sig` (DER for ECDSA) over `msg` with `pk`:
/// `openssl pkeyutl -verify -rawin` with the algorithm's digest (none for
/// Ed25519), RSA-PSS with a 32-byte salt.
pub fn openssl_verifies(pk: &keystore_api::PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let alg = pk.algorithm();
    let dir = tempfile::tempdir().expect("tempdir");
    let (pem, m, s) = (
        dir.path().join("pk.pem"),
        dir.path().join("msg"),
        dir.path().join("sig"),
    );
    std::fs::write(&pem, pk.to_pem()).expect("write pem");
    std::fs::write(&m, msg).expect("write msg");
    std::fs::write(&s, sig).expect("write sig");
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&pem)
        .arg("-rawin")
        .arg("-in")
        .arg(&m)
        .arg("-sigfile")
        .arg(&s);
    match alg {
        Algorithm::Ed25519 => {}
        Algorithm::EcdsaP384Sha384 => {
            cmd.args(["-digest", "sha384"]);
        }
        _ => {
            cmd.args(["-digest", "sha256"]);
        }
    }
    if alg.is_rsa_pss() {
        cmd.args([
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            "rsa_pss_saltlen:32",
        ]);
    }
    let out = cmd
        .output()
        .expect("run openssl (installed by scripts/test)");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Signature Verified Successfully")
}

/// The independent HKDF reference of the derivation contract.
pub fn hkdf_reference(k: &[u8], salt: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(k), salt)
        .expand(info, &mut out)
        .expect("len within 1..=8160");
    out
}

/// The SPKI of the active version of `info`.
pub fn spki(info: &KeyInfo) -> Vec<u8> {
    info.active()
        .and_then(|v| v.public_key.as_ref())
        .map(|p| p.spki_der().to_vec())
        .expect("asymmetric key has a public key")
}

/// Signs and checks a key's full behaviour for one signing algorithm.
pub fn sign_verify_case<F: Fixture>(fx: &mut F, alg: Algorithm) -> Outcome {
    use keystore_api::SignatureFormat;
    let ks = fx.open();
    let Some(info) = create_or_prove_unsupported::<F>(&ks, "signer", alg) else {
        return unsupported(alg, "generate/sign");
    };
    let info2 = ks.info("signer").expect("info");
    assert_eq!(info, info2);
    let v = info.active().expect("active version");
    assert_eq!(v.origin, keystore_api::Origin::Generated);
    let pk = v.public_key.clone().expect("public key");
    assert_eq!(pk.algorithm(), alg);
    assert_eq!(ks.public_key("signer").expect("public key"), pk);
    let spki = pk.spki_der().to_vec();
    for msg in [
        &b""[..],
        b"a",
        b"gateway telemetry frame 42",
        &[0xA5u8; 4096][..],
    ] {
        let der = ks
            .sign("signer", msg, SignatureFormat::Der)
            .expect("sign der");
        assert_eq!(der.version, 1);
        assert!(
            verify_independently(alg, &spki, msg, &der.bytes),
            "{alg}: DER signature does not verify independently"
        );
        assert!(
            !verify_independently(alg, &spki, b"another message", &der.bytes),
            "{alg}: verifies a different message"
        );
        assert_eq!(
            ks.verify("signer", msg, &der.bytes, None)
                .expect("keystore verify"),
            1
        );
        let fixed = ks
            .sign("signer", msg, SignatureFormat::Fixed)
            .expect("sign fixed");
        assert!(
            verify_independently(alg, &spki, msg, &fixed.bytes),
            "{alg}: fixed signature does not verify independently"
        );
        assert_eq!(
            Some(fixed.bytes.len()),
            alg.signature_len(),
            "{alg}: raw form"
        );
        if alg.ec_curve().is_some() {
            assert_eq!(der.bytes[0], 0x30, "DER signature is a SEQUENCE");
        } else {
            // One encoding (RSA-PSS and ML-DSA are randomised, so compare lengths).
            assert_eq!(der.bytes.len(), fixed.bytes.len(), "{alg} has one encoding");
        }
    }
    // OpenSSL verifies every algorithm it knows (3.0 has no ML-DSA).
    if alg != Algorithm::MlDsa65 {
        let msg = b"checked by openssl";
        let sig = ks.sign("signer", msg, SignatureFormat::Der).expect("sign");
        assert!(
            openssl_verifies(&pk, msg, &sig.bytes),
            "{alg}: openssl does not verify the signature"
        );
        assert!(
            !openssl_verifies(&pk, b"another message", &sig.bytes),
            "{alg}: openssl verifies a different message"
        );
    }
    // A symmetric operation on a signing key is a policy refusal.
    expect_err(
        ks.encrypt("signer", b"x", b"aad"),
        ErrorKind::Policy,
        "encrypt with a signing key",
    );
    Outcome::Passed
}

/// Bystander keys that every bad-input case checks afterwards: a failed
/// operation must leave every other key intact.
pub struct Bystanders {
    ec_spki: Option<Vec<u8>>,
}

const BYSTANDER_K: [u8; 32] = [0x5c; 32];

impl Bystanders {
    /// Creates `bystander-ec` (ECDSA P-256, when supported) and
    /// `bystander-mac` (HMAC-SHA256 imported from a known K, usage `derive`:
    /// a key holds `mac` or `derive`, never both).
    pub fn create<F: Fixture>(ks: &Keystore<F::Backend>) -> Bystanders {
        let ec = create_or_prove_unsupported::<F>(ks, "bystander-ec", Algorithm::EcdsaP256Sha256);
        ks.import(
            &so(),
            "bystander-mac",
            KeySpec::new(Algorithm::HmacSha256).with_usages(keystore_api::Usages::DERIVE),
            &keystore_api::SecretBytes::from_slice(&BYSTANDER_K),
        )
        .expect("import bystander HMAC key");
        Bystanders {
            ec_spki: ec.as_ref().map(spki),
        }
    }

    /// Asserts both bystanders still work exactly as before.
    #[track_caller]
    pub fn assert_intact<F: Fixture>(&self, ks: &Keystore<F::Backend>) {
        if let Some(spki) = &self.ec_spki {
            let sig = ks
                .sign(
                    "bystander-ec",
                    b"still here",
                    keystore_api::SignatureFormat::Der,
                )
                .expect("bystander ECDSA key still signs");
            assert!(verify_independently(
                Algorithm::EcdsaP256Sha256,
                spki,
                b"still here",
                &sig.bytes
            ));
            assert_eq!(
                &spki[..],
                ks.public_key("bystander-ec")
                    .expect("public key")
                    .spki_der()
            );
        }
        let out = ks
            .derive_hkdf_sha256("bystander-mac", b"salt", b"info", 32)
            .expect("bystander HMAC key still derives");
        assert_eq!(
            out.expose(),
            &hkdf_reference(&BYSTANDER_K, b"salt", b"info", 32)[..]
        );
    }
}

/// A fresh random 32-byte value from the OS (test-side, independent of any backend RNG).
pub fn random_key() -> [u8; 32] {
    use sha2::Digest;
    let mut seed = Vec::new();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    seed.extend_from_slice(&now.to_le_bytes());
    let mut urandom = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut urandom);
    }
    seed.extend_from_slice(&urandom);
    sha2::Sha256::digest(&seed).into()
}

/// Every encoding in which a leaked key could sit in a file.
pub fn leak_forms(key: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut forms = vec![
        ("raw".to_string(), key.to_vec()),
        ("raw first half".to_string(), key[..key.len() / 2].to_vec()),
        ("raw second half".to_string(), key[key.len() / 2..].to_vec()),
        ("hex".to_string(), hex::encode(key).into_bytes()),
        ("HEX".to_string(), hex::encode_upper(key).into_bytes()),
        (
            "base64".to_string(),
            b64.encode(key).trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("base64url".to_string(), b64url.encode(key).into_bytes()),
    ];
    forms.retain(|(_, f)| !f.is_empty());
    forms
}

/// Finds `needle` in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Scans every file the fixture reports for every leak form of `key`.
/// Returns the (file, form) pairs found.
pub fn scan_files<F: Fixture>(fx: &F, key: &[u8]) -> Vec<String> {
    let files = fx.files();
    assert!(
        !files.is_empty(),
        "the fixture reports the files its store writes"
    );
    let mut found = Vec::new();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for (form, needle) in leak_forms(key) {
            if contains(&bytes, &needle) {
                found.push(format!("{} holds the key ({form})", path.display()));
            }
        }
    }
    found
}

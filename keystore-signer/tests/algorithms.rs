//! ECDSA P-384 and Ed25519 keys behind every adapter, on every backend that
//! offers them (soft and PKCS#11 both, TPM P-384 only: a backend that does
//! not offer one must refuse it at creation with `Unsupported`, which is
//! asserted):
//!
//! - RustCrypto: `Signer` output verified by keys rebuilt from the
//!   keystore's SPKI by the `p384` and `ed25519-dalek` crates, and by
//!   `Keypair`'s verifying key;
//! - rustls: TLS 1.3 (and 1.2) handshakes over 127.0.0.1 with the keystore
//!   key as the client's identity, against a rustls server requiring client
//!   authentication and against `openssl s_server -Verify 1`; and as the
//!   server's identity, with `openssl s_client` verifying it;
//! - rcgen: a self-signed CA certificate (`openssl verify`) and a CSR
//!   (`openssl req -verify`), with the signature algorithm OpenSSL reads.
//!
//! On soft, ECDH and ML-DSA-65 keys are refused by every adapter.

mod common;

use common::*;
use keystore_api::{Algorithm, ErrorKind, KeySpec};
use keystore_signer::rustls::sign::SigningKey;
use keystore_signer::rustls::{ProtocolVersion, SignatureAlgorithm, SignatureScheme};
use keystore_signer::{certified_key, rcgen_algorithm, tls_signature_scheme, KeystoreSigningKey};
use rcgen::{CertificateParams, DnType, IsCa, PublicKeyData};
use signature::{Keypair, Signer, Verifier};
use std::process::Command;
use std::sync::Arc;

/// The algorithms this file covers.
const NEW: [Algorithm; 2] = [Algorithm::EcdsaP384Sha384, Algorithm::Ed25519];

/// Whether `kind` offers `alg`: TPM 2.0 has no Ed25519.
fn offered(kind: Kind, alg: Algorithm) -> bool {
    !(kind == Kind::Tpm && alg == Algorithm::Ed25519)
}

/// Creates a P-384 and an Ed25519 key where the backend offers them, and
/// asserts `Unsupported` (nothing created) where it does not. Returns the
/// adapters on the keys made.
fn new_keys(f: &Fixture) -> Vec<Key> {
    let officer = test_support::actors::officer("signer-tests");
    let mut keys = Vec::new();
    for alg in NEW {
        let name = alg.id();
        if offered(f.kind, alg) {
            keys.push(f.key(name, alg));
            continue;
        }
        let e =
            f.ks.create(&officer, name, KeySpec::new(alg))
                .expect_err("the backend does not offer the algorithm");
        assert!(
            e.is(ErrorKind::Unsupported),
            "{alg} on {}: {e}",
            f.kind.name()
        );
        assert!(f.ks.info(name).is_err(), "no key left behind");
    }
    keys
}

fn assert_kind(e: &signature::Error, kind: ErrorKind) {
    use std::error::Error as _;
    let source = e
        .source()
        .and_then(|s| s.downcast_ref::<keystore_api::Error>())
        .unwrap_or_else(|| panic!("no keystore error behind {e:?}"));
    assert_eq!(source.kind(), kind, "{source}");
}

fn rustcrypto_signatures_verify_independently(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let msg = b"telemetry frame 7";
    for key in new_keys(&f) {
        let spki = f.ks.public_key(key.name()).unwrap();
        assert_eq!(spki.spki_der(), key.spki_der());
        let vk = key.verifying_key();
        match key.algorithm() {
            Algorithm::EcdsaP384Sha384 => {
                use p384::pkcs8::DecodePublicKey;
                let independent =
                    p384::ecdsa::VerifyingKey::from_public_key_der(spki.spki_der()).unwrap();
                assert_eq!(vk.as_ecdsa_p384(), Some(&independent));
                let fixed: p384::ecdsa::Signature = key.try_sign(msg).unwrap();
                assert_eq!(fixed.to_bytes().len(), 96);
                let der: p384::ecdsa::DerSignature = key.try_sign(msg).unwrap();
                independent.verify(msg, &fixed).unwrap();
                independent.verify(msg, &der).unwrap();
                vk.verify(msg, &fixed).unwrap();
                vk.verify(msg, &der).unwrap();
                assert!(independent.verify(b"another frame", &fixed).is_err());
                // The P-256 and Ed25519 types are refused with the keystore error.
                let e = <Key as Signer<p256::ecdsa::Signature>>::try_sign(&key, msg).unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
                let e = <Key as Signer<ed25519_dalek::Signature>>::try_sign(&key, msg).unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
            }
            Algorithm::Ed25519 => {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                let independent =
                    ed25519_dalek::VerifyingKey::from_public_key_der(spki.spki_der()).unwrap();
                assert_eq!(vk.as_ed25519(), Some(&independent));
                let sig: ed25519_dalek::Signature = key.try_sign(msg).unwrap();
                independent.verify_strict(msg, &sig).unwrap();
                vk.verify(msg, &sig).unwrap();
                assert!(independent.verify_strict(b"another frame", &sig).is_err());
                // Ed25519 is deterministic: the same message, the same signature.
                let again: ed25519_dalek::Signature = key.try_sign(msg).unwrap();
                assert_eq!(sig, again);
                let e = <Key as Signer<p384::ecdsa::Signature>>::try_sign(&key, msg).unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
                let e =
                    <Key as Signer<p256::ecdsa::DerSignature>>::try_sign(&key, msg).unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
            }
            other => panic!("unexpected {other}"),
        }
        // The verifying key encodes to the keystore's SPKI.
        use spki::EncodePublicKey;
        assert_eq!(vk.to_public_key_der().unwrap().as_bytes(), key.spki_der());
        // A signature of another type does not verify under it.
        let p256_sig = p256::ecdsa::Signature::from_slice(&[1u8; 64]).unwrap();
        assert!(vk.verify(msg, &p256_sig).is_err());
    }
}

/// The one scheme and family rustls gets for `alg`.
fn scheme_of(alg: Algorithm) -> (SignatureScheme, SignatureAlgorithm) {
    match alg {
        Algorithm::EcdsaP384Sha384 => (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureAlgorithm::ECDSA,
        ),
        Algorithm::Ed25519 => (SignatureScheme::ED25519, SignatureAlgorithm::ED25519),
        other => panic!("unexpected {other}"),
    }
}

fn rustls_offers_only_the_key_scheme(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let all = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP521_SHA512,
        SignatureScheme::ED25519,
        SignatureScheme::ED448,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    for key in new_keys(&f) {
        let (scheme, family) = scheme_of(key.algorithm());
        assert_eq!(tls_signature_scheme(key.algorithm()), Some(scheme));
        assert_eq!(SigningKey::algorithm(&key), family);
        let signer = key.choose_scheme(&all).expect("offered");
        assert_eq!(signer.scheme(), scheme);
        let sig = signer.sign(b"transcript").unwrap();
        key.public_key().verify(b"transcript", &sig).unwrap();
        if key.algorithm() == Algorithm::EcdsaP384Sha384 {
            // TLS carries ECDSA signatures in DER.
            assert_eq!(sig[0], 0x30, "DER");
            p384::ecdsa::DerSignature::from_bytes(&sig).unwrap();
        } else {
            assert_eq!(sig.len(), 64);
        }
        let others: Vec<_> = all.iter().copied().filter(|s| *s != scheme).collect();
        assert!(key.choose_scheme(&others).is_none(), "{}", key.name());
    }
}

fn rustls_server_accepts_the_keystore_client(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    for key in new_keys(&f) {
        let chain = pki.client_chain(&key);
        for v in [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2] {
            let identity = certified_key(chain.clone(), &key).expect("certified key");
            let (addr, server) = rustls_server_requiring_client_auth(&pki, v);
            let client = rustls_client(&pki, identity, v, addr);
            let saw = server.join().expect("server thread");
            let (line, negotiated) = client.unwrap_or_else(|e| {
                panic!(
                    "{} {v:?} on {}: client: {e}; server: {saw:?}",
                    key.name(),
                    kind.name()
                )
            });
            assert_eq!(line, "pong ping");
            assert_eq!(negotiated, Some(v));
            let saw = saw.expect("server");
            assert_eq!(saw.version, Some(v));
            assert_eq!(saw.client_chain.first(), chain.first());
        }
    }
}

fn openssl_s_server_verifies_the_keystore_client(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    let dir = pki_dir(&f, &pki);
    for key in new_keys(&f) {
        let v = ProtocolVersion::TLSv1_3;
        let identity = certified_key(pki.client_chain(&key), &key).expect("certified key");
        let server = OpensslServer::start(&dir, v);
        let client = rustls_client(&pki, identity, v, server.addr);
        let (ok, text) = server.finish();
        let (line, negotiated) = client.unwrap_or_else(|e| {
            panic!(
                "{} on {}: client: {e}; s_server: {text}",
                key.name(),
                kind.name()
            )
        });
        assert_eq!(line, "gnip", "s_server: {text}");
        assert_eq!(negotiated, Some(v));
        assert!(ok, "s_server failed: {text}");
    }
}

fn openssl_s_client_verifies_the_keystore_server(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    let dir = pki_dir(&f, &pki);
    for key in new_keys(&f) {
        let v = ProtocolVersion::TLSv1_3;
        let identity = certified_key(pki.server_chain(&key), &key).expect("certified key");
        let verifier =
            keystore_signer::rustls::server::WebPkiClientVerifier::builder_with_provider(
                pki.roots(),
                provider(),
            )
            .build()
            .unwrap();
        let config = keystore_signer::rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version(v)])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(
                keystore_signer::rustls::sign::SingleCertAndKey::from(identity),
            ));
        let (addr, server) = serve_one(Arc::new(config));
        let (ok, text) = openssl_client(&dir, addr, v);
        let saw = server.join().expect("server thread");
        assert!(
            ok,
            "{} on {}: s_client: {text}; server: {saw:?}",
            key.name(),
            kind.name()
        );
        assert_eq!(saw.expect("server").line, "ping");
        assert!(text.contains("Verification: OK"), "{text}");
        assert!(text.contains("pong ping"), "{text}");
        let want = match key.algorithm() {
            Algorithm::EcdsaP384Sha384 => "signature type: ecdsa",
            _ => "signature type: ed25519",
        };
        assert!(
            text.to_lowercase().contains(want),
            "want {want:?} in {text}"
        );
    }
}

fn openssl(args: &[&str], file: &std::path::Path) -> String {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .arg(file)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

fn rcgen_signs_certificates_and_csrs(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let dir = f.path();
    for key in new_keys(&f) {
        assert_eq!(key.subject_public_key_info(), key.spki_der());
        let signer = KeystoreSigningKey::for_rcgen(Arc::clone(&f.ks), key.name()).unwrap();
        let mut params = CertificateParams::new(vec!["gateway.local".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} CA", key.name()));
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&signer)
            .map_err(|e| signer.map_rcgen_error(e))
            .unwrap();
        let csr = params
            .serialize_request(&signer)
            .map_err(|e| signer.map_rcgen_error(e))
            .unwrap();
        let ca_file = dir.join(format!("{}-ca.pem", key.name()));
        let csr_file = dir.join(format!("{}-csr.pem", key.name()));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&csr_file, csr.pem().unwrap()).unwrap();
        let ca_path = ca_file.to_str().unwrap();
        openssl(&["verify", "-CAfile", ca_path], &ca_file);
        openssl(&["req", "-verify", "-noout", "-in"], &csr_file);
        let text = openssl(&["x509", "-noout", "-text", "-in"], &ca_file);
        let want = match key.algorithm() {
            Algorithm::EcdsaP384Sha384 => ["ecdsa-with-SHA384", "NIST CURVE: P-384"],
            _ => ["ED25519", "ED25519 Public-Key"],
        };
        for w in want {
            assert!(text.contains(w), "want {w:?} in {text}");
        }
    }
}

macro_rules! on_backend {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn rustcrypto_signatures_verify_independently() {
                super::rustcrypto_signatures_verify_independently($kind);
            }

            #[test]
            fn rustls_offers_only_the_key_scheme() {
                super::rustls_offers_only_the_key_scheme($kind);
            }

            #[test]
            fn rustls_server_accepts_the_keystore_client() {
                super::rustls_server_accepts_the_keystore_client($kind);
            }

            #[test]
            fn openssl_s_server_verifies_the_keystore_client() {
                super::openssl_s_server_verifies_the_keystore_client($kind);
            }

            #[test]
            fn openssl_s_client_verifies_the_keystore_server() {
                super::openssl_s_client_verifies_the_keystore_server($kind);
            }

            #[test]
            fn rcgen_signs_certificates_and_csrs() {
                super::rcgen_signs_certificates_and_csrs($kind);
            }
        }
    };
}

on_backend!(soft, Kind::Soft);
on_backend!(pkcs11, Kind::Pkcs11);
on_backend!(tpm, Kind::Tpm);

#[test]
fn ecdh_and_ml_dsa_keys_are_refused_by_every_adapter() {
    let f = Fixture::new(Kind::Soft).expect("the soft backend is always there");
    let so = test_support::actors::officer("creator");
    for alg in [Algorithm::EcdhP256, Algorithm::MlDsa65] {
        f.ks.create(&so, alg.id(), KeySpec::new(alg))
            .unwrap_or_else(|e| panic!("create {alg} on soft: {e}"));
        let ks = || Arc::clone(&f.ks);
        for e in [
            KeystoreSigningKey::new(ks(), alg.id()).unwrap_err(),
            KeystoreSigningKey::pinned(ks(), alg.id()).unwrap_err(),
            KeystoreSigningKey::pinned_to(ks(), alg.id(), 1).unwrap_err(),
            KeystoreSigningKey::for_rcgen(ks(), alg.id()).unwrap_err(),
        ] {
            assert!(e.is(ErrorKind::Unsupported), "{alg}: {e}");
            assert!(e.to_string().contains(alg.id()), "{alg}: {e}");
        }
        assert_eq!(tls_signature_scheme(alg), None);
        let e = rcgen_algorithm(alg).unwrap_err();
        assert!(e.is(ErrorKind::Unsupported), "{e}");
        let pk = f.ks.public_key(alg.id()).unwrap();
        let e = keystore_signer::VerifyingKey::from_public_key(&pk).unwrap_err();
        assert!(e.is(ErrorKind::Unsupported), "{alg}: {e}");
    }
    let e = KeystoreSigningKey::new(Arc::clone(&f.ks), "ml-dsa-65").unwrap_err();
    assert!(e.to_string().contains("Keystore::sign"), "{e}");
}

#[test]
fn rcgen_gets_the_x509_algorithm_of_each_key() {
    assert_eq!(
        rcgen_algorithm(Algorithm::EcdsaP384Sha384).unwrap(),
        &rcgen::PKCS_ECDSA_P384_SHA384
    );
    assert_eq!(
        rcgen_algorithm(Algorithm::Ed25519).unwrap(),
        &rcgen::PKCS_ED25519
    );
    assert_eq!(
        rcgen_algorithm(Algorithm::EcdsaP256Sha256).unwrap(),
        &rcgen::PKCS_ECDSA_P256_SHA256
    );
}

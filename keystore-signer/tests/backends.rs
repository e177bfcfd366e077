//! The adapter on every backend (soft, PKCS#11 on SoftHSM2, TPM on swtpm)
//! with ECDSA P-256, RSA-2048 PSS and RSA-2048 PKCS#1 v1.5 keys:
//!
//! - RustCrypto: `Keypair`'s verifying key, and keys rebuilt from the
//!   keystore's SPKI by the `p256`/`rsa` crates, verify `Signer` output;
//! - real TLS 1.3 and 1.2 handshakes over 127.0.0.1 with the keystore key
//!   as the client's identity, against a rustls server that requires client
//!   authentication (WebPkiClientVerifier over a root made for the test) and
//!   against `openssl s_server -Verify 1 -CAfile root.pem`; and as the
//!   server's identity, with `openssl s_client` connecting;
//! - rcgen: a self-signed CA certificate and a CSR signed in the backend,
//!   checked by OpenSSL.
//!
//! RSA PKCS#1 v1.5 keys cannot sign a TLS 1.3 handshake: there the test
//! checks that the handshake fails (the key offers no scheme) and runs TLS 1.2.

mod common;

use common::*;
use keystore_api::{Algorithm, ErrorKind};
use keystore_signer::rustls::ProtocolVersion;
use keystore_signer::{certified_key, KeystoreSigningKey, VerifyingKey};
use rcgen::{CertificateParams, DnType, IsCa, PublicKeyData};
use signature::{Keypair, Signer, Verifier};
use std::process::Command;
use std::sync::Arc;

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2];

fn keypair_verifies_signer_output_independently(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let msg = b"telemetry frame 7";
    for key in f.standard_keys() {
        let spki = f.ks.public_key(key.name()).unwrap();
        assert_eq!(spki.spki_der(), key.spki_der());
        let vk = key.verifying_key();
        match key.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                use p256::pkcs8::DecodePublicKey;
                let independent =
                    p256::ecdsa::VerifyingKey::from_public_key_der(spki.spki_der()).unwrap();
                assert_eq!(vk.as_ecdsa_p256(), Some(&independent));
                let fixed: p256::ecdsa::Signature = key.try_sign(msg).unwrap();
                let der: p256::ecdsa::DerSignature = key.try_sign(msg).unwrap();
                independent.verify(msg, &fixed).unwrap();
                independent.verify(msg, &der).unwrap();
                vk.verify(msg, &fixed).unwrap();
                vk.verify(msg, &der).unwrap();
                assert!(independent.verify(b"another frame", &fixed).is_err());
                // Another algorithm's signature type is refused with the keystore error.
                let e = <KeystoreSigningKey<_> as Signer<rsa::pss::Signature>>::try_sign(&key, msg)
                    .unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
            }
            Algorithm::Rsa2048PssSha256 => {
                use rsa::pkcs8::DecodePublicKey;
                let pk = rsa::RsaPublicKey::from_public_key_der(spki.spki_der()).unwrap();
                let independent = rsa::pss::VerifyingKey::<sha2::Sha256>::new(pk);
                let sig: rsa::pss::Signature = key.try_sign(msg).unwrap();
                independent.verify(msg, &sig).unwrap();
                vk.as_rsa_pss().unwrap().verify(msg, &sig).unwrap();
                vk.verify(msg, &sig).unwrap();
                assert!(independent.verify(b"another frame", &sig).is_err());
                let e = <KeystoreSigningKey<_> as Signer<rsa::pkcs1v15::Signature>>::try_sign(
                    &key, msg,
                )
                .unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
                let e =
                    <KeystoreSigningKey<_> as Signer<p256::ecdsa::Signature>>::try_sign(&key, msg)
                        .unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
            }
            Algorithm::Rsa2048Pkcs1Sha256 => {
                use rsa::pkcs8::DecodePublicKey;
                let pk = rsa::RsaPublicKey::from_public_key_der(spki.spki_der()).unwrap();
                let independent = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
                let sig: rsa::pkcs1v15::Signature = key.try_sign(msg).unwrap();
                independent.verify(msg, &sig).unwrap();
                assert!(matches!(vk, VerifyingKey::RsaPkcs1v15(_)));
                vk.verify(msg, &sig).unwrap();
                assert!(independent.verify(b"another frame", &sig).is_err());
                let e = <KeystoreSigningKey<_> as Signer<rsa::pss::Signature>>::try_sign(&key, msg)
                    .unwrap_err();
                assert_kind(&e, ErrorKind::Unsupported);
            }
            other => panic!("unexpected {other}"),
        }
        // The verifying key encodes to the keystore's SPKI.
        use spki::EncodePublicKey;
        assert_eq!(vk.to_public_key_der().unwrap().as_bytes(), key.spki_der());
    }
}

fn assert_kind(e: &signature::Error, kind: ErrorKind) {
    use std::error::Error as _;
    let source = e
        .source()
        .and_then(|s| s.downcast_ref::<keystore_api::Error>())
        .unwrap_or_else(|| panic!("no keystore error behind {e:?}"));
    assert_eq!(source.kind(), kind, "{source}");
}

fn rustls_server_requiring_client_auth_accepts_the_keystore_identity(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    for key in f.standard_keys() {
        let chain = pki.client_chain(&key);
        for v in VERSIONS {
            let identity = certified_key(chain.clone(), &key).expect("certified key");
            let (addr, server) = rustls_server_requiring_client_auth(&pki, v);
            let client = rustls_client(&pki, identity, v, addr);
            let saw = server.join().expect("server thread");
            if v == ProtocolVersion::TLSv1_3 && !tls13_capable(&key) {
                // PKCS#1 v1.5 is not a TLS 1.3 handshake signature: the key
                // offers no scheme, the client sends no certificate, and the
                // server, which requires one, refuses.
                assert!(
                    client.is_err() || saw.is_err(),
                    "{}: {client:?}",
                    key.name()
                );
                continue;
            }
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
            assert_eq!(saw.line, "ping");
            assert_eq!(
                saw.client_chain.first(),
                chain.first(),
                "the server saw our leaf"
            );
        }
    }
}

fn openssl_s_server_verifies_the_keystore_client(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    let dir = pki_dir(&f, &pki);
    for key in f.standard_keys() {
        let chain = pki.client_chain(&key);
        for v in VERSIONS {
            if v == ProtocolVersion::TLSv1_3 && !tls13_capable(&key) {
                continue; // covered against the rustls server
            }
            let identity = certified_key(chain.clone(), &key).expect("certified key");
            let server = OpensslServer::start(&dir, v);
            let client = rustls_client(&pki, identity, v, server.addr);
            let (ok, text) = server.finish();
            let (line, negotiated) = client.unwrap_or_else(|e| {
                panic!(
                    "{} {v:?} on {}: client: {e}; s_server: {text}",
                    key.name(),
                    kind.name()
                )
            });
            // -rev: s_server answers each line reversed.
            assert_eq!(line, "gnip", "s_server: {text}");
            assert_eq!(negotiated, Some(v));
            assert!(ok, "s_server failed: {text}");
        }
    }
}

fn openssl_s_client_verifies_the_keystore_server(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let pki = Pki::new();
    let dir = pki_dir(&f, &pki);
    for key in f.standard_keys() {
        let chain = pki.server_chain(&key);
        for v in VERSIONS {
            if v == ProtocolVersion::TLSv1_3 && !tls13_capable(&key) {
                continue;
            }
            let identity = certified_key(chain.clone(), &key).expect("certified key");
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
                "{} {v:?} on {}: s_client: {text}; server: {saw:?}",
                key.name(),
                kind.name()
            );
            let saw = saw.expect("server");
            assert_eq!(saw.line, "ping");
            assert_eq!(saw.version, Some(v));
            assert_eq!(saw.client_chain.first(), Some(pki.client.der()));
            assert!(text.contains("Verification: OK"), "{text}");
            assert!(text.contains("pong ping"), "{text}");
            let want = match key.algorithm() {
                Algorithm::EcdsaP256Sha256 => "Signature type: ECDSA",
                Algorithm::Rsa2048PssSha256 => "Signature type: RSA-PSS",
                _ => "Signature type: RSA\n",
            };
            assert!(text.contains(want), "want {want:?} in {text}");
        }
    }
}

fn rcgen_signs_certificates_and_csrs_in_the_backend(kind: Kind) {
    let Some(f) = Fixture::new(kind) else { return };
    let keys = f.standard_keys();
    let dir = f.path();
    for key in &keys {
        // rcgen re-encodes every key's SPKI byte for byte.
        assert_eq!(
            key.subject_public_key_info(),
            key.spki_der(),
            "{}",
            key.name()
        );
        if key.algorithm() == Algorithm::Rsa2048PssSha256 {
            let e = KeystoreSigningKey::for_rcgen(Arc::clone(&f.ks), key.name()).unwrap_err();
            assert!(e.is(ErrorKind::Unsupported), "{e}");
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "pss");
            let e = params.self_signed(key).unwrap_err();
            assert!(key.map_rcgen_error(e).is(ErrorKind::Unsupported));
            continue;
        }
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
        let out = Command::new("/usr/bin/openssl")
            .args(["verify", "-CAfile"])
            .arg(&ca_file)
            .arg(&ca_file)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("/usr/bin/openssl")
            .args(["req", "-verify", "-noout", "-in"])
            .arg(&csr_file)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

macro_rules! on_backend {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn keypair_verifies_signer_output_independently() {
                super::keypair_verifies_signer_output_independently($kind);
            }

            #[test]
            fn rustls_server_requiring_client_auth_accepts_the_keystore_identity() {
                super::rustls_server_requiring_client_auth_accepts_the_keystore_identity($kind);
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
            fn rcgen_signs_certificates_and_csrs_in_the_backend() {
                super::rcgen_signs_certificates_and_csrs_in_the_backend($kind);
            }
        }
    };
}

on_backend!(soft, Kind::Soft);
on_backend!(pkcs11, Kind::Pkcs11);
on_backend!(tpm, Kind::Tpm);

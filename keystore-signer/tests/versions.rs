//! Following the active version and pinning, on the soft backend (the rule
//! is the adapter's, above any backend): what each mode signs with after a
//! rotation, a suspension and a resumption; what `certified_key` accepts and
//! how a certified key behaves in a real handshake after a rotation; the
//! schemes offered to rustls; errors, with the keystore error kept.

mod common;

use common::*;
use keystore_api::{Algorithm, ErrorKind, KeySpec, SignatureFormat, Usages};
use keystore_signer::rustls::sign::SigningKey;
use keystore_signer::rustls::{ProtocolVersion, SignatureAlgorithm, SignatureScheme};
use keystore_signer::{
    certificate_chain, certified_key, tls_signature_scheme, KeystoreSigningKey, Mode,
};
use signature::{Keypair, Signer, Verifier};
use std::sync::Arc;
use test_support::actors::officer;
use time::Duration;

fn soft() -> Fixture {
    Fixture::new(Kind::Soft).expect("the soft backend is always there")
}

fn rotate(f: &Fixture, name: &str) {
    f.ks.rotate(&officer("rotator"), name, Duration::days(1))
        .expect("rotate");
}

#[test]
fn a_following_adapter_signs_with_each_new_version_and_a_pinned_one_refuses() {
    let f = soft();
    let follow = f.key("id", Algorithm::EcdsaP256Sha256);
    let pinned = KeystoreSigningKey::pinned(Arc::clone(&f.ks), "id").unwrap();
    assert_eq!(follow.mode(), Mode::Follow);
    assert_eq!(pinned.mode(), Mode::Pinned(1));
    assert_eq!(pinned.sign(b"m", SignatureFormat::Der).unwrap().version, 1);

    rotate(&f, "id");
    // Following: version 2 signs; the reference version (and so the
    // verifying key) is still 1 until refreshed.
    let sig = follow.sign(b"m", SignatureFormat::Der).unwrap();
    assert_eq!(sig.version, 2);
    assert_eq!(follow.version(), 1);
    let fixed: p256::ecdsa::Signature = follow.try_sign(b"m").unwrap();
    assert!(follow.verifying_key().verify(b"m", &fixed).is_err());
    let refreshed = follow.refreshed().unwrap();
    assert_eq!((refreshed.version(), refreshed.mode()), (2, Mode::Follow));
    refreshed.verifying_key().verify(b"m", &fixed).unwrap();
    assert_eq!(
        follow.active_public_key().unwrap().spki_der(),
        refreshed.spki_der()
    );

    // Pinned: version 2 is active, so every path refuses.
    let e = pinned.sign(b"m", SignatureFormat::Der).unwrap_err();
    assert!(e.is(ErrorKind::KeyState), "{e}");
    assert_eq!(e.version(), Some(2));
    let e = <KeystoreSigningKey<_> as Signer<p256::ecdsa::DerSignature>>::try_sign(&pinned, b"m")
        .unwrap_err();
    assert_eq!(source_kind(&e), Some(ErrorKind::KeyState));
    let tls = pinned
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let e = tls.sign(b"m").unwrap_err();
    assert_eq!(
        keystore_error(&e).map(|k| k.kind()),
        Some(ErrorKind::KeyState)
    );
    // rcgen refuses too, and gives the keystore error back.
    let e = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&pinned)
        .unwrap_err();
    assert!(pinned.map_rcgen_error(e).is(ErrorKind::KeyState));
    // Re-pinned to the active version, it signs again.
    let repinned = pinned.refreshed().unwrap();
    assert_eq!(repinned.mode(), Mode::Pinned(2));
    assert_eq!(
        repinned.sign(b"m", SignatureFormat::Der).unwrap().version,
        2
    );
    // A following adapter's pinned copy is pinned to its reference version.
    assert_eq!(follow.to_pinned().mode(), Mode::Pinned(1));
}

#[test]
fn rcgen_signs_only_with_the_reference_version_even_when_following() {
    let f = soft();
    let follow = f.key("ca", Algorithm::EcdsaP256Sha256);
    let params = rcgen::CertificateParams::new(vec!["ca.local".to_string()]).unwrap();
    params.self_signed(&follow).expect("version 1 signs");
    rotate(&f, "ca");
    let e = params.self_signed(&follow).unwrap_err();
    let e = follow.map_rcgen_error(e);
    assert!(e.is(ErrorKind::KeyState), "{e}");
    params
        .self_signed(&follow.refreshed().unwrap())
        .expect("version 2 signs");
}

#[test]
fn a_pinned_version_signs_again_once_it_is_resumed() {
    let f = soft();
    f.key("dev", Algorithm::EcdsaP256Sha256);
    let pinned = KeystoreSigningKey::pinned_to(Arc::clone(&f.ks), "dev", 1).unwrap();
    let so = officer("maintainer");
    f.ks.suspend(&so, "dev", 1).unwrap();
    assert!(pinned
        .sign(b"m", SignatureFormat::Der)
        .unwrap_err()
        .is(ErrorKind::KeyState));
    f.ks.resume(&so, "dev", 1).unwrap();
    assert_eq!(pinned.sign(b"m", SignatureFormat::Der).unwrap().version, 1);
    let e = KeystoreSigningKey::pinned_to(Arc::clone(&f.ks), "dev", 7).unwrap_err();
    assert!(e.is(ErrorKind::NotFound), "{e}");
}

#[test]
fn certified_key_pairs_a_chain_with_the_version_its_leaf_names() {
    let f = soft();
    let pki = Pki::new();
    let follow = f.key("gw", Algorithm::EcdsaP256Sha256);
    let other = f.key("other", Algorithm::EcdsaP256Sha256);
    let v1_chain = pki.client_chain(&follow);

    // PEM (leaf then root) and DER give the same chain.
    let pem: String = v1_chain
        .iter()
        .map(|c| certificate_pem(c.as_ref()))
        .collect::<Vec<_>>()
        .join("");
    assert_eq!(certificate_chain(pem.as_bytes()).unwrap(), v1_chain);
    assert_eq!(
        certificate_chain(v1_chain[0].as_ref()).unwrap(),
        v1_chain[..1]
    );
    for junk in [
        &b""[..],
        b"   \n",
        b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ] {
        let e = certificate_chain(junk).unwrap_err();
        assert!(e.is(ErrorKind::InvalidInput), "{e}");
    }

    // A certificate of another key, an empty chain, a leaf that is not a
    // certificate: InvalidInput.
    for bad in [
        pki.client_chain(&other),
        Vec::new(),
        vec![v1_chain[0].as_ref()[..40].to_vec().into()],
    ] {
        let e = certified_key(bad, &follow).unwrap_err();
        assert!(e.is(ErrorKind::InvalidInput), "{e}");
    }

    // The certified key is pinned to version 1 even though the adapter follows.
    let ck = certified_key(v1_chain.clone(), &follow).unwrap();
    ck.keys_match().unwrap();
    let (addr, server) = rustls_server_requiring_client_auth(&pki, ProtocolVersion::TLSv1_3);
    let (line, _) = rustls_client(&pki, ck.clone(), ProtocolVersion::TLSv1_3, addr).unwrap();
    assert_eq!(line, "pong ping");
    server.join().unwrap().unwrap();

    rotate(&f, "gw");
    // After the rotation the old certified key fails the handshake locally
    // with the keystore's KeyState error, instead of signing with version 2.
    let (addr, server) = rustls_server_requiring_client_auth(&pki, ProtocolVersion::TLSv1_3);
    let e = rustls_client(&pki, ck, ProtocolVersion::TLSv1_3, addr).unwrap_err();
    let _ = server.join();
    let k = keystore_error(e.as_ref()).unwrap_or_else(|| panic!("no keystore error in {e}"));
    assert!(k.is(ErrorKind::KeyState), "{k}");
    // Pairing the following adapter with the old chain is refused...
    let e = certified_key(v1_chain, &follow).unwrap_err();
    assert!(e.is(ErrorKind::KeyState), "{e}");
    assert_eq!(e.version(), Some(1));
    // ... and with the certificate for version 2 it works.
    let v2_chain = pki.client_chain(&follow.refreshed().unwrap());
    let ck2 = certified_key(v2_chain.clone(), &follow).unwrap();
    let (addr, server) = rustls_server_requiring_client_auth(&pki, ProtocolVersion::TLSv1_2);
    let (line, _) = rustls_client(&pki, ck2, ProtocolVersion::TLSv1_2, addr).unwrap();
    assert_eq!(line, "pong ping");
    assert_eq!(
        server.join().unwrap().unwrap().client_chain.first(),
        v2_chain.first()
    );
    // A pinned adapter pairs only with its own version's certificate.
    let pinned_v1 = KeystoreSigningKey::pinned_to(Arc::clone(&f.ks), "gw", 1).unwrap();
    let e = certified_key(v2_chain, &pinned_v1).unwrap_err();
    assert!(e.is(ErrorKind::KeyState), "{e}");
}

fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[test]
fn rustls_is_offered_only_the_scheme_the_key_can_make() {
    let f = soft();
    let all = [
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::ECDSA_NISTP384_SHA384,
    ];
    for (alg, scheme, family) in [
        (
            Algorithm::EcdsaP256Sha256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureAlgorithm::ECDSA,
        ),
        (
            Algorithm::Rsa2048PssSha256,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureAlgorithm::RSA,
        ),
        (
            Algorithm::Rsa2048Pkcs1Sha256,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureAlgorithm::RSA,
        ),
    ] {
        let key = f.key(alg.id(), alg);
        assert_eq!(tls_signature_scheme(alg), Some(scheme));
        assert_eq!(SigningKey::algorithm(&key), family);
        let signer = key.choose_scheme(&all).expect("offered");
        assert_eq!(signer.scheme(), scheme);
        let sig = signer.sign(b"transcript").unwrap();
        key.public_key().verify(b"transcript", &sig).unwrap();
        let others: Vec<_> = all.iter().copied().filter(|s| *s != scheme).collect();
        assert!(key.choose_scheme(&others).is_none(), "{alg}");
        // Following: rustls sees the active version's SPKI; pinned: its own.
        assert_eq!(
            SigningKey::public_key(&key).unwrap().as_ref(),
            key.spki_der()
        );
        rotate(&f, alg.id());
        let active = key.active_public_key().unwrap();
        assert_eq!(
            SigningKey::public_key(&key).unwrap().as_ref(),
            active.spki_der()
        );
        assert_eq!(
            SigningKey::public_key(&key.to_pinned()).unwrap().as_ref(),
            key.spki_der()
        );
    }
    assert_eq!(tls_signature_scheme(Algorithm::HmacSha256), None);
}

#[test]
fn keys_that_cannot_sign_are_refused_at_construction() {
    let f = soft();
    let so = officer("creator");
    f.ks.create(&so, "mac", KeySpec::new(Algorithm::HmacSha256))
        .unwrap();
    f.ks.create(
        &so,
        "verify-only",
        KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::VERIFY),
    )
    .unwrap();
    let ks = || Arc::clone(&f.ks);
    let e = KeystoreSigningKey::new(ks(), "mac").unwrap_err();
    assert!(e.is(ErrorKind::Unsupported), "{e}");
    let e = KeystoreSigningKey::for_rcgen(ks(), "mac").unwrap_err();
    assert!(e.is(ErrorKind::Unsupported), "{e}");
    let e = KeystoreSigningKey::pinned(ks(), "verify-only").unwrap_err();
    assert!(e.is(ErrorKind::Policy), "{e}");
    let e = KeystoreSigningKey::new(ks(), "missing").unwrap_err();
    assert!(e.is(ErrorKind::NotFound), "{e}");
    let e = KeystoreSigningKey::new(ks(), "bad name!").unwrap_err();
    assert!(e.is(ErrorKind::InvalidInput), "{e}");
    // A key with no active version.
    f.key("revoked", Algorithm::EcdsaP256Sha256);
    f.ks.revoke(&so, "revoked", 1, "key-compromise").unwrap();
    let e = KeystoreSigningKey::new(ks(), "revoked").unwrap_err();
    assert!(e.is(ErrorKind::KeyState), "{e}");
}

#[test]
fn debug_names_the_key_and_never_its_material() {
    let f = soft();
    let key = f.key("dbg", Algorithm::EcdsaP256Sha256);
    let text = format!("{key:?}");
    assert!(text.contains("dbg") && text.contains("sha256:"), "{text}");
    assert!(text.contains("Follow"), "{text}");
}

#[test]
fn a_borrowed_keystore_serves_rustcrypto_and_rcgen() {
    let f = soft();
    f.key("borrowed", Algorithm::Rsa2048Pkcs1Sha256);
    let key = KeystoreSigningKey::pinned(&*f.ks, "borrowed").unwrap();
    let sig: rsa::pkcs1v15::Signature = key.try_sign(b"m").unwrap();
    key.verifying_key().verify(b"m", &sig).unwrap();
    let signer = KeystoreSigningKey::for_rcgen(&*f.ks, "borrowed").unwrap();
    rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&signer)
        .unwrap();
}

fn source_kind(e: &signature::Error) -> Option<ErrorKind> {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<keystore_api::Error>())
        .map(|k| k.kind())
}

//! The device side of TPM key attestation, on simulators manufactured with
//! EK certificates from test manufacturer CAs (`swtpm::manufacture`): the
//! EK certificate against the EK, the attestation key's template,
//! `TPM2_Certify` checked independently (tss-esapi's unmarshalling, p256),
//! `TPM2_ActivateCredential` with credentials made by the TPM, the keys a
//! verifier must refuse, slot and session hygiene, and manufacturing as
//! another user.
//!
//! A missing swtpm or swtpm-tools fails the test with an install hint,
//! unless `KEYSTORE_TEST_SKIP` names `tpm` (then it prints SKIPPED).

use backend_tpm::probe::Attempt;
use backend_tpm::swtpm::{self, EkCerts, Swtpm};
use backend_tpm::{
    admin, AttestationKey, EkAlgorithm, TpmBackend, TpmConfig, EK_CERT_NV_ECC_P256,
    EK_CERT_NV_RSA2048, MAX_QUALIFYING_LEN,
};
use keystore_api::{Algorithm, SecretBytes};
use keystore_backend::{BackendKey, ErrorKind, KeyManagement, NewKey, Signing};
use p256::ecdsa::signature::Verifier;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use tss_esapi::interface_types::structure_tags::AttestationType;
use tss_esapi::structures::{AttestInfo, Public, Signature};
use tss_esapi::traits::UnMarshall;
use x509_parser::public_key::PublicKey as CertKey;

/// `fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth |
/// restricted | sign`.
const AK_ATTRIBUTES: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 16) | (1 << 18);
const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const USER_WITH_AUTH: u32 = 1 << 6;
const ADMIN_WITH_POLICY: u32 = 1 << 7;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;
/// PolicySecret(TPM_RH_ENDORSEMENT), the EK's authPolicy (SHA-256).
const EK_POLICY_A: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";

/// The `KEYSTORE_TEST_SKIP` rule (test-support's): `None` after printing
/// SKIPPED if the list names `tpm`, else a panic with `why`.
#[track_caller]
fn skip_or_fail<T>(why: &str) -> Option<T> {
    let named = std::env::var("KEYSTORE_TEST_SKIP")
        .map(|v| v.split(',').any(|b| b.trim() == "tpm"))
        .unwrap_or(false);
    if named {
        eprintln!("SKIPPED (KEYSTORE_TEST_SKIP names tpm): {why}");
        None
    } else {
        panic!("{why}\n(set KEYSTORE_TEST_SKIP=tpm to skip knowingly; CI never does)")
    }
}

/// A manufactured simulator, its manufacturer's CA and a store directory.
struct Env {
    dir: TempDir,
    swtpm: Swtpm,
    owner: SecretBytes,
}

impl Env {
    /// A simulator manufactured with `certs` by the CA in `ca` (a fresh CA
    /// in the test's directory when `None`).
    fn new(certs: EkCerts, ca: Option<&Path>) -> Option<Env> {
        if !swtpm::available() {
            return skip_or_fail(swtpm::INSTALL_HINT);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca.map_or_else(|| dir.path().join("ca"), Path::to_path_buf);
        let state = dir.path().join("swtpm");
        match swtpm::manufacture_with(&state, &ca, certs) {
            Ok(()) => {}
            Err(e) if e == swtpm::SETUP_INSTALL_HINT => return skip_or_fail(&e),
            Err(e) => panic!("manufacture: {e}"),
        }
        let swtpm = Swtpm::start(&state).unwrap_or_else(|e| panic!("{e}"));
        // A non-empty owner auth: attestation does not need it.
        let owner = SecretBytes::from_slice(b"owner secret");
        admin::change_owner_auth(&swtpm.tcti(), &SecretBytes::default(), &owner)
            .expect("set owner auth");
        Some(Env { dir, swtpm, owner })
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn config(&self) -> TpmConfig {
        TpmConfig::new(self.swtpm.tcti())
            .with_owner_auth(SecretBytes::from_slice(self.owner.expose()))
            .expect("config")
    }

    fn open(&self) -> TpmBackend {
        TpmBackend::open(self.config(), &self.dir.path().join("store"))
            .unwrap_or_else(|e| panic!("open: {e:?}"))
    }
}

#[track_caller]
fn kind<T: std::fmt::Debug>(r: keystore_api::Result<T>) -> (ErrorKind, String) {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => (e.kind(), e.to_string()),
    }
}

fn public(area: &[u8]) -> Public {
    Public::unmarshall(area).expect("a TPMT_PUBLIC")
}

/// `TPMT_PUBLIC.objectAttributes`.
fn attributes(area: &[u8]) -> u32 {
    u32::from_be_bytes([area[4], area[5], area[6], area[7]])
}

fn tpm_name(area: &[u8]) -> Vec<u8> {
    let mut n = vec![0x00, 0x0B];
    n.extend_from_slice(&Sha256::digest(area));
    n
}

fn pad32(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32 - v.len()];
    out.extend_from_slice(v);
    out
}

/// The uncompressed SEC1 point of an ECC public area.
fn ecc_point(area: &[u8]) -> Vec<u8> {
    let Public::Ecc { unique, .. } = public(area) else {
        panic!("not an ECC public area")
    };
    let mut p = vec![0x04];
    p.extend(pad32(unique.x().value()));
    p.extend(pad32(unique.y().value()));
    p
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

/// Checks that the certificate's subject public key is the EK's.
fn assert_cert_is_for(cert: &[u8], ek_area: &[u8]) {
    let (rest, c) = x509_parser::parse_x509_certificate(cert).expect("a DER certificate");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    assert!(
        c.issuer().to_string().contains("swtpm-localca"),
        "{}",
        c.issuer()
    );
    match (c.public_key().parsed().expect("SPKI"), public(ek_area)) {
        (CertKey::EC(point), Public::Ecc { .. }) => {
            assert_eq!(point.data(), ecc_point(ek_area).as_slice());
        }
        (CertKey::RSA(rsa), Public::Rsa { unique, .. }) => {
            assert_eq!(strip_zeros(rsa.modulus), strip_zeros(unique.value()));
            assert_eq!(rsa.try_exponent().expect("exponent"), 65537);
        }
        (k, p) => panic!("certificate key {k:?} does not match EK {p:?}"),
    }
}

/// Checks the EK's public area: the TCG low-range template.
fn assert_ek_template(area: &[u8], alg: EkAlgorithm) {
    let p = public(area);
    let a = attributes(area);
    assert_eq!(
        a & (FIXED_TPM
            | FIXED_PARENT
            | SENSITIVE_DATA_ORIGIN
            | ADMIN_WITH_POLICY
            | RESTRICTED
            | DECRYPT),
        FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT
    );
    assert_eq!(a & (USER_WITH_AUTH | SIGN), 0, "low-range EK: policy only");
    assert_eq!(hex::encode(p.auth_policy().value()), EK_POLICY_A);
    match (alg, &p) {
        (EkAlgorithm::EccP256, Public::Ecc { .. }) | (EkAlgorithm::Rsa2048, Public::Rsa { .. }) => {
        }
        _ => panic!("{alg:?} EK expected, got {p:?}"),
    }
}

/// The AK's ECDSA verifying key.
fn ak_verifying_key(ak: &AttestationKey) -> p256::ecdsa::VerifyingKey {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&ecc_point(ak.public_area())).expect("P-256 point")
}

/// Checks a `TPM2_Certify` result independently: TPMS_ATTEST structure,
/// nonce, certified Name, and the AK's ECDSA-SHA256 signature.
fn assert_certified(ak: &AttestationKey, attest: &[u8], sig: &[u8], nonce: &[u8], key_area: &[u8]) {
    let a = tss_esapi::structures::Attest::unmarshall(attest).expect("TPMS_ATTEST");
    assert_eq!(a.attestation_type(), AttestationType::Certify);
    assert_eq!(a.extra_data().value(), nonce);
    let AttestInfo::Certify { info } = a.attested() else {
        panic!("not a certify attestation")
    };
    assert_eq!(info.name().value(), tpm_name(key_area).as_slice());
    assert_eq!(
        &attest[..4],
        &[0xFF, 0x54, 0x43, 0x47],
        "starts with TPM_GENERATED_VALUE"
    );
    let Signature::EcDsa(s) = Signature::unmarshall(sig).expect("TPMT_SIGNATURE") else {
        panic!("not an ECDSA signature")
    };
    assert_eq!(
        s.hashing_algorithm(),
        tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256
    );
    let r: [u8; 32] = pad32(s.signature_r().value()).try_into().unwrap();
    let s: [u8; 32] = pad32(s.signature_s().value()).try_into().unwrap();
    let sig = p256::ecdsa::Signature::from_scalars(r, s).expect("r, s");
    let vk = ak_verifying_key(ak);
    vk.verify(attest, &sig)
        .expect("the AK signed SHA-256(attest)");
    let mut other = attest.to_vec();
    *other.last_mut().unwrap() ^= 1;
    assert!(vk.verify(&other, &sig).is_err());
}

/// No transient object beyond the primary and the LRU's keys, no session
/// beyond the backend's own parameter-encryption session.
fn assert_nothing_leaked(be: &TpmBackend) {
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert_eq!(objects.len(), 1 + be.cached_keys(), "{objects:x?}");
    assert!(objects.len() <= 3);
    assert!(sessions.is_empty(), "{sessions:x?}");
}

/// `openssl verify` of a DER certificate against a root and an
/// intermediate; `None` when openssl is not installed.
fn openssl_verify(
    dir: &Path,
    cert: &[u8],
    root_pem: &str,
    issuer_pem: &str,
) -> Option<(bool, String)> {
    use std::process::Command;
    let der = dir.join("ek.der");
    let pem = dir.join("ek.pem");
    let root = dir.join("root.pem");
    let issuer = dir.join("issuer.pem");
    std::fs::write(&der, cert).unwrap();
    std::fs::write(&root, root_pem).unwrap();
    std::fs::write(&issuer, issuer_pem).unwrap();
    let conv = Command::new("openssl")
        .args(["x509", "-inform", "der", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem)
        .output()
        .ok()?;
    assert!(conv.status.success(), "{conv:?}");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&issuer)
        .arg(&pem)
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn ecc_p256_ek_certificate_matches_the_ek_and_chains_to_its_manufacturer_only() {
    let Some(env) = Env::new(EkCerts::WithEccP256, None) else {
        return;
    };
    let Some(other) = Env::new(EkCerts::SwtpmDefault, None) else {
        return;
    };
    let be = env.open();
    let cert = be.ek_certificate().expect("EK certificate");
    let ek = be.ek_public().expect("EK public");
    assert_ek_template(&ek, EkAlgorithm::EccP256);
    assert_cert_is_for(&cert, &ek);
    assert_eq!(be.ek_name_for_tests().unwrap(), tpm_name(&ek));
    // The same answers again (the EK is re-created, not stored).
    assert_eq!(be.ek_public().unwrap(), ek);
    assert_eq!(be.ek_certificate().unwrap(), cert);
    assert_nothing_leaked(&be);
    // Both CA files exist and manufacturer_ca_pem holds both.
    let ca = swtpm::manufacturer_ca_pem(&env.ca());
    assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 2, "{ca}");
    let (root, issuer) = (
        swtpm::manufacturer_root_pem(&env.ca()),
        swtpm::manufacturer_issuer_pem(&env.ca()),
    );
    let scratch = tempfile::tempdir().unwrap();
    match openssl_verify(scratch.path(), &cert, &root, &issuer) {
        None => eprintln!("openssl not installed: chain not checked"),
        Some((ok, text)) => {
            assert!(ok, "openssl verify: {text}");
            let (ok, text) = openssl_verify(
                scratch.path(),
                &cert,
                &swtpm::manufacturer_root_pem(&other.ca()),
                &swtpm::manufacturer_issuer_pem(&other.ca()),
            )
            .unwrap();
            assert!(!ok, "another manufacturer's CA must not verify it: {text}");
        }
    }
}

#[test]
fn without_an_ecc_p256_certificate_the_rsa_ek_is_used_end_to_end() {
    let Some(env) = Env::new(EkCerts::SwtpmDefault, None) else {
        return;
    };
    let be = env.open();
    let cert = be.ek_certificate().expect("EK certificate");
    let ek = be.ek_public().expect("EK public");
    assert_ek_template(&ek, EkAlgorithm::Rsa2048);
    assert_cert_is_for(&cert, &ek);
    let scratch = tempfile::tempdir().unwrap();
    if let Some((ok, text)) = openssl_verify(
        scratch.path(),
        &cert,
        &swtpm::manufacturer_root_pem(&env.ca()),
        &swtpm::manufacturer_issuer_pem(&env.ca()),
    ) {
        assert!(ok, "openssl verify: {text}");
    }
    let ak = be.create_attestation_key().expect("AK");
    assert_eq!(ak.ek_algorithm(), EkAlgorithm::Rsa2048);
    assert_eq!(attributes(ak.public_area()), AK_ATTRIBUTES);
    let secret = [0x5Au8; 32];
    let (blob, enc) = be
        .make_credential_for_tests(&ek, &ak.name(), &secret)
        .expect("make credential");
    assert_eq!(enc.len(), 256, "RSA-2048 OAEP ciphertext");
    assert_eq!(
        be.activate_credential(&ak, &blob, &enc).expect("activate"),
        secret
    );
    let other = be.create_attestation_key().unwrap();
    let (blob, enc) = be
        .make_credential_for_tests(&ek, &other.name(), &secret)
        .unwrap();
    let (k, msg) = kind(be.activate_credential(&ak, &blob, &enc));
    assert_eq!(k, ErrorKind::Integrity, "{msg}");
    let g = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "device-id"))
        .unwrap();
    let (attest, sig) = be.certify(&ak, &g.handle, b"nonce").expect("certify");
    assert_certified(
        &ak,
        &attest,
        &sig,
        b"nonce",
        &be.key_public_area(&g.handle).unwrap(),
    );
    assert_nothing_leaked(&be);
}

#[test]
fn the_attestation_key_certifies_a_generated_key() {
    let Some(env) = Env::new(EkCerts::WithEccP256, None) else {
        return;
    };
    let be = env.open();
    let ak = be.create_attestation_key().expect("AK");
    assert_eq!(ak.ek_algorithm(), EkAlgorithm::EccP256);
    let area = ak.public_area();
    assert_eq!(attributes(area), AK_ATTRIBUTES, "{:08x}", attributes(area));
    assert_eq!(
        &area[..4],
        &[0x00, 0x23, 0x00, 0x0B],
        "ECC, nameAlg SHA-256"
    );
    assert_eq!(ak.name(), tpm_name(area));
    assert!(public(area).auth_policy().value().is_empty());
    let Public::Ecc { parameters, .. } = public(area) else {
        unreachable!()
    };
    assert_eq!(
        parameters.ecc_curve(),
        tss_esapi::interface_types::ecc::EccCurve::NistP256
    );
    assert!(format!("{:?}", parameters.ecc_scheme()).contains("EcDsa"));
    let dbg = format!("{ak:?}");
    assert!(
        dbg.contains(&hex::encode(ak.name())) && dbg.len() < 200,
        "{dbg}"
    );

    let g = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "device-id"))
        .unwrap();
    let key_area = be.key_public_area(&g.handle).expect("key public area");
    let ka = attributes(&key_area);
    assert_eq!(
        ka & (FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN),
        FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN
    );
    assert_eq!(ka & RESTRICTED, 0);
    // The public area is the generated key's: its point is the SPKI's.
    let spki = g.public_key.clone().unwrap();
    assert!(spki.spki_der().ends_with(&ecc_point(&key_area)));
    // The key is loaded (LRU) before certify: it must still fit.
    let sig = be
        .sign(
            &BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .unwrap();
    spki.verify(b"m", &sig).unwrap();
    let nonce: Vec<u8> = (0..32u8).collect();
    let (attest, sig) = be.certify(&ak, &g.handle, &nonce).expect("certify");
    assert_certified(&ak, &attest, &sig, &nonce, &key_area);
    assert_nothing_leaked(&be);

    // Nonce limits: empty and 64 bytes work, 65 do not.
    let (attest, sig) = be.certify(&ak, &g.handle, &[]).unwrap();
    assert_certified(&ak, &attest, &sig, &[], &key_area);
    let long = [7u8; MAX_QUALIFYING_LEN];
    let (attest, sig) = be.certify(&ak, &g.handle, &long).unwrap();
    assert_certified(&ak, &attest, &sig, &long, &key_area);
    let (k, _) = kind(be.certify(&ak, &g.handle, &[7u8; MAX_QUALIFYING_LEN + 1]));
    assert_eq!(k, ErrorKind::InvalidInput);

    // A stored AK works after a round trip through bytes, with a fresh
    // backend; damaged bytes are refused.
    let bytes = ak.to_bytes();
    drop(be);
    let be = env.open();
    let again = AttestationKey::from_bytes(&bytes).expect("from bytes");
    assert_eq!(again.name(), ak.name());
    let (attest, sig) = be.certify(&again, &g.handle, b"n2").unwrap();
    assert_certified(&ak, &attest, &sig, b"n2", &key_area);
    assert_eq!(
        kind(AttestationKey::from_bytes(&bytes[..bytes.len() - 1])).0,
        ErrorKind::Integrity
    );
    // A private blob that is not the AK's: the TPM refuses to load it.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x40;
    let bad = AttestationKey::from_bytes(&bad).unwrap();
    let (k, msg) = kind(be.certify(&bad, &g.handle, b"n"));
    assert_eq!(k, ErrorKind::Integrity, "{msg}");
    // A destroyed key cannot be certified.
    be.destroy(&g.handle).unwrap();
    assert_eq!(
        kind(be.certify(&ak, &g.handle, b"n")).0,
        ErrorKind::NotFound
    );
    assert_eq!(kind(be.key_public_area(&g.handle)).0, ErrorKind::NotFound);
    assert_nothing_leaked(&be);
}

#[test]
fn activate_credential_releases_the_secret_only_to_this_ek_and_ak() {
    let Some(env) = Env::new(EkCerts::WithEccP256, None) else {
        return;
    };
    let be = env.open();
    let ek = be.ek_public().unwrap();
    let ak = be.create_attestation_key().unwrap();
    let secret: Vec<u8> = (100..132u8).collect();
    let (blob, enc) = be
        .make_credential_for_tests(&ek, &ak.name(), &secret)
        .expect("make credential");
    // integrityHMAC (2 + 32) ‖ encIdentity (2 + 32); an ECC point.
    assert_eq!(blob.len(), 68);
    assert_eq!(enc.len(), 68);
    assert_eq!(be.activate_credential(&ak, &blob, &enc).unwrap(), secret);
    // Shorter secrets come back as they went in.
    let (b2, e2) = be
        .make_credential_for_tests(&ek, &ak.name(), b"hi")
        .unwrap();
    assert_eq!(be.activate_credential(&ak, &b2, &e2).unwrap(), b"hi");
    assert_nothing_leaked(&be);

    // Made for another AK's Name.
    let other = be.create_attestation_key().unwrap();
    assert_ne!(other.name(), ak.name());
    let (b, e) = be
        .make_credential_for_tests(&ek, &other.name(), &secret)
        .unwrap();
    let (k, msg) = kind(be.activate_credential(&ak, &b, &e));
    assert_eq!(k, ErrorKind::Integrity, "{msg}");
    assert!(msg.contains("TPM_RC_INTEGRITY"), "{msg}");
    // ... which the other AK does activate.
    assert_eq!(be.activate_credential(&other, &b, &e).unwrap(), secret);

    // Made for another EK: same template, another public point.
    let foreign = p256::SecretKey::from_slice(&[0x42; 32]).unwrap();
    let point = {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        foreign
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    };
    let mut foreign_ek = ek.clone();
    let n = foreign_ek.len();
    // TPMT_PUBLIC ends with the unique point: u16 32 ‖ x ‖ u16 32 ‖ y.
    foreign_ek[n - 66..n - 34].copy_from_slice(&point[1..33]);
    foreign_ek[n - 32..].copy_from_slice(&point[33..]);
    let (b, e) = be
        .make_credential_for_tests(&foreign_ek, &ak.name(), &secret)
        .unwrap();
    let (k, msg) = kind(be.activate_credential(&ak, &b, &e));
    assert_eq!(k, ErrorKind::Integrity, "{msg}");

    // Tampered blob; malformed sizes.
    let mut t = blob.clone();
    t[10] ^= 1;
    assert_eq!(
        kind(be.activate_credential(&ak, &t, &enc)).0,
        ErrorKind::Integrity
    );
    assert_eq!(
        kind(be.activate_credential(&ak, &[], &enc)).0,
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(be.activate_credential(&ak, &[0; 133], &enc)).0,
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(be.activate_credential(&ak, &blob, &[0; 513])).0,
        ErrorKind::InvalidInput
    );
    assert_nothing_leaked(&be);
}

#[test]
fn keys_a_verifier_must_refuse_are_certified_with_their_true_attributes() {
    let Some(env) = Env::new(EkCerts::WithEccP256, None) else {
        return;
    };
    let be = env.open();
    let ak = be.create_attestation_key().unwrap();
    // Imported HMAC key: fixedTPM, but not sensitiveDataOrigin.
    let h = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "imported"),
            &SecretBytes::from_slice(&[9u8; 32]),
        )
        .unwrap();
    let area = be.key_public_area(&h).unwrap();
    let a = attributes(&area);
    assert_eq!(a & (FIXED_TPM | FIXED_PARENT), FIXED_TPM | FIXED_PARENT);
    assert_eq!(a & SENSITIVE_DATA_ORIGIN, 0, "imported: not TPM-generated");
    let (attest, sig) = be.certify(&ak, &h, b"imported").expect("certify HMAC key");
    assert_certified(&ak, &attest, &sig, b"imported", &area);
    // A generated HMAC key is TPM-generated.
    let g = be
        .generate(&NewKey::new(Algorithm::HmacSha256, "generated"))
        .unwrap();
    let garea = be.key_public_area(&g.handle).unwrap();
    assert_ne!(attributes(&garea) & SENSITIVE_DATA_ORIGIN, 0);
    let (attest, sig) = be.certify(&ak, &g.handle, b"g").unwrap();
    assert_certified(&ak, &attest, &sig, b"g", &garea);

    // Duplicable key: neither fixedTPM nor fixedParent, and the TPM does
    // export it.
    let d = be
        .create_duplicable_key_for_tests(Algorithm::EcdsaP256Sha256)
        .expect("duplicable key");
    let darea = be.key_public_area(&d).unwrap();
    let a = attributes(&darea);
    assert_eq!(a & (FIXED_TPM | FIXED_PARENT), 0, "{a:08x}");
    assert_ne!(a & SENSITIVE_DATA_ORIGIN, 0);
    assert!(!public(&darea).auth_policy().value().is_empty());
    assert_eq!(be.try_duplicate(&d).unwrap(), Attempt::Complied);
    // It is a working keystore key, and certify accepts it.
    let sig = be
        .sign(
            &BackendKey::new(d.clone(), Algorithm::EcdsaP256Sha256),
            b"m",
        )
        .unwrap();
    be.public_key(&BackendKey::new(d.clone(), Algorithm::EcdsaP256Sha256))
        .unwrap()
        .verify(b"m", &sig)
        .unwrap();
    let (attest, sig) = be.certify(&ak, &d, b"dup").expect("certify duplicable");
    assert_certified(&ak, &attest, &sig, b"dup", &darea);
    // An ordinary key is refused by the TPM's duplicate.
    assert!(matches!(
        be.try_duplicate(&g.handle).unwrap(),
        Attempt::Refused(_)
    ));
    assert_nothing_leaked(&be);
}

#[test]
fn the_keystore_attestation_trait_forwards_to_the_backend() {
    use keystore_backend::KeyAttestation;
    let Some(env) = Env::new(EkCerts::WithEccP256, None) else {
        return;
    };
    let be = env.open();
    let dynamic: &dyn KeyAttestation = &be;
    assert_eq!(
        dynamic.endorsement_certificate().unwrap(),
        be.ek_certificate().unwrap()
    );
    let ek = dynamic.endorsement_public().unwrap();
    assert_eq!(ek, be.ek_public().unwrap());
    let blob = dynamic.create_attestation_key().unwrap();
    let ak = AttestationKey::from_bytes(blob.context()).unwrap();
    assert_eq!(blob.public_area(), ak.public_area());
    let (cred, enc) = be
        .make_credential_for_tests(&ek, &ak.name(), b"secret")
        .unwrap();
    assert_eq!(
        dynamic.activate_credential(&blob, &cred, &enc).unwrap(),
        b"secret"
    );
    let g = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap();
    let key = BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256);
    let c = dynamic.certify(&blob, &key, b"nonce").unwrap();
    assert_eq!(c.public_area, be.key_public_area(&g.handle).unwrap());
    assert_certified(&ak, &c.attestation, &c.signature, b"nonce", &c.public_area);
    // The key must be of the algorithm the caller names.
    let wrong = BackendKey::new(g.handle.clone(), Algorithm::EcdsaP384Sha384);
    assert_eq!(
        kind(dynamic.certify(&blob, &wrong, b"n")).0,
        ErrorKind::Integrity
    );
    // A blob whose public area is not its context's.
    let other = dynamic.create_attestation_key().unwrap();
    let mixed = keystore_backend::AttestationKeyBlob::new(
        other.public_area().to_vec(),
        blob.context().to_vec(),
    );
    assert_eq!(
        kind(dynamic.certify(&mixed, &key, b"n")).0,
        ErrorKind::Integrity
    );
    assert_nothing_leaked(&be);
}

#[test]
fn an_unmanufactured_tpm_has_no_ek_certificate_and_endorsement_auth_is_checked() {
    if !swtpm::available() {
        return skip_or_fail(swtpm::INSTALL_HINT).unwrap_or(());
    }
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
    let be = TpmBackend::open(TpmConfig::new(tpm.tcti()), &dir.path().join("store")).unwrap();
    let (k, msg) = kind(be.ek_certificate());
    assert_eq!(k, ErrorKind::NotFound);
    assert!(
        msg.contains(&format!("{EK_CERT_NV_ECC_P256:08x}"))
            && msg.contains(&format!("{EK_CERT_NV_RSA2048:08x}")),
        "{msg}"
    );
    // The RSA EK is selected; an AK can still be made under it.
    assert_ek_template(&be.ek_public().unwrap(), EkAlgorithm::Rsa2048);
    let ak = be.create_attestation_key().unwrap();
    assert_eq!(ak.ek_algorithm(), EkAlgorithm::Rsa2048);
    assert_nothing_leaked(&be);
    drop(be);
    // A wrong endorsement auth (the TPM's is empty) is an auth error.
    let cfg = TpmConfig::new(tpm.tcti())
        .with_endorsement_auth(SecretBytes::from_slice(b"wrong"))
        .unwrap();
    let be = TpmBackend::open(cfg, &dir.path().join("store")).unwrap();
    assert_eq!(kind(be.ek_public()).0, ErrorKind::Auth);
    assert_eq!(kind(be.create_attestation_key()).0, ErrorKind::Auth);
    assert_eq!(
        kind(be.activate_credential(&ak, &[1; 68], &[1; 256])).0,
        ErrorKind::Auth
    );
    assert_nothing_leaked(&be);
}

/// What the non-root child does: manufacture, start, read the EK
/// certificate, certify a key. Reports on stdout.
fn manufacture_and_attest(dir: &Path) {
    let state = dir.join("swtpm");
    swtpm::manufacture(&state, &dir.join("ca")).unwrap_or_else(|e| panic!("manufacture: {e}"));
    let tpm = Swtpm::start(&state).unwrap_or_else(|e| panic!("{e}"));
    let be = TpmBackend::open(TpmConfig::new(tpm.tcti()), &dir.join("store")).unwrap();
    assert_cert_is_for(&be.ek_certificate().unwrap(), &be.ek_public().unwrap());
    let ak = be.create_attestation_key().unwrap();
    let g = be
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "k"))
        .unwrap();
    let (attest, sig) = be.certify(&ak, &g.handle, b"n").unwrap();
    assert_certified(
        &ak,
        &attest,
        &sig,
        b"n",
        &be.key_public_area(&g.handle).unwrap(),
    );
}

#[test]
#[ignore = "run by manufacturing_works_for_root_and_other_users as another user"]
fn non_root_child() {
    let dir = PathBuf::from(std::env::var("KEYSTORE_ATTEST_DIR").expect("KEYSTORE_ATTEST_DIR"));
    manufacture_and_attest(&dir);
    println!("CHILD OK uid={}", unsafe_free_uid());
}

/// The effective uid, from /proc (no unsafe code in this file).
fn unsafe_free_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

#[test]
fn manufacturing_works_for_root_and_other_users() {
    if !swtpm::available() {
        return skip_or_fail(swtpm::INSTALL_HINT).unwrap_or(());
    }
    let dir = tempfile::tempdir().unwrap();
    manufacture_and_attest(dir.path());
    if unsafe_free_uid() != 0 {
        eprintln!(
            "not root: manufacturing checked as uid {}",
            unsafe_free_uid()
        );
        return;
    }
    // As root, again as `nobody` (65534) in a directory it may write.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let child_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(child_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
            "non_root_child",
        ])
        .uid(65534)
        .gid(65534)
        .env("KEYSTORE_ATTEST_DIR", child_dir.path())
        .env("HOME", child_dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn the child as nobody");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("CHILD OK uid=65534"),
        "{text}"
    );
}

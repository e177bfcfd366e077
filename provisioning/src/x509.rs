//! Reading certificates and CSRs (x509-parser), building CSRs (rcgen),
//! verifying CSR signatures on the host with the keystore's verifier (the
//! RustCrypto `p256`/`p384`/`ed25519-dalek`/`rsa` crates, never the code
//! that signed), and the key algorithms the device PKI works with
//! ([`PKI_ALGORITHMS`]).

use crate::signer::KeystoreSigner;
use crate::util::{sha256_tag, shorten};
use ::time::OffsetDateTime;
use keystore_api::{Algorithm, Backend, Error, PublicKey, Result};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
    OID_X509_COMMON_NAME, OID_X509_SERIALNUMBER,
};
use x509_parser::prelude::*;

/// Largest certificate, CSR or CRL accepted, in bytes.
pub const MAX_DER_LEN: usize = 1024 * 1024;

/// The key algorithms of the device PKI: what root, intermediate, OCSP
/// signer, EST server and device keys may be created with, and what CSRs
/// ([`verify_csr`]) and issued certificates may carry. Each is one rcgen
/// signs X.509 structures with and rustls-webpki verifies: ECDSA P-256
/// (`ecdsa-with-SHA256`), ECDSA P-384 (`ecdsa-with-SHA384`), Ed25519
/// (`id-Ed25519`) and RSA-2048/3072 PKCS#1 v1.5 (`sha256WithRSAEncryption`).
/// RSA-PSS (parameters rcgen does not write), `ecdh-p256` (no signatures)
/// and `ml-dsa-65` (not taken by keystore-signer's adapters) are not.
pub const PKI_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::EcdsaP256Sha256,
    Algorithm::EcdsaP384Sha384,
    Algorithm::Ed25519,
    Algorithm::Rsa2048Pkcs1Sha256,
    Algorithm::Rsa3072Pkcs1Sha256,
];

/// The key algorithm the PKI creates keys with unless told otherwise
/// (ECDSA P-256).
pub const DEFAULT_PKI_ALGORITHM: Algorithm = Algorithm::EcdsaP256Sha256;

/// Checks that `alg` is one of [`PKI_ALGORITHMS`], for a key of `what`.
///
/// # Errors
/// `Unsupported` for any other algorithm, naming the ones accepted.
pub(crate) fn check_pki_algorithm(alg: Algorithm, what: &str) -> Result<()> {
    if PKI_ALGORITHMS.contains(&alg) {
        return Ok(());
    }
    let names: Vec<&str> = PKI_ALGORITHMS.iter().map(|a| a.id()).collect();
    Err(Error::unsupported(format!(
        "a {what} key cannot be {alg}: the device PKI takes {}",
        names.join(", ")
    )))
}

/// Facts read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// `sha256:` digest of the DER (what provisioning records name).
    pub digest: String,
    /// Serial number, lowercase hex of its big-endian bytes.
    pub serial: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject X.520 serialNumber attribute, if any.
    pub subject_serial_number: Option<String>,
    /// Subject, as text (for display).
    pub subject: String,
    /// Issuer, as text (for display).
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// `sha256:` fingerprint of the SPKI (the keystore's fingerprint format,
    /// and the pin format).
    pub spki_fingerprint: String,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo> {
        check_size(der, "certificate")?;
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::invalid_input(format!("not a valid X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::invalid_input("a certificate has trailing bytes"));
        }
        let tbs = &cert.tbs_certificate;
        let spki_der = tbs.subject_pki.raw.to_vec();
        let is_ca = tbs
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Ok(CertInfo {
            der: der.to_vec(),
            digest: sha256_tag(der),
            serial: hex::encode(tbs.raw_serial()),
            common_name: first_attr(&tbs.subject, &OID_X509_COMMON_NAME),
            subject_serial_number: first_attr(&tbs.subject, &OID_X509_SERIALNUMBER),
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            not_before: tbs.validity.not_before.to_datetime(),
            not_after: tbs.validity.not_after.to_datetime(),
            spki_fingerprint: sha256_tag(&spki_der),
            spki_der,
            is_ca,
        })
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        crate::util::pem_encode("CERTIFICATE", &self.der)
    }
}

fn first_attr(name: &X509Name<'_>, oid: &x509_parser::oid_registry::Oid<'_>) -> Option<String> {
    name.iter_by_oid(oid)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

fn check_size(der: &[u8], what: &str) -> Result<()> {
    if der.is_empty() || der.len() > MAX_DER_LEN {
        return Err(Error::invalid_input(format!(
            "a {what} is 1 to {MAX_DER_LEN} bytes, got {}",
            der.len()
        )));
    }
    Ok(())
}

/// A CSR whose self-signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject X.520 serialNumber attribute.
    pub subject_serial_number: Option<String>,
    /// The requested public key (checked to be a well-formed key of `public_key.algorithm()`).
    pub public_key: PublicKey,
}

impl VerifiedCsr {
    /// `sha256:` fingerprint of the requested public key.
    pub fn fingerprint(&self) -> String {
        self.public_key.fingerprint()
    }
}

/// Builds a PKCS#10 CSR for `subject`, signed by the keystore key behind
/// `signer`, then verifies it as a CA would.
pub(crate) fn build_csr<B: Backend>(
    signer: &KeystoreSigner<'_, B>,
    subject: rcgen::DistinguishedName,
) -> Result<VerifiedCsr> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = subject;
    let csr = params
        .serialize_request(signer)
        .map_err(|e| signer.map_rcgen_error(e))?;
    let verified = verify_csr(csr.der())?;
    if verified.public_key.spki_der() != signer.spki_der() {
        return Err(Error::integrity(
            "the CSR does not carry the signing key's public key",
        ));
    }
    Ok(verified)
}

/// The subject of a device: CN and serialNumber both carry the device id.
pub(crate) fn device_subject(device_id: &str) -> Result<rcgen::DistinguishedName> {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, device_id);
    let printable = rcgen::string::PrintableString::try_from(device_id).map_err(|_| {
        Error::invalid_input(format!(
            "device id {:?} is not a PrintableString",
            shorten(device_id)
        ))
    })?;
    dn.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString(printable),
    );
    Ok(dn)
}

/// A subject with a common name only (CA certificates).
pub(crate) fn cn_subject(cn: &str, organization: Option<&str>) -> Result<rcgen::DistinguishedName> {
    if cn.is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "a common name is 1 to 64 characters without control characters",
        ));
    }
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(rcgen::DnType::OrganizationName, o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    Ok(dn)
}

/// Parses a PKCS#10 CSR and verifies its self-signature with the public key
/// it carries. Accepts the keys of [`PKI_ALGORITHMS`], each signed with its
/// own algorithm: ECDSA P-256 with `ecdsa-with-SHA256`, ECDSA P-384 with
/// `ecdsa-with-SHA384`, Ed25519 with `id-Ed25519`, RSA-2048/3072 with
/// `sha256WithRSAEncryption`; anything else (another curve or key type, or a
/// key with another signature algorithm) is `Unsupported`, and a signature
/// that does not verify is `Integrity`.
pub fn verify_csr(der: &[u8]) -> Result<VerifiedCsr> {
    check_size(der, "CSR")?;
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| Error::invalid_input(format!("not a valid PKCS#10 CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::invalid_input("a CSR has trailing bytes"));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key_oid = &spki.algorithm.algorithm;
    let sig_oid = &csr.signature_algorithm.algorithm;
    let candidates: &[Algorithm] = if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 && *sig_oid == OID_SIG_ECDSA_WITH_SHA256 => {
                &[Algorithm::EcdsaP256Sha256]
            }
            Some(c) if c == OID_NIST_EC_P384 && *sig_oid == OID_SIG_ECDSA_WITH_SHA384 => {
                &[Algorithm::EcdsaP384Sha384]
            }
            _ => {
                return Err(Error::unsupported(
                    "EC CSRs must be P-256 keys with ecdsa-with-SHA256 or P-384 keys with \
                     ecdsa-with-SHA384 signatures",
                ))
            }
        }
    } else if *key_oid == OID_SIG_ED25519 {
        // id-Ed25519 names both the key and the signature (RFC 8410).
        if *sig_oid != OID_SIG_ED25519 {
            return Err(Error::unsupported(
                "Ed25519 CSRs must be signed with id-Ed25519",
            ));
        }
        &[Algorithm::Ed25519]
    } else if *key_oid == OID_PKCS1_RSAENCRYPTION {
        if *sig_oid != OID_PKCS1_SHA256WITHRSA {
            return Err(Error::unsupported(
                "RSA CSRs must be signed with sha256WithRSAEncryption",
            ));
        }
        &[Algorithm::Rsa2048Pkcs1Sha256, Algorithm::Rsa3072Pkcs1Sha256]
    } else {
        return Err(Error::unsupported(format!(
            "CSR public key algorithm {key_oid} is not supported"
        )));
    };
    let public_key = candidates
        .iter()
        .find_map(|alg| PublicKey::from_spki_der(*alg, spki.raw.to_vec()).ok())
        .ok_or_else(|| {
            Error::invalid_input("the CSR's public key is malformed or of an unsupported size")
        })?;
    public_key
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| Error::integrity("the CSR's self-signature does not verify"))?;
    Ok(VerifiedCsr {
        der: der.to_vec(),
        common_name: first_attr(&info.subject, &OID_X509_COMMON_NAME),
        subject_serial_number: first_attr(&info.subject, &OID_X509_SERIALNUMBER),
        public_key,
    })
}

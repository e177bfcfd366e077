//! Building and checking CA certificates: CA parameters, subject keys from
//! CSRs, issuers over keystore keys, and signature checks.

use crate::signer::{rcgen_algorithm, spki_bit_string, KeystoreSigner};
use crate::util::{random_serial, to_second};
use crate::x509::{CertInfo, PKI_ALGORITHMS};
use keystore_api::{Backend, Error, PublicKey, Result};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// A subject public key taken from a verified CSR, presented to rcgen.
pub(super) struct SubjectKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl SubjectKey {
    pub(super) fn from(pk: &PublicKey) -> Result<Self> {
        let key = SubjectKey {
            raw: spki_bit_string(pk.spki_der())?,
            alg: rcgen_algorithm(pk.algorithm())?,
        };
        use rcgen::PublicKeyData;
        if key.subject_public_key_info() != pk.spki_der() {
            return Err(Error::unsupported(
                "the requested public key does not re-encode to the same SubjectPublicKeyInfo",
            ));
        }
        Ok(key)
    }
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

pub(super) fn ca_params(
    subject: rcgen::DistinguishedName,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = subject;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = to_second(not_before);
    p.not_after = to_second(not_after);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    Ok(p)
}

/// The public key a certificate's SPKI names (a key of one of
/// [`PKI_ALGORITHMS`]: the SPKI's algorithm and curve tell them apart), for
/// verifying what the certificate signed.
fn issuer_public_key(issuer: &CertInfo) -> Result<PublicKey> {
    PKI_ALGORITHMS
        .into_iter()
        .find_map(|alg| PublicKey::from_spki_der(alg, issuer.spki_der.clone()).ok())
        .ok_or_else(|| Error::unsupported("the issuer's key type is not supported"))
}

/// Checks that `cert_der` names `issuer` as its issuer and carries a
/// signature that verifies under the issuer's key (host-side check).
pub(super) fn verify_signed_by(cert_der: &[u8], issuer: &CertInfo) -> Result<()> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| Error::invalid_input(format!("not a valid X.509 certificate: {e}")))?;
    if cert.tbs_certificate.issuer.as_raw() != issuer_subject_raw(&issuer.der)?.as_slice() {
        return Err(Error::integrity(format!(
            "the certificate is issued by '{}', not by '{}'",
            cert.tbs_certificate.issuer, issuer.subject
        )));
    }
    issuer_public_key(issuer)?
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| {
            Error::integrity(format!(
                "the certificate's signature does not verify under '{}'",
                issuer.subject
            ))
        })
}

fn issuer_subject_raw(der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::invalid_input(format!("not a valid X.509 certificate: {e}")))?;
    Ok(cert.tbs_certificate.subject.as_raw().to_vec())
}

/// An issuer over a keystore key and its certificate; checks that the key's
/// active version is the one the certificate names.
pub(crate) fn issuer_for<'s, 'k, B: Backend>(
    signer: &'s KeystoreSigner<'k, B>,
    ca: &CertInfo,
) -> Result<rcgen::Issuer<'static, &'s KeystoreSigner<'k, B>>> {
    if signer.spki_der() != ca.spki_der.as_slice() {
        return Err(Error::key_state(format!(
            "the active version of '{}' is not the key of the CA certificate '{}' (rotated since the ceremony?)",
            signer.name(),
            ca.subject
        )));
    }
    rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca.der.as_slice()), signer)
        .map_err(|e| Error::integrity(format!("cannot read the CA certificate: {e}")))
}

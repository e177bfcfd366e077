//! The endorsement key's certificate and the keys the TPM presents, against
//! X.509: the EK certificate's path to a manufacturer CA (rustls-webpki,
//! extended key usage `tcg-kp-EKCertificate`), and whether a TPM public
//! area carries the key of a certificate or a CSR.

use super::tpm::{Public, PublicKey, ECC_NIST_P256};
use keystore_api::{Error, Result};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey as X509Key;
use x509_parser::x509::SubjectPublicKeyInfo;

/// `tcg-kp-EKCertificate` (2.23.133.8.1), DER contents.
const EK_CERTIFICATE_EKU: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];

/// Checks that the EK certificate chains to one of `roots` (DER; each is
/// trusted as an anchor) for the EK-certificate usage, valid now; returns
/// its issuer's name.
pub(super) fn verify_ek_certificate(cert: &[u8], roots: &[Vec<u8>]) -> Result<String> {
    if roots.is_empty() {
        return Err(Error::policy(
            "no manufacturer CA is configured for TPM attestation; give the EK CA certificates",
        ));
    }
    let (_, parsed) = X509Certificate::from_der(cert)
        .map_err(|_| Error::invalid_input("the EK certificate is not a DER X.509 certificate"))?;
    let issuer = parsed.issuer().to_string();
    let der = CertificateDer::from(cert);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| Error::invalid_input(format!("the EK certificate does not parse: {e}")))?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let mut anchors = Vec::with_capacity(roots.len());
    for r in &root_ders {
        anchors.push(webpki::anchor_from_trusted_cert(r).map_err(|e| {
            Error::invalid_input(format!("a manufacturer CA certificate is unusable: {e}"))
        })?);
    }
    let now = UnixTime::now();
    ee.verify_for_usage(
        crate::verify::ALGS,
        &anchors,
        &root_ders,
        now,
        webpki::KeyUsage::required(EK_CERTIFICATE_EKU),
        None,
        None,
    )
    .map_err(|e| {
        Error::policy(format!(
            "TPM key attestation refused: the EK certificate (issuer '{issuer}') does not chain \
             to a trusted manufacturer CA ({e})"
        ))
    })?;
    Ok(issuer)
}

/// Checks that the EK public area carries the certificate's key.
pub(super) fn check_ek_matches(cert: &[u8], ek: &Public) -> Result<()> {
    let (_, parsed) = X509Certificate::from_der(cert)
        .map_err(|_| Error::invalid_input("the EK certificate is not a DER X.509 certificate"))?;
    if !key_matches(parsed.public_key(), &ek.key)? {
        return Err(Error::integrity(
            "TPM key attestation refused at the EK: the TPM's EK is not the key of its EK certificate",
        ));
    }
    Ok(())
}

/// Whether a DER SubjectPublicKeyInfo (a CSR's) is the key of a public area.
pub(super) fn spki_matches(spki: &[u8], key: &PublicKey) -> Result<bool> {
    let (_, parsed) = SubjectPublicKeyInfo::from_der(spki)
        .map_err(|_| Error::invalid_input("the CSR's public key does not parse"))?;
    key_matches(&parsed, key)
}

fn key_matches(spki: &SubjectPublicKeyInfo<'_>, key: &PublicKey) -> Result<bool> {
    let parsed = spki
        .parsed()
        .map_err(|_| Error::invalid_input("a public key does not parse"))?;
    Ok(match (parsed, key) {
        (X509Key::RSA(rsa), PublicKey::Rsa { modulus, exponent }) => {
            strip(rsa.modulus) == strip(modulus)
                && strip(rsa.exponent) == strip(&exponent.to_be_bytes())
        }
        (X509Key::EC(point), PublicKey::Ecc { curve, x, y }) => {
            let len = match *curve {
                ECC_NIST_P256 => 32,
                0x0004 => 48,
                _ => return Ok(false),
            };
            point.data() == sec1_point(x, y, len)?.as_slice()
        }
        _ => false,
    })
}

fn strip(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| **b == 0).count();
    &v[n..]
}

/// The uncompressed SEC1 encoding of (x, y), each left-padded to `len`.
pub(super) fn sec1_point(x: &[u8], y: &[u8], len: usize) -> Result<Vec<u8>> {
    let (x, y) = (strip(x), strip(y));
    if x.len() > len || y.len() > len {
        return Err(Error::invalid_input(
            "an ECC coordinate is too long for its curve",
        ));
    }
    let mut out = vec![0x04];
    for c in [x, y] {
        out.extend(std::iter::repeat_n(0u8, len - c.len()));
        out.extend_from_slice(c);
    }
    Ok(out)
}

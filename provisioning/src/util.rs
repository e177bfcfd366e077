//! Small helpers: PEM, digests, random serials and ids, device ids, times.
//!
//! Crate-internal: the crate root re-exports the PEM helpers
//! ([`pem_encode`], [`pem_decode_all`], [`der_from_pem_or_der`]) and
//! [`sha256_tag`], the digest format of provisioning records.

use base64::Engine;
use keystore_api::{Component, Error, Result};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, CertificateSigningRequestDer,
    SubjectPublicKeyInfoDer,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Longest device id, in characters.
pub(crate) const MAX_DEVICE_ID_LEN: usize = 64;

/// Checks a device id: 1 to 64 characters of `A-Z a-z 0-9 . -`, starting
/// with a letter or digit. The id goes into the certificate subject as CN and
/// as X.520 `serialNumber` (a PrintableString) and into key names, so the
/// alphabet is the intersection of what those allow.
pub(crate) fn check_device_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        && id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "a device id is 1 to {MAX_DEVICE_ID_LEN} characters of A-Z, a-z, 0-9, '.' and '-', \
             starting with a letter or digit; got {:?}",
            shorten(id)
        )))
    }
}

/// Checks an operator (station or line) label: 1 to 64 printable ASCII
/// characters without spaces.
pub(crate) fn check_operator(op: &str) -> Result<()> {
    if op.is_empty() || op.len() > 64 || !op.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid_input(format!(
            "an operator label is 1 to 64 printable ASCII characters without spaces; got {:?}",
            shorten(op)
        )));
    }
    Ok(())
}

/// At most 80 characters of untrusted input, for error messages.
pub(crate) fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let head: String = s.chars().take(77).collect();
        format!("{head}...")
    }
}

/// `sha256:` followed by the hex SHA-256 of `bytes`.
pub fn sha256_tag(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `n` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| {
        Error::backend(Component::Provisioning, "the OS random generator failed", e)
    })?;
    Ok(b)
}

/// A random positive 16-byte certificate or CRL serial (RFC 5280: at most 20
/// octets, positive, unpredictable).
pub(crate) fn random_serial() -> Result<Vec<u8>> {
    let mut b = random_bytes::<16>()?;
    b[0] &= 0x7f;
    b[0] |= 0x40; // no leading zero octet: the DER encoding keeps all 16 bytes
    Ok(b.to_vec())
}

/// A random 128-bit id, hex.
pub(crate) fn random_id() -> Result<String> {
    Ok(hex::encode(random_bytes::<16>()?))
}

/// Encodes DER as PEM with `label` (64-character lines). The one PEM
/// encoder of the crate: `rustls-pki-types` decodes but does not encode.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every PEM block labelled `label` in `text`, decoded by
/// `rustls-pki-types`. Blocks with other labels and text around them are
/// ignored; a malformed block of any label is an error. `label` is one of
/// `CERTIFICATE`, `X509 CRL`, `CERTIFICATE REQUEST` and `PUBLIC KEY`.
pub fn pem_decode_all(text: &str, label: &str) -> Result<Vec<Vec<u8>>> {
    match label {
        "CERTIFICATE" => pem_blocks::<CertificateDer<'static>>(text, label),
        "X509 CRL" => pem_blocks::<CertificateRevocationListDer<'static>>(text, label),
        "CERTIFICATE REQUEST" => pem_blocks::<CertificateSigningRequestDer<'static>>(text, label),
        "PUBLIC KEY" => pem_blocks::<SubjectPublicKeyInfoDer<'static>>(text, label),
        _ => Err(Error::invalid_input(format!(
            "PEM label '{}' is not supported",
            shorten(label)
        ))),
    }
}

/// The blocks of one type `T` in `text`, as DER.
fn pem_blocks<T: PemObject + AsRef<[u8]>>(text: &str, label: &str) -> Result<Vec<Vec<u8>>> {
    T::pem_slice_iter(text.as_bytes())
        .map(|block| {
            block
                .map(|der| der.as_ref().to_vec())
                .map_err(|e| pem_error(label, e))
        })
        .collect()
}

/// A PEM syntax error, in words an operator can act on.
fn pem_error(label: &str, e: pem::Error) -> Error {
    Error::invalid_input(match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block '{}' has no END line (reading '{label}')",
            shorten(&String::from_utf8_lossy(&end_marker))
        ),
        pem::Error::IllegalSectionStart { .. } => {
            format!("a PEM BEGIN line is malformed (reading '{label}')")
        }
        pem::Error::Base64Decode(_) => format!("a PEM block is not base64 (reading '{label}')"),
        other => format!("malformed PEM (reading '{label}'): {other}"),
    })
}

/// DER from `bytes` that may be PEM (one block labelled `label`) or DER.
pub fn der_from_pem_or_der(bytes: &[u8], label: &str) -> Result<Vec<u8>> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.contains("-----BEGIN ") {
            let mut blocks = pem_decode_all(text, label)?;
            return match blocks.len() {
                1 => Ok(blocks.remove(0)),
                0 => Err(Error::invalid_input(format!(
                    "no PEM block '{label}' found"
                ))),
                n => Err(Error::invalid_input(format!(
                    "expected one PEM block '{label}', found {n}"
                ))),
            };
        }
    }
    if bytes.first() == Some(&0x30) {
        Ok(bytes.to_vec())
    } else {
        Err(Error::invalid_input(format!(
            "expected a DER or PEM '{label}'"
        )))
    }
}

/// RFC 3339 UTC, to the second.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    keystore_api::rfc3339(t)
}

/// Parses an RFC 3339 time written by [`rfc3339`]; a malformed stored time
/// is an integrity failure of the database that holds it.
pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime> {
    keystore_api::parse_rfc3339(s)
        .ok_or_else(|| Error::integrity(format!("stored time '{}' is malformed", shorten(s))))
}

/// Certificate times have a resolution of one second.
pub(crate) fn to_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_api::ErrorKind;

    #[test]
    fn device_ids() {
        for ok in ["DEV12345", "a", "unit-3.line-2", &"x".repeat(64)] {
            check_device_id(ok).expect(ok);
        }
        for bad in ["", "-x", ".x", "a b", "a_b", "ü", &"x".repeat(65), "a/b"] {
            assert!(matches!(check_device_id(bad), Err(ref e) if e.is(ErrorKind::InvalidInput)));
        }
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![0x30, 0x03, 1, 2, 3];
        let pem = pem_encode("CERTIFICATE", &der);
        assert_eq!(
            pem_decode_all(&pem, "CERTIFICATE").unwrap(),
            vec![der.clone()]
        );
        assert_eq!(
            der_from_pem_or_der(pem.as_bytes(), "CERTIFICATE").unwrap(),
            der
        );
        assert_eq!(der_from_pem_or_der(&der, "CERTIFICATE").unwrap(), der);
        assert!(der_from_pem_or_der(b"garbage", "CERTIFICATE").is_err());
        let err = pem_decode_all("-----BEGIN CERTIFICATE-----\nMAMBAgM=", "CERTIFICATE");
        assert!(
            matches!(err, Err(ref e) if e.is(ErrorKind::InvalidInput) && e.detail().contains("no END line"))
        );
        let err = pem_decode_all(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "CERTIFICATE",
        );
        assert!(
            matches!(err, Err(ref e) if e.is(ErrorKind::InvalidInput) && e.detail().contains("not base64"))
        );
        assert!(pem_decode_all(&pem, "X").is_err());
        // Blocks of other labels and text around blocks are skipped.
        let mixed = format!("note\n{}{pem}", pem_encode("X509 CRL", &[0x30, 0]));
        assert_eq!(
            pem_decode_all(&mixed, "CERTIFICATE").unwrap(),
            vec![der.clone()]
        );
        assert_eq!(
            pem_decode_all(&mixed, "X509 CRL").unwrap(),
            vec![vec![0x30, 0]]
        );
    }

    #[test]
    fn serials_are_positive_16_bytes() {
        for _ in 0..32 {
            let s = random_serial().unwrap();
            assert_eq!(s.len(), 16);
            assert!(s[0] & 0x80 == 0 && s[0] != 0);
        }
    }
}

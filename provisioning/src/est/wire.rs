//! EST's message formats (RFC 7030 section 4, RFC 8951): base64 bodies,
//! PKCS#10 requests, and the CMS "certs-only" simple PKI response (a
//! SignedData with certificates and no signers), built and parsed with
//! RustCrypto's `cms`, `x509-cert` and `der`.

use base64::Engine;
use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode};
use keystore_api::{Error, Result};

/// The content type of a PKCS#10 request body.
pub(crate) const PKCS10: &str = "application/pkcs10";
/// The content type of a certs-only response body.
pub(crate) const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
/// The content type of `/cacerts` answers (no smime-type parameter there).
pub(crate) const PKCS7_MIME: &str = "application/pkcs7-mime";

/// Most certificates a certs-only response may carry.
const MAX_CERTS: usize = 16;

/// Base64 as EST sends it: the DER in standard base64, lines of 64.
pub(crate) fn to_base64(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 1);
    for chunk in text.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// Decodes an EST body: base64 with any line breaks or spaces (RFC 8951),
/// or PEM with any `-----` header and footer lines. `InvalidInput` for
/// anything else, or an empty result.
pub(crate) fn from_base64(body: &[u8], what: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::invalid_input(format!("the {what} body is not base64 text")))?;
    let joined: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_ascii_whitespace()))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(joined.as_bytes())
        .map_err(|e| Error::invalid_input(format!("the {what} body is not base64: {e}")))?;
    if der.is_empty() {
        return Err(Error::invalid_input(format!("the {what} body is empty")));
    }
    Ok(der)
}

/// Whether a `Content-Type` header value names `expected` (ignoring case,
/// spaces and any parameters).
pub(crate) fn content_type_is(header: Option<&str>, expected: &str) -> bool {
    let want = expected.split(';').next().unwrap_or(expected).trim();
    header
        .and_then(|h| h.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

/// A CMS certs-only message (DER) carrying `certs` (each a DER
/// certificate). The set is unordered, as CMS sets are.
///
/// # Errors
/// `InvalidInput` when a certificate does not parse or two are equal;
/// `Integrity` if the encoder fails.
pub(crate) fn certs_only(certs: &[&[u8]]) -> Result<Vec<u8>> {
    let choices = certs
        .iter()
        .map(|der| {
            x509_cert::Certificate::from_der(der)
                .map(CertificateChoices::Certificate)
                .map_err(|e| Error::invalid_input(format!("not a certificate: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let set = SetOfVec::try_from(choices)
        .map_err(|e| Error::invalid_input(format!("cannot make a certificate set: {e}")))?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(set)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    let encode_err = |e: der::Error| Error::integrity(format!("cannot encode a CMS message: {e}"));
    let content = Any::encode_from(&signed).map_err(encode_err)?;
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content,
    }
    .to_der()
    .map_err(encode_err)
}

/// The certificates (DER) of a CMS certs-only message, in the message's
/// order. `InvalidInput` for anything that is not a SignedData carrying 1
/// to 16 X.509 certificates.
pub(crate) fn parse_certs_only(der: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = |what: String| Error::invalid_input(format!("not a certs-only CMS message: {what}"));
    let info = ContentInfo::from_der(der).map_err(|e| bad(e.to_string()))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(bad(format!("content type {}", info.content_type)));
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| bad(e.to_string()))?;
    let set = signed
        .certificates
        .ok_or_else(|| bad("it carries no certificates".into()))?;
    if set.0.len() > MAX_CERTS {
        return Err(bad(format!("more than {MAX_CERTS} certificates")));
    }
    let mut out = Vec::with_capacity(set.0.len());
    for choice in set.0.iter() {
        match choice {
            CertificateChoices::Certificate(c) => {
                out.push(c.to_der().map_err(|e| bad(e.to_string()))?)
            }
            CertificateChoices::Other(_) => return Err(bad("a non-X.509 certificate".into())),
        }
    }
    if out.is_empty() {
        return Err(bad("it carries no certificates".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certs_only_round_trips_as_a_set() {
        let (a, b) = (cert("a"), cert("b"));
        let msg = certs_only(&[&a, &b]).unwrap();
        let mut back = parse_certs_only(&msg).unwrap();
        back.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(back, want);
        let b64 = to_base64(&msg);
        assert!(b64.lines().all(|l| l.len() <= 64));
        assert_eq!(from_base64(b64.as_bytes(), "test").unwrap(), msg);
    }

    #[test]
    fn garbage_is_invalid_input_never_a_panic() {
        for bad in [&b""[..], b"\x30\x03\x02\x01", b"\xff\xff", b"hello"] {
            let e = parse_certs_only(bad).unwrap_err();
            assert_eq!(e.kind(), keystore_api::ErrorKind::InvalidInput);
        }
        assert!(certs_only(&[b"nope"]).is_err());
        for bad in [&b""[..], b"!!!!", b"\xff\xfe", b"  \r\n"] {
            assert!(from_base64(bad, "t").is_err());
        }
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAEC\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(from_base64(pem.as_bytes(), "t").unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn content_types_compare_without_parameters() {
        assert!(content_type_is(Some("application/pkcs10"), PKCS10));
        assert!(content_type_is(
            Some("Application/PKCS10; charset=x"),
            PKCS10
        ));
        assert!(!content_type_is(Some("text/plain"), PKCS10));
        assert!(!content_type_is(None, PKCS10));
        assert!(content_type_is(Some(CERTS_ONLY), PKCS7_MIME));
    }
}

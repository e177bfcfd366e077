//! TLS for the EST server: its identity (a key in the production keystore,
//! [`EST_SERVER_KEY`], certified by the production intermediate for
//! serverAuth and presented through keystore-signer's rustls adapter), and
//! the client-certificate verifier that leaves every decision to the EST
//! service.
//!
//! The verifier accepts any client certificate at the TLS layer but checks
//! the handshake signature under the certificate's key, so the certificate
//! that reaches the service was proven to be the client's. The service then
//! decides (path to the root, registry, revocation, expiry), so that a
//! refused client gets an HTTP status and a PKI event, not a TLS alert.

use crate::ca::{issuer_for, Factory, BACKDATE, INTERMEDIATE_KEY};
use crate::eventlog::{ensure_event_key, EventFields};
use crate::signer::KeystoreSigner;
use crate::util::{random_serial, rfc3339, shorten, to_second};
use crate::x509::{check_pki_algorithm, cn_subject, CertInfo};
use keystore_api::{
    Actor, Algorithm, Backend, Duty, Error, ErrorKind, KeySpec, Keystore, Result, Usages,
};
use keystore_signer::rustls;
use keystore_signer::KeystoreSigningKey;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The EST server's TLS key in the production keystore.
pub const EST_SERVER_KEY: &str = "est.tls-server";

/// Default validity of the EST server's TLS certificate (issued at start).
pub const DEFAULT_EST_SERVER_CERT_VALIDITY: Duration = Duration::days(30);

/// The rustls crypto provider of the EST server and client.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Issues the EST server's TLS certificate for `names` (DNS names or IP
/// addresses; at least one) under the production intermediate, generating
/// [`EST_SERVER_KEY`] in the production backend the first time (a key of
/// `algorithm`, one of [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS)), and returns
/// the identity rustls presents (the certificate and the intermediate, the
/// key pinned to the certified version). The certificate is valid from
/// `now` less [`BACKDATE`] for `validity` (never beyond the intermediate),
/// and is recorded as an `est-server-cert` event.
///
/// # Errors
/// `Policy` unless `actor` may issue certificates; `InvalidInput` for no or
/// a malformed name, or a validity not in (0, 366 days]; `Unsupported` for
/// an algorithm outside the PKI's when the key is created; `NotFound` before
/// the ceremony; the keystore's and the database's errors.
pub(crate) fn server_identity<B: Backend + 'static>(
    ks: &Arc<Keystore<B>>,
    factory: &Factory<'_, B>,
    actor: &Actor,
    names: &[String],
    validity: Duration,
    algorithm: Algorithm,
    now: OffsetDateTime,
) -> Result<Arc<CertifiedKey>> {
    ks.authorize(
        actor,
        Duty::IssueCertificates,
        "issuing the EST server's TLS certificate",
    )?;
    if validity <= Duration::ZERO || validity > Duration::days(366) {
        return Err(Error::invalid_input(
            "the EST server certificate's validity is more than 0 and at most 366 days",
        ));
    }
    let sans = subject_alt_names(names)?;
    let inter = factory.intermediate()?;
    ensure_server_key(ks, actor, algorithm)?;
    ensure_event_key(ks, actor)?;
    let key = KeystoreSigner::for_rcgen(ks, EST_SERVER_KEY)?;
    let inter_signer = KeystoreSigner::for_rcgen(ks, INTERMEDIATE_KEY)?;
    let issuer = issuer_for(&inter_signer, &inter)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = cn_subject("EST server", None)?;
    params.subject_alt_names = sans;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = to_second(now - BACKDATE);
    params.not_after = to_second(std::cmp::min(now + validity, inter.not_after));
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| inter_signer.map_rcgen_error(e))?;
    let cert = CertInfo::parse(cert.der())?;
    record(factory, actor, &cert, names, now)?;
    let signing = KeystoreSigningKey::pinned_to(Arc::clone(ks), EST_SERVER_KEY, key.version())?;
    let chain = vec![
        CertificateDer::from(cert.der.clone()),
        CertificateDer::from(inter.der.clone()),
    ];
    Ok(Arc::new(keystore_signer::certified_key(chain, &signing)?))
}

/// rcgen's SANs for `names`: IP addresses as such, anything else a DNS name.
fn subject_alt_names(names: &[String]) -> Result<Vec<rcgen::SanType>> {
    if names.is_empty() || names.len() > 16 {
        return Err(Error::invalid_input(
            "the EST server certificate names 1 to 16 hosts",
        ));
    }
    names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => rcgen::string::Ia5String::try_from(n.as_str())
                .map(rcgen::SanType::DnsName)
                .map_err(|_| Error::invalid_input(format!("{:?} is not a host name", shorten(n)))),
        })
        .collect()
}

/// Creates [`EST_SERVER_KEY`] (a key of `algorithm`, generated in the
/// backend) if missing.
fn ensure_server_key<B: Backend>(
    ks: &Keystore<B>,
    actor: &Actor,
    algorithm: Algorithm,
) -> Result<()> {
    match ks.info(EST_SERVER_KEY) {
        Ok(_) => Ok(()),
        Err(ref e) if e.is(ErrorKind::NotFound) => {
            check_pki_algorithm(algorithm, "EST server")?;
            let spec = KeySpec::new(algorithm).with_usages(Usages::SIGN | Usages::VERIFY);
            match ks.create(actor, EST_SERVER_KEY, spec) {
                Err(e) if !e.is(ErrorKind::AlreadyExists) => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Records the server certificate as an `est-server-cert` event.
fn record<B: Backend>(
    factory: &Factory<'_, B>,
    actor: &Actor,
    cert: &CertInfo,
    names: &[String],
    now: OffsetDateTime,
) -> Result<()> {
    factory.log_event(
        None,
        actor,
        now,
        EventFields {
            event: "est-server-cert",
            serial: Some(&cert.serial),
            fingerprint: Some(&cert.spki_fingerprint),
            detail: format!(
                "EST server TLS certificate for {} until {}",
                names.join(","),
                rfc3339(cert.not_after)
            ),
            ..EventFields::default()
        },
    )?;
    Ok(())
}

/// Accepts any client certificate whose handshake signature verifies under
/// its key; the EST service authorises (see the module docs). Client
/// authentication is offered, never required (`cacerts` and the bootstrap
/// `simpleenroll` need none).
#[derive(Debug)]
pub(crate) struct PresentedClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PresentedClientCert {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(PresentedClientCert {
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for PresentedClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred: the EST service validates the certificate
        // against the registry and the root before it acts on it.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's rustls configuration: TLS 1.2 and 1.3, `identity` as the
/// certificate, client certificates requested and handed to the service.
pub(crate) fn server_config(identity: Arc<CertifiedKey>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::integrity(format!("the TLS provider is unusable: {e}")))?
        .with_client_cert_verifier(PresentedClientCert::new())
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

//! Issuing a device certificate: the checks, the signature, the registry
//! rows and the webpki self-check.
//!
//! [`Factory::issue`] runs the steps below in this order; each is a function
//! of its own:
//!
//! 1. the role check ([`Keystore::authorize`](keystore_api::Keystore::authorize) with
//!    [`Duty::IssueCertificates`]), then [`check_request`]: device id,
//!    operator, validity, the CSR's self-signature and its subject;
//! 2. [`Factory::issuing_ca`]: the root and intermediate certificates and a
//!    signer over the intermediate key, then the rcgen issuer
//!    ([`issuer_for`]) and the event-log key ([`ensure_event_key`]);
//! 3. [`check_registry`]: a friendly early refusal of a registered device id
//!    or public key (the registry's constraints decide, not this read);
//!    [`sign_device_cert`] (validity from [`device_validity`], serial and
//!    extensions from [`device_cert_params`], plus the AIA OCSP URL when the
//!    factory has one, the signature made by the keystore), [`self_check`]
//!    (webpki), the event ([`issue_event`]) and [`provisioning_record`];
//! 4. [`Registration`]: the registry writes the unit (first provisioning,
//!    with its record), its key, the supersession of its current
//!    certificates (renewal), the certificate and the event in one
//!    transaction. A device id, key or serial that another station took in
//!    the meantime is `AlreadyExists` from the database's constraints, and
//!    nothing is written.
//!
//! An error at any step returns it with nothing registered; a certificate
//! signed for a refused registration is never returned (the event-log key
//! made in step 2 stays).

use super::cert::{issuer_for, SubjectKey};
use super::factory::{DeviceRequest, Factory, Issued};
use super::ocsp_signer::aia_extension;
use super::{check_validity, BACKDATE, INTERMEDIATE_KEY};
use crate::attestation::{VerifiedAttestation, ATTESTED_TPM};
use crate::eventlog::{ensure_event_key, EventFields};
use crate::record::{ProvisioningRecord, RecordKeys};
use crate::registry::Registration;
use crate::signer::KeystoreSigner;
use crate::util::{check_device_id, check_operator, random_serial, rfc3339, shorten, to_second};
use crate::x509::{device_subject, verify_csr, CertInfo, VerifiedCsr};
use keystore_api::{Actor, Backend, Duty, Error, Result};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// Which issuance: a unit's first certificate, or a renewal of a registered
/// unit's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Issuance {
    /// The first certificate: registers the unit (refused if it is registered).
    Provision,
    /// A renewed certificate for a registered unit (refused if it is not);
    /// its earlier certificates stay valid until the issuance time + `grace`.
    Renew {
        /// How long superseded certificates stay valid.
        grace: Duration,
    },
}

impl Issuance {
    /// The operation's name in a refusal.
    fn what(self) -> &'static str {
        match self {
            Issuance::Provision => "provisioning a device",
            Issuance::Renew { .. } => "renewing a device certificate",
        }
    }

    /// The registry event it records.
    fn event(self) -> &'static str {
        match self {
            Issuance::Provision => "provision",
            Issuance::Renew { .. } => "renew",
        }
    }
}

/// A device request that passed [`check_request`].
struct CheckedRequest<'q> {
    /// The request itself.
    req: &'q DeviceRequest<'q>,
    /// Its CSR, whose self-signature verified and whose subject names the device.
    csr: VerifiedCsr,
    /// `sha256:` fingerprint of the requested public key.
    fingerprint: String,
}

/// The issuing side of the factory: the certificates above a device and the
/// signer over the intermediate key.
struct IssuingCa<'k, B: Backend> {
    /// The root certificate (the device's trust anchor).
    root: CertInfo,
    /// The current intermediate certificate (the issuer).
    inter: CertInfo,
    /// The active version of [`INTERMEDIATE_KEY`] in the production keystore.
    signer: KeystoreSigner<'k, B>,
    /// The OCSP URL device certificates carry (authorityInfoAccess), if any.
    ocsp_url: Option<String>,
}

/// The rcgen issuer over an [`IssuingCa`]'s signer.
type Issuer<'s, 'k, B> = rcgen::Issuer<'static, &'s KeystoreSigner<'k, B>>;

impl<'a, B: Backend> Factory<'a, B> {
    /// Issues a device certificate for `req` (see the module docs for the
    /// steps and their order). Needs the operator or security-officer role.
    /// [`Issuance::Provision`] registers a new unit; [`Issuance::Renew`]
    /// supersedes the unit's current certificates. Either way the device
    /// key is registered to the unit, the certificate is recorded with its
    /// event, and everything is written in one transaction or not at all.
    pub(super) fn issue(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        issuance: Issuance,
        attestation: Option<&VerifiedAttestation>,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.ks
            .authorize(actor, Duty::IssueCertificates, issuance.what())?;
        let checked = check_request(req)?;
        self.check_attestation(actor, &checked, issuance, attestation, now)?;
        let ca = self.issuing_ca()?;
        let issuer = issuer_for(&ca.signer, &ca.inter)?;
        ensure_event_key(self.ks, actor)?;
        let req = checked.req;
        check_registry(self, &checked, issuance)?;
        let cert = sign_device_cert(&checked, &ca, &issuer, now)?;
        // Never trust the code that made it: the chain must validate with webpki.
        self_check(&cert, &ca.inter, &ca.root, now)?;
        let mut event = issue_event(&checked, &cert, issuance).to_event(actor, now)?;
        let mut record = provisioning_record(actor, &checked, &cert, &ca, &event.id, now);
        if let Some(a) = attestation {
            record.attestation = Some(format!("{ATTESTED_TPM} {}", a.evidence_digest));
            event.detail = format!(
                "{}; {ATTESTED_TPM} evidence {}",
                event.detail, a.evidence_digest
            );
        }
        let first = match issuance {
            Issuance::Provision => Some((record.to_yaml()?, event.id.clone())),
            Issuance::Renew { .. } => None,
        };
        let grace_end = match issuance {
            Issuance::Provision => None,
            Issuance::Renew { grace } => Some(rfc3339(now + grace)),
        };
        let registration = Registration {
            device_id: req.device_id,
            operator: req.operator,
            fingerprint: &checked.fingerprint,
            key_version: req.key_version,
            serial: &cert.serial,
            issuer_serial: &ca.inter.serial,
            der: &cert.der,
            digest: &cert.digest,
            not_before: rfc3339(cert.not_before),
            not_after: rfc3339(cert.not_after),
            now: rfc3339(now),
            first,
            grace_end,
            attestation: attestation.map(|a| a.evidence_digest.as_str()),
        };
        let signer = self.event_signer()?;
        self.registry.register(&registration, &mut event, &signer)?;
        Ok(Issued {
            certificate: cert,
            intermediate: ca.inter,
            root: ca.root,
            record,
            event_id: event.id,
        })
    }

    /// Checks a first provisioning against the attestation policy: an
    /// attestation must be of the CSR's key (`Integrity`), and a factory
    /// that requires one refuses a request without (`Policy`), recording the
    /// refusal in the event log first.
    fn check_attestation(
        &self,
        actor: &Actor,
        checked: &CheckedRequest<'_>,
        issuance: Issuance,
        attestation: Option<&VerifiedAttestation>,
        now: OffsetDateTime,
    ) -> Result<()> {
        match (issuance, attestation) {
            (_, Some(a)) if a.key_fingerprint != checked.fingerprint => {
                Err(Error::integrity(format!(
                    "the attestation is of key {}, the CSR carries {}",
                    a.key_fingerprint, checked.fingerprint
                )))
            }
            (Issuance::Provision, None) if self.attestation_required => {
                let why = format!(
                    "this product line requires TPM key attestation; the key of device '{}' \
                     was not attested (provision it from its TPM with the manufacturer's EK CA)",
                    checked.req.device_id
                );
                ensure_event_key(self.ks, actor)?;
                self.log_event(
                    None,
                    actor,
                    now,
                    EventFields {
                        event: "attestation-refused",
                        device_id: Some(checked.req.device_id),
                        fingerprint: Some(&checked.fingerprint),
                        detail: why.clone(),
                        ..EventFields::default()
                    },
                )?;
                Err(Error::policy(why))
            }
            _ => Ok(()),
        }
    }

    /// The root and intermediate certificates and a signer over the active
    /// intermediate key, read in that order; `NotFound` before the ceremony.
    fn issuing_ca(&self) -> Result<IssuingCa<'a, B>> {
        let root = self.root()?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, INTERMEDIATE_KEY)?;
        Ok(IssuingCa {
            root,
            inter,
            signer,
            ocsp_url: self.ocsp_url.clone(),
        })
    }
}

/// Checks a request before anything is read or written, in this order: the
/// device id, the operator label, the validity (`InvalidInput`), the CSR's
/// self-signature ([`verify_csr`]: `InvalidInput`, `Unsupported` or
/// `Integrity`), and that the CSR's subject names the device as both CN and
/// serialNumber (`InvalidInput`).
fn check_request<'q>(req: &'q DeviceRequest<'q>) -> Result<CheckedRequest<'q>> {
    check_device_id(req.device_id)?;
    check_operator(req.operator)?;
    check_validity(req.validity, "device certificate")?;
    let csr = verify_csr(req.csr_der)?;
    if csr.common_name.as_deref() != Some(req.device_id)
        || csr.subject_serial_number.as_deref() != Some(req.device_id)
    {
        return Err(Error::invalid_input(format!(
            "the CSR's subject (CN {:?}, serialNumber {:?}) does not name device '{}'",
            csr.common_name.as_deref().map(shorten),
            csr.subject_serial_number.as_deref().map(shorten),
            req.device_id
        )));
    }
    let fingerprint = csr.fingerprint();
    Ok(CheckedRequest {
        req,
        csr,
        fingerprint,
    })
}

/// Checks the registry, reading only, for an early and specific refusal: a
/// first provisioning needs an unregistered device id (else
/// `AlreadyExists`), a renewal a registered one (else `NotFound`); then the
/// public key must not be registered to any unit, this one included
/// (`AlreadyExists`). The registry's constraints enforce the same when the
/// rows are written, whatever another station did in between.
fn check_registry<B: Backend>(
    factory: &Factory<'_, B>,
    checked: &CheckedRequest<'_>,
    issuance: Issuance,
) -> Result<()> {
    let device_id = checked.req.device_id;
    let existing = factory.registry.device(device_id)?;
    match (&existing, issuance) {
        (Some(d), Issuance::Provision) => {
            return Err(Error::already_exists(format!(
            "device '{device_id}' was already provisioned at {} by {}; a unit is provisioned once",
            d.provisioned_at, d.operator
        )))
        }
        (None, Issuance::Renew { .. }) => {
            return Err(crate::registry::not_registered(device_id));
        }
        _ => {}
    }
    let fingerprint = &checked.fingerprint;
    if let Some((owner, _)) = factory.registry.key_owner(fingerprint)? {
        return Err(Error::already_exists(format!(
            "public key {fingerprint} is already registered to device '{owner}'; \
             a key is never issued to two units"
        )));
    }
    Ok(())
}

/// A device certificate's validity: from `now` less [`BACKDATE`] (for clock
/// skew) to `now + validity`, but never beyond the issuer's notAfter.
fn device_validity(
    now: OffsetDateTime,
    validity: Duration,
    issuer: &CertInfo,
) -> (OffsetDateTime, OffsetDateTime) {
    (
        now - BACKDATE,
        std::cmp::min(now + validity, issuer.not_after),
    )
}

/// The parameters of a device certificate for `device_id`: subject (CN and
/// serialNumber, [`device_subject`]), end entity, digitalSignature and
/// clientAuth, the validity to the second, a fresh random serial, and SHA-256
/// key identifiers with an authority key identifier.
fn device_cert_params(
    device_id: &str,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = device_subject(device_id)?;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = to_second(not_before);
    params.not_after = to_second(not_after);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    Ok(params)
}

/// Builds the device certificate for the CSR's public key and has the
/// intermediate key sign it inside the production keystore (through
/// `issuer`); returns it parsed. Writes nothing; a keystore refusal comes
/// back as the keystore's error.
fn sign_device_cert<B: Backend>(
    checked: &CheckedRequest<'_>,
    ca: &IssuingCa<'_, B>,
    issuer: &Issuer<'_, '_, B>,
    now: OffsetDateTime,
) -> Result<CertInfo> {
    let validity = device_validity(now, checked.req.validity, &ca.inter);
    let mut params = device_cert_params(checked.req.device_id, validity)?;
    if let Some(url) = &ca.ocsp_url {
        params.custom_extensions.push(aia_extension(url)?);
    }
    let subject_key = SubjectKey::from(&checked.csr.public_key)?;
    let cert = params
        .signed_by(&subject_key, issuer)
        .map_err(|e| ca.signer.map_rcgen_error(e))?;
    CertInfo::parse(cert.der())
}

/// Validates a freshly issued device certificate with webpki (path to the
/// root, key usage), without revocation: nothing is revoked yet.
fn self_check(
    cert: &CertInfo,
    inter: &CertInfo,
    root: &CertInfo,
    now: OffsetDateTime,
) -> Result<()> {
    let ee_der = CertificateDer::from(cert.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&ee_der)
        .map_err(|e| Error::integrity(format!("issued certificate does not parse: {e}")))?;
    let root_der = CertificateDer::from(root.der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .map_err(|e| Error::integrity(format!("root certificate unusable: {e}")))?;
    let inters = [CertificateDer::from(inter.der.as_slice())];
    let secs = u64::try_from(now.unix_timestamp())
        .map_err(|_| Error::invalid_input("the issuance time is before 1970"))?;
    ee.verify_for_usage(
        crate::verify::ALGS,
        &[anchor],
        &inters,
        rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| Error::integrity(format!("the issued certificate does not validate: {e}")))?;
    Ok(())
}

/// The issuance's `provision` or `renew` event.
fn issue_event<'e>(
    checked: &'e CheckedRequest<'_>,
    cert: &'e CertInfo,
    issuance: Issuance,
) -> EventFields<'e> {
    let req = checked.req;
    EventFields {
        event: issuance.event(),
        device_id: Some(req.device_id),
        serial: Some(&cert.serial),
        fingerprint: Some(&checked.fingerprint),
        detail: format!(
            "operator {} key version {} certificate until {}",
            req.operator,
            req.key_version,
            rfc3339(cert.not_after)
        ),
    }
}

/// The provisioning record of an issuance (pure: writes nothing).
fn provisioning_record<B: Backend>(
    actor: &Actor,
    checked: &CheckedRequest<'_>,
    cert: &CertInfo,
    ca: &IssuingCa<'_, B>,
    event_id: &str,
    now: OffsetDateTime,
) -> ProvisioningRecord {
    let req = checked.req;
    ProvisioningRecord {
        device_id: req.device_id.to_string(),
        keys: RecordKeys {
            identity_cert: cert.digest.clone(),
            bootstrap_ca: ca.root.digest.clone(),
            issuing_ca: ca.inter.digest.clone(),
            identity_key: checked.fingerprint.clone(),
            identity_key_version: req.key_version,
        },
        date: now.date().to_string(),
        operator: req.operator.to_string(),
        actor: actor.id().to_string(),
        provisioned_at: rfc3339(now),
        event_id: event_id.to_string(),
        certificate_serial: cert.serial.clone(),
        certificate_not_after: rfc3339(cert.not_after),
        device_backend: req.device_backend.map(str::to_string),
        attestation: None,
    }
}

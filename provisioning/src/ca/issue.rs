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
//! 3. inside one `IMMEDIATE` transaction of the PKI database, held until the
//!    end: [`check_registry`] (device id and public key), [`sign_device_cert`]
//!    (validity from [`device_validity`], serial and extensions from
//!    [`device_cert_params`], plus the AIA OCSP URL when the factory has
//!    one, the signature made by the keystore),
//!    [`self_check`] (webpki), [`register`] (the registry rows),
//!    [`append_issue_event`], [`provisioning_record`] and, for a first
//!    provisioning, [`store_record`]; then the commit.
//!
//! An error at any step returns it; once the transaction is open, dropping it
//! rolls every registry write and the event back, so a failed issuance
//! leaves the database as it was (the event-log key made in step 2 stays).

use super::cert::{issuer_for, SubjectKey};
use super::factory::{DeviceRequest, Factory, Issued};
use super::ocsp_signer::aia_extension;
use super::{check_validity, BACKDATE, INTERMEDIATE_KEY};
use crate::db::{self, append_event, commit, ensure_event_key, opt, q, unique_or, EventFields};
use crate::record::{ProvisioningRecord, RecordKeys};
use crate::signer::KeystoreSigner;
use crate::util::{check_device_id, check_operator, random_serial, rfc3339, shorten, to_second};
use crate::x509::{device_subject, verify_csr, CertInfo, VerifiedCsr};
use keystore_api::{Actor, Backend, Duty, Error, Keystore, Result};
use rusqlite::{params, Transaction};
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
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.ks
            .authorize(actor, Duty::IssueCertificates, issuance.what())?;
        let checked = check_request(req)?;
        let ca = self.issuing_ca()?;
        let issuer = issuer_for(&ca.signer, &ca.inter)?;
        ensure_event_key(self.ks, actor)?;

        // From here to the commit the transaction holds the registry: the
        // checks, the signature and the writes see one state, and an error
        // drops the transaction, which rolls back every write.
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        check_registry(&tx, &checked, issuance)?;
        let cert = sign_device_cert(&checked, &ca, &issuer, now)?;
        // Never trust the code that made it: the chain must validate with webpki.
        self_check(&cert, &ca.inter, &ca.root, now)?;
        register(&tx, &checked, &cert, &ca.inter, issuance, now)?;
        let event_id = append_issue_event(&tx, self.ks, actor, &checked, &cert, issuance, now)?;
        let record = provisioning_record(actor, &checked, &cert, &ca, &event_id, now);
        if issuance == Issuance::Provision {
            store_record(&tx, req.device_id, &event_id, &record)?;
        }
        commit(tx)?;
        Ok(Issued {
            certificate: cert,
            intermediate: ca.inter,
            root: ca.root,
            record,
            event_id,
        })
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

/// Checks the registry inside `tx`, reading only: a first provisioning needs
/// an unregistered device id (else `AlreadyExists`), a renewal a registered
/// one (else `NotFound`); then the public key must not be registered to any
/// unit, this one included (`AlreadyExists`).
fn check_registry(
    tx: &Transaction<'_>,
    checked: &CheckedRequest<'_>,
    issuance: Issuance,
) -> Result<()> {
    let device_id = checked.req.device_id;
    let existing: Option<(String, String)> = opt(tx.query_row(
        "SELECT operator, provisioned_at FROM devices WHERE device_id = ?1",
        params![device_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    ))?;
    match (&existing, issuance) {
        (Some((op, at)), Issuance::Provision) => {
            return Err(Error::already_exists(format!(
                "device '{device_id}' was already provisioned at {at} by {op}; a unit is provisioned once"
            )))
        }
        (None, Issuance::Renew { .. }) => {
            return Err(Error::not_found(format!(
                "device '{device_id}' is not registered; provision it first"
            )))
        }
        _ => {}
    }
    let fingerprint = &checked.fingerprint;
    let owner: Option<String> = opt(tx.query_row(
        "SELECT device_id FROM device_keys WHERE fingerprint = ?1",
        params![fingerprint],
        |r| r.get(0),
    ))?;
    if let Some(owner) = owner {
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

/// Writes the registry rows of an issuance inside `tx`, in this order: the
/// unit (first provisioning only; its record is filled in by
/// [`store_record`]), its public key, the supersession of its current
/// certificates (renewal only), and the issued certificate. A UNIQUE
/// violation (another station got there first) is `AlreadyExists`.
fn register(
    tx: &Transaction<'_>,
    checked: &CheckedRequest<'_>,
    cert: &CertInfo,
    inter: &CertInfo,
    issuance: Issuance,
    now: OffsetDateTime,
) -> Result<()> {
    let req = checked.req;
    let now_s = rfc3339(now);
    match issuance {
        Issuance::Provision => insert_device(tx, req, &now_s)?,
        Issuance::Renew { .. } => {}
    }
    tx.execute(
        "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at) VALUES (?1, ?2, ?3, ?4)",
        params![checked.fingerprint, req.device_id, req.key_version, now_s],
    )
    .map_err(|e| unique_or(e, || format!("public key {} is already registered", checked.fingerprint)))?;
    if let Issuance::Renew { grace } = issuance {
        q(tx.execute(
            "UPDATE issued SET superseded_at = ?2, grace_end = ?3
             WHERE device_id = ?1 AND superseded_at IS NULL",
            params![req.device_id, now_s, rfc3339(now + grace)],
        ))?;
    }
    insert_issued(tx, checked, cert, inter, &now_s)
}

/// Registers a new unit (its event and record left empty until
/// [`store_record`]); `AlreadyExists` if the device id is taken.
fn insert_device(tx: &Transaction<'_>, req: &DeviceRequest<'_>, now_s: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO devices (device_id, operator, provisioned_at, event_id, record_yaml)
         VALUES (?1, ?2, ?3, '', '')",
        params![req.device_id, req.operator, now_s],
    )
    .map_err(|e| {
        unique_or(e, || {
            format!("device '{}' is already provisioned", req.device_id)
        })
    })?;
    Ok(())
}

/// Records the issued certificate under its issuer; `AlreadyExists` if the
/// serial was issued before.
fn insert_issued(
    tx: &Transaction<'_>,
    checked: &CheckedRequest<'_>,
    cert: &CertInfo,
    inter: &CertInfo,
    now_s: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO issued (serial, issuer_serial, device_id, fingerprint, key_version, der, digest,
                             not_before, not_after, issued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            cert.serial,
            inter.serial,
            checked.req.device_id,
            checked.fingerprint,
            checked.req.key_version,
            cert.der,
            cert.digest,
            rfc3339(cert.not_before),
            rfc3339(cert.not_after),
            now_s
        ],
    )
    .map_err(|e| unique_or(e, || format!("certificate serial {} already issued", cert.serial)))?;
    Ok(())
}

/// Appends the issuance's `provision` or `renew` event to the registry's
/// event log inside `tx` (MAC'd by the production keystore); returns its id.
fn append_issue_event<B: Backend>(
    tx: &Transaction<'_>,
    ks: &Keystore<B>,
    actor: &Actor,
    checked: &CheckedRequest<'_>,
    cert: &CertInfo,
    issuance: Issuance,
    now: OffsetDateTime,
) -> Result<String> {
    let req = checked.req;
    append_event(
        tx,
        ks,
        actor,
        now,
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
        },
    )
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
    }
}

/// Stores a first provisioning's event id and record (YAML) on the unit's
/// row inside `tx`. A renewal keeps the original record.
fn store_record(
    tx: &Transaction<'_>,
    device_id: &str,
    event_id: &str,
    record: &ProvisioningRecord,
) -> Result<()> {
    q(tx.execute(
        "UPDATE devices SET event_id = ?2, record_yaml = ?3 WHERE device_id = ?1",
        params![device_id, event_id, record.to_yaml()?],
    ))?;
    Ok(())
}

//! Issuing a device certificate: the checks, the signature, the registry
//! rows and the webpki self-check.

use super::cert::{issuer_for, SubjectKey};
use super::factory::{DeviceRequest, Factory, Issued};
use super::{check_validity, require, BACKDATE, INTERMEDIATE_KEY};
use crate::db::{self, append_event, commit, ensure_event_key, opt, q, unique_or, EventFields};
use crate::record::{ProvisioningRecord, RecordKeys};
use crate::signer::KeystoreSigner;
use crate::util::{check_device_id, check_operator, random_serial, rfc3339, shorten, to_second};
use crate::x509::{verify_csr, CertInfo};
use keystore_api::{Actor, Backend, Error, Result, Role};
use rusqlite::params;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

impl<'a, B: Backend> Factory<'a, B> {
    pub(super) fn issue(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        renewal_grace: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let what = if renewal_grace.is_some() {
            "renewing a device certificate"
        } else {
            "provisioning a device"
        };
        require(
            self.ks,
            actor,
            &[Role::Operator, Role::SecurityOfficer],
            what,
        )?;
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
        let root = self.root()?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
        let issuer = issuer_for(&signer, &inter)?;
        ensure_event_key(self.ks, actor)?;

        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        let existing: Option<(String, String)> = opt(tx.query_row(
            "SELECT operator, provisioned_at FROM devices WHERE device_id = ?1",
            params![req.device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))?;
        match (&existing, renewal_grace) {
            (Some((op, at)), None) => {
                return Err(Error::already_exists(format!(
                "device '{}' was already provisioned at {at} by {op}; a unit is provisioned once",
                req.device_id
            )))
            }
            (None, Some(_)) => {
                return Err(Error::not_found(format!(
                    "device '{}' is not registered; provision it first",
                    req.device_id
                )))
            }
            _ => {}
        }
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

        let not_after = std::cmp::min(now + req.validity, inter.not_after);
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = crate::x509::device_subject(req.device_id)?;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = to_second(now - BACKDATE);
        params.not_after = to_second(not_after);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        let subject_key = SubjectKey::from(&csr.public_key)?;
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| signer.map_err(e))?;
        let info = CertInfo::parse(cert.der())?;
        // Never trust the code that made it: the chain must validate with webpki.
        self_check(&info, &inter, &root, now)?;

        let now_s = rfc3339(now);
        if existing.is_none() {
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
        }
        tx.execute(
            "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at) VALUES (?1, ?2, ?3, ?4)",
            params![fingerprint, req.device_id, req.key_version, now_s],
        )
        .map_err(|e| unique_or(e, || format!("public key {fingerprint} is already registered")))?;
        if let Some(grace) = renewal_grace {
            q(tx.execute(
                "UPDATE issued SET superseded_at = ?2, grace_end = ?3
                 WHERE device_id = ?1 AND superseded_at IS NULL",
                params![req.device_id, now_s, rfc3339(now + grace)],
            ))?;
        }
        tx.execute(
            "INSERT INTO issued (serial, issuer_serial, device_id, fingerprint, key_version, der, digest,
                                 not_before, not_after, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                info.serial,
                inter.serial,
                req.device_id,
                fingerprint,
                req.key_version,
                info.der,
                info.digest,
                rfc3339(info.not_before),
                rfc3339(info.not_after),
                now_s
            ],
        )
        .map_err(|e| unique_or(e, || format!("certificate serial {} already issued", info.serial)))?;
        let event = if renewal_grace.is_some() {
            "renew"
        } else {
            "provision"
        };
        let event_id = append_event(
            &tx,
            self.ks,
            actor,
            now,
            EventFields {
                event,
                device_id: Some(req.device_id),
                serial: Some(&info.serial),
                fingerprint: Some(&fingerprint),
                detail: format!(
                    "operator {} key version {} certificate until {}",
                    req.operator,
                    req.key_version,
                    rfc3339(info.not_after)
                ),
            },
        )?;
        let record = ProvisioningRecord {
            device_id: req.device_id.to_string(),
            keys: RecordKeys {
                identity_cert: info.digest.clone(),
                bootstrap_ca: root.digest.clone(),
                issuing_ca: inter.digest.clone(),
                identity_key: fingerprint.clone(),
                identity_key_version: req.key_version,
            },
            date: now.date().to_string(),
            operator: req.operator.to_string(),
            actor: actor.id().to_string(),
            provisioned_at: now_s.clone(),
            event_id: event_id.clone(),
            certificate_serial: info.serial.clone(),
            certificate_not_after: rfc3339(info.not_after),
            device_backend: req.device_backend.map(str::to_string),
        };
        if renewal_grace.is_none() {
            q(tx.execute(
                "UPDATE devices SET event_id = ?2, record_yaml = ?3 WHERE device_id = ?1",
                params![req.device_id, event_id, record.to_yaml()?],
            ))?;
        }
        commit(tx)?;
        Ok(Issued {
            certificate: info,
            intermediate: inter,
            root,
            record,
            event_id,
        })
    }
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

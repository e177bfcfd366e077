//! Revocation and CRLs: reasons, serials, signing a CRL, and the factory's
//! revocations.

use super::cert::issuer_for;
use super::factory::Factory;
use super::{require, DEFAULT_CRL_VALIDITY, INTERMEDIATE_KEY, MAX_CRL_VALIDITY};
use crate::db::{self, append_event, commit, ensure_event_key, opt, q, EventFields, PkiDb};
use crate::signer::KeystoreSigner;
use crate::util::{rfc3339, shorten, to_second};
use crate::x509::CertInfo;
use keystore_api::{Actor, Backend, Component, Error, Keystore, Result, Role};
use rusqlite::params;
use time::{Duration, OffsetDateTime};

pub(super) fn check_crl_validity(next_update_in: Duration) -> Result<()> {
    if next_update_in <= Duration::ZERO || next_update_in > MAX_CRL_VALIDITY {
        return Err(Error::invalid_input(format!(
            "a CRL's next update is more than 0 and at most {} days away",
            MAX_CRL_VALIDITY.whole_days()
        )));
    }
    Ok(())
}

pub(super) fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() || reason.len() > 512 || reason.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "a revocation reason is 1 to 512 characters without control characters",
        ));
    }
    Ok(())
}

/// Normalises a hex serial (optional `0x`, colons, any case) to lowercase hex.
pub fn normalise_serial(s: &str) -> Result<String> {
    let t: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if t.is_empty()
        || t.len() > 42
        || !t.bytes().all(|b| b.is_ascii_hexdigit())
        || !t.len().is_multiple_of(2)
    {
        return Err(Error::invalid_input(format!(
            "a certificate serial is an even number of hex digits (at most 21 bytes), got {:?}",
            shorten(s)
        )));
    }
    Ok(t)
}

/// Maps a reason keyword to an RFC 5280 reason code (free text gets none).
fn reason_code(reason: &str) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    let key = reason
        .split(|c: char| c.is_whitespace() || c == ':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Some(match key.as_str() {
        "key-compromise" | "keycompromise" | "compromised" => R::KeyCompromise,
        "ca-compromise" => R::CaCompromise,
        "affiliation-changed" => R::AffiliationChanged,
        "superseded" => R::Superseded,
        "cessation-of-operation" | "decommissioned" => R::CessationOfOperation,
        "certificate-hold" => R::CertificateHold,
        "privilege-withdrawn" => R::PrivilegeWithdrawn,
        _ => return None,
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn issue_crl_with<B: Backend>(
    ks: &Keystore<B>,
    db: &PkiDb,
    actor: &Actor,
    signer: &KeystoreSigner<'_, B>,
    ca: &CertInfo,
    revoked: Vec<(String, String, Option<String>)>,
    now: OffsetDateTime,
    next_update_in: Duration,
) -> Result<Vec<u8>> {
    check_crl_validity(next_update_in)?;
    let issuer = issuer_for(signer, ca)?;
    let mut entries = Vec::with_capacity(revoked.len());
    for (serial, at, reason) in &revoked {
        let bytes = hex::decode(serial)
            .map_err(|_| Error::integrity(format!("stored serial '{serial}' is not hex")))?;
        entries.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&bytes),
            revocation_time: to_second(crate::util::parse_time(at)?),
            reason_code: reason.as_deref().and_then(reason_code),
            invalidity_date: None,
        });
    }
    let mut conn = db.lock();
    let tx = db::tx(&mut conn)?;
    let number: i64 = opt(tx.query_row(
        "SELECT number FROM crl_state WHERE issuer_serial = ?1",
        params![ca.serial],
        |r| r.get(0),
    ))?
    .unwrap_or(0)
        + 1;
    let params = rcgen::CertificateRevocationListParams {
        this_update: to_second(now),
        next_update: to_second(now + next_update_in),
        crl_number: rcgen::SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(|e| signer.map_err(e))?;
    let der = crl.der().to_vec();
    q(tx.execute(
        "INSERT INTO crl_state (issuer_serial, number, der, this_update, next_update)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(issuer_serial) DO UPDATE SET number = ?2, der = ?3, this_update = ?4, next_update = ?5",
        params![
            ca.serial,
            number,
            der,
            rfc3339(now),
            rfc3339(now + next_update_in)
        ],
    ))?;
    append_event(
        &tx,
        ks,
        actor,
        now,
        EventFields {
            event: "crl",
            serial: Some(&ca.serial),
            detail: format!(
                "CRL #{number} by '{}' with {} entries, next update {}",
                ca.subject,
                revoked.len(),
                rfc3339(now + next_update_in)
            ),
            ..EventFields::default()
        },
    )?;
    commit(tx)?;
    Ok(der)
}

impl<'a, B: Backend> Factory<'a, B> {
    /// Revokes the certificate with `serial` and issues a new CRL (returned,
    /// DER). Needs the security-officer role.
    pub fn revoke(
        &self,
        actor: &Actor,
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>> {
        require(
            self.ks,
            actor,
            &[Role::SecurityOfficer],
            "revoking a certificate",
        )?;
        check_reason(reason)?;
        let serial = normalise_serial(serial)?;
        ensure_event_key(self.ks, actor)?;
        {
            let mut conn = self.db.lock();
            let tx = db::tx(&mut conn)?;
            let row: Option<(String, Option<String>)> = opt(tx.query_row(
                "SELECT device_id, revoked_at FROM issued WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))?;
            let device = match row {
                None => {
                    return Err(Error::not_found(format!(
                        "no certificate with serial {serial} was issued here"
                    )))
                }
                Some((_, Some(at))) => {
                    return Err(Error::key_state(format!(
                        "certificate {serial} was already revoked at {at}"
                    )))
                }
                Some((d, None)) => d,
            };
            q(tx.execute(
                "UPDATE issued SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                params![serial, rfc3339(now), reason],
            ))?;
            append_event(
                &tx,
                self.ks,
                actor,
                now,
                EventFields {
                    event: "revoke",
                    device_id: Some(&device),
                    serial: Some(&serial),
                    detail: format!("revoked: {reason}"),
                    ..EventFields::default()
                },
            )?;
            commit(tx)?;
        }
        self.issue_crl(actor, now, DEFAULT_CRL_VALIDITY)
    }

    /// Revokes every unrevoked certificate of a device; returns their
    /// serials and the new CRL.
    pub fn revoke_device(
        &self,
        actor: &Actor,
        device_id: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(Vec<String>, Vec<u8>)> {
        require(
            self.ks,
            actor,
            &[Role::SecurityOfficer],
            "revoking a certificate",
        )?;
        let serials: Vec<String> = self
            .certificates(device_id)?
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| c.serial)
            .collect();
        if serials.is_empty() {
            return Err(Error::not_found(format!(
                "device '{device_id}' has no unrevoked certificate"
            )));
        }
        let mut crl = Vec::new();
        for s in &serials {
            crl = self.revoke(actor, s, reason, now)?;
        }
        Ok((serials, crl))
    }

    /// Issues the intermediate's CRL (every certificate it issued that was
    /// revoked), valid until `now + next_update_in`. Needs the operator or
    /// security-officer role (reissuing before nextUpdate is routine).
    pub fn issue_crl(
        &self,
        actor: &Actor,
        now: OffsetDateTime,
        next_update_in: Duration,
    ) -> Result<Vec<u8>> {
        require(
            self.ks,
            actor,
            &[Role::Operator, Role::SecurityOfficer],
            "issuing a CRL",
        )?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
        ensure_event_key(self.ks, actor)?;
        let revoked = {
            let conn = self.db.lock();
            let mut stmt = q(conn.prepare(
                "SELECT serial, revoked_at, reason FROM issued
                 WHERE issuer_serial = ?1 AND revoked_at IS NOT NULL ORDER BY revoked_at",
            ))?;
            let rows = q(stmt.query_map(params![inter.serial], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            }))?;
            rows.collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
                .map_err(|e| Error::backend(Component::PkiDb, "PKI database query failed", e))?
        };
        issue_crl_with(
            self.ks,
            self.db,
            actor,
            &signer,
            &inter,
            revoked,
            now,
            next_update_in,
        )
    }

    /// The last CRL the current intermediate issued, if any.
    pub fn current_crl(&self) -> Result<Option<Vec<u8>>> {
        let inter = self.intermediate()?;
        Ok(opt(self.db.lock().query_row(
            "SELECT der FROM crl_state WHERE issuer_serial = ?1",
            params![inter.serial],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        ))?
        .flatten())
    }
}

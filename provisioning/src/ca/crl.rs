//! Revocation and CRLs: reasons, serials, marking a serial revoked in either
//! CA's registry ([`revoke_serial`], for the factory's device certificates
//! and the root's intermediates), signing a CRL, and the factory's
//! revocations.

use super::cert::issuer_for;
use super::factory::Factory;
use super::{DEFAULT_CRL_VALIDITY, INTERMEDIATE_KEY, MAX_CRL_VALIDITY};
use crate::db::{self, append_event, commit, opt, q, PkiDb};
use crate::eventlog::{ensure_event_key, EventFields};
use crate::signer::KeystoreSigner;
use crate::util::{rfc3339, shorten, to_second};
use crate::x509::CertInfo;
use keystore_api::{Actor, Backend, Duty, Error, Keystore, Result};
use rusqlite::{params, Transaction};
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
pub(super) fn reason_code(reason: &str) -> Option<rcgen::RevocationReason> {
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

/// What [`revoke_serial`] marks revoked: a row of one of the two CAs'
/// registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Revocable {
    /// A certificate the factory's intermediate issued to a device (table
    /// `issued`, event `revoke` naming the device).
    DeviceCertificate,
    /// An intermediate the offline root signed (table `signed_intermediates`,
    /// event `revoke-intermediate` naming its subject).
    Intermediate,
}

impl Revocable {
    /// The row of `?1` (serial): who it concerns (device id or subject) and
    /// when it was revoked, if it was.
    fn select_sql(self) -> &'static str {
        match self {
            Revocable::DeviceCertificate => {
                "SELECT device_id, revoked_at FROM issued WHERE serial = ?1"
            }
            Revocable::Intermediate => {
                "SELECT subject, revoked_at FROM signed_intermediates WHERE serial = ?1"
            }
        }
    }

    /// Marks the row of `?1` revoked at `?2` for reason `?3`.
    fn update_sql(self) -> &'static str {
        match self {
            Revocable::DeviceCertificate => {
                "UPDATE issued SET revoked_at = ?2, reason = ?3 WHERE serial = ?1"
            }
            Revocable::Intermediate => {
                "UPDATE signed_intermediates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1"
            }
        }
    }

    /// `NotFound`: no such serial in this registry.
    fn not_found(self, serial: &str) -> Error {
        Error::not_found(match self {
            Revocable::DeviceCertificate => {
                format!("no certificate with serial {serial} was issued here")
            }
            Revocable::Intermediate => {
                format!("no intermediate with serial {serial} was signed by this root")
            }
        })
    }

    /// `KeyState`: the serial was revoked at `at` already.
    fn already_revoked(self, serial: &str, at: &str) -> Error {
        let what = match self {
            Revocable::DeviceCertificate => "certificate",
            Revocable::Intermediate => "intermediate",
        };
        Error::key_state(format!("{what} {serial} was already revoked at {at}"))
    }

    /// The revocation's event; `concerns` is the row's device id or subject.
    fn event<'e>(self, serial: &'e str, concerns: &'e str, reason: &str) -> EventFields<'e> {
        match self {
            Revocable::DeviceCertificate => EventFields {
                event: "revoke",
                device_id: Some(concerns),
                serial: Some(serial),
                detail: format!("revoked: {reason}"),
                ..EventFields::default()
            },
            Revocable::Intermediate => EventFields {
                event: "revoke-intermediate",
                serial: Some(serial),
                detail: format!("intermediate '{concerns}' revoked: {reason}"),
                ..EventFields::default()
            },
        }
    }
}

/// Marks `serial` (normalised, [`normalise_serial`]) of `what` revoked at
/// `now` for `reason` (checked, [`check_reason`]) and appends the event to
/// `db`'s log, MAC'd by `ks`. First makes sure the event-log key exists in
/// `ks`; then one transaction reads the row, updates it and appends the
/// event, and commits. `NotFound` for an unknown serial and `KeyState` for
/// one revoked already, with nothing written. Issues no CRL: the caller
/// does, after this returns.
pub(super) fn revoke_serial<B: Backend>(
    ks: &Keystore<B>,
    db: &PkiDb,
    actor: &Actor,
    what: Revocable,
    serial: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<()> {
    ensure_event_key(ks, actor)?;
    let mut conn = db.lock();
    let tx = db::tx(&mut conn)?;
    let row: Option<(String, Option<String>)> =
        opt(tx.query_row(what.select_sql(), params![serial], |r| {
            Ok((r.get(0)?, r.get(1)?))
        }))?;
    let concerns = match row {
        None => return Err(what.not_found(serial)),
        Some((_, Some(at))) => return Err(what.already_revoked(serial, &at)),
        Some((concerns, None)) => concerns,
    };
    q(tx.execute(what.update_sql(), params![serial, rfc3339(now), reason]))?;
    append_event(&tx, ks, actor, now, what.event(serial, &concerns, reason))?;
    commit(tx)
}

/// The event sink of a CRL: appends the `crl` event, given the
/// transaction of the CA's database that records the CRL.
pub(super) type CrlEventLog<'l> = dyn Fn(&Transaction<'_>, EventFields<'_>) -> Result<String> + 'l;

/// Signs a CRL of `ca` listing `revoked`, records it (number, DER, times) in
/// `db` and its event through `log`, in one transaction of `db`.
pub(super) fn issue_crl_with<B: Backend>(
    db: &PkiDb,
    log: &CrlEventLog<'_>,
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
    let crl = params
        .signed_by(&issuer)
        .map_err(|e| signer.map_rcgen_error(e))?;
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
    log(
        &tx,
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
        self.ks
            .authorize(actor, Duty::RevokeCertificates, "revoking a certificate")?;
        check_reason(reason)?;
        let serial = normalise_serial(serial)?;
        ensure_event_key(self.ks, actor)?;
        let signer = self.event_signer()?;
        let what = Revocable::DeviceCertificate;
        self.registry.revoke(
            &serial,
            &rfc3339(now),
            reason,
            &|device_id| what.event(&serial, device_id, reason).to_event(actor, now),
            &signer,
        )?;
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
        self.ks
            .authorize(actor, Duty::RevokeCertificates, "revoking a certificate")?;
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
        self.ks
            .authorize(actor, Duty::IssueCertificates, "issuing a CRL")?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, INTERMEDIATE_KEY)?;
        ensure_event_key(self.ks, actor)?;
        let revoked = self.registry.revoked_under(&inter.serial)?;
        issue_crl_with(
            self.db,
            &|tx, f| self.log_event(Some(tx), actor, now, f),
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

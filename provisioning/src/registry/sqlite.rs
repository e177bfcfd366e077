//! The registry in a station's own `pki.sqlite` ([`PkiDb`]): the tables of
//! the PKI schema's migration 1, written in `IMMEDIATE` transactions (one
//! writer at a time across processes), events in the log format v1.

use super::sealed::RegistryOps;
use super::{
    already_revoked, device_taken, key_taken, not_registered, serial_taken, unknown_serial,
    DeviceRow, IssuedRow, Registration,
};
use crate::ca::IssuedCert;
use crate::db::{self, commit, db_err, insert_event, opt, q, unique_or, PkiDb};
use crate::eventlog::{Event, EventSigner, StoredEvent, StoredHead};
use keystore_api::Result;
use rusqlite::params;

impl RegistryOps for PkiDb {
    fn location(&self) -> String {
        "the station's pki.sqlite".to_string()
    }

    fn shared(&self) -> bool {
        false
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRow>> {
        opt(self.lock().query_row(
            "SELECT operator, provisioned_at, record_yaml, attestation, attestation_digest
             FROM devices WHERE device_id = ?1",
            params![device_id],
            |r| {
                Ok(DeviceRow {
                    operator: r.get(0)?,
                    provisioned_at: r.get(1)?,
                    record_yaml: r.get(2)?,
                    attestation: r.get(3)?,
                    attestation_digest: r.get(4)?,
                })
            },
        ))
    }

    fn key_owner(&self, fingerprint: &str) -> Result<Option<(String, u32)>> {
        opt(self.lock().query_row(
            "SELECT device_id, key_version FROM device_keys WHERE fingerprint = ?1",
            params![fingerprint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))
    }

    fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCert>> {
        let conn = self.lock();
        let mut stmt = q(conn.prepare(
            "SELECT serial, device_id, fingerprint, key_version, not_after, superseded_at, grace_end,
                    revoked_at, der
             FROM issued WHERE device_id = ?1 ORDER BY issued_at, rowid",
        ))?;
        let rows = q(stmt.query_map(params![device_id], |r| {
            Ok(IssuedCert {
                serial: r.get(0)?,
                device_id: r.get(1)?,
                fingerprint: r.get(2)?,
                key_version: r.get(3)?,
                not_after: r.get(4)?,
                superseded_at: r.get(5)?,
                grace_end: r.get(6)?,
                revoked_at: r.get(7)?,
                der: r.get(8)?,
            })
        }))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("PKI database query failed"))
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRow>> {
        opt(self.lock().query_row(
            "SELECT device_id, issuer_serial, der, revoked_at, reason, grace_end
             FROM issued WHERE serial = ?1",
            params![serial],
            |r| {
                Ok(IssuedRow {
                    device_id: r.get(0)?,
                    issuer_serial: r.get(1)?,
                    der: r.get(2)?,
                    revoked_at: r.get(3)?,
                    reason: r.get(4)?,
                    grace_end: r.get(5)?,
                })
            },
        ))
    }

    fn device_count(&self) -> Result<u64> {
        let n: i64 = q(self
            .lock()
            .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0)))?;
        Ok(n as u64)
    }

    fn revoked_under(&self, issuer_serial: &str) -> Result<Vec<(String, String, Option<String>)>> {
        let conn = self.lock();
        let mut stmt = q(conn.prepare(
            "SELECT serial, revoked_at, reason FROM issued
             WHERE issuer_serial = ?1 AND revoked_at IS NOT NULL ORDER BY revoked_at",
        ))?;
        let rows = q(stmt.query_map(params![issuer_serial], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        }))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("PKI database query failed"))
    }

    fn register(
        &self,
        reg: &Registration<'_>,
        event: &mut Event,
        signer: &EventSigner<'_>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = db::tx(&mut conn)?;
        match &reg.first {
            Some((record_yaml, event_id)) => {
                tx.execute(
                    "INSERT INTO devices (device_id, operator, provisioned_at, event_id, record_yaml,
                                          attestation, attestation_digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        reg.device_id,
                        reg.operator,
                        reg.now,
                        event_id,
                        record_yaml,
                        reg.attestation_state(),
                        reg.attestation
                    ],
                )
                .map_err(|e| unique_or(e, || device_taken(reg.device_id)))?;
            }
            None => {
                let known = opt(tx.query_row(
                    "SELECT 1 FROM devices WHERE device_id = ?1",
                    params![reg.device_id],
                    |_| Ok(()),
                ))?;
                if known.is_none() {
                    return Err(not_registered(reg.device_id));
                }
            }
        }
        tx.execute(
            "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![reg.fingerprint, reg.device_id, reg.key_version, reg.now],
        )
        .map_err(|e| unique_or(e, || key_taken(reg.fingerprint)))?;
        if let Some(grace_end) = &reg.grace_end {
            q(tx.execute(
                "UPDATE issued SET superseded_at = ?2, grace_end = ?3
                 WHERE device_id = ?1 AND superseded_at IS NULL",
                params![reg.device_id, reg.now, grace_end],
            ))?;
        }
        tx.execute(
            "INSERT INTO issued (serial, issuer_serial, device_id, fingerprint, key_version, der,
                                 digest, not_before, not_after, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                reg.serial,
                reg.issuer_serial,
                reg.device_id,
                reg.fingerprint,
                reg.key_version,
                reg.der,
                reg.digest,
                reg.not_before,
                reg.not_after,
                reg.now
            ],
        )
        .map_err(|e| unique_or(e, || serial_taken(reg.serial)))?;
        insert_event(&tx, signer, event)?;
        commit(tx)
    }

    fn revoke(
        &self,
        serial: &str,
        at: &str,
        reason: &str,
        event_for: &(dyn Fn(&str) -> Result<Event> + Sync),
        signer: &EventSigner<'_>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = db::tx(&mut conn)?;
        let row: Option<(String, Option<String>)> = opt(tx.query_row(
            "SELECT device_id, revoked_at FROM issued WHERE serial = ?1",
            params![serial],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))?;
        let device_id = match row {
            None => return Err(unknown_serial(serial)),
            Some((_, Some(at))) => return Err(already_revoked(serial, &at)),
            Some((device_id, None)) => device_id,
        };
        q(tx.execute(
            "UPDATE issued SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
            params![serial, at, reason],
        ))?;
        insert_event(&tx, signer, &mut event_for(&device_id)?)?;
        commit(tx)
    }

    fn append(&self, event: &mut Event, signer: &EventSigner<'_>) -> Result<()> {
        let mut conn = self.lock();
        let tx = db::tx(&mut conn)?;
        insert_event(&tx, signer, event)?;
        commit(tx)
    }

    fn events(&self) -> Result<(Vec<StoredEvent>, Option<StoredHead>)> {
        db::stored_events(&self.lock())
    }
}

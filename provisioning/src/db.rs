//! The PKI database (SQLite, one file beside each keystore, `pki.sqlite` by
//! convention): CA certificates, CRL state, delegated OCSP signers,
//! device-side identity certificates, a hash-chained, MAC'd event log
//! ([`crate::eventlog`], format v1), and the station's own provisioning
//! registry (devices, their public-key fingerprints, issued certificates,
//! revocations) when no shared registry is configured
//! ([`crate::registry`]).
//!
//! Uniqueness (REQ 5) rests on the schema: `devices.device_id`,
//! `device_keys.fingerprint` and `issued.serial` are primary keys, so two
//! units can never be registered with the same id, key or serial, whatever
//! the code above does.

use crate::eventlog::{EventFields, EventSigner, Sealed, StoredEvent, StoredHead};
use keystore_api::chain::GENESIS;
use keystore_api::fsperm::{self, PermissionReport};
use keystore_api::{Actor, Backend, Component, Error, Keystore, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

/// The PKI database.
pub struct PkiDb {
    conn: Mutex<Connection>,
    permissions: PermissionReport,
}

impl std::fmt::Debug for PkiDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkiDb").finish_non_exhaustive()
    }
}

pub(crate) fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::backend(Component::PkiDb, what.to_string(), e)
}

/// Tightens (and reports) any of the database's files that other users can
/// reach, and creates a missing database file empty with mode 0600.
fn secure_files(path: &Path) -> Result<PermissionReport> {
    let mut report = PermissionReport::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        report.check_path(Path::new(&name));
    }
    if !path.exists() {
        fsperm::open_private_file(path).map_err(|e| {
            Error::backend(
                Component::PkiDb,
                format!("cannot create the PKI database {}", path.display()),
                e,
            )
        })?;
    }
    Ok(report)
}

impl PkiDb {
    /// Opens (creating if missing) the database at `path`. The file is
    /// created with mode 0600 before SQLite opens it, so SQLite's `-wal`,
    /// `-shm` and `-journal` files get 0600 too, whatever the umask; an
    /// existing database whose files other users can reach is tightened and
    /// reported in [`PkiDb::permission_report`].
    pub fn open(path: &Path) -> Result<PkiDb> {
        let permissions = secure_files(path)?;
        let mut conn = Connection::open(path).map_err(db_err("cannot open the PKI database"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err("cannot configure the PKI database"))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;")
            .map_err(db_err("cannot configure the PKI database"))?;
        crate::schema::migrate(&mut conn)?;
        Ok(PkiDb {
            conn: Mutex::new(conn),
            permissions,
        })
    }

    /// The database's files that other local users could reach at open,
    /// each tightened to 0600 or reported as not tightenable.
    pub fn permission_report(&self) -> &PermissionReport {
        &self.permissions
    }

    /// The connection (one writer at a time in this process; SQLite locks
    /// across processes).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // Every write is a transaction: a panic cannot leave it half-written.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A transaction that fails over to `Error::Backend` with context.
pub(crate) fn tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err("cannot start a PKI database transaction"))
}

pub(crate) fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit()
        .map_err(db_err("cannot commit to the PKI database"))
}

/// Maps a UNIQUE/PRIMARY KEY violation to `AlreadyExists(msg)`.
pub(crate) fn unique_or(e: rusqlite::Error, msg: impl FnOnce() -> String) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::already_exists(msg())
        }
        _ => Error::backend(Component::PkiDb, "PKI database write failed", e),
    }
}

pub(crate) fn q<T>(r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(db_err("PKI database query failed"))
}

pub(crate) fn opt<T>(r: rusqlite::Result<T>) -> Result<Option<T>> {
    q(r.optional())
}

/// The DER of the newest CA certificate of `role`.
pub(crate) fn current_ca(conn: &Connection, role: &str) -> Result<Option<Vec<u8>>> {
    opt(conn.query_row(
        "SELECT der FROM ca_certs WHERE role = ?1 ORDER BY installed_at DESC, rowid DESC LIMIT 1",
        params![role],
        |r| r.get(0),
    ))
}

/// Appends `e` (numbered and sealed by `signer`) to the log inside `tx`,
/// and moves the head to it.
pub(crate) fn insert_event(
    tx: &Transaction<'_>,
    signer: &EventSigner<'_>,
    e: &mut crate::eventlog::Event,
) -> Result<()> {
    let (last_seq, prev): (u64, String) = opt(tx.query_row(
        "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    ))?
    .unwrap_or((0, hex::encode(GENESIS)));
    let Sealed {
        prev_hash,
        hash,
        mac,
        head_mac,
    } = signer.seal(e, last_seq, &prev)?;
    q(tx.execute(
        "INSERT INTO events (seq, id, at, actor, role, event, device_id, serial, fingerprint,
                             detail, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            e.seq as i64,
            e.id,
            e.at,
            e.actor,
            e.role,
            e.event,
            e.device_id,
            e.serial,
            e.fingerprint,
            e.detail,
            prev_hash,
            hash,
            mac
        ],
    ))?;
    // The head (last sequence number and hash, MAC'd) makes a truncated
    // tail visible.
    q(tx.execute(
        "INSERT INTO events_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3",
        params![e.seq as i64, hash, head_mac],
    ))?;
    Ok(())
}

/// Appends an event inside `tx`, chained to the previous one and MAC'd by
/// the event key in `ks` (this database's own log). Returns its id.
pub(crate) fn append_event<B: Backend>(
    tx: &Transaction<'_>,
    ks: &Keystore<B>,
    actor: &Actor,
    at: OffsetDateTime,
    f: EventFields<'_>,
) -> Result<String> {
    let mut e = f.to_event(actor, at)?;
    insert_event(tx, &EventSigner::new(ks, None), &mut e)?;
    Ok(e.id)
}

/// Every event of this database's log, oldest first, and its head.
pub(crate) fn stored_events(conn: &Connection) -> Result<(Vec<StoredEvent>, Option<StoredHead>)> {
    let mut stmt = q(conn.prepare(
        "SELECT seq, id, at, actor, role, event, device_id, serial, fingerprint, detail,
                prev_hash, hash, mac FROM events ORDER BY seq",
    ))?;
    let rows = q(stmt.query_map([], |r| {
        Ok(StoredEvent {
            event: crate::eventlog::Event {
                seq: r.get::<_, i64>(0)? as u64,
                id: r.get(1)?,
                at: r.get(2)?,
                actor: r.get(3)?,
                role: r.get(4)?,
                event: r.get(5)?,
                device_id: r.get(6)?,
                serial: r.get(7)?,
                fingerprint: r.get(8)?,
                detail: r.get(9)?,
                station: None,
            },
            prev_hash: r.get(10)?,
            hash: r.get(11)?,
            mac: r.get(12)?,
        })
    }))?;
    let rows = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("PKI database query failed"))?;
    let head = opt(conn.query_row(
        "SELECT seq, hash, mac FROM events_head WHERE id = 1",
        [],
        |r| {
            Ok(StoredHead {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(u64::MAX),
                hash: r.get(1)?,
                mac: r.get(2)?,
                station: None,
            })
        },
    ))?;
    Ok((rows, head))
}

/// Verifies this database's own log (format v1): every hash, every MAC and
/// the head; returns the events or names the first bad one as `Integrity`.
pub(crate) fn verify_events<B: Backend>(
    conn: &Connection,
    ks: &Keystore<B>,
) -> Result<Vec<crate::eventlog::Event>> {
    let (rows, head) = stored_events(conn)?;
    Ok(crate::eventlog::verify(ks, rows, head, false)?.events)
}

//! The PKI database (SQLite, one file beside each keystore, `pki.sqlite` by
//! convention): CA certificates, the provisioning registry (devices, their
//! public-key fingerprints, issued certificates, revocations, CRL numbers),
//! device-side identity certificates, and a hash-chained, MAC'd event log.
//!
//! The event log is chained by the keystore's one chain primitive
//! ([`keystore_api::chain`]) under its own domain, with the format
//! every existing `pki.sqlite` was written in: text fields in column order,
//! the previous hash as its 64 lowercase hex digits, hashes and MACs stored
//! as hex text. Its MACs are made by [`EVENT_KEY`], a keystore key: an
//! entry's MAC is over its hash in hex, the head's over
//! `keystore-provisioning-head-v1|<seq>|<hash in hex>`.
//!
//! Uniqueness (REQ 5) rests on the schema: `devices.device_id` and
//! `device_keys.fingerprint` are primary keys, so two units can never be
//! registered with the same id or the same key, whatever the code above does
//! and however many stations share the file.

use crate::util::{random_id, rfc3339};
use keystore_api::chain::{Break, ChainHasher, ChainWalker, Fault, GENESIS};
use keystore_api::fsperm::{self, PermissionReport};
use keystore_api::{
    Actor, Algorithm, Backend, Component, Error, ErrorKind, KeySpec, Keystore, Result, Usages,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

/// The keystore key (HMAC-SHA256, non-extractable) that MACs the event log.
pub const EVENT_KEY: &str = "provisioning.events";

const EVENT_DOMAIN: &[u8] = b"keystore-provisioning-event-v1";
const HEAD_DOMAIN: &str = "keystore-provisioning-head-v1";

fn head_message(seq: u64, hash: &str) -> String {
    format!("{HEAD_DOMAIN}|{seq}|{hash}")
}

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

/// One entry of the provisioning event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position, from 1.
    pub seq: u64,
    /// Random 128-bit id, hex.
    pub id: String,
    /// RFC 3339 UTC time.
    pub at: String,
    /// The actor id.
    pub actor: String,
    /// The actor's role.
    pub role: String,
    /// `init-root`, `sign-intermediate`, `revoke-intermediate`,
    /// `install-intermediate`, `provision`, `renew`, `revoke`, `crl`.
    pub event: String,
    /// The device concerned.
    pub device_id: Option<String>,
    /// The certificate concerned (serial, hex).
    pub serial: Option<String>,
    /// The public key concerned.
    pub fingerprint: Option<String>,
    /// Free text (never secret).
    pub detail: String,
}

/// What an event is about.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFields<'a> {
    pub event: &'a str,
    pub device_id: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub detail: String,
}

/// The chain hash of `e` after the previous hash `prev` (hex, as stored).
fn event_hash(e: &Event, prev: &str) -> [u8; 32] {
    let mut h = ChainHasher::new(EVENT_DOMAIN, e.seq);
    h.text(Some(&e.id))
        .text(Some(&e.at))
        .text(Some(&e.actor))
        .text(Some(&e.role))
        .text(Some(&e.event))
        .text(e.device_id.as_deref())
        .text(e.serial.as_deref())
        .text(e.fingerprint.as_deref())
        .text(Some(&e.detail))
        .text(Some(prev));
    h.finish()
}

/// A stored hash as bytes: its 32 bytes when it is 64 lowercase hex
/// digits, its text otherwise (which then never matches a hash).
fn stored_hash(text: &str) -> Vec<u8> {
    match hex::decode(text) {
        Ok(b) if b.len() == 32 && hex::encode(&b) == text => b,
        _ => text.as_bytes().to_vec(),
    }
}

/// Makes sure the event-log MAC key exists in `ks` (an HMAC key generated in
/// the backend; creating it needs the operator or security-officer role).
pub(crate) fn ensure_event_key<B: Backend>(ks: &Keystore<B>, actor: &Actor) -> Result<()> {
    match ks.info(EVENT_KEY) {
        Ok(_) => Ok(()),
        Err(ref e) if e.is(ErrorKind::NotFound) => {
            let spec = KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC);
            match ks.create(actor, EVENT_KEY, spec) {
                Ok(_) => Ok(()),
                Err(e) if e.is(ErrorKind::AlreadyExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Appends an event inside `tx`, chained to the previous one and MAC'd by
/// [`EVENT_KEY`] in `ks`. Returns its id.
pub(crate) fn append_event<B: Backend>(
    tx: &Transaction<'_>,
    ks: &Keystore<B>,
    actor: &Actor,
    at: OffsetDateTime,
    f: EventFields<'_>,
) -> Result<String> {
    let (last_seq, prev): (u64, String) = opt(tx.query_row(
        "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    ))?
    .unwrap_or((0, hex::encode(GENESIS)));
    let e = Event {
        seq: last_seq + 1,
        id: random_id()?,
        at: rfc3339(at),
        actor: actor.id().to_string(),
        role: actor.role().id().to_string(),
        event: f.event.to_string(),
        device_id: f.device_id.map(str::to_string),
        serial: f.serial.map(str::to_string),
        fingerprint: f.fingerprint.map(str::to_string),
        detail: f.detail,
    };
    let hash = hex::encode(event_hash(&e, &prev));
    let mac = hex::encode(ks.mac(EVENT_KEY, hash.as_bytes())?);
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
            prev,
            hash,
            mac
        ],
    ))?;
    // The head (last sequence number and hash, MAC'd) makes a truncated
    // tail visible.
    let head_mac = hex::encode(ks.mac(EVENT_KEY, head_message(e.seq, &hash).as_bytes())?);
    q(tx.execute(
        "INSERT INTO events_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3",
        params![e.seq as i64, hash, head_mac],
    ))?;
    Ok(e.id)
}

/// Every event, oldest first.
pub(crate) fn events(conn: &Connection) -> Result<Vec<(Event, String, String, String)>> {
    let mut stmt = q(conn.prepare(
        "SELECT seq, id, at, actor, role, event, device_id, serial, fingerprint, detail,
                prev_hash, hash, mac FROM events ORDER BY seq",
    ))?;
    let rows = q(stmt.query_map([], |r| {
        Ok((
            Event {
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
            },
            r.get::<_, String>(10)?,
            r.get::<_, String>(11)?,
            r.get::<_, String>(12)?,
        ))
    }))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("PKI database query failed"))
}

/// Verifies the event chain ([`ChainWalker`]), every MAC and the head;
/// returns the events, or names the first bad one as `Integrity`.
pub(crate) fn verify_events<B: Backend>(conn: &Connection, ks: &Keystore<B>) -> Result<Vec<Event>> {
    let broken = |b: Break| Error::integrity(format!("provisioning event log: {b}"));
    // A tag that does not verify under the key (or no key, or a key that
    // may not verify) is a bad MAC; a failing device or database is not.
    let mac_ok = |data: &[u8], tag: &str| match hex::decode(tag) {
        Err(_) => Ok(false),
        Ok(tag) => match ks.verify_mac(EVENT_KEY, data, &tag) {
            Ok(()) => Ok(true),
            Err(e) if e.is(ErrorKind::Backend) || e.is(ErrorKind::Busy) => Err(e),
            Err(_) => Ok(false),
        },
    };
    let rows = events(conn)?;
    let mut walker = ChainWalker::new();
    let mut out = Vec::with_capacity(rows.len());
    for (e, prev_hash, hash, mac) in rows {
        let seq = e.seq;
        let recomputed = walker
            .next(seq, &stored_hash(&prev_hash), &stored_hash(&hash), |prev| {
                event_hash(&e, &hex::encode(prev))
            })
            .map_err(broken)?;
        if !mac_ok(hex::encode(recomputed).as_bytes(), &mac)? {
            return Err(broken(Break::new(seq, Fault::BadMac)));
        }
        out.push(e);
    }
    let head: Option<(i64, String, String)> = opt(conn.query_row(
        "SELECT seq, hash, mac FROM events_head WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    ))?;
    let Some((seq, hash, mac)) = head else {
        return walker.finish(None).map(|()| out).map_err(broken);
    };
    let seq = u64::try_from(seq).unwrap_or(u64::MAX);
    walker
        .finish(Some((seq, &stored_hash(&hash))))
        .map_err(broken)?;
    let last = hex::encode(walker.last_hash());
    if !mac_ok(head_message(seq, &last).as_bytes(), &mac)? {
        return Err(broken(Break::new(seq, Fault::HeadBadMac)));
    }
    Ok(out)
}

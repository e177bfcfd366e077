//! The SQLite metadata store: names → versions → backend handles.
//!
//! Holds no secret material: handles are references, public keys are public.
//! The schema is versioned with `PRAGMA user_version` and upgraded by ordered
//! migrations, so later lifecycle features add tables and columns in new
//! migrations instead of rewriting old ones.

use crate::algorithm::{Algorithm, Usages};
use crate::backend::KeyHandle;
use crate::clock::parse_rfc3339;
use crate::error::{Error, Result};
use crate::fsperm::PermissionReport;
use crate::generation::Generation;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use time::OffsetDateTime;

/// Ordered schema migrations; index + 1 is the `user_version` after applying.
const MIGRATIONS: &[&str] = &[
    // 1: keys, versions with SP 800-57 states, and the store's identity.
    "CREATE TABLE store (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        backend TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        algorithm TEXT NOT NULL,
        usages TEXT NOT NULL,
        backup_eligible INTEGER NOT NULL DEFAULT 0 CHECK (backup_eligible IN (0, 1)),
        cryptoperiod_secs INTEGER,
        created_at TEXT NOT NULL,
        destroyed_at TEXT
    );
    CREATE TABLE key_versions (
        key_id INTEGER NOT NULL REFERENCES keys(id),
        version INTEGER NOT NULL CHECK (version >= 1),
        state TEXT NOT NULL CHECK (state IN
            ('active', 'suspended', 'deactivated', 'compromised', 'destroyed')),
        origin TEXT NOT NULL CHECK (origin IN ('generated', 'imported', 'restored')),
        handle BLOB,
        public_key BLOB,
        fingerprint TEXT,
        created_at TEXT NOT NULL,
        state_changed_at TEXT NOT NULL,
        grace_end TEXT,
        reason TEXT,
        PRIMARY KEY (key_id, version),
        CHECK (state = 'destroyed' OR state = 'compromised' OR handle IS NOT NULL)
    );
    CREATE UNIQUE INDEX key_versions_one_active ON key_versions(key_id) WHERE state = 'active';",
    // 2: lifecycle: audit chain, crash-safety intents, role credentials.
    "ALTER TABLE store ADD COLUMN audit_key BLOB;
    ALTER TABLE store ADD COLUMN decommissioned_at TEXT;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        event TEXT NOT NULL,
        key_name TEXT,
        key_version INTEGER,
        fingerprint TEXT,
        detail TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        mac BLOB NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        mac BLOB NOT NULL
    );
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        op TEXT NOT NULL CHECK (op IN ('destroy', 'revoke')),
        key_id INTEGER NOT NULL REFERENCES keys(id),
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE role_credentials (
        role TEXT PRIMARY KEY,
        iterations INTEGER NOT NULL,
        salt BLOB NOT NULL,
        verifier BLOB NOT NULL,
        set_at TEXT NOT NULL
    );",
    // 3: creations in flight. Reconciliation destroys unreferenced backend
    // objects only while one is pending (a crash between the backend call
    // and the metadata commit); otherwise it reports them and touches nothing.
    "CREATE TABLE pending_creates (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
];

/// The lifecycle state of a key version (NIST SP 800-57).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Makes new signatures and ciphertexts.
    Active,
    /// No use; can be resumed.
    Suspended,
    /// Grace: verify and decrypt only.
    Deactivated,
    /// No use at all; material destroyed.
    Compromised,
    /// Tombstone: metadata and public fingerprint kept, material gone.
    Destroyed,
}

impl KeyState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => KeyState::Active,
            "suspended" => KeyState::Suspended,
            "deactivated" => KeyState::Deactivated,
            "compromised" => KeyState::Compromised,
            "destroyed" => KeyState::Destroyed,
            other => return Err(corrupt(format!("unknown key state '{other}'"))),
        })
    }
}

/// Where a key version's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Generated inside the backend with its RNG.
    Generated,
    /// Imported by the caller (symmetric keys only).
    Imported,
    /// Restored from a wrapped backup.
    Restored,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
            Origin::Restored => "restored",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Origin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "generated" => Origin::Generated,
            "imported" => Origin::Imported,
            "restored" => Origin::Restored,
            other => return Err(corrupt(format!("unknown key origin '{other}'"))),
        })
    }
}

fn corrupt(msg: String) -> Error {
    Error::Integrity(format!("metadata database: {msg}"))
}

/// A key row.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub id: i64,
    pub name: String,
    pub algorithm: Algorithm,
    pub usages: Usages,
    pub backup_eligible: bool,
    pub cryptoperiod_secs: Option<i64>,
    pub created_at: String,
    pub destroyed_at: Option<String>,
}

/// A version row.
#[derive(Debug, Clone)]
pub(crate) struct VersionRow {
    pub version: u32,
    pub state: KeyState,
    pub origin: Origin,
    pub handle: Option<KeyHandle>,
    pub public_key: Option<Vec<u8>>,
    pub fingerprint: Option<String>,
    pub created_at: String,
    pub state_changed_at: String,
    pub grace_end: Option<String>,
    pub reason: Option<String>,
}

impl VersionRow {
    /// The grace end as a time, if any.
    pub fn grace_end_time(&self) -> Option<OffsetDateTime> {
        self.grace_end.as_deref().and_then(parse_rfc3339)
    }
}

/// A new version to insert.
pub(crate) struct NewVersion<'a> {
    pub version: u32,
    pub state: KeyState,
    pub origin: Origin,
    pub handle: &'a KeyHandle,
    pub public_key: Option<&'a [u8]>,
    pub fingerprint: Option<&'a str>,
    pub created_at: &'a str,
}

/// A new key to insert.
pub(crate) struct NewKey<'a> {
    pub name: &'a str,
    pub algorithm: Algorithm,
    pub usages: Usages,
    pub backup_eligible: bool,
    pub cryptoperiod_secs: Option<i64>,
    pub created_at: &'a str,
}

/// A pending destroy or revoke, recorded before the backend acts so that a
/// crash in between is completed at the next open.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub id: i64,
    pub op: String,
    pub key_id: i64,
    pub version: u32,
}

/// The open metadata database.
pub(crate) struct Metadata {
    conn: Connection,
    /// Write transactions begun through this connection (they do not move
    /// `PRAGMA data_version`, which counts other connections' commits).
    writes: u64,
    /// The commit generation shared with other processes.
    generation: Arc<Generation>,
    /// Metadata files found accessible to other users at open (tightened).
    permissions: PermissionReport,
}

/// A write transaction (`BEGIN IMMEDIATE`): it holds the database's write
/// lock from the start, and marks the shared commit generation as in
/// progress until it commits or rolls back (on drop).
pub(crate) struct WriteTx<'a> {
    // Declared first: dropped (rolled back if not committed) before the
    // generation is marked finished.
    tx: Transaction<'a>,
    finish: FinishGeneration<'a>,
}

struct FinishGeneration<'a>(&'a Generation, u64);

impl Drop for FinishGeneration<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl WriteTx<'_> {
    /// Commits, then marks the generation finished.
    pub fn commit(self) -> Result<()> {
        let WriteTx { tx, finish } = self;
        tx.commit()?;
        drop(finish);
        Ok(())
    }
}

const KEY_COLUMNS: &str =
    "id, name, algorithm, usages, backup_eligible, cryptoperiod_secs, created_at, destroyed_at";

/// A key row as stored, before its strings are parsed.
struct RawKey {
    id: i64,
    name: String,
    algorithm: String,
    usages: String,
    backup_eligible: bool,
    cryptoperiod_secs: Option<i64>,
    created_at: String,
    destroyed_at: Option<String>,
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        id: r.get(0)?,
        name: r.get(1)?,
        algorithm: r.get(2)?,
        usages: r.get(3)?,
        backup_eligible: r.get(4)?,
        cryptoperiod_secs: r.get(5)?,
        created_at: r.get(6)?,
        destroyed_at: r.get(7)?,
    })
}

fn to_key_row(raw: RawKey) -> Result<KeyRow> {
    Ok(KeyRow {
        id: raw.id,
        algorithm: raw
            .algorithm
            .parse()
            .map_err(|_| corrupt(format!("unknown algorithm '{}'", raw.algorithm)))?,
        usages: raw
            .usages
            .parse()
            .map_err(|_| corrupt(format!("bad usages '{}'", raw.usages)))?,
        name: raw.name,
        backup_eligible: raw.backup_eligible,
        cryptoperiod_secs: raw.cryptoperiod_secs,
        created_at: raw.created_at,
        destroyed_at: raw.destroyed_at,
    })
}

/// Files beside the database: SQLite's (`-wal`, `-shm`, `-journal`) and
/// this crate's (`-gen`, `-lock`).
pub(crate) const SIDE_FILE_SUFFIXES: &[&str] = &["-wal", "-shm", "-journal", "-gen", "-lock"];

/// The database at `path` and the files beside it.
pub(crate) fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in SIDE_FILE_SUFFIXES {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// Before SQLite opens `path`: tightens (and reports) any of the database's
/// files that other users can reach, and creates a missing database file
/// empty with mode 0600. SQLite gives the `-wal`, `-shm` and `-journal`
/// files it creates the main file's mode, so they are 0600 too.
fn secure_files(path: &Path) -> Result<PermissionReport> {
    let mut report = PermissionReport::new();
    for file in database_files(path) {
        report.check_path(&file);
    }
    if !path.exists() {
        crate::fsperm::open_private_file(path).map_err(|e| {
            Error::backend(
                "metadata",
                format!("cannot create the metadata database {}", path.display()),
                e,
            )
        })?;
    }
    Ok(report)
}

impl Metadata {
    /// Opens (creating if needed) the database at `path` for `backend`, and
    /// applies pending migrations in one transaction.
    pub fn open(path: &Path, backend: &str, now: &str) -> Result<Self> {
        let permissions = secure_files(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )?;
        let mut md = Metadata {
            conn,
            writes: 0,
            generation: Arc::new(Generation::open(path)?),
            permissions,
        };
        md.migrate()?;
        md.bind_backend(backend, now)?;
        Ok(md)
    }

    fn migrate(&mut self) -> Result<()> {
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let target = MIGRATIONS.len() as i64;
        if current > target {
            return Err(Error::Unsupported(format!(
                "metadata schema version {current} is newer than this build understands ({target}); upgrade the software"
            )));
        }
        if current == target {
            return Ok(());
        }
        // Another process may be migrating too: decide again inside the
        // write transaction, which serialises the two.
        let tx = self.tx()?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > target {
            return Err(Error::Unsupported(format!(
                "metadata schema version {current} is newer than this build understands ({target}); upgrade the software"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn bind_backend(&self, backend: &str, now: &str) -> Result<()> {
        let existing: Option<String> = self
            .conn
            .query_row("SELECT backend FROM store WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        match existing {
            Some(b) if b == backend => Ok(()),
            Some(b) => Err(Error::InvalidInput(format!(
                "this metadata database belongs to the '{b}' backend, not '{backend}'"
            ))),
            None => {
                // Two processes may bind a new store at once: the first wins,
                // and the other checks what it wrote.
                self.conn.execute(
                    "INSERT OR IGNORE INTO store (id, backend, created_at) VALUES (1, ?1, ?2)",
                    params![backend, now],
                )?;
                let bound: String =
                    self.conn
                        .query_row("SELECT backend FROM store WHERE id = 1", [], |r| r.get(0))?;
                if bound == backend {
                    Ok(())
                } else {
                    Err(Error::InvalidInput(format!(
                        "this metadata database belongs to the '{bound}' backend, not '{backend}'"
                    )))
                }
            }
        }
    }

    /// Metadata files that were accessible to other users at open, now
    /// tightened (see [`crate::fsperm`]).
    pub fn permission_report(&self) -> &PermissionReport {
        &self.permissions
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A write transaction; see [`WriteTx`].
    pub fn tx(&mut self) -> Result<WriteTx<'_>> {
        self.writes += 1;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let finish = FinishGeneration(&self.generation, self.generation.begin());
        Ok(WriteTx { tx, finish })
    }

    /// The commit generation shared with other processes.
    pub fn generation(&self) -> Arc<Generation> {
        Arc::clone(&self.generation)
    }

    /// Changes whenever any connection (this one or another process's) may
    /// have changed the database: caches keyed on it stay coherent.
    pub fn change_stamp(&self) -> Result<(i64, u64)> {
        let v: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        Ok((v, self.writes))
    }
}

/// The key row for `name`, destroyed or not.
pub(crate) fn key(conn: &Connection, name: &str) -> Result<Option<KeyRow>> {
    let mut st = conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = ?1"))?;
    let row = st.query_row([name], key_row).optional()?;
    row.map(to_key_row).transpose()
}

/// The key row with id `id`.
pub(crate) fn key_by_id(conn: &Connection, id: i64) -> Result<KeyRow> {
    let mut st = conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?;
    to_key_row(st.query_row([id], key_row)?)
}

/// Every key row, by name.
pub(crate) fn keys(conn: &Connection) -> Result<Vec<KeyRow>> {
    let mut st = conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY name"))?;
    let rows = st
        .query_map([], key_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(to_key_row).collect()
}

/// Every version of key `key_id`, oldest first.
pub(crate) fn versions(conn: &Connection, key_id: i64) -> Result<Vec<VersionRow>> {
    let mut st = conn.prepare_cached(
        "SELECT version, state, origin, handle, public_key, fingerprint, created_at,
                state_changed_at, grace_end, reason
         FROM key_versions WHERE key_id = ?1 ORDER BY version",
    )?;
    let rows = st
        .query_map([key_id], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(
            |(version, state, origin, handle, pk, fp, created_at, changed, grace, reason)| {
                Ok(VersionRow {
                    version,
                    state: state.parse()?,
                    origin: origin.parse()?,
                    handle: handle.map(KeyHandle::new),
                    public_key: pk,
                    fingerprint: fp,
                    created_at,
                    state_changed_at: changed,
                    grace_end: grace,
                    reason,
                })
            },
        )
        .collect()
}

/// Every handle that metadata references (versions holding material, and
/// the audit key).
pub(crate) fn referenced_handles(conn: &Connection) -> Result<Vec<KeyHandle>> {
    let mut st = conn.prepare_cached(
        "SELECT handle FROM key_versions WHERE handle IS NOT NULL
         UNION SELECT audit_key FROM store WHERE audit_key IS NOT NULL",
    )?;
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(KeyHandle::new).collect())
}

/// Inserts a key row. A taken name is [`Error::AlreadyExists`].
pub(crate) fn insert_key(conn: &Connection, key: &NewKey<'_>) -> Result<i64> {
    let inserted = conn.execute(
        "INSERT INTO keys (name, algorithm, usages, backup_eligible, cryptoperiod_secs, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.name,
            key.algorithm.id(),
            key.usages.to_string(),
            key.backup_eligible,
            key.cryptoperiod_secs,
            key.created_at
        ],
    );
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Err(Error::AlreadyExists(format!(
                "key '{}' already exists",
                key.name
            )))
        }
        other => {
            other?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// Inserts a version of key `key_id`.
pub(crate) fn insert_version(conn: &Connection, key_id: i64, v: &NewVersion<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO key_versions
           (key_id, version, state, origin, handle, public_key, fingerprint, created_at, state_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            key_id,
            v.version,
            v.state.as_str(),
            v.origin.as_str(),
            v.handle.as_bytes(),
            v.public_key,
            v.fingerprint,
            v.created_at
        ],
    )?;
    Ok(())
}

/// A state change of one version.
pub(crate) struct StateChange<'a> {
    pub state: KeyState,
    pub at: &'a str,
    /// Clear the handle: the material is gone.
    pub drop_handle: bool,
    /// Record a grace end (deactivation).
    pub grace_end: Option<&'a str>,
    /// Record a reason (revocation, missing material).
    pub reason: Option<&'a str>,
}

impl<'a> StateChange<'a> {
    /// A change to `state` at `at` that keeps the handle.
    pub fn to(state: KeyState, at: &'a str) -> Self {
        StateChange {
            state,
            at,
            drop_handle: false,
            grace_end: None,
            reason: None,
        }
    }

    /// A change to `state` whose material is gone.
    pub fn material_gone(state: KeyState, at: &'a str) -> Self {
        StateChange {
            drop_handle: true,
            ..StateChange::to(state, at)
        }
    }
}

/// Applies `change` to one version.
pub(crate) fn set_state(
    conn: &Connection,
    key_id: i64,
    version: u32,
    change: &StateChange<'_>,
) -> Result<()> {
    let n = conn.execute(
        "UPDATE key_versions SET state = ?3, state_changed_at = ?4,
             handle = CASE WHEN ?5 THEN NULL ELSE handle END,
             grace_end = COALESCE(?6, grace_end),
             reason = COALESCE(?7, reason)
         WHERE key_id = ?1 AND version = ?2",
        params![
            key_id,
            version,
            change.state.as_str(),
            change.at,
            change.drop_handle,
            change.grace_end,
            change.reason
        ],
    )?;
    if n != 1 {
        return Err(corrupt(format!(
            "version {version} of key {key_id} vanished"
        )));
    }
    Ok(())
}

/// Marks key `key_id` a tombstone.
pub(crate) fn mark_key_destroyed(conn: &Connection, key_id: i64, now: &str) -> Result<()> {
    conn.execute(
        "UPDATE keys SET destroyed_at = ?2 WHERE id = ?1",
        params![key_id, now],
    )?;
    Ok(())
}

/// Sets a key's cryptoperiod.
pub(crate) fn set_cryptoperiod(conn: &Connection, key_id: i64, secs: Option<i64>) -> Result<()> {
    conn.execute(
        "UPDATE keys SET cryptoperiod_secs = ?2 WHERE id = ?1",
        params![key_id, secs],
    )?;
    Ok(())
}

/// Records a creation about to reach the backend.
pub(crate) fn add_pending_create(conn: &Connection, name: &str, now: &str) -> Result<i64> {
    conn.execute(
        "INSERT INTO pending_creates (name, created_at) VALUES (?1, ?2)",
        params![name, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Clears one pending creation (committed or abandoned).
pub(crate) fn remove_pending_create(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM pending_creates WHERE id = ?1", [id])?;
    Ok(())
}

/// The names of creations that never completed, oldest first.
pub(crate) fn pending_creates(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT name FROM pending_creates ORDER BY id")?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Forgets every pending creation (after reconciliation handled them).
pub(crate) fn clear_pending_creates(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM pending_creates", [])?;
    Ok(())
}

/// Records a pending destroy or revoke.
pub(crate) fn add_intent(
    conn: &Connection,
    op: &str,
    key_id: i64,
    version: u32,
    now: &str,
) -> Result<i64> {
    conn.execute(
        "INSERT INTO intents (op, key_id, version, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![op, key_id, version, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Removes a completed intent.
pub(crate) fn remove_intent(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM intents WHERE id = ?1", [id])?;
    Ok(())
}

/// Every pending intent, oldest first.
pub(crate) fn intents(conn: &Connection) -> Result<Vec<Intent>> {
    let mut st = conn.prepare_cached("SELECT id, op, key_id, version FROM intents ORDER BY id")?;
    let rows = st
        .query_map([], |r| {
            Ok(Intent {
                id: r.get(0)?,
                op: r.get(1)?,
                key_id: r.get(2)?,
                version: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The audit key's handle, if one was created.
pub(crate) fn audit_key(conn: &Connection) -> Result<Option<KeyHandle>> {
    let h: Option<Vec<u8>> =
        conn.query_row("SELECT audit_key FROM store WHERE id = 1", [], |r| r.get(0))?;
    Ok(h.map(KeyHandle::new))
}

/// Records the audit key's handle.
pub(crate) fn set_audit_key(conn: &Connection, handle: Option<&KeyHandle>) -> Result<()> {
    conn.execute(
        "UPDATE store SET audit_key = ?1 WHERE id = 1",
        [handle.map(|h| h.as_bytes())],
    )?;
    Ok(())
}

/// When the store was decommissioned, if it was.
pub(crate) fn decommissioned_at(conn: &Connection) -> Result<Option<String>> {
    Ok(conn.query_row(
        "SELECT decommissioned_at FROM store WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Removes every key and version and marks the store decommissioned. The
/// audit table is kept: its last entry records the decommission.
pub(crate) fn decommission(conn: &Connection, now: &str) -> Result<()> {
    conn.execute_batch("DELETE FROM intents; DELETE FROM key_versions; DELETE FROM keys; DELETE FROM role_credentials;")?;
    conn.execute(
        "UPDATE store SET decommissioned_at = ?1, audit_key = NULL WHERE id = 1",
        [now],
    )?;
    Ok(())
}

/// A stored role credential: a PBKDF2-HMAC-SHA256 verifier.
pub(crate) struct RoleCredential {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub verifier: Vec<u8>,
}

/// The credential stored for `role`, if any.
pub(crate) fn role_credential(conn: &Connection, role: &str) -> Result<Option<RoleCredential>> {
    Ok(conn
        .query_row(
            "SELECT iterations, salt, verifier FROM role_credentials WHERE role = ?1",
            [role],
            |r| {
                Ok(RoleCredential {
                    iterations: r.get(0)?,
                    salt: r.get(1)?,
                    verifier: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Stores a role credential.
pub(crate) fn set_role_credential(
    conn: &Connection,
    role: &str,
    iterations: u32,
    salt: &[u8],
    verifier: &[u8],
    now: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO role_credentials (role, iterations, salt, verifier, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(role) DO UPDATE SET iterations = ?2, salt = ?3, verifier = ?4, set_at = ?5",
        params![role, iterations, salt, verifier, now],
    )?;
    Ok(())
}

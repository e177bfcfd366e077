//! The SQLite metadata store: names → versions → backend handles.
//!
//! Holds no secret material: handles are references, public keys are public.
//! The schema is versioned with `PRAGMA user_version` and upgraded by ordered
//! migrations, so later lifecycle features add tables and columns in new
//! migrations instead of rewriting old ones.

use crate::algorithm::{Algorithm, Usages};
use crate::backend::KeyHandle;
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

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
    fn as_str(self) -> &'static str {
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
    fn as_str(self) -> &'static str {
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
}

/// A new version to insert.
pub(crate) struct NewVersion<'a> {
    pub origin: Origin,
    pub handle: &'a KeyHandle,
    pub public_key: Option<&'a [u8]>,
    pub fingerprint: Option<&'a str>,
}

/// The open metadata database.
pub(crate) struct Metadata {
    conn: Connection,
}

impl Metadata {
    /// Opens (creating if needed) the database at `path` for `backend`, and
    /// applies pending migrations in one transaction.
    pub fn open(path: &Path, backend: &str, now: &str) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )?;
        let mut md = Metadata { conn };
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
        let tx = self.conn.transaction()?;
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
                self.conn.execute(
                    "INSERT INTO store (id, backend, created_at) VALUES (1, ?1, ?2)",
                    params![backend, now],
                )?;
                Ok(())
            }
        }
    }

    /// The key row for `name`, destroyed or not.
    pub fn key(&self, name: &str) -> Result<Option<KeyRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, algorithm, usages, created_at, destroyed_at FROM keys WHERE name = ?1",
        )?;
        let row = st
            .query_row([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()?;
        row.map(Self::key_row).transpose()
    }

    fn key_row(
        (id, name, alg, usages, created_at, destroyed_at): (
            i64,
            String,
            String,
            String,
            String,
            Option<String>,
        ),
    ) -> Result<KeyRow> {
        Ok(KeyRow {
            id,
            name,
            algorithm: alg
                .parse()
                .map_err(|_| corrupt(format!("unknown algorithm '{alg}'")))?,
            usages: usages
                .parse()
                .map_err(|_| corrupt(format!("bad usages '{usages}'")))?,
            created_at,
            destroyed_at,
        })
    }

    /// Every key row, by name.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, algorithm, usages, created_at, destroyed_at FROM keys ORDER BY name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(Self::key_row).collect()
    }

    /// Every version of key `key_id`, oldest first.
    pub fn versions(&self, key_id: i64) -> Result<Vec<VersionRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT version, state, origin, handle, public_key, fingerprint, created_at
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
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(version, state, origin, handle, pk, fp, created_at)| {
                Ok(VersionRow {
                    version,
                    state: state.parse()?,
                    origin: origin.parse()?,
                    handle: handle.map(KeyHandle::new),
                    public_key: pk,
                    fingerprint: fp,
                    created_at,
                })
            })
            .collect()
    }

    /// The active version of key `key_id`, if any.
    pub fn active_version(&self, key_id: i64) -> Result<Option<VersionRow>> {
        Ok(self
            .versions(key_id)?
            .into_iter()
            .find(|v| v.state == KeyState::Active))
    }

    /// Inserts a key with its first version, atomically. A taken name is
    /// [`Error::AlreadyExists`].
    pub fn insert_key(
        &mut self,
        name: &str,
        algorithm: Algorithm,
        usages: Usages,
        first: &NewVersion<'_>,
        now: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO keys (name, algorithm, usages, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, algorithm.id(), usages.to_string(), now],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                return Err(Error::AlreadyExists(format!("key '{name}' already exists")));
            }
            other => {
                other?;
            }
        }
        let key_id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO key_versions
               (key_id, version, state, origin, handle, public_key, fingerprint, created_at, state_changed_at)
             VALUES (?1, 1, 'active', ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                key_id,
                first.origin.as_str(),
                first.handle.as_bytes(),
                first.public_key,
                first.fingerprint,
                now
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks every version of key `key_id` destroyed (handles dropped, public
    /// data kept) and the key a tombstone, atomically.
    pub fn mark_destroyed(&mut self, key_id: i64, now: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE key_versions SET state = 'destroyed', handle = NULL, state_changed_at = ?2
             WHERE key_id = ?1 AND state != 'destroyed'",
            params![key_id, now],
        )?;
        tx.execute(
            "UPDATE keys SET destroyed_at = ?2 WHERE id = ?1",
            params![key_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }
}

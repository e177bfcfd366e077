//! Key and version rows: reading, inserting and changing their state.

use super::corrupt;
use super::states::{KeyState, Origin};
use super::SqlResult;
use crate::algorithm::{Algorithm, Usages};
use crate::backend::KeyHandle;
use crate::clock::parse_rfc3339;
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

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
    /// The most encryptions each version may make (AES-GCM keys), if counted.
    pub encryption_limit: Option<u64>,
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
    /// Encryptions reserved by processes so far (see `metadata::encryptions`).
    pub encryptions_reserved: u64,
}

impl VersionRow {
    /// The grace end as a time, if any.
    pub(crate) fn grace_end_time(&self) -> Option<OffsetDateTime> {
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
    pub encryption_limit: Option<u64>,
}

const KEY_COLUMNS: &str = "id, name, algorithm, usages, backup_eligible, cryptoperiod_secs, \
     created_at, destroyed_at, encryption_limit";

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
    encryption_limit: Option<i64>,
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
        encryption_limit: r.get(8)?,
    })
}

fn to_key_row(raw: RawKey) -> Result<KeyRow> {
    let encryption_limit = raw
        .encryption_limit
        .map(|l| {
            u64::try_from(l)
                .ok()
                .filter(|l| *l >= 1)
                .ok_or_else(|| corrupt(format!("bad encryption limit {l}")))
        })
        .transpose()?;
    Ok(KeyRow {
        encryption_limit,
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

/// The key row for `name`, destroyed or not.
pub(crate) fn key(conn: &Connection, name: &str) -> Result<Option<KeyRow>> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = ?1"))
        .sql()?;
    let row = st.query_row([name], key_row).optional().sql()?;
    row.map(to_key_row).transpose()
}

/// The key row with id `id`.
pub(crate) fn key_by_id(conn: &Connection, id: i64) -> Result<KeyRow> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))
        .sql()?;
    to_key_row(st.query_row([id], key_row).sql()?)
}

/// Every key row, by name.
pub(crate) fn keys(conn: &Connection) -> Result<Vec<KeyRow>> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY name"))
        .sql()?;
    let rows = st
        .query_map([], key_row)
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    rows.into_iter().map(to_key_row).collect()
}

/// Every version of key `key_id`, oldest first.
pub(crate) fn versions(conn: &Connection, key_id: i64) -> Result<Vec<VersionRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT version, state, origin, handle, public_key, fingerprint, created_at,
                state_changed_at, grace_end, reason, encryptions_reserved
         FROM key_versions WHERE key_id = ?1 ORDER BY version",
        )
        .sql()?;
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
                r.get::<_, i64>(10)?,
            ))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    rows.into_iter()
        .map(
            |(version, state, origin, handle, pk, fp, created_at, changed, grace, reason, used)| {
                Ok(VersionRow {
                    encryptions_reserved: u64::try_from(used).map_err(|_| {
                        corrupt(format!("bad encryption count {used} of version {version}"))
                    })?,
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

/// Every handle that metadata references (versions holding material, the
/// audit key and the audit signing keys not yet retired).
pub(crate) fn referenced_handles(conn: &Connection) -> Result<Vec<KeyHandle>> {
    let mut st = conn
        .prepare_cached(
            "SELECT handle FROM key_versions WHERE handle IS NOT NULL
         UNION SELECT audit_key FROM store WHERE audit_key IS NOT NULL
         UNION SELECT handle FROM audit_signers WHERE handle IS NOT NULL",
        )
        .sql()?;
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows.into_iter().map(KeyHandle::new).collect())
}

/// Inserts a key row. A taken name is [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists).
pub(crate) fn insert_key(conn: &Connection, key: &NewKey<'_>) -> Result<i64> {
    let inserted = conn.execute(
        "INSERT INTO keys (name, algorithm, usages, backup_eligible, cryptoperiod_secs, created_at,
                           encryption_limit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.name,
            key.algorithm.id(),
            key.usages.to_string(),
            key.backup_eligible,
            key.cryptoperiod_secs,
            key.created_at,
            key.encryption_limit
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
        ],
    );
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Err(Error::already_exists(format!(
                "key '{}' already exists",
                key.name
            )))
        }
        other => {
            other.sql()?;
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
    ).sql()?;
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
    pub(crate) fn to(state: KeyState, at: &'a str) -> Self {
        StateChange {
            state,
            at,
            drop_handle: false,
            grace_end: None,
            reason: None,
        }
    }

    /// A change to `state` whose material is gone.
    pub(crate) fn material_gone(state: KeyState, at: &'a str) -> Self {
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
    let n = conn
        .execute(
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
        )
        .sql()?;
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
    )
    .sql()?;
    Ok(())
}

/// Sets a key's cryptoperiod.
pub(crate) fn set_cryptoperiod(conn: &Connection, key_id: i64, secs: Option<i64>) -> Result<()> {
    conn.execute(
        "UPDATE keys SET cryptoperiod_secs = ?2 WHERE id = ?1",
        params![key_id, secs],
    )
    .sql()?;
    Ok(())
}

//! Intents and pending creations, recorded before the backend acts.

use super::{corrupt, SqlResult};
use crate::error::{Error, Result};
use rusqlite::{params, Connection};
use std::fmt;
use std::str::FromStr;

/// What an intent will do: recorded before the backend destroys material,
/// so that a crash in between is completed at the next open (and reported
/// in [`ReconcileReport::completed`](crate::ReconcileReport::completed)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Intent {
    /// `revoke`: the version ends `compromised`.
    Revoke,
    /// `destroy` (by destroy or sweep): the version ends `destroyed`.
    Destroy,
}

impl Intent {
    /// The name the metadata stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Revoke => "revoke",
            Intent::Destroy => "destroy",
        }
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Intent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "revoke" => Ok(Intent::Revoke),
            "destroy" => Ok(Intent::Destroy),
            other => Err(corrupt(format!("unknown intent '{other}'"))),
        }
    }
}

/// A pending intent as stored.
#[derive(Debug, Clone)]
pub(crate) struct IntentRow {
    pub id: i64,
    pub op: Intent,
    pub key_id: i64,
    pub version: u32,
}

/// Records a creation about to reach the backend.
pub(crate) fn add_pending_create(conn: &Connection, name: &str, now: &str) -> Result<i64> {
    conn.execute(
        "INSERT INTO pending_creates (name, created_at) VALUES (?1, ?2)",
        params![name, now],
    )
    .sql()?;
    Ok(conn.last_insert_rowid())
}

/// Clears one pending creation (committed or abandoned).
pub(crate) fn remove_pending_create(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM pending_creates WHERE id = ?1", [id])
        .sql()?;
    Ok(())
}

/// The names of creations that never completed, oldest first.
pub(crate) fn pending_creates(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn
        .prepare_cached("SELECT name FROM pending_creates ORDER BY id")
        .sql()?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows)
}

/// Forgets every pending creation (after reconciliation handled them).
pub(crate) fn clear_pending_creates(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM pending_creates", []).sql()?;
    Ok(())
}

/// Records a pending destroy or revoke.
pub(crate) fn add_intent(
    conn: &Connection,
    op: Intent,
    key_id: i64,
    version: u32,
    now: &str,
) -> Result<i64> {
    conn.execute(
        "INSERT INTO intents (op, key_id, version, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![op.as_str(), key_id, version, now],
    )
    .sql()?;
    Ok(conn.last_insert_rowid())
}

/// Removes a completed intent.
pub(crate) fn remove_intent(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM intents WHERE id = ?1", [id])
        .sql()?;
    Ok(())
}

/// Every pending intent, oldest first; an unknown stored operation is
/// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
pub(crate) fn intents(conn: &Connection) -> Result<Vec<IntentRow>> {
    let mut st = conn
        .prepare_cached("SELECT id, op, key_id, version FROM intents ORDER BY id")
        .sql()?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    rows.into_iter()
        .map(|(id, op, key_id, version)| {
            Ok(IntentRow {
                id,
                op: op.parse()?,
                key_id,
                version,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_todays() {
        for (op, name) in [(Intent::Revoke, "revoke"), (Intent::Destroy, "destroy")] {
            assert_eq!(op.as_str(), name);
            assert_eq!(name.parse::<Intent>().unwrap(), op);
        }
        let err = "rotate".parse::<Intent>().unwrap_err();
        assert!(err.is(crate::ErrorKind::Integrity), "{err}");
    }
}

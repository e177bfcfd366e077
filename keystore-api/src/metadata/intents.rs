//! Intents and pending creations, recorded before the backend acts.

use super::SqlResult;
use crate::error::Result;
use rusqlite::{params, Connection};

/// A pending destroy or revoke, recorded before the backend acts so that a
/// crash in between is completed at the next open.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub id: i64,
    pub op: String,
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
    op: &str,
    key_id: i64,
    version: u32,
    now: &str,
) -> Result<i64> {
    conn.execute(
        "INSERT INTO intents (op, key_id, version, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![op, key_id, version, now],
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

/// Every pending intent, oldest first.
pub(crate) fn intents(conn: &Connection) -> Result<Vec<Intent>> {
    let mut st = conn
        .prepare_cached("SELECT id, op, key_id, version FROM intents ORDER BY id")
        .sql()?;
    let rows = st
        .query_map([], |r| {
            Ok(Intent {
                id: r.get(0)?,
                op: r.get(1)?,
                key_id: r.get(2)?,
                version: r.get(3)?,
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows)
}

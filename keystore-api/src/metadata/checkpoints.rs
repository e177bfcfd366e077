//! Rows of the evidence tables: the store id, the audit signing keys, the
//! signed checkpoints and the rollback counter reference.

use super::SqlResult;
use crate::backend::KeyHandle;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// The store's random id (hex), fixed when the store was made or upgraded.
pub(crate) fn store_id(conn: &Connection) -> Result<String> {
    let id: Option<String> = conn
        .query_row("SELECT store_id FROM store WHERE id = 1", [], |r| r.get(0))
        .sql()?;
    match id {
        Some(id) if crate::audit::is_store_id(&id) => Ok(id),
        Some(_) => Err(crate::Error::integrity(
            "metadata database: the store id is not 32 hex digits (it was edited); nothing is \
             signed until the database is restored from a trusted copy",
        )),
        None => Err(crate::Error::integrity(
            "metadata database: the store has no store id",
        )),
    }
}

/// An audit signing key as the store records it.
#[derive(Debug, Clone)]
pub(crate) struct SignerRow {
    pub version: u32,
    /// `None` once retired (the backend object is destroyed).
    pub handle: Option<KeyHandle>,
    pub public_key: Vec<u8>,
    pub created_at: String,
    pub retired_at: Option<String>,
}

/// Every audit signing key, oldest first.
pub(crate) fn signers(conn: &Connection) -> Result<Vec<SignerRow>> {
    let mut st = conn
        .prepare(
            "SELECT version, handle, public_key, created_at, retired_at FROM audit_signers
             ORDER BY version",
        )
        .sql()?;
    let rows = st
        .query_map([], |r| {
            Ok(SignerRow {
                version: r.get(0)?,
                handle: r.get::<_, Option<Vec<u8>>>(1)?.map(KeyHandle::new),
                public_key: r.get(2)?,
                created_at: r.get(3)?,
                retired_at: r.get(4)?,
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows)
}

/// Records a new signing key as `version`.
pub(crate) fn insert_signer(
    conn: &Connection,
    version: u32,
    handle: &KeyHandle,
    public_key: &[u8],
    now: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit_signers (version, handle, public_key, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![version, handle.as_bytes(), public_key, now],
    )
    .sql()?;
    Ok(())
}

/// Marks signing key `version` retired and forgets its handle.
pub(crate) fn retire_signer(conn: &Connection, version: u32, now: &str) -> Result<()> {
    conn.execute(
        "UPDATE audit_signers SET handle = NULL, retired_at = ?2 WHERE version = ?1",
        params![version, now],
    )
    .sql()?;
    Ok(())
}

/// A checkpoint as stored.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointRow {
    pub id: u64,
    pub audit_seq: u64,
    pub head_hash: Vec<u8>,
    pub at: String,
    pub reason: String,
    pub signer: u32,
    pub handover: Option<u32>,
    pub counter: Option<String>,
    pub counter_value: Option<u64>,
    pub signature: Vec<u8>,
}

const CHECKPOINT_COLUMNS: &str =
    "id, audit_seq, head_hash, at, reason, signer, handover, counter, counter_value, signature";

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        id: r.get(0)?,
        audit_seq: r.get(1)?,
        head_hash: r.get(2)?,
        at: r.get(3)?,
        reason: r.get(4)?,
        signer: r.get(5)?,
        handover: r.get(6)?,
        counter: r.get(7)?,
        counter_value: r.get(8)?,
        signature: r.get(9)?,
    })
}

/// Every checkpoint, oldest first.
pub(crate) fn checkpoints(conn: &Connection) -> Result<Vec<CheckpointRow>> {
    let mut st = conn
        .prepare(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id"
        ))
        .sql()?;
    let rows = st
        .query_map([], checkpoint_row)
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows)
}

/// The newest checkpoint, if any.
pub(crate) fn last_checkpoint(conn: &Connection) -> Result<Option<CheckpointRow>> {
    conn.query_row(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"),
        [],
        checkpoint_row,
    )
    .optional()
    .sql()
}

/// Appends a checkpoint (its id must be the next one).
pub(crate) fn insert_checkpoint(conn: &Connection, c: &CheckpointRow) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            c.id,
            c.audit_seq,
            c.head_hash,
            c.at,
            c.reason,
            c.signer,
            c.handover,
            c.counter,
            c.counter_value,
            c.signature
        ],
    )
    .sql()?;
    Ok(())
}

/// The monotonic counter the store's checkpoints are bound to, if any.
pub(crate) fn rollback_counter(conn: &Connection) -> Result<Option<Vec<u8>>> {
    conn.query_row("SELECT rollback_counter FROM store WHERE id = 1", [], |r| {
        r.get(0)
    })
    .sql()
}

/// Records (or clears) the counter reference.
pub(crate) fn set_rollback_counter(conn: &Connection, counter: Option<&[u8]>) -> Result<()> {
    conn.execute(
        "UPDATE store SET rollback_counter = ?1 WHERE id = 1",
        [counter],
    )
    .sql()?;
    Ok(())
}

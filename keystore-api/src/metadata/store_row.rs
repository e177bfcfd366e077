//! The store row: the audit key, decommissioning and role credentials.

use super::SqlResult;
use crate::backend::KeyHandle;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// The audit key's handle, if one was created.
pub(crate) fn audit_key(conn: &Connection) -> Result<Option<KeyHandle>> {
    let h: Option<Vec<u8>> = conn
        .query_row("SELECT audit_key FROM store WHERE id = 1", [], |r| r.get(0))
        .sql()?;
    Ok(h.map(KeyHandle::new))
}

/// Records the audit key's handle.
pub(crate) fn set_audit_key(conn: &Connection, handle: Option<&KeyHandle>) -> Result<()> {
    conn.execute(
        "UPDATE store SET audit_key = ?1 WHERE id = 1",
        [handle.map(|h| h.as_bytes())],
    )
    .sql()?;
    Ok(())
}

/// When the store was decommissioned, if it was.
pub(crate) fn decommissioned_at(conn: &Connection) -> Result<Option<String>> {
    conn.query_row(
        "SELECT decommissioned_at FROM store WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .sql()
}

/// Removes every key and version and marks the store decommissioned. The
/// audit table is kept: its last entry records the decommission.
pub(crate) fn decommission(conn: &Connection, now: &str) -> Result<()> {
    conn.execute_batch("DELETE FROM intents; DELETE FROM key_versions; DELETE FROM keys; DELETE FROM role_credentials;").sql()?;
    conn.execute(
        "UPDATE store SET decommissioned_at = ?1, audit_key = NULL, rollback_counter = NULL
         WHERE id = 1",
        [now],
    )
    .sql()?;
    conn.execute(
        "UPDATE audit_signers SET handle = NULL, retired_at = coalesce(retired_at, ?1)",
        [now],
    )
    .sql()?;
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
    conn.query_row(
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
    .optional()
    .sql()
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
    ).sql()?;
    Ok(())
}

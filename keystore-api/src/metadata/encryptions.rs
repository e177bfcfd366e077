//! The shared encryption count of AES-GCM key versions
//! (`key_versions.encryptions_reserved`): reserving blocks of it, and giving
//! back what a closing process will not use.
//!
//! The count only grows by reservations that fit under the key's limit, each
//! a read and a raise inside one write transaction, so every process's
//! reservations together never pass the limit. A process counts its block
//! down in memory (`keystore::encryption_limit`); what it reserved and had
//! not used when it died stays counted: lost, never re-issued.

use super::{corrupt, SqlResult};
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// What a reservation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// This many encryptions (at least one) are the caller's to make.
    Granted(u64),
    /// None left: the version has reserved its whole limit.
    Exhausted,
    /// The version no longer exists.
    Missing,
}

/// The encryptions reserved so far by version `version` of key `key_id`, if
/// it exists.
pub(crate) fn reserved(conn: &Connection, key_id: i64, version: u32) -> Result<Option<u64>> {
    let n: Option<i64> = conn
        .prepare_cached(
            "SELECT encryptions_reserved FROM key_versions WHERE key_id = ?1 AND version = ?2",
        )
        .sql()?
        .query_row(params![key_id, version], |r| r.get(0))
        .optional()
        .sql()?;
    n.map(|n| u64::try_from(n).map_err(|_| corrupt(format!("bad encryption count {n}"))))
        .transpose()
}

/// Reserves up to `block` encryptions of version `version` of key `key_id`
/// under `limit`: `block`, or what remains when that is less. Call inside a
/// write transaction, which makes the read and the raise one step for every
/// process.
pub(crate) fn reserve(
    conn: &Connection,
    key_id: i64,
    version: u32,
    block: u64,
    limit: u64,
) -> Result<Reservation> {
    let Some(now) = reserved(conn, key_id, version)? else {
        return Ok(Reservation::Missing);
    };
    let n = block.max(1).min(limit.saturating_sub(now));
    if n == 0 {
        return Ok(Reservation::Exhausted);
    }
    conn.prepare_cached(
        "UPDATE key_versions SET encryptions_reserved = ?3 WHERE key_id = ?1 AND version = ?2",
    )
    .sql()?
    .execute(params![key_id, version, to_i64(now + n)])
    .sql()?;
    Ok(Reservation::Granted(n))
}

/// Gives back `n` reserved encryptions that this process will never make
/// (it is closing the store). Inside a write transaction.
pub(crate) fn give_back(conn: &Connection, key_id: i64, version: u32, n: u64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE key_versions SET encryptions_reserved = encryptions_reserved - ?3
         WHERE key_id = ?1 AND version = ?2 AND encryptions_reserved >= ?3",
    )
    .sql()?
    .execute(params![key_id, version, to_i64(n)])
    .sql()?;
    Ok(())
}

/// Records that version `version` of key `key_id` has already reserved
/// `n` encryptions (a restored version keeps its count).
pub(crate) fn set_reserved(conn: &Connection, key_id: i64, version: u32, n: u64) -> Result<()> {
    conn.execute(
        "UPDATE key_versions SET encryptions_reserved = ?3 WHERE key_id = ?1 AND version = ?2",
        params![key_id, version, to_i64(n)],
    )
    .sql()?;
    Ok(())
}

/// Counts stay far below `i64::MAX` (limits are at most 2^32); saturate
/// rather than wrap if one ever did not.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

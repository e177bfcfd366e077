//! The tamper-evident audit trail (REQ-KEY-AUD-01).
//!
//! Every lifecycle event is appended with a random id, an RFC 3339 UTC time,
//! the actor and role, the key name and version, the public fingerprint and a
//! detail line. Entries form a hash chain
//! (`hash = SHA-256(canonical entry ‖ previous hash)`), and each hash is MAC'd
//! with HMAC-SHA256 under a non-extractable audit key held in the backend. A
//! head row (last sequence number and hash, MAC'd too) makes truncation
//! visible. Verification names the first bad entry.
//!
//! Verification never claims what it did not check ([`AuditReport::checked`]):
//! - A live store verifies chain, MACs and head. If its audit-key reference
//!   is missing, or points at anything but the key that MAC'd the trail (a
//!   key of the store, an object the backend does not hold, another HMAC
//!   key), verification fails with [`ErrorKind::Integrity`] or names entry #1:
//!   a removed reference cannot downgrade it to a chain-only check.
//! - After decommission the audit key is destroyed with everything else, so
//!   only the chain and head hash can be checked, and the report says so
//!   ([`AuditCoverage::ChainOnly`]): anyone who can write the database could
//!   have rewritten entries and recomputed the chain. The trail exported by
//!   `decommission` (kept off the device) is the evidence then. A store that
//!   claims to be decommissioned but still holds keys or backend objects is
//!   a live store with its reference removed: [`ErrorKind::Integrity`].
//!
//! Limits: rolling back the whole database file to an earlier copy is not
//! detectable from inside it; export the trail to an external sink
//! ([`crate::Keystore::export_audit`]) to anchor it.

use crate::backend::{Backend, KeyHandle};
use crate::error::{Component, Error, ErrorKind, Result};
use crate::metadata as md;
use crate::metadata::SqlResult;
use crate::secret::ct_eq;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const HASH_DOMAIN: &[u8] = b"keystore-audit-entry-v1";
const MAC_DOMAIN: &[u8] = b"keystore-audit-mac-v1";
const HEAD_DOMAIN: &[u8] = b"keystore-audit-head-v1";

/// One audit entry, as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Random 128-bit id, hex.
    pub id: String,
    /// RFC 3339 UTC time.
    pub at: String,
    /// Who acted.
    pub actor: String,
    /// In which role.
    pub role: String,
    /// What happened (`generate`, `import`, `rotate`, `state`, `sweep`,
    /// `destroy`, `backup`, `restore`, `wipe`, `decommission`, `refused`, …).
    pub event: String,
    /// The key concerned, if any.
    pub key_name: Option<String>,
    /// The key version concerned, if any.
    pub key_version: Option<u32>,
    /// The version's public fingerprint, if it has one.
    pub fingerprint: Option<String>,
    /// Free-form detail (never secret).
    pub detail: String,
    /// Hash of the previous entry, hex (zeros for the first).
    pub prev_hash: String,
    /// This entry's chain hash, hex.
    pub hash: String,
    /// HMAC-SHA256 of the hash under the audit key, hex.
    pub mac: String,
}

/// An event about to be appended.
#[derive(Debug, Clone, Default)]
pub(crate) struct Event {
    pub actor: String,
    pub role: String,
    pub event: String,
    pub key_name: Option<String>,
    pub key_version: Option<u32>,
    pub fingerprint: Option<String>,
    pub detail: String,
}

/// What a verification of the trail checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCoverage {
    /// The hash chain, every entry's MAC and the head's MAC, under the
    /// store's audit key.
    ChainAndMacs,
    /// The hash chain and the head hash only, **no MAC**: the audit key was
    /// destroyed when the store was decommissioned (at `decommissioned_at`).
    /// Anyone able to write the database could have edited entries and
    /// recomputed the chain; the trail exported at decommission is the
    /// evidence.
    ChainOnly {
        /// When the store was decommissioned (RFC 3339 UTC, as recorded).
        decommissioned_at: String,
    },
}

/// The result of verifying the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries read.
    pub entries: u64,
    /// The first entry that fails verification, and why. `None` means that
    /// everything in [`AuditReport::checked`] verifies.
    pub first_bad: Option<(u64, String)>,
    /// What was checked: with [`AuditCoverage::ChainOnly`] no MAC was.
    pub checked: AuditCoverage,
    /// Keys (not destroyed) that hold both `mac` and `derive` usages. New
    /// keys cannot ([`crate::Usages::MAC_AND_DERIVE_REASON`]); keys created
    /// before the rule keep working, and each is a warning here.
    pub keys_with_mac_and_derive: Vec<String>,
}

impl AuditReport {
    /// True if nothing failed **and** the MACs were checked: the trail is
    /// intact as far as the keystore can tell. False for a chain-only check
    /// (see [`AuditReport::chain_intact`]).
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none() && self.macs_checked()
    }

    /// True if nothing that was checked failed, MACs checked or not.
    pub fn chain_intact(&self) -> bool {
        self.first_bad.is_none()
    }

    /// True if every entry's MAC and the head's MAC were checked.
    pub fn macs_checked(&self) -> bool {
        self.checked == AuditCoverage::ChainAndMacs
    }

    /// One line per warning (not failures): a chain-only check, and each
    /// key holding both `mac` and `derive`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let AuditCoverage::ChainOnly { decommissioned_at } = &self.checked {
            out.push(format!(
                "MACs NOT checked: the audit key was destroyed at decommission ({decommissioned_at}); \
                 only the hash chain was verified, which anyone able to write the database can recompute; \
                 rely on the trail exported at decommission"
            ));
        }
        for name in &self.keys_with_mac_and_derive {
            out.push(format!(
                "key '{name}' holds both mac and derive usages, which new keys cannot: {}; \
                 create separate mac and derive keys and retire it",
                crate::Usages::MAC_AND_DERIVE_REASON
            ));
        }
        out
    }
}

fn field(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn chain_hash(seq: u64, id: &str, at: &str, e: &Event, prev: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(seq.to_be_bytes());
    for f in [
        Some(id.as_bytes()),
        Some(at.as_bytes()),
        Some(e.actor.as_bytes()),
        Some(e.role.as_bytes()),
        Some(e.event.as_bytes()),
        e.key_name.as_deref().map(str::as_bytes),
    ] {
        field(&mut h, f);
    }
    let version = e.key_version.map(|v| v.to_be_bytes());
    field(&mut h, version.as_ref().map(|v| &v[..]));
    field(&mut h, e.fingerprint.as_deref().map(str::as_bytes));
    field(&mut h, Some(e.detail.as_bytes()));
    field(&mut h, Some(prev));
    h.finalize().into()
}

fn mac<B: Backend>(
    backend: &B,
    key: &KeyHandle,
    domain: &[u8],
    data: &[&[u8]],
) -> Result<[u8; 32]> {
    let mut msg = domain.to_vec();
    for d in data {
        msg.extend_from_slice(d);
    }
    Ok(*backend.hmac_sha256(key, &msg)?)
}

/// The head row: the last sequence number and hash, MAC'd.
struct Head {
    seq: u64,
    hash: Vec<u8>,
    mac: Vec<u8>,
}

fn head(conn: &Connection) -> Result<Option<Head>> {
    conn.query_row(
        "SELECT seq, hash, mac FROM audit_head WHERE id = 1",
        [],
        |r| {
            Ok(Head {
                seq: r.get(0)?,
                hash: r.get(1)?,
                mac: r.get(2)?,
            })
        },
    )
    .optional()
    .sql()
}

/// Appends `e` at time `at`, MAC'd under `key`, inside the caller's transaction.
pub(crate) fn append<B: Backend>(
    conn: &Connection,
    backend: &B,
    key: &KeyHandle,
    at: &str,
    e: &Event,
) -> Result<()> {
    let (seq, prev) = match head(conn)? {
        Some(h) => (h.seq + 1, h.hash),
        None => (1, vec![0u8; 32]),
    };
    let mut idb = [0u8; 16];
    getrandom::getrandom(&mut idb)
        .map_err(|_| Error::backend_msg(Component::Keystore, "the OS random generator failed"))?;
    let id = hex::encode(idb);
    let hash = chain_hash(seq, &id, at, e, &prev);
    let entry_mac = mac(backend, key, MAC_DOMAIN, &[&hash])?;
    let head_mac = mac(backend, key, HEAD_DOMAIN, &[&seq.to_be_bytes(), &hash])?;
    conn.execute(
        "INSERT INTO audit (seq, id, at, actor, role, event, key_name, key_version, fingerprint,
                            detail, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            seq,
            id,
            at,
            e.actor,
            e.role,
            e.event,
            e.key_name,
            e.key_version,
            e.fingerprint,
            e.detail,
            prev,
            &hash[..],
            &entry_mac[..]
        ],
    )
    .sql()?;
    conn.execute(
        "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3",
        params![seq, &hash[..], &head_mac[..]],
    )
    .sql()?;
    Ok(())
}

/// True once the trail has an entry or a head (so it had an audit key).
pub(crate) fn trail_started(conn: &Connection) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM audit) + (SELECT COUNT(*) FROM audit_head)",
            [],
            |r| r.get(0),
        )
        .sql()?;
    Ok(n > 0)
}

/// Every entry, in sequence order.
pub(crate) fn entries(conn: &Connection) -> Result<Vec<AuditEntry>> {
    let mut st = conn
        .prepare(
            "SELECT seq, id, at, actor, role, event, key_name, key_version, fingerprint, detail,
                prev_hash, hash, mac FROM audit ORDER BY seq",
        )
        .sql()?;
    let rows = st
        .query_map([], |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                id: r.get(1)?,
                at: r.get(2)?,
                actor: r.get(3)?,
                role: r.get(4)?,
                event: r.get(5)?,
                key_name: r.get(6)?,
                key_version: r.get(7)?,
                fingerprint: r.get(8)?,
                detail: r.get(9)?,
                prev_hash: hex::encode(r.get::<_, Vec<u8>>(10)?),
                hash: hex::encode(r.get::<_, Vec<u8>>(11)?),
                mac: hex::encode(r.get::<_, Vec<u8>>(12)?),
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    Ok(rows)
}

/// Verifies the store's trail: decides from the store's state what can be
/// checked (see the module documentation), then checks it. Reference
/// problems that make the MAC check impossible on a store that should have
/// one are [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
pub(crate) fn verify_store<B: Backend>(conn: &Connection, backend: &B) -> Result<AuditReport> {
    let key = md::audit_key(conn)?;
    let decommissioned = md::decommissioned_at(conn)?;
    let mut report = match (key, decommissioned) {
        (Some(key), _) => {
            check_reference(conn, &key)?;
            verify(conn, backend, Some(&key))?
        }
        (None, None) => {
            return Err(Error::integrity(
                "the audit key reference is missing from a live store (it is not decommissioned): \
                 the MACs of the trail cannot be checked, so the trail is not verified; the \
                 metadata database was altered, restore it from a trusted copy",
            ))
        }
        (None, Some(at)) => {
            let keys: i64 = conn
                .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
                .sql()?;
            if keys > 0 {
                return Err(Error::integrity(format!(
                    "the store is marked decommissioned at {at} but still holds {keys} key(s): \
                     this is a live store whose audit key reference was removed; the trail is not verified"
                )));
            }
            let objects = backend.list()?.len();
            if objects > 0 {
                return Err(Error::integrity(format!(
                    "the store is marked decommissioned at {at} but the {} backend still holds {objects} \
                     object(s): this is a live store whose audit key reference was removed; the trail \
                     is not verified",
                    backend.name()
                )));
            }
            let mut r = verify(conn, backend, None)?;
            r.checked = AuditCoverage::ChainOnly {
                decommissioned_at: at,
            };
            r
        }
    };
    report.keys_with_mac_and_derive = md::keys(conn)?
        .into_iter()
        .filter(|k| k.destroyed_at.is_none() && k.usages.has_mac_and_derive())
        .map(|k| k.name)
        .collect();
    Ok(report)
}

/// The audit key reference must not point at one of the store's own keys
/// (a replaced reference; such a key would also MAC application data).
fn check_reference(conn: &Connection, key: &KeyHandle) -> Result<()> {
    let owner: Option<(String, u32)> = conn
        .query_row(
            "SELECT k.name, v.version FROM key_versions v JOIN keys k ON k.id = v.key_id
             WHERE v.handle = ?1 LIMIT 1",
            [key.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .sql()?;
    match owner {
        None => Ok(()),
        Some((name, version)) => Err(Error::integrity(format!(
            "the audit key reference was replaced: it points at key '{name}' version {version}, \
             not at the store's audit key; the trail is not verified"
        ))),
    }
}

/// Verifies chain, MACs and head. With `key` absent (after decommission)
/// only the chain and head hash are checked; the caller records that in
/// [`AuditReport::checked`].
fn verify<B: Backend>(
    conn: &Connection,
    backend: &B,
    key: Option<&KeyHandle>,
) -> Result<AuditReport> {
    let all = entries(conn)?;
    let bad = |seq: u64, why: String| AuditReport {
        entries: all.len() as u64,
        first_bad: Some((seq, why)),
        checked: AuditCoverage::ChainAndMacs,
        keys_with_mac_and_derive: Vec::new(),
    };
    // A reference to an object the backend does not hold was replaced or
    // its object removed: never a reason to skip the MACs.
    let mac = |key: &KeyHandle, domain: &[u8], data: &[&[u8]]| {
        mac(backend, key, domain, data).map_err(|e| {
            if e.is(ErrorKind::NotFound) {
                Error::integrity(format!(
                    "the audit key the store references is not in the {} backend (the reference \
                     was replaced or the key removed); the trail is not verified",
                    backend.name()
                ))
            } else {
                e
            }
        })
    };
    let mut prev = vec![0u8; 32];
    let mut expected = 1u64;
    for e in &all {
        if e.seq != expected {
            return Ok(bad(
                expected,
                format!("entry #{expected} is missing (deleted)"),
            ));
        }
        let (Ok(prev_hash), Ok(hash), Ok(stored_mac)) = (
            hex::decode(&e.prev_hash),
            hex::decode(&e.hash),
            hex::decode(&e.mac),
        ) else {
            return Ok(bad(e.seq, "entry is malformed".into()));
        };
        if prev_hash != prev {
            return Ok(bad(
                e.seq,
                format!(
                    "entry #{} does not follow entry #{} (deleted or reordered)",
                    e.seq,
                    e.seq - 1
                ),
            ));
        }
        let ev = Event {
            actor: e.actor.clone(),
            role: e.role.clone(),
            event: e.event.clone(),
            key_name: e.key_name.clone(),
            key_version: e.key_version,
            fingerprint: e.fingerprint.clone(),
            detail: e.detail.clone(),
        };
        let recomputed = chain_hash(e.seq, &e.id, &e.at, &ev, &prev_hash);
        if recomputed[..] != hash[..] {
            return Ok(bad(
                e.seq,
                format!("entry #{} was edited (hash mismatch)", e.seq),
            ));
        }
        if let Some(k) = key {
            let m = mac(k, MAC_DOMAIN, &[&hash])?;
            if !ct_eq(&m, &stored_mac) {
                let why = if e.seq == 1 {
                    "entry #1 has a bad MAC (forged, or the store's audit key reference was \
                     replaced: entry #1 is the first the audit key ever MAC'd)"
                        .to_string()
                } else {
                    format!("entry #{} has a bad MAC (forged)", e.seq)
                };
                return Ok(bad(e.seq, why));
            }
        }
        prev = hash;
        expected += 1;
    }
    let last = expected - 1;
    match head(conn)? {
        None if last == 0 => {}
        None => return Ok(bad(last, "the audit head is missing".into())),
        Some(Head {
            seq,
            hash,
            mac: head_mac,
        }) => {
            if seq > last {
                return Ok(bad(
                    last + 1,
                    format!(
                        "entries #{}..#{seq} are missing (the log was truncated)",
                        last + 1
                    ),
                ));
            }
            if seq < last || hash != prev {
                return Ok(bad(
                    seq + 1,
                    format!("entries after #{seq} were not appended through the keystore"),
                ));
            }
            if let Some(k) = key {
                let m = mac(k, HEAD_DOMAIN, &[&seq.to_be_bytes(), &hash])?;
                if !ct_eq(&m, &head_mac) {
                    return Ok(bad(seq, "the audit head has a bad MAC (forged)".into()));
                }
            }
        }
    }
    Ok(AuditReport {
        entries: all.len() as u64,
        first_bad: None,
        checked: AuditCoverage::ChainAndMacs,
        keys_with_mac_and_derive: Vec::new(),
    })
}

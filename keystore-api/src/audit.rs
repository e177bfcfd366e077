//! The tamper-evident audit trail (REQ-KEY-AUD-01).
//!
//! Every lifecycle event is appended with a random id, an RFC 3339 UTC time,
//! the actor and role, the key name and version, the public fingerprint and a
//! detail line; the event is an [`AuditEvent`], the keystore's own or an
//! application's. Entries form a hash chain ([`chain`], the one chain of the
//! workspace: `hash = SHA-256(domain ‖ seq ‖ framed fields ‖ previous hash)`),
//! and each hash is MAC'd with HMAC-SHA256 under a non-extractable audit key
//! held in the backend. A head row (last sequence number and hash, MAC'd too)
//! makes truncation visible. Verification names the first bad entry.
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
use crate::Algorithm;
use crate::BackendKey;
use chain::{Break, ChainHasher, ChainWalker, Fault, GENESIS};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod chain;
mod checkpoint;
mod erasure;
mod event;
mod export;

pub(crate) use checkpoint::is_store_id;
pub use checkpoint::{
    public_keys_from_pem, AuditSigner, Checkpoint, CheckpointReason, CHECKPOINT_DOMAIN,
};
pub use erasure::{ErasedKey, ErasedVersion, ErasureCertificate, ErasureStatement, ERASURE_DOMAIN};
pub use event::{ApplicationEvent, AuditEvent, MAX_APPLICATION_EVENT_LEN};
pub use export::{AuditExport, ExportedStore, OfflineReport};

const HASH_DOMAIN: &[u8] = b"keystore-audit-entry-v1";
const MAC_DOMAIN: &[u8] = b"keystore-audit-mac-v1";
const HEAD_DOMAIN: &[u8] = b"keystore-audit-head-v1";

/// One audit entry, as exported. The JSON form (`keyctl audit export`) keeps
/// the stored strings: `at` in RFC 3339 UTC, `event` by its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Random 128-bit id, hex.
    pub id: String,
    /// When (UTC, whole seconds).
    #[serde(with = "rfc3339_text")]
    pub at: OffsetDateTime,
    /// Who acted.
    pub actor: String,
    /// In which role.
    pub role: String,
    /// What happened.
    pub event: AuditEvent,
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

/// `at` as the RFC 3339 text the trail stores.
pub(crate) mod rfc3339_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::rfc3339(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        crate::clock::parse_rfc3339(&s)
            .ok_or_else(|| D::Error::custom(format!("'{s}' is not an RFC 3339 time")))
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub actor: String,
    pub role: String,
    pub event: AuditEvent,
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
#[non_exhaustive]
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

/// An entry as the trail stores it: the text and bytes its hash covers.
struct Stored {
    seq: u64,
    id: String,
    at: String,
    actor: String,
    role: String,
    event: String,
    key_name: Option<String>,
    key_version: Option<u32>,
    fingerprint: Option<String>,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    mac: Vec<u8>,
}

impl Stored {
    /// The entry's chain hash after `prev` (the format every existing trail
    /// was written in: the fields in this order, the version as 4 bytes
    /// big-endian, the previous hash as its 32 bytes).
    fn chain_hash(&self, prev: &[u8]) -> [u8; 32] {
        let version = self.key_version.map(u32::to_be_bytes);
        let mut h = ChainHasher::new(HASH_DOMAIN, self.seq);
        h.text(Some(&self.id))
            .text(Some(&self.at))
            .text(Some(&self.actor))
            .text(Some(&self.role))
            .text(Some(&self.event))
            .text(self.key_name.as_deref())
            .field(version.as_ref().map(|v| &v[..]))
            .text(self.fingerprint.as_deref())
            .text(Some(&self.detail))
            .field(Some(prev));
        h.finish()
    }

    /// The typed entry; a stored time or event name that does not parse is
    /// damage ([`ErrorKind::Integrity`]).
    fn into_entry(self) -> Result<AuditEntry> {
        let seq = self.seq;
        let at = crate::clock::parse_rfc3339(&self.at).ok_or_else(|| {
            Error::integrity(format!("audit entry #{seq} holds a malformed time"))
        })?;
        let event = self.event.parse().map_err(|_| {
            Error::integrity(format!("audit entry #{seq} holds a malformed event name"))
        })?;
        Ok(AuditEntry {
            seq,
            id: self.id,
            at,
            actor: self.actor,
            role: self.role,
            event,
            key_name: self.key_name,
            key_version: self.key_version,
            fingerprint: self.fingerprint,
            detail: self.detail,
            prev_hash: hex::encode(self.prev_hash),
            hash: hex::encode(self.hash),
            mac: hex::encode(self.mac),
        })
    }
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
    let key = BackendKey::new(key.clone(), Algorithm::HmacSha256);
    Ok(*backend.hmac_sha256(&key, &msg)?)
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

/// The chain hash of an exported entry after `prev`, computed from its
/// exported fields exactly as the store computed it (for offline checks).
pub(crate) fn exported_chain_hash(e: &AuditEntry, prev: &[u8]) -> [u8; 32] {
    let row = Stored {
        seq: e.seq,
        id: e.id.clone(),
        at: crate::clock::rfc3339(e.at),
        actor: e.actor.clone(),
        role: e.role.clone(),
        event: e.event.as_str().to_string(),
        key_name: e.key_name.clone(),
        key_version: e.key_version,
        fingerprint: e.fingerprint.clone(),
        detail: e.detail.clone(),
        prev_hash: Vec::new(),
        hash: Vec::new(),
        mac: Vec::new(),
    };
    row.chain_hash(prev)
}

/// The audit head: the last sequence number and hash (`0` and [`GENESIS`]
/// for an empty trail), as the head row records it.
pub(crate) fn head_position(conn: &Connection) -> Result<(u64, Vec<u8>)> {
    Ok(match head(conn)? {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS.to_vec()),
    })
}

/// The stored hash of entry `seq`, if the trail holds it.
pub(crate) fn entry_hash(conn: &Connection, seq: u64) -> Result<Option<Vec<u8>>> {
    conn.query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
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
        None => (1, GENESIS.to_vec()),
    };
    let mut idb = [0u8; 16];
    getrandom::getrandom(&mut idb)
        .map_err(|_| Error::backend_msg(Component::Keystore, "the OS random generator failed"))?;
    let mut row = Stored {
        seq,
        id: hex::encode(idb),
        at: at.to_string(),
        actor: e.actor.clone(),
        role: e.role.clone(),
        event: e.event.as_str().to_string(),
        key_name: e.key_name.clone(),
        key_version: e.key_version,
        fingerprint: e.fingerprint.clone(),
        detail: e.detail.clone(),
        prev_hash: prev,
        hash: Vec::new(),
        mac: Vec::new(),
    };
    let hash = row.chain_hash(&row.prev_hash);
    let entry_mac = mac(backend, key, MAC_DOMAIN, &[&hash])?;
    let head_mac = mac(backend, key, HEAD_DOMAIN, &[&seq.to_be_bytes(), &hash])?;
    (row.hash, row.mac) = (hash.to_vec(), entry_mac.to_vec());
    conn.execute(
        "INSERT INTO audit (seq, id, at, actor, role, event, key_name, key_version, fingerprint,
                            detail, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            row.seq,
            row.id,
            row.at,
            row.actor,
            row.role,
            row.event,
            row.key_name,
            row.key_version,
            row.fingerprint,
            row.detail,
            row.prev_hash,
            row.hash,
            row.mac
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
///
/// # Errors
/// [`ErrorKind::Integrity`] when an entry's stored time or event name does
/// not parse; [`ErrorKind::Backend`] when the database fails.
pub(crate) fn entries(conn: &Connection) -> Result<Vec<AuditEntry>> {
    stored(conn)?.into_iter().map(Stored::into_entry).collect()
}

/// Every entry as stored, in sequence order.
fn stored(conn: &Connection) -> Result<Vec<Stored>> {
    let mut st = conn
        .prepare(
            "SELECT seq, id, at, actor, role, event, key_name, key_version, fingerprint, detail,
                prev_hash, hash, mac FROM audit ORDER BY seq",
        )
        .sql()?;
    let rows = st
        .query_map([], |r| {
            Ok(Stored {
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
                prev_hash: r.get(10)?,
                hash: r.get(11)?,
                mac: r.get(12)?,
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
    if report.first_bad.is_none() {
        report.first_bad = checkpoint::first_unmatched(conn)?;
    }
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
    let all = stored(conn)?;
    let report = |first_bad: Option<Break>| AuditReport {
        entries: all.len() as u64,
        first_bad: first_bad.map(describe),
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
    let mut walker = ChainWalker::new();
    for e in &all {
        let hash = match walker.next(e.seq, &e.prev_hash, &e.hash, |prev| e.chain_hash(prev)) {
            Ok(hash) => hash,
            Err(b) => return Ok(report(Some(b))),
        };
        if let Some(k) = key {
            if !ct_eq(&mac(k, MAC_DOMAIN, &[&hash])?, &e.mac) {
                return Ok(report(Some(Break::new(e.seq, Fault::BadMac))));
            }
        }
    }
    let head = head(conn)?;
    if let Err(b) = walker.finish(head.as_ref().map(|h| (h.seq, &h.hash[..]))) {
        return Ok(report(Some(b)));
    }
    if let (Some(k), Some(h)) = (key, &head) {
        if !ct_eq(
            &mac(k, HEAD_DOMAIN, &[&h.seq.to_be_bytes(), &h.hash])?,
            &h.mac,
        ) {
            return Ok(report(Some(Break::new(h.seq, Fault::HeadBadMac))));
        }
    }
    Ok(report(None))
}

/// A break as the report names it: the entry and why.
fn describe(b: Break) -> (u64, String) {
    let why = match b.fault {
        Fault::BadMac if b.seq == 1 => "entry #1 has a bad MAC (forged, or the store's audit key \
             reference was replaced: entry #1 is the first the audit key ever MAC'd)"
            .to_string(),
        _ => b.to_string(),
    };
    (b.seq, why)
}

#[cfg(test)]
mod tests;

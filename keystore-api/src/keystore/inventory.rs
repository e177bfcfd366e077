//! The inventory of a store's cryptographic assets: the store, every key
//! (destroyed ones and the store's own audit key included) and every
//! version with its lifecycle dates and public-key facts. Public data only;
//! [`crate::cbom`] turns it into a CycloneDX CBOM.

use super::Keystore;
use crate::algorithm::{Algorithm, EcCurve, Usages};
use crate::audit::{self, AuditEntry, AuditEvent};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metadata::{self as md, KeyRow, KeyState, Origin, VersionRow};
use crate::roles::{Actor, Duty};
use crate::EncryptionUsage;
use rusqlite::OptionalExtension;
use time::OffsetDateTime;

/// The name the inventory gives the store's audit HMAC key (the name it was
/// created under; it is not a named key of the store).
pub const AUDIT_KEY_NAME: &str = "keystore-audit";

/// The name the inventory gives the store's audit signing keys (ECDSA
/// P-256, one version per signer), where the metadata records them.
pub const AUDIT_SIGNER_NAME: &str = "keystore-audit-signer";

/// Every cryptographic asset a store's metadata knows of, at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inventory {
    /// When the inventory was taken (the store's clock).
    pub taken_at: OffsetDateTime,
    /// The store itself.
    pub store: StoreAsset,
    /// Every key, by name, the destroyed ones and the store's internal keys
    /// included.
    pub keys: Vec<KeyAsset>,
}

/// The store: its backend and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreAsset {
    /// The backend's short stable name (`soft`, `pkcs11`, `tpm`).
    pub backend: String,
    /// The store's random id (hex) from the metadata's store row, where the
    /// schema has one (`None` in a metadata database made before it).
    pub store_id: Option<String>,
    /// What the caller knows of the backend (directory, token serial, TPM):
    /// `None` from [`Keystore::inventory`], for the caller to fill in.
    pub description: Option<String>,
    /// When the metadata was bound to the backend.
    pub created_at: OffsetDateTime,
    /// When the store was decommissioned, if it was.
    pub decommissioned_at: Option<OffsetDateTime>,
}

/// One key: its policy and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyAsset {
    /// The key's name ([`AUDIT_KEY_NAME`] for the audit key).
    pub name: String,
    /// A key the keystore keeps for itself (the audit HMAC key, the audit
    /// signing keys), not one created by a caller.
    pub internal: bool,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The usages the key permits.
    pub usages: Usages,
    /// Whether a wrapped backup may be taken.
    pub backup_eligible: bool,
    /// The cryptoperiod (scheduled rotation), if set.
    pub cryptoperiod: Option<time::Duration>,
    /// AES-GCM keys: the most encryptions each version may make.
    pub encryption_limit: Option<u64>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// When the whole key was destroyed, if it was.
    pub destroyed_at: Option<OffsetDateTime>,
    /// Versions, oldest first.
    pub versions: Vec<VersionAsset>,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionAsset {
    /// Version number, from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// Generated, imported or restored.
    pub origin: Origin,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// When it became active (first time), if it did.
    pub activated_at: Option<OffsetDateTime>,
    /// When it was deactivated (rotated away), if it was.
    pub deactivated_at: Option<OffsetDateTime>,
    /// When its material was destroyed (destroyed or compromised), if it was.
    pub destroyed_at: Option<OffsetDateTime>,
    /// Time of the last state change.
    pub state_changed_at: OffsetDateTime,
    /// End of the grace period, for deactivated versions.
    pub grace_end: Option<OffsetDateTime>,
    /// `sha256:` fingerprint of the public key, for asymmetric keys.
    pub fingerprint: Option<String>,
    /// The public key's facts, for asymmetric keys.
    pub public_key: Option<PublicKeyFacts>,
    /// AES-GCM keys: the version's encryptions against its limit.
    pub encryptions: Option<EncryptionUsage>,
}

/// The kind of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicKeyKind {
    /// An elliptic-curve key (id-ecPublicKey) on a NIST curve.
    Ec(EcCurve),
    /// An RSA key (rsaEncryption).
    Rsa,
    /// An Ed25519 key.
    Ed25519,
    /// An ML-DSA-65 key (FIPS 204).
    MlDsa65,
}

/// Public facts of a version's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyFacts {
    /// The key's kind (and curve).
    pub kind: PublicKeyKind,
    /// Key size in bits: the curve's order size, the RSA modulus, or the
    /// encoded public key's length for ML-DSA.
    pub bits: u32,
    /// The DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl PublicKeyFacts {
    /// The facts of `algorithm`'s public key `spki_der`.
    pub fn of(algorithm: Algorithm, spki_der: &[u8]) -> PublicKeyFacts {
        let (kind, bits) = match algorithm {
            Algorithm::Ed25519 => (PublicKeyKind::Ed25519, 256),
            Algorithm::MlDsa65 => (PublicKeyKind::MlDsa65, 1952 * 8),
            a => match (a.ec_curve(), a.rsa_bits()) {
                (Some(c), _) => (PublicKeyKind::Ec(c), c.field_len() as u32 * 8),
                (None, Some(bits)) => (PublicKeyKind::Rsa, bits as u32),
                (None, None) => (PublicKeyKind::Rsa, 0),
            },
        };
        PublicKeyFacts {
            kind,
            bits,
            spki_der: spki_der.to_vec(),
        }
    }
}

/// A time as the metadata stores it; anything else is damage.
fn stored(what: &str, s: &str) -> Result<OffsetDateTime> {
    crate::clock::parse_rfc3339(s)
        .ok_or_else(|| Error::integrity(format!("metadata holds a malformed time for {what}")))
}

/// The lifecycle dates of one version, from the audit trail where it has
/// them and from the version row otherwise.
#[derive(Default)]
struct Dates {
    staged: bool,
    activated: Option<OffsetDateTime>,
    deactivated: Option<OffsetDateTime>,
    destroyed: Option<OffsetDateTime>,
}

/// The state a `"from -> to ..."` state-change detail names as `to`.
fn target_state(detail: &str) -> Option<KeyState> {
    let to = detail.split_once("->")?.1.trim_start();
    let word = to.split([' ', ':', '(']).next()?;
    word.parse().ok()
}

fn dates(entries: &[AuditEntry], key: &KeyRow, created: OffsetDateTime, v: u32) -> Dates {
    let mut d = Dates::default();
    let ours = entries
        .iter()
        .filter(|e| e.key_name.as_deref() == Some(key.name.as_str()) && e.at >= created);
    for e in ours {
        let this = e.key_version == Some(v);
        match &e.event {
            AuditEvent::Stage if this => d.staged = true,
            AuditEvent::Rotate if this => {
                d.activated.get_or_insert(e.at);
            }
            AuditEvent::StateChange if this => match target_state(&e.detail) {
                Some(KeyState::Active) => {
                    d.activated.get_or_insert(e.at);
                }
                Some(KeyState::Deactivated) => d.deactivated = Some(e.at),
                Some(KeyState::Destroyed | KeyState::Compromised) => {
                    d.destroyed.get_or_insert(e.at);
                }
                _ => {}
            },
            AuditEvent::Sweep if this => {
                d.destroyed.get_or_insert(e.at);
            }
            AuditEvent::Destroy if e.key_version.is_none() || this => {
                d.destroyed.get_or_insert(e.at);
            }
            _ => {}
        }
    }
    d
}

fn version_asset(
    key: &KeyRow,
    key_created: OffsetDateTime,
    v: VersionRow,
    encryption_limit: Option<u64>,
    entries: &[AuditEntry],
) -> Result<VersionAsset> {
    let what = format!("key '{}' version {}", key.name, v.version);
    let created_at = stored(&what, &v.created_at)?;
    let state_changed_at = stored(&what, &v.state_changed_at)?;
    let mut d = dates(entries, key, key_created, v.version);
    // Versions made active at creation have no separate activation event.
    if d.activated.is_none() && !d.staged && v.state != KeyState::PreActivation {
        d.activated = Some(created_at);
    }
    if d.deactivated.is_none() && v.state == KeyState::Deactivated {
        d.deactivated = Some(state_changed_at);
    }
    if matches!(v.state, KeyState::Destroyed | KeyState::Compromised) {
        d.destroyed.get_or_insert(state_changed_at);
    } else {
        d.destroyed = None;
    }
    Ok(VersionAsset {
        version: v.version,
        state: v.state,
        origin: v.origin,
        created_at,
        activated_at: d.activated,
        deactivated_at: d.deactivated,
        destroyed_at: d.destroyed,
        state_changed_at,
        grace_end: v
            .grace_end
            .as_deref()
            .map(|t| stored(&what, t))
            .transpose()?,
        public_key: v
            .public_key
            .as_deref()
            .map(|spki| PublicKeyFacts::of(key.algorithm, spki)),
        fingerprint: v.fingerprint,
        encryptions: encryption_limit.map(|limit| EncryptionUsage {
            reserved: v.encryptions_reserved,
            limit,
        }),
    })
}

impl<B: Backend> Keystore<B> {
    /// The inventory of the store's cryptographic assets: the store, every
    /// key (destroyed ones and the audit HMAC key, marked internal,
    /// included) and every version with its dates and public-key facts.
    /// Holds no secret material. Needs the auditor or security-officer
    /// role (like [`Keystore::export_audit`]).
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the metadata holds a malformed time;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database fails.
    pub fn inventory(&self, actor: &Actor) -> Result<Inventory> {
        self.require(actor, Duty::Audit, "inventory", None)?;
        let taken_at = self.now_time();
        let md = self.md();
        let conn = md.conn();
        let (created, decommissioned): (String, Option<String>) = conn
            .query_row(
                "SELECT created_at, decommissioned_at FROM store WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(md::sql_error)?
            .ok_or_else(|| Error::integrity("the metadata has no store row"))?;
        let store = StoreAsset {
            backend: self.backend.name().to_string(),
            store_id: store_id(conn)?,
            description: None,
            created_at: stored("the store", &created)?,
            decommissioned_at: decommissioned
                .as_deref()
                .map(|t| stored("the store", t))
                .transpose()?,
        };
        let entries = audit::entries(conn)?;
        let mut keys = Vec::new();
        if md::audit_key(conn)?.is_some() {
            keys.push(self.audit_key_asset(&entries, store.created_at));
        }
        if let Some(signer) = audit_signers(conn)? {
            keys.push(signer);
        }
        for key in md::keys(conn)? {
            let mut versions = md::versions(conn, key.id)?;
            self.encryptions.discount_unused(key.id, &mut versions);
            let what = format!("key '{}'", key.name);
            let created_at = stored(&what, &key.created_at)?;
            let limit = super::encryption_limit::limit_of(&key);
            let versions = versions
                .into_iter()
                .map(|v| version_asset(&key, created_at, v, limit, &entries))
                .collect::<Result<Vec<_>>>()?;
            keys.push(KeyAsset {
                internal: false,
                algorithm: key.algorithm,
                usages: key.usages,
                backup_eligible: key.backup_eligible,
                cryptoperiod: key.cryptoperiod_secs.map(time::Duration::seconds),
                encryption_limit: limit,
                created_at,
                destroyed_at: key
                    .destroyed_at
                    .as_deref()
                    .map(|t| stored(&what, t))
                    .transpose()?,
                name: key.name,
                versions,
            });
        }
        Ok(Inventory {
            taken_at,
            store,
            keys,
        })
    }

    /// The audit HMAC key, as the store row references it: one active
    /// version made when the trail began.
    fn audit_key_asset(&self, entries: &[AuditEntry], store_created: OffsetDateTime) -> KeyAsset {
        let created_at = entries
            .iter()
            .find(|e| e.event == AuditEvent::AuditInit)
            .map_or(store_created, |e| e.at);
        KeyAsset {
            name: AUDIT_KEY_NAME.to_string(),
            internal: true,
            algorithm: Algorithm::HmacSha256,
            usages: Usages::MAC,
            backup_eligible: false,
            cryptoperiod: None,
            encryption_limit: None,
            created_at,
            destroyed_at: None,
            versions: vec![VersionAsset {
                version: 1,
                state: KeyState::Active,
                origin: Origin::Generated,
                created_at,
                activated_at: Some(created_at),
                deactivated_at: None,
                destroyed_at: None,
                state_changed_at: created_at,
                grace_end: None,
                fingerprint: None,
                public_key: None,
                encryptions: None,
            }],
        }
    }
}

/// Whether the metadata's `table` has `column` (older schemas lack some).
fn has_column(conn: &rusqlite::Connection, table: &str, column: &str) -> Result<bool> {
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(md::sql_error)?;
    let names = st
        .query_map([table], |r| r.get::<_, String>(0))
        .map_err(md::sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(md::sql_error)?;
    Ok(names.iter().any(|n| n == column))
}

/// The store row's id, where the schema has one.
fn store_id(conn: &rusqlite::Connection) -> Result<Option<String>> {
    if !has_column(conn, "store", "store_id")? {
        return Ok(None);
    }
    conn.query_row("SELECT store_id FROM store WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map(Option::flatten)
        .map_err(md::sql_error)
}

/// The audit signing keys as one internal key with a version per signer
/// (a retired signer's material is destroyed), where the schema has them.
fn audit_signers(conn: &rusqlite::Connection) -> Result<Option<KeyAsset>> {
    if !has_column(conn, "audit_signers", "public_key")? {
        return Ok(None);
    }
    let mut st = conn
        .prepare(
            "SELECT version, public_key, created_at, retired_at FROM audit_signers ORDER BY version",
        )
        .map_err(md::sql_error)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(md::sql_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(md::sql_error)?;
    let algorithm = Algorithm::EcdsaP256Sha256;
    let mut versions = Vec::new();
    for (version, spki, created, retired) in rows {
        let what = format!("audit signer {version}");
        let created_at = stored(&what, &created)?;
        let retired_at = retired.as_deref().map(|t| stored(&what, t)).transpose()?;
        let facts = PublicKeyFacts::of(algorithm, &spki);
        versions.push(VersionAsset {
            version,
            state: if retired_at.is_some() {
                KeyState::Destroyed
            } else {
                KeyState::Active
            },
            origin: Origin::Generated,
            created_at,
            activated_at: Some(created_at),
            deactivated_at: retired_at,
            destroyed_at: retired_at,
            state_changed_at: retired_at.unwrap_or(created_at),
            grace_end: None,
            fingerprint: Some(
                crate::PublicKey::from_spki_der(algorithm, spki)
                    .map_or_else(|_| String::new(), |pk| pk.fingerprint()),
            )
            .filter(|f| !f.is_empty()),
            public_key: Some(facts),
            encryptions: None,
        });
    }
    let Some(first) = versions.first().map(|v| v.created_at) else {
        return Ok(None);
    };
    Ok(Some(KeyAsset {
        name: AUDIT_SIGNER_NAME.to_string(),
        internal: true,
        algorithm,
        usages: Usages::SIGN | Usages::VERIFY,
        backup_eligible: false,
        cryptoperiod: None,
        encryption_limit: None,
        created_at: first,
        destroyed_at: None,
        versions,
    }))
}

#[cfg(test)]
mod tests {
    use super::target_state;
    use crate::metadata::KeyState;

    #[test]
    fn state_change_details_name_their_target() {
        let cases = [
            (
                "active -> deactivated until 2026-01-01T00:00:00Z",
                Some(KeyState::Deactivated),
            ),
            ("pre-activation -> active", Some(KeyState::Active)),
            ("active -> compromised: stolen", Some(KeyState::Compromised)),
            (
                "pre-activation -> destroyed (staged version discarded)",
                Some(KeyState::Destroyed),
            ),
            ("suspended -> active", Some(KeyState::Active)),
            ("version 2 active; grace 60 s", None),
        ];
        for (detail, want) in cases {
            assert_eq!(target_state(detail), want, "{detail}");
        }
    }
}

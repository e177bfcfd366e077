//! Signed checkpoints of the audit trail: the store's audit signing key
//! (ECDSA P-256 in its backend) signs `(store id, checkpoint number, audit
//! sequence, head hash, time, reason, signer, handover, counter)` as a
//! canonical text, so that anyone holding the public key can check an
//! exported trail without the store and without any secret.
//!
//! The signed text ([`Checkpoint::signed_message`]) is one `name: value`
//! line per field, each ending in `\n`, after the line
//! `keystore-audit-checkpoint-v1`; an absent value is `-`. The signature is
//! ECDSA P-256 with SHA-256 over that text, DER-encoded.

use crate::error::{Error, Result};
use crate::public_key::PublicKey;
use crate::Algorithm;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// The first line of every checkpoint's signed text.
pub const CHECKPOINT_DOMAIN: &str = "keystore-audit-checkpoint-v1";

/// Why a checkpoint was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CheckpointReason {
    /// The first: the signing key (and counter, if any) was bound to the store.
    Bound,
    /// Enough entries followed the previous checkpoint.
    Interval,
    /// The trail was exported.
    Export,
    /// The signing key was rotated: the outgoing key hands over to the next.
    Rotation,
    /// The store was decommissioned (the last checkpoint).
    Decommission,
    /// Asked for explicitly.
    Requested,
}

impl CheckpointReason {
    /// The reason's name in the signed text and the trail.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointReason::Bound => "bound",
            CheckpointReason::Interval => "interval",
            CheckpointReason::Export => "export",
            CheckpointReason::Rotation => "rotation",
            CheckpointReason::Decommission => "decommission",
            CheckpointReason::Requested => "requested",
        }
    }
}

impl fmt::Display for CheckpointReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckpointReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [
            CheckpointReason::Bound,
            CheckpointReason::Interval,
            CheckpointReason::Export,
            CheckpointReason::Rotation,
            CheckpointReason::Decommission,
            CheckpointReason::Requested,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| Error::integrity(format!("'{s}' is not a checkpoint reason")))
    }
}

/// A signed statement that the store's audit trail had entries `1..=seq`
/// ending in `head_hash` at time `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The store's random id (hex).
    pub store_id: String,
    /// The checkpoint's number, from 1.
    pub number: u64,
    /// The last audit entry it covers (0: an empty trail).
    pub seq: u64,
    /// That entry's chain hash, hex.
    pub head_hash: String,
    /// When it was signed (UTC, whole seconds).
    #[serde(with = "super::rfc3339_text")]
    pub at: OffsetDateTime,
    /// Why it was signed.
    pub reason: CheckpointReason,
    /// The signing key's fingerprint (`sha256:` and the hex SHA-256 of its
    /// SubjectPublicKeyInfo).
    pub signer: String,
    /// At a rotation, the fingerprint of the key that signs from now on.
    pub handover: Option<String>,
    /// The monotonic counter it is bound to, named (e.g. `TPM NV index
    /// 0x01a3b2c1`), where the store has one.
    pub counter: Option<String>,
    /// The counter's value this checkpoint raised it to.
    pub counter_value: Option<u64>,
    /// ECDSA P-256 SHA-256 signature over [`Checkpoint::signed_message`],
    /// DER, hex.
    pub signature: String,
}

/// A store id: 32 lower-case hex digits.
pub(crate) fn is_store_id(s: &str) -> bool {
    s.len() == 32 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && is_lower_hex(h))
}

/// A counter's name: 1 to 64 printable ASCII characters, not `-`.
fn is_counter_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s != "-" && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Checkpoint {
    /// Checks that every field has its one textual form, so that the signed
    /// text of one checkpoint is never the signed text of another: store id
    /// 32 hex digits, head 64, signer and handover `sha256:` and 64 hex
    /// digits, counter name one line of printable ASCII (never `-`), and a
    /// counter value exactly when there is a counter.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) naming the field.
    pub fn check_fields(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::integrity(format!(
                "checkpoint #{} has a malformed {what}",
                self.number
            )))
        };
        if !is_store_id(&self.store_id) {
            return bad("store id");
        }
        if self.head_hash.len() != 64 || !is_lower_hex(&self.head_hash) {
            return bad("head hash");
        }
        if !is_fingerprint(&self.signer) || !self.handover.as_deref().is_none_or(is_fingerprint) {
            return bad("signer or handover fingerprint");
        }
        if self.counter.is_some() != self.counter_value.is_some()
            || !self.counter.as_deref().is_none_or(is_counter_name)
        {
            return bad("counter");
        }
        if !self.signature.is_empty() && !is_lower_hex(&self.signature) {
            return bad("signature");
        }
        Ok(())
    }

    /// The exact bytes the signature covers (see the module documentation).
    pub fn signed_message(&self) -> Vec<u8> {
        let opt = |v: Option<&str>| v.unwrap_or("-").to_string();
        let lines = [
            CHECKPOINT_DOMAIN.to_string(),
            format!("store: {}", self.store_id),
            format!("checkpoint: {}", self.number),
            format!("seq: {}", self.seq),
            format!("head: {}", self.head_hash),
            format!("at: {}", crate::clock::rfc3339(self.at)),
            format!("reason: {}", self.reason),
            format!("signer: {}", self.signer),
            format!("handover: {}", opt(self.handover.as_deref())),
            format!("counter: {}", opt(self.counter.as_deref())),
            format!(
                "counter-value: {}",
                opt(self.counter_value.map(|v| v.to_string()).as_deref())
            ),
        ];
        let mut out = String::new();
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Checks the signature with `key`, whose fingerprint must be the
    /// checkpoint's signer.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when a field is
    /// malformed ([`Checkpoint::check_fields`]), `key` is not the signer, not
    /// a P-256 key, or the signature does not verify.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<()> {
        self.check_fields()?;
        if key.algorithm() != Algorithm::EcdsaP256Sha256 || key.fingerprint() != self.signer {
            return Err(Error::integrity(format!(
                "checkpoint #{} names signer {}, not the key given",
                self.number, self.signer
            )));
        }
        let sig = hex::decode(&self.signature).map_err(|_| {
            Error::integrity(format!(
                "checkpoint #{}: the signature is not hex",
                self.number
            ))
        })?;
        key.verify(&self.signed_message(), &sig).map_err(|_| {
            Error::integrity(format!(
                "checkpoint #{}: the signature by {} does not verify",
                self.number, self.signer
            ))
        })
    }
}

/// One of the store's audit signing keys, public part only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditSigner {
    /// 1 for the first key, then one more at each rotation.
    pub version: u32,
    /// `sha256:` and the hex SHA-256 of the SubjectPublicKeyInfo.
    pub fingerprint: String,
    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// When it was created.
    #[serde(with = "super::rfc3339_text")]
    pub created_at: OffsetDateTime,
    /// When it was retired (its private key destroyed), if it was.
    #[serde(with = "optional_time", default)]
    pub retired_at: Option<OffsetDateTime>,
}

impl AuditSigner {
    /// The signer described by its stored row.
    pub(crate) fn new(
        version: u32,
        spki: &[u8],
        created_at: &str,
        retired_at: Option<&str>,
    ) -> Result<Self> {
        let key = PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, spki.to_vec())?;
        let time = |s: &str| {
            crate::clock::parse_rfc3339(s).ok_or_else(|| {
                Error::integrity(format!("audit signer {version} holds a malformed time"))
            })
        };
        Ok(AuditSigner {
            version,
            fingerprint: key.fingerprint(),
            public_key_pem: key.to_pem(),
            created_at: time(created_at)?,
            retired_at: retired_at.map(time).transpose()?,
        })
    }

    /// The public key.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the PEM is
    /// not a P-256 public key or does not match the fingerprint.
    pub fn public_key(&self) -> Result<PublicKey> {
        let keys = public_keys_from_pem(&self.public_key_pem)?;
        match keys.as_slice() {
            [k] if k.fingerprint() == self.fingerprint => Ok(k.clone()),
            _ => Err(Error::integrity(format!(
                "audit signer {}: the public key does not match its fingerprint",
                self.version
            ))),
        }
    }
}

/// The P-256 public keys in `pem` (every `PUBLIC KEY` block).
///
/// # Errors
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when a block
/// is not base64 or not a P-256 key, or there is none.
pub fn public_keys_from_pem(pem: &str) -> Result<Vec<PublicKey>> {
    use base64::Engine as _;
    let mut keys = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
        let body = &rest[start + "-----BEGIN PUBLIC KEY-----".len()..];
        let end = body
            .find("-----END PUBLIC KEY-----")
            .ok_or_else(|| Error::invalid_input("a PUBLIC KEY block has no END line"))?;
        let b64: String = body[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Error::invalid_input("a PUBLIC KEY block is not base64"))?;
        keys.push(
            PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, der).map_err(|_| {
                Error::invalid_input("a PUBLIC KEY block is not an ECDSA P-256 public key")
            })?,
        );
        rest = &body[end..];
    }
    if keys.is_empty() {
        return Err(Error::invalid_input(
            "no PUBLIC KEY block (-----BEGIN PUBLIC KEY-----) found",
        ));
    }
    Ok(keys)
}

mod optional_time {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&crate::clock::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                crate::clock::parse_rfc3339(&s)
                    .ok_or_else(|| D::Error::custom(format!("'{s}' is not an RFC 3339 time")))
            })
            .transpose()
    }
}

/// The first checkpoint whose head the trail no longer holds as signed
/// (entry missing, or another hash): the entry it names and why.
pub(crate) fn first_unmatched(conn: &rusqlite::Connection) -> Result<Option<(u64, String)>> {
    for c in crate::metadata::checkpoints(conn)? {
        if c.audit_seq == 0 {
            continue;
        }
        match super::entry_hash(conn, c.audit_seq)? {
            Some(h) if h == c.head_hash => {}
            found => {
                let why = if found.is_some() {
                    "another hash"
                } else {
                    "no such entry"
                };
                return Ok(Some((
                    c.audit_seq,
                    format!(
                        "signed checkpoint #{} covers entry #{} {}, but the trail holds {why} \
                         there: the audit tables were replaced or rewritten",
                        c.id,
                        c.audit_seq,
                        hex::encode(&c.head_hash)
                    ),
                )));
            }
        }
    }
    Ok(None)
}

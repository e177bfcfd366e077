//! The exported trail (`keyctl audit export`): entries, the audit signing
//! keys' public parts, the signed checkpoints and a description of the store,
//! as JSON lines, and its verification off the device
//! ([`AuditExport::verify_offline`]) with nothing but trusted public keys.
//!
//! Line format: each entry is an [`AuditEntry`] object (as always), then one
//! `{"audit_signer": …}` line per [`AuditSigner`], one `{"checkpoint": …}`
//! line per [`Checkpoint`], and a last `{"store": …}` line
//! ([`ExportedStore`]).

use super::checkpoint::{AuditSigner, Checkpoint};
use super::{chain, AuditEntry};
use crate::error::{Error, Result};
use crate::public_key::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the export says about the store it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExportedStore {
    /// The store's random id (hex).
    pub store_id: String,
    /// Its backend's name.
    pub backend: String,
    /// Whether a restored older copy of the metadata is detected at open,
    /// in words (the monotonic counter, or why there is none).
    pub rollback_protection: String,
}

/// An exported trail with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditExport {
    /// The store.
    pub store: ExportedStore,
    /// Every entry, in order.
    pub entries: Vec<AuditEntry>,
    /// Every audit signing key the store has had.
    pub signers: Vec<AuditSigner>,
    /// Every checkpoint, in order.
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Tagged {
    AuditSigner(AuditSigner),
    Checkpoint(Checkpoint),
    Store(ExportedStore),
}

/// The result of [`AuditExport::verify_offline`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfflineReport {
    /// The store the export names.
    pub store_id: String,
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signatures verified by a trusted key.
    pub checkpoints_verified: u64,
    /// The last entry a verified checkpoint covers.
    pub covered_through: u64,
    /// The first bad entry (or 0 for a fault of the export as a whole) and why.
    pub first_bad: Option<(u64, String)>,
    /// Fingerprints of the keys that signed verified checkpoints.
    pub signers_used: Vec<String>,
    /// The monotonic counter and value of the last verified checkpoint.
    pub counter: Option<(String, u64)>,
}

impl OfflineReport {
    /// True when every entry is covered by a checkpoint signed by a trusted
    /// key and the chain verifies. Entry MACs are not checked offline: they
    /// need the store's secret audit key.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl AuditExport {
    /// The export as JSON lines (see the module documentation).
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) if serialising fails.
    pub fn to_json_lines(&self) -> Result<String> {
        let enc = |v: serde_json::Result<String>| {
            v.map_err(|e| Error::invalid_input(format!("cannot encode the audit export: {e}")))
        };
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&enc(serde_json::to_string(e))?);
            out.push('\n');
        }
        let tagged = self
            .signers
            .iter()
            .cloned()
            .map(Tagged::AuditSigner)
            .chain(self.checkpoints.iter().cloned().map(Tagged::Checkpoint))
            .chain(std::iter::once(Tagged::Store(self.store.clone())));
        for t in tagged {
            out.push_str(&enc(serde_json::to_string(&t))?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Reads an export written by [`AuditExport::to_json_lines`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming the
    /// first line that is not an entry, signer, checkpoint or store line, or
    /// when the store line is missing or repeated.
    pub fn from_json_lines(text: &str) -> Result<Self> {
        let mut entries = Vec::new();
        let (mut signers, mut checkpoints, mut store) = (Vec::new(), Vec::new(), None);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |e: serde_json::Error| {
                Error::invalid_input(format!("line {} of the export: {e}", i + 1))
            };
            let value: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
            if value.get("seq").is_some() {
                entries.push(serde_json::from_value(value).map_err(bad)?);
                continue;
            }
            match serde_json::from_value(value).map_err(bad)? {
                Tagged::AuditSigner(s) => signers.push(s),
                Tagged::Checkpoint(c) => checkpoints.push(c),
                Tagged::Store(s) if store.is_none() => store = Some(s),
                Tagged::Store(_) => {
                    return Err(Error::invalid_input(format!(
                        "line {} of the export: a second store line",
                        i + 1
                    )))
                }
            }
        }
        let store = store.ok_or_else(|| {
            Error::invalid_input(
                "the export has no store line: it is not a `keyctl audit export` with checkpoints",
            )
        })?;
        Ok(AuditExport {
            store,
            entries,
            signers,
            checkpoints,
        })
    }

    /// Verifies the export with `trusted` keys only, without the store and
    /// without any secret: the hash chain of every entry, each checkpoint's
    /// signature, that each checkpoint's head is the entry it names, and that
    /// a checkpoint covers the last entry. A key that is not in `trusted`
    /// becomes trusted only through a rotation checkpoint, signed by a
    /// trusted key, that hands over to it. The report names the first bad
    /// entry; entry MACs are not checked (they need the store's secret key).
    pub fn verify_offline(&self, trusted: &[PublicKey]) -> OfflineReport {
        let mut report = OfflineReport {
            store_id: self.store.store_id.clone(),
            entries: self.entries.len() as u64,
            checkpoints_verified: 0,
            covered_through: 0,
            first_bad: None,
            signers_used: Vec::new(),
            counter: None,
        };
        // The chain: positions, links and hashes, as on the device.
        let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(self.entries.len());
        let mut walker = chain::ChainWalker::new();
        for e in &self.entries {
            let prev = hex::decode(&e.prev_hash).unwrap_or_default();
            let hash = hex::decode(&e.hash).unwrap_or_default();
            match walker.next(e.seq, &prev, &hash, |p| super::exported_chain_hash(e, p)) {
                Ok(h) => hashes.push(h),
                Err(b) => {
                    report.first_bad = Some((b.seq, b.to_string()));
                    return report;
                }
            }
        }
        // Checkpoints, each signed by a trusted key.
        let mut keys: HashMap<String, PublicKey> = trusted
            .iter()
            .map(|k| (k.fingerprint(), k.clone()))
            .collect();
        let announced: HashMap<&str, &AuditSigner> = self
            .signers
            .iter()
            .map(|s| (s.fingerprint.as_str(), s))
            .collect();
        let mut covered = 0u64;
        for (i, c) in self.checkpoints.iter().enumerate() {
            let at = covered + 1;
            let fail = |why: String| Some((at, why));
            if c.number != i as u64 + 1 || c.store_id != self.store.store_id {
                report.first_bad = fail(format!(
                    "checkpoint #{} is out of place (expected #{} of store {})",
                    c.number,
                    i + 1,
                    self.store.store_id
                ));
                return report;
            }
            let Some(key) = keys.get(&c.signer) else {
                report.first_bad = fail(format!(
                    "checkpoint #{} is signed by {}, which is not a trusted key (give its public \
                     key with --trust, or a trusted key that handed over to it)",
                    c.number, c.signer
                ));
                return report;
            };
            if let Err(e) = c.verify_signature(key) {
                report.first_bad = fail(e.message().to_string());
                return report;
            }
            if c.seq < covered {
                report.first_bad = fail(format!(
                    "checkpoint #{} covers entry #{}, before the previous checkpoint's #{covered}",
                    c.number, c.seq
                ));
                return report;
            }
            if c.seq > self.entries.len() as u64 {
                report.first_bad = Some((
                    self.entries.len() as u64 + 1,
                    format!(
                        "missing: checkpoint #{} was signed over entry #{}, but the export ends \
                         at #{} (its tail was cut off)",
                        c.number,
                        c.seq,
                        self.entries.len()
                    ),
                ));
                return report;
            }
            let head = match c.seq {
                0 => chain::GENESIS,
                s => hashes[s as usize - 1],
            };
            if hex::encode(head) != c.head_hash {
                report.first_bad = fail(format!(
                    "entries #{}..#{} do not match the head signed by checkpoint #{} (they were \
                     rewritten and their chain recomputed)",
                    covered + 1,
                    c.seq,
                    c.number
                ));
                return report;
            }
            covered = c.seq;
            report.checkpoints_verified += 1;
            if !report.signers_used.contains(&c.signer) {
                report.signers_used.push(c.signer.clone());
            }
            if let (Some(name), Some(v)) = (&c.counter, c.counter_value) {
                report.counter = Some((name.clone(), v));
            }
            if let Some(next) = &c.handover {
                match announced.get(next.as_str()).map(|s| s.public_key()) {
                    Some(Ok(k)) if &k.fingerprint() == next => {
                        // The outgoing key signs nothing after its handover.
                        keys.remove(&c.signer);
                        keys.insert(k.fingerprint(), k);
                    }
                    _ => {
                        report.first_bad = fail(format!(
                            "checkpoint #{} hands over to {next}, whose public key the export \
                             does not hold",
                            c.number
                        ));
                        return report;
                    }
                }
            }
        }
        report.covered_through = covered;
        if self.checkpoints.is_empty() {
            report.first_bad = Some((
                1,
                "the export holds no signed checkpoint: nothing in it is signed".to_string(),
            ));
            return report;
        }
        if covered < self.entries.len() as u64 {
            report.first_bad = Some((
                covered + 1,
                format!(
                    "entry #{} and later are not covered by any signed checkpoint (appended after \
                     the last one, or forged)",
                    covered + 1
                ),
            ));
        }
        report
    }
}

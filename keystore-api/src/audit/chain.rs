//! The hash chain under every tamper-evident log of the workspace: the
//! keystore's audit trail ([`AuditEntry`](crate::AuditEntry)) and the provisioning event log
//! (`provisioning::db`).
//!
//! An entry's hash is
//! `SHA-256(domain ‖ seq (u64, big-endian) ‖ field₁ ‖ … ‖ fieldₙ)`, each
//! field framed as `0x00` when absent or `0x01 ‖ length (u64, big-endian) ‖
//! bytes`, the last field being the previous entry's hash as the log stores
//! it (the first entry's previous hash is [`GENESIS`]). The domain names the
//! log and its format version, so an entry of one log never verifies in
//! another.
//!
//! [`ChainWalker`] checks a stored log from its first entry: positions,
//! links, hashes and the head (the last sequence number and hash, kept
//! apart so that a cut-off tail shows), and names the first bad entry as a
//! [`Break`]. MACs are the caller's: each log MACs its hashes under its own
//! key and message format, and reports a failed MAC as [`Fault::BadMac`] or
//! [`Fault::HeadBadMac`] at the entry the walker has just passed.

use sha2::{Digest, Sha256};
use std::fmt;

/// Length of an entry hash in bytes.
pub const HASH_LEN: usize = 32;

/// The previous hash of a log's first entry.
pub const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];

/// Hashes one entry, field by field (see the [module documentation](self)).
///
/// ```
/// use keystore_api::chain::{entry_hash, ChainHasher, GENESIS};
/// let mut h = ChainHasher::new(b"example-log-v1", 1);
/// h.text(Some("created")).text(None).field(Some(&GENESIS));
/// assert_eq!(
///     h.finish(),
///     entry_hash(b"example-log-v1", 1, &[Some(b"created"), None, Some(&GENESIS)])
/// );
/// ```
#[derive(Clone)]
pub struct ChainHasher(Sha256);

impl fmt::Debug for ChainHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainHasher").finish_non_exhaustive()
    }
}

impl ChainHasher {
    /// Starts the hash of entry `seq` of the log whose domain is `domain`.
    pub fn new(domain: &[u8], seq: u64) -> Self {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(seq.to_be_bytes());
        ChainHasher(h)
    }

    /// Adds a field: `None` when absent, which hashes apart from empty.
    pub fn field(&mut self, value: Option<&[u8]>) -> &mut Self {
        match value {
            None => self.0.update([0u8]),
            Some(b) => {
                self.0.update([1u8]);
                self.0.update((b.len() as u64).to_be_bytes());
                self.0.update(b);
            }
        }
        self
    }

    /// Adds a text field (its UTF-8 bytes).
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.field(value.map(str::as_bytes))
    }

    /// The entry's hash.
    pub fn finish(self) -> [u8; HASH_LEN] {
        self.0.finalize().into()
    }
}

/// The hash of entry `seq` of the log `domain` with `fields`, in order.
pub fn entry_hash(domain: &[u8], seq: u64, fields: &[Option<&[u8]>]) -> [u8; HASH_LEN] {
    let mut h = ChainHasher::new(domain, seq);
    for f in fields {
        h.field(*f);
    }
    h.finish()
}

/// Why a log fails verification at [`Break::seq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The entry is missing (deleted).
    Missing,
    /// A stored hash or MAC of the entry is not well-formed.
    Malformed,
    /// The entry does not link to the one before it (deleted or reordered).
    Unlinked,
    /// The entry's hash does not match its contents (edited).
    Edited,
    /// The entry's MAC does not verify (forged).
    BadMac,
    /// The log has entries up to `seq` but no head.
    HeadMissing,
    /// The head names entries up to `head_seq` that the log no longer holds
    /// (its tail was cut off); `seq` is the first missing one.
    Truncated {
        /// The last sequence number the head names.
        head_seq: u64,
    },
    /// The log holds entries from `seq` on that its head does not cover
    /// (they were not appended through the log's writer).
    BeyondHead,
    /// The head names entry `seq` but not its hash.
    HeadMismatch,
    /// The head's MAC does not verify (forged).
    HeadBadMac,
}

/// The first bad entry of a log, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Break {
    /// The entry's sequence number (from 1).
    pub seq: u64,
    /// What is wrong with it.
    pub fault: Fault,
}

impl Break {
    /// Entry `seq` fails with `fault`.
    pub fn new(seq: u64, fault: Fault) -> Self {
        Break { seq, fault }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match self.fault {
            Fault::Missing => write!(f, "entry #{seq} is missing (deleted)"),
            Fault::Malformed => write!(f, "entry #{seq} is malformed"),
            Fault::Unlinked => write!(
                f,
                "entry #{seq} does not follow entry #{} (deleted or reordered)",
                seq.saturating_sub(1)
            ),
            Fault::Edited => write!(f, "entry #{seq} was edited (hash mismatch)"),
            Fault::BadMac => write!(f, "entry #{seq} has a bad MAC (forged)"),
            Fault::HeadMissing => write!(
                f,
                "the head is missing (the log holds entries up to #{seq})"
            ),
            Fault::Truncated { head_seq } => write!(
                f,
                "entries #{seq}..#{head_seq} are missing (the log was truncated)"
            ),
            Fault::BeyondHead => write!(
                f,
                "entries from #{seq} on were not appended through the log's writer (the head names #{})",
                seq.saturating_sub(1)
            ),
            Fault::HeadMismatch => write!(
                f,
                "the head names entry #{seq} with another hash (the entry or the head was replaced)"
            ),
            Fault::HeadBadMac => write!(f, "the head has a bad MAC (forged)"),
        }
    }
}

/// Checks a stored log entry by entry, from the first, then its head.
///
/// ```
/// use keystore_api::chain::{entry_hash, ChainWalker, Fault, GENESIS};
/// let hash = |seq: u64, what: &str, prev: &[u8; 32]| {
///     entry_hash(b"example-log-v1", seq, &[Some(what.as_bytes()), Some(prev)])
/// };
/// let h1 = hash(1, "created", &GENESIS);
/// let h2 = hash(2, "used", &h1);
/// let mut w = ChainWalker::new();
/// w.next(1, &GENESIS, &h1, |prev| hash(1, "created", prev)).unwrap();
/// // Entry #2 as stored claims "used", but its contents now say "unused".
/// let bad = w.next(2, &h1, &h2, |prev| hash(2, "unused", prev)).unwrap_err();
/// assert_eq!((bad.seq, bad.fault), (2, Fault::Edited));
/// ```
#[derive(Debug, Clone)]
pub struct ChainWalker {
    prev: [u8; HASH_LEN],
    next: u64,
}

impl Default for ChainWalker {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainWalker {
    /// A walker before entry #1.
    pub fn new() -> Self {
        ChainWalker {
            prev: GENESIS,
            next: 1,
        }
    }

    /// Checks the next stored entry: it must be at the next position, link
    /// to the entry before it (`prev_hash` as stored) and hash to `hash` as
    /// stored, where `recompute(prev)` hashes its stored contents after the
    /// previous hash `prev`. On success the walker moves past it and returns
    /// its hash.
    ///
    /// # Errors
    /// The [`Break`] at the first entry that fails: [`Fault::Missing`] (at
    /// the position expected), [`Fault::Unlinked`] or [`Fault::Edited`].
    pub fn next(
        &mut self,
        seq: u64,
        prev_hash: &[u8],
        hash: &[u8],
        recompute: impl FnOnce(&[u8; HASH_LEN]) -> [u8; HASH_LEN],
    ) -> Result<[u8; HASH_LEN], Break> {
        if seq != self.next {
            return Err(Break::new(self.next, Fault::Missing));
        }
        if prev_hash != self.prev {
            return Err(Break::new(seq, Fault::Unlinked));
        }
        let recomputed = recompute(&self.prev);
        if recomputed[..] != *hash {
            return Err(Break::new(seq, Fault::Edited));
        }
        self.prev = recomputed;
        self.next += 1;
        Ok(recomputed)
    }

    /// The sequence number of the last entry passed (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// The hash of the last entry passed ([`GENESIS`] before the first).
    pub fn last_hash(&self) -> &[u8; HASH_LEN] {
        &self.prev
    }

    /// Checks the head against the entries passed: `head` is its stored
    /// (last sequence number, last hash), `None` if the log has no head. A
    /// log without entries needs none. The head's MAC is the caller's to
    /// check after this.
    ///
    /// # Errors
    /// The [`Break`]: [`Fault::HeadMissing`], [`Fault::Truncated`],
    /// [`Fault::BeyondHead`] or [`Fault::HeadMismatch`].
    pub fn finish(&self, head: Option<(u64, &[u8])>) -> Result<(), Break> {
        let last = self.last_seq();
        match head {
            None if last == 0 => Ok(()),
            None => Err(Break::new(last, Fault::HeadMissing)),
            Some((seq, _)) if seq > last => {
                Err(Break::new(last + 1, Fault::Truncated { head_seq: seq }))
            }
            Some((seq, _)) if seq < last => Err(Break::new(seq + 1, Fault::BeyondHead)),
            Some((seq, hash)) if hash != self.prev => Err(Break::new(seq, Fault::HeadMismatch)),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &[u8] = b"test-log-v1";

    fn h(seq: u64, body: &str, prev: &[u8; 32]) -> [u8; 32] {
        entry_hash(D, seq, &[Some(body.as_bytes()), None, Some(prev)])
    }

    /// Three entries as a log stores them: (seq, prev, hash, body).
    fn log() -> Vec<(u64, [u8; 32], [u8; 32], &'static str)> {
        let mut out = Vec::new();
        let mut prev = GENESIS;
        for (i, body) in ["a", "b", "c"].into_iter().enumerate() {
            let seq = i as u64 + 1;
            let hash = h(seq, body, &prev);
            out.push((seq, prev, hash, body));
            prev = hash;
        }
        out
    }

    fn walk(
        entries: &[(u64, [u8; 32], [u8; 32], &str)],
        head: Option<(u64, [u8; 32])>,
    ) -> Result<(), Break> {
        let mut w = ChainWalker::new();
        for (seq, prev, hash, body) in entries {
            w.next(*seq, prev, hash, |p| h(*seq, body, p))?;
        }
        w.finish(head.as_ref().map(|(s, h)| (*s, &h[..])))
    }

    #[test]
    fn framing_is_the_documented_one() {
        let mut manual = Sha256::new();
        manual.update(D);
        manual.update(7u64.to_be_bytes());
        manual.update([1u8]);
        manual.update(2u64.to_be_bytes());
        manual.update(b"ab");
        manual.update([0u8]);
        manual.update([1u8]);
        manual.update(0u64.to_be_bytes());
        let manual: [u8; 32] = manual.finalize().into();
        assert_eq!(entry_hash(D, 7, &[Some(b"ab"), None, Some(b"")]), manual);
        // Absent and empty differ.
        assert_ne!(entry_hash(D, 1, &[None]), entry_hash(D, 1, &[Some(b"")]));
    }

    #[test]
    fn an_intact_log_walks_and_every_fault_is_named() {
        let l = log();
        let last = l[2].2;
        assert_eq!(walk(&l, Some((3, last))), Ok(()));
        assert_eq!(walk(&[], None), Ok(()));
        // Edited contents.
        let mut e = l.clone();
        e[1].3 = "B";
        assert_eq!(walk(&e, Some((3, last))), Err(Break::new(2, Fault::Edited)));
        // Deleted middle entry.
        let d = vec![l[0], l[2]];
        assert_eq!(
            walk(&d, Some((3, last))),
            Err(Break::new(2, Fault::Missing))
        );
        // Reordered (renumbered) entries.
        let mut r = vec![l[0], l[2], l[1]];
        r[1].0 = 2;
        r[2].0 = 3;
        assert_eq!(
            walk(&r, Some((3, last))),
            Err(Break::new(2, Fault::Unlinked))
        );
        // Cut-off tail.
        let t = &l[..2];
        assert_eq!(
            walk(t, Some((3, last))),
            Err(Break::new(3, Fault::Truncated { head_seq: 3 }))
        );
        assert_eq!(walk(t, None), Err(Break::new(2, Fault::HeadMissing)));
        // Entries past the head, and a head with another hash.
        assert_eq!(
            walk(&l, Some((2, l[1].2))),
            Err(Break::new(3, Fault::BeyondHead))
        );
        assert_eq!(
            walk(&l, Some((3, l[1].2))),
            Err(Break::new(3, Fault::HeadMismatch))
        );
        assert!(Break::new(3, Fault::Truncated { head_seq: 5 })
            .to_string()
            .contains("truncated"));
    }
}

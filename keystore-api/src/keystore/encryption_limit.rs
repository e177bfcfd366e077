//! AES-GCM usage limits (NIST SP 800-38D): every version of an AES-256-GCM
//! key makes at most its key's limit of encryptions (2^32 with random
//! 96-bit nonces, or lower), counted across every process that opens the
//! store.
//!
//! Counting each encryption in the database would put a write transaction
//! on the hot path. Instead a process reserves a block of the version's
//! shared count ([`OpenOptions::encryption_block`], fewer when fewer
//! remain) in one short write transaction, and counts it down in memory: an
//! atomic decrement per encryption, no lock. Only when its block is used up
//! does it reserve again; when none remains, `encrypt` is refused with
//! [`ErrorKind::KeyState`](crate::ErrorKind::KeyState). A process that dies
//! loses what it had reserved and not used (counted as used: the safe
//! direction); one that closes the store gives it back. So across restarts
//! and kills no version ever makes more than its limit, and processes that
//! run until refused make exactly the limit.

use super::types::{EncryptionUsage, OpenOptions, MAX_ENCRYPTION_LIMIT};
use super::{Keystore, Resolved};
use crate::algorithm::Algorithm;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metadata::encryptions::{self, Reservation};
use crate::metadata::{KeyRow, VersionRow};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// This process's blocks of the shared encryption counts, by key version.
pub(crate) struct Encryptions {
    block: u64,
    due_share: f64,
    counters: Mutex<HashMap<(i64, u32), Arc<Counter>>>,
}

/// One version's block in this process.
pub(crate) struct Counter {
    key_id: i64,
    version: u32,
    limit: u64,
    /// Encryptions reserved by this process and not yet made.
    remaining: AtomicU64,
    /// Held while reserving or giving back (the slow path only).
    refill: Mutex<()>,
}

impl Counter {
    /// Takes one encryption from the block, if any is left.
    #[inline]
    fn try_take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Encryptions {
    pub(crate) fn new(options: &OpenOptions) -> Self {
        Encryptions {
            block: options.encryption_block.max(1),
            due_share: options.usage_due_share,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Subtracts this process's unused blocks from the counts of `versions`
    /// of key `key_id`, so that a count reads the same before and after this
    /// process closes the store (and gives them back). Call under the
    /// metadata lock, which reservations hold until their block is counted.
    pub(crate) fn discount_unused(&self, key_id: i64, versions: &mut [VersionRow]) {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.is_empty() {
            return;
        }
        for v in versions {
            if let Some(c) = counters.get(&(key_id, v.version)) {
                let unused = c.remaining.load(Ordering::Acquire);
                v.encryptions_reserved = v.encryptions_reserved.saturating_sub(unused);
            }
        }
    }

    /// The share of its limit past which a version is due for rotation.
    pub(crate) fn due_share(&self) -> f64 {
        self.due_share
    }

    fn counter(&self, key_id: i64, version: u32, limit: u64) -> Arc<Counter> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(counters.entry((key_id, version)).or_insert_with(|| {
            Arc::new(Counter {
                key_id,
                version,
                limit,
                remaining: AtomicU64::new(0),
                refill: Mutex::new(()),
            })
        }))
    }
}

/// The limit of each version of `key`, if its encryptions are counted
/// (AES-256-GCM; a key without a stored limit has the default).
pub(crate) fn limit_of(key: &KeyRow) -> Option<u64> {
    (key.algorithm == Algorithm::Aes256Gcm)
        .then(|| key.encryption_limit.unwrap_or(MAX_ENCRYPTION_LIMIT))
}

/// Whether `usage` is past `share` of its limit (or at the limit).
pub(crate) fn past_share(usage: EncryptionUsage, share: f64) -> bool {
    usage.reserved >= usage.limit || usage.reserved as f64 > share * usage.limit as f64
}

/// An encryption limit given to create or import, checked.
pub(crate) fn check_limit(algorithm: Algorithm, limit: Option<u64>) -> Result<Option<u64>> {
    match (algorithm, limit) {
        (Algorithm::Aes256Gcm, None) => Ok(Some(MAX_ENCRYPTION_LIMIT)),
        (Algorithm::Aes256Gcm, Some(l)) if (1..=MAX_ENCRYPTION_LIMIT).contains(&l) => Ok(Some(l)),
        (Algorithm::Aes256Gcm, Some(l)) => Err(Error::invalid_input(format!(
            "an AES-GCM encryption limit is 1 to {MAX_ENCRYPTION_LIMIT} (2^32, SP 800-38D), got {l}"
        ))),
        (_, None) => Ok(None),
        (alg, Some(_)) => Err(Error::invalid_input(format!(
            "an encryption limit applies to aes-256-gcm keys only, not {alg}"
        ))),
    }
}

impl<B: Backend> Keystore<B> {
    /// Counts one encryption by the version `r` resolved to, or refuses it
    /// at the limit. The hot path is one atomic decrement.
    #[inline]
    pub(crate) fn count_encryption(&self, name: &str, r: &Resolved) -> Result<()> {
        let Some(limit) = limit_of(&r.key) else {
            return Ok(());
        };
        let counter = r
            .encryptions
            .get_or_init(|| self.encryptions.counter(r.key.id, r.version, limit));
        if counter.try_take() {
            return Ok(());
        }
        self.reserve_encryptions(name, counter)
    }

    /// The block is used up: reserve another (or what remains) for this
    /// process and take one encryption from it.
    #[cold]
    fn reserve_encryptions(&self, name: &str, c: &Counter) -> Result<()> {
        let _refill = c.refill.lock().unwrap_or_else(|p| p.into_inner());
        if c.try_take() {
            // Another thread reserved while this one waited.
            return Ok(());
        }
        let refused = || {
            Error::key_state(format!(
                "version {} of '{name}' has used its AES-GCM limit of {} encryptions \
                 (SP 800-38D, random nonces); rotate the key",
                c.version, c.limit
            ))
            .with_key(name)
            .with_version(c.version)
        };
        let gone = || {
            Error::not_found(format!("key '{name}' has no version {}", c.version))
                .with_key(name)
                .with_version(c.version)
        };
        // Held until the block is counted (see `discount_unused`).
        let mut md = self.md();
        // A read first, so that refusals at the limit never write.
        match encryptions::reserved(md.conn(), c.key_id, c.version)? {
            None => return Err(gone()),
            Some(n) if n >= c.limit => return Err(refused()),
            Some(_) => {}
        }
        let tx = md.tx()?;
        match encryptions::reserve(&tx, c.key_id, c.version, self.encryptions.block, c.limit)? {
            Reservation::Granted(n) => {
                tx.commit()?;
                // One is this call's; the rest is the block.
                c.remaining.fetch_add(n - 1, Ordering::AcqRel);
                Ok(())
            }
            Reservation::Exhausted => Err(refused()),
            Reservation::Missing => Err(gone()),
        }
    }

    /// Gives back every block this process holds and will not use (the
    /// store is closing). Best effort: what cannot be given back stays
    /// counted as used.
    fn give_back_encryptions(&self) {
        let counters: Vec<Arc<Counter>> = {
            let map = self
                .encryptions
                .counters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        let mut unused = Vec::new();
        for c in &counters {
            let _refill = c.refill.lock().unwrap_or_else(|p| p.into_inner());
            let n = c.remaining.swap(0, Ordering::AcqRel);
            if n > 0 {
                unused.push((c.key_id, c.version, n));
            }
        }
        if unused.is_empty() {
            return;
        }
        let mut md = self.md();
        let given = md.tx().and_then(|tx| {
            for (key_id, version, n) in &unused {
                encryptions::give_back(&tx, *key_id, *version, *n)?;
            }
            tx.commit()
        });
        // Nothing to report to: a failure only leaves the blocks lost.
        drop(given);
    }
}

impl<B: Backend> Drop for Keystore<B> {
    fn drop(&mut self) {
        self.give_back_encryptions();
    }
}

//! Handles the registry has already vouched for, keyed by their exact bytes.
//!
//! Resolving a handle from scratch (see `State::resolve`) parses the blob
//! pair, unmarshals the public area and hashes it into its Name to compare
//! with the registry entry: per sign, that host work is most of the
//! backend's overhead over a bare `TPM2_Sign`. This cache keeps the outcome
//! of a successful resolution (the parsed blob and the entry's auth value),
//! so the steady state is one lookup by handle bytes, then the loaded
//! object from the connection's LRU (also keyed by handle bytes), then the
//! TPM command.
//!
//! Why it is safe:
//! - **Exact bytes.** Entries are keyed by the whole handle: a cheap
//!   non-cryptographic hash of all its bytes narrows the search, and a hit
//!   is only a hit when the stored bytes equal the presented ones in full.
//!   A handle that differs from a resolved one anywhere (a flipped bit in
//!   the private area, another key's blob pair under the same id, a byte
//!   more or less) misses and is resolved, and refused, from scratch. No
//!   hash alone ever identifies a key.
//! - **Registry changes.** Every entry was checked against the registry as
//!   it stood at one `Registry::generation`; any registry mutation (create,
//!   destroy, wipe, a replaced listing copy) bumps the generation, and the
//!   next lookup drops every entry. A destroyed key is thus `NotFound` on
//!   its next use, exactly as without the cache. (Mutations are rare, so
//!   dropping everything, not just the changed id, costs one re-check of
//!   the working set per create or destroy and cannot miss a dependency.)
//! - **Only successes.** Failed resolutions are never cached; an entry whose
//!   blob the TPM then refuses to load is dropped by the caller.
//!
//! Size: at most [`CAPACITY`] entries, least recently used evicted first.
//! An entry is a few hundred bytes to ~2 KiB (handle copy, parsed public
//! area, private blob, 32-byte auth), so the cache stays well under
//! 150 KiB however many keys the store holds; 64 covers a working set far
//! beyond the TPM's own transient slots (three on swtpm, so at most two
//! keys stay *loaded*; keys past those are reloaded from the cached blob
//! without being re-parsed).
//!
//! Auth values held here are [`SecretBytes`] (zeroed on drop) and are never
//! printed: the cache has no `Debug` that shows them.

use crate::blob::Blob;
use keystore_backend::SecretBytes;

/// Most resolved handles kept at once (public as `RESOLVED_CACHE_CAPACITY`
/// with the `test-support` feature only).
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
pub const CAPACITY: usize = 64;

/// A handle the registry vouched for: its parsed blob and its auth value.
pub(crate) struct Resolved {
    /// The exact handle bytes, compared in full on every hit.
    handle: Box<[u8]>,
    pub blob: Blob,
    pub auth: SecretBytes,
    last_used: u64,
}

/// The cache; see the module documentation.
///
/// Two parallel vectors: the hashes (scanned, 512 contiguous bytes when
/// full) and the entries. A hash match is only a candidate; the entry's
/// full handle bytes decide.
pub(crate) struct ResolvedCache {
    hashes: Vec<u64>,
    entries: Vec<Resolved>,
    /// The registry generation every entry was checked against.
    generation: u64,
    tick: u64,
}

impl std::fmt::Debug for ResolvedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedCache")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A cheap, non-cryptographic hash of all of `bytes` (FxHash's mixing,
/// eight bytes at a time). It only narrows the search: equal hashes are
/// confirmed by comparing the bytes.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = mix(0, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(w));
    }
    h
}

impl ResolvedCache {
    pub(crate) fn new() -> ResolvedCache {
        ResolvedCache {
            hashes: Vec::with_capacity(CAPACITY),
            entries: Vec::with_capacity(CAPACITY),
            generation: 0,
            tick: 0,
        }
    }

    /// Drops every entry if the registry changed since they were checked.
    fn sync(&mut self, generation: u64) {
        if self.generation != generation {
            self.hashes.clear();
            self.entries.clear();
            self.generation = generation;
        }
    }

    fn position(&self, h: u64, handle: &[u8]) -> Option<usize> {
        self.hashes
            .iter()
            .zip(&self.entries)
            .position(|(&eh, e)| eh == h && *e.handle == *handle)
    }

    /// The index of the entry for exactly these handle bytes, checked
    /// against registry generation `generation`; marks it used.
    pub(crate) fn find(&mut self, handle: &[u8], generation: u64) -> Option<usize> {
        self.sync(generation);
        let i = self.position(hash(handle), handle)?;
        self.tick = self.tick.wrapping_add(1);
        if let Some(e) = self.entries.get_mut(i) {
            e.last_used = self.tick;
        }
        Some(i)
    }

    /// The entry at index `i` (from [`ResolvedCache::find`] or
    /// [`ResolvedCache::insert`], with no mutation in between).
    pub(crate) fn get(&self, i: usize) -> Option<&Resolved> {
        self.entries.get(i)
    }

    /// Records a successful resolution of `handle` against registry
    /// generation `generation`, replacing an entry for the same bytes or
    /// else evicting the least recently used entry if the cache is full.
    /// Returns the entry's index.
    pub(crate) fn insert(
        &mut self,
        handle: &[u8],
        generation: u64,
        blob: Blob,
        auth: SecretBytes,
    ) -> usize {
        self.sync(generation);
        self.tick = self.tick.wrapping_add(1);
        let h = hash(handle);
        let entry = Resolved {
            handle: handle.into(),
            blob,
            auth,
            last_used: self.tick,
        };
        let slot = self.position(h, handle).or_else(|| {
            (self.entries.len() >= CAPACITY)
                .then(|| {
                    self.entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(i, _)| i)
                })
                .flatten()
        });
        match slot {
            Some(i) if i < self.entries.len() && i < self.hashes.len() => {
                self.hashes[i] = h;
                self.entries[i] = entry;
                i
            }
            _ => {
                self.hashes.push(h);
                self.entries.push(entry);
                self.entries.len() - 1
            }
        }
    }

    /// Forgets `handle` (its blob was refused by the TPM).
    pub(crate) fn remove(&mut self, handle: &[u8]) {
        if let Some(i) = self.position(hash(handle), handle) {
            self.hashes.swap_remove(i);
            self.entries.swap_remove(i);
        }
    }

    /// How many handles are cached.
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_backend::Algorithm;
    use tss_esapi::structures::Private;

    fn blob(id: u8) -> Blob {
        let template =
            crate::templates::key(Algorithm::HmacSha256, true, Default::default()).expect("t");
        Blob {
            id: [id; crate::blob::ID_LEN],
            alg: Algorithm::HmacSha256,
            public: template,
            private: Private::default(),
            public_area: Vec::new(),
        }
    }

    fn handle(i: usize) -> Vec<u8> {
        let mut h = b"KT\x01\x07".to_vec();
        h.extend_from_slice(&(i as u64).to_be_bytes());
        h
    }

    #[test]
    fn exact_bytes_bounded_lru_and_generations() {
        let mut c = ResolvedCache::new();
        let auth = || SecretBytes::from_slice(&[7; 32]);
        c.insert(&handle(0), 1, blob(0), auth());
        assert!(c.find(&handle(0), 1).is_some());
        // One byte more, one byte less, one bit different: misses.
        let mut longer = handle(0);
        longer.push(0);
        assert!(c.find(&longer, 1).is_none());
        assert!(c.find(&handle(0)[..handle(0).len() - 1], 1).is_none());
        let mut flipped = handle(0);
        flipped[5] ^= 1;
        assert!(c.find(&flipped, 1).is_none());

        // Bounded, least recently used out first.
        for i in 1..CAPACITY + 10 {
            assert!(c.find(&handle(0), 1).is_some(), "0 kept warm at {i}");
            c.insert(&handle(i), 1, blob(i as u8), auth());
            assert!(c.len() <= CAPACITY);
        }
        assert_eq!(c.len(), CAPACITY);
        assert!(c.find(&handle(0), 1).is_some());
        assert!(c.find(&handle(1), 1).is_none());
        assert!(c.find(&handle(CAPACITY + 9), 1).is_some());

        // Re-inserting a present handle does not evict anyone.
        c.insert(&handle(0), 1, blob(0), auth());
        assert_eq!(c.len(), CAPACITY);

        c.remove(&handle(0));
        assert!(c.find(&handle(0), 1).is_none());

        // A registry change empties the cache.
        assert!(c.find(&handle(CAPACITY + 9), 2).is_none());
        assert_eq!(c.len(), 0);
    }
}

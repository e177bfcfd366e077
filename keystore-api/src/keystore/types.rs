//! The public value types: open options, key specs, and key and version info.

use crate::algorithm::{Algorithm, Usages};
use crate::metadata::{KeyState, Origin};
use crate::public_key::PublicKey;
use crate::write_lock::DEFAULT_LOCK_TIMEOUT;
use std::time::Duration as StdDuration;
use time::OffsetDateTime;

/// The most encryptions one version of an AES-256-GCM key may make, and
/// every such key's default limit: 2^32, the bound NIST SP 800-38D (8.3)
/// sets for random 96-bit nonces. [`KeySpec::with_encryption_limit`] lowers it.
pub const MAX_ENCRYPTION_LIMIT: u64 = 1 << 32;

/// Encryptions a process reserves at a time by default (see
/// [`OpenOptions::encryption_block`]).
pub const DEFAULT_ENCRYPTION_BLOCK: u64 = 1 << 16;

/// The share of its encryption limit past which [`Keystore::due`](super::Keystore::due)
/// lists an active version by default (see [`OpenOptions::usage_due_share`]).
pub const DEFAULT_USAGE_DUE_SHARE: f64 = 0.9;

/// How [`Keystore::open_with`](super::Keystore::open_with) opens a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenOptions {
    /// How long a lifecycle operation waits for another process's write to
    /// finish before it fails with [`ErrorKind::Busy`](crate::ErrorKind::Busy). Default 5 s.
    pub lock_timeout: StdDuration,
    /// Compare every version's material with the backend's objects at open
    /// (finds material removed behind the keystore's back, and a wrong
    /// token, TPM or directory). Costs a backend listing, so it grows with
    /// the store; processes that only use keys can turn it off. Recovery of
    /// interrupted operations runs either way. Default on.
    pub check_material: bool,
    /// How many AES-GCM encryptions this process reserves from a version's
    /// shared count at a time (fewer when fewer remain); it counts them down
    /// in memory. A reservation is one short write transaction; what a
    /// process reserved and had not used when it died is lost (counted as
    /// used, never re-issued). Smaller blocks lose less on a crash and write
    /// more often. At least 1; default [`DEFAULT_ENCRYPTION_BLOCK`] (2^16).
    pub encryption_block: u64,
    /// [`Keystore::due`](super::Keystore::due) lists an active AES-GCM version once it has
    /// reserved more than this share of its encryption limit (and always at the limit).
    /// In `(0, 1]`; default [`DEFAULT_USAGE_DUE_SHARE`] (0.9).
    pub usage_due_share: f64,
    /// A write operation that ends with at least this many audit entries
    /// past the last signed checkpoint signs a new one (and raises the
    /// store's monotonic counter, where it has one). At least 1; default
    /// [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: u64,
}

/// Audit entries between signed checkpoints by default.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 64;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            check_material: true,
            encryption_block: DEFAULT_ENCRYPTION_BLOCK,
            usage_due_share: DEFAULT_USAGE_DUE_SHARE,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

impl OpenOptions {
    /// The defaults: 5 s lock wait, material checked at open, encryptions
    /// reserved 2^16 at a time, usage due at 90 % of the limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long writers wait for the store's write lock.
    pub fn lock_timeout(mut self, timeout: StdDuration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Turns the material check at open on or off.
    pub fn check_material(mut self, check: bool) -> Self {
        self.check_material = check;
        self
    }

    /// Sets how many encryptions this process reserves at a time (a value
    /// of 0 is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) at open).
    pub fn encryption_block(mut self, block: u64) -> Self {
        self.encryption_block = block;
        self
    }

    /// Sets the share of its limit past which a version is due for rotation
    /// (outside `(0, 1]` is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) at open).
    pub fn usage_due_share(mut self, share: f64) -> Self {
        self.usage_due_share = share;
        self
    }

    /// Sets how many audit entries may follow the last signed checkpoint
    /// before a write operation signs the next (0 is
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) at open).
    pub fn checkpoint_interval(mut self, entries: u64) -> Self {
        self.checkpoint_interval = entries;
        self
    }

    /// The options' own errors, checked at open.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        if self.encryption_block == 0 {
            return Err(crate::error::Error::invalid_input(
                "the encryption block must be at least 1",
            ));
        }
        if self.checkpoint_interval == 0 {
            return Err(crate::error::Error::invalid_input(
                "the checkpoint interval must be at least 1 audit entry",
            ));
        }
        if !(self.usage_due_share > 0.0 && self.usage_due_share <= 1.0) {
            return Err(crate::error::Error::invalid_input(format!(
                "the usage share for due rotations must be in (0, 1], got {}",
                self.usage_due_share
            )));
        }
        Ok(())
    }
}

/// How to create a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The usages; a non-empty subset of the algorithm's permitted usages.
    pub usages: Usages,
    /// May this key be exported as a wrapped backup? Fixed at creation,
    /// irreversible, and allowed only for symmetric keys (REQ-KEY-BAK-01).
    pub backup_eligible: bool,
    /// Rotate after this long (scheduled rotation), if set.
    pub cryptoperiod: Option<time::Duration>,
    /// AES-256-GCM only: the most encryptions each version may make, if
    /// lower than [`MAX_ENCRYPTION_LIMIT`] (the default when `None`).
    pub encryption_limit: Option<u64>,
}

impl KeySpec {
    /// A spec with the algorithm's default usages, not backup-eligible, no cryptoperiod.
    pub fn new(algorithm: Algorithm) -> Self {
        KeySpec {
            algorithm,
            usages: algorithm.default_usages(),
            backup_eligible: false,
            cryptoperiod: None,
            encryption_limit: None,
        }
    }

    /// Restricts (or, for `wrap`, extends) the usages.
    pub fn with_usages(mut self, usages: Usages) -> Self {
        self.usages = usages;
        self
    }

    /// Marks the key backup-eligible.
    pub fn backup_eligible(mut self) -> Self {
        self.backup_eligible = true;
        self
    }

    /// Sets the cryptoperiod.
    pub fn with_cryptoperiod(mut self, period: time::Duration) -> Self {
        self.cryptoperiod = Some(period);
        self
    }

    /// Lowers the AES-GCM encryption limit of every version of the key to
    /// `limit` (fixed at creation; rotation gives each new version its own
    /// count under the same limit). Create and import refuse 0, a value
    /// above [`MAX_ENCRYPTION_LIMIT`] and any key but aes-256-gcm with
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput).
    pub fn with_encryption_limit(mut self, limit: u64) -> Self {
        self.encryption_limit = Some(limit);
        self
    }
}

/// How much of its AES-GCM encryption limit a version has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionUsage {
    /// Encryptions reserved: made, held unused in another live process's
    /// block, or lost with a process that died (this process's own unused
    /// block is not counted, so the figure does not change when it closes).
    /// Never above `limit`.
    pub reserved: u64,
    /// The most encryptions the version may make.
    pub limit: u64,
}

impl EncryptionUsage {
    /// Encryptions not yet reserved.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.reserved)
    }
}

/// Public facts about one key version. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// Generated, imported or restored.
    pub origin: Origin,
    /// The public key, for asymmetric keys.
    pub public_key: Option<PublicKey>,
    /// `sha256:` fingerprint of the public key, for asymmetric keys.
    pub fingerprint: Option<String>,
    /// Creation time (UTC, whole seconds).
    pub created_at: OffsetDateTime,
    /// Time of the last state change.
    pub state_changed_at: OffsetDateTime,
    /// End of the grace period, for deactivated versions.
    pub grace_end: Option<OffsetDateTime>,
    /// Why the version was revoked or marked missing, if it was.
    pub reason: Option<String>,
    /// AES-GCM keys: the version's encryptions against its limit.
    pub encryptions: Option<EncryptionUsage>,
}

/// Public facts about a key. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// The usages the key permits.
    pub usages: Usages,
    /// Whether a wrapped backup may be taken.
    pub backup_eligible: bool,
    /// The cryptoperiod, if scheduled rotation applies.
    pub cryptoperiod: Option<time::Duration>,
    /// AES-GCM keys: the most encryptions each version may make.
    pub encryption_limit: Option<u64>,
    /// Creation time (UTC, whole seconds).
    pub created_at: OffsetDateTime,
    /// Versions, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl KeyInfo {
    /// The version that makes new signatures and ciphertexts.
    pub fn active(&self) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.state == KeyState::Active)
    }

    /// The version in pre-activation (staged by
    /// [`Keystore::rotate_staged`](crate::Keystore::rotate_staged), not yet
    /// activated), if there is one; a key has at most one.
    pub fn pre_active(&self) -> Option<&VersionInfo> {
        self.versions
            .iter()
            .find(|v| v.state == KeyState::PreActivation)
    }

    /// Version `n`.
    pub fn version(&self, n: u32) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.version == n)
    }
}

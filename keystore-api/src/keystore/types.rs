//! The public value types: open options, key specs, and key and version info.

use crate::algorithm::{Algorithm, Usages};
use crate::metadata::{KeyState, Origin};
use crate::public_key::PublicKey;
use crate::write_lock::DEFAULT_LOCK_TIMEOUT;
use std::time::Duration as StdDuration;
use time::OffsetDateTime;

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
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            check_material: true,
        }
    }
}

impl OpenOptions {
    /// The defaults: 5 s lock wait, material checked at open.
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
}

impl KeySpec {
    /// A spec with the algorithm's default usages, not backup-eligible, no cryptoperiod.
    pub fn new(algorithm: Algorithm) -> Self {
        KeySpec {
            algorithm,
            usages: algorithm.default_usages(),
            backup_eligible: false,
            cryptoperiod: None,
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

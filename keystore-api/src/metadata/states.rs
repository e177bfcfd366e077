//! Key states and origins, and their stored names.

use super::corrupt;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The lifecycle state of a key version (NIST SP 800-57).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Generated for a staged rotation and not yet in use: it signs only
    /// proofs of possession ([`Keystore::sign_pre_active`](crate::Keystore::sign_pre_active))
    /// until [`Keystore::activate`](crate::Keystore::activate) makes it active.
    PreActivation,
    /// Makes new signatures and ciphertexts.
    Active,
    /// No use; can be resumed.
    Suspended,
    /// Grace: verify and decrypt only.
    Deactivated,
    /// No use at all; material destroyed.
    Compromised,
    /// Tombstone: metadata and public fingerprint kept, material gone.
    Destroyed,
}

impl KeyState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActivation => "pre-activation",
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "pre-activation" => KeyState::PreActivation,
            "active" => KeyState::Active,
            "suspended" => KeyState::Suspended,
            "deactivated" => KeyState::Deactivated,
            "compromised" => KeyState::Compromised,
            "destroyed" => KeyState::Destroyed,
            other => return Err(corrupt(format!("unknown key state '{other}'"))),
        })
    }
}

/// Where a key version's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Generated inside the backend with its RNG.
    Generated,
    /// Imported by the caller (symmetric keys only).
    Imported,
    /// Restored from a wrapped backup.
    Restored,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
            Origin::Restored => "restored",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Origin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "generated" => Origin::Generated,
            "imported" => Origin::Imported,
            "restored" => Origin::Restored,
            other => return Err(corrupt(format!("unknown key origin '{other}'"))),
        })
    }
}

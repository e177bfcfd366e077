//! What an audit entry records: the keystore's own events, and the events
//! applications record through [`Keystore::record_event`](crate::Keystore::record_event).
//!
//! Each event is stored (and hashed into the chain) under its name,
//! [`AuditEvent::as_str`]; the names are those the trail has always used.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Longest application event name, in bytes.
pub const MAX_APPLICATION_EVENT_LEN: usize = 32;

/// An audit event: one of the keystore's own, or an application's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEvent {
    /// `audit-init`: the audit key was created (the trail's first entry).
    AuditInit,
    /// `generate`: a key was created with material generated in the backend.
    Generate,
    /// `import`: a key was created from imported material.
    Import,
    /// `rotate`: a new version became active.
    Rotate,
    /// `state`: a version changed state (suspend, resume, revoke, deactivate).
    StateChange,
    /// `sweep`: a version past its grace period was destroyed.
    Sweep,
    /// `destroy`: a key's material was destroyed.
    Destroy,
    /// `backup`: a key was exported wrapped.
    Backup,
    /// `restore`: a key was restored from a wrapped backup.
    Restore,
    /// `wipe`: the backend was wiped (reserved: recorded by earlier versions).
    Wipe,
    /// `decommission`: the store was decommissioned (its last entry).
    Decommission,
    /// `refused`: an actor's role lacked the duty an operation needs.
    Refused,
    /// `reconcile`: an interrupted destroy or revoke was completed at open.
    Reconcile,
    /// `missing`: a version's material was missing from the backend at open.
    Missing,
    /// `credential`: a role credential was set.
    Credential,
    /// `policy`: a key's policy (its cryptoperiod) changed.
    Policy,
    /// `stage`: a new version was generated in pre-activation
    /// ([`Keystore::rotate_staged`](crate::Keystore::rotate_staged)).
    Stage,
    /// `proof-of-possession`: a pre-activation version signed a proof of
    /// possession ([`Keystore::sign_pre_active`](crate::Keystore::sign_pre_active)).
    ProofOfPossession,
    /// `audit-signer`: an audit signing key was created (a store made by an
    /// earlier version) or rotated.
    AuditSigner,
    /// `evidence`: an evidence pack's manifest was signed with the audit
    /// signing key ([`Keystore::sign_evidence_manifest`](crate::Keystore::sign_evidence_manifest)).
    Evidence,
    /// An application's event, recorded through
    /// [`Keystore::record_event`](crate::Keystore::record_event).
    Application(ApplicationEvent),
}

impl AuditEvent {
    /// The keystore's own events, which applications cannot record.
    pub const KEYSTORE: &'static [AuditEvent] = &[
        AuditEvent::AuditInit,
        AuditEvent::Generate,
        AuditEvent::Import,
        AuditEvent::Rotate,
        AuditEvent::StateChange,
        AuditEvent::Sweep,
        AuditEvent::Destroy,
        AuditEvent::Backup,
        AuditEvent::Restore,
        AuditEvent::Wipe,
        AuditEvent::Decommission,
        AuditEvent::Refused,
        AuditEvent::Reconcile,
        AuditEvent::Missing,
        AuditEvent::Credential,
        AuditEvent::Policy,
        AuditEvent::Stage,
        AuditEvent::ProofOfPossession,
        AuditEvent::AuditSigner,
        AuditEvent::Evidence,
    ];

    /// The name the trail stores and hashes (`generate`, `state`, …, or the
    /// application's name).
    pub fn as_str(&self) -> &str {
        match self {
            AuditEvent::AuditInit => "audit-init",
            AuditEvent::Generate => "generate",
            AuditEvent::Import => "import",
            AuditEvent::Rotate => "rotate",
            AuditEvent::StateChange => "state",
            AuditEvent::Sweep => "sweep",
            AuditEvent::Destroy => "destroy",
            AuditEvent::Backup => "backup",
            AuditEvent::Restore => "restore",
            AuditEvent::Wipe => "wipe",
            AuditEvent::Decommission => "decommission",
            AuditEvent::Refused => "refused",
            AuditEvent::Reconcile => "reconcile",
            AuditEvent::Missing => "missing",
            AuditEvent::Credential => "credential",
            AuditEvent::Policy => "policy",
            AuditEvent::Stage => "stage",
            AuditEvent::ProofOfPossession => "proof-of-possession",
            AuditEvent::AuditSigner => "audit-signer",
            AuditEvent::Evidence => "evidence",
            AuditEvent::Application(a) => a.as_str(),
        }
    }

    /// True for the keystore's own events.
    pub fn is_keystore(&self) -> bool {
        !matches!(self, AuditEvent::Application(_))
    }

    /// The keystore's own event named `name`, if there is one.
    pub fn keystore(name: &str) -> Option<AuditEvent> {
        AuditEvent::KEYSTORE
            .iter()
            .find(|e| e.as_str() == name)
            .cloned()
    }

    /// An application event named `name`.
    ///
    /// # Errors
    /// As [`ApplicationEvent::new`].
    pub fn application(name: &str) -> Result<AuditEvent> {
        ApplicationEvent::new(name).map(AuditEvent::Application)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a stored name: the keystore's own event of that name, otherwise
/// an application event.
impl FromStr for AuditEvent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match AuditEvent::keystore(s) {
            Some(e) => Ok(e),
            None => AuditEvent::application(s),
        }
    }
}

impl Serialize for AuditEvent {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The name of an application event: lower-case ASCII words with dashes
/// (`provision`, `renew`, `pki-ceremony`), at most
/// [`MAX_APPLICATION_EVENT_LEN`] bytes, never one of the keystore's own
/// ([`AuditEvent::KEYSTORE`]), so an application cannot forge those.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApplicationEvent(String);

impl ApplicationEvent {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a
    /// malformed name or one of the keystore's own.
    pub fn new(name: &str) -> Result<Self> {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_APPLICATION_EVENT_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed || AuditEvent::keystore(name).is_some() {
            return Err(Error::invalid_input(format!(
                "'{name}' is not an application event name (lower-case words with dashes, \
                 not one of the keystore's own)"
            )));
        }
        Ok(ApplicationEvent(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplicationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ApplicationEvent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ApplicationEvent::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn stored_names_are_todays_and_parse_back() {
        let names: Vec<&str> = AuditEvent::KEYSTORE
            .iter()
            .map(AuditEvent::as_str)
            .collect();
        assert_eq!(
            names,
            [
                "audit-init",
                "generate",
                "import",
                "rotate",
                "state",
                "sweep",
                "destroy",
                "backup",
                "restore",
                "wipe",
                "decommission",
                "refused",
                "reconcile",
                "missing",
                "credential",
                "policy",
                "stage",
                "proof-of-possession",
                "audit-signer",
                "evidence"
            ]
        );
        for e in AuditEvent::KEYSTORE {
            assert_eq!(e.as_str().parse::<AuditEvent>().unwrap(), *e);
            assert!(e.is_keystore());
        }
        let app: AuditEvent = "pki-ceremony".parse().unwrap();
        assert_eq!(
            app,
            AuditEvent::Application(ApplicationEvent::new("pki-ceremony").unwrap())
        );
        assert!(!app.is_keystore());
        assert_eq!(
            serde_json::to_string(&AuditEvent::StateChange).unwrap(),
            "\"state\""
        );
        let back: AuditEvent = serde_json::from_str("\"provision\"").unwrap();
        assert_eq!(back.as_str(), "provision");
    }

    #[test]
    fn applications_cannot_use_the_keystores_names_or_malformed_ones() {
        for bad in [
            "rotate",
            "refused",
            "",
            "Bad Name",
            "-x",
            "a_b",
            &"a".repeat(33),
        ] {
            let e = AuditEvent::application(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        assert!(AuditEvent::application(&"a".repeat(32)).is_ok());
        assert!("Bad Name".parse::<AuditEvent>().is_err());
    }
}

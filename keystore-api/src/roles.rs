//! Roles and actors (separation of duties, REQ-KEY-SOD-01).
//!
//! Every lifecycle operation states who performs it. The keystore trusts the
//! embedding application to state the actor honestly, or authenticates it
//! against a per-role credential ([`crate::Keystore::authenticate`]), which is
//! what `keyctl` does. Cryptographic use (sign, verify, encrypt, decrypt, MAC,
//! derive) is governed by usage policy and lifecycle state, not by role: the
//! process that opened the keystore is the application.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A role with its own duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Administers keys: rotate, revoke, destroy, backup, restore, decommission,
    /// policies and credentials.
    SecurityOfficer,
    /// Runs the store: creates and imports keys, suspends and resumes, sweeps.
    Operator,
    /// Reads and verifies the audit trail; changes nothing.
    Auditor,
    /// Uses keys; no lifecycle operation.
    Application,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::SecurityOfficer,
        Role::Operator,
        Role::Auditor,
        Role::Application,
    ];

    /// The stable identifier (`security-officer`, `operator`, `auditor`, `application`).
    pub fn id(self) -> &'static str {
        match self {
            Role::SecurityOfficer => "security-officer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Application => "application",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.id() == s || (s == "so" && *r == Role::SecurityOfficer))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "unknown role '{s}'; expected security-officer (so), operator, auditor or application"
                ))
            })
    }
}

/// Who performs an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    id: String,
    role: Role,
}

impl Actor {
    /// An actor `id` (1..=64 printable ASCII characters, no spaces) acting in `role`.
    pub fn new(id: &str, role: Role) -> Result<Actor> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid_input(
                "an actor id is 1 to 64 printable ASCII characters without spaces",
            ));
        }
        Ok(Actor {
            id: id.to_string(),
            role,
        })
    }

    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duty {
    /// create, import
    Provision,
    /// rotate, revoke, destroy, backup, restore, decommission, policy, credentials
    Administer,
    /// suspend, resume, sweep
    Maintain,
    /// audit verify and export
    Audit,
}

impl Duty {
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Duty::Provision | Duty::Maintain => matches!(role, SecurityOfficer | Operator),
            Duty::Administer => role == SecurityOfficer,
            Duty::Audit => matches!(role, SecurityOfficer | Auditor),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Duty::Provision | Duty::Maintain => "the security-officer or operator role",
            Duty::Administer => "the security-officer role",
            Duty::Audit => "the security-officer or auditor role",
        }
    }
}

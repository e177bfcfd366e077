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

/// A duty: what an operation needs its actor's role to hold. Every
/// lifecycle operation of the keystore checks one, and applications check
/// theirs through [`Keystore::authorize`](crate::Keystore::authorize), so
/// that one table decides who may do what and every refusal is audited the
/// same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Duty {
    /// Create and import keys, record application events: security officer
    /// or operator.
    Provision,
    /// Rotate, revoke, destroy, back up, restore, decommission, set
    /// cryptoperiods and role credentials: security officer.
    Administer,
    /// Suspend, resume, sweep: security officer or operator.
    Maintain,
    /// Verify and export the audit trail: security officer or auditor.
    Audit,
    /// Issue device certificates (provisioning, renewal) and the production
    /// CA's CRLs: security officer or operator.
    IssueCertificates,
    /// Revoke device certificates: security officer.
    RevokeCertificates,
    /// Run the CA hierarchy: create the root, request, sign, install and
    /// revoke intermediates, issue the root's CRL: security officer.
    ManageCa,
}

impl Duty {
    /// Every duty.
    pub const ALL: &'static [Duty] = &[
        Duty::Provision,
        Duty::Administer,
        Duty::Maintain,
        Duty::Audit,
        Duty::IssueCertificates,
        Duty::RevokeCertificates,
        Duty::ManageCa,
    ];

    /// True if `role` holds this duty.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Duty::Provision | Duty::Maintain | Duty::IssueCertificates => {
                matches!(role, SecurityOfficer | Operator)
            }
            Duty::Administer | Duty::RevokeCertificates | Duty::ManageCa => role == SecurityOfficer,
            Duty::Audit => matches!(role, SecurityOfficer | Auditor),
        }
    }

    /// The roles that hold it, as refusals name them (`the security-officer
    /// or operator role`).
    pub fn describe(self) -> &'static str {
        match self {
            Duty::Provision | Duty::Maintain | Duty::IssueCertificates => {
                "the security-officer or operator role"
            }
            Duty::Administer | Duty::RevokeCertificates | Duty::ManageCa => {
                "the security-officer role"
            }
            Duty::Audit => "the security-officer or auditor role",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_description_names_exactly_the_roles_allowed() {
        for duty in Duty::ALL {
            let allowed: Vec<&str> = Role::ALL
                .into_iter()
                .filter(|r| duty.allows(*r))
                .map(Role::id)
                .collect();
            assert_eq!(
                duty.describe(),
                format!("the {} role", allowed.join(" or ")),
                "{duty:?}"
            );
        }
    }
}

//! Actors for tests: one constructor per role, named by the caller.

use keystore_api::{Actor, Role};

/// A security officer named `name`.
pub fn officer(name: &str) -> Actor {
    Actor::new(name, Role::SecurityOfficer).expect("actor")
}

/// An operator named `name`.
pub fn operator(name: &str) -> Actor {
    Actor::new(name, Role::Operator).expect("actor")
}

/// An auditor named `name`.
pub fn auditor(name: &str) -> Actor {
    Actor::new(name, Role::Auditor).expect("actor")
}

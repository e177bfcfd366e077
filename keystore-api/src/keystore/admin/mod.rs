//! Lifecycle administration: create, import, rotate (at once, or staged in
//! pre-activation and activated later), suspend, resume,
//! revoke, destroy, sweep, scheduled rotation, decommission, role
//! credentials and the audit trail. Every operation states its actor, is
//! checked against the actor's role, and is audited in the same transaction
//! as its metadata change.

mod audit_trail;
mod create;
mod credentials;
mod decommission;
mod rotation;
mod staged;
mod state;

pub use decommission::Decommissioned;
pub use rotation::{DueReason, RotationDue};

//! The conformance cases, grouped by family. Every case is generic over a
//! [`crate::Fixture`] and returns an [`crate::Outcome`] or panics.

mod aead;
mod algorithms;
mod attestation;
mod audit;
mod backup_rules;
mod derive;
mod device;
mod encryption_limit;
mod evidence;
mod input;
mod lifecycle;
mod mtls;
mod processes;
mod recovery;
mod registry;
mod roles;
mod sign;
mod storage;
mod wipe_and_files;

pub use aead::*;
pub use algorithms::*;
pub use attestation::*;
pub use audit::*;
pub use backup_rules::*;
pub use derive::*;
pub use device::*;
pub use encryption_limit::*;
pub use evidence::*;
pub use input::*;
pub use lifecycle::*;
pub use mtls::*;
pub use processes::*;
pub use recovery::*;
pub use registry::*;
pub use roles::*;
pub use sign::*;
pub use storage::*;
pub use wipe_and_files::*;

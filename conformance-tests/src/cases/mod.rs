//! The conformance cases, grouped by family. Every case is generic over a
//! [`crate::Fixture`] and returns an [`crate::Outcome`] or panics.

mod aead;
mod audit;
mod derive;
mod input;
mod lifecycle;
mod processes;
mod sign;
mod storage;

pub use aead::*;
pub use audit::*;
pub use derive::*;
pub use input::*;
pub use lifecycle::*;
pub use processes::*;
pub use sign::*;
pub use storage::*;

//! # keystore-api
//!
//! One API for holding cryptographic keys on medical devices and gateways,
//! over interchangeable backends (software sealed store, PKCS#11, TPM 2.0).
//!
//! - [`Backend`] is what a key device implements: it generates and uses keys
//!   and never returns private or secret bytes.
//! - [`Keystore`] is the one layer above every backend: names, versions,
//!   lifecycle states (NIST SP 800-57), usage policy, roles, wrapped backups,
//!   crash recovery and a tamper-evident audit trail, with metadata in SQLite.
//! - [`Error`] is the one error enum; messages never carry secrets.
//!
//! Derivation follows the fixed contract
//! `derive_hkdf_sha256(K, S, I, L) = HKDF-SHA256(salt = K, IKM = S, info = I, L)`:
//! `PRK = HMAC-SHA256(K, S)` runs inside the backend, the expand step on the host.

#![deny(unsafe_code)] // allowed in one module: `generation` (a shared memory map)
#![warn(missing_docs)]

pub mod algorithm;
pub mod audit;
pub mod backend;
pub mod clock;
pub mod envelope;
pub mod error;
pub mod fsperm;
mod generation;
pub mod keystore;
pub mod lifecycle;
pub mod metadata;
pub mod public_key;
pub mod roles;
pub mod secret;
pub mod signature;
mod write_lock;

pub use algorithm::{Algorithm, Capabilities, KeyClass, Operation, Usages};
pub use audit::{AuditCoverage, AuditEntry, AuditReport};
pub use backend::{AeadSealed, Backend, GeneratedKey, KeyHandle};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use fsperm::{LoosePermission, PermissionReport};
pub use keystore::{
    limits, FaultPoint, KeyInfo, KeySpec, Keystore, OpenOptions, ReconcileReport, RotationDue,
    VersionInfo,
};
pub use metadata::{KeyState, Origin};
pub use public_key::PublicKey;
pub use roles::{Actor, Role};
pub use secret::SecretBytes;
pub use signature::{Signature, SignatureFormat};
pub use write_lock::DEFAULT_LOCK_TIMEOUT;

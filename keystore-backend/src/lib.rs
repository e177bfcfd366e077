//! # keystore-backend
//!
//! The contract every keystore backend implements, and nothing more: no
//! metadata store, no SQLite. Backends (`backend-soft`, `backend-pkcs11`,
//! `backend-tpm`) depend on this crate only; applications use `keystore-api`,
//! which re-exports all of it at the same paths beside `Keystore<B>`.
//!
//! - [`Backend`] is what a key device implements: it generates and uses keys
//!   and never returns private or secret bytes ([`KeyHandle`],
//!   [`GeneratedKey`], [`AeadSealed`]).
//! - [`Algorithm`], [`Usages`] and [`Capabilities`] say what a key is and what
//!   a backend can do with it; [`agreement`] holds the peer-key checks and the
//!   one-step KDF every backend's key agreement shares.
//! - [`PublicKey`] is a public key as SPKI DER; [`SecretBytes`] holds secret
//!   bytes, zeroized on drop and redacted in `Debug`.
//! - [`Error`] is the one error enum; messages never carry secrets.
//! - [`limits`] bounds every input; [`fsperm`] keeps store files owner-only.

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod agreement;
pub mod algorithm;
pub mod attestation;
pub mod backend;
pub mod counter;
pub mod error;
pub mod fsperm;
pub mod public_key;
pub mod secret;
pub mod store_lock;

pub use agreement::PeerPublicKey;
pub use algorithm::{Algorithm, Capabilities, EcCurve, KeyClass, Operation, Usages};
pub use attestation::{AttestationKeyBlob, KeyAttestation, KeyCertification};
pub use backend::{
    Aead, AeadSealed, Backend, BackendKey, GeneratedKey, KeyAgreement, KeyHandle, KeyManagement,
    KeyWrap, Mac, NewKey, Signing,
};
pub use counter::{CounterRef, MonotonicCounter};
pub use error::{Component, Error, ErrorKind, Result};
pub use fsperm::{LoosePermission, PermissionReport};
pub use public_key::PublicKey;
pub use secret::SecretBytes;

/// Input limits. Larger inputs are [`ErrorKind::InvalidInput`].
pub mod limits {
    /// Longest key name, in bytes.
    pub const MAX_NAME_LEN: usize = 128;
    /// Largest message, plaintext or MAC input, in bytes (16 MiB).
    pub const MAX_DATA_LEN: usize = 16 * 1024 * 1024;
    /// Largest AAD, HKDF salt or HKDF info, in bytes (64 KiB).
    pub const MAX_AAD_LEN: usize = 64 * 1024;
    /// Largest HKDF-SHA256 output: 255 × 32 bytes (RFC 5869).
    pub const MAX_DERIVE_LEN: usize = 255 * 32;
    /// Longest signature accepted for verification, in bytes (an ML-DSA-65
    /// signature is 3,309).
    pub const MAX_SIGNATURE_LEN: usize = 4096;
    /// Longest free-text reason (revocation) in bytes.
    pub const MAX_REASON_LEN: usize = 512;
}

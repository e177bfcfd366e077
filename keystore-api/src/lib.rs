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
//!
//! # Example
//!
//! A soft store in a directory, a signing key, a derivation key and a MAC key
//! (the README's "Using it"):
//!
//! ```
//! use backend_soft::{Kdf, SoftStore, Unlock};
//! use keystore_api::{Actor, Algorithm, ErrorKind, KeySpec, Keystore, Role, SecretBytes, SignatureFormat, Usages};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! let unlock = Unlock::Passphrase(SecretBytes::from_slice(b"from your secret source"));
//! let store = SoftStore::create(dir.join("soft").as_path(), &unlock, Kdf::default_passphrase())?;
//! let ks = Keystore::open(store, &dir.join("metadata.sqlite"))?;
//! let officer = Actor::new("provisioning-station-3", Role::SecurityOfficer)?; // lifecycle ops state their actor
//!
//! ks.create(&officer, "device-identity", KeySpec::new(Algorithm::EcdsaP256Sha256))?;
//! let sig = ks.sign("device-identity", b"telemetry", SignatureFormat::Der)?;
//! assert_eq!(sig.version, 1);
//! let verified_by = ks.verify("device-identity", b"telemetry", &sig.bytes, None)?;
//! assert_eq!(verified_by, sig.version);
//! let pem = ks.public_key("device-identity")?.to_pem();
//! assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
//!
//! // A key holds `mac` or `derive`, never both; hmac-sha256 defaults to `mac`.
//! let kdf = KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE);
//! ks.create(&officer, "session-master", kdf)?;
//! let session_key = ks.derive_hkdf_sha256("session-master", b"salt", b"tls 1", 32)?; // zeroizing
//! assert_eq!(session_key.len(), 32);
//! ks.create(&officer, "telemetry-mac", KeySpec::new(Algorithm::HmacSha256))?;
//! let tag = ks.mac("telemetry-mac", b"frame 7")?;
//! ks.verify_mac("telemetry-mac", b"frame 7", &tag)?;
//!
//! // Errors carry a `Copy` kind to branch on, and the key and version as data.
//! ks.suspend(&officer, "device-identity", 1)?;
//! let err = ks.sign("device-identity", b"frame 8", SignatureFormat::Der).unwrap_err();
//! assert_eq!((err.kind(), err.key()), (ErrorKind::KeyState, Some("device-identity")));
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)] // allowed in one module: `generation` (a shared memory map)
#![warn(missing_docs, unreachable_pub)]

use keystore_backend::algorithm;
use keystore_backend::attestation;
mod audit;
pub mod cbom;
use keystore_backend::backend;
mod clock;
pub mod envelope;
pub use keystore_backend::error;
pub use keystore_backend::fsperm;
mod generation;
mod keystore;
mod lifecycle;
mod metadata;
use keystore_backend::public_key;
mod roles;
use keystore_backend::secret;
mod signature;
mod write_lock;

pub use audit::chain;
pub use clock::{parse_rfc3339, rfc3339};

pub use algorithm::{Algorithm, Capabilities, EcCurve, KeyClass, Operation, Usages};
pub use attestation::{AttestationKeyBlob, KeyAttestation, KeyCertification};
pub use audit::{
    public_keys_from_pem, ApplicationEvent, AuditCoverage, AuditEntry, AuditEvent, AuditExport,
    AuditReport, AuditSigner, Checkpoint, CheckpointReason, ErasedKey, ErasedVersion,
    ErasureCertificate, ErasureStatement, ExportedStore, OfflineReport, CHECKPOINT_DOMAIN,
    ERASURE_DOMAIN, MAX_APPLICATION_EVENT_LEN,
};
pub use backend::{
    Aead, AeadSealed, Backend, BackendKey, GeneratedKey, KeyAgreement, KeyHandle, KeyManagement,
    KeyWrap, Mac, NewKey, Signing,
};
pub use cbom::{to_cyclonedx, CertificateAsset};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Component, Error, ErrorKind, Result};
pub use fsperm::{LoosePermission, PermissionReport};
pub use keystore::inventory::{
    Inventory, KeyAsset, PublicKeyFacts, PublicKeyKind, StoreAsset, VersionAsset, AUDIT_KEY_NAME,
    AUDIT_SIGNER_NAME,
};
pub use keystore::{
    check_name, limits, Decommissioned, DueReason, EncryptionUsage, FaultPoint, KeyInfo, KeySpec,
    Keystore, OpenOptions, ReconcileReport, RollbackCounter, RotationDue, VersionInfo,
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_ENCRYPTION_BLOCK, DEFAULT_USAGE_DUE_SHARE,
    EVIDENCE_DOMAIN, MAX_ENCRYPTION_LIMIT,
};
pub use keystore_backend::agreement;
pub use keystore_backend::PeerPublicKey;
pub use keystore_backend::{CounterRef, MonotonicCounter};
pub use metadata::{Intent, KeyState, Origin};
pub use public_key::PublicKey;
pub use roles::{Actor, Duty, Role};
pub use secret::SecretBytes;
pub use signature::{Signature, SignatureFormat};
pub use write_lock::DEFAULT_LOCK_TIMEOUT;

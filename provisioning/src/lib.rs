//! # provisioning
//!
//! Manufacturing provisioning and the device PKI over keystore keys
//! (REQ-KEY-PROV-02, REQ-KEY-SOD-01, REQ-KEY-CERT-01, REQ-KEY-REV-03,
//! REQ-KEY-PIN-01):
//!
//! - [`RootCa`]: the offline root, whose key lives in its own keystore; it
//!   signs intermediates, revokes them ([`RootCa::revoke_intermediate`]) and
//!   issues the root's CRL.
//! - [`ceremony`]: the production keystore generates the intermediate key and
//!   CSR, the root signs it, the production side installs it.
//! - [`Factory`]: the production intermediate, the provisioning registry
//!   (SQLite; one unit per device id and per public key), device
//!   certificates, revocation and CRLs. It never opens the root's store.
//! - [`Device`]: the identity key inside the device's backend, its CSR, the
//!   certificates installed per key version.
//! - [`Provisioner`]: provisioning and [`Provisioner::renew_if_due`].
//! - [`PeerVerifier::check_peer`]: path, CRL (nextUpdate enforced) for every
//!   certificate on the path, expiry and pin checks with rustls-webpki
//!   (TEST-KEY-07).
//! - [`ProvisioningRecord`]: the YAML record.
//!
//! Every certificate, CSR and CRL is built by rcgen and signed through
//! [`KeystoreSigner`], an `rcgen::SigningKey` over [`keystore_api::Keystore::sign`]:
//! private keys never leave their backend. Everything is generic over
//! [`keystore_api::Backend`], so the root, the factory and the device can
//! each sit on soft, PKCS#11 or TPM stores.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod db;
pub mod device;
pub mod provision;
pub mod record;
pub mod signer;
pub mod util;
pub mod verify;
pub mod x509;

pub use ca::{
    ceremony, DeviceRequest, Factory, Issued, IssuedCert, RootCa, SignedIntermediate,
    INTERMEDIATE_KEY, ROOT_KEY,
};
pub use db::{Event, PkiDb};
pub use device::{shared_key_name, Device, InstalledCert, DEVICE_KEY};
pub use provision::{parse_batch, BatchEntry, Provisioned, Provisioner};
pub use record::{ProvisioningRecord, RecordKeys};
pub use signer::KeystoreSigner;
pub use verify::{PeerInfo, PeerRole, PeerVerifier, PinSet, RejectReason, Rejection};
pub use x509::{verify_csr, CertInfo, VerifiedCsr};

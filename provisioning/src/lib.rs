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
//!   (TEST-KEY-07); under a [`RevocationPolicy`] the end entity's status
//!   from a stapled or fetched OCSP response
//!   ([`PeerVerifier::check_peer_with_ocsp`], [`verify_ocsp_response`]).
//! - OCSP (RFC 6960): [`OcspResponder`] answers from the registry, signed
//!   by a delegated key ([`Factory::issue_ocsp_signer`], [`OCSP_SIGNER_KEY`]);
//!   [`serve_ocsp`] serves it over HTTP; [`fetch_ocsp`] and
//!   [`ocsp_request`] are the client side.
//! - EST (RFC 7030): [`EstServer`] serves `cacerts`, `simpleenroll` and
//!   `simplereenroll` over HTTPS; on the device, [`EstRenewal`] renews the
//!   identity over mTLS with the next key staged in pre-activation until
//!   its certificate is in hand, and [`Renewer`] runs it in the background.
//! - [`ProvisioningRecord`]: the YAML record.
//! - Key algorithms: every key the PKI creates (root, intermediate, OCSP
//!   signer, EST server, device identity) is ECDSA P-256 unless the
//!   builder says otherwise (`with_key_algorithm`,
//!   [`EstServerConfig::server_key_algorithm`]); ECDSA P-384, Ed25519 and
//!   RSA PKCS#1 v1.5 keys work too ([`PKI_ALGORITHMS`]), for certificates,
//!   CSRs, CRLs and OCSP responses alike.
//! - Helpers for files: [`pem_encode`], [`pem_decode_all`],
//!   [`der_from_pem_or_der`], and [`sha256_tag`] (the digest format of
//!   records and fingerprints).
//!
//! Everything public is re-exported here at the crate root; the modules
//! themselves are private.
//!
//! Every certificate, CSR and CRL is built by rcgen and signed through
//! [`KeystoreSigner`], an `rcgen::SigningKey` over [`keystore_api::Keystore::sign`]:
//! private keys never leave their backend. Everything is generic over
//! [`keystore_api::Backend`], so the root, the factory and the device can
//! each sit on soft, PKCS#11 or TPM stores.
//!
//! # Example
//!
//! A root, a production intermediate and one provisioned unit, each on its
//! own soft keystore:
//!
//! ```
//! use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
//! use keystore_api::{Actor, Keystore, Role};
//! use provisioning::{ceremony, Device, Factory, PkiDb, Provisioner, RootCa, DEVICE_KEY};
//! use std::path::Path;
//! use time::{Duration, OffsetDateTime};
//!
//! /// A soft keystore unlocked by a key file, and its PKI database, in `dir`.
//! fn store(dir: &Path) -> Result<(Keystore<SoftStore>, PkiDb), Box<dyn std::error::Error>> {
//!     std::fs::create_dir_all(dir)?;
//!     create_key_file(&dir.join("kek.key"))?;
//!     let unlock = Unlock::KeyFile(dir.join("kek.key"));
//!     let soft = SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile)?;
//!     let ks = Keystore::open(soft, &dir.join("metadata.sqlite"))?;
//!     Ok((ks, PkiDb::open(&dir.join("pki.sqlite"))?))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! let now = OffsetDateTime::now_utc();
//! let officer = Actor::new("officer-1", Role::SecurityOfficer)?;
//! let (root_ks, root_db) = store(&dir.join("root"))?; // offline, in a vault
//! let (prod_ks, prod_db) = store(&dir.join("factory"))?; // the production store
//! let (dev_ks, dev_db) = store(&dir.join("device"))?; // the unit's own store
//!
//! let root = RootCa::new(&root_ks, &root_db);
//! root.init(&officer, "Example Root CA", Duration::days(3650), now)?;
//! let factory = Factory::new(&prod_ks, &prod_db);
//! ceremony(&root, &officer, &factory, &officer, "Example Production CA", Duration::days(1095), now)?;
//!
//! let operator = Actor::new("line-3", Role::Operator)?;
//! let device = Device::new(&dev_ks, &dev_db, DEVICE_KEY)?;
//! let unit = Provisioner::new(&factory, operator.clone())
//!     .provision(&device, &operator, "DEV12345", "line-3", now)?;
//! assert!(unit.issued.chain_pem().contains("BEGIN CERTIFICATE"));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]

// Every module is private: the public surface is the re-exports below, and
// anything else is `pub(crate)` at most.
mod attestation;
mod ca;
mod db;
mod device;
mod est;
mod eventlog;
mod ocsp;
mod provision;
mod record;
// `Registry` is sealed: its operations (crate types in their signatures)
// are reachable only through the crate.
#[allow(private_interfaces)]
mod registry;
mod schema;
mod signer;
mod util;
mod verify;
mod x509;

// The CA hierarchy, the factory and their policy constants.
pub use ca::{
    ceremony, normalise_serial, DeviceRequest, Factory, Issued, IssuedCert, RootCa,
    SignedIntermediate, BACKDATE, DEFAULT_CRL_VALIDITY, DEFAULT_DEVICE_VALIDITY,
    DEFAULT_INTERMEDIATE_VALIDITY, DEFAULT_OCSP_SIGNER_VALIDITY, DEFAULT_ROOT_CRL_VALIDITY,
    DEFAULT_ROOT_VALIDITY, INTERMEDIATE_KEY, MAX_CRL_VALIDITY, MAX_OCSP_SIGNER_VALIDITY,
    MAX_VALIDITY, OCSP_SIGNER_KEY, ROOT_KEY,
};
// TPM key attestation at provisioning.
pub use attestation::{
    attest_tpm, AttestationPolicy, KeystoreAttester, TpmAttester, VerifiedAttestation,
    ATTESTED_TPM, UNATTESTED,
};
// The PKI database and its event log.
pub use db::PkiDb;
pub use eventlog::{station_id, Event, EventLogReport, EVENT_KEY};
// The provisioning registry: a station's own pki.sqlite, or PostgreSQL
// shared by many stations.
pub use registry::{PostgresRegistry, Registry};
// The device side and the flow across both sides.
pub use device::{shared_key_name, Device, InstalledCert, DEVICE_KEY};
pub use provision::{
    parse_batch, BatchEntry, Provisioned, Provisioner, DEFAULT_RENEWAL_GRACE, MAX_BATCH,
};
pub use record::{ProvisioningRecord, RecordKeys};
pub use signer::KeystoreSigner;
// PEM and the `sha256:` digest format.
pub use util::{der_from_pem_or_der, pem_decode_all, pem_encode, sha256_tag};
// Peer checks.
pub use verify::{PeerInfo, PeerRole, PeerVerifier, PinSet, RejectReason, Rejection};
// OCSP (RFC 6960): responder, HTTP server and client, response checks.
pub use ocsp::{
    fetch_ocsp, ocsp_request, serve_ocsp, verify_ocsp_response, OcspAnswer, OcspCertStatus,
    OcspResponder, OcspResponseCode, OcspServerConfig, OcspShutdown, RevocationPolicy,
    DEFAULT_OCSP_RESPONSE_VALIDITY, MAX_OCSP_REQUEST_LEN, MAX_OCSP_RESPONSE_LEN, OCSP_CLOCK_SKEW,
};
// EST (RFC 7030): the server, the device's renewal, the background renewer.
pub use est::{
    Backoff, EstClient, EstRenewal, EstServer, EstServerConfig, EstShutdown, OnRenewed, Pacer,
    RenewTask, Renewer, RenewerConfig, RenewerStatus, StopFlag, SystemPacer, DEFAULT_EST_MAX_BODY,
    DEFAULT_EST_SERVER_CERT_VALIDITY, DEFAULT_EST_TIMEOUT, EST_PATH, EST_SERVER_KEY,
    KEY_VERSION_HEADER,
};
// Certificates and CSRs.
pub use x509::{
    verify_csr, CertInfo, VerifiedCsr, DEFAULT_PKI_ALGORITHM, MAX_DER_LEN, PKI_ALGORITHMS,
};

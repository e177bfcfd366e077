//! Device PKI commands: `ca init-root|sign-intermediate|revoke-intermediate|root-crl|show|revoke|crl|check|events|ocsp-signer`,
//! `provision` (one device or a batch), `renew` and `ocsp serve`.
//!
//! Separation of duties (REQ-KEY-SOD-01): the root CA's key lives in its own
//! store (`--root-store`, soft, meant to be kept offline), opened only by
//! `ca init-root`, the `ca sign-intermediate` ceremony, and the custodian's
//! `ca revoke-intermediate` and `ca root-crl`, with the root custodian's own
//! credential. Every other command works on the production store (`--store`,
//! any backend) and never opens the root's store; the root's own commands
//! (other than the ceremony) never open the production store.
//!
//! Registry: `--registry postgresql://…` (or `KEYCTL_REGISTRY`) keeps the
//! provisioning registry and its event log in PostgreSQL, shared by every
//! station; without it they are in the production store's `pki.sqlite`.
//!
//! Files: the production store holds `pki.sqlite` (CA certificates, the
//! provisioning registry unless shared, CRL state, the event log) and `pki/` (root.pem,
//! intermediate.pem, crl.pem, and root-crl.pem, the root's CRL as published
//! by the custodian); the root's store holds root-ca.pem and root-crl.pem;
//! provisioned devices get `provisioned/<id>/{cert.pem,chain.pem,record.yaml}`
//! unless `--out-dir`.

mod args;
mod ca_cmd;
mod est_cmd;
mod ocsp_cmd;
mod provision_cmd;
mod renew_cmd;
mod stores;

pub use args::{CaCommand, ProvisionArgs, RenewArgs};
pub use ca_cmd::ca;
pub(crate) use ca_cmd::event_log_report;
pub use est_cmd::{est, EstCommand};
pub use ocsp_cmd::{ocsp, OcspCommand};
pub use provision_cmd::provision;
pub use renew_cmd::renew;
pub use stores::set_registry;
/// Environment variable holding the root custodian's credential.
pub const ROOT_SECRET_ENV: &str = "KEYCTL_ROOT_SECRET";
/// Environment variable holding the root store's passphrase.
pub const ROOT_PASSPHRASE_ENV: &str = "KEYCTL_ROOT_PASSPHRASE";

/// Largest certificate/CRL/chain/batch file read.
const MAX_PKI_FILE: usize = 1024 * 1024;
const MAX_BATCH_FILE: usize = 64 * 1024 * 1024;

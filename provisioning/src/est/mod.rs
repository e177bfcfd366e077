//! EST enrollment (RFC 7030): the device renews itself in the field.
//!
//! Server side, [`EstServer`] serves EST over HTTPS, issuing with the
//! production intermediate through [`Factory`](crate::Factory) (the one
//! issuance path; every issue and refusal in the PKI event log):
//!
//! | operation | authentication | answer |
//! |---|---|---|
//! | `GET /.well-known/est/cacerts` | none | the intermediate and the root, certs-only |
//! | `POST …/simpleenroll` (off unless [`EstServerConfig::enroll`]) | HTTP Basic: an operator's credential of the production keystore | the unit's first certificate ([`Factory::provision`](crate::Factory::provision)) |
//! | `POST …/simplereenroll` | the device's current certificate over mTLS | a renewed certificate ([`Factory::renew`](crate::Factory::renew)) |
//!
//! Re-enrollment is refused (403) for a certificate that is expired,
//! revoked, not issued by this CA, or superseded past its grace, and for a
//! CSR naming another subject; 409 when the CSR's key was issued before;
//! 400 for a malformed body or CSR, or one whose signature (the proof of
//! possession) fails; 401 without credentials; 413, 415 for bodies too
//! large or of another type. Bodies are base64 (RFC 8951).
//!
//! Device side, [`EstRenewal`] renews the identity key without ever leaving
//! the device without a valid pair: the next version is staged in
//! pre-activation ([`Keystore::rotate_staged`](keystore_api::Keystore::rotate_staged)), signs its CSR there
//! ([`Keystore::sign_pre_active`](keystore_api::Keystore::sign_pre_active)), and becomes active
//! ([`Keystore::activate`](keystore_api::Keystore::activate)) only once its certificate validated and was
//! installed. [`Renewer`] runs it in the background on a jittered schedule.
//! `docs/design/est.md` walks through the states at each step.

mod client;
mod enroll;
mod renew;
mod renewer;
mod server;
mod tls;
mod wire;

pub use client::{EstClient, DEFAULT_EST_TIMEOUT};
pub use renew::EstRenewal;
pub use renewer::{
    Backoff, OnRenewed, Pacer, RenewTask, Renewer, RenewerConfig, RenewerStatus, StopFlag,
    SystemPacer,
};
pub use server::{
    EstServer, EstServerConfig, EstShutdown, DEFAULT_EST_MAX_BODY, EST_PATH, KEY_VERSION_HEADER,
};
pub use tls::{DEFAULT_EST_SERVER_CERT_VALIDITY, EST_SERVER_KEY};

//! The provisioning registry: the units, their public keys, the certificates
//! issued to them, revocations, and the event log, behind one trait
//! ([`Registry`]) with two implementations:
//!
//! - a station's own `pki.sqlite` ([`PkiDb`](crate::PkiDb), the embedded
//!   default);
//! - PostgreSQL shared by every station of a factory ([`PostgresRegistry`]).
//!
//! Both enforce uniqueness of device id, public-key fingerprint and
//! certificate serial with the database's own constraints (primary keys), so
//! two stations racing for one id or one key cannot both win, whatever they
//! read before. An issuance writes its rows and its event in one
//! transaction, so a station that dies mid-way leaves all or nothing.

mod pg_schema;
mod postgres;
mod sqlite;

pub use postgres::PostgresRegistry;

use crate::ca::IssuedCert;
use crate::eventlog::{Event, EventSigner, StoredEvent, StoredHead};
use keystore_api::{Error, Result};

/// A provisioning registry: where a factory records units, keys,
/// certificates, revocations and its event log. Implemented by
/// [`PkiDb`](crate::PkiDb) (a station's own SQLite file) and
/// [`PostgresRegistry`] (shared by many stations); sealed.
#[allow(private_bounds)]
pub trait Registry: sealed::RegistryOps + Send + Sync + std::fmt::Debug {}

impl<T: sealed::RegistryOps + Send + Sync + std::fmt::Debug> Registry for T {}

/// The operations behind [`Registry`]; unnameable outside the crate.
pub(crate) mod sealed {
    use super::*;

    /// What a registry does. Every write is one transaction.
    pub trait RegistryOps {
        /// Where the registry is, for messages (never a password).
        fn location(&self) -> String;
        /// Whether several stations share it (events carry their station).
        fn shared(&self) -> bool;
        /// A registered unit.
        fn device(&self, device_id: &str) -> Result<Option<DeviceRow>>;
        /// The unit a public key is registered to, and the key's version.
        fn key_owner(&self, fingerprint: &str) -> Result<Option<(String, u32)>>;
        /// Every certificate issued to a unit, oldest first.
        fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCert>>;
        /// The certificate with `serial`.
        fn issued(&self, serial: &str) -> Result<Option<IssuedRow>>;
        /// Number of registered units.
        fn device_count(&self) -> Result<u64>;
        /// Every revoked certificate `issuer_serial` issued: serial,
        /// revocation time and reason, oldest revocation first.
        fn revoked_under(
            &self,
            issuer_serial: &str,
        ) -> Result<Vec<(String, String, Option<String>)>>;
        /// Writes an issuance's rows and its event in one transaction; a
        /// taken device id, key or serial is `AlreadyExists`, a renewal of
        /// an unknown unit `NotFound`, and nothing is written then.
        fn register(
            &self,
            reg: &Registration<'_>,
            event: &mut Event,
            signer: &EventSigner<'_>,
        ) -> Result<()>;
        /// Marks certificate `serial` revoked and appends the event that
        /// `event_for(device_id)` describes, in one transaction;
        /// `NotFound` for an unknown serial, `KeyState` for one revoked
        /// already.
        fn revoke(
            &self,
            serial: &str,
            at: &str,
            reason: &str,
            event_for: &(dyn Fn(&str) -> Result<Event> + Sync),
            signer: &EventSigner<'_>,
        ) -> Result<()>;
        /// Appends one event.
        fn append(&self, event: &mut Event, signer: &EventSigner<'_>) -> Result<()>;
        /// Every event, oldest first, and the head.
        fn events(&self) -> Result<(Vec<StoredEvent>, Option<StoredHead>)>;
    }
}

/// A registered unit's row.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    pub operator: String,
    pub provisioned_at: String,
    pub record_yaml: String,
    /// [`ATTESTED_TPM`](crate::ATTESTED_TPM) or [`UNATTESTED`](crate::UNATTESTED).
    pub attestation: String,
    /// The attestation evidence's digest, when attested.
    pub attestation_digest: Option<String>,
}

/// An issued certificate's row, as EST and OCSP read it.
#[derive(Debug, Clone)]
pub(crate) struct IssuedRow {
    pub device_id: String,
    pub issuer_serial: String,
    pub der: Vec<u8>,
    pub revoked_at: Option<String>,
    pub reason: Option<String>,
    pub grace_end: Option<String>,
}

/// Everything an issuance writes.
#[derive(Debug)]
pub(crate) struct Registration<'r> {
    pub device_id: &'r str,
    pub operator: &'r str,
    /// `sha256:` fingerprint of the certified public key.
    pub fingerprint: &'r str,
    pub key_version: u32,
    pub serial: &'r str,
    pub issuer_serial: &'r str,
    pub der: &'r [u8],
    pub digest: &'r str,
    pub not_before: String,
    pub not_after: String,
    /// The issuance time (RFC 3339).
    pub now: String,
    /// A first provisioning: the unit's record (YAML) and event id. `None`
    /// for a renewal.
    pub first: Option<(String, String)>,
    /// A renewal: when the unit's current certificates' grace ends.
    pub grace_end: Option<String>,
    /// A first provisioning of an attested key: the evidence digest.
    pub attestation: Option<&'r str>,
}

impl Registration<'_> {
    /// The unit's attestation state.
    pub(crate) fn attestation_state(&self) -> &'static str {
        match self.attestation {
            Some(_) => crate::ATTESTED_TPM,
            None => crate::UNATTESTED,
        }
    }
}

/// The message of a taken device id.
pub(crate) fn device_taken(device_id: &str) -> String {
    format!("device '{device_id}' is already provisioned; a unit is provisioned once")
}

/// The message of a taken public key.
pub(crate) fn key_taken(fingerprint: &str) -> String {
    format!(
        "public key {fingerprint} is already registered to a unit; a key is never issued to two units"
    )
}

/// The message of a taken serial.
pub(crate) fn serial_taken(serial: &str) -> String {
    format!("certificate serial {serial} was already issued")
}

/// `NotFound`: a renewal for a unit the registry does not hold.
pub(crate) fn not_registered(device_id: &str) -> Error {
    Error::not_found(format!(
        "device '{device_id}' is not registered; provision it first"
    ))
}

/// `NotFound`: no certificate with `serial`.
pub(crate) fn unknown_serial(serial: &str) -> Error {
    Error::not_found(format!(
        "no certificate with serial {serial} was issued here"
    ))
}

/// `KeyState`: certificate `serial` was revoked at `at` already.
pub(crate) fn already_revoked(serial: &str, at: &str) -> Error {
    Error::key_state(format!("certificate {serial} was already revoked at {at}"))
}

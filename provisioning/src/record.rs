//! The provisioning record (REQ-KEY-PROV-02), in YAML, with the fields of the
//! source pattern:
//!
//! ```yaml
//! device_id: DEV12345
//! keys:
//!   identity_cert: sha256:abcd...
//!   bootstrap_ca: sha256:1234...
//! date: 2026-01-04
//! operator: line-3
//! ```
//!
//! plus the identity key's fingerprint and version, the issuing CA, the
//! certificate's serial and expiry, and the id and time of the provisioning
//! event, so that the record can be traced to the registry and the audit log.

use keystore_api::{Component, Error, Result};
use serde::{Deserialize, Serialize};

/// The digests of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordKeys {
    /// `sha256:` of the identity certificate's DER.
    pub identity_cert: String,
    /// `sha256:` of the root CA certificate's DER: the anchor the device trusts.
    pub bootstrap_ca: String,
    /// `sha256:` of the issuing (intermediate) CA certificate's DER.
    pub issuing_ca: String,
    /// `sha256:` of the identity key's SubjectPublicKeyInfo (the keystore fingerprint).
    pub identity_key: String,
    /// The identity key's version in the device's keystore.
    pub identity_key_version: u32,
}

/// One unit's provisioning record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningRecord {
    /// The unit's id (certificate CN and serialNumber).
    pub device_id: String,
    /// Digests of the unit's keys and certificates.
    pub keys: RecordKeys,
    /// Provisioning date, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The production line or station that provisioned the unit.
    pub operator: String,
    /// Who ran the provisioning (the authenticated actor id).
    pub actor: String,
    /// RFC 3339 UTC time of provisioning.
    pub provisioned_at: String,
    /// The id of the provisioning event in the registry's event log.
    pub event_id: String,
    /// The identity certificate's serial number (hex).
    pub certificate_serial: String,
    /// The identity certificate's expiry (RFC 3339 UTC).
    pub certificate_not_after: String,
    /// The backend that holds the identity key (`soft`, `pkcs11`, `tpm`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_backend: Option<String>,
    /// `attested-tpm sha256:<evidence digest>` when the identity key's TPM
    /// residence was proven at provisioning; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}

impl ProvisioningRecord {
    /// The record as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        let body = serde_yaml_ng::to_string(self).map_err(|e| {
            Error::backend(
                Component::Provisioning,
                "cannot encode the record as YAML",
                e,
            )
        })?;
        Ok(format!("# REQ-KEY-PROV-02 provisioning record\n{body}"))
    }

    /// Parses a record written by [`ProvisioningRecord::to_yaml`].
    pub fn from_yaml(text: &str) -> Result<Self> {
        if text.len() > 64 * 1024 {
            return Err(Error::invalid_input(
                "a provisioning record is at most 64 KiB",
            ));
        }
        serde_yaml_ng::from_str(text)
            .map_err(|e| Error::invalid_input(format!("not a provisioning record: {e}")))
    }
}

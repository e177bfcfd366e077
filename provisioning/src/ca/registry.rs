//! Registry rows: installing CA certificates and reading what the registry
//! holds about devices.

use super::factory::{Factory, IssuedCert};
use crate::db::unique_or;
use crate::record::ProvisioningRecord;
use crate::util::{check_device_id, rfc3339};
use crate::x509::CertInfo;
use keystore_api::{Backend, Error, Result};
use rusqlite::params;
use time::OffsetDateTime;

pub(super) fn insert_ca(
    tx: &rusqlite::Transaction<'_>,
    role: &str,
    key: Option<(&str, u32)>,
    info: &CertInfo,
    now: OffsetDateTime,
) -> Result<()> {
    tx.execute(
        "INSERT INTO ca_certs (serial, role, key_name, key_version, der, digest, not_after, installed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            info.serial,
            role,
            key.map(|k| k.0),
            key.map(|k| k.1),
            info.der,
            info.digest,
            rfc3339(info.not_after),
            rfc3339(now)
        ],
    )
    .map_err(|e| {
        unique_or(e, || {
            format!("CA certificate {} is already installed", info.serial)
        })
    })?;
    Ok(())
}

impl<'a, B: Backend> Factory<'a, B> {
    /// The provisioning record of a device.
    pub fn record(&self, device_id: &str) -> Result<ProvisioningRecord> {
        check_device_id(device_id)?;
        let row = self
            .registry
            .device(device_id)?
            .ok_or_else(|| Error::not_found(format!("device '{device_id}' is not registered")))?;
        ProvisioningRecord::from_yaml(&row.record_yaml)
    }

    /// Every certificate issued to a device, oldest first.
    pub fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCert>> {
        check_device_id(device_id)?;
        self.registry.certificates(device_id)
    }

    /// Number of registered devices.
    pub fn device_count(&self) -> Result<u64> {
        self.registry.device_count()
    }

    /// The pins to accept for a device at `now`: the SPKI fingerprints of
    /// its unrevoked certificates that are current or superseded within
    /// their grace (old and new during a transition, REQ-KEY-PIN-01).
    pub fn pins_for_device(&self, device_id: &str, now: OffsetDateTime) -> Result<crate::PinSet> {
        let mut pins = crate::PinSet::new();
        for c in self.certificates(device_id)? {
            if c.revoked_at.is_some() {
                continue;
            }
            let in_grace = match &c.grace_end {
                None => true,
                Some(end) => now < crate::util::parse_time(end)?,
            };
            if in_grace {
                pins.insert(&c.fingerprint)?;
            }
        }
        Ok(pins)
    }
}

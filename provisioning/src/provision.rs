//! The provisioning flow across the two sides: the device generates its
//! identity key and CSR, the factory registers the unit and issues a
//! short-lived certificate, the device installs it; renewal before expiry
//! (REQ-KEY-CERT-01) rotates the key and repeats the exchange.

use crate::attestation::{attest_tpm, AttestationPolicy, TpmAttester};
use crate::ca::{DeviceRequest, Factory, Issued, DEFAULT_DEVICE_VALIDITY};
use crate::device::{Device, InstalledCert};
use crate::eventlog::EventFields;
use crate::record::ProvisioningRecord;
use crate::util::{check_device_id, check_operator};
use crate::x509::CertInfo;
use keystore_api::{Actor, Backend, Error, ErrorKind, Result};
use sha2::Digest;
use time::{Duration, OffsetDateTime};

/// Default grace of a rotated identity key and its superseded certificate.
pub const DEFAULT_RENEWAL_GRACE: Duration = Duration::days(7);

/// What provisioning one unit produced.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// What the factory issued (certificate, chain, record, event id).
    pub issued: Issued,
    /// What the device installed.
    pub installed: InstalledCert,
}

/// Runs provisioning and renewal against one factory.
pub struct Provisioner<'f, P: Backend> {
    factory: &'f Factory<'f, P>,
    factory_actor: Actor,
    validity: Duration,
    grace: Duration,
    attestation: AttestationPolicy,
}

impl<P: Backend> Clone for Provisioner<'_, P> {
    fn clone(&self) -> Self {
        Provisioner {
            factory: self.factory,
            factory_actor: self.factory_actor.clone(),
            validity: self.validity,
            grace: self.grace,
            attestation: self.attestation.clone(),
        }
    }
}

impl<P: Backend> std::fmt::Debug for Provisioner<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("validity", &self.validity)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<'f, P: Backend> Provisioner<'f, P> {
    /// A provisioner acting on `factory` as `factory_actor` (operator or
    /// security officer), issuing 30-day certificates with a 7-day grace.
    pub fn new(factory: &'f Factory<'f, P>, factory_actor: Actor) -> Self {
        Provisioner {
            factory,
            factory_actor,
            validity: DEFAULT_DEVICE_VALIDITY,
            grace: DEFAULT_RENEWAL_GRACE,
            attestation: AttestationPolicy::default(),
        }
    }

    /// Sets whom [`provision_attested`](Self::provision_attested) trusts to
    /// vouch for TPMs (none by default: every attestation is refused).
    pub fn with_attestation_policy(mut self, policy: AttestationPolicy) -> Self {
        self.attestation = policy;
        self
    }

    /// Sets the certificate validity.
    pub fn with_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// Sets the renewal grace.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Provisions one unit: identity key generated inside the device's
    /// backend, CSR (CN and serialNumber = `device_id`) signed by it and
    /// verified, registry check (device id and key unique), certificate from
    /// the intermediate, stored with the key version on the device, record
    /// and event written. `device_actor` creates the key in the device's
    /// keystore (operator or security officer there).
    pub fn provision<D: Backend>(
        &self,
        device: &Device<'_, D>,
        device_actor: &Actor,
        device_id: &str,
        operator: &str,
        now: OffsetDateTime,
    ) -> Result<Provisioned> {
        self.provision_with(device, device_actor, None, device_id, operator, now)
    }

    /// As [`Provisioner::provision`], with the identity key's TPM residence
    /// proven before the factory issues ([`attest_tpm`] against `attester`,
    /// the device's TPM, under the provisioner's
    /// [`with_attestation_policy`](Self::with_attestation_policy)). A failed attestation is recorded
    /// in the registry's event log (`attestation-refused`, naming the step)
    /// and returned; nothing is registered and the key stays uncertified.
    pub fn provision_attested<D: Backend>(
        &self,
        device: &Device<'_, D>,
        device_actor: &Actor,
        attester: &mut dyn TpmAttester,
        device_id: &str,
        operator: &str,
        now: OffsetDateTime,
    ) -> Result<Provisioned> {
        self.provision_with(
            device,
            device_actor,
            Some(attester),
            device_id,
            operator,
            now,
        )
    }

    fn provision_with<D: Backend>(
        &self,
        device: &Device<'_, D>,
        device_actor: &Actor,
        attest: Option<&mut dyn TpmAttester>,
        device_id: &str,
        operator: &str,
        now: OffsetDateTime,
    ) -> Result<Provisioned> {
        check_device_id(device_id)?;
        check_operator(operator)?;
        // Fail before generating a key when the unit is already registered,
        // unless this very device was registered and then interrupted before
        // installing its certificate: then finish that.
        match self.factory.record(device_id) {
            Ok(r) => {
                if let Some(done) = self.resume(device, device_actor, &r, now)? {
                    return Ok(done);
                }
                return Err(Error::already_exists(format!(
                    "device '{device_id}' was already provisioned at {} by {}; a unit is provisioned once",
                    r.provisioned_at, r.operator
                )));
            }
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
        let (csr, version) = device.generate(device_actor, device_id)?;
        Factory::<P>::check_generated(device.keystore(), device.key_name(), version)?;
        let attestation = match attest {
            None => None,
            Some(attester) => {
                match attest_tpm(&self.attestation, attester, csr.public_key.spki_der()) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.factory.log_event(
                            None,
                            &self.factory_actor,
                            now,
                            EventFields {
                                event: "attestation-refused",
                                device_id: Some(device_id),
                                fingerprint: Some(&csr.fingerprint()),
                                detail: e.message(),
                                ..EventFields::default()
                            },
                        )?;
                        return Err(e);
                    }
                }
            }
        };
        let request = DeviceRequest {
            device_id,
            operator,
            csr_der: &csr.der,
            key_version: version,
            validity: self.validity,
            device_backend: Some(device.keystore().backend_name()),
        };
        let issued = match &attestation {
            Some(a) => self
                .factory
                .provision_attested(&self.factory_actor, &request, a, now)?,
            None => self.factory.provision(&self.factory_actor, &request, now)?,
        };
        let installed = device.install(
            device_id,
            version,
            &issued.certificate.der,
            &issued.chain_pem(),
            now,
        )?;
        // The device keystore's own audit trail records the provisioning too.
        device.keystore().record_event(
            device_actor,
            "provision",
            Some((device.key_name(), version)),
            &format!(
                "device {device_id} provisioned by operator {operator}; certificate sha256:{}",
                hex::encode(sha2::Sha256::digest(&issued.certificate.der))
            ),
        )?;
        Ok(Provisioned { issued, installed })
    }

    /// Finishes a provisioning that registered the unit but was interrupted
    /// (a crash, a kill) before the device installed its certificate: when
    /// the registered key is `device`'s active identity version, the device
    /// has no certificate for it, and the registered certificate was issued
    /// by this factory's intermediate under its root, that certificate is
    /// installed and the result returned as if just issued. `None` when any
    /// of that does not hold (another unit, or a finished one).
    fn resume<D: Backend>(
        &self,
        device: &Device<'_, D>,
        device_actor: &Actor,
        record: &ProvisioningRecord,
        now: OffsetDateTime,
    ) -> Result<Option<Provisioned>> {
        let info = match device.keystore().info(device.key_name()) {
            Ok(info) => info,
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(active) = info.active() else {
            return Ok(None);
        };
        let keys = &record.keys;
        if active.fingerprint.as_deref() != Some(keys.identity_key.as_str())
            || active.version != keys.identity_key_version
            || device.current()?.is_some()
        {
            return Ok(None);
        }
        let Some(issued) = self
            .factory
            .certificates(&record.device_id)?
            .into_iter()
            .find(|c| c.serial == record.certificate_serial && c.revoked_at.is_none())
        else {
            return Ok(None);
        };
        let (intermediate, root) = (self.factory.intermediate()?, self.factory.root()?);
        if intermediate.digest != keys.issuing_ca || root.digest != keys.bootstrap_ca {
            return Ok(None);
        }
        let issued = Issued {
            certificate: CertInfo::parse(&issued.der)?,
            intermediate,
            root,
            record: record.clone(),
            event_id: record.event_id.clone(),
        };
        let installed = device.install(
            &record.device_id,
            active.version,
            &issued.certificate.der,
            &issued.chain_pem(),
            now,
        )?;
        device.keystore().record_event(
            device_actor,
            "provision",
            Some((device.key_name(), active.version)),
            &format!(
                "device {} provisioned (resumed: the registered certificate sha256:{} installed)",
                record.device_id,
                hex::encode(sha2::Sha256::digest(&issued.certificate.der))
            ),
        )?;
        Ok(Some(Provisioned { issued, installed }))
    }

    /// Renews the device's certificate if it expires within `threshold` of
    /// `now` (or has expired): stages the next identity key version
    /// ([`Device::stage`], pre-activation), gets a certificate for it,
    /// installs it, and only then activates it with the provisioner's grace
    /// for the old one, so a failure at any step leaves the old pair
    /// current (a staged version is reused by the next call, or discarded
    /// when the factory already registered its key). The old certificate
    /// stays valid, and its key pinned, until the grace ends. Returns
    /// `None` when no renewal is due.
    /// `device_actor` needs the security-officer role on the device's
    /// keystore (rotation).
    pub fn renew_if_due<D: Backend>(
        &self,
        device: &Device<'_, D>,
        device_actor: &Actor,
        now: OffsetDateTime,
        threshold: Duration,
    ) -> Result<Option<Provisioned>> {
        if threshold < Duration::ZERO {
            return Err(Error::invalid_input(
                "a renewal threshold cannot be negative",
            ));
        }
        let current = device.current()?.ok_or_else(|| {
            Error::not_found(format!(
                "identity key '{}' has no certificate for its active version; provision it first",
                device.key_name()
            ))
        })?;
        if current.not_after - now > threshold {
            return Ok(None);
        }
        let device_id = current.device_id.clone();
        let (csr, version) = device.stage(device_actor, &device_id)?;
        Factory::<P>::check_generated(device.keystore(), device.key_name(), version)?;
        let issued = self.factory.renew(
            &self.factory_actor,
            &DeviceRequest {
                device_id: &device_id,
                operator: self.factory_actor.id(),
                csr_der: &csr.der,
                key_version: version,
                validity: self.validity,
                device_backend: Some(device.keystore().backend_name()),
            },
            self.grace,
            now,
        );
        let issued = match issued {
            Ok(issued) => issued,
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                // The registry holds the staged key already: never reuse it.
                device.discard_staged(device_actor, version)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let installed = device.install(
            &device_id,
            version,
            &issued.certificate.der,
            &issued.chain_pem(),
            now,
        )?;
        device.activate(device_actor, version, self.grace)?;
        Ok(Some(Provisioned { issued, installed }))
    }
}

/// One line of a batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Line number, from 1.
    pub line: usize,
    /// The device id.
    pub device_id: String,
    /// The operator (from the line, else the default).
    pub operator: String,
}

/// Largest batch accepted.
pub const MAX_BATCH: usize = 1_000_000;

/// Parses a batch file: one device id per line, or `device_id,operator`
/// (CSV); blank lines and `#` comments are skipped, and a first line
/// `device_id[,operator]` is taken as a header. Every line is checked before
/// anything is provisioned; duplicates within the file are refused.
pub fn parse_batch(text: &str, default_operator: Option<&str>) -> Result<Vec<BatchEntry>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split(',').map(str::trim);
        let id = cols.next().unwrap_or_default();
        let op = cols.next();
        if cols.next().is_some() {
            return Err(Error::invalid_input(format!(
                "batch line {}: expected 'device_id' or 'device_id,operator'",
                i + 1
            )));
        }
        if out.is_empty() && id.eq_ignore_ascii_case("device_id") {
            continue;
        }
        let bad = |e: Error| Error::invalid_input(format!("batch line {}: {}", i + 1, e.message()));
        check_device_id(id).map_err(bad)?;
        let operator = match (op.filter(|o| !o.is_empty()), default_operator) {
            (Some(o), _) | (None, Some(o)) => o.to_string(),
            (None, None) => {
                return Err(Error::invalid_input(format!(
                    "batch line {}: no operator on the line and no --operator given",
                    i + 1
                )))
            }
        };
        check_operator(&operator).map_err(bad)?;
        if !seen.insert(id.to_string()) {
            return Err(Error::already_exists(format!(
                "batch line {}: device '{id}' appears twice in the batch",
                i + 1
            )));
        }
        if out.len() >= MAX_BATCH {
            return Err(Error::invalid_input(format!(
                "a batch holds at most {MAX_BATCH} devices"
            )));
        }
        out.push(BatchEntry {
            line: i + 1,
            device_id: id.to_string(),
            operator,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid_input("the batch file names no device"));
    }
    Ok(out)
}

//! The production side ([`Factory`]): its request types, the intermediate's
//! installation, and provisioning and renewal entry points.

use super::cert::verify_signed_by;
use super::issue::Issuance;
use super::registry::insert_ca;
use super::INTERMEDIATE_KEY;
use crate::attestation::VerifiedAttestation;
use crate::db::{self, commit, insert_event, opt, PkiDb};
use crate::eventlog::{ensure_event_key, EventFields, EventLogReport, EventSigner};
use crate::record::ProvisioningRecord;
use crate::registry::Registry;
use crate::signer::KeystoreSigner;
use crate::util::rfc3339;
use crate::x509::{check_pki_algorithm, cn_subject, CertInfo, VerifiedCsr, DEFAULT_PKI_ALGORITHM};
use keystore_api::{
    Actor, Algorithm, Backend, Duty, Error, ErrorKind, KeySpec, Keystore, Origin, Result, Usages,
};
use rusqlite::{params, Transaction};
use time::{Duration, OffsetDateTime};

/// A certificate the intermediate issued to a device.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The device certificate.
    pub certificate: CertInfo,
    /// The intermediate certificate (the rest of the chain a device presents).
    pub intermediate: CertInfo,
    /// The root certificate (the device's bootstrap trust anchor).
    pub root: CertInfo,
    /// The provisioning record (for a renewal: the record of the original
    /// provisioning is kept; this one describes the new certificate).
    pub record: ProvisioningRecord,
    /// The id of the registry event.
    pub event_id: String,
}

impl Issued {
    /// The chain a device presents: its certificate, then the intermediate, as PEM.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.certificate.pem(), self.intermediate.pem())
    }
}

/// A request from a device to the factory.
#[derive(Debug, Clone)]
pub struct DeviceRequest<'r> {
    /// The unit's id.
    pub device_id: &'r str,
    /// The production line or station.
    pub operator: &'r str,
    /// The CSR (DER), signed by the device's identity key.
    pub csr_der: &'r [u8],
    /// The identity key's version in the device's keystore.
    pub key_version: u32,
    /// Certificate validity.
    pub validity: Duration,
    /// The device's backend, for the record.
    pub device_backend: Option<&'r str>,
}

/// A revoked or superseded-certificate summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial, hex.
    pub serial: String,
    /// The device.
    pub device_id: String,
    /// SPKI fingerprint.
    pub fingerprint: String,
    /// Key version.
    pub key_version: u32,
    /// Expiry (RFC 3339).
    pub not_after: String,
    /// When superseded by a renewal, if it was.
    pub superseded_at: Option<String>,
    /// End of the superseded certificate's grace.
    pub grace_end: Option<String>,
    /// When revoked, if it was.
    pub revoked_at: Option<String>,
    /// The DER certificate.
    pub der: Vec<u8>,
}

/// The production side: the intermediate CA, the provisioning registry, CRLs.
/// Never opens the root's store.
pub struct Factory<'a, B: Backend> {
    pub(super) ks: &'a Keystore<B>,
    /// The station's own PKI database: CA certificates, CRL state, OCSP
    /// signers.
    pub(super) db: &'a PkiDb,
    /// The provisioning registry ([`Factory::with_registry`]); `db` unless
    /// a shared one is set.
    pub(crate) registry: &'a dyn Registry,
    /// The OCSP URL device certificates carry ([`Factory::with_ocsp_url`]).
    pub(super) ocsp_url: Option<String>,
    /// The algorithm of the keys the factory creates
    /// ([`Factory::with_key_algorithm`]).
    pub(super) key_algorithm: Algorithm,
    /// Whether a first provisioning needs a TPM key attestation
    /// ([`Factory::require_attestation`]).
    pub(super) attestation_required: bool,
    /// This station's id in a shared registry, computed once (a MAC).
    station: std::sync::OnceLock<String>,
}

impl<B: Backend> std::fmt::Debug for Factory<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("key_algorithm", &self.key_algorithm)
            .field("registry", &self.registry.location())
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> Factory<'a, B> {
    /// The factory over the production keystore `ks` and its PKI database,
    /// which holds the registry too; the keys it creates are ECDSA P-256
    /// ([`DEFAULT_PKI_ALGORITHM`](crate::DEFAULT_PKI_ALGORITHM)).
    pub fn new(ks: &'a Keystore<B>, db: &'a PkiDb) -> Self {
        Factory {
            ks,
            db,
            registry: db,
            ocsp_url: None,
            key_algorithm: DEFAULT_PKI_ALGORITHM,
            attestation_required: false,
            station: std::sync::OnceLock::new(),
        }
    }

    /// Makes TPM key attestation mandatory (a product line of TPM devices):
    /// [`Factory::provision`] without a [`VerifiedAttestation`] is then
    /// refused (`Policy`), and the refusal is recorded in the event log.
    pub fn require_attestation(mut self, required: bool) -> Self {
        self.attestation_required = required;
        self
    }

    /// Whether TPM key attestation is mandatory.
    pub fn attestation_required(&self) -> bool {
        self.attestation_required
    }

    /// Keeps the registry (units, keys, certificates, revocations and the
    /// event log) in `registry`, shared with other stations, instead of the
    /// station's own database; CA certificates, CRL state and OCSP signers
    /// stay in the station's database.
    pub fn with_registry(mut self, registry: &'a dyn Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Where the registry is (never a password).
    pub fn registry_location(&self) -> String {
        self.registry.location()
    }

    /// Whether the registry is the station's own database (then an event
    /// can be written in the same transaction as the station's rows).
    fn registry_is_local(&self) -> bool {
        std::ptr::addr_eq(
            self.registry as *const dyn Registry,
            self.db as *const PkiDb,
        )
    }

    /// What seals this factory's events: its event key, and in a shared
    /// registry its station id (one MAC, computed on first use).
    pub(crate) fn event_signer(&self) -> Result<EventSigner<'a>> {
        let station = match (self.registry.shared(), self.station.get()) {
            (false, _) => None,
            (true, Some(s)) => Some(s.clone()),
            (true, None) => {
                let s = crate::eventlog::station_id(self.ks)?;
                Some(self.station.get_or_init(|| s).clone())
            }
        };
        Ok(EventSigner::new(self.ks, station))
    }

    /// Appends an event to the registry's log. With `local`, a write
    /// transaction of the station's database: when that database is the
    /// registry, the event is written in it (committed together); with a
    /// shared registry, it is appended there first, so the caller's rows
    /// are committed only once the event is recorded.
    pub(crate) fn log_event(
        &self,
        local: Option<&Transaction<'_>>,
        actor: &Actor,
        now: OffsetDateTime,
        fields: EventFields<'_>,
    ) -> Result<String> {
        let mut e = fields.to_event(actor, now)?;
        let signer = self.event_signer()?;
        match local {
            Some(tx) if self.registry_is_local() => insert_event(tx, &signer, &mut e)?,
            _ => self.registry.append(&mut e, &signer)?,
        }
        Ok(e.id)
    }

    /// Sets the algorithm of the keys the factory creates: the
    /// intermediate's ([`request_intermediate`](Self::request_intermediate))
    /// and the delegated OCSP signer's
    /// ([`issue_ocsp_signer`](Self::issue_ocsp_signer)). It must be one of
    /// [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS), checked when a key is
    /// created. It applies only then: a key the store already holds keeps its
    /// algorithm through rotations, and device keys are the device's
    /// ([`Device::with_key_algorithm`](crate::Device::with_key_algorithm)).
    pub fn with_key_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.key_algorithm = algorithm;
        self
    }

    /// The algorithm of the keys the factory creates.
    pub fn key_algorithm(&self) -> Algorithm {
        self.key_algorithm
    }

    /// The production keystore.
    pub fn keystore(&self) -> &'a Keystore<B> {
        self.ks
    }

    /// Generates the intermediate key inside the production backend, with
    /// the factory's [`key_algorithm`](Self::key_algorithm) (or reuses the
    /// key left by an interrupted ceremony or a rotation, whatever its
    /// algorithm), and returns its CSR. Needs the security-officer role.
    ///
    /// # Errors
    /// `Policy` for another role; `AlreadyExists` when the active version is
    /// already certified; `Unsupported` for an algorithm outside
    /// [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS) or one the backend does not
    /// offer; the keystore's errors.
    pub fn request_intermediate(&self, actor: &Actor, common_name: &str) -> Result<VerifiedCsr> {
        self.ks
            .authorize(actor, Duty::ManageCa, "requesting an intermediate CA")?;
        let subject = cn_subject(common_name, None)?;
        match self.ks.info(INTERMEDIATE_KEY) {
            Ok(info) => {
                let installed = db::current_ca(&self.db.lock(), "intermediate")?;
                let active_fp = info.active().and_then(|v| v.fingerprint.clone());
                if let (Some(row), Some(fp)) = (installed, active_fp) {
                    if CertInfo::parse(&row)?.spki_fingerprint == fp {
                        return Err(Error::already_exists(format!(
                            "the active version of '{INTERMEDIATE_KEY}' already has a certificate; \
                             rotate the key first to make a new intermediate"
                        )));
                    }
                }
            }
            Err(ref e) if e.is(ErrorKind::NotFound) => {
                check_pki_algorithm(self.key_algorithm, "intermediate CA")?;
                let spec =
                    KeySpec::new(self.key_algorithm).with_usages(Usages::SIGN | Usages::VERIFY);
                self.ks.create(actor, INTERMEDIATE_KEY, spec)?;
            }
            Err(e) => return Err(e),
        }
        ensure_event_key(self.ks, actor)?;
        let signer = KeystoreSigner::for_rcgen(self.ks, INTERMEDIATE_KEY)?;
        crate::x509::build_csr(&signer, subject)
    }

    /// Installs the intermediate certificate the root signed, with the root
    /// certificate (the trust anchor devices get). Checks that the
    /// certificate carries the active intermediate key, is a CA, and that
    /// the root signed it. Needs the security-officer role.
    pub fn install_intermediate(
        &self,
        actor: &Actor,
        intermediate_der: &[u8],
        root_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<()> {
        self.ks
            .authorize(actor, Duty::ManageCa, "installing an intermediate CA")?;
        let inter = CertInfo::parse(intermediate_der)?;
        let root = CertInfo::parse(root_der)?;
        if !root.is_ca || !inter.is_ca {
            return Err(Error::invalid_input(
                "the root and the intermediate must both be CA certificates",
            ));
        }
        verify_signed_by(&root.der, &root)?;
        verify_signed_by(&inter.der, &root)?;
        let signer = KeystoreSigner::for_rcgen(self.ks, INTERMEDIATE_KEY)?;
        if signer.spki_der() != inter.spki_der.as_slice() {
            return Err(Error::integrity(format!(
                "the intermediate certificate does not carry the active key of '{INTERMEDIATE_KEY}'"
            )));
        }
        if let Some(current) = db::current_ca(&self.db.lock(), "root")? {
            if current != root.der {
                return Err(Error::policy(
                    "this store already trusts another root; a new root needs a new store",
                ));
            }
        }
        ensure_event_key(self.ks, actor)?;
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        let has_root = opt(tx.query_row(
            "SELECT 1 FROM ca_certs WHERE serial = ?1",
            params![root.serial],
            |_| Ok(()),
        ))?
        .is_some();
        if !has_root {
            insert_ca(&tx, "root", None, &root, now)?;
        }
        insert_ca(
            &tx,
            "intermediate",
            Some((INTERMEDIATE_KEY, signer.version())),
            &inter,
            now,
        )?;
        self.log_event(
            Some(&tx),
            actor,
            now,
            EventFields {
                event: "install-intermediate",
                serial: Some(&inter.serial),
                fingerprint: Some(&inter.spki_fingerprint),
                detail: format!(
                    "intermediate '{}' under root {} until {}",
                    inter.subject,
                    root.digest,
                    rfc3339(inter.not_after)
                ),
                ..EventFields::default()
            },
        )?;
        commit(tx)
    }

    /// The root certificate this factory's devices trust.
    pub fn root(&self) -> Result<CertInfo> {
        let row = db::current_ca(&self.db.lock(), "root")?.ok_or_else(|| {
            Error::not_found(
                "no root certificate installed (run the `ca sign-intermediate` ceremony)",
            )
        })?;
        CertInfo::parse(&row)
    }

    /// The current intermediate certificate.
    pub fn intermediate(&self) -> Result<CertInfo> {
        let row = db::current_ca(&self.db.lock(), "intermediate")?.ok_or_else(|| {
            Error::not_found(
                "no intermediate CA installed (run the `ca sign-intermediate` ceremony)",
            )
        })?;
        CertInfo::parse(&row)
    }

    /// Issues a device's first certificate and registers the unit. Refuses
    /// (`AlreadyExists`) a second unit with the same device id or the same
    /// public key. Needs the operator or security-officer role.
    pub fn provision(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.issue(actor, req, Issuance::Provision, None, now)
    }

    /// As [`Factory::provision`], for a key whose TPM residence was proven
    /// ([`attest_tpm`](crate::attest_tpm)): the attestation must be of the
    /// CSR's key (else `Integrity`); the registry records the unit as
    /// [`ATTESTED_TPM`](crate::ATTESTED_TPM) with the evidence's digest,
    /// and so does the record.
    pub fn provision_attested(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        attestation: &VerifiedAttestation,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.issue(actor, req, Issuance::Provision, Some(attestation), now)
    }

    /// The attestation state the registry holds for a unit
    /// ([`ATTESTED_TPM`](crate::ATTESTED_TPM) or
    /// [`UNATTESTED`](crate::UNATTESTED)) and the evidence digest.
    pub fn attestation(&self, device_id: &str) -> Result<(String, Option<String>)> {
        crate::util::check_device_id(device_id)?;
        let row = self
            .registry
            .device(device_id)?
            .ok_or_else(|| Error::not_found(format!("device '{device_id}' is not registered")))?;
        Ok((row.attestation, row.attestation_digest))
    }

    /// Issues a renewed certificate for a registered device whose identity
    /// key was rotated; earlier certificates of the device stay valid (and
    /// their keys pinned) until `now + grace`.
    pub fn renew(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        grace: Duration,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        if grace < Duration::ZERO {
            return Err(Error::invalid_input("a grace period cannot be negative"));
        }
        self.issue(actor, req, Issuance::Renew { grace }, None, now)
    }

    /// Every event of the registry's log, after verifying its chain and
    /// this station's MACs (all of them in the station's own database).
    pub fn verify_events(&self) -> Result<Vec<crate::Event>> {
        Ok(self.verify_event_log()?.events)
    }

    /// Verifies the registry's event log: every hash and the head, and every
    /// MAC this station's event key made (in a shared registry, the other
    /// stations' events are counted per station, their MACs left to them).
    /// `Integrity` names the first bad event.
    pub fn verify_event_log(&self) -> Result<EventLogReport> {
        let (rows, head) = self.registry.events()?;
        crate::eventlog::verify(self.ks, rows, head, self.registry.shared())
    }

    /// Checks that a device identity key version was generated inside its
    /// backend (never imported or restored).
    pub fn check_generated<D: Backend>(
        device: &Keystore<D>,
        key: &str,
        version: u32,
    ) -> Result<()> {
        let info = device.info(key)?;
        let v = info
            .version(version)
            .ok_or_else(|| Error::not_found(format!("key '{key}' has no version {version}")))?;
        if v.origin != Origin::Generated {
            return Err(Error::policy(format!(
                "key '{key}' version {version} was {}, not generated inside the backend",
                v.origin
            )));
        }
        Ok(())
    }
}

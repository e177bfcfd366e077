//! The device side: the identity key, generated inside the device's backend
//! (a TPM, a token or the soft store), its CSR, and the certificates
//! installed for each key version.

use crate::db::{self, opt, q, unique_or, PkiDb};
use crate::signer::{rcgen_algorithm, spki_bit_string, KeystoreSigner};
use crate::util::{check_device_id, rfc3339};
use crate::x509::{
    build_csr, check_pki_algorithm, device_subject, verify_csr, CertInfo, VerifiedCsr,
    DEFAULT_PKI_ALGORITHM,
};
use keystore_api::{
    Actor, Algorithm, Backend, Component, Error, ErrorKind, KeySpec, Keystore, Result,
    SignatureFormat, Usages,
};
use rusqlite::params;
use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

/// The identity key's name in a device's own keystore.
pub const DEVICE_KEY: &str = "device.identity";

/// The identity key's name for `device_id` when many devices' keys share one
/// keystore (a gateway holding several identities, or a factory simulation).
pub fn shared_key_name(device_id: &str) -> Result<String> {
    check_device_id(device_id)?;
    Ok(format!("device.{device_id}.identity"))
}

/// A certificate installed on the device, with the key version it certifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledCert {
    /// The identity key's version.
    pub key_version: u32,
    /// The certificate serial, hex.
    pub serial: String,
    /// The device id it names.
    pub device_id: String,
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// Certificate then intermediate, PEM: what the device presents.
    pub chain_pem: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// A device's identity: a key in the device's keystore and the device-side
/// PKI database that holds its certificates.
pub struct Device<'a, D: Backend> {
    ks: &'a Keystore<D>,
    db: &'a PkiDb,
    key_name: String,
    /// The algorithm [`Device::generate`] creates the identity key with.
    algorithm: Algorithm,
}

impl<D: Backend> std::fmt::Debug for Device<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl<'a, D: Backend> Device<'a, D> {
    /// The device whose identity key is `key_name` in `ks`;
    /// [`generate`](Self::generate) creates an ECDSA P-256 key
    /// ([`DEFAULT_PKI_ALGORITHM`](crate::DEFAULT_PKI_ALGORITHM)).
    pub fn new(ks: &'a Keystore<D>, db: &'a PkiDb, key_name: &str) -> Result<Self> {
        keystore_api::check_name(key_name)?;
        Ok(Device {
            ks,
            db,
            key_name: key_name.to_string(),
            algorithm: DEFAULT_PKI_ALGORITHM,
        })
    }

    /// Sets the algorithm [`generate`](Self::generate) creates the identity
    /// key with; it must be one of [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS)
    /// (checked by `generate`). An existing key keeps its algorithm, and so
    /// do its rotations and staged versions.
    pub fn with_key_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The algorithm [`generate`](Self::generate) creates the identity key with.
    pub fn key_algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The device's keystore.
    pub fn keystore(&self) -> &'a Keystore<D> {
        self.ks
    }

    /// The identity key's name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Generates the identity key inside the device's backend (ECDSA P-256
    /// unless [`with_key_algorithm`](Self::with_key_algorithm) says
    /// otherwise) and returns a CSR for `device_id` signed by it, with the
    /// key version. If the key exists but no certificate was ever installed
    /// for its active version (an interrupted provisioning), it is reused,
    /// whatever its algorithm.
    ///
    /// # Errors
    /// `InvalidInput` for a bad device id; `AlreadyExists` when the active
    /// version has a certificate; `Unsupported` for an algorithm outside
    /// [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS) or one the backend does not
    /// offer; the keystore's errors.
    pub fn generate(&self, actor: &Actor, device_id: &str) -> Result<(VerifiedCsr, u32)> {
        check_device_id(device_id)?;
        match self.ks.info(&self.key_name) {
            Ok(info) => {
                let active = info.active().map(|v| v.version).ok_or_else(|| {
                    Error::key_state(format!("key '{}' has no active version", self.key_name))
                })?;
                if self.installed_for(active)?.is_some() {
                    return Err(Error::already_exists(format!(
                        "identity key '{}' version {active} already has a certificate",
                        self.key_name
                    )));
                }
            }
            Err(ref e) if e.is(ErrorKind::NotFound) => {
                check_pki_algorithm(self.algorithm, "device identity")?;
                let spec = KeySpec::new(self.algorithm).with_usages(Usages::SIGN | Usages::VERIFY);
                self.ks.create(actor, &self.key_name, spec)?;
            }
            Err(e) => return Err(e),
        }
        self.csr(device_id)
    }

    /// Rotates the identity key at once (the old version verifies until
    /// `now + grace`, then a sweep destroys it) and returns a CSR signed by
    /// the new version, which is active before it has a certificate;
    /// renewals use [`Device::stage`] and [`Device::activate`] instead.
    /// Needs the security-officer role on the device's keystore.
    pub fn rotate(
        &self,
        actor: &Actor,
        device_id: &str,
        grace: Duration,
    ) -> Result<(VerifiedCsr, u32)> {
        check_device_id(device_id)?;
        self.ks.rotate(actor, &self.key_name, grace)?;
        self.csr(device_id)
    }

    /// Stages the next identity key version for a renewal: a version in
    /// pre-activation ([`Keystore::rotate_staged`]; the one already staged
    /// is reused), and a CSR for `device_id` signed by it inside the backend
    /// ([`Keystore::sign_pre_active`], its proof of possession). The active
    /// version and its certificate stay current until [`Device::activate`].
    /// Needs the security-officer role on the device's keystore.
    ///
    /// # Errors
    /// `Policy` for another role; `NotFound` for a missing key;
    /// `Unsupported` for a key rcgen cannot sign CSRs with; the keystore's
    /// errors.
    pub fn stage(&self, actor: &Actor, device_id: &str) -> Result<(VerifiedCsr, u32)> {
        check_device_id(device_id)?;
        let info = self.ks.info(&self.key_name)?;
        let info = match info.pre_active() {
            Some(_) => info,
            None => self.ks.rotate_staged(actor, &self.key_name)?,
        };
        let staged = info
            .pre_active()
            .ok_or_else(|| Error::integrity("the staged version vanished"))?;
        let spki = staged
            .public_key
            .as_ref()
            .ok_or_else(|| Error::integrity("the staged version has no public key"))?
            .spki_der()
            .to_vec();
        let signer = StagedSigner {
            ks: self.ks,
            actor,
            name: &self.key_name,
            version: staged.version,
            alg: rcgen_algorithm(info.algorithm)?,
            raw: spki_bit_string(&spki)?,
            error: Mutex::new(None),
        };
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = device_subject(device_id)?;
        let csr = params
            .serialize_request(&signer)
            .map_err(|e| signer.error(e))?;
        let verified = verify_csr(csr.der())?;
        if verified.public_key.spki_der() != spki.as_slice() {
            return Err(Error::integrity(
                "the CSR does not carry the staged version's public key",
            ));
        }
        Ok((verified, staged.version))
    }

    /// Makes staged `version` the active identity (its certificate must be
    /// installed first); the previous version verifies until `now + grace`.
    /// Needs the security-officer role on the device's keystore.
    ///
    /// # Errors
    /// `KeyState` when `version` is not staged; the errors of
    /// [`Keystore::activate`].
    pub fn activate(&self, actor: &Actor, version: u32, grace: Duration) -> Result<()> {
        self.ks
            .activate(actor, &self.key_name, version, grace)
            .map(|_| ())
    }

    /// Abandons staged `version` (its key was issued to no avail, or will
    /// never be): its material is destroyed. Needs the security-officer role.
    ///
    /// # Errors
    /// The errors of [`Keystore::discard_pre_active`].
    pub fn discard_staged(&self, actor: &Actor, version: u32) -> Result<()> {
        self.ks.discard_pre_active(actor, &self.key_name, version)
    }

    /// A CSR for `device_id` signed by the active identity key version.
    pub fn csr(&self, device_id: &str) -> Result<(VerifiedCsr, u32)> {
        let signer = KeystoreSigner::for_rcgen(self.ks, &self.key_name)?;
        let csr = build_csr(&signer, device_subject(device_id)?)?;
        Ok((csr, signer.version()))
    }

    /// Installs a certificate for key version `key_version`: it must carry
    /// exactly that version's public key and name `device_id`.
    pub fn install(
        &self,
        device_id: &str,
        key_version: u32,
        cert_der: &[u8],
        chain_pem: &str,
        now: OffsetDateTime,
    ) -> Result<InstalledCert> {
        let cert = CertInfo::parse(cert_der)?;
        let info = self.ks.info(&self.key_name)?;
        let v = info.version(key_version).ok_or_else(|| {
            Error::not_found(format!(
                "key '{}' has no version {key_version}",
                self.key_name
            ))
        })?;
        if v.fingerprint.as_deref() != Some(cert.spki_fingerprint.as_str()) {
            return Err(Error::integrity(format!(
                "the certificate does not carry the public key of '{}' version {key_version}",
                self.key_name
            )));
        }
        if cert.common_name.as_deref() != Some(device_id) {
            return Err(Error::integrity(format!(
                "the certificate names {:?}, not device '{device_id}'",
                cert.common_name
            )));
        }
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        tx.execute(
            "INSERT INTO identity_certs (key_name, key_version, serial, device_id, der, chain_pem,
                                         not_after, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                self.key_name,
                key_version,
                cert.serial,
                device_id,
                cert.der,
                chain_pem,
                rfc3339(cert.not_after),
                rfc3339(now)
            ],
        )
        .map_err(|e| {
            unique_or(e, || {
                format!("certificate {} is already installed", cert.serial)
            })
        })?;
        db::commit(tx)?;
        Ok(InstalledCert {
            key_version,
            serial: cert.serial,
            device_id: device_id.to_string(),
            der: cert.der,
            chain_pem: chain_pem.to_string(),
            not_after: cert.not_after,
        })
    }

    fn installed_for(&self, version: u32) -> Result<Option<InstalledCert>> {
        let row = opt(self.db.lock().query_row(
            "SELECT key_version, serial, device_id, der, chain_pem, not_after FROM identity_certs
             WHERE key_name = ?1 AND key_version = ?2 ORDER BY installed_at DESC, rowid DESC LIMIT 1",
            params![self.key_name, version],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        ))?;
        row.map(
            |(key_version, serial, device_id, der, chain_pem, not_after)| {
                Ok(InstalledCert {
                    key_version,
                    serial,
                    device_id,
                    der,
                    chain_pem,
                    not_after: crate::util::parse_time(&not_after)?,
                })
            },
        )
        .transpose()
    }

    /// The newest certificate installed for the active key version.
    pub fn current(&self) -> Result<Option<InstalledCert>> {
        let info = self.ks.info(&self.key_name)?;
        match info.active() {
            Some(v) => self.installed_for(v.version),
            None => Ok(None),
        }
    }

    /// Every certificate installed for this identity, oldest first.
    pub fn installed(&self) -> Result<Vec<InstalledCert>> {
        let conn = self.db.lock();
        let mut stmt = q(conn.prepare(
            "SELECT key_version, serial, device_id, der, chain_pem, not_after FROM identity_certs
             WHERE key_name = ?1 ORDER BY installed_at, rowid",
        ))?;
        let rows = q(stmt.query_map(params![self.key_name], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        }))?;
        let rows = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| Error::backend(Component::PkiDb, "PKI database query failed", e))?;
        rows.into_iter()
            .map(
                |(key_version, serial, device_id, der, chain_pem, not_after)| {
                    Ok(InstalledCert {
                        key_version,
                        serial,
                        device_id,
                        der,
                        chain_pem,
                        not_after: crate::util::parse_time(&not_after)?,
                    })
                },
            )
            .collect()
    }
}

/// A staged (pre-activation) version as rcgen's signing key: every
/// signature is one [`Keystore::sign_pre_active`] (role-checked, audited).
struct StagedSigner<'a, D: Backend> {
    ks: &'a Keystore<D>,
    actor: &'a Actor,
    name: &'a str,
    version: u32,
    alg: &'static rcgen::SignatureAlgorithm,
    raw: Vec<u8>,
    error: Mutex<Option<Error>>,
}

impl<D: Backend> StagedSigner<'_, D> {
    /// The keystore error behind rcgen's opaque `RemoteKeyError`.
    fn error(&self, e: rcgen::Error) -> Error {
        let inner = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (e, inner) {
            (rcgen::Error::RemoteKeyError, Some(inner)) => inner,
            (e, _) => Error::invalid_input(format!("cannot encode the CSR: {e}")),
        }
    }
}

impl<D: Backend> rcgen::PublicKeyData for StagedSigner<'_, D> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl<D: Backend> rcgen::SigningKey for StagedSigner<'_, D> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.ks
            .sign_pre_active(
                self.actor,
                self.name,
                self.version,
                msg,
                SignatureFormat::Der,
            )
            .map(|s| s.bytes)
            .map_err(|e| {
                *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                rcgen::Error::RemoteKeyError
            })
    }
}

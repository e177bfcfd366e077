//! Renewal over EST on the device ([`EstRenewal`]): the next identity key
//! is staged in pre-activation inside the device's keystore, the CSR is
//! signed by it there, the device re-enrolls over mTLS with its current key
//! and certificate, checks what comes back, and only then installs the new
//! certificate and activates the new key, in that order.
//!
//! At every instant the active key version has its certificate installed:
//! the staged version is used for nothing but its proof of possession until
//! [`Keystore::activate`] swaps the two in one transaction. A failure at any
//! step leaves the current pair current and is recorded in the device's
//! audit trail (`est-renew-failed`). The staged version is kept and reused
//! by the next attempt, except when the server answers 409 (its key was
//! already issued, e.g. an answer lost on the way): it is then discarded
//! and the next attempt stages a fresh key.

use super::client::EstClient;
use crate::db::PkiDb;
use crate::device::{Device, InstalledCert};
use crate::util::{pem_decode_all, pem_encode, rfc3339, shorten};
use crate::x509::CertInfo;
use keystore_api::limits::MAX_REASON_LEN;
use keystore_api::{Actor, Backend, Error, ErrorKind, Keystore, Result};
use keystore_signer::rustls::sign::CertifiedKey;
use keystore_signer::KeystoreSigningKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// A device identity renewed over EST.
pub struct EstRenewal<D: Backend> {
    ks: Arc<Keystore<D>>,
    db: Arc<PkiDb>,
    key_name: String,
    actor: Actor,
    client: EstClient,
    grace: Duration,
}

impl<D: Backend> std::fmt::Debug for EstRenewal<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstRenewal")
            .field("key_name", &self.key_name)
            .field("client", &self.client)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<D: Backend + 'static> EstRenewal<D> {
    /// Renewal of identity key `key_name` in the device's keystore `ks` (its
    /// certificates in `db`), through `client`, as `actor` (the security
    /// officer of the device's keystore: staging, proof of possession and
    /// activation need that role). The old key stays verifiable for 7 days
    /// after a renewal ([`EstRenewal::with_grace`]).
    ///
    /// # Errors
    /// `InvalidInput` for a malformed key name.
    pub fn new(
        ks: Arc<Keystore<D>>,
        db: Arc<PkiDb>,
        key_name: &str,
        actor: Actor,
        client: EstClient,
    ) -> Result<Self> {
        keystore_api::check_name(key_name)?;
        Ok(EstRenewal {
            ks,
            db,
            key_name: key_name.to_string(),
            actor,
            client,
            grace: crate::provision::DEFAULT_RENEWAL_GRACE,
        })
    }

    /// Sets how long the old key version verifies after a renewal.
    ///
    /// # Errors
    /// `InvalidInput` for a negative grace.
    pub fn with_grace(mut self, grace: Duration) -> Result<Self> {
        if grace < Duration::ZERO {
            return Err(Error::invalid_input("a grace period cannot be negative"));
        }
        self.grace = grace;
        Ok(self)
    }

    /// The device's current pair: the certificate installed for the active
    /// key version.
    ///
    /// # Errors
    /// The keystore's and the database's errors.
    pub fn current(&self) -> Result<Option<InstalledCert>> {
        Device::new(&self.ks, &self.db, &self.key_name)?.current()
    }

    /// Renews if the current certificate expires within `threshold` of now
    /// (system time); `Ok(None)` when it does not.
    ///
    /// # Errors
    /// As [`EstRenewal::renew_at`].
    pub fn renew_if_due(&self, threshold: Duration) -> Result<Option<InstalledCert>> {
        self.renew_if_due_at(threshold, OffsetDateTime::now_utc())
    }

    /// Renews if the current certificate expires within `threshold` of `now`.
    ///
    /// # Errors
    /// `InvalidInput` for a negative threshold; otherwise as
    /// [`EstRenewal::renew_at`].
    pub fn renew_if_due_at(
        &self,
        threshold: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<InstalledCert>> {
        if threshold < Duration::ZERO {
            return Err(Error::invalid_input(
                "a renewal threshold cannot be negative",
            ));
        }
        let current = self.current()?.ok_or_else(|| self.unprovisioned())?;
        if current.not_after - now > threshold {
            return Ok(None);
        }
        self.renew_at(now).map(Some)
    }

    /// Renews now, due or not (see the module docs for the steps). Returns
    /// the new certificate, installed for the now active key version.
    ///
    /// # Errors
    /// `NotFound` when the key has no installed certificate (provision
    /// first); `KeyState` when the current certificate has expired (a
    /// device re-enrolls only with a valid one); the server's refusals as
    /// [`EstClient::simplereenroll`] maps them; `Integrity` when the
    /// returned certificate does not validate to the trust anchor or does
    /// not certify the new key and name the device; `Policy` when `actor`
    /// lacks the role; the keystore's and database's errors. Whatever the
    /// error, the current pair stays current and the failure is audited.
    pub fn renew_at(&self, now: OffsetDateTime) -> Result<InstalledCert> {
        let device = Device::new(&self.ks, &self.db, &self.key_name)?;
        let current = device.current()?.ok_or_else(|| self.unprovisioned())?;
        match self.attempt(&device, &current, now) {
            Ok(installed) => {
                // The renewal stands even if this record fails.
                let _ = self.ks.record_event(
                    &self.actor,
                    "est-renew",
                    Some((&self.key_name, installed.key_version)),
                    &format!(
                        "certificate {} until {} from {}; version {} active, version {} verifies for {} s",
                        installed.serial,
                        rfc3339(installed.not_after),
                        self.client.authority(),
                        installed.key_version,
                        current.key_version,
                        self.grace.whole_seconds()
                    ),
                );
                Ok(installed)
            }
            Err(e) => {
                let _ = self.ks.record_event(
                    &self.actor,
                    "est-renew-failed",
                    Some((&self.key_name, current.key_version)),
                    &one_line(&format!("{}: {e}", self.client.authority())),
                );
                Err(e)
            }
        }
    }

    fn unprovisioned(&self) -> Error {
        Error::not_found(format!(
            "identity key '{}' has no certificate for its active version; provision it first",
            self.key_name
        ))
    }

    /// The steps of one renewal.
    fn attempt(
        &self,
        device: &Device<'_, D>,
        current: &InstalledCert,
        now: OffsetDateTime,
    ) -> Result<InstalledCert> {
        if current.not_after <= now {
            return Err(Error::key_state(format!(
                "the current certificate {} expired at {}; re-enrollment needs a valid one: provision the device again",
                current.serial,
                rfc3339(current.not_after)
            )));
        }
        // An earlier attempt may have installed the staged version's
        // certificate and failed to activate: finish it.
        if let Some(staged) = self.ks.info(&self.key_name)?.pre_active() {
            let earlier = device
                .installed()?
                .into_iter()
                .rev()
                .find(|c| c.key_version == staged.version && c.not_after > now);
            if let Some(done) = earlier {
                device.activate(&self.actor, done.key_version, self.grace)?;
                return Ok(done);
            }
        }
        let (csr, version) = device.stage(&self.actor, &current.device_id)?;
        let identity = self.identity(current)?;
        let cert_der = match self
            .client
            .simplereenroll(identity, &csr.der, Some(version))
        {
            Ok(der) => der,
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                // The server has seen this key: never offer it again.
                device.discard_staged(&self.actor, version)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let chain_pem = self.check_issued(&cert_der, current, &csr.fingerprint(), now)?;
        let installed = device.install(&current.device_id, version, &cert_der, &chain_pem, now)?;
        device.activate(&self.actor, version, self.grace)?;
        Ok(installed)
    }

    /// The current pair for the TLS handshake, pinned to its version.
    fn identity(&self, current: &InstalledCert) -> Result<Arc<CertifiedKey>> {
        let chain = keystore_signer::certificate_chain(current.chain_pem.as_bytes())?;
        let key = KeystoreSigningKey::pinned_to(
            Arc::clone(&self.ks),
            &self.key_name,
            current.key_version,
        )?;
        Ok(Arc::new(keystore_signer::certified_key(chain, &key)?))
    }

    /// Checks the issued certificate: it certifies the staged key, names the
    /// device, and validates (webpki, clientAuth, now) to the trust anchor
    /// through the current chain's intermediate or one from `/cacerts`.
    /// Returns the chain to install (certificate, then intermediate), PEM.
    fn check_issued(
        &self,
        cert_der: &[u8],
        current: &InstalledCert,
        staged_fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<String> {
        let cert = CertInfo::parse(cert_der)?;
        if cert.spki_fingerprint != staged_fingerprint {
            return Err(Error::integrity(
                "the issued certificate does not certify the staged key",
            ));
        }
        let id = Some(current.device_id.as_str());
        if cert.common_name.as_deref() != id || cert.subject_serial_number.as_deref() != id {
            return Err(Error::integrity(format!(
                "the issued certificate names {:?}, not device '{}'",
                cert.common_name.as_deref().map(shorten),
                current.device_id
            )));
        }
        let mut inters: Vec<Vec<u8>> = pem_decode_all(&current.chain_pem, "CERTIFICATE")?
            .into_iter()
            .skip(1)
            .collect();
        let path = match validate(cert_der, &inters, self.client.anchor(), now) {
            Ok(path) => path,
            Err(_) => {
                // The CA may have a new intermediate: ask for it (over TLS
                // to the same anchor) and try once more.
                inters.extend(self.client.cacerts()?);
                validate(cert_der, &inters, self.client.anchor(), now)?
            }
        };
        let mut chain = pem_encode("CERTIFICATE", cert_der);
        for der in path {
            chain.push_str(&pem_encode("CERTIFICATE", &der));
        }
        Ok(chain)
    }
}

/// `text` as one line of at most [`MAX_REASON_LEN`] bytes (an audit detail).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Validates `cert_der` to `anchor` through any of `inters` for clientAuth
/// at `now`; returns the intermediates of the path (DER), nearest first.
fn validate(
    cert_der: &[u8],
    inters: &[Vec<u8>],
    anchor: &[u8],
    now: OffsetDateTime,
) -> Result<Vec<Vec<u8>>> {
    let bad = |e: webpki::Error| {
        Error::integrity(format!(
            "the issued certificate does not validate to the trust anchor: {e}"
        ))
    };
    let anchor_der = CertificateDer::from(anchor);
    let anchor = webpki::anchor_from_trusted_cert(&anchor_der).map_err(bad)?;
    let ee_der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(bad)?;
    let inters: Vec<CertificateDer<'_>> = inters
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let anchors = [anchor];
    let path = ee
        .verify_for_usage(
            crate::verify::ALGS,
            &anchors,
            &inters,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(bad)?;
    let out = path
        .intermediate_certificates()
        .map(|c| c.der().to_vec())
        .collect();
    Ok(out)
}

//! The offline root CA ([`RootCa`]): its self-signed certificate, the
//! intermediates it signs and revokes (through the one revocation of
//! [`revoke_serial`]), and its CRL.

use super::cert::{ca_params, issuer_for, verify_signed_by, SubjectKey};
use super::crl::{
    check_crl_validity, check_reason, issue_crl_with, normalise_serial, revoke_serial, Revocable,
};
use super::registry::insert_ca;
use super::{check_validity, BACKDATE, ROOT_KEY};
use crate::db::{self, append_event, commit, opt, q, PkiDb};
use crate::eventlog::{ensure_event_key, EventFields};
use crate::signer::KeystoreSigner;
use crate::util::rfc3339;
use crate::x509::{check_pki_algorithm, cn_subject, verify_csr, CertInfo, DEFAULT_PKI_ALGORITHM};
use keystore_api::{
    Actor, Algorithm, Backend, Component, Duty, Error, KeySpec, Keystore, Result, Usages,
};
use rusqlite::params;
use time::{Duration, OffsetDateTime};

/// An intermediate the root signed, as its registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIntermediate {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Subject, as text.
    pub subject: String,
    /// When signed (RFC 3339).
    pub signed_at: String,
    /// When revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
    /// Why, if revoked.
    pub reason: Option<String>,
}

/// The offline root CA: a key in its own keystore and its self-signed
/// certificate, recorded in that store's PKI database.
pub struct RootCa<'a, B: Backend> {
    ks: &'a Keystore<B>,
    db: &'a PkiDb,
    /// The algorithm [`RootCa::init`] creates the root key with.
    algorithm: Algorithm,
}

impl<B: Backend> std::fmt::Debug for RootCa<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> RootCa<'a, B> {
    /// The root CA over the root keystore `ks` and its PKI database `db`;
    /// [`init`](Self::init) creates an ECDSA P-256 key
    /// ([`DEFAULT_PKI_ALGORITHM`](crate::DEFAULT_PKI_ALGORITHM)).
    pub fn new(ks: &'a Keystore<B>, db: &'a PkiDb) -> Self {
        RootCa {
            ks,
            db,
            algorithm: DEFAULT_PKI_ALGORITHM,
        }
    }

    /// Sets the algorithm [`init`](Self::init) creates the root key with;
    /// it must be one of [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS) (checked
    /// by `init`). Everything else uses the key the store holds, whatever
    /// its algorithm.
    pub fn with_key_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The algorithm [`init`](Self::init) creates the root key with.
    pub fn key_algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Generates the root key inside the root's backend (ECDSA P-256 unless
    /// [`with_key_algorithm`](Self::with_key_algorithm) says otherwise) and a
    /// self-signed root certificate signed by it. Needs the security-officer
    /// role.
    ///
    /// # Errors
    /// `Policy` for another role; `InvalidInput` for a bad name or validity;
    /// `Unsupported` for an algorithm outside
    /// [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS) or one the backend does not
    /// offer; `AlreadyExists` when the store holds a root; the keystore's and
    /// the database's errors.
    pub fn init(
        &self,
        actor: &Actor,
        common_name: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<CertInfo> {
        self.ks
            .authorize(actor, Duty::ManageCa, "creating the root CA")?;
        check_validity(validity, "root")?;
        check_pki_algorithm(self.algorithm, "root CA")?;
        let subject = cn_subject(common_name, None)?;
        if db::current_ca(&self.db.lock(), "root")?.is_some() {
            return Err(Error::already_exists(
                "this store already holds a root CA certificate",
            ));
        }
        ensure_event_key(self.ks, actor)?;
        let spec = KeySpec::new(self.algorithm).with_usages(Usages::SIGN | Usages::VERIFY);
        self.ks.create(actor, ROOT_KEY, spec)?;
        let signer = KeystoreSigner::for_rcgen(self.ks, ROOT_KEY)?;
        let params = ca_params(subject, 1, now - BACKDATE, now + validity)?;
        let cert = params
            .self_signed(&signer)
            .map_err(|e| signer.map_rcgen_error(e))?;
        let info = CertInfo::parse(cert.der())?;
        verify_signed_by(&info.der, &info)?;
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        insert_ca(&tx, "root", Some((ROOT_KEY, signer.version())), &info, now)?;
        append_event(
            &tx,
            self.ks,
            actor,
            now,
            EventFields {
                event: "init-root",
                serial: Some(&info.serial),
                fingerprint: Some(&info.spki_fingerprint),
                detail: format!(
                    "root CA '{}' until {}",
                    info.subject,
                    rfc3339(info.not_after)
                ),
                ..EventFields::default()
            },
        )?;
        commit(tx)?;
        Ok(info)
    }

    /// The root certificate.
    pub fn certificate(&self) -> Result<CertInfo> {
        let row = db::current_ca(&self.db.lock(), "root")?
            .ok_or_else(|| Error::not_found("this store holds no root CA (run `ca init-root`)"))?;
        CertInfo::parse(&row)
    }

    /// Signs an intermediate CA's CSR (the ceremony's root half): the CSR's
    /// self-signature is verified, and the certificate is a CA with path
    /// length 0 (it may issue only end-entity certificates), valid for
    /// `validity` but never beyond the root. Needs the security-officer role.
    pub fn sign_intermediate(
        &self,
        actor: &Actor,
        csr_der: &[u8],
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<CertInfo> {
        self.ks
            .authorize(actor, Duty::ManageCa, "signing an intermediate CA")?;
        check_validity(validity, "intermediate")?;
        let csr = verify_csr(csr_der)?;
        let cn = csr
            .common_name
            .clone()
            .ok_or_else(|| Error::invalid_input("the intermediate's CSR has no common name"))?;
        let root = self.certificate()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, ROOT_KEY)?;
        let issuer = issuer_for(&signer, &root)?;
        let not_after = std::cmp::min(now + validity, root.not_after);
        let mut params = ca_params(cn_subject(&cn, None)?, 0, now - BACKDATE, not_after)?;
        params.use_authority_key_identifier_extension = true;
        let subject_key = SubjectKey::from(&csr.public_key)?;
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| signer.map_rcgen_error(e))?;
        let info = CertInfo::parse(cert.der())?;
        verify_signed_by(&info.der, &root)?;
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        q(tx.execute(
            "INSERT INTO signed_intermediates (serial, der, subject, signed_at) VALUES (?1, ?2, ?3, ?4)",
            params![info.serial, info.der, info.subject, rfc3339(now)],
        ))?;
        append_event(
            &tx,
            self.ks,
            actor,
            now,
            EventFields {
                event: "sign-intermediate",
                serial: Some(&info.serial),
                fingerprint: Some(&info.spki_fingerprint),
                detail: format!(
                    "intermediate '{}' until {}",
                    info.subject,
                    rfc3339(info.not_after)
                ),
                ..EventFields::default()
            },
        )?;
        commit(tx)?;
        Ok(info)
    }

    /// Revokes an intermediate this root signed and issues the root's new
    /// CRL (returned, DER), valid until `now + next_update_in`: relying
    /// parties that check the whole path then reject every certificate under
    /// that intermediate. The revocation and both events (`revoke-intermediate`,
    /// `crl`) go to the root's event log. Needs the security-officer role of
    /// the root's store (the custodian); it runs offline, on the root's store
    /// alone.
    pub fn revoke_intermediate(
        &self,
        actor: &Actor,
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
        next_update_in: Duration,
    ) -> Result<Vec<u8>> {
        self.ks
            .authorize(actor, Duty::ManageCa, "revoking an intermediate CA")?;
        check_reason(reason)?;
        check_crl_validity(next_update_in)?;
        let serial = normalise_serial(serial)?;
        // Everything the CRL needs is checked before anything is recorded.
        let root = self.certificate()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, ROOT_KEY)?;
        issuer_for(&signer, &root)?;
        revoke_serial(
            self.ks,
            self.db,
            actor,
            Revocable::Intermediate,
            &serial,
            reason,
            now,
        )?;
        self.issue_crl(actor, now, next_update_in)
    }

    /// Issues the root's CRL (revoked intermediates), valid until
    /// `now + next_update_in`. Needs the security-officer role. Relying
    /// parties need it to check a device's intermediate, so the custodian
    /// reissues it at a ceremony before its nextUpdate.
    pub fn issue_crl(
        &self,
        actor: &Actor,
        now: OffsetDateTime,
        next_update_in: Duration,
    ) -> Result<Vec<u8>> {
        self.ks
            .authorize(actor, Duty::ManageCa, "issuing the root CRL")?;
        check_crl_validity(next_update_in)?;
        let root = self.certificate()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, ROOT_KEY)?;
        ensure_event_key(self.ks, actor)?;
        let revoked = {
            let conn = self.db.lock();
            let mut stmt = q(conn.prepare(
                "SELECT serial, revoked_at, reason FROM signed_intermediates
                 WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial",
            ))?;
            let rows = q(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))?;
            rows.collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
                .map_err(|e| Error::backend(Component::PkiDb, "PKI database query failed", e))?
        };
        issue_crl_with(
            self.db,
            &|tx, f| append_event(tx, self.ks, actor, now, f),
            &signer,
            &root,
            revoked,
            now,
            next_update_in,
        )
    }

    /// The last CRL this root issued, if any.
    pub fn current_crl(&self) -> Result<Option<Vec<u8>>> {
        let root = self.certificate()?;
        Ok(opt(self.db.lock().query_row(
            "SELECT der FROM crl_state WHERE issuer_serial = ?1",
            params![root.serial],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        ))?
        .flatten())
    }

    /// The intermediates this root signed, oldest first.
    pub fn signed_intermediates(&self) -> Result<Vec<SignedIntermediate>> {
        let conn = self.db.lock();
        let mut stmt = q(conn.prepare(
            "SELECT serial, subject, signed_at, revoked_at, reason FROM signed_intermediates
             ORDER BY signed_at, rowid",
        ))?;
        let rows = q(stmt.query_map([], |r| {
            Ok(SignedIntermediate {
                serial: r.get(0)?,
                subject: r.get(1)?,
                signed_at: r.get(2)?,
                revoked_at: r.get(3)?,
                reason: r.get(4)?,
            })
        }))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| Error::backend(Component::PkiDb, "PKI database query failed", e))
    }

    /// Every event of the root's log, after verifying its chain and MACs.
    pub fn verify_events(&self) -> Result<Vec<crate::Event>> {
        db::verify_events(&self.db.lock(), self.ks)
    }
}

//! The CA hierarchy (REQ-KEY-SOD-01): an offline root whose key lives in its
//! own keystore, and a production intermediate whose key lives in the
//! production keystore. The root signs the intermediate at a ceremony
//! ([`ceremony`]); everything after that ([`Factory`]: device certificates,
//! revocation, CRLs) runs on the production side and never opens the root's
//! store.

use crate::db::{
    self, append_event, commit, ensure_event_key, opt, q, unique_or, EventFields, PkiDb,
};
use crate::record::{ProvisioningRecord, RecordKeys};
use crate::signer::{rcgen_algorithm, spki_bit_string, KeystoreSigner};
use crate::util::{check_device_id, check_operator, random_serial, rfc3339, shorten, to_second};
use crate::x509::{cn_subject, verify_csr, CertInfo, VerifiedCsr};
use keystore_api::{
    Actor, Algorithm, Backend, Error, KeySpec, Keystore, Origin, PublicKey, Result, Role, Usages,
};
use rusqlite::params;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// The root CA's key name in the root keystore.
pub const ROOT_KEY: &str = "pki.root-ca";
/// The intermediate CA's key name in the production keystore.
pub const INTERMEDIATE_KEY: &str = "pki.intermediate-ca";

/// Certificates start this much before their issuance time, for clock skew
/// between the factory and devices.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Default validity of the root certificate.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::days(3650);
/// Default validity of the intermediate certificate.
pub const DEFAULT_INTERMEDIATE_VALIDITY: Duration = Duration::days(1095);
/// Default validity of device certificates (short-lived, REQ-KEY-CERT-01).
pub const DEFAULT_DEVICE_VALIDITY: Duration = Duration::days(30);
/// Default time from a CRL's thisUpdate to its nextUpdate.
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::days(7);
/// Default time from the offline root's CRL's thisUpdate to its nextUpdate:
/// the custodian reissues it at a ceremony before then.
pub const DEFAULT_ROOT_CRL_VALIDITY: Duration = Duration::days(180);
/// Longest time from a CRL's thisUpdate to its nextUpdate.
pub const MAX_CRL_VALIDITY: Duration = Duration::days(366);
/// Longest validity accepted for any certificate.
pub const MAX_VALIDITY: Duration = Duration::days(7305);

fn require(actor: &Actor, roles: &[Role], what: &str) -> Result<()> {
    if roles.contains(&actor.role()) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.id()).collect();
    Err(Error::Policy(format!(
        "{what} needs the {} role; '{}' acts as {}",
        names.join(" or "),
        actor.id(),
        actor.role()
    )))
}

fn check_validity(v: Duration, what: &str) -> Result<()> {
    if v <= Duration::ZERO || v > MAX_VALIDITY {
        return Err(Error::InvalidInput(format!(
            "a {what} validity is more than 0 and at most {} days",
            MAX_VALIDITY.whole_days()
        )));
    }
    Ok(())
}

/// A subject public key taken from a verified CSR, presented to rcgen.
struct SubjectKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl SubjectKey {
    fn from(pk: &PublicKey) -> Result<Self> {
        let key = SubjectKey {
            raw: spki_bit_string(pk.spki_der())?,
            alg: rcgen_algorithm(pk.algorithm())?,
        };
        use rcgen::PublicKeyData;
        if key.subject_public_key_info() != pk.spki_der() {
            return Err(Error::Unsupported(
                "the requested public key does not re-encode to the same SubjectPublicKeyInfo"
                    .into(),
            ));
        }
        Ok(key)
    }
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn ca_params(
    subject: rcgen::DistinguishedName,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = subject;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = to_second(not_before);
    p.not_after = to_second(not_after);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    Ok(p)
}

/// The public key a certificate's signature algorithm and SPKI name, for
/// verifying what the certificate signed.
fn issuer_public_key(issuer: &CertInfo) -> Result<PublicKey> {
    [
        Algorithm::EcdsaP256Sha256,
        Algorithm::Rsa2048Pkcs1Sha256,
        Algorithm::Rsa3072Pkcs1Sha256,
    ]
    .into_iter()
    .find_map(|alg| PublicKey::from_spki_der(alg, issuer.spki_der.clone()).ok())
    .ok_or_else(|| Error::Unsupported("the issuer's key type is not supported".into()))
}

/// Checks that `cert_der` names `issuer` as its issuer and carries a
/// signature that verifies under the issuer's key (host-side check).
pub fn verify_signed_by(cert_der: &[u8], issuer: &CertInfo) -> Result<()> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| Error::InvalidInput(format!("not a valid X.509 certificate: {e}")))?;
    if cert.tbs_certificate.issuer.as_raw() != issuer_subject_raw(&issuer.der)?.as_slice() {
        return Err(Error::Integrity(format!(
            "the certificate is issued by '{}', not by '{}'",
            cert.tbs_certificate.issuer, issuer.subject
        )));
    }
    issuer_public_key(issuer)?
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| {
            Error::Integrity(format!(
                "the certificate's signature does not verify under '{}'",
                issuer.subject
            ))
        })
}

fn issuer_subject_raw(der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::InvalidInput(format!("not a valid X.509 certificate: {e}")))?;
    Ok(cert.tbs_certificate.subject.as_raw().to_vec())
}

/// An issuer over a keystore key and its certificate; checks that the key's
/// active version is the one the certificate names.
fn issuer_for<'s, 'k, B: Backend>(
    signer: &'s KeystoreSigner<'k, B>,
    ca: &CertInfo,
) -> Result<rcgen::Issuer<'static, &'s KeystoreSigner<'k, B>>> {
    if signer.spki_der() != ca.spki_der.as_slice() {
        return Err(Error::KeyState(format!(
            "the active version of '{}' is not the key of the CA certificate '{}' (rotated since the ceremony?)",
            signer.name(),
            ca.subject
        )));
    }
    rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca.der.as_slice()), signer)
        .map_err(|e| Error::Integrity(format!("cannot read the CA certificate: {e}")))
}

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
}

impl<B: Backend> std::fmt::Debug for RootCa<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa").finish_non_exhaustive()
    }
}

impl<'a, B: Backend> RootCa<'a, B> {
    /// The root CA over the root keystore `ks` and its PKI database `db`.
    pub fn new(ks: &'a Keystore<B>, db: &'a PkiDb) -> Self {
        RootCa { ks, db }
    }

    /// Generates the root key (ECDSA P-256, inside the root's backend) and a
    /// self-signed root certificate. Needs the security-officer role.
    pub fn init(
        &self,
        actor: &Actor,
        common_name: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<CertInfo> {
        require(actor, &[Role::SecurityOfficer], "creating the root CA")?;
        check_validity(validity, "root")?;
        let subject = cn_subject(common_name, None)?;
        if db::current_ca(&self.db.lock(), "root")?.is_some() {
            return Err(Error::AlreadyExists(
                "this store already holds a root CA certificate".into(),
            ));
        }
        ensure_event_key(self.ks, actor)?;
        let spec =
            KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::SIGN | Usages::VERIFY);
        self.ks.create(actor, ROOT_KEY, spec)?;
        let signer = KeystoreSigner::new(self.ks, ROOT_KEY)?;
        let params = ca_params(subject, 1, now - BACKDATE, now + validity)?;
        let cert = params.self_signed(&signer).map_err(|e| signer.map_err(e))?;
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
        let row = db::current_ca(&self.db.lock(), "root")?.ok_or_else(|| {
            Error::NotFound("this store holds no root CA (run `ca init-root`)".into())
        })?;
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
        require(
            actor,
            &[Role::SecurityOfficer],
            "signing an intermediate CA",
        )?;
        check_validity(validity, "intermediate")?;
        let csr = verify_csr(csr_der)?;
        let cn = csr.common_name.clone().ok_or_else(|| {
            Error::InvalidInput("the intermediate's CSR has no common name".into())
        })?;
        let root = self.certificate()?;
        let signer = KeystoreSigner::new(self.ks, ROOT_KEY)?;
        let issuer = issuer_for(&signer, &root)?;
        let not_after = std::cmp::min(now + validity, root.not_after);
        let mut params = ca_params(cn_subject(&cn, None)?, 0, now - BACKDATE, not_after)?;
        params.use_authority_key_identifier_extension = true;
        let subject_key = SubjectKey::from(&csr.public_key)?;
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| signer.map_err(e))?;
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
        require(
            actor,
            &[Role::SecurityOfficer],
            "revoking an intermediate CA",
        )?;
        check_reason(reason)?;
        check_crl_validity(next_update_in)?;
        let serial = normalise_serial(serial)?;
        // Everything the CRL needs is checked before anything is recorded.
        let root = self.certificate()?;
        let signer = KeystoreSigner::new(self.ks, ROOT_KEY)?;
        issuer_for(&signer, &root)?;
        ensure_event_key(self.ks, actor)?;
        {
            let mut conn = self.db.lock();
            let tx = db::tx(&mut conn)?;
            let row: Option<(String, Option<String>)> = opt(tx.query_row(
                "SELECT subject, revoked_at FROM signed_intermediates WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))?;
            let subject = match row {
                None => {
                    return Err(Error::NotFound(format!(
                        "no intermediate with serial {serial} was signed by this root"
                    )))
                }
                Some((_, Some(at))) => {
                    return Err(Error::KeyState(format!(
                        "intermediate {serial} was already revoked at {at}"
                    )))
                }
                Some((subject, None)) => subject,
            };
            q(tx.execute(
                "UPDATE signed_intermediates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                params![serial, rfc3339(now), reason],
            ))?;
            append_event(
                &tx,
                self.ks,
                actor,
                now,
                EventFields {
                    event: "revoke-intermediate",
                    serial: Some(&serial),
                    detail: format!("intermediate '{subject}' revoked: {reason}"),
                    ..EventFields::default()
                },
            )?;
            commit(tx)?;
        }
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
        require(actor, &[Role::SecurityOfficer], "issuing the root CRL")?;
        check_crl_validity(next_update_in)?;
        let root = self.certificate()?;
        let signer = KeystoreSigner::new(self.ks, ROOT_KEY)?;
        ensure_event_key(self.ks, actor)?;
        let revoked = {
            let conn = self.db.lock();
            let mut stmt = q(conn.prepare(
                "SELECT serial, revoked_at, reason FROM signed_intermediates
                 WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial",
            ))?;
            let rows = q(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))?;
            rows.collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
                .map_err(|e| Error::backend("pki-db", "PKI database query failed", e))?
        };
        issue_crl_with(
            self.ks,
            self.db,
            actor,
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
            .map_err(|e| Error::backend("pki-db", "PKI database query failed", e))
    }

    /// Every event of the root's log, after verifying its chain and MACs.
    pub fn verify_events(&self) -> Result<Vec<db::Event>> {
        db::verify_events(&self.db.lock(), self.ks)
    }
}

fn insert_ca(
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

fn check_crl_validity(next_update_in: Duration) -> Result<()> {
    if next_update_in <= Duration::ZERO || next_update_in > MAX_CRL_VALIDITY {
        return Err(Error::InvalidInput(format!(
            "a CRL's next update is more than 0 and at most {} days away",
            MAX_CRL_VALIDITY.whole_days()
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() || reason.len() > 512 || reason.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "a revocation reason is 1 to 512 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// Normalises a hex serial (optional `0x`, colons, any case) to lowercase hex.
pub fn normalise_serial(s: &str) -> Result<String> {
    let t: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if t.is_empty()
        || t.len() > 42
        || !t.bytes().all(|b| b.is_ascii_hexdigit())
        || !t.len().is_multiple_of(2)
    {
        return Err(Error::InvalidInput(format!(
            "a certificate serial is an even number of hex digits (at most 21 bytes), got {:?}",
            shorten(s)
        )));
    }
    Ok(t)
}

/// Maps a reason keyword to an RFC 5280 reason code (free text gets none).
fn reason_code(reason: &str) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    let key = reason
        .split(|c: char| c.is_whitespace() || c == ':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Some(match key.as_str() {
        "key-compromise" | "keycompromise" | "compromised" => R::KeyCompromise,
        "ca-compromise" => R::CaCompromise,
        "affiliation-changed" => R::AffiliationChanged,
        "superseded" => R::Superseded,
        "cessation-of-operation" | "decommissioned" => R::CessationOfOperation,
        "certificate-hold" => R::CertificateHold,
        "privilege-withdrawn" => R::PrivilegeWithdrawn,
        _ => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn issue_crl_with<B: Backend>(
    ks: &Keystore<B>,
    db: &PkiDb,
    actor: &Actor,
    signer: &KeystoreSigner<'_, B>,
    ca: &CertInfo,
    revoked: Vec<(String, String, Option<String>)>,
    now: OffsetDateTime,
    next_update_in: Duration,
) -> Result<Vec<u8>> {
    check_crl_validity(next_update_in)?;
    let issuer = issuer_for(signer, ca)?;
    let mut entries = Vec::with_capacity(revoked.len());
    for (serial, at, reason) in &revoked {
        let bytes = hex::decode(serial)
            .map_err(|_| Error::Integrity(format!("stored serial '{serial}' is not hex")))?;
        entries.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&bytes),
            revocation_time: to_second(crate::util::parse_time(at)?),
            reason_code: reason.as_deref().and_then(reason_code),
            invalidity_date: None,
        });
    }
    let mut conn = db.lock();
    let tx = db::tx(&mut conn)?;
    let number: i64 = opt(tx.query_row(
        "SELECT number FROM crl_state WHERE issuer_serial = ?1",
        params![ca.serial],
        |r| r.get(0),
    ))?
    .unwrap_or(0)
        + 1;
    let params = rcgen::CertificateRevocationListParams {
        this_update: to_second(now),
        next_update: to_second(now + next_update_in),
        crl_number: rcgen::SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(|e| signer.map_err(e))?;
    let der = crl.der().to_vec();
    q(tx.execute(
        "INSERT INTO crl_state (issuer_serial, number, der, this_update, next_update)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(issuer_serial) DO UPDATE SET number = ?2, der = ?3, this_update = ?4, next_update = ?5",
        params![
            ca.serial,
            number,
            der,
            rfc3339(now),
            rfc3339(now + next_update_in)
        ],
    ))?;
    append_event(
        &tx,
        ks,
        actor,
        now,
        EventFields {
            event: "crl",
            serial: Some(&ca.serial),
            detail: format!(
                "CRL #{number} by '{}' with {} entries, next update {}",
                ca.subject,
                revoked.len(),
                rfc3339(now + next_update_in)
            ),
            ..EventFields::default()
        },
    )?;
    commit(tx)?;
    Ok(der)
}

/// The ceremony (REQ-KEY-SOD-01): the production keystore generates the
/// intermediate key and its CSR, the root signs it, the production side
/// installs the certificate. Two actors: the root's custodian and the
/// production security officer. Returns the intermediate certificate.
pub fn ceremony<R: Backend, P: Backend>(
    root: &RootCa<'_, R>,
    root_actor: &Actor,
    factory: &Factory<'_, P>,
    production_actor: &Actor,
    common_name: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertInfo> {
    let csr = factory.request_intermediate(production_actor, common_name)?;
    let cert = root.sign_intermediate(root_actor, &csr.der, validity, now)?;
    let root_cert = root.certificate()?;
    factory.install_intermediate(production_actor, &cert.der, &root_cert.der, now)?;
    Ok(cert)
}

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
    ks: &'a Keystore<B>,
    db: &'a PkiDb,
}

impl<B: Backend> std::fmt::Debug for Factory<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory").finish_non_exhaustive()
    }
}

impl<'a, B: Backend> Factory<'a, B> {
    /// The factory over the production keystore `ks` and its PKI database.
    pub fn new(ks: &'a Keystore<B>, db: &'a PkiDb) -> Self {
        Factory { ks, db }
    }

    /// The production keystore.
    pub fn keystore(&self) -> &'a Keystore<B> {
        self.ks
    }

    /// Generates the intermediate key inside the production backend (or
    /// reuses one left by an interrupted ceremony) and returns its CSR.
    /// Needs the security-officer role.
    pub fn request_intermediate(&self, actor: &Actor, common_name: &str) -> Result<VerifiedCsr> {
        require(
            actor,
            &[Role::SecurityOfficer],
            "requesting an intermediate CA",
        )?;
        let subject = cn_subject(common_name, None)?;
        match self.ks.info(INTERMEDIATE_KEY) {
            Ok(info) => {
                let installed = db::current_ca(&self.db.lock(), "intermediate")?;
                let active_fp = info.active().and_then(|v| v.fingerprint.clone());
                if let (Some(row), Some(fp)) = (installed, active_fp) {
                    if CertInfo::parse(&row)?.spki_fingerprint == fp {
                        return Err(Error::AlreadyExists(format!(
                            "the active version of '{INTERMEDIATE_KEY}' already has a certificate; \
                             rotate the key first to make a new intermediate"
                        )));
                    }
                }
            }
            Err(Error::NotFound(_)) => {
                let spec = KeySpec::new(Algorithm::EcdsaP256Sha256)
                    .with_usages(Usages::SIGN | Usages::VERIFY);
                self.ks.create(actor, INTERMEDIATE_KEY, spec)?;
            }
            Err(e) => return Err(e),
        }
        ensure_event_key(self.ks, actor)?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
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
        require(
            actor,
            &[Role::SecurityOfficer],
            "installing an intermediate CA",
        )?;
        let inter = CertInfo::parse(intermediate_der)?;
        let root = CertInfo::parse(root_der)?;
        if !root.is_ca || !inter.is_ca {
            return Err(Error::InvalidInput(
                "the root and the intermediate must both be CA certificates".into(),
            ));
        }
        verify_signed_by(&root.der, &root)?;
        verify_signed_by(&inter.der, &root)?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
        if signer.spki_der() != inter.spki_der.as_slice() {
            return Err(Error::Integrity(format!(
                "the intermediate certificate does not carry the active key of '{INTERMEDIATE_KEY}'"
            )));
        }
        if let Some(current) = db::current_ca(&self.db.lock(), "root")? {
            if current != root.der {
                return Err(Error::Policy(
                    "this store already trusts another root; a new root needs a new store".into(),
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
        append_event(
            &tx,
            self.ks,
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
            Error::NotFound(
                "no root certificate installed (run the `ca sign-intermediate` ceremony)".into(),
            )
        })?;
        CertInfo::parse(&row)
    }

    /// The current intermediate certificate.
    pub fn intermediate(&self) -> Result<CertInfo> {
        let row = db::current_ca(&self.db.lock(), "intermediate")?.ok_or_else(|| {
            Error::NotFound(
                "no intermediate CA installed (run the `ca sign-intermediate` ceremony)".into(),
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
        self.issue(actor, req, None, now)
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
            return Err(Error::InvalidInput(
                "a grace period cannot be negative".into(),
            ));
        }
        self.issue(actor, req, Some(grace), now)
    }

    fn issue(
        &self,
        actor: &Actor,
        req: &DeviceRequest<'_>,
        renewal_grace: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let what = if renewal_grace.is_some() {
            "renewing a device certificate"
        } else {
            "provisioning a device"
        };
        require(actor, &[Role::Operator, Role::SecurityOfficer], what)?;
        check_device_id(req.device_id)?;
        check_operator(req.operator)?;
        check_validity(req.validity, "device certificate")?;
        let csr = verify_csr(req.csr_der)?;
        if csr.common_name.as_deref() != Some(req.device_id)
            || csr.subject_serial_number.as_deref() != Some(req.device_id)
        {
            return Err(Error::InvalidInput(format!(
                "the CSR's subject (CN {:?}, serialNumber {:?}) does not name device '{}'",
                csr.common_name.as_deref().map(shorten),
                csr.subject_serial_number.as_deref().map(shorten),
                req.device_id
            )));
        }
        let fingerprint = csr.fingerprint();
        let root = self.root()?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
        let issuer = issuer_for(&signer, &inter)?;
        ensure_event_key(self.ks, actor)?;

        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        let existing: Option<(String, String)> = opt(tx.query_row(
            "SELECT operator, provisioned_at FROM devices WHERE device_id = ?1",
            params![req.device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))?;
        match (&existing, renewal_grace) {
            (Some((op, at)), None) => {
                return Err(Error::AlreadyExists(format!(
                "device '{}' was already provisioned at {at} by {op}; a unit is provisioned once",
                req.device_id
            )))
            }
            (None, Some(_)) => {
                return Err(Error::NotFound(format!(
                    "device '{}' is not registered; provision it first",
                    req.device_id
                )))
            }
            _ => {}
        }
        let owner: Option<String> = opt(tx.query_row(
            "SELECT device_id FROM device_keys WHERE fingerprint = ?1",
            params![fingerprint],
            |r| r.get(0),
        ))?;
        if let Some(owner) = owner {
            return Err(Error::AlreadyExists(format!(
                "public key {fingerprint} is already registered to device '{owner}'; \
                 a key is never issued to two units"
            )));
        }

        let not_after = std::cmp::min(now + req.validity, inter.not_after);
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = crate::x509::device_subject(req.device_id)?;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = to_second(now - BACKDATE);
        params.not_after = to_second(not_after);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        let subject_key = SubjectKey::from(&csr.public_key)?;
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| signer.map_err(e))?;
        let info = CertInfo::parse(cert.der())?;
        // Never trust the code that made it: the chain must validate with webpki.
        self_check(&info, &inter, &root, now)?;

        let now_s = rfc3339(now);
        if existing.is_none() {
            tx.execute(
                "INSERT INTO devices (device_id, operator, provisioned_at, event_id, record_yaml)
                 VALUES (?1, ?2, ?3, '', '')",
                params![req.device_id, req.operator, now_s],
            )
            .map_err(|e| {
                unique_or(e, || {
                    format!("device '{}' is already provisioned", req.device_id)
                })
            })?;
        }
        tx.execute(
            "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at) VALUES (?1, ?2, ?3, ?4)",
            params![fingerprint, req.device_id, req.key_version, now_s],
        )
        .map_err(|e| unique_or(e, || format!("public key {fingerprint} is already registered")))?;
        if let Some(grace) = renewal_grace {
            q(tx.execute(
                "UPDATE issued SET superseded_at = ?2, grace_end = ?3
                 WHERE device_id = ?1 AND superseded_at IS NULL",
                params![req.device_id, now_s, rfc3339(now + grace)],
            ))?;
        }
        tx.execute(
            "INSERT INTO issued (serial, issuer_serial, device_id, fingerprint, key_version, der, digest,
                                 not_before, not_after, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                info.serial,
                inter.serial,
                req.device_id,
                fingerprint,
                req.key_version,
                info.der,
                info.digest,
                rfc3339(info.not_before),
                rfc3339(info.not_after),
                now_s
            ],
        )
        .map_err(|e| unique_or(e, || format!("certificate serial {} already issued", info.serial)))?;
        let event = if renewal_grace.is_some() {
            "renew"
        } else {
            "provision"
        };
        let event_id = append_event(
            &tx,
            self.ks,
            actor,
            now,
            EventFields {
                event,
                device_id: Some(req.device_id),
                serial: Some(&info.serial),
                fingerprint: Some(&fingerprint),
                detail: format!(
                    "operator {} key version {} certificate until {}",
                    req.operator,
                    req.key_version,
                    rfc3339(info.not_after)
                ),
            },
        )?;
        let record = ProvisioningRecord {
            device_id: req.device_id.to_string(),
            keys: RecordKeys {
                identity_cert: info.digest.clone(),
                bootstrap_ca: root.digest.clone(),
                issuing_ca: inter.digest.clone(),
                identity_key: fingerprint.clone(),
                identity_key_version: req.key_version,
            },
            date: now.date().to_string(),
            operator: req.operator.to_string(),
            actor: actor.id().to_string(),
            provisioned_at: now_s.clone(),
            event_id: event_id.clone(),
            certificate_serial: info.serial.clone(),
            certificate_not_after: rfc3339(info.not_after),
            device_backend: req.device_backend.map(str::to_string),
        };
        if renewal_grace.is_none() {
            q(tx.execute(
                "UPDATE devices SET event_id = ?2, record_yaml = ?3 WHERE device_id = ?1",
                params![req.device_id, event_id, record.to_yaml()?],
            ))?;
        }
        commit(tx)?;
        Ok(Issued {
            certificate: info,
            intermediate: inter,
            root,
            record,
            event_id,
        })
    }

    /// The provisioning record of a device.
    pub fn record(&self, device_id: &str) -> Result<ProvisioningRecord> {
        check_device_id(device_id)?;
        let yaml: String = opt(self.db.lock().query_row(
            "SELECT record_yaml FROM devices WHERE device_id = ?1",
            params![device_id],
            |r| r.get(0),
        ))?
        .ok_or_else(|| Error::NotFound(format!("device '{device_id}' is not registered")))?;
        ProvisioningRecord::from_yaml(&yaml)
    }

    /// Every certificate issued to a device, oldest first.
    pub fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCert>> {
        check_device_id(device_id)?;
        let conn = self.db.lock();
        let mut stmt = q(conn.prepare(
            "SELECT serial, device_id, fingerprint, key_version, not_after, superseded_at, grace_end,
                    revoked_at, der
             FROM issued WHERE device_id = ?1 ORDER BY issued_at, rowid",
        ))?;
        let rows = q(stmt.query_map(params![device_id], |r| {
            Ok(IssuedCert {
                serial: r.get(0)?,
                device_id: r.get(1)?,
                fingerprint: r.get(2)?,
                key_version: r.get(3)?,
                not_after: r.get(4)?,
                superseded_at: r.get(5)?,
                grace_end: r.get(6)?,
                revoked_at: r.get(7)?,
                der: r.get(8)?,
            })
        }))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| Error::backend("pki-db", "PKI database query failed", e))
    }

    /// Number of registered devices.
    pub fn device_count(&self) -> Result<u64> {
        let n: i64 = q(self
            .db
            .lock()
            .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0)))?;
        Ok(n as u64)
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

    /// Revokes the certificate with `serial` and issues a new CRL (returned,
    /// DER). Needs the security-officer role.
    pub fn revoke(
        &self,
        actor: &Actor,
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>> {
        require(actor, &[Role::SecurityOfficer], "revoking a certificate")?;
        check_reason(reason)?;
        let serial = normalise_serial(serial)?;
        ensure_event_key(self.ks, actor)?;
        {
            let mut conn = self.db.lock();
            let tx = db::tx(&mut conn)?;
            let row: Option<(String, Option<String>)> = opt(tx.query_row(
                "SELECT device_id, revoked_at FROM issued WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))?;
            let device = match row {
                None => {
                    return Err(Error::NotFound(format!(
                        "no certificate with serial {serial} was issued here"
                    )))
                }
                Some((_, Some(at))) => {
                    return Err(Error::KeyState(format!(
                        "certificate {serial} was already revoked at {at}"
                    )))
                }
                Some((d, None)) => d,
            };
            q(tx.execute(
                "UPDATE issued SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                params![serial, rfc3339(now), reason],
            ))?;
            append_event(
                &tx,
                self.ks,
                actor,
                now,
                EventFields {
                    event: "revoke",
                    device_id: Some(&device),
                    serial: Some(&serial),
                    detail: format!("revoked: {reason}"),
                    ..EventFields::default()
                },
            )?;
            commit(tx)?;
        }
        self.issue_crl(actor, now, DEFAULT_CRL_VALIDITY)
    }

    /// Revokes every unrevoked certificate of a device; returns their
    /// serials and the new CRL.
    pub fn revoke_device(
        &self,
        actor: &Actor,
        device_id: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(Vec<String>, Vec<u8>)> {
        require(actor, &[Role::SecurityOfficer], "revoking a certificate")?;
        let serials: Vec<String> = self
            .certificates(device_id)?
            .into_iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| c.serial)
            .collect();
        if serials.is_empty() {
            return Err(Error::NotFound(format!(
                "device '{device_id}' has no unrevoked certificate"
            )));
        }
        let mut crl = Vec::new();
        for s in &serials {
            crl = self.revoke(actor, s, reason, now)?;
        }
        Ok((serials, crl))
    }

    /// Issues the intermediate's CRL (every certificate it issued that was
    /// revoked), valid until `now + next_update_in`. Needs the operator or
    /// security-officer role (reissuing before nextUpdate is routine).
    pub fn issue_crl(
        &self,
        actor: &Actor,
        now: OffsetDateTime,
        next_update_in: Duration,
    ) -> Result<Vec<u8>> {
        require(
            actor,
            &[Role::Operator, Role::SecurityOfficer],
            "issuing a CRL",
        )?;
        let inter = self.intermediate()?;
        let signer = KeystoreSigner::new(self.ks, INTERMEDIATE_KEY)?;
        ensure_event_key(self.ks, actor)?;
        let revoked = {
            let conn = self.db.lock();
            let mut stmt = q(conn.prepare(
                "SELECT serial, revoked_at, reason FROM issued
                 WHERE issuer_serial = ?1 AND revoked_at IS NOT NULL ORDER BY revoked_at",
            ))?;
            let rows = q(stmt.query_map(params![inter.serial], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            }))?;
            rows.collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
                .map_err(|e| Error::backend("pki-db", "PKI database query failed", e))?
        };
        issue_crl_with(
            self.ks,
            self.db,
            actor,
            &signer,
            &inter,
            revoked,
            now,
            next_update_in,
        )
    }

    /// The last CRL the current intermediate issued, if any.
    pub fn current_crl(&self) -> Result<Option<Vec<u8>>> {
        let inter = self.intermediate()?;
        Ok(opt(self.db.lock().query_row(
            "SELECT der FROM crl_state WHERE issuer_serial = ?1",
            params![inter.serial],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        ))?
        .flatten())
    }

    /// Every event of the registry's log, after verifying its chain and MACs.
    pub fn verify_events(&self) -> Result<Vec<db::Event>> {
        db::verify_events(&self.db.lock(), self.ks)
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
            .ok_or_else(|| Error::NotFound(format!("key '{key}' has no version {version}")))?;
        if v.origin != Origin::Generated {
            return Err(Error::Policy(format!(
                "key '{key}' version {version} was {}, not generated inside the backend",
                v.origin
            )));
        }
        Ok(())
    }
}

/// Validates a freshly issued device certificate with webpki (path to the
/// root, key usage), without revocation: nothing is revoked yet.
fn self_check(
    cert: &CertInfo,
    inter: &CertInfo,
    root: &CertInfo,
    now: OffsetDateTime,
) -> Result<()> {
    let ee_der = CertificateDer::from(cert.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&ee_der)
        .map_err(|e| Error::Integrity(format!("issued certificate does not parse: {e}")))?;
    let root_der = CertificateDer::from(root.der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .map_err(|e| Error::Integrity(format!("root certificate unusable: {e}")))?;
    let inters = [CertificateDer::from(inter.der.as_slice())];
    let secs = u64::try_from(now.unix_timestamp())
        .map_err(|_| Error::InvalidInput("the issuance time is before 1970".into()))?;
    ee.verify_for_usage(
        crate::verify::ALGS,
        &[anchor],
        &inters,
        rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| Error::Integrity(format!("the issued certificate does not validate: {e}")))?;
    Ok(())
}

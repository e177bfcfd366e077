//! The delegated OCSP signer (RFC 6960 section 4.2.2.2): a key in the
//! production keystore, certified by the production intermediate for
//! `id-kp-OCSPSigning` with `id-pkix-ocsp-nocheck` and a short validity;
//! what the responder reads from the registry (the certificate status of a
//! serial); and the device certificates' AIA OCSP URL.

use super::cert::issuer_for;
use super::crl::reason_code;
use super::factory::Factory;
use super::{BACKDATE, INTERMEDIATE_KEY};
use crate::db::{self, commit, opt, q};
use crate::eventlog::{ensure_event_key, EventFields};
use crate::signer::KeystoreSigner;
use crate::util::{parse_time, random_serial, rfc3339, shorten, to_second};
use crate::x509::{check_pki_algorithm, cn_subject, CertInfo};
use keystore_api::{Actor, Backend, Duty, Error, ErrorKind, KeySpec, Result, Usages};
use rusqlite::params;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// The delegated OCSP signing key's name in the production keystore.
pub const OCSP_SIGNER_KEY: &str = "pki.ocsp-signer";
/// Default validity of the delegated OCSP signing certificate: short, since
/// it carries `id-pkix-ocsp-nocheck` and so cannot itself be revoked.
pub const DEFAULT_OCSP_SIGNER_VALIDITY: Duration = Duration::days(7);
/// Longest validity accepted for the delegated OCSP signing certificate.
pub const MAX_OCSP_SIGNER_VALIDITY: Duration = Duration::days(90);

/// `id-pkix-ocsp-nocheck` (RFC 6960 section 4.2.2.2.1).
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
/// `id-pe-authorityInfoAccess` (RFC 5280 section 4.2.2.1).
const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// `id-kp-OCSPSigning`, the contents octets of its DER encoding (as webpki
/// takes an EKU).
pub(crate) const OCSP_SIGNING_EKU: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 3, 9];
/// Longest OCSP URL accepted for the AIA extension.
const MAX_URL_LEN: usize = 256;

/// What the registry knows about a serial, for the OCSP responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistryStatus {
    /// Issued by the intermediate and not revoked.
    Good,
    /// Revoked at `at`, with the RFC 5280 reason code its reason text names.
    Revoked {
        /// When it was revoked.
        at: OffsetDateTime,
        /// The reason code, if the recorded reason names one.
        reason: Option<u8>,
    },
    /// Never issued by this intermediate.
    Unknown,
}

/// The signing side of the responder: the intermediate, the current
/// delegated certificate and a signer over the key it certifies.
pub(crate) struct OcspSigning<'k, B: Backend> {
    /// The intermediate (the issuer whose certificates are answered for).
    pub(crate) issuer: CertInfo,
    /// The newest delegated certificate under it.
    pub(crate) cert: CertInfo,
    /// The active version of [`OCSP_SIGNER_KEY`], the key of `cert`.
    pub(crate) signer: KeystoreSigner<'k, B>,
}

/// Checks an OCSP URL for the AIA extension: `http://` (OCSP is plain HTTP,
/// RFC 6960 appendix A), at most 256 printable ASCII characters, a host.
pub(crate) fn check_ocsp_url(url: &str) -> Result<()> {
    let bad = || {
        Error::invalid_input(format!(
            "an OCSP URL is http://HOST[:PORT][/PATH], at most {MAX_URL_LEN} printable ASCII characters; got {:?}",
            shorten(url)
        ))
    };
    if url.len() > MAX_URL_LEN || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

/// The AIA extension naming `url` as the OCSP responder (non-critical).
pub(super) fn aia_extension(url: &str) -> Result<rcgen::CustomExtension> {
    use der::Encode;
    use x509_cert::ext::pkix::{name::GeneralName, AccessDescription, AuthorityInfoAccessSyntax};
    let location = der::asn1::Ia5String::new(url)
        .map_err(|e| Error::invalid_input(format!("the OCSP URL is not IA5: {e}")))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5912::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let der = aia
        .to_der()
        .map_err(|e| Error::invalid_input(format!("cannot encode the AIA extension: {e}")))?;
    Ok(rcgen::CustomExtension::from_oid_content(OID_AIA, der))
}

impl<'a, B: Backend> Factory<'a, B> {
    /// Device certificates issued from now on carry `url` as their OCSP
    /// responder (authorityInfoAccess, `id-ad-ocsp`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless `url` is `http://HOST[:PORT][/PATH]` of at most
    /// 256 printable ASCII characters.
    pub fn with_ocsp_url(mut self, url: &str) -> Result<Self> {
        check_ocsp_url(url)?;
        self.ocsp_url = Some(url.to_string());
        Ok(self)
    }

    /// The OCSP URL device certificates carry, if one was configured.
    pub fn ocsp_url(&self) -> Option<&str> {
        self.ocsp_url.as_deref()
    }

    /// Issues (or renews) the delegated OCSP signing certificate: the key
    /// [`OCSP_SIGNER_KEY`] is generated inside the production backend the
    /// first time, with the factory's
    /// [`key_algorithm`](Factory::key_algorithm) (ECDSA P-256 by default);
    /// a later call rotates it (keeping its algorithm) when its active
    /// version already has a certificate, so every renewal certifies a fresh
    /// key. The intermediate signs a certificate for it with
    /// `id-kp-OCSPSigning`, `id-pkix-ocsp-nocheck` and a validity of
    /// `validity` (never beyond the intermediate's), which is recorded in
    /// the PKI database with an `ocsp-signer` event. Needs the
    /// security-officer role.
    ///
    /// # Errors
    ///
    /// `Auth`/`Policy` for another role, `InvalidInput` for a validity not in
    /// (0, [`MAX_OCSP_SIGNER_VALIDITY`]] or a bad common name, `NotFound`
    /// before the ceremony, `Unsupported` for a key algorithm outside
    /// [`PKI_ALGORITHMS`](crate::PKI_ALGORITHMS) when the key is created,
    /// and the keystore's or database's errors.
    pub fn issue_ocsp_signer(
        &self,
        actor: &Actor,
        common_name: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<CertInfo> {
        self.ks.authorize(
            actor,
            Duty::ManageCa,
            "issuing the OCSP signing certificate",
        )?;
        if validity <= Duration::ZERO || validity > MAX_OCSP_SIGNER_VALIDITY {
            return Err(Error::invalid_input(format!(
                "an OCSP signer validity is more than 0 and at most {} days",
                MAX_OCSP_SIGNER_VALIDITY.whole_days()
            )));
        }
        let subject = cn_subject(common_name, None)?;
        let inter = self.intermediate()?;
        self.ensure_signer_key(actor)?;
        ensure_event_key(self.ks, actor)?;
        let key = KeystoreSigner::for_rcgen(self.ks, OCSP_SIGNER_KEY)?;
        let inter_signer = KeystoreSigner::for_rcgen(self.ks, INTERMEDIATE_KEY)?;
        let issuer = issuer_for(&inter_signer, &inter)?;
        let not_after = std::cmp::min(now + validity, inter.not_after);
        let params = signer_params(subject, now - BACKDATE, not_after)?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| inter_signer.map_rcgen_error(e))?;
        let cert = CertInfo::parse(cert.der())?;
        self_check(&cert, &inter, now)?;
        self.record_signer(actor, &cert, &inter, key.version(), now)?;
        Ok(cert)
    }

    /// Creates [`OCSP_SIGNER_KEY`] if it is missing, or rotates it if its
    /// active version already has a recorded certificate.
    fn ensure_signer_key(&self, actor: &Actor) -> Result<()> {
        match self.ks.info(OCSP_SIGNER_KEY) {
            Ok(info) => {
                let fp = info.active().and_then(|v| v.fingerprint.clone());
                let certified = match fp {
                    None => false,
                    Some(fp) => self.signer_rows()?.iter().any(|c| c.spki_fingerprint == fp),
                };
                if certified {
                    self.ks.rotate(actor, OCSP_SIGNER_KEY, Duration::ZERO)?;
                }
                Ok(())
            }
            Err(ref e) if e.is(ErrorKind::NotFound) => {
                check_pki_algorithm(self.key_algorithm, "OCSP signer")?;
                let spec =
                    KeySpec::new(self.key_algorithm).with_usages(Usages::SIGN | Usages::VERIFY);
                self.ks.create(actor, OCSP_SIGNER_KEY, spec).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Every recorded delegated certificate, newest first.
    fn signer_rows(&self) -> Result<Vec<CertInfo>> {
        let conn = self.db.lock();
        let mut stmt =
            q(conn.prepare("SELECT der FROM ocsp_signers ORDER BY installed_at DESC, rowid DESC"))?;
        let ders = q(stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)))?;
        let ders = q(ders.collect::<rusqlite::Result<Vec<_>>>())?;
        ders.iter().map(|d| CertInfo::parse(d)).collect()
    }

    /// Records the delegated certificate and its event in one transaction.
    fn record_signer(
        &self,
        actor: &Actor,
        cert: &CertInfo,
        inter: &CertInfo,
        key_version: u32,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut conn = self.db.lock();
        let tx = db::tx(&mut conn)?;
        q(tx.execute(
            "INSERT INTO ocsp_signers (serial, issuer_serial, key_name, key_version, der, digest,
                                       not_after, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                cert.serial,
                inter.serial,
                OCSP_SIGNER_KEY,
                key_version,
                cert.der,
                cert.digest,
                rfc3339(cert.not_after),
                rfc3339(now)
            ],
        ))?;
        self.log_event(
            Some(&tx),
            actor,
            now,
            EventFields {
                event: "ocsp-signer",
                serial: Some(&cert.serial),
                fingerprint: Some(&cert.spki_fingerprint),
                detail: format!(
                    "OCSP signer '{}' (key version {key_version}) under '{}' until {}",
                    cert.subject,
                    inter.subject,
                    rfc3339(cert.not_after)
                ),
                ..EventFields::default()
            },
        )?;
        commit(tx)
    }

    /// The newest delegated OCSP signing certificate under the current
    /// intermediate.
    ///
    /// # Errors
    ///
    /// `NotFound` before the ceremony or before [`Factory::issue_ocsp_signer`].
    pub fn ocsp_signer(&self) -> Result<CertInfo> {
        let inter = self.intermediate()?;
        let der: Option<Vec<u8>> = opt(self.db.lock().query_row(
            "SELECT der FROM ocsp_signers WHERE issuer_serial = ?1
             ORDER BY installed_at DESC, rowid DESC LIMIT 1",
            params![inter.serial],
            |r| r.get(0),
        ))?;
        let der = der.ok_or_else(|| {
            Error::not_found("no OCSP signing certificate (run `keyctl ca ocsp-signer`)")
        })?;
        CertInfo::parse(&der)
    }

    /// The intermediate, the current delegated certificate and a signer over
    /// its key; `KeyState` if the key was rotated since it was certified.
    pub(crate) fn ocsp_signing(&self) -> Result<OcspSigning<'a, B>> {
        let issuer = self.intermediate()?;
        let cert = self.ocsp_signer()?;
        let signer = KeystoreSigner::for_rcgen(self.ks, OCSP_SIGNER_KEY)?;
        if signer.spki_der() != cert.spki_der.as_slice() {
            return Err(Error::key_state(format!(
                "the active version of '{OCSP_SIGNER_KEY}' has no certificate; \
                 run `keyctl ca ocsp-signer`"
            )));
        }
        Ok(OcspSigning {
            issuer,
            cert,
            signer,
        })
    }

    /// The registry's status of `serial` (lowercase hex) as issued by the
    /// intermediate whose serial is `issuer_serial`.
    pub(crate) fn registry_status(
        &self,
        issuer_serial: &str,
        serial: &str,
    ) -> Result<RegistryStatus> {
        let row = self
            .registry
            .issued(serial)?
            .filter(|r| r.issuer_serial == issuer_serial)
            .map(|r| (r.revoked_at, r.reason));
        Ok(match row {
            None => RegistryStatus::Unknown,
            Some((None, _)) => RegistryStatus::Good,
            Some((Some(at), reason)) => RegistryStatus::Revoked {
                at: parse_time(&at)?,
                reason: reason.as_deref().and_then(reason_code).map(|r| r as u8),
            },
        })
    }
}

/// The delegated certificate's parameters: an end entity with
/// digitalSignature, `id-kp-OCSPSigning`, `id-pkix-ocsp-nocheck` (NULL),
/// a fresh serial and SHA-256 key identifiers.
fn signer_params(
    subject: rcgen::DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = subject;
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning];
    p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        OID_OCSP_NOCHECK,
        vec![0x05, 0x00],
    )];
    p.not_before = to_second(not_before);
    p.not_after = to_second(not_after);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    Ok(p)
}

/// Validates the delegated certificate with webpki: signed by the
/// intermediate, valid at `now`, with the OCSPSigning EKU.
fn self_check(cert: &CertInfo, inter: &CertInfo, now: OffsetDateTime) -> Result<()> {
    let ee_der = CertificateDer::from(cert.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(|e| {
        Error::integrity(format!("the OCSP signer certificate does not parse: {e}"))
    })?;
    let inter_der = CertificateDer::from(inter.der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&inter_der)
        .map_err(|e| Error::integrity(format!("the intermediate is unusable: {e}")))?;
    let secs = u64::try_from(now.unix_timestamp())
        .map_err(|_| Error::invalid_input("the issuance time is before 1970"))?;
    ee.verify_for_usage(
        crate::verify::ALGS,
        &[anchor],
        &[],
        rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        webpki::KeyUsage::required(OCSP_SIGNING_EKU),
        None,
        None,
    )
    .map_err(|e| {
        Error::integrity(format!(
            "the OCSP signer certificate does not validate: {e}"
        ))
    })?;
    Ok(())
}

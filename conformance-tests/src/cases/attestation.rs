//! TPM key attestation at provisioning (TEST-KEY-69, -70, -71): before a
//! soft production factory (offline root, ceremony, intermediate, registry
//! on SQLite: [`FactoryPki`]) certifies a device identity key generated in
//! the backend under test, the device proves the key is TPM-resident (EK
//! certificate to the manufacturer CA, credential activation, `TPM2_Certify`
//! with `fixedTPM | fixedParent | sensitiveDataOrigin`;
//! `provisioning::attest_tpm`).
//!
//! The TPM fixture's simulator is manufactured with an EK certificate whose
//! CA it names ([`Fixture::manufacturer_ca_pem`]). The other backends (soft,
//! PKCS#11, the TPM-sealed soft store, whose keys are soft) have no
//! endorsement key: TEST-KEY-69 and -70 prove their own `Unsupported`, and
//! TEST-KEY-71 runs everywhere, an unattested unit being refused by a
//! product line that requires attestation.

use super::device::FactoryPki;
use crate::support::{expect_err, operator, so};
use crate::{Fixture, Outcome};
use backend_soft::SoftStore;
use backend_tpm::swtpm::{manufacture_with, manufacturer_ca_pem, EkCerts};
use keystore_api::{
    Algorithm, AttestationKeyBlob, Backend, ErrorKind, KeyCertification, Keystore, Operation,
    Origin, Result,
};
use provisioning::{
    attest_tpm, pem_decode_all, shared_key_name, AttestationPolicy, Device, Event, Factory,
    KeystoreAttester, PkiDb, Provisioned, Provisioner, TpmAttester, ATTESTED_TPM, DEVICE_KEY,
    UNATTESTED,
};
use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use time::{Duration, OffsetDateTime};

/// The manufacturer CA (PEM) of a backend that attests its keys; `Err`
/// with the backend's own message once it proved it has no attestation
/// (`Unsupported` for the EK certificate, the EK and an AK).
fn manufacturer_of<F: Fixture>(
    fx: &F,
    ks: &Keystore<F::Backend>,
) -> std::result::Result<String, String> {
    match ks.endorsement_certificate() {
        Ok(_) => Ok(fx.manufacturer_ca_pem().unwrap_or_else(|| {
            panic!(
                "{} has an EK certificate but its fixture names no manufacturer CA",
                F::NAME
            )
        })),
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            assert!(
                fx.manufacturer_ca_pem().is_none(),
                "{}'s fixture names a manufacturer CA, yet the backend has no EK: {e}",
                F::NAME
            );
            let what = format!("{} without attestation", F::NAME);
            expect_err(ks.endorsement_public(), ErrorKind::Unsupported, &what);
            expect_err(ks.create_attestation_key(), ErrorKind::Unsupported, &what);
            Err(e.message().to_string())
        }
        Err(e) => panic!("the EK certificate of {}: {e}", F::NAME),
    }
}

/// The outcome of a backend that proved it has no key attestation.
fn no_attestation(why: &str) -> Outcome {
    Outcome::UnsupportedVerified(format!("TPM key attestation: {why}"))
}

/// The policy that trusts the manufacturer whose CA certificates are `pem`.
fn trusting(pem: &str) -> AttestationPolicy {
    AttestationPolicy {
        manufacturer_roots: pem_decode_all(pem, "CERTIFICATE").expect("manufacturer CA PEM"),
    }
}

/// A production line: the soft factory and the device side of units whose
/// identity keys are in the backend under test. Field order is drop order:
/// the device database before the factory's directory that holds it.
struct Line<'k, B: Backend> {
    ks: &'k Keystore<B>,
    dev_db: PkiDb,
    pki: FactoryPki,
    now: OffsetDateTime,
}

impl<'k, B: Backend> Line<'k, B> {
    fn new(ks: &'k Keystore<B>) -> Self {
        assert!(
            ks.backend()
                .capabilities()
                .supports(Algorithm::EcdsaP256Sha256, Operation::Generate),
            "every backend generates ECDSA P-256 device identity keys"
        );
        let now = OffsetDateTime::now_utc();
        let pki = FactoryPki::new(now - Duration::hours(1));
        let dev_db = PkiDb::open(&pki.path("device-pki.sqlite")).expect("device pki db");
        Line {
            ks,
            dev_db,
            pki,
            now,
        }
    }

    fn device(&self, key: &str) -> Device<'_, B> {
        Device::new(self.ks, &self.dev_db, key).expect("device")
    }

    /// Provisions unit `id` (identity key `key`) without attestation.
    fn provision(
        &self,
        factory: &Factory<'_, SoftStore>,
        key: &str,
        id: &str,
    ) -> Result<Provisioned> {
        Provisioner::new(factory, operator()).provision(
            &self.device(key),
            &so(),
            id,
            "line-1",
            self.now,
        )
    }

    /// Provisions unit `id` (identity key `key`) with its attestation by
    /// `attester` under `policy`.
    fn attested(
        &self,
        factory: &Factory<'_, SoftStore>,
        policy: &AttestationPolicy,
        attester: &mut dyn TpmAttester,
        key: &str,
        id: &str,
    ) -> Result<Provisioned> {
        Provisioner::new(factory, operator())
            .with_attestation_policy(policy.clone())
            .provision_attested(&self.device(key), &so(), attester, id, "line-1", self.now)
    }

    /// The `sha256:` fingerprint of `key`'s active version, generated here.
    fn fingerprint(&self, key: &str) -> String {
        let info = self.ks.info(key).expect("identity key");
        let v = info.active().expect("active identity version");
        assert_eq!(
            v.origin,
            Origin::Generated,
            "{key} generated in the backend"
        );
        v.fingerprint.clone().expect("fingerprint")
    }
}

/// The registry's `attestation-refused` events for unit `id`.
fn refusals(factory: &Factory<'_, SoftStore>, id: &str) -> Vec<Event> {
    factory
        .verify_events()
        .expect("the registry's event log verifies")
        .into_iter()
        .filter(|e| e.event == "attestation-refused" && e.device_id.as_deref() == Some(id))
        .collect()
}

/// Asserts that provisioning unit `id` was refused with `kind` saying
/// `says`, that nothing of it was registered, and that the refusal is the
/// one `attestation-refused` event of `id`, naming the identity key `fp`.
#[track_caller]
fn assert_refused(
    factory: &Factory<'_, SoftStore>,
    id: &str,
    res: Result<Provisioned>,
    kind: ErrorKind,
    says: &str,
    fp: &str,
) {
    let e = expect_err(res, kind, &format!("provisioning {id}"));
    assert!(
        e.to_string().contains(says),
        "{id}: expected '{says}' in: {e}"
    );
    expect_err(
        factory.record(id),
        ErrorKind::NotFound,
        "a refused unit's record",
    );
    expect_err(
        factory.attestation(id),
        ErrorKind::NotFound,
        "a refused unit's attestation",
    );
    let audited = refusals(factory, id);
    assert_eq!(
        audited.len(),
        1,
        "one attestation-refused event for {id}: {audited:?}"
    );
    assert!(
        audited[0].detail.contains(says),
        "{id}: {:?}",
        audited[0].detail
    );
    assert_eq!(
        audited[0].fingerprint.as_deref(),
        Some(fp),
        "{id}: the event names the key"
    );
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (installed by scripts/test)")
}

/// Whether `openssl verify -CAfile` accepts the EK certificate `ek_der`
/// (converted to PEM by `openssl x509 -inform DER`) under the CA
/// certificates `ca_pem`; with openssl's output.
fn openssl_verifies_ek(ek_der: &[u8], ca_pem: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ek.der"), ek_der).expect("write ek.der");
    std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("write ca.pem");
    let out = openssl(
        dir.path(),
        &["x509", "-inform", "DER", "-in", "ek.der", "-out", "ek.pem"],
    );
    assert!(
        out.status.success(),
        "openssl cannot read the EK certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "ek.pem"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("ek.pem: OK"), text)
}

// ---------------------------------------------------------------------------
// TEST-KEY-69

/// TEST-KEY-69
pub fn tpm_key_attestation<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let ca_pem = match manufacturer_of(fx, &ks) {
        Ok(pem) => pem,
        Err(why) => return no_attestation(&why),
    };
    let line = Line::new(&ks);
    let factory = line.pki.factory();
    let id = "CONF-ATT-1";
    let mut attester = KeystoreAttester::new(&ks, DEVICE_KEY);
    let unit = line
        .attested(&factory, &trusting(&ca_pem), &mut attester, DEVICE_KEY, id)
        .unwrap_or_else(|e| panic!("attested provisioning on {}: {e}", F::NAME));

    // The registry records the unit as attested, with the evidence digest,
    // in its state, its record and its provisioning event.
    let (state, digest) = factory.attestation(id).expect("registered");
    assert_eq!(state, ATTESTED_TPM);
    let digest = digest.expect("evidence digest");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let expected = format!("{ATTESTED_TPM} {digest}");
    assert_eq!(
        unit.issued.record.attestation.as_deref(),
        Some(expected.as_str())
    );
    let record = factory.record(id).expect("record");
    assert_eq!(record.attestation.as_deref(), Some(expected.as_str()));
    let fp = line.fingerprint(DEVICE_KEY);
    let events = factory.verify_events().expect("event log");
    let provision = events
        .iter()
        .find(|e| e.event == "provision" && e.device_id.as_deref() == Some(id))
        .expect("provision event");
    assert!(provision.detail.contains(&digest), "{}", provision.detail);
    assert_eq!(provision.fingerprint.as_deref(), Some(fp.as_str()));
    assert!(
        !events.iter().any(|e| e.event == "attestation-refused"),
        "nothing refused"
    );

    // The certificate names the key generated in the backend, which the
    // device installed.
    let info = ks.info(DEVICE_KEY).expect("identity key");
    assert_eq!(info.algorithm, Algorithm::EcdsaP256Sha256);
    assert_eq!(unit.issued.certificate.spki_fingerprint, fp);
    assert_eq!(record.keys.identity_key, fp);
    let installed = line.device(DEVICE_KEY).current().expect("current");
    assert_eq!(
        installed.map(|c| c.serial),
        Some(unit.issued.certificate.serial.clone())
    );
    // Below the keystore API, the TPM itself reports the key fixed to it
    // and generated in it.
    let probe = fx
        .probe_extraction(&ks, DEVICE_KEY)
        .unwrap_or_else(|e| panic!("extraction probe of the attested key: {e}"));
    assert!(
        probe
            .iter()
            .any(|c| c.contains("fixedTPM|fixedParent|sensitiveDataOrigin")),
        "{probe:?}"
    );

    // Independently: OpenSSL accepts the EK certificate under the
    // manufacturer's CA.
    let ek = ks.endorsement_certificate().expect("EK certificate");
    let (ok, text) = openssl_verifies_ek(&ek, &ca_pem);
    assert!(ok, "openssl verify of the EK certificate: {text}");
    Outcome::Passed
}

// ---------------------------------------------------------------------------
// TEST-KEY-70

/// A device that replays the certify of an earlier exchange: the same AK
/// every time (so the signature verifies), the credential activated
/// genuinely, and its first certify answered to every nonce.
struct Replay<'a, B: Backend> {
    ks: &'a Keystore<B>,
    key: &'a str,
    ak: Option<AttestationKeyBlob>,
    recorded: RefCell<Option<KeyCertification>>,
}

impl<B: Backend> Replay<'_, B> {
    fn ak(&self) -> &AttestationKeyBlob {
        self.ak.as_ref().expect("an AK was created first")
    }
}

impl<B: Backend> TpmAttester for Replay<'_, B> {
    fn ek_certificate(&self) -> Result<Vec<u8>> {
        self.ks.endorsement_certificate()
    }
    fn ek_public(&self) -> Result<Vec<u8>> {
        self.ks.endorsement_public()
    }
    fn create_attestation_key(&mut self) -> Result<Vec<u8>> {
        if self.ak.is_none() {
            self.ak = Some(self.ks.create_attestation_key()?);
        }
        Ok(self.ak().public_area().to_vec())
    }
    fn activate_credential(&self, blob: &[u8], secret: &[u8]) -> Result<Vec<u8>> {
        self.ks.activate_credential(self.ak(), blob, secret)
    }
    fn certify_identity(&self, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut recorded = self.recorded.borrow_mut();
        if recorded.is_none() {
            *recorded = Some(self.ks.certify_key(self.key, self.ak(), nonce)?);
        }
        let c = recorded.clone().expect("recorded");
        Ok((c.attestation, c.signature, c.public_area))
    }
}

/// Another manufacturer: a CA directory (same names, other keys) that made
/// the EK certificates of a throwaway TPM state, never of this TPM.
fn unknown_manufacturer() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("conformance-other-manufacturer-")
        .tempdir()
        .expect("tempdir");
    let ca = dir.path().join("ca");
    manufacture_with(&dir.path().join("state"), &ca, EkCerts::SwtpmDefault)
        .unwrap_or_else(|e| panic!("a second manufacturer: {e}"));
    let pem = manufacturer_ca_pem(&ca);
    (dir, pem)
}

/// TEST-KEY-70
pub fn forged_attestation_refused<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let ca_pem = match manufacturer_of(fx, &ks) {
        Ok(pem) => pem,
        Err(why) => return no_attestation(&why),
    };
    let line = Line::new(&ks);
    let factory = line.pki.factory();
    let genuine = trusting(&ca_pem);

    // 1. An EK certificate from a manufacturer the factory does not trust:
    //    the policy trusts another one, whose CA openssl confirms did not
    //    issue this TPM's EK certificate.
    let (_other_dir, other_pem) = unknown_manufacturer();
    assert_ne!(other_pem, ca_pem, "two manufacturers, two CAs");
    let ek = ks.endorsement_certificate().expect("EK certificate");
    let (ok, text) = openssl_verifies_ek(&ek, &other_pem);
    assert!(!ok, "openssl accepts the EK under the other CA: {text}");
    let mut device = KeystoreAttester::new(&ks, DEVICE_KEY);
    let res = line.attested(
        &factory,
        &trusting(&other_pem),
        &mut device,
        DEVICE_KEY,
        "CONF-FORGE-1",
    );
    // The refused unit's key was generated (uncertified) before the check.
    let fp = line.fingerprint(DEVICE_KEY);
    assert_refused(
        &factory,
        "CONF-FORGE-1",
        res,
        ErrorKind::Policy,
        "manufacturer CA",
        &fp,
    );

    // 2. A genuine certify of another key in the same TPM, not the key in
    //    the CSR.
    ks.create(
        &so(),
        "other",
        keystore_api::KeySpec::new(Algorithm::EcdsaP256Sha256),
    )
    .expect("a second key in the TPM");
    let mut other = KeystoreAttester::new(&ks, "other");
    let res = line.attested(&factory, &genuine, &mut other, DEVICE_KEY, "CONF-FORGE-2");
    assert_refused(
        &factory,
        "CONF-FORGE-2",
        res,
        ErrorKind::Integrity,
        "not the key in the CSR",
        &fp,
    );

    // 3. A replayed certify: the exchange it was recorded in passed the
    //    verifier; answered to the factory's fresh nonce it does not.
    let spki = ks
        .public_key(DEVICE_KEY)
        .expect("public key")
        .spki_der()
        .to_vec();
    let mut replay = Replay {
        ks: &ks,
        key: DEVICE_KEY,
        ak: None,
        recorded: RefCell::new(None),
    };
    attest_tpm(&genuine, &mut replay, &spki).expect("the recorded exchange is genuine");
    let res = line.attested(&factory, &genuine, &mut replay, DEVICE_KEY, "CONF-FORGE-3");
    assert_refused(
        &factory,
        "CONF-FORGE-3",
        res,
        ErrorKind::Integrity,
        "nonce",
        &fp,
    );

    // The device itself, trusted manufacturer, genuine exchange: the first
    // refused unit is issued with the very key the refusals named.
    let mut device = KeystoreAttester::new(&ks, DEVICE_KEY);
    let unit = line
        .attested(&factory, &genuine, &mut device, DEVICE_KEY, "CONF-FORGE-1")
        .unwrap_or_else(|e| panic!("the genuine exchange after the forgeries: {e}"));
    assert_eq!(unit.issued.certificate.spki_fingerprint, fp);
    assert_eq!(
        factory.attestation("CONF-FORGE-1").expect("registered").0,
        ATTESTED_TPM
    );
    for id in ["CONF-FORGE-1", "CONF-FORGE-2", "CONF-FORGE-3"] {
        assert_eq!(
            refusals(&factory, id).len(),
            1,
            "{id}: one refusal, audited once"
        );
    }
    Outcome::Passed
}

// ---------------------------------------------------------------------------
// TEST-KEY-71

/// TEST-KEY-71
pub fn mandatory_attestation_policy<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let maker = manufacturer_of(fx, &ks);
    let line = Line::new(&ks);
    let mandatory = line.pki.factory().require_attestation(true);
    assert!(mandatory.attestation_required());

    // 1. A product line requiring attestation refuses an unattested unit.
    let res = line.provision(&mandatory, DEVICE_KEY, "CONF-LINE-1");
    let fp = line.fingerprint(DEVICE_KEY);
    assert_refused(
        &mandatory,
        "CONF-LINE-1",
        res,
        ErrorKind::Policy,
        "requires TPM key attestation",
        &fp,
    );
    let installed = line.device(DEVICE_KEY).current().expect("current");
    assert!(installed.is_none(), "a refused unit installs nothing");

    // 2. It issues an attested unit: on a backend with an EK the attested
    //    key passes; on one without, the backend's own Unsupported is
    //    refused and audited like any failed attestation.
    let key2 = shared_key_name("CONF-LINE-2").expect("key name");
    let mut attester = KeystoreAttester::new(&ks, &key2);
    let policy = maker.as_deref().map(trusting).unwrap_or_default();
    let res = line.attested(&mandatory, &policy, &mut attester, &key2, "CONF-LINE-2");
    match &maker {
        Ok(_) => {
            let unit = res.unwrap_or_else(|e| panic!("attested unit on {}: {e}", F::NAME));
            let (state, digest) = mandatory.attestation("CONF-LINE-2").expect("registered");
            assert_eq!(state, ATTESTED_TPM);
            let expected = format!("{ATTESTED_TPM} {}", digest.expect("evidence digest"));
            assert_eq!(
                unit.issued.record.attestation.as_deref(),
                Some(expected.as_str())
            );
            assert_eq!(
                unit.issued.certificate.spki_fingerprint,
                line.fingerprint(&key2)
            );
        }
        Err(why) => {
            let fp2 = line.fingerprint(&key2);
            assert_refused(
                &mandatory,
                "CONF-LINE-2",
                res,
                ErrorKind::Unsupported,
                why,
                &fp2,
            );
        }
    }

    // 3. Without the policy the same unit, with the same key, is issued and
    //    recorded unattested.
    let plain = line.pki.factory();
    assert!(!plain.attestation_required());
    let unit = line
        .provision(&plain, DEVICE_KEY, "CONF-LINE-1")
        .unwrap_or_else(|e| panic!("provisioning without the policy on {}: {e}", F::NAME));
    assert_eq!(
        plain.attestation("CONF-LINE-1").expect("registered"),
        (UNATTESTED.to_string(), None)
    );
    assert_eq!(unit.issued.record.attestation, None);
    assert_eq!(
        plain.record("CONF-LINE-1").expect("record").attestation,
        None
    );
    assert_eq!(
        unit.issued.certificate.spki_fingerprint, fp,
        "the refused unit's key"
    );
    assert_eq!(refusals(&plain, "CONF-LINE-1").len(), 1, "audited once");
    Outcome::Passed
}

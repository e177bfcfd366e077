//! TPM key attestation at provisioning, against real simulators (swtpm)
//! manufactured with EK certificates by a test manufacturer CA
//! (`swtpm_setup` + `swtpm_localca`): the attested flow and its record,
//! the policy that makes attestation mandatory, and one refusal per forged
//! piece of evidence, each audited in the registry's event log. OpenSSL
//! checks the EK certificate chain and the AK's signature independently.

mod common;

use backend_tpm::swtpm::{manufacture_with, manufacturer_ca_pem, EkCerts, Swtpm};
use backend_tpm::{TpmBackend, TpmConfig};
use common::{operator, Pki, Store};
use keystore_api::{Algorithm, BackendKey, ErrorKind, KeyAttestation, KeySpec, Keystore, Usages};
use provisioning::{
    attest_tpm, pem_decode_all, AttestationPolicy, Device, KeystoreAttester, PkiDb, Provisioner,
    TpmAttester, ATTESTED_TPM, DEVICE_KEY,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tempfile::TempDir;

/// A unit whose keystore is on a manufactured swtpm.
struct Unit {
    backend: Arc<TpmBackend>,
    ks: Keystore<Arc<TpmBackend>>,
    db: PkiDb,
    _swtpm: Swtpm,
    _dir: TempDir,
}

impl Unit {
    /// A fresh TPM whose EK certificates `ca_dir`'s manufacturer issued
    /// (its ECC P-256 EK is the one attested).
    fn new(ca_dir: &Path) -> Unit {
        Self::with_certs(ca_dir, EkCerts::WithEccP256)
    }

    fn with_certs(ca_dir: &Path, certs: EkCerts) -> Unit {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("swtpm");
        manufacture_with(&state, ca_dir, certs).unwrap_or_else(|e| panic!("manufacture: {e}"));
        let swtpm = Swtpm::start(&state).unwrap_or_else(|e| panic!("{e}"));
        let backend = Arc::new(
            TpmBackend::open(TpmConfig::new(swtpm.tcti()), &dir.path().join("tpm"))
                .unwrap_or_else(|e| panic!("open: {e}")),
        );
        let ks =
            Keystore::open(backend.clone(), &dir.path().join("metadata.sqlite")).expect("keystore");
        let db = PkiDb::open(&dir.path().join("pki.sqlite")).expect("device db");
        Unit {
            backend,
            ks,
            db,
            _swtpm: swtpm,
            _dir: dir,
        }
    }

    fn device(&self) -> Device<'_, Arc<TpmBackend>> {
        Device::new(&self.ks, &self.db, DEVICE_KEY).expect("device")
    }
}

/// A manufacturer: a CA directory and the policy that trusts it.
struct Manufacturer {
    dir: TempDir,
}

impl Manufacturer {
    fn new() -> Manufacturer {
        Manufacturer {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn policy(&self) -> AttestationPolicy {
        let pem = manufacturer_ca_pem(self.dir.path());
        AttestationPolicy {
            manufacturer_roots: pem_decode_all(&pem, "CERTIFICATE").expect("CA PEM"),
        }
    }
}

/// Records what the device answered, and lets a test replace a step.
struct Recording<'a> {
    inner: &'a mut dyn TpmAttester,
    ek_cert: Vec<u8>,
    ak: Vec<u8>,
}

impl<'a> Recording<'a> {
    fn new(inner: &'a mut dyn TpmAttester) -> Self {
        Recording {
            inner,
            ek_cert: Vec::new(),
            ak: Vec::new(),
        }
    }
}

impl TpmAttester for Recording<'_> {
    fn ek_certificate(&self) -> keystore_api::Result<Vec<u8>> {
        self.inner.ek_certificate()
    }
    fn ek_public(&self) -> keystore_api::Result<Vec<u8>> {
        self.inner.ek_public()
    }
    fn create_attestation_key(&mut self) -> keystore_api::Result<Vec<u8>> {
        self.ek_cert = self.inner.ek_certificate()?;
        self.ak = self.inner.create_attestation_key()?;
        Ok(self.ak.clone())
    }
    fn activate_credential(&self, b: &[u8], s: &[u8]) -> keystore_api::Result<Vec<u8>> {
        self.inner.activate_credential(b, s)
    }
    fn certify_identity(&self, nonce: &[u8]) -> keystore_api::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        self.inner.certify_identity(nonce)
    }
}

/// A device whose EK (certificate and key) is one TPM's and whose AK,
/// activation and certify are another's, or whose certify is of another key.
struct Spliced<'a> {
    ek_from: &'a dyn TpmAttester,
    rest: &'a mut dyn TpmAttester,
}

impl TpmAttester for Spliced<'_> {
    fn ek_certificate(&self) -> keystore_api::Result<Vec<u8>> {
        self.ek_from.ek_certificate()
    }
    fn ek_public(&self) -> keystore_api::Result<Vec<u8>> {
        self.ek_from.ek_public()
    }
    fn create_attestation_key(&mut self) -> keystore_api::Result<Vec<u8>> {
        self.rest.create_attestation_key()
    }
    fn activate_credential(&self, b: &[u8], s: &[u8]) -> keystore_api::Result<Vec<u8>> {
        self.rest.activate_credential(b, s)
    }
    fn certify_identity(&self, nonce: &[u8]) -> keystore_api::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        self.rest.certify_identity(nonce)
    }
}

/// The registry's `attestation-refused` events for `device_id`.
fn refusals(pki: &Pki, device_id: &str) -> Vec<String> {
    pki.factory()
        .verify_events()
        .expect("event log")
        .into_iter()
        .filter(|e| e.event == "attestation-refused" && e.device_id.as_deref() == Some(device_id))
        .map(|e| e.detail)
        .collect()
}

/// Provisions `id` from `unit` with `attester`, expecting a refusal of
/// `kind` whose message contains `says`; checks it was audited and that
/// nothing was registered.
fn refused(
    pki: &Pki,
    unit: &Unit,
    attester: &mut dyn TpmAttester,
    policy: &AttestationPolicy,
    id: &str,
    kind: ErrorKind,
    says: &str,
) {
    let factory = pki.factory();
    let e = Provisioner::new(&factory, operator())
        .with_attestation_policy(policy.clone())
        .provision_attested(
            &unit.device(),
            &operator(),
            attester,
            id,
            "line-1",
            pki.now(),
        )
        .expect_err("a forged attestation");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(says), "{e} (expected: {says})");
    assert!(
        factory.record(id).is_err(),
        "nothing of {id} was registered"
    );
    let audited = refusals(pki, id);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].contains(says), "{audited:?}");
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs")
}

#[test]
fn a_tpm_resident_key_is_attested_and_the_registry_records_it() {
    let maker = Manufacturer::new();
    let unit = Unit::new(&maker.path());
    let pki = Pki::new();
    let factory = pki.factory().require_attestation(true);
    let mut device = KeystoreAttester::new(&unit.ks, DEVICE_KEY);
    let mut rec = Recording::new(&mut device);
    let done = Provisioner::new(&factory, operator())
        .with_attestation_policy(maker.policy())
        .provision_attested(
            &unit.device(),
            &operator(),
            &mut rec,
            "ATT-1",
            "line-1",
            pki.now(),
        )
        .expect("an attested provisioning");
    let (state, digest) = factory.attestation("ATT-1").expect("registered");
    assert_eq!(state, ATTESTED_TPM);
    let digest = digest.expect("evidence digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        done.issued.record.attestation.as_deref(),
        Some(format!("{ATTESTED_TPM} {digest}").as_str())
    );
    let yaml = factory.record("ATT-1").unwrap().to_yaml().unwrap();
    assert!(yaml.contains(&digest), "{yaml}");
    let provision = factory
        .verify_events()
        .unwrap()
        .into_iter()
        .find(|e| e.event == "provision")
        .expect("provision event");
    assert!(provision.detail.contains(&digest), "{}", provision.detail);

    // Independently: OpenSSL accepts the EK certificate under the
    // manufacturer's CA, and the AK's signature over a certify structure.
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("ek.der"), &rec.ek_cert).unwrap();
    std::fs::write(p("ca.pem"), manufacturer_ca_pem(&maker.path())).unwrap();
    let out = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        &p("ek.der"),
        "-out",
        &p("ek.pem"),
    ]);
    assert!(out.status.success());
    let out = openssl(&["verify", "-CAfile", &p("ca.pem"), &p("ek.pem")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let nonce = [0x5a; 32];
    let (attest, sig, _) = rec.certify_identity(&nonce).expect("certify again");
    check_with_openssl(&rec.ak, &attest, &sig, tmp.path());
}

/// Verifies the AK's ECDSA signature over `attest` with `openssl dgst`.
fn check_with_openssl(ak_public: &[u8], attest: &[u8], sig: &[u8], dir: &Path) {
    // TPMT_PUBLIC (ECC): type, nameAlg, attributes, authPolicy, symmetric
    // (NULL), scheme (ECDSA, SHA-256), curve, kdf (NULL), then x and y.
    let mut at = 2 + 2 + 4;
    let policy_len = u16::from_be_bytes([ak_public[at], ak_public[at + 1]]) as usize;
    at += 2 + policy_len + 2 + 4 + 2 + 2;
    let take = |at: &mut usize| {
        let n = u16::from_be_bytes([ak_public[*at], ak_public[*at + 1]]) as usize;
        let v = ak_public[*at + 2..*at + 2 + n].to_vec();
        *at += 2 + n;
        v
    };
    let (x, y) = (take(&mut at), take(&mut at));
    let mut point = vec![4u8];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = p256::PublicKey::from_sec1_bytes(&point).expect("AK point");
    use p256::pkcs8::EncodePublicKey;
    let pem = key.to_public_key_pem(Default::default()).unwrap();
    // TPMT_SIGNATURE: sigAlg, hash, r, s.
    let mut at = 4;
    let (r, s) = (take_from(sig, &mut at), take_from(sig, &mut at));
    let der = p256::ecdsa::Signature::from_scalars(
        <[u8; 32]>::try_from(pad32(&r)).unwrap(),
        <[u8; 32]>::try_from(pad32(&s)).unwrap(),
    )
    .unwrap()
    .to_der();
    let f = |n: &str| dir.join(n).to_string_lossy().into_owned();
    std::fs::write(f("ak.pem"), pem).unwrap();
    std::fs::write(f("attest.bin"), attest).unwrap();
    std::fs::write(f("sig.der"), der.as_bytes()).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &f("ak.pem"),
        "-signature",
        &f("sig.der"),
        &f("attest.bin"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn take_from(buf: &[u8], at: &mut usize) -> Vec<u8> {
    let n = u16::from_be_bytes([buf[*at], buf[*at + 1]]) as usize;
    let v = buf[*at + 2..*at + 2 + n].to_vec();
    *at += 2 + n;
    v
}

fn pad32(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32usize.saturating_sub(v.len())];
    out.extend_from_slice(v);
    out
}

#[test]
fn a_key_under_an_rsa_endorsement_key_is_attested() {
    // swtpm_setup's own certificates only: the RSA-2048 EK is attested
    // (RSA-OAEP credential wrapping instead of ECDH).
    let maker = Manufacturer::new();
    let unit = Unit::with_certs(&maker.path(), EkCerts::SwtpmDefault);
    let pki = Pki::new();
    let factory = pki.factory();
    let mut device = KeystoreAttester::new(&unit.ks, DEVICE_KEY);
    Provisioner::new(&factory, operator())
        .with_attestation_policy(maker.policy())
        .provision_attested(
            &unit.device(),
            &operator(),
            &mut device,
            "RSA-EK-1",
            "line-1",
            pki.now(),
        )
        .expect("attested under the RSA EK");
    assert_eq!(factory.attestation("RSA-EK-1").unwrap().0, ATTESTED_TPM);
}

#[test]
fn a_product_line_that_requires_attestation_refuses_an_unattested_key() {
    let pki = Pki::new();
    let factory = pki.factory().require_attestation(true);
    let dev = Store::open(&pki.path("device"), pki.clock.clone());
    let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
    let e = Provisioner::new(&factory, operator())
        .provision(&device, &operator(), "PLAIN-1", "line-1", pki.now())
        .expect_err("unattested");
    assert!(e.is(ErrorKind::Policy), "{e}");
    assert!(factory.record("PLAIN-1").is_err());
    assert_eq!(refusals(&pki, "PLAIN-1").len(), 1);
    // The same factory without the policy provisions it.
    Provisioner::new(&pki.factory(), operator())
        .provision(&device, &operator(), "PLAIN-1", "line-1", pki.now())
        .expect("no policy");
    assert_eq!(
        pki.factory().attestation("PLAIN-1").unwrap().0,
        "unattested"
    );
}

#[test]
fn a_soft_key_presented_as_a_tpm_key_is_refused() {
    let maker = Manufacturer::new();
    let unit = Unit::new(&maker.path());
    let pki = Pki::new();
    // A soft store has no endorsement key at all.
    let dev = Store::open(&pki.path("device"), pki.clock.clone());
    let soft_device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
    let factory = pki.factory();
    let mut soft = KeystoreAttester::new(&dev.ks, DEVICE_KEY);
    let e = Provisioner::new(&factory, operator())
        .with_attestation_policy(maker.policy())
        .provision_attested(
            &soft_device,
            &operator(),
            &mut soft,
            "SOFT-1",
            "line-1",
            pki.now(),
        )
        .expect_err("a soft store cannot attest");
    assert!(e.is(ErrorKind::Unsupported), "{e}");
    assert_eq!(refusals(&pki, "SOFT-1").len(), 1);
    // A soft key's CSR with a real TPM's evidence (of the TPM's own key).
    unit.ks
        .create(
            &common::officer(),
            DEVICE_KEY,
            KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::SIGN),
        )
        .unwrap();
    let mut tpm = KeystoreAttester::new(&unit.ks, DEVICE_KEY);
    let e = Provisioner::new(&factory, operator())
        .with_attestation_policy(maker.policy())
        .provision_attested(
            &soft_device,
            &operator(),
            &mut tpm,
            "SOFT-2",
            "line-1",
            pki.now(),
        )
        .expect_err("the TPM certified another key");
    assert!(e.is(ErrorKind::Integrity), "{e}");
    assert!(e.to_string().contains("not the key in the CSR"), "{e}");
    assert!(factory.record("SOFT-2").is_err());
    assert_eq!(refusals(&pki, "SOFT-2").len(), 1);
}

#[test]
fn an_ak_from_another_tpm_is_refused() {
    let maker = Manufacturer::new();
    let (a, b) = (Unit::new(&maker.path()), Unit::new(&maker.path()));
    let pki = Pki::new();
    let ek_a = KeystoreAttester::new(&a.ks, DEVICE_KEY);
    let mut rest_b = KeystoreAttester::new(&b.ks, DEVICE_KEY);
    let mut spliced = Spliced {
        ek_from: &ek_a,
        rest: &mut rest_b,
    };
    refused(
        &pki,
        &b,
        &mut spliced,
        &maker.policy(),
        "SPLICE-1",
        ErrorKind::Integrity,
        "credential activation",
    );
}

#[test]
fn an_ek_certificate_from_an_unknown_manufacturer_is_refused() {
    let (trusted, unknown) = (Manufacturer::new(), Manufacturer::new());
    // The trusted manufacturer's CA exists (same names, other keys).
    let _ = Unit::new(&trusted.path());
    let unit = Unit::new(&unknown.path());
    let pki = Pki::new();
    let mut device = KeystoreAttester::new(&unit.ks, DEVICE_KEY);
    refused(
        &pki,
        &unit,
        &mut device,
        &trusted.policy(),
        "FOREIGN-1",
        ErrorKind::Policy,
        "manufacturer CA",
    );
}

#[test]
fn a_certify_over_a_different_key_is_refused() {
    let maker = Manufacturer::new();
    let unit = Unit::new(&maker.path());
    let pki = Pki::new();
    unit.ks
        .create(
            &common::officer(),
            "other.key",
            KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::SIGN),
        )
        .unwrap();
    let mut other = KeystoreAttester::new(&unit.ks, "other.key");
    refused(
        &pki,
        &unit,
        &mut other,
        &maker.policy(),
        "OTHER-1",
        ErrorKind::Integrity,
        "not the key in the CSR",
    );
}

/// Certifies a key the TPM holds outside the keystore (one made without
/// `fixedTPM`) instead of the identity key.
struct Duplicable<'a> {
    inner: KeystoreAttester<'a, Arc<TpmBackend>>,
    backend: &'a TpmBackend,
    ak: Option<keystore_api::AttestationKeyBlob>,
    key: BackendKey,
}

impl TpmAttester for Duplicable<'_> {
    fn ek_certificate(&self) -> keystore_api::Result<Vec<u8>> {
        self.inner.ek_certificate()
    }
    fn ek_public(&self) -> keystore_api::Result<Vec<u8>> {
        self.inner.ek_public()
    }
    fn create_attestation_key(&mut self) -> keystore_api::Result<Vec<u8>> {
        let ak = KeyAttestation::create_attestation_key(self.backend)?;
        let public = ak.public_area().to_vec();
        self.ak = Some(ak);
        Ok(public)
    }
    fn activate_credential(&self, b: &[u8], s: &[u8]) -> keystore_api::Result<Vec<u8>> {
        KeyAttestation::activate_credential(self.backend, self.ak.as_ref().unwrap(), b, s)
    }
    fn certify_identity(&self, nonce: &[u8]) -> keystore_api::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let c = KeyAttestation::certify(self.backend, self.ak.as_ref().unwrap(), &self.key, nonce)?;
        Ok((c.attestation, c.signature, c.public_area))
    }
}

#[test]
fn a_key_without_fixed_tpm_is_refused() {
    let maker = Manufacturer::new();
    let unit = Unit::new(&maker.path());
    let pki = Pki::new();
    let handle = unit
        .backend
        .create_duplicable_key_for_tests(Algorithm::EcdsaP256Sha256)
        .expect("a key without fixedTPM");
    let mut dup = Duplicable {
        inner: KeystoreAttester::new(&unit.ks, DEVICE_KEY),
        backend: &unit.backend,
        ak: None,
        key: BackendKey::new(handle, Algorithm::EcdsaP256Sha256),
    };
    refused(
        &pki,
        &unit,
        &mut dup,
        &maker.policy(),
        "DUP-1",
        ErrorKind::Integrity,
        "fixedTPM",
    );
}

#[test]
fn the_verifier_alone_refuses_a_replayed_certify() {
    // attest_tpm with a device that answers every nonce with one recorded
    // certify: the nonce check refuses it.
    let maker = Manufacturer::new();
    let unit = Unit::new(&maker.path());
    unit.ks
        .create(
            &common::officer(),
            DEVICE_KEY,
            KeySpec::new(Algorithm::EcdsaP256Sha256).with_usages(Usages::SIGN),
        )
        .unwrap();
    let spki = unit.ks.public_key(DEVICE_KEY).unwrap().spki_der().to_vec();
    let mut device = KeystoreAttester::new(&unit.ks, DEVICE_KEY);
    attest_tpm(&maker.policy(), &mut device, &spki).expect("a fresh exchange passes");
    struct Replay<'a>(
        KeystoreAttester<'a, Arc<TpmBackend>>,
        Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    );
    impl TpmAttester for Replay<'_> {
        fn ek_certificate(&self) -> keystore_api::Result<Vec<u8>> {
            self.0.ek_certificate()
        }
        fn ek_public(&self) -> keystore_api::Result<Vec<u8>> {
            self.0.ek_public()
        }
        fn create_attestation_key(&mut self) -> keystore_api::Result<Vec<u8>> {
            let ak = self.0.create_attestation_key()?;
            self.1 = Some(self.0.certify_identity(&[1; 32])?);
            Ok(ak)
        }
        fn activate_credential(&self, b: &[u8], s: &[u8]) -> keystore_api::Result<Vec<u8>> {
            self.0.activate_credential(b, s)
        }
        fn certify_identity(
            &self,
            _nonce: &[u8],
        ) -> keystore_api::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
            Ok(self.1.clone().unwrap())
        }
    }
    let mut replay = Replay(KeystoreAttester::new(&unit.ks, DEVICE_KEY), None);
    let e = attest_tpm(&maker.policy(), &mut replay, &spki).expect_err("replayed");
    assert!(e.is(ErrorKind::Integrity), "{e}");
    assert!(e.to_string().contains("nonce"), "{e}");
}

//! `keyctl provision --device-backend tpm --ek-ca` end to end (cargo feature
//! `tpm`): a unit's identity key generated in a swtpm manufactured with an
//! EK certificate by a test manufacturer CA, attested before the soft
//! production store issues its certificate; an unknown manufacturer and an
//! unattested unit under `--require-attestation` are refused (exit 7) and
//! the refusals are in the verified event log.
#![cfg(feature = "tpm")]

use backend_tpm::swtpm::{manufacture, manufacturer_ca_pem, Swtpm};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use test_support::keyctl::{assert_ok, s, set_role, text, Credential, KeyFileStore, Keyctl};

const SO: Credential =
    Credential::officer("officer credential for attestation tests").by("officer-1");
const ROOT_SECRET: &str = "root custodian credential for attestation tests";

fn keyctl() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

/// A unit: a manufactured swtpm and its TPM device store.
struct Unit {
    swtpm: Swtpm,
    store: PathBuf,
}

impl Unit {
    fn new(dir: &Path, name: &str, ca_dir: &Path) -> Unit {
        let state = dir.join(format!("{name}-swtpm"));
        manufacture(&state, ca_dir).unwrap_or_else(|e| panic!("manufacture: {e}"));
        let swtpm = Swtpm::start(&state).unwrap_or_else(|e| panic!("{e}"));
        let unit = Unit {
            swtpm,
            store: dir.join(name),
        };
        assert_ok(&unit.bare().arg("init").output().unwrap());
        set_role(&mut unit.bare(), SO);
        unit
    }

    fn bare(&self) -> Command {
        let mut c = keyctl();
        c.env("KEYCTL_STORE", &self.store)
            .env("KEYCTL_BACKEND", "tpm")
            .env("KEYCTL_TPM_TCTI", self.swtpm.tcti());
        c
    }
}

/// A soft production store whose intermediate an offline root signed.
fn factory(dir: &Path) -> KeyFileStore {
    let st = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "production",
        "production.key",
        SO,
    );
    let root = dir.join("root-ca");
    let out = keyctl()
        .args(["ca", "init-root", "--root-store", s(&root)])
        .args([
            "--new-root-key-file",
            s(&dir.join("root.key")),
            "--cn",
            "Test Root CA",
        ])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&out);
    let out = st
        .so()
        .args(["ca", "sign-intermediate", "--root-store", s(&root)])
        .args([
            "--root-key-file",
            s(&dir.join("root.key")),
            "--cn",
            "Test Production CA",
        ])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&out);
    st
}

fn provision(st: &KeyFileStore, unit: &Unit, id: &str, extra: &[&str]) -> Output {
    st.so()
        .args(["provision", "--device-id", id, "--operator", "line-1"])
        .args(["--device-backend", "tpm", "--device-store", s(&unit.store)])
        .args(["--tpm-tcti", &unit.swtpm.tcti()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn keyctl_attests_a_tpm_key_and_refuses_what_it_cannot_prove() {
    let tmp = tempfile::tempdir().unwrap();
    let (trusted, unknown) = (tmp.path().join("maker-a"), tmp.path().join("maker-b"));
    let st = factory(tmp.path());
    let good = Unit::new(tmp.path(), "unit-1", &trusted);
    let foreign = Unit::new(tmp.path(), "unit-2", &unknown);
    let ek_ca = tmp.path().join("ek-ca.pem");
    std::fs::write(&ek_ca, manufacturer_ca_pem(&trusted)).unwrap();

    // The attested flow.
    let out = provision(
        &st,
        &good,
        "UNIT-1",
        &["--ek-ca", s(&ek_ca), "--require-attestation"],
    );
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains("identity key attested: attested-tpm sha256:"),
        "{stdout}"
    );
    let record = std::fs::read_to_string(st.store.join("provisioned/UNIT-1/record.yaml")).unwrap();
    assert!(
        record.contains("attestation: attested-tpm sha256:"),
        "{record}"
    );
    assert!(record.contains("device_backend: tpm"), "{record}");

    // A TPM whose EK certificate another manufacturer issued: Policy (7).
    let out = provision(&st, &foreign, "UNIT-2", &["--ek-ca", s(&ek_ca)]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("manufacturer CA"),
        "{}",
        text(&out.stderr)
    );

    // The same unit without attestation, on a product line that needs it.
    let out = provision(&st, &foreign, "UNIT-2", &["--require-attestation"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("requires TPM key attestation"),
        "{}",
        text(&out.stderr)
    );

    // --ek-ca is for TPM units only.
    let out = st
        .so()
        .args(["provision", "--device-id", "SOFT-1", "--operator", "line-1"])
        .args(["--ek-ca", s(&ek_ca)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Both refusals are in the verified log; the attested unit's event says so.
    let events = assert_ok(&st.so().args(["ca", "events"]).output().unwrap());
    assert_eq!(events.matches("attestation-refused").count(), 2, "{events}");
    assert!(events.contains("attested-tpm evidence sha256:"), "{events}");
    assert!(events.contains("provisioning event log intact"), "{events}");
}

//! End-to-end tests of the device PKI commands: real `keyctl` processes,
//! soft stores in temporary directories unlocked by key files, the OpenSSL
//! CLI for interop.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Command;
use test_support::keyctl::{
    all_text as text, assert_fails_last_line as assert_fails, assert_ok, s, Credential,
    KeyFileStore, Keyctl,
};

const OPENSSL: &str = "/usr/bin/openssl";
const SO_SECRET: &str = "officer credential for tests";
const ROOT_SECRET: &str = "root custodian credential for tests";
const SO: Credential = Credential::officer(SO_SECRET).by("officer-1");
const OP: Credential = Credential::operator("operator credential for tests").by("station-3");

fn keyctl() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

/// A production store with security-officer and operator credentials, and
/// (once `ceremony` ran) an intermediate signed by an offline root.
struct Factory {
    st: KeyFileStore,
    root: PathBuf,
    root_key: PathBuf,
}

/// The production store's commands (`bare`, `so`) and paths.
impl Deref for Factory {
    type Target = KeyFileStore;

    fn deref(&self) -> &KeyFileStore {
        &self.st
    }
}

impl Factory {
    fn new() -> Factory {
        let st = KeyFileStore::create(
            Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
            "production",
            "production.key",
            SO,
        );
        st.set_role(OP);
        Factory {
            root: st.path("root-ca"),
            root_key: st.path("root.key"),
            st,
        }
    }

    fn op(&self) -> Command {
        self.with(OP)
    }

    fn ceremony(&self) {
        let out = keyctl()
            .args(["ca", "init-root", "--root-store", s(&self.root)])
            .args([
                "--new-root-key-file",
                s(&self.root_key),
                "--cn",
                "Test Root CA",
            ])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap();
        let stdout = assert_ok(&out);
        assert!(
            stdout.contains("root CA 'CN=Test Root CA' created"),
            "{stdout}"
        );
        assert!(self.root.join("root-ca.pem").is_file());
        let out = self
            .so()
            .args(["ca", "sign-intermediate", "--root-store", s(&self.root)])
            .args([
                "--root-key-file",
                s(&self.root_key),
                "--cn",
                "Test Production CA",
            ])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap();
        let stdout = assert_ok(&out);
        assert!(
            stdout.contains("signed by root 'CN=Test Root CA'"),
            "{stdout}"
        );
        for f in ["root.pem", "intermediate.pem", "crl.pem", "root-crl.pem"] {
            assert!(self.store.join("pki").join(f).is_file(), "{f}");
        }
        assert!(self.root.join("root-crl.pem").is_file());
    }

    /// Takes the root's store offline: it is no longer on this machine.
    fn take_root_offline(&self) {
        let offline = self.path("vault");
        std::fs::rename(&self.root, &offline).unwrap();
        std::fs::rename(&self.root_key, offline.join("root.key")).unwrap();
        assert!(!self.root.exists());
    }

    fn device_dir(&self, id: &str) -> PathBuf {
        self.store.join("provisioned").join(id)
    }
}

#[test]
fn ceremony_then_provisioning_revocation_and_checks_without_the_root_store() {
    let f = Factory::new();
    // The ceremony needs both credentials: a wrong root credential fails.
    let out = keyctl()
        .args(["ca", "init-root", "--root-store", s(&f.root)])
        .args(["--new-root-key-file", s(&f.root_key)])
        .output()
        .unwrap();
    assert_fails(&out, 2, "InvalidInput"); // no custodian credential given
    assert!(!f.root.join("soft").exists());
    f.ceremony();
    f.take_root_offline();

    // Provisioning runs on the production store alone.
    let out = f
        .op()
        .args([
            "provision",
            "--device-id",
            "DEV12345",
            "--operator",
            "line-3",
        ])
        .output()
        .unwrap();
    let stdout = assert_ok(&out);
    assert!(stdout.contains("provisioned 'DEV12345'"), "{stdout}");
    let dir = f.device_dir("DEV12345");
    let record = std::fs::read_to_string(dir.join("record.yaml")).unwrap();
    for field in [
        "device_id: DEV12345",
        "identity_cert: sha256:",
        "bootstrap_ca: sha256:",
        "identity_key: sha256:",
        "operator: line-3",
        "actor: station-3",
    ] {
        assert!(record.contains(field), "{field} missing in:\n{record}");
    }
    assert!(record.lines().any(|l| l.starts_with("date: ")), "{record}");

    // OpenSSL verifies the chain.
    let pki = f.store.join("pki");
    let out = Command::new(OPENSSL)
        .args(["verify", "-CAfile", s(&pki.join("root.pem")), "-untrusted"])
        .args([s(&pki.join("intermediate.pem")), s(&dir.join("cert.pem"))])
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(": OK"), "{}", text(&out));

    // The peer check accepts it (no unlock needed) ...
    let chain = dir.join("chain.pem");
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain", s(&chain)])
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("OK: 'DEV12345'"));

    // ... and a second unit with the same id is refused.
    let out = f
        .op()
        .args([
            "provision",
            "--device-id",
            "DEV12345",
            "--operator",
            "line-4",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 4, "AlreadyExists");

    // A pin mismatch is Auth (8); the right pin passes.
    let zero_pin = format!("sha256:{}", "0".repeat(64));
    let out = keyctl()
        .args([
            "--store",
            s(&f.store),
            "ca",
            "check",
            "--chain",
            s(&chain),
            "--pin",
            &zero_pin,
        ])
        .output()
        .unwrap();
    assert_fails(&out, 8, "Auth");
    let key_pin = record
        .lines()
        .find_map(|l| l.trim().strip_prefix("identity_key: "))
        .expect("identity key in record")
        .to_string();
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain", s(&chain)])
        .args(["--pin", &zero_pin, "--pin", &key_pin])
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("pinned"));

    // Revocation: operators cannot, the officer can, without the root.
    let out = f
        .op()
        .args([
            "ca",
            "revoke",
            "--device-id",
            "DEV12345",
            "--reason",
            "key-compromise",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 7, "Policy");
    let out = f
        .so()
        .args([
            "ca",
            "revoke",
            "--device-id",
            "DEV12345",
            "--reason",
            "key-compromise",
        ])
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("revoked certificate"));
    // TEST-KEY-07: the revoked device is rejected (KeyState, exit 6).
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain", s(&chain)])
        .output()
        .unwrap();
    let err = assert_fails(&out, 6, "KeyState");
    assert!(err.contains("revoked"), "{err}");
    // OpenSSL agrees, with our CRL.
    let out = Command::new(OPENSSL)
        .args(["verify", "-crl_check", "-CAfile", s(&pki.join("root.pem"))])
        .args(["-untrusted", s(&pki.join("intermediate.pem"))])
        .args([
            "-CRLfile",
            s(&pki.join("crl.pem")),
            s(&dir.join("cert.pem")),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("revoked"),
        "{}",
        text(&out)
    );

    // The event log verifies and shows the provisioning with id and time.
    let out = f.op().args(["ca", "events"]).output().unwrap();
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains(" provision by station-3 (operator) device=DEV12345"),
        "{stdout}"
    );
    assert!(stdout.contains(" revoke by officer-1"), "{stdout}");
    assert!(stdout.contains("event log intact"), "{stdout}");
    let out = f.bare().args(["ca", "show"]).output().unwrap();
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains("CN=Test Root CA") && stdout.contains("devices       1"),
        "{stdout}"
    );
    // The root's credential works nowhere in production.
    let out = f
        .bare()
        .args(["ca", "crl"])
        .env("KEYCTL_ROLE", "security-officer")
        .env("KEYCTL_ROLE_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_fails(&out, 8, "Auth");
}

#[test]
fn crl_refresh_and_expiry_and_expired_certificates() {
    let f = Factory::new();
    f.ceremony();
    let out = f
        .op()
        .args([
            "provision",
            "--device-id",
            "DEV-C",
            "--operator",
            "line-1",
            "--validity-days",
            "5",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let chain = f.device_dir("DEV-C").join("chain.pem");
    let check_at = |at: &str| {
        keyctl()
            .args([
                "--store",
                s(&f.store),
                "ca",
                "check",
                "--chain",
                s(&chain),
                "--at",
                at,
            ])
            .output()
            .unwrap()
    };
    let in_days = |d: i64| {
        let t = time::OffsetDateTime::now_utc() + time::Duration::days(d);
        t.replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_ok(&check_at(&in_days(1)));
    // Six days on: the certificate has expired (the 7-day CRL is still current).
    let err = assert_fails(&check_at(&in_days(6)), 6, "KeyState");
    assert!(err.contains("(expired)"), "{err}");
    // A CRL that is due for renewal in a day is stale two days on.
    assert_ok(
        &f.op()
            .args(["ca", "crl", "--next-update", "1d"])
            .output()
            .unwrap(),
    );
    let err = assert_fails(&check_at(&in_days(2)), 6, "KeyState");
    assert!(err.contains("crl-expired"), "{err}");
    // A fresh CRL fixes that.
    let out = f
        .op()
        .args(["ca", "crl", "--next-update", "30d", "--out"])
        .arg(f.path("published-crl.pem"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(f.path("published-crl.pem").is_file());
    assert_ok(&check_at(&in_days(2)));
    // Garbage is InvalidInput, not a crash.
    let junk = f.path("junk.pem");
    std::fs::write(&junk, "not a chain").unwrap();
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain", s(&junk)])
        .output()
        .unwrap();
    assert_fails(&out, 2, "InvalidInput");
    assert_fails(&check_at("yesterday"), 2, "InvalidInput");
}

#[test]
fn batch_provisioning_reports_throughput_and_checks_the_file_first() {
    let f = Factory::new();
    f.ceremony();
    let mut lines = String::from("device_id,operator\n# line-5 units\n");
    for i in 0..20 {
        if i % 2 == 0 {
            lines.push_str(&format!("UNIT-{i:04},line-5\n"));
        } else {
            lines.push_str(&format!("UNIT-{i:04}\n"));
        }
    }
    let batch = f.path("batch.csv");
    std::fs::write(&batch, &lines).unwrap();

    // A bad line anywhere: nothing is provisioned.
    let bad = f.path("bad.csv");
    std::fs::write(&bad, format!("{lines}bad id\n")).unwrap();
    let out = f
        .op()
        .args(["provision", "--batch", s(&bad), "--operator", "line-6"])
        .output()
        .unwrap();
    let err = assert_fails(&out, 2, "InvalidInput");
    assert!(err.contains("batch line 23"), "{err}");
    assert!(!f.store.join("provisioned").exists());

    let out = f
        .op()
        .args(["provision", "--batch", s(&batch), "--operator", "line-6"])
        .output()
        .unwrap();
    let stdout = assert_ok(&out);
    assert!(stdout.contains("provisioned 20 devices in "), "{stdout}");
    assert!(stdout.contains(" devices/s)"), "{stdout}");
    for i in 0..20 {
        let record =
            std::fs::read_to_string(f.device_dir(&format!("UNIT-{i:04}")).join("record.yaml"))
                .unwrap();
        let op = if i % 2 == 0 { "line-5" } else { "line-6" };
        assert!(record.contains(&format!("operator: {op}")), "{record}");
    }
    // Every unit has its own key.
    let records: std::collections::HashSet<String> = (0..20)
        .map(|i| {
            let r =
                std::fs::read_to_string(f.device_dir(&format!("UNIT-{i:04}")).join("record.yaml"))
                    .unwrap();
            r.lines()
                .find(|l| l.contains("identity_key:"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(records.len(), 20);
    // Running the batch again stops at the first unit already provisioned.
    let out = f
        .op()
        .args(["provision", "--batch", s(&batch), "--operator", "line-6"])
        .output()
        .unwrap();
    let err = assert_fails(&out, 4, "AlreadyExists");
    assert!(err.contains("0 of 20 devices provisioned"), "{err}");
}

#[test]
fn separate_device_store_and_renewal() {
    let f = Factory::new();
    f.ceremony();
    // The device's own keystore, with the station's credentials.
    let dev = f.path("device-store");
    let dev_key = f.path("device.key");
    assert_ok(
        &keyctl()
            .args(["--store", s(&dev), "init", "--new-key-file", s(&dev_key)])
            .output()
            .unwrap(),
    );
    assert_ok(
        &keyctl()
            .args([
                "--store",
                s(&dev),
                "--key-file",
                s(&dev_key),
                "role",
                "set",
                "security-officer",
            ])
            .env("KEYCTL_NEW_ROLE_SECRET", SO_SECRET)
            .output()
            .unwrap(),
    );
    let out = f
        .so()
        .args(["provision", "--device-id", "GW-1", "--operator", "line-2"])
        .args(["--device-store", s(&dev), "--device-key-file", s(&dev_key)])
        .output()
        .unwrap();
    let stdout = assert_ok(&out);
    assert!(stdout.contains("key 'device.identity' v1"), "{stdout}");
    // The key is in the device's store, not in production.
    let out = keyctl()
        .args([
            "--store",
            s(&dev),
            "--key-file",
            s(&dev_key),
            "key",
            "show",
            "device.identity",
        ])
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("generated"));
    let out = f
        .bare()
        .args(["key", "show", "device.identity"])
        .output()
        .unwrap();
    assert_fails(&out, 3, "NotFound");

    let renew = |threshold: &str| {
        f.so()
            .args([
                "renew",
                "--device-id",
                "GW-1",
                "--threshold",
                threshold,
                "--grace",
                "2d",
            ])
            .args(["--device-store", s(&dev), "--device-key-file", s(&dev_key)])
            .output()
            .unwrap()
    };
    assert!(assert_ok(&renew("7d")).contains("not due"));
    let stdout = assert_ok(&renew("40d"));
    assert!(stdout.contains("renewed 'GW-1': key version 2"), "{stdout}");
    let out = keyctl()
        .args([
            "--store",
            s(&dev),
            "--key-file",
            s(&dev_key),
            "key",
            "versions",
            "device.identity",
        ])
        .output()
        .unwrap();
    let versions = assert_ok(&out);
    assert!(
        versions.contains("deactivated") && versions.contains("active"),
        "{versions}"
    );
    // Both certificates check during the grace.
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain"])
        .arg(f.device_dir("GW-1").join("chain.pem"))
        .output()
        .unwrap();
    assert_ok(&out);
    // A device id that is not the store's identity is refused.
    let out = f
        .so()
        .args(["renew", "--device-id", "GW-2", "--threshold", "40d"])
        .args(["--device-store", s(&dev), "--device-key-file", s(&dev_key)])
        .output()
        .unwrap();
    assert_fails(&out, 2, "InvalidInput");
}

/// Item 5 of the security review (REQ-KEY-REV-03, TEST-KEY-07): the root
/// custodian revokes the production intermediate on the offline root's store
/// alone; `ca check` (and OpenSSL, checking every CRL on the path) then
/// rejects devices under it.
#[test]
fn revoke_intermediate_rejects_every_device_under_it() {
    let f = Factory::new();
    f.ceremony();
    let out = f
        .op()
        .args([
            "provision",
            "--device-id",
            "DEV-UNDER",
            "--operator",
            "line-1",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let pki = f.store.join("pki");
    let chain = f.device_dir("DEV-UNDER").join("chain.pem");
    let check = |extra: &[&str]| {
        keyctl()
            .args(["--store", s(&f.store), "ca", "check", "--chain", s(&chain)])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(assert_ok(&check(&[])).contains("OK: 'DEV-UNDER'"));
    // The intermediate's CRL alone cannot vouch for the intermediate.
    let err = assert_fails(&check(&["--crl", s(&pki.join("crl.pem"))]), 6, "KeyState");
    assert!(
        err.contains("revocation-unknown") && err.contains("'CN=Test Root CA'"),
        "{err}"
    );
    let inter_pem = std::fs::read_to_string(pki.join("intermediate.pem")).unwrap();
    let inter_der = provisioning::pem_decode_all(&inter_pem, "CERTIFICATE")
        .unwrap()
        .remove(0);
    let inter = provisioning::CertInfo::parse(&inter_der).unwrap();
    // Move the root's store off this machine, as between ceremonies.
    f.take_root_offline();
    let vault = f.path("vault");
    let published = f.path("published-root-crl.pem");
    let revoke = |secret: Option<&str>, serial: &str| {
        let mut c = keyctl();
        c.args(["ca", "revoke-intermediate", "--root-store", s(&vault)])
            .args(["--root-key-file", s(&vault.join("root.key"))])
            .args(["--serial", serial, "--reason", "ca-compromise: token lost"])
            .args(["--out", s(&published)])
            .env("KEYCTL_ACTOR", "not-the-custodian")
            .args(["--root-actor", "custodian-1"]);
        if let Some(secret) = secret {
            c.env("KEYCTL_ROOT_SECRET", secret);
        }
        c.output().unwrap()
    };
    // The custodian's credential is required; a production one does not work.
    assert_fails(&revoke(None, &inter.serial), 2, "InvalidInput");
    assert_fails(&revoke(Some(SO_SECRET), &inter.serial), 8, "Auth");
    assert_fails(&revoke(Some(ROOT_SECRET), "00ff"), 3, "NotFound");
    assert_fails(&revoke(Some(ROOT_SECRET), "zz"), 2, "InvalidInput");
    assert!(!published.exists());
    // Production commands cannot do it: they have no root store to open.
    let out = f
        .so()
        .args(["ca", "revoke", "--serial", &inter.serial, "--reason", "x"])
        .output()
        .unwrap();
    assert_fails(&out, 3, "NotFound");
    assert!(assert_ok(&check(&[])).contains("OK: 'DEV-UNDER'"));

    let stdout = assert_ok(&revoke(Some(ROOT_SECRET), &inter.serial));
    assert!(
        stdout.contains(&format!(
            "revoked intermediate 'CN=Test Production CA' (serial {})",
            inter.serial
        )),
        "{stdout}"
    );
    assert!(published.is_file() && vault.join("root-crl.pem").is_file());
    assert_eq!(
        std::fs::read(&published).unwrap(),
        std::fs::read(vault.join("root-crl.pem")).unwrap()
    );
    // Not published yet: production still has the old root CRL.
    assert_ok(&check(&[]));
    // Given explicitly, or published to STORE/pki/root-crl.pem: rejected, naming the intermediate.
    for extra in [&["--root-crl", s(&published)][..], &[][..]] {
        if extra.is_empty() {
            std::fs::copy(&published, pki.join("root-crl.pem")).unwrap();
        }
        let err = assert_fails(&check(extra), 6, "KeyState");
        assert!(err.contains("(revoked)"), "{err}");
        assert!(
            err.contains("intermediate CA certificate 'CN=Test Production CA'"),
            "{err}"
        );
        assert!(err.contains(&inter.serial), "{err}");
    }
    // OpenSSL agrees when it checks every CRL on the path.
    let out = Command::new(OPENSSL)
        .args([
            "verify",
            "-crl_check_all",
            "-CAfile",
            s(&pki.join("root.pem")),
        ])
        .args(["-untrusted", s(&pki.join("intermediate.pem"))])
        .args([
            "-CRLfile",
            s(&published),
            "-CRLfile",
            s(&pki.join("crl.pem")),
        ])
        .arg(f.device_dir("DEV-UNDER").join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("certificate revoked"),
        "{}",
        text(&out)
    );
    // Revoking twice is a state error; a refreshed root CRL still lists it.
    assert_fails(&revoke(Some(ROOT_SECRET), &inter.serial), 6, "KeyState");
    let refreshed = f.path("refreshed-root-crl.pem");
    let out = keyctl()
        .args(["ca", "root-crl", "--root-store", s(&vault)])
        .args(["--root-key-file", s(&vault.join("root.key"))])
        .args(["--next-update", "30d", "--out", s(&refreshed)])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("root CRL issued"));
    let err = assert_fails(
        &check(&[
            "--crl",
            s(&pki.join("crl.pem")),
            "--root-crl",
            s(&refreshed),
        ]),
        6,
        "KeyState",
    );
    assert!(err.contains("(revoked)"), "{err}");
}

/// `openssl x509 -noout -text` of a PEM file.
fn x509_text(file: &std::path::Path) -> String {
    let out = Command::new(OPENSSL)
        .args(["x509", "-noout", "-text", "-in", s(file)])
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn pki_commands_take_a_key_algorithm() {
    let f = Factory::new();
    // Only the PKI's algorithms are taken, before anything is created.
    let out = keyctl()
        .args(["ca", "init-root", "--root-store", s(&f.root)])
        .args(["--new-root-key-file", s(&f.root_key)])
        .args(["--algorithm", "ml-dsa-65"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the device PKI takes"),
        "{}",
        text(&out)
    );
    assert!(!f.root.join("soft").exists());

    let out = keyctl()
        .args(["ca", "init-root", "--root-store", s(&f.root)])
        .args(["--new-root-key-file", s(&f.root_key), "--cn", "Ed Root"])
        .args(["--algorithm", "ed25519"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(x509_text(&f.root.join("root-ca.pem")).contains("ED25519 Public-Key"));
    let out = f
        .so()
        .args(["ca", "sign-intermediate", "--root-store", s(&f.root)])
        .args(["--root-key-file", s(&f.root_key), "--cn", "P-384 CA"])
        .args(["--algorithm", "ecdsa-p384-sha384"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&out);
    let pki = f.store.join("pki");
    let inter = x509_text(&pki.join("intermediate.pem"));
    assert!(inter.contains("NIST CURVE: P-384"), "{inter}");
    assert!(inter.contains("Signature Algorithm: ED25519"), "{inter}");

    let out = f
        .op()
        .args(["provision", "--device-id", "DEV-ED", "--operator", "line-3"])
        .args(["--algorithm", "ed25519"])
        .output()
        .unwrap();
    assert_ok(&out);
    let dir = f.device_dir("DEV-ED");
    let cert = x509_text(&dir.join("cert.pem"));
    assert!(cert.contains("ED25519 Public-Key"), "{cert}");
    assert!(cert.contains("ecdsa-with-SHA384"), "{cert}");
    let out = Command::new(OPENSSL)
        .args(["verify", "-CAfile", s(&pki.join("root.pem")), "-untrusted"])
        .args([s(&pki.join("intermediate.pem")), s(&dir.join("cert.pem"))])
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", text(&out));
    let out = keyctl()
        .args(["--store", s(&f.store), "ca", "check", "--chain"])
        .arg(dir.join("chain.pem"))
        .output()
        .unwrap();
    assert!(assert_ok(&out).contains("OK: 'DEV-ED'"));

    let out = f
        .so()
        .args(["ca", "ocsp-signer", "--algorithm", "ecdsa-p384-sha384"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(x509_text(&pki.join("ocsp-signer.pem")).contains("NIST CURVE: P-384"));
}

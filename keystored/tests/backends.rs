//! keystored serves every backend: a store on a SoftHSM2 token, and (with
//! the `tpm` feature) in a swtpm and as a soft store sealed by a swtpm. A
//! signature made through the daemon is checked by OpenSSL.

use keystore_api::{Actor, Algorithm, Backend, KeySpec, Keystore, Role, SignatureFormat};
use keystore_client::Client;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tempfile::TempDir;
use test_support::daemon::Daemon;

const POLICY: &str = "[[caller]]\nuid = 0\nrole = \"application\"\nkeys = [\"*\"]\n";

/// A temporary directory with an empty store directory (0700) in it.
fn store_dir() -> (TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    (dir, store)
}

/// Makes the store's metadata over `backend` with one P-256 key `dev-id`.
fn init_store<B: Backend>(backend: B, store: &Path) {
    let ks = Keystore::open(backend, &store.join("metadata.sqlite")).expect("keystore");
    let officer = Actor::new("setup", Role::SecurityOfficer).expect("actor");
    ks.create(&officer, "dev-id", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
}

/// Starts the daemon, signs through it, and verifies the signature with
/// OpenSSL against the public key the daemon reports.
fn sign_through(dir: TempDir, store_section: &str, backend: &str) {
    std::env::set_var("KEYSTORED_BIN", env!("CARGO_BIN_EXE_keystored"));
    let mut d = Daemon::new(dir, store_section, POLICY, "");
    d.start();
    let c = Client::connect(d.socket().to_str().expect("utf-8")).expect("connect");
    let msg = format!("signed through keystored on {backend}");
    let sig = c
        .sign("dev-id", msg.as_bytes(), SignatureFormat::Der)
        .expect("sign");
    let pem = c.public_key("dev-id").expect("public key").to_pem();
    let work = tempfile::tempdir().expect("tempdir");
    let (m, s, p) = (
        work.path().join("msg"),
        work.path().join("sig"),
        work.path().join("pub.pem"),
    );
    std::fs::write(&m, &msg).expect("msg");
    std::fs::write(&s, &sig.bytes).expect("sig");
    std::fs::write(&p, pem).expect("pem");
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&p)
        .arg("-signature")
        .arg(&s)
        .arg(&m)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{backend}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.list().expect("list").len(), 1);
    let status = d.terminate();
    assert!(status.success(), "{backend}: {status}");
}

#[test]
fn serves_a_store_on_a_pkcs11_token() {
    let Some(hsm) = backend_pkcs11::testing::softhsm_or_skip() else {
        return;
    };
    let token = hsm.new_token("keystored").expect("token");
    let (dir, store) = store_dir();
    init_store(token.open().expect("open token"), &store);
    let pin = dir.path().join("pin");
    std::fs::write(&pin, &token.user_pin).expect("pin file");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let section = format!(
        "dir = \"{}\"\nbackend = \"pkcs11\"\npkcs11_module = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n",
        store.display(),
        token.module.display(),
        token.label,
        pin.display()
    );
    sign_through(dir, &section, "pkcs11");
}

#[cfg(feature = "tpm")]
mod tpm {
    use super::*;
    use backend_soft::{Kdf, SoftStore, Unlock};
    use backend_tpm::swtpm::Swtpm;
    use backend_tpm::{TpmBackend, TpmConfig, TpmSealedKek};
    use std::sync::Arc;

    fn swtpm(dir: &Path) -> Option<Swtpm> {
        if !backend_tpm::swtpm::available() {
            let skip = std::env::var("KEYSTORE_TEST_SKIP")
                .map(|v| v.split(',').any(|b| b.trim() == "tpm"))
                .unwrap_or(false);
            assert!(
                skip,
                "swtpm is missing: `sudo apt-get install swtpm swtpm-tools` \
                 (set KEYSTORE_TEST_SKIP=tpm to skip knowingly; CI never does)"
            );
            eprintln!("SKIPPED (KEYSTORE_TEST_SKIP names tpm)");
            return None;
        }
        Some(Swtpm::start(&dir.join("swtpm")).expect("start swtpm"))
    }

    #[test]
    fn serves_a_store_in_a_tpm() {
        let (dir, store) = store_dir();
        let Some(sim) = swtpm(dir.path()) else { return };
        let backend =
            TpmBackend::open(TpmConfig::new(sim.tcti()), &store.join("tpm")).expect("tpm backend");
        init_store(backend, &store);
        let section = format!(
            "dir = \"{}\"\nbackend = \"tpm\"\ntcti = \"{}\"\n",
            store.display(),
            sim.tcti()
        );
        sign_through(dir, &section, "tpm");
    }

    #[test]
    fn serves_a_soft_store_sealed_by_a_tpm() {
        let (dir, store) = store_dir();
        let Some(sim) = swtpm(dir.path()) else { return };
        let unlock = Unlock::Provider(Arc::new(TpmSealedKek::new(TpmConfig::new(sim.tcti()))));
        let soft = SoftStore::create(&store.join("soft"), &unlock, Kdf::default_passphrase())
            .expect("sealed soft store");
        init_store(soft, &store);
        let section = format!(
            "dir = \"{}\"\nbackend = \"soft+tpm-sealed\"\ntcti = \"{}\"\n",
            store.display(),
            sim.tcti()
        );
        sign_through(dir, &section, "soft+tpm-sealed");
    }
}

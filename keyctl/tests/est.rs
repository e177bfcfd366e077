//! EST end to end with real processes: `keyctl est serve` on the production
//! store as a child process, `keyctl renew --est` from the device's own
//! store; the server stops on SIGTERM. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use test_support::keyctl::{
    all_text, assert_fails_last_line as assert_fails, assert_ok, s, Credential, KeyFileStore,
    Keyctl,
};

const SO_SECRET: &str = "officer credential for tests";
const ROOT_SECRET: &str = "root custodian credential for tests";
const SO: Credential = Credential::officer(SO_SECRET).by("officer-1");
const OP: Credential = Credential::operator("operator credential for tests").by("est-1");

fn keyctl() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

/// A production store after the ceremony, and a device store provisioned
/// as GW-1.
struct Setup {
    prod: KeyFileStore,
    dev: PathBuf,
    dev_key: PathBuf,
}

fn setup() -> Setup {
    let prod = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "production",
        "production.key",
        SO,
    );
    prod.set_role(OP);
    let (root, root_key) = (prod.path("root-ca"), prod.path("root.key"));
    assert_ok(
        &keyctl()
            .args(["ca", "init-root", "--root-store", s(&root)])
            .args(["--new-root-key-file", s(&root_key)])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
    assert_ok(
        &prod
            .so()
            .args(["ca", "sign-intermediate", "--root-store", s(&root)])
            .args(["--root-key-file", s(&root_key)])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
    let dev = prod.path("device-store");
    let dev_key = prod.path("device.key");
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
                "so",
            ])
            .env("KEYCTL_NEW_ROLE_SECRET", SO_SECRET)
            .output()
            .unwrap(),
    );
    assert_ok(
        &prod
            .so()
            .args(["provision", "--device-id", "GW-1", "--operator", "line-2"])
            .args(["--device-store", s(&dev), "--device-key-file", s(&dev_key)])
            .output()
            .unwrap(),
    );
    Setup { prod, dev, dev_key }
}

/// `keyctl est serve` as a child; its address from the first stdout line.
struct Server {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(prod: &KeyFileStore) -> Server {
        let mut child = prod
            .with(OP)
            .args(["est", "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyctl est serve");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let Ok(first) = lines.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no address from est serve: {}", all_text(&out));
        };
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .and_then(|u| u.strip_suffix("/.well-known/est"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_string();
        Server { child, url, lines }
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("est serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
        let last = self.lines.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(last, "EST server stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device_cmd(st: &Setup) -> Command {
    let mut c = keyctl();
    c.args(["--store", s(&st.dev), "--key-file", s(&st.dev_key)]);
    SO.apply(&mut c);
    c
}

fn renew(st: &Setup, url: &str, threshold: &str) -> std::process::Output {
    let root = st.prod.store.join("pki").join("root.pem");
    device_cmd(st)
        .args([
            "renew",
            "--est",
            url,
            "--root",
            s(&root),
            "--threshold",
            threshold,
        ])
        .args(["--timeout", "10"])
        .output()
        .unwrap()
}

fn versions(st: &Setup) -> String {
    assert_ok(
        &device_cmd(st)
            .args(["key", "versions", "device.identity"])
            .output()
            .unwrap(),
    )
}

#[test]
fn keyctl_est_serve_and_keyctl_renew_est_end_to_end() {
    let st = setup();
    let server = Server::start(&st.prod);

    let out = renew(&st, &server.url, "10d");
    assert!(assert_ok(&out).contains("not due"), "{}", all_text(&out));
    let out = renew(&st, &server.url, "40d");
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains("renewed 'GW-1' over EST: key version 2"),
        "{stdout}"
    );
    let v = versions(&st);
    assert!(v.contains("deactivated") && v.contains("active"), "{v}");

    // Nothing listens there: the old pair stays, the staged key waits.
    let out = renew(&st, "https://127.0.0.1:1", "40d");
    let err = assert_fails(&out, 10, "Backend");
    assert!(err.contains("cannot connect"), "{err}");
    let v = versions(&st);
    assert!(v.contains("pre-activation"), "{v}");
    let stdout = assert_ok(&renew(&st, &server.url, "40d"));
    assert!(
        stdout.contains("key version 3"),
        "the staged key reused: {stdout}"
    );

    // A wrong identity is refused before anything is sent.
    let root = st.prod.store.join("pki").join("root.pem");
    let out = device_cmd(&st)
        .args([
            "renew",
            "--est",
            &server.url,
            "--root",
            s(&root),
            "--device-id",
            "GW-9",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 2, "InvalidInput");
    // The factory's log holds the EST renewals.
    let out = st.prod.with(OP).args(["ca", "events"]).output().unwrap();
    let events = assert_ok(&out);
    assert!(events.matches("renew").count() >= 2, "{events}");
    assert!(events.contains("est-server-cert"), "{events}");
    server.stop();
}

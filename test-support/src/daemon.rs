//! A `keystored` on a soft store in a temporary directory, for tests and
//! benchmarks that need the daemon as a real, separate process.
//!
//! The directory is mode 0711 so that callers of other uids (tests run as
//! root and drop to other uids for the callers) can reach the socket, which
//! the daemon makes 0660 with the group [`CALLER_GID`]. The store inside is
//! 0700, the daemon's alone.

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::Keystore;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// The group the test socket is given; callers run with it as their gid.
pub const CALLER_GID: u32 = 64_000;

/// How long a start may take before the test fails.
const START_WAIT: Duration = Duration::from_secs(60);

/// The `keystored` binary beside the running test or example
/// (`target/PROFILE/keystored`), built by cargo for the keystored crate's
/// tests, or by `cargo build -p keystored`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYSTORED_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir.join("keystored")
}

/// A daemon, its store and its files.
pub struct Daemon {
    dir: TempDir,
    binary: PathBuf,
    child: Option<Child>,
    /// The daemon's stderr lines, as they arrive.
    log: Option<mpsc::Receiver<String>>,
}

impl Daemon {
    /// A new soft store (unlocked by a key file) with `policy` (TOML) and
    /// `limits` (TOML lines of the `[limits]` table); not started.
    pub fn soft(policy: &str, limits: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("store dir");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let key = dir.path().join("store.key");
        create_key_file(&key).expect("key file");
        let soft = SoftStore::create(
            &store.join("soft"),
            &Unlock::KeyFile(key.clone()),
            Kdf::default_passphrase(),
        )
        .expect("soft store");
        drop(Keystore::open(soft, &store.join("metadata.sqlite")).expect("keystore"));
        let section = format!(
            "dir = \"{}\"\nbackend = \"soft\"\nkey_file = \"{}\"\n",
            store.display(),
            key.display()
        );
        Daemon::new(dir, &section, policy, limits)
    }

    /// A daemon for a store already made in `dir` (a temporary directory
    /// this fixture takes over), described by `store` (the lines of the
    /// configuration's `[store]` table); not started.
    pub fn new(dir: TempDir, store: &str, policy: &str, limits: &str) -> Daemon {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod 0711");
        let d = Daemon {
            dir,
            binary: binary(),
            child: None,
            log: None,
        };
        std::fs::write(d.policy_path(), policy).expect("policy");
        let config = format!(
            "policy = \"{}\"\n[socket]\npath = \"{}\"\ngroup = \"{CALLER_GID}\"\n[store]\n{store}\n[limits]\n{limits}\n",
            d.policy_path().display(),
            d.socket().display(),
        );
        std::fs::write(d.config_path(), config).expect("config");
        d
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("keystore.sock")
    }

    /// The store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The key file that unlocks the store.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("store.key")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keystored.toml")
    }

    /// The policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The soft store (of [`Daemon::soft`]) opened in this process (the
    /// daemon may be running: the store is multi-process safe).
    pub fn open_store(&self) -> Keystore<SoftStore> {
        let soft = SoftStore::open(
            &self.store_dir().join("soft"),
            &Unlock::KeyFile(self.key_file()),
        )
        .expect("open soft store");
        Keystore::open(soft, &self.store_dir().join("metadata.sqlite")).expect("open keystore")
    }

    /// Starts the daemon and waits (bounded) until it reports ready.
    pub fn start(&mut self) {
        assert!(
            self.binary.is_file(),
            "{} is missing: build it with `cargo build -p keystored`",
            self.binary.display()
        );
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keystored");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("keystored: ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (log_tx, log_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        self.child = Some(child);
        self.log = Some(log_rx);
        if ready_rx.recv_timeout(START_WAIT).is_err() {
            let log = self.drain_log().join("\n");
            self.kill();
            panic!("keystored did not report ready within {START_WAIT:?}; stderr:\n{log}");
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The stderr lines logged since the last call.
    pub fn drain_log(&self) -> Vec<String> {
        self.log
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `HUP`, `KILL`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("daemon running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("daemon running");
        for _ in 0..300 {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("keystored did not exit within 30 s of SIGTERM");
    }

    /// Replaces the policy file.
    pub fn write_policy(&self, policy: &str) {
        std::fs::write(self.policy_path(), policy).expect("policy");
    }

    /// The daemon's resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("daemon running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the ignored test `test_name` of the current test binary in a child
/// process as `uid` with gid [`CALLER_GID`] (the test process must be root),
/// with `env` set; returns its output. The child test reads what to do from
/// `env` and reports on stdout.
pub fn run_test_as(uid: u32, test_name: &str, env: &[(&str, String)]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        test_name,
    ])
    .uid(uid)
    .gid(CALLER_GID)
    .stdin(Stdio::null())
    .env("KEYSTORE_TEST_CALLER", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn the caller process")
}

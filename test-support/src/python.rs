//! Python venvs for tests, with pinned packages from PyPI.
//!
//! [`venv`] returns the Python of `TARGET/python-venv-<name>` (`TARGET` is
//! `CARGO_TARGET_DIR` or the target directory above the test binary), made
//! on the first run with `python3 -m venv` and `pip install` of the given
//! requirements, and reused afterwards while its requirements are unchanged
//! and its ready check passes. A missing python3, venv module or pip, and an
//! unreachable PyPI, fail the test with an install hint: it is never
//! skipped. Concurrent test processes take turns on a lock file per venv.
//!
//! ```no_run
//! let python = test_support::python::venv(
//!     "audit",
//!     &["cryptography==46.0.3"],
//!     "import cryptography",
//! );
//! let out = test_support::python::run_or_fail(
//!     std::process::Command::new(&python).args(["-c", "print(1)"]),
//!     std::time::Duration::from_secs(60),
//!     "python -c",
//!     test_support::python::INSTALL_HINT,
//! );
//! assert!(out.status.success(), "{}", out.report());
//! ```
//!
//! [`run`] and [`run_or_fail`] run any command with a time limit and its
//! output captured, for the scripts a test then runs with that Python.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Python every venv is made from.
pub const PYTHON: &str = "python3";

/// What to install when Python, its venv module or pip is missing.
pub const INSTALL_HINT: &str = "install Python 3 with its venv module and pip, e.g. \
     `apt-get install python3 python3-venv python3-pip` on Debian/Ubuntu \
     (./scripts/test installs them when missing)";

/// Bounds on every wait.
const PYTHON_CHECK_WAIT: Duration = Duration::from_secs(60);
const VENV_WAIT: Duration = Duration::from_secs(180);
const PIP_WAIT: Duration = Duration::from_secs(900);
/// Another test process making the venv: at most its venv and pip waits.
const VENV_LOCK_WAIT: Duration = Duration::from_secs(1200);

/// The file in a venv that records the requirements it was made with.
const STAMP: &str = "keystore-test-requirements.txt";

/// A finished command's status and output.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

impl Run {
    /// Status, stdout and stderr, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (no stdin, output captured) for at most `limit`; a command
/// that overruns is killed and fails the test (`what` names it). `Err` only
/// when the program cannot be started.
pub fn run(cmd: &mut Command, limit: Duration, what: &str) -> std::io::Result<Run> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let partial = |rx: &mpsc::Receiver<String>| {
                rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
            };
            panic!(
                "{what}: still running after {limit:?}, killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                partial(&stdout),
                partial(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A grandchild still holding the pipes must not hang the test either.
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what}: output still open 30 s after the exit"))
    };
    Ok(Run {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Like [`run`], failing the test when the program cannot be started, with
/// `hint` when it does not exist.
pub fn run_or_fail(cmd: &mut Command, limit: Duration, what: &str, hint: &str) -> Run {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match run(cmd, limit, what) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{what}: `{program}` not found: {hint}")
        }
        Err(e) => panic!("{what}: cannot start `{program}`: {e}"),
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR`, or the directory above the profile directory of the
/// running test binary (`TARGET/PROFILE/deps/NAME-HASH`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace().join(dir)
        };
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir
}

/// The requirements as recorded in a venv's stamp file.
fn stamp_text(requirements: &[&str]) -> String {
    requirements.iter().map(|r| format!("{r}\n")).collect()
}

/// Whether the venv's Python exists, was made with `requirements` and
/// passes `ready_check`.
fn venv_ready(venv: &Path, python: &Path, requirements: &[&str], ready_check: &str) -> bool {
    if !python.exists() {
        return false;
    }
    match std::fs::read_to_string(venv.join(STAMP)) {
        Ok(text) if text == stamp_text(requirements) => {}
        _ => return false,
    }
    matches!(
        run(
            Command::new(python).args(["-c", ready_check]),
            PYTHON_CHECK_WAIT,
            "checking the venv"
        ),
        Ok(r) if r.status.success()
    )
}

/// The exclusive lock on `path`, waiting at most [`VENV_LOCK_WAIT`].
fn lock(path: &Path) -> File {
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let deadline = Instant::now() + VENV_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(std::fs::TryLockError::WouldBlock) => panic!(
                "{} still locked after {VENV_LOCK_WAIT:?} (another test making the venv?)",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => panic!("locking {}: {e}", path.display()),
        }
    }
}

/// The Python (`bin/python`) of the venv `TARGET/python-venv-<name>`, made
/// with `requirements` (pip requirement specifiers; pin exact versions,
/// `pkg==1.2.3`) unless it already has them and `ready_check` (Python
/// source run with `-c`, e.g. `"import cryptography"`) succeeds in it.
///
/// One venv per `name`: tests that need the same packages share a name,
/// tests with other packages use their own. Changing `requirements` remakes
/// the venv at the next run. Concurrent test processes take turns on
/// `TARGET/python-venv-<name>.lock`.
///
/// # Panics
/// When `name` is not `[A-Za-z0-9_-]+`; when python3 (>= 3.9, with venv and
/// ensurepip) is missing, `python3 -m venv` or `pip install` fails (PyPI
/// unreachable?), or the ready check still fails afterwards: every message
/// carries [`INSTALL_HINT`] and the command's output. Never skips.
pub fn venv(name: &str, requirements: &[&str], ready_check: &str) -> PathBuf {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "venv name {name:?}: use letters, digits, '-' and '_'"
    );
    let target = target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    let venv = target.join(format!("python-venv-{name}"));
    let python = venv.join("bin").join("python");
    let _lock = lock(&target.join(format!("python-venv-{name}.lock")));
    if venv_ready(&venv, &python, requirements, ready_check) {
        println!("reusing {}", venv.display());
        return python;
    }
    let started = Instant::now();

    // python3 with venv and ensurepip (Debian splits them into python3-venv).
    let probe = run_or_fail(
        Command::new(PYTHON).args([
            "-c",
            "import sys, venv, ensurepip; assert sys.version_info >= (3, 9), sys.version",
        ]),
        PYTHON_CHECK_WAIT,
        "checking python3",
        INSTALL_HINT,
    );
    assert!(
        probe.status.success(),
        "python3 lacks what the test needs (Python >= 3.9 with venv and ensurepip): \
         {INSTALL_HINT}\n{}",
        probe.report()
    );

    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .unwrap_or_else(|e| panic!("removing the stale {}: {e}", venv.display()));
    }
    let made = run_or_fail(
        Command::new(PYTHON).arg("-m").arg("venv").arg(&venv),
        VENV_WAIT,
        "python3 -m venv",
        INSTALL_HINT,
    );
    assert!(
        made.status.success() && python.exists(),
        "`python3 -m venv {}` failed: {INSTALL_HINT}\n{}",
        venv.display(),
        made.report()
    );

    let what = format!("pip install {}", requirements.join(" "));
    let pip = run_or_fail(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--timeout",
                "60",
                "--retries",
                "3",
            ])
            .args(requirements),
        PIP_WAIT,
        &what,
        INSTALL_HINT,
    );
    assert!(
        pip.status.success(),
        "`{what}` into {} failed (pip missing from the venv, or PyPI unreachable?): \
         {INSTALL_HINT}\n{}",
        venv.display(),
        pip.report()
    );
    std::fs::write(venv.join(STAMP), stamp_text(requirements))
        .unwrap_or_else(|e| panic!("writing {}: {e}", venv.join(STAMP).display()));
    assert!(
        venv_ready(&venv, &python, requirements, ready_check),
        "{} still fails its ready check after `{what}`:\n{ready_check}",
        venv.display()
    );
    println!(
        "made {} with {} in {:.1?}",
        venv.display(),
        requirements.join(" "),
        started.elapsed()
    );
    python
}

//! keystore.v1 without Rust: a Python client (grpcio, stubs generated from
//! proto/keystore/v1/keystore.proto by grpcio-tools) signs through a real
//! `keystored`, and OpenSSL verifies the signature independently.
//!
//! The Python environment is a venv under the target directory
//! (`TARGET/python-venv`), made on the first run with `python3 -m venv` and
//! `pip install` from PyPI and reused afterwards. A missing python3, venv
//! module or pip fails the test with an install hint: it is never skipped.

use keystore_api::{Actor, Algorithm, KeySpec, Role};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use test_support::daemon::Daemon;

/// grpcio and grpcio-tools, pinned together: the stubs a grpcio-tools
/// release generates require a grpcio at least as new. 1.76 ships wheels for
/// CPython 3.9 to 3.14.
const GRPC_VERSION: &str = "1.76.0";

/// The Python the venv is made from.
const PYTHON: &str = "python3";

const INSTALL_HINT: &str = "install Python 3 with its venv module and pip, e.g. \
     `apt-get install python3 python3-venv python3-pip` on Debian/Ubuntu \
     (./scripts/test installs them when missing)";

/// Bounds on every wait.
const PYTHON_CHECK_WAIT: Duration = Duration::from_secs(60);
const VENV_WAIT: Duration = Duration::from_secs(180);
const PIP_WAIT: Duration = Duration::from_secs(900);
/// Another test process making the venv: at most its venv and pip waits.
const VENV_LOCK_WAIT: Duration = Duration::from_secs(1200);
const PROTOC_WAIT: Duration = Duration::from_secs(120);
const SCRIPT_WAIT: Duration = Duration::from_secs(120);
const OPENSSL_WAIT: Duration = Duration::from_secs(60);

/// A finished command's status and output.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn report(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (no stdin, output captured) for at most `limit`; a command
/// that overruns is killed and fails the test. `Err` only when the program
/// cannot be started.
fn run(cmd: &mut Command, limit: Duration, what: &str) -> std::io::Result<Run> {
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
fn run_or_fail(cmd: &mut Command, limit: Duration, what: &str, hint: &str) -> Run {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match run(cmd, limit, what) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{what}: `{program}` not found: {hint}")
        }
        Err(e) => panic!("{what}: cannot start `{program}`: {e}"),
    }
}

/// The workspace root (proto/ lives there).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR`, or the directory above the profile directory of this
/// test binary (`TARGET/PROFILE/deps/python_client-HASH`).
fn target_dir() -> PathBuf {
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

/// Whether the venv's Python imports grpcio and grpcio-tools of the pinned
/// version.
fn venv_ready(python: &Path) -> bool {
    if !python.exists() {
        return false;
    }
    let check = format!(
        "import grpc, grpc_tools.protoc, importlib.metadata as m\n\
         assert grpc.__version__ == '{GRPC_VERSION}', grpc.__version__\n\
         assert m.version('grpcio-tools') == '{GRPC_VERSION}', m.version('grpcio-tools')\n"
    );
    matches!(
        run(
            Command::new(python).args(["-c", &check]),
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

/// The Python of `TARGET/python-venv`, made with grpcio and grpcio-tools
/// when it lacks them. Concurrent test processes take turns on a lock file.
fn python_venv() -> PathBuf {
    let target = target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    let venv = target.join("python-venv");
    let python = venv.join("bin").join("python");
    let _lock = lock(&target.join("python-venv.lock"));
    if venv_ready(&python) {
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

    let pins = [
        format!("grpcio=={GRPC_VERSION}"),
        format!("grpcio-tools=={GRPC_VERSION}"),
    ];
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
            .args(&pins),
        PIP_WAIT,
        "pip install grpcio grpcio-tools",
        INSTALL_HINT,
    );
    assert!(
        pip.status.success(),
        "`pip install {}` into {} failed (pip missing from the venv, or PyPI unreachable?): \
         {INSTALL_HINT}\n{}",
        pins.join(" "),
        venv.display(),
        pip.report()
    );
    assert!(
        venv_ready(&python),
        "{} still lacks grpcio/grpcio-tools {GRPC_VERSION} after pip install",
        venv.display()
    );
    println!(
        "made {} with grpcio {GRPC_VERSION} in {:.1?}",
        venv.display(),
        started.elapsed()
    );
    python
}

/// The uid of this process (the Python caller runs with it).
fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid in /proc/self/status")
}

#[test]
fn python_client_signs_and_openssl_verifies() {
    let started = Instant::now();
    let python = python_venv();
    let venv_time = started.elapsed();

    // Stubs from the proto, by grpcio-tools' bundled protoc.
    let work = tempfile::tempdir().expect("tempdir");
    let stubs = work.path().join("stubs");
    std::fs::create_dir(&stubs).expect("stubs dir");
    let mut python_out = std::ffi::OsString::from("--python_out=");
    python_out.push(&stubs);
    let mut grpc_out = std::ffi::OsString::from("--grpc_python_out=");
    grpc_out.push(&stubs);
    let protoc = run_or_fail(
        Command::new(&python)
            .current_dir(workspace())
            .args(["-m", "grpc_tools.protoc", "-I", "proto"])
            .arg(python_out)
            .arg(grpc_out)
            .arg("proto/keystore/v1/keystore.proto"),
        PROTOC_WAIT,
        "grpc_tools.protoc",
        INSTALL_HINT,
    );
    assert!(
        protoc.status.success(),
        "grpc_tools.protoc failed\n{}",
        protoc.report()
    );
    for stub in ["keystore_pb2.py", "keystore_pb2_grpc.py"] {
        let path = stubs.join("keystore").join("v1").join(stub);
        assert!(path.is_file(), "protoc made no {}", path.display());
    }

    // The daemon: this process's uid (root in CI) is an application caller
    // of the py-* keys.
    let policy = format!(
        "[[caller]]\nuid = {}\nrole = \"application\"\nkeys = [\"py-*\"]\n",
        uid()
    );
    let mut daemon = Daemon::soft(&policy, "");
    daemon.start();
    let ks = daemon.open_store();
    let setup = Actor::new("setup", Role::SecurityOfficer).expect("actor");
    ks.create(&setup, "py-sign", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create py-sign");
    // Outside the caller's globs: List must not show it.
    ks.create(
        &setup,
        "hidden-sign",
        KeySpec::new(Algorithm::EcdsaP256Sha256),
    )
    .expect("create hidden-sign");

    let message = work.path().join("msg");
    std::fs::write(
        &message,
        b"keystore.v1 from Python\n\x00\x01\x02\xff binary tail\n",
    )
    .expect("message");
    let out = work.path().join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sign_via_daemon.py");
    let client = run_or_fail(
        Command::new(&python)
            .arg(&script)
            .arg(daemon.socket())
            .arg("py-sign")
            .arg(&message)
            .arg(&out)
            .arg(&stubs)
            // No bytecode beside the script in the source tree, no proxy
            // between the client and a local socket.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("grpc_proxy"),
        SCRIPT_WAIT,
        "sign_via_daemon.py",
        INSTALL_HINT,
    );
    println!("{}", client.stdout.trim_end());
    assert!(
        client.status.success(),
        "sign_via_daemon.py failed\n{}\n--- keystored ---\n{}",
        client.report(),
        daemon.drain_log().join("\n")
    );
    assert!(
        client.stdout.contains("sign_via_daemon: OK"),
        "{}",
        client.report()
    );
    assert!(
        !client.stdout.contains("hidden-sign"),
        "List showed a key outside the caller's globs\n{}",
        client.report()
    );

    // The signature, verified by OpenSSL alone.
    let sig = out.join("sig.der");
    let pem = out.join("pub.pem");
    let verify = run_or_fail(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem)
            .arg("-signature")
            .arg(&sig)
            .arg(&message),
        OPENSSL_WAIT,
        "openssl dgst -verify",
        "install OpenSSL, e.g. `apt-get install openssl`",
    );
    assert!(
        verify.status.success() && verify.stdout.contains("Verified OK"),
        "openssl does not verify the Python client's signature\n{}",
        verify.report()
    );
    println!("openssl: {}", verify.stdout.trim());

    // The PEM is the public key the store reports, and the signature is
    // the store's key's.
    let public = ks.public_key("py-sign").expect("public key");
    let written = std::fs::read_to_string(&pem).expect("pub.pem");
    assert_eq!(
        written,
        public.to_pem(),
        "pub.pem differs from the store's key"
    );
    let signature = std::fs::read(&sig).expect("sig.der");
    let signed = std::fs::read(&message).expect("msg");
    public
        .verify(&signed, &signature)
        .expect("the store's public key verifies sig.der");

    daemon.terminate();
    println!(
        "python venv {:.1?}, whole test {:.1?}",
        venv_time,
        started.elapsed()
    );
}

//! keystore.v1 without Rust: a Python client (grpcio, stubs generated from
//! proto/keystore/v1/keystore.proto by grpcio-tools) signs through a real
//! `keystored`, and OpenSSL verifies the signature independently.
//!
//! The Python environment is a venv under the target directory
//! (`TARGET/python-venv-grpc`, by `test_support::python::venv`), made on the
//! first run with `python3 -m venv` and `pip install` from PyPI and reused
//! afterwards. A missing python3, venv module or pip fails the test with an
//! install hint: it is never skipped.

use keystore_api::{Actor, Algorithm, KeySpec, Role};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::daemon::Daemon;
use test_support::python::{run_or_fail, workspace, INSTALL_HINT};

/// grpcio and grpcio-tools, pinned together: the stubs a grpcio-tools
/// release generates require a grpcio at least as new. 1.76 ships wheels for
/// CPython 3.9 to 3.14.
const GRPC_VERSION: &str = "1.76.0";

/// Bounds on every wait.
const PROTOC_WAIT: Duration = Duration::from_secs(120);
const SCRIPT_WAIT: Duration = Duration::from_secs(120);
const OPENSSL_WAIT: Duration = Duration::from_secs(60);

/// The Python of `TARGET/python-venv-grpc`, with grpcio and grpcio-tools
/// of the pinned version (see [`test_support::python::venv`]).
fn python_venv() -> PathBuf {
    let grpcio = format!("grpcio=={GRPC_VERSION}");
    let tools = format!("grpcio-tools=={GRPC_VERSION}");
    let check = format!(
        "import grpc, grpc_tools.protoc, importlib.metadata as m\n\
         assert grpc.__version__ == '{GRPC_VERSION}', grpc.__version__\n\
         assert m.version('grpcio-tools') == '{GRPC_VERSION}', m.version('grpcio-tools')\n"
    );
    test_support::python::venv("grpc", &[&grpcio, &tools], &check)
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

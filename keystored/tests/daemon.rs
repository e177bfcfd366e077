//! keystored as a separate process, with callers of other uids: roles and
//! refusals from the policy, status codes, crash recovery, signals and file
//! modes. Tests run as root; callers drop to other uids.

use keystore_api::{Actor, Algorithm, ErrorKind, KeySpec, Keystore, Role, SignatureFormat};
use keystore_client::Client;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::Duration;
use test_support::daemon::{run_test_as, Daemon, CALLER_GID};

const APP: u32 = 64_001;
const OPERATOR: u32 = 64_002;
const AUDITOR: u32 = 64_003;
const STRANGER: u32 = 64_004;

fn policy() -> String {
    format!(
        r#"
[[caller]]
uid = 0
role = "security-officer"

[[caller]]
uid = {APP}
role = "application"
keys = ["gw-*"]

[[caller]]
uid = {OPERATOR}
role = "operator"

[[caller]]
uid = {AUDITOR}
role = "auditor"
"#
    )
}

fn started(policy: &str, limits: &str) -> Daemon {
    std::env::set_var("KEYSTORED_BIN", env!("CARGO_BIN_EXE_keystored"));
    let mut d = Daemon::soft(policy, limits);
    d.start();
    d
}

fn officer() -> Actor {
    Actor::new("test-setup", Role::SecurityOfficer).expect("actor")
}

/// The caller side: runs the calls named in `KEYSTORE_TEST_CALLS` (one per
/// line: `op key`) through the daemon and prints `op key => ok ...` or
/// `op key => err Kind (message)` for each. Run as another uid by the tests
/// below.
#[test]
#[ignore = "a caller process started by the other tests"]
fn caller() {
    if std::env::var_os("KEYSTORE_TEST_CALLER").is_none() {
        return;
    }
    let socket = std::env::var("KEYSTORE_TEST_SOCKET").expect("socket");
    let calls = std::env::var("KEYSTORE_TEST_CALLS").expect("calls");
    let c = Client::connect(&socket).expect("connect");
    for line in calls.lines().filter(|l| !l.trim().is_empty()) {
        let (op, key) = line.split_once(' ').unwrap_or((line, ""));
        let r: keystore_api::Result<String> = match op {
            "sign" => c
                .sign(key, b"payload", SignatureFormat::Der)
                .and_then(|s| c.verify(key, b"payload", &s.bytes, None))
                .map(|v| format!("v{v}")),
            "pubkey" => c.public_key(key).map(|p| p.fingerprint()),
            "info" => c.info(key).map(|i| i.name),
            "list" => c.list().map(|l| {
                l.iter()
                    .map(|k| k.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            "create" => c
                .create(key, KeySpec::new(Algorithm::EcdsaP256Sha256))
                .map(|i| i.name),
            "rotate" => c.rotate(key, time::Duration::ZERO).map(|i| i.name),
            "suspend" => c.suspend(key, 1).map(|()| String::new()),
            "audit" => c.verify_audit().map(|r| r.entries.to_string()),
            other => panic!("unknown call {other}"),
        };
        match r {
            Ok(v) => println!("{op} {key} => ok {v}"),
            Err(e) => println!("{op} {key} => err {} ({})", e.kind(), e.detail()),
        }
    }
}

/// Runs `calls` as `uid`; returns the result line of each call.
fn call_as(d: &Daemon, uid: u32, calls: &[&str]) -> Vec<String> {
    let out = run_test_as(
        uid,
        "caller",
        &[
            ("KEYSTORE_TEST_SOCKET", d.socket().display().to_string()),
            ("KEYSTORE_TEST_CALLS", calls.join("\n")),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "caller uid {uid} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains(" => "))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), calls.len(), "{stdout}");
    lines
}

fn expect(lines: &[String], want: &[&str]) {
    assert_eq!(lines.len(), want.len());
    for (line, w) in lines.iter().zip(want) {
        assert!(line.contains(w), "expected '{w}' in '{line}'");
    }
}

#[test]
fn roles_come_from_the_os_identity_and_refusals_are_audited() {
    let d = started(&policy(), "");
    let root = Client::connect(d.socket().to_str().expect("utf-8")).expect("connect");
    for name in ["gw-sign", "fw-sign"] {
        root.create(name, KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create as security officer");
    }

    // The application signs with its own keys; others are invisible to it;
    // lifecycle calls are refused.
    let app = call_as(
        &d,
        APP,
        &[
            "sign gw-sign",
            "sign fw-sign",
            "pubkey fw-sign",
            "info fw-sign",
            "list",
            "create gw-new",
            "rotate gw-sign",
            "suspend gw-sign",
            "audit",
        ],
    );
    expect(
        &app,
        &[
            "sign gw-sign => ok v1",
            "sign fw-sign => err NotFound (no key named 'fw-sign')",
            "pubkey fw-sign => err NotFound",
            "info fw-sign => err NotFound",
            "list  => ok gw-sign",
            "create gw-new => err Policy",
            "rotate gw-sign => err Policy",
            "suspend gw-sign => err Policy",
            "audit  => err Policy",
        ],
    );
    // The operator runs the store but never uses a key; the auditor audits.
    let op = call_as(
        &d,
        OPERATOR,
        &["create op-made", "sign gw-sign", "rotate gw-sign", "audit"],
    );
    expect(
        &op,
        &[
            "create op-made => ok",
            "sign gw-sign => err Policy (sign needs the application role",
            "rotate gw-sign => err Policy",
            "audit  => err Policy",
        ],
    );
    let aud = call_as(&d, AUDITOR, &["audit", "create aud-made", "list"]);
    expect(
        &aud,
        &[
            "audit  => ok",
            "create aud-made => err Policy",
            "list  => ok",
        ],
    );
    // A uid the policy does not name can do nothing.
    let stranger = call_as(&d, STRANGER, &["sign gw-sign", "list", "create x"]);
    expect(
        &stranger,
        &[
            "sign gw-sign => err Policy (uid 64004 (gid 64000) is not in keystored's policy",
            "list  => err Policy",
            "create x => err Policy",
        ],
    );

    // The trail names each caller by uid, pid and executable, with its role.
    let trail = d.open_store().export_audit(&officer()).expect("export");
    let refused: Vec<_> = trail
        .iter()
        .filter(|e| e.event.as_str() == "refused")
        .collect();
    let by = |uid: u32, role: &str| {
        refused
            .iter()
            .filter(|e| e.actor.starts_with(&format!("uid={uid},pid=")) && e.role == role)
            .count()
    };
    assert!(by(APP, "application") >= 4, "{refused:#?}");
    assert!(by(OPERATOR, "operator") >= 3, "{refused:#?}");
    assert!(by(AUDITOR, "auditor") >= 1, "{refused:#?}");
    assert_eq!(by(STRANGER, "none"), 3, "{refused:#?}");
    let exe = std::env::current_exe().expect("exe");
    let exe_name = exe.file_name().expect("name").to_string_lossy().to_string();
    assert!(
        refused.iter().any(|e| e.actor.contains(&exe_name)),
        "no entry names the caller's executable {exe_name}: {refused:#?}"
    );
    let created = trail
        .iter()
        .find(|e| e.event.as_str() == "generate" && e.key_name.as_deref() == Some("op-made"))
        .expect("creation by the operator is audited");
    assert!(
        created.actor.starts_with(&format!("uid={OPERATOR},")) && created.role == "operator",
        "{created:?}"
    );
    assert!(d
        .open_store()
        .verify_audit(&officer())
        .expect("verify")
        .is_intact());
}

/// A kind, key and version of an error.
type Context = (ErrorKind, Option<String>, Option<u32>);

fn context<T>(r: keystore_api::Result<T>) -> Context {
    let e = r.err().expect("an error");
    (e.kind(), e.key().map(str::to_string), e.version())
}

/// The raw status code of a sign of `name`, as any gRPC client sees it;
/// asserts the kind trailer names the same code.
fn raw_sign_code(d: &Daemon, name: &str) -> tonic::Code {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path = d.socket();
    rt.block_on(async move {
        let ch = tonic::transport::Endpoint::from_static("http://keystored.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(p).await?,
                    ))
                }
            }))
            .await
            .expect("channel");
        let mut kc = keystore_rpc::pb::key_use_client::KeyUseClient::new(ch);
        let status = kc
            .sign(keystore_rpc::pb::SignRequest {
                name: name.into(),
                message: b"m".to_vec(),
                format: 0,
            })
            .await
            .expect_err("an error");
        let trailer = status
            .metadata()
            .get("keystore-error-kind")
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorKind::from_name)
            .expect("kind trailer");
        assert_eq!(keystore_rpc::code_of(trailer), status.code());
        status.code()
    })
}

#[test]
fn error_kinds_cross_the_socket_as_status_codes_and_back() {
    let d = started(
        "[[caller]]\nuid = 0\nrole = \"application\"\nkeys = [\"*\"]\n",
        "",
    );
    let ks = d.open_store();
    for name in ["k", "susp"] {
        ks.create(&officer(), name, KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create");
    }
    ks.suspend(&officer(), "susp", 1).expect("suspend");
    let c = Client::connect(d.socket().to_str().expect("utf-8")).expect("connect");
    let der = c.sign("k", b"m", SignatureFormat::Der).expect("sign").bytes;
    assert_eq!(
        context(c.sign("nope", b"m", SignatureFormat::Der)),
        (ErrorKind::NotFound, Some("nope".into()), None)
    );
    assert_eq!(
        context(c.sign("bad name!", b"m", SignatureFormat::Der)).0,
        ErrorKind::InvalidInput
    );
    assert_eq!(
        context(c.sign("susp", b"m", SignatureFormat::Der)),
        (ErrorKind::KeyState, Some("susp".into()), None)
    );
    assert_eq!(
        context(c.verify("k", b"other", &der, None)).0,
        ErrorKind::Integrity
    );
    assert_eq!(
        context(c.create("k2", KeySpec::new(Algorithm::HmacSha256))).0,
        ErrorKind::Policy
    );
    assert_eq!(
        context(c.mac("k", b"m")).0,
        ErrorKind::Policy,
        "a signing key has no mac usage"
    );
    assert_eq!(raw_sign_code(&d, "nope"), tonic::Code::NotFound);
    assert_eq!(raw_sign_code(&d, "susp"), tonic::Code::FailedPrecondition);
    assert_eq!(raw_sign_code(&d, "bad name!"), tonic::Code::InvalidArgument);

    // A daemon that is gone is Unavailable.
    drop(d);
    let e = c
        .sign("k", b"m", SignatureFormat::Der)
        .expect_err("daemon gone");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = Client::connect("unix:/nonexistent/keystore.sock").expect_err("no daemon");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

/// Checks that the key's versions are consistent (numbered 1..=n, exactly
/// one active, which signs and verifies); returns the number of versions.
fn consistent(ks: &Keystore<backend_soft::SoftStore>, name: &str) -> u32 {
    let info = ks.info(name).expect("info");
    for (i, v) in info.versions.iter().enumerate() {
        assert_eq!(v.version as usize, i + 1, "{info:?}");
    }
    let active: Vec<_> = info
        .versions
        .iter()
        .filter(|v| v.state == keystore_api::KeyState::Active)
        .collect();
    assert_eq!(active.len(), 1, "{info:?}");
    let sig = ks.sign(name, b"after", SignatureFormat::Der).expect("sign");
    assert_eq!(
        ks.verify(name, b"after", &sig.bytes, None).expect("verify"),
        active[0].version
    );
    info.versions.len() as u32
}

#[test]
fn sigkill_during_rotation_leaves_old_or_new_state_and_clients_reconnect() {
    let mut d = started("[[caller]]\nuid = 0\nrole = \"security-officer\"\n", "");
    d.open_store()
        .create(&officer(), "rot", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
    let socket = d.socket().to_str().expect("utf-8").to_string();
    let client = Client::connect(&socket).expect("connect");
    let mut completed = 0u32;
    for round in 0..6u64 {
        // Rotations in flight on another thread while the daemon is killed.
        let s = socket.clone();
        let worker = std::thread::spawn(move || {
            let c = Client::connect(&s).expect("connect");
            let mut ok = 0u32;
            for _ in 0..1000 {
                match c.rotate("rot", time::Duration::ZERO) {
                    Ok(_) => ok += 1,
                    Err(e) if e.kind() == ErrorKind::Unavailable => break,
                    Err(e) => panic!("rotation failed with {e}"),
                }
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        d.kill();
        completed += worker.join().expect("worker");
        // The store is whole with no daemon: recovery at open, then checks.
        let ks = d.open_store();
        let versions = consistent(&ks, "rot");
        assert!(
            versions > completed,
            "{versions} versions, {completed} rotations confirmed"
        );
        assert!(ks.verify_audit(&officer()).expect("verify").is_intact());
        drop(ks);
        d.start();
        // The same client reconnects to the restarted daemon.
        let info = client.info("rot").expect("reconnected");
        assert_eq!(info.versions.len() as u32, versions);
    }
    assert!(completed > 0, "no rotation completed before a kill");
}

/// Waits (bounded) for a daemon log line containing `needle`.
fn logged(d: &Daemon, needle: &str) -> bool {
    for _ in 0..100 {
        if d.drain_log().iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn sighup_reloads_the_policy_and_sigterm_drains_and_removes_the_socket() {
    let mut d = started(&policy(), "");
    let ks = d.open_store();
    for name in ["gw-a", "fw-a"] {
        ks.create(&officer(), name, KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create");
    }
    expect(&call_as(&d, APP, &["sign fw-a"]), &["err NotFound"]);
    d.write_policy(&policy().replace("keys = [\"gw-*\"]", "keys = [\"gw-*\", \"fw-a\"]"));
    d.signal("HUP");
    assert!(logged(&d, "policy reloaded"), "no reload reported");
    expect(&call_as(&d, APP, &["sign fw-a"]), &["sign fw-a => ok v1"]);
    // A broken policy is not loaded; the last good one stays.
    d.write_policy("[[caller]]\nuid = 1\nrole = \"nobody\"\n");
    d.signal("HUP");
    assert!(
        logged(&d, "policy not reloaded"),
        "a broken policy was not reported"
    );
    expect(&call_as(&d, APP, &["sign gw-a"]), &["sign gw-a => ok v1"]);

    let status = d.terminate();
    assert!(status.success(), "{status}");
    assert!(!d.socket().exists(), "the socket outlived the daemon");
}

#[test]
fn the_socket_is_0660_with_its_group_and_the_store_is_the_daemons_alone() {
    let d = started(&policy(), "");
    let meta = std::fs::metadata(d.socket()).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), CALLER_GID);
    let store = d.store_dir();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    for entry in std::fs::read_dir(&store).expect("read store") {
        let path = entry.expect("entry").path();
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    // Another uid reaches the socket but not the store.
    let out = std::process::Command::new("cat")
        .arg(store.join("metadata.sqlite"))
        .uid(APP)
        .gid(CALLER_GID)
        .output()
        .expect("cat");
    assert!(!out.status.success(), "the store is readable by uid {APP}");
}

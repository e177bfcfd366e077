//! Several real processes on one TPM store at once, through the user-space
//! resource manager tpm2-abrmd in front of swtpm (swtpm alone serves one
//! connection at a time and one set of object slots; on a device the
//! kernel's `/dev/tpmrm0` plays abrmd's part).
//!
//! The test binary re-executes itself: a child runs the test `child` with
//! [`ROLE`] naming its part, the store directory, the TCTI and an exchange
//! directory in its environment, and the private D-Bus address that the
//! tabrmd TCTI needs. The parent never talks to abrmd itself (see
//! `backend_tpm::swtpm::Abrmd`): it prepares the store over the simulator
//! directly before abrmd starts, and checks it the same way after abrmd
//! stops.
//!
//! Handshakes go through files written atomically (temporary, rename):
//! - `key-I.handle`, `key-I.spki`: key I, created by the churn process.
//! - `ack-S-I`: signer S signed with key I (a key created by another process).
//! - `destroying-I`, `destroyed-I`: written right before and right after the
//!   churn process destroys key I.
//! - `gone-S-I`: signer S got `NotFound` for key I at its first call after
//!   `destroyed-I` appeared.

use backend_tpm::swtpm::{Abrmd, Swtpm};
use backend_tpm::{admin, TpmBackend, TpmConfig};
use keystore_api::{Algorithm, KeyHandle, PublicKey, SecretBytes};
use keystore_backend::BackendKey;
use keystore_backend::ErrorKind;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::Signing;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ROLE: &str = "KEYSTORE_TPM_MP_ROLE";
const STORE: &str = "KEYSTORE_TPM_MP_STORE";
const EXCHANGE: &str = "KEYSTORE_TPM_MP_EXCHANGE";
const TCTI: &str = "KEYSTORE_TPM_MP_TCTI";
const OWNER: &str = "KEYSTORE_TPM_MP_OWNER";
const ROUNDS: &str = "KEYSTORE_TPM_MP_ROUNDS";

/// Keys the churn process creates and destroys.
const KEYS: usize = 10;
const SIGNERS: [&str; 2] = ["signer-a", "signer-b"];
/// Longest wait for one handshake step.
const STEP_WAIT: Duration = Duration::from_secs(30);
/// Longest a child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(240);
const ECDSA: Algorithm = Algorithm::EcdsaP256Sha256;
const OWNER_AUTH: &[u8] = b"owner secret";

// ---------------------------------------------------------------- parent --

/// A simulator, the store prepared over it directly, then abrmd in front.
/// Fields drop in order: abrmd, then the simulator, then the files.
struct World {
    abrmd: Option<Abrmd>,
    swtpm: Swtpm,
    dir: TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
        admin::change_owner_auth(
            &swtpm.tcti(),
            &SecretBytes::default(),
            &SecretBytes::from_slice(OWNER_AUTH),
        )
        .expect("set owner auth");
        std::fs::create_dir_all(dir.path().join("x")).expect("exchange dir");
        World {
            abrmd: None,
            swtpm,
            dir,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn exchange(&self) -> PathBuf {
        self.dir.path().join("x")
    }

    /// A backend over the simulator directly (only while abrmd is down).
    fn direct(&self) -> TpmBackend {
        assert!(self.abrmd.is_none(), "abrmd owns the simulator");
        let cfg = TpmConfig::new(self.swtpm.tcti())
            .with_owner_auth(SecretBytes::from_slice(OWNER_AUTH))
            .expect("config");
        TpmBackend::open(cfg, &self.store()).expect("open directly")
    }

    /// Creates the long-lived key every process signs with.
    fn make_fixed_key(&self) -> (KeyHandle, PublicKey) {
        let be = self.direct();
        let g = be.generate(&NewKey::new(ECDSA, "fixed")).expect("generate");
        let pk = g.public_key.expect("public key");
        put(&self.exchange(), "fixed.spki", pk.spki_der());
        put(&self.exchange(), "fixed.handle", g.handle.as_bytes());
        (g.handle, pk)
    }

    fn start_abrmd(&mut self) {
        let abrmd = Abrmd::start(&self.swtpm, &self.dir.path().join("ab"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.abrmd = Some(abrmd);
    }

    fn stop_abrmd(&mut self) {
        self.abrmd = None;
    }

    /// Starts this test binary as a child playing `role`.
    fn spawn(&self, role: &str, extra: &[(&str, String)]) -> Child {
        let abrmd = self.abrmd.as_ref().expect("abrmd runs");
        let log = std::fs::File::create(self.exchange().join(format!("{role}.log"))).expect("log");
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(STORE, self.store())
            .env(EXCHANGE, self.exchange())
            .env(TCTI, abrmd.tcti())
            .env(OWNER, hex::encode(OWNER_AUTH))
            .envs(abrmd.env())
            .envs(extra.iter().map(|(k, v)| (*k, v.clone())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn a child")
    }

    /// Waits for every child (killing all of them past [`CHILD_LIMIT`]) and
    /// fails with the logs of those that failed.
    fn wait_all(&self, mut children: Vec<(String, Child)>) {
        let deadline = Instant::now() + CHILD_LIMIT;
        let mut failed = Vec::new();
        while !children.is_empty() {
            let mut i = 0;
            while i < children.len() {
                match children[i].1.try_wait() {
                    Ok(Some(status)) => {
                        let (role, _) = children.swap_remove(i);
                        if !status.success() {
                            failed.push(format!("{role} exited with {status}"));
                        }
                    }
                    _ => i += 1,
                }
            }
            if Instant::now() > deadline {
                for (role, c) in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                    failed.push(format!("{role} still ran after {CHILD_LIMIT:?}"));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // What each child said it did (shown with --nocapture).
        for entry in std::fs::read_dir(self.exchange())
            .expect("exchange")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                for l in text.lines().filter(|l| l.contains(": ")) {
                    println!("{l}");
                }
            }
        }
        if !failed.is_empty() {
            let mut report = failed.join("\n");
            for entry in std::fs::read_dir(self.exchange())
                .expect("exchange")
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(role) = name.strip_suffix(".log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    report.push_str(&format!("\n--- {role} (last lines) ---\n"));
                    for l in tail.into_iter().rev() {
                        report.push_str(l);
                        report.push('\n');
                    }
                }
            }
            panic!("{report}");
        }
    }
}

/// Writes `name` in `dir` atomically: readers see all of it or nothing.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn has(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP_WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The kind of `r`'s error; an `Ok` fails the test.
#[track_caller]
fn kind<T>(r: keystore_api::Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.kind(),
    }
}

/// One process creates and destroys keys while two others sign with a
/// long-lived key and with each key the first one creates: every use
/// succeeds while the key lives, each key created in one process signs in
/// the others, and each destroyed key is `NotFound` in the others at their
/// first call after its destruction returned.
#[test]
fn processes_share_one_store_through_a_resource_manager() {
    let mut w = World::new();
    let (fixed, fixed_pk) = w.make_fixed_key();
    w.start_abrmd();
    let mut children = vec![("churn".to_string(), w.spawn("churn", &[]))];
    for s in SIGNERS {
        children.push((s.to_string(), w.spawn(s, &[])));
    }
    w.wait_all(children);

    let x = w.exchange();
    for i in 0..KEYS {
        assert!(has(&x, &format!("destroyed-{i}")), "key {i} destroyed");
        for s in SIGNERS {
            assert!(has(&x, &format!("ack-{s}-{i}")), "{s} signed with key {i}");
            assert!(has(&x, &format!("gone-{s}-{i}")), "{s} saw key {i} gone");
        }
    }

    // Over the simulator directly once more: only the long-lived key is
    // left, no temporary either, and it still signs.
    w.stop_abrmd();
    let be = w.direct();
    assert_eq!(be.list().expect("list"), vec![fixed.clone()]);
    let sig = be
        .sign(&BackendKey::new(fixed.clone(), ECDSA), b"after")
        .expect("sign");
    fixed_pk.verify(b"after", &sig).expect("verifies");
    let leftovers: Vec<_> = std::fs::read_dir(w.store().join("keys"))
        .expect("keys dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

/// Two backends in one process on the same directory, both through abrmd
/// (each with its own connection, primary, loaded keys and encryption
/// session), plus the crash cleanup that runs only when a process is alone.
#[test]
fn two_backends_in_one_process_through_a_resource_manager() {
    let mut w = World::new();
    w.make_fixed_key();
    w.start_abrmd();
    let child = w.spawn("pair", &[]);
    w.wait_all(vec![("pair".into(), child)]);
    assert!(has(&w.exchange(), "pair.ok"));
}

/// Not a pass/fail test: the cost of a sign through abrmd against one over
/// the simulator directly, printed. Run with
/// `cargo test -p backend-tpm --features test-support --release --test multi_process -- --ignored --nocapture sign_cost`.
#[test]
#[ignore = "a measurement; run by hand"]
fn sign_cost_through_abrmd_against_direct() {
    let rounds: usize = std::env::var("KEYSTORE_TPM_MP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut w = World::new();
    let (fixed, _) = w.make_fixed_key();
    let direct = {
        let t0 = Instant::now();
        let be = w.direct();
        let open = t0.elapsed();
        be.sign(&BackendKey::new(fixed.clone(), ECDSA), b"warm")
            .expect("sign");
        let t = Instant::now();
        for _ in 0..rounds {
            be.sign(&BackendKey::new(fixed.clone(), ECDSA), b"bench")
                .expect("sign");
        }
        (open, t.elapsed() / rounds as u32)
    };
    w.start_abrmd();
    let child = w.spawn("bench", &[(ROUNDS, rounds.to_string())]);
    w.wait_all(vec![("bench".into(), child)]);
    let via = std::fs::read_to_string(w.exchange().join("bench.result")).expect("result");
    println!(
        "direct swtpm: open {:?}, sign {:?} (mean of {rounds})\nthrough abrmd: {via}",
        direct.0, direct.1
    );
}

// ----------------------------------------------------------------- child --

struct ChildEnv {
    role: String,
    store: PathBuf,
    x: PathBuf,
    tcti: String,
    owner: Vec<u8>,
}

impl ChildEnv {
    fn open(&self) -> TpmBackend {
        let cfg = TpmConfig::new(self.tcti.clone())
            .with_owner_auth(SecretBytes::from_slice(&self.owner))
            .expect("config");
        TpmBackend::open(cfg, &self.store).unwrap_or_else(|e| panic!("{}: open: {e:?}", self.role))
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.x.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn key(&self, name: &str) -> (KeyHandle, PublicKey) {
        let h = KeyHandle::new(self.read(&format!("{name}.handle")));
        let pk = PublicKey::from_spki_der(ECDSA, self.read(&format!("{name}.spki"))).expect("spki");
        (h, pk)
    }
}

/// The entry point of every child process; a no-op in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} unset"));
    let env = ChildEnv {
        role: role.clone(),
        store: var(STORE).into(),
        x: var(EXCHANGE).into(),
        tcti: var(TCTI),
        owner: hex::decode(var(OWNER)).expect("owner hex"),
    };
    match role.as_str() {
        "churn" => churn(&env),
        "pair" => pair(&env),
        "bench" => bench(&env, var(ROUNDS).parse().expect("rounds")),
        s if SIGNERS.contains(&s) => signer(&env),
        other => panic!("unknown role {other}"),
    }
    eprintln!("{role}: done");
}

/// Creates key I, waits until both signers signed with it, destroys it,
/// waits until both saw it gone; signs with the long-lived key meanwhile.
fn churn(env: &ChildEnv) {
    let be = env.open();
    let (fixed, fixed_pk) = env.key("fixed");
    for i in 0..KEYS {
        let sig = be
            .sign(&BackendKey::new(fixed.clone(), ECDSA), b"churn")
            .expect("sign fixed");
        fixed_pk.verify(b"churn", &sig).expect("verifies");
        let g = be.generate(&NewKey::new(ECDSA, "churn")).expect("generate");
        let pk = g.public_key.expect("public key");
        let sig = be
            .sign(&BackendKey::new(g.handle.clone(), ECDSA), b"own")
            .expect("sign own");
        pk.verify(b"own", &sig).expect("verifies");
        assert!(be.list().expect("list").contains(&g.handle));
        put(&env.x, &format!("key-{i}.spki"), pk.spki_der());
        put(&env.x, &format!("key-{i}.handle"), g.handle.as_bytes());
        for s in SIGNERS {
            wait_for(&format!("{s} to sign with key {i}"), || {
                has(&env.x, &format!("ack-{s}-{i}"))
            });
        }
        put(&env.x, &format!("destroying-{i}"), b"");
        be.destroy(&g.handle).expect("destroy");
        put(&env.x, &format!("destroyed-{i}"), b"");
        assert_eq!(
            kind(be.sign(&BackendKey::new(g.handle.clone(), ECDSA), b"m")),
            ErrorKind::NotFound
        );
        for s in SIGNERS {
            wait_for(&format!("{s} to see key {i} gone"), || {
                has(&env.x, &format!("gone-{s}-{i}"))
            });
        }
        eprintln!("churn: key {i} made, used elsewhere, destroyed, gone elsewhere");
    }
    put(&env.x, "churn.done", b"");
}

/// Signs with the long-lived key and with every key of the churn process
/// until that one is done; lists the store as it goes.
fn signer(env: &ChildEnv) {
    let me = env.role.as_str();
    let be = env.open();
    let (fixed, fixed_pk) = env.key("fixed");
    let mut acked = [false; KEYS];
    let mut gone = [false; KEYS];
    let deadline = Instant::now() + CHILD_LIMIT;
    let (mut uses, mut cross, mut lists) = (0u64, 0u64, 0u64);
    let done = |gone: &[bool; KEYS]| gone.iter().all(|g| *g);
    while !done(&gone) {
        assert!(
            Instant::now() < deadline,
            "{me}: ran out of time: acked {acked:?}, gone {gone:?}"
        );
        let sig = be
            .sign(&BackendKey::new(fixed.clone(), ECDSA), me.as_bytes())
            .expect("sign fixed");
        fixed_pk.verify(me.as_bytes(), &sig).expect("verifies");
        uses += 1;
        for i in 0..KEYS {
            if gone[i] || !has(&env.x, &format!("key-{i}.handle")) {
                continue;
            }
            let destroyed_before = has(&env.x, &format!("destroyed-{i}"));
            let (h, pk) = env.key(&format!("key-{i}"));
            match be.sign(&BackendKey::new(h.clone(), ECDSA), me.as_bytes()) {
                Ok(sig) => {
                    assert!(
                        !destroyed_before,
                        "{me}: key {i} signed after its destruction"
                    );
                    pk.verify(me.as_bytes(), &sig).expect("verifies");
                    cross += 1;
                    if !acked[i] {
                        acked[i] = true;
                        put(&env.x, &format!("ack-{me}-{i}"), b"");
                    }
                }
                Err(e) if e.is(ErrorKind::NotFound) => {
                    assert!(
                        has(&env.x, &format!("destroying-{i}")),
                        "{me}: key {i} NotFound while alive: {e}"
                    );
                    if destroyed_before {
                        gone[i] = true;
                        put(&env.x, &format!("gone-{me}-{i}"), b"");
                    }
                }
                Err(e) => panic!("{me}: sign with key {i}: {e:?}"),
            }
        }
        // The listing: never an error, never without a live key.
        let created: Vec<usize> = (0..KEYS)
            .filter(|i| has(&env.x, &format!("key-{i}.handle")))
            .collect();
        let listed = be.list().expect("list");
        lists += 1;
        assert!(
            listed.contains(&fixed),
            "{me}: the long-lived key is not listed"
        );
        for i in created {
            if !has(&env.x, &format!("destroying-{i}")) {
                let (h, _) = env.key(&format!("key-{i}"));
                assert!(listed.contains(&h), "{me}: live key {i} not listed");
            }
        }
    }
    eprintln!("{me}: {uses} signs with the long-lived key, {cross} with keys of another process, {lists} listings");
}

/// Two backends on one directory in this process, through abrmd.
fn pair(env: &ChildEnv) {
    let keys = env.store.join("keys");
    let (fixed, fixed_pk) = env.key("fixed");
    // Alone: a temporary left by a crash is removed at open.
    let stale = keys.join(".tmp-stale");
    std::fs::write(&stale, b"left by a crash").expect("write");
    let a = env.open();
    assert!(!stale.exists(), "a process alone cleans up");
    // Not alone: another backend's temporary may be a write in flight.
    let inflight = keys.join(".tmp-inflight");
    std::fs::write(&inflight, b"being written").expect("write");
    let b = env.open();
    assert!(inflight.exists(), "a process not alone leaves temporaries");

    // Each backend has its own connection, primary and encryption session.
    assert!(a.parameter_encryption_session().expect("a").is_some());
    assert!(b.parameter_encryption_session().expect("b").is_some());
    for be in [&a, &b] {
        let sig = be
            .sign(&BackendKey::new(fixed.clone(), ECDSA), b"both")
            .expect("sign fixed");
        fixed_pk.verify(b"both", &sig).expect("verifies");
    }

    // Made in one, used in the other.
    let ka = a.generate(&NewKey::new(ECDSA, "a")).expect("generate");
    let pka = ka.public_key.clone().expect("pk");
    let sig = b
        .sign(&BackendKey::new(ka.handle.clone(), ECDSA), b"m")
        .expect("b signs a's key");
    pka.verify(b"m", &sig).expect("verifies");
    let secret = [0x5Au8; 32];
    let kb = b
        .import(
            &NewKey::new(Algorithm::HmacSha256, "b"),
            &SecretBytes::from_slice(&secret),
        )
        .expect("import");
    let long = vec![7u8; 3000];
    for data in [&b"short"[..], &long[..]] {
        let want = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("key");
            m.update(data);
            <[u8; 32]>::from(m.finalize().into_bytes())
        };
        assert_eq!(
            *a.hmac_sha256(&BackendKey::new(kb.clone(), Algorithm::HmacSha256), data)
                .expect("a mac"),
            want
        );
        assert_eq!(
            *b.hmac_sha256(&BackendKey::new(kb.clone(), Algorithm::HmacSha256), data)
                .expect("b mac"),
            want
        );
    }
    // The encrypted response path (the PRK) on both connections.
    assert_eq!(
        *a.hkdf_extract(&BackendKey::new(kb.clone(), Algorithm::HmacSha256), b"salt")
            .expect("a"),
        *b.hkdf_extract(&BackendKey::new(kb.clone(), Algorithm::HmacSha256), b"salt")
            .expect("b")
    );
    for be in [&a, &b] {
        let l = be.list().expect("list");
        assert!(l.contains(&fixed) && l.contains(&ka.handle) && l.contains(&kb));
    }

    // Destroyed in one: NotFound in the other at once.
    a.destroy(&kb).expect("destroy");
    assert_eq!(
        kind(b.hmac_sha256(&BackendKey::new(kb.clone(), Algorithm::HmacSha256), b"m")),
        ErrorKind::NotFound
    );
    assert_eq!(kind(b.destroy(&kb)), ErrorKind::NotFound);
    assert!(!b.list().expect("list").contains(&kb));
    b.destroy(&ka.handle).expect("destroy");
    assert_eq!(
        kind(a.sign(&BackendKey::new(ka.handle.clone(), ECDSA), b"m")),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(a.public_key(&BackendKey::new(ka.handle.clone(), ECDSA))),
        ErrorKind::NotFound
    );

    // Behind the resource manager each connection sees only its own
    // objects: its primary and its loaded keys (the other backend's are
    // not listed). Sessions are context-saved by abrmd between commands, so
    // none is ever listed here (see `loaded_handles`).
    for (name, be) in [("a", &a), ("b", &b)] {
        be.sign(&BackendKey::new(fixed.clone(), ECDSA), b"load")
            .expect("sign");
        let (objects, sessions) = be.loaded_handles().expect("handles");
        eprintln!("pair: {name}: objects {objects:x?}, sessions {sessions:x?}");
        assert_eq!(objects.len(), 1 + be.cached_keys(), "{name}: {objects:x?}");
        assert!(sessions.is_empty(), "{name}: {sessions:x?}");
    }
    drop(a);
    drop(b);
    assert!(inflight.exists());
    let c = env.open();
    assert!(!inflight.exists(), "alone again: cleaned up");
    assert_eq!(c.list().expect("list"), vec![fixed.clone()]);
    c.sign(&BackendKey::new(fixed.clone(), ECDSA), b"c")
        .expect("sign");
    put(&env.x, "pair.ok", b"");
}

/// Times opens and signs through abrmd.
fn bench(env: &ChildEnv, rounds: usize) {
    let (fixed, _) = env.key("fixed");
    let t0 = Instant::now();
    let be = env.open();
    let open = t0.elapsed();
    be.sign(&BackendKey::new(fixed.clone(), ECDSA), b"warm")
        .expect("sign");
    let t = Instant::now();
    for _ in 0..rounds {
        be.sign(&BackendKey::new(fixed.clone(), ECDSA), b"bench")
            .expect("sign");
    }
    let sign = t.elapsed() / rounds as u32;
    put(
        &env.x,
        "bench.result",
        format!("open {open:?}, sign {sign:?} (mean of {rounds})").as_bytes(),
    );
}

//! Real separate processes on one store, for the multi-process cases.
//!
//! A fixture describes how another process opens its store as a
//! [`WorkerSpec`]; the `conformance-worker` binary opens it from that spec and
//! runs one [`Role`] in a bounded loop, printing one JSON [`Summary`] line at
//! the end. The cases (`cases::processes`) start workers, stop or kill them,
//! and check the store afterwards from the parent.

mod encrypt;

pub use encrypt::{
    worker_options, ENCRYPTION_BLOCK_PARAM, LIMIT_AAD, LIMIT_KEY_PARAM, PACE_PARAM,
    START_FILE_PARAM,
};

use crate::support::so;
use crate::Fixture;
use keystore_api::{Algorithm, Backend, Keystore, SignatureFormat, Usages};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use time::Duration as Grace;

/// Environment variable that carries the JSON [`WorkerSpec`] to a worker.
pub const SPEC_ENV: &str = "KEYSTORE_WORKER_SPEC";

/// How another process opens a fixture's store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The fixture's matrix name (`soft`, `pkcs11`, …): picks the opener.
    pub backend: String,
    /// The metadata database.
    pub metadata: PathBuf,
    /// Fixture-specific parameters (paths, labels, TCTI strings).
    pub params: BTreeMap<String, String>,
    /// Environment the worker needs (`SOFTHSM2_CONF`, a D-Bus address).
    pub env: BTreeMap<String, String>,
}

impl WorkerSpec {
    /// A parameter, or an error naming it.
    pub fn param(&self, name: &str) -> Result<&str, String> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("worker spec for {} lacks '{name}'", self.backend))
    }
}

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sign/verify, MAC/verify, derive, encrypt/decrypt with the stress keys.
    Use,
    /// Rotate the stress keys and sweep, in turn.
    Rotate,
    /// Open the store afresh and list it, again and again.
    List,
    /// Create, rotate, destroy and sweep until killed.
    Churn,
    /// Sign as fast as possible (benchmark load).
    SignLoad,
    /// Encrypt with the key named by [`LIMIT_KEY_PARAM`] until refused,
    /// printing `ENC n` after the n-th success (so a killed worker's count
    /// is known) and the refusal in its summary.
    EncryptUntilRefused,
}

impl Role {
    /// The role's command-line name.
    pub fn id(self) -> &'static str {
        match self {
            Role::Use => "use",
            Role::Rotate => "rotate",
            Role::List => "list",
            Role::Churn => "churn",
            Role::SignLoad => "sign-load",
            Role::EncryptUntilRefused => "encrypt-until-refused",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Use,
            Role::Rotate,
            Role::List,
            Role::Churn,
            Role::SignLoad,
            Role::EncryptUntilRefused,
        ]
        .into_iter()
        .find(|r| r.id() == s)
    }
}

/// What a worker did, printed as one JSON line prefixed by `SUMMARY `.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub failed: u64,
    /// The first few failures, with the operation.
    pub errors: Vec<String>,
    /// Wall time of the loop, in seconds.
    pub seconds: f64,
    /// [`Role::EncryptUntilRefused`]: the error that ended the loop, as
    /// `Kind: message (key K, version V)`.
    #[serde(default)]
    pub refusal: Option<String>,
    /// [`Role::EncryptUntilRefused`]: the first envelope made (hex, AAD
    /// [`LIMIT_AAD`]), for the parent to decrypt after the limit.
    #[serde(default)]
    pub sample: Option<String>,
}

/// The keys every multi-process case works on.
pub const SIGN_KEY: &str = "mp-sign";
/// HMAC key with the `mac` usage.
pub const MAC_KEY: &str = "mp-mac";
/// HMAC key with the `derive` usage.
pub const DERIVE_KEY: &str = "mp-derive";
/// AES-256-GCM key (where the backend has AES-GCM).
pub const AEAD_KEY: &str = "mp-aead";

/// Grace of rotated versions: long enough that a use begun before a rotation
/// always finishes before a sweep may destroy its version.
pub const GRACE_SECS: i64 = 5;

/// Creates the stress keys. Returns the names created.
pub fn create_keys<B: Backend>(ks: &Keystore<B>) -> Vec<&'static str> {
    use keystore_api::KeySpec;
    let mut names = vec![SIGN_KEY, MAC_KEY, DERIVE_KEY];
    ks.create(&so(), SIGN_KEY, KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create the signing key");
    ks.create(
        &so(),
        MAC_KEY,
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC),
    )
    .expect("create the MAC key");
    ks.create(
        &so(),
        DERIVE_KEY,
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
    )
    .expect("create the derivation key");
    if aead_supported(ks) {
        ks.create(&so(), AEAD_KEY, KeySpec::new(Algorithm::Aes256Gcm))
            .expect("create the AEAD key");
        names.push(AEAD_KEY);
    }
    names
}

fn aead_supported<B: Backend>(ks: &Keystore<B>) -> bool {
    ks.backend()
        .capabilities()
        .supports(Algorithm::Aes256Gcm, keystore_api::Operation::Encrypt)
}

/// Runs `role` `count` times (or, for [`Role::Churn`], until killed) on the
/// store `F` opens from `spec`, and prints its summary. The worker's main.
pub fn run_worker<F: Fixture>(spec: &WorkerSpec, role: Role, count: u64) -> Summary {
    let start = Instant::now();
    let mut sum = Summary::default();
    let note = |sum: &mut Summary, what: &str, res: Result<(), String>| match res {
        Ok(()) => sum.ok += 1,
        Err(e) => {
            sum.failed += 1;
            if sum.errors.len() < 8 {
                sum.errors.push(format!("{what}: {e}"));
            }
        }
    };
    if role == Role::List {
        let stop = spec.params.get("stop_file").map(PathBuf::from);
        for _ in 0..count {
            if stop.as_ref().is_some_and(|p| p.exists()) {
                break;
            }
            let res = F::open_for_worker(spec, true).and_then(|ks| {
                let keys = ks.list().map_err(|e| e.to_string())?;
                if keys.iter().any(|k| k.name == SIGN_KEY) {
                    Ok(())
                } else {
                    Err(format!("{SIGN_KEY} missing from the listing"))
                }
            });
            note(&mut sum, "open and list", res);
        }
        sum.seconds = start.elapsed().as_secs_f64();
        return sum;
    }
    let ks = match F::open_for_worker(spec, false) {
        Ok(ks) => ks,
        Err(e) => {
            note(&mut sum, "open", Err(e));
            return sum;
        }
    };
    // Tells a parent that waits for it (the kill case) that the store is open.
    println!("READY");
    if role == Role::EncryptUntilRefused {
        return encrypt::until_refused(&ks, spec, count, start);
    }
    let aead = aead_supported(&ks);
    let stop = spec.params.get("stop_file").map(PathBuf::from);
    let mut i = 0u64;
    while i < count {
        if stop.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        i += 1;
        let msg = format!("message {i} from {}", std::process::id());
        match role {
            Role::Use => {
                note(&mut sum, "sign", use_sign(&ks, msg.as_bytes()));
                note(&mut sum, "mac", use_mac(&ks, msg.as_bytes()));
                note(
                    &mut sum,
                    "derive",
                    ks.derive_hkdf_sha256(DERIVE_KEY, msg.as_bytes(), b"info", 32)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                );
                if aead {
                    note(&mut sum, "encrypt/decrypt", use_aead(&ks, msg.as_bytes()));
                }
            }
            Role::SignLoad => {
                let res = ks
                    .sign(SIGN_KEY, msg.as_bytes(), SignatureFormat::Der)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                note(&mut sum, "sign", res);
            }
            Role::Rotate => {
                let grace = Grace::seconds(GRACE_SECS);
                let name = [SIGN_KEY, MAC_KEY, DERIVE_KEY, AEAD_KEY][(i % 4) as usize];
                if name != AEAD_KEY || aead {
                    let res = ks.rotate(&so(), name, grace).map(|_| ());
                    note(&mut sum, "rotate", res.map_err(|e| e.to_string()));
                }
                if i.is_multiple_of(3) {
                    let res = ks.sweep(&so()).map(|_| ());
                    note(&mut sum, "sweep", res.map_err(|e| e.to_string()));
                }
            }
            Role::Churn => {
                use keystore_api::KeySpec;
                let name = format!("churn-{}-{i}", std::process::id());
                let res = ks
                    .create(&so(), &name, KeySpec::new(Algorithm::HmacSha256))
                    .map(|_| ());
                note(&mut sum, "create", res.map_err(|e| e.to_string()));
                let res = ks
                    .rotate(&so(), SIGN_KEY, Grace::seconds(GRACE_SECS))
                    .map(|_| ());
                note(&mut sum, "rotate", res.map_err(|e| e.to_string()));
                let res = ks.destroy(&so(), &name);
                note(&mut sum, "destroy", res.map_err(|e| e.to_string()));
                let res = ks.sweep(&so()).map(|_| ());
                note(&mut sum, "sweep", res.map_err(|e| e.to_string()));
            }
            Role::List | Role::EncryptUntilRefused => unreachable!("handled above"),
        }
    }
    sum.seconds = start.elapsed().as_secs_f64();
    sum
}

fn use_sign<B: Backend>(ks: &Keystore<B>, msg: &[u8]) -> Result<(), String> {
    let sig = ks
        .sign(SIGN_KEY, msg, SignatureFormat::Der)
        .map_err(|e| e.to_string())?;
    let v = ks
        .verify(SIGN_KEY, msg, &sig.bytes, Some(sig.version))
        .map_err(|e| format!("verify: {e}"))?;
    if v != sig.version {
        return Err(format!("made by v{} but verified by v{v}", sig.version));
    }
    Ok(())
}

fn use_mac<B: Backend>(ks: &Keystore<B>, msg: &[u8]) -> Result<(), String> {
    let tag = ks.mac(MAC_KEY, msg).map_err(|e| e.to_string())?;
    ks.verify_mac(MAC_KEY, msg, &tag)
        .map_err(|e| format!("verify: {e}"))
}

fn use_aead<B: Backend>(ks: &Keystore<B>, msg: &[u8]) -> Result<(), String> {
    let ct = ks
        .encrypt(AEAD_KEY, msg, b"aad")
        .map_err(|e| e.to_string())?;
    let pt = ks
        .decrypt(AEAD_KEY, &ct, b"aad")
        .map_err(|e| format!("decrypt: {e}"))?;
    if pt.expose() != msg {
        return Err("decrypt returned other bytes".into());
    }
    Ok(())
}

/// The worker binary, built with this package.
pub fn worker_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("KEYSTORE_WORKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test> → target/<profile>/conformance-worker
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let bin = dir.join("conformance-worker");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build -p conformance-tests --bin conformance-worker`",
            bin.display()
        ))
    }
}

/// A running worker.
pub struct Worker {
    child: Child,
    role: Role,
    /// Lines of the worker's stdout, collected by a reader thread.
    lines: std::sync::mpsc::Receiver<String>,
    /// The highest `ENC n` line read so far.
    encrypted: u64,
}

impl Worker {
    /// Starts `role` for `count` iterations on the store `spec` describes.
    pub fn start(spec: &WorkerSpec, role: Role, count: u64) -> Result<Worker, String> {
        let bin = worker_binary()?;
        let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg(&spec.backend)
            .arg(role.id())
            .arg(count.to_string())
            .env(SPEC_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {} worker: {e}", role.id()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            child,
            role,
            lines,
            encrypted: 0,
        })
    }

    /// Waits (at most `limit`) until the worker has opened the store.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == "READY" => return Ok(()),
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the {} worker was not ready within {limit:?}",
                        self.role.id()
                    ))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "the {} worker exited before it was ready",
                        self.role.id()
                    ))
                }
            }
        }
    }

    /// Notes an `ENC n` line.
    fn note_progress(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("ENC ").and_then(|n| n.parse().ok()) {
            self.encrypted = self.encrypted.max(n);
        }
    }

    /// Waits (at most `limit`) until the worker has reported at least `n`
    /// encryptions ([`Role::EncryptUntilRefused`]).
    pub fn wait_encrypted(&mut self, n: u64, limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        while self.encrypted < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("SUMMARY ") => {
                    return Err(format!(
                        "the {} worker finished after {} encryptions",
                        self.role.id(),
                        self.encrypted
                    ))
                }
                Ok(l) => self.note_progress(&l),
                Err(_) => {
                    return Err(format!(
                        "the {} worker reported {} of {n} encryptions within {limit:?}",
                        self.role.id(),
                        self.encrypted
                    ))
                }
            }
        }
        Ok(self.encrypted)
    }

    /// Kills the worker with SIGKILL, reaps it, and reads what it printed
    /// before it died: the encryptions it reported (`ENC n`). A kill may
    /// fall between an encryption and its report, so it may have made one
    /// more.
    pub fn kill_and_count(mut self) -> u64 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread drains the pipe, then the channel closes.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.note_progress(&l),
                Err(_) => break,
            }
        }
        self.encrypted
    }

    /// Kills the worker with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for the worker to finish; its summary.
    pub fn finish(mut self, limit: Duration) -> Result<Summary, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(json) = l.strip_prefix("SUMMARY ") {
                        let _ = self.child.wait();
                        return serde_json::from_str(json)
                            .map_err(|e| format!("bad summary '{json}': {e}"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("the {} worker ran past {limit:?}", self.role.id()));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "the {} worker printed no summary ({status})",
                        self.role.id()
                    ));
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A small pseudo-random generator for kill delays (no crate needed).
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the OS.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Jitter((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

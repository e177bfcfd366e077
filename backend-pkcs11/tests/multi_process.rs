//! Many processes on one SoftHSM2 token, as `keyctl` runs beside a daemon.
//!
//! The test process makes three stable keys (ECDSA P-256, HMAC-SHA256 with
//! a known secret, AES-256-GCM), then re-runs this test binary as real
//! child processes, each with a role:
//!
//! - `churn`: like `keyctl key rotate` run again and again, opens the token
//!   (a fresh `C_Initialize` and login each time), creates a key (EC, HMAC
//!   or AES in turn), uses it and destroys it, for a fixed count;
//! - `lister`: like `keyctl key list` in a loop, opens the token afresh,
//!   lists the store and checks each stable key with `contains`;
//! - `user`: like a daemon, keeps one backend open and signs, MACs,
//!   encrypts/decrypts and reads the public key with the stable keys,
//!   checking every result independently, lists now and then, and now and
//!   then opens a second backend beside the first and lists with it.
//!
//! Pass: no failed open, listing or use, every stable key in every listing,
//! the churn completed without error, and the token holds only the stable
//! keys afterwards. Every loop is bounded by a count and a deadline.

use backend_pkcs11::testing::softhsm_or_skip;
use backend_pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config, TokenSelector};
use keystore_api::{Algorithm, KeyHandle, SecretBytes};
use keystore_backend::Aead;
use keystore_backend::BackendKey;
use keystore_backend::KeyManagement;
use keystore_backend::Mac;
use keystore_backend::NewKey;
use keystore_backend::Signing;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "KEYSTORE_MP_ROLE";
const MODULE: &str = "KEYSTORE_MP_MODULE";
const LABEL: &str = "KEYSTORE_MP_LABEL";
const PIN: &str = "KEYSTORE_MP_PIN";
const STOP: &str = "KEYSTORE_MP_STOP";
const EC: &str = "KEYSTORE_MP_EC";
const EC_SPKI: &str = "KEYSTORE_MP_EC_SPKI";
const MAC: &str = "KEYSTORE_MP_MAC";
const MAC_SECRET: &str = "KEYSTORE_MP_MAC_SECRET";
const AES: &str = "KEYSTORE_MP_AES";

/// Create-use-destroy cycles of the churning process.
const CHURN_CYCLES: usize = 90;
/// Upper bounds of the other loops (they stop when the churn is done).
const MAX_LISTINGS: usize = 2_000;
const MAX_USES: usize = 20_000;
/// No child runs longer than this.
const CHILD_DEADLINE: Duration = Duration::from_secs(150);
/// The parent kills what still runs after this.
const PARENT_DEADLINE: Duration = Duration::from_secs(240);

/// Lines a child reports start with this.
const TAG: &str = "MP|";

/// The HMAC secret of the stable MAC key (test data).
const MAC_KEY: [u8; 32] = [0x3c; 32];

#[test]
fn stable_keys_survive_other_processes_creating_and_destroying_keys() {
    let Some(hsm) = softhsm_or_skip() else {
        return;
    };
    let token = hsm.new_token("mp").expect("token");
    let b = token.open().expect("open");
    let ec = b
        .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, "stable-ec"))
        .expect("ec");
    let ec_spki = ec.public_key.clone().expect("spki");
    let mac = b
        .import(
            &NewKey::new(Algorithm::HmacSha256, "stable-mac"),
            &SecretBytes::from_slice(&MAC_KEY),
        )
        .expect("mac");
    let aes = b
        .generate(&NewKey::new(Algorithm::Aes256Gcm, "stable-aes"))
        .expect("aes");
    let stable = [ec.handle.clone(), mac.clone(), aes.handle.clone()];

    let dir = tempfile::tempdir().expect("tempdir");
    let stop = dir.path().join("stop");
    let spawn = |role: &str| -> Child {
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "multi_process_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(MODULE, &token.module)
            .env(LABEL, &token.label)
            .env(PIN, &token.user_pin)
            .env(STOP, &stop)
            .env(EC, hex::encode(ec.handle.as_bytes()))
            .env(EC_SPKI, hex::encode(ec_spki.spki_der()))
            .env(MAC, hex::encode(mac.as_bytes()))
            .env(MAC_SECRET, hex::encode(MAC_KEY))
            .env(AES, hex::encode(aes.handle.as_bytes()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a child process")
    };
    let started = Instant::now();
    let mut churn = spawn("churn");
    let mut others = vec![spawn("lister"), spawn("user")];

    let churn_out = collect(&mut churn, started);
    std::fs::write(&stop, b"stop").expect("stop file");
    let mut reports = vec![churn_out];
    for child in &mut others {
        reports.push(collect(child, started));
    }

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for r in &reports {
        for line in &r.lines {
            let fields: Vec<&str> = line.split('|').collect();
            match fields.first() {
                Some(&"fail") => failures.push(line.clone()),
                Some(&"done") => summary.push(line.clone()),
                _ => {}
            }
        }
        if !r.ok {
            failures.push(format!("child {}: {}", r.role, r.status));
        }
    }
    let count = |role: &str, key: &str| -> usize {
        summary
            .iter()
            .filter(|l| l.starts_with(&format!("done|{role}|")))
            .flat_map(|l| l.split('|'))
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    eprintln!("multi-process summary: {summary:?}");
    assert!(
        failures.is_empty(),
        "{} failures (first 20): {:#?}\nsummary: {summary:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert_eq!(count("churn", "cycles"), CHURN_CYCLES, "{summary:?}");
    assert!(count("lister", "listings") >= 10, "{summary:?}");
    assert!(count("user", "rounds") >= 10, "{summary:?}");

    // Nothing of the churn is left; the stable keys still work.
    let mut listed = b.list().expect("list");
    listed.sort();
    let mut want = stable.to_vec();
    want.sort();
    assert_eq!(listed, want);
    b.sign(
        &BackendKey::new(ec.handle.clone(), Algorithm::EcdsaP256Sha256),
        b"after",
    )
    .expect("sign after");
    b.hmac_sha256(
        &BackendKey::new(mac.clone(), Algorithm::HmacSha256),
        b"after",
    )
    .expect("mac after");
}

/// What a child printed and how it ended.
struct Report {
    role: String,
    lines: Vec<String>,
    ok: bool,
    status: String,
}

/// Reads a child's report lines until it exits; kills it (it is ours) if
/// it outlives [`PARENT_DEADLINE`].
fn collect(child: &mut Child, started: Instant) -> Report {
    let mut lines = Vec::new();
    let mut role = String::from("?");
    if let Some(out) = child.stdout.take() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let left = PARENT_DEADLINE.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // libtest may print "test … ... " before the first line.
                    if let Some(rest) = line.find(TAG).map(|at| &line[at + TAG.len()..]) {
                        if let Some(r) = rest.split('|').nth(1) {
                            role = r.to_string();
                        }
                        lines.push(rest.to_string());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    match child.wait() {
        Ok(st) => Report {
            role,
            lines,
            ok: st.success(),
            status: st.to_string(),
        },
        Err(e) => Report {
            role,
            lines,
            ok: false,
            status: format!("wait failed: {e}"),
        },
    }
}

// ----- the child side ------------------------------------------------------

/// The entry point of a child process (does nothing unless started by the
/// test above with a role).
#[test]
#[ignore = "a child process of the multi-process test, started by it"]
fn multi_process_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let handle = |k: &str| KeyHandle::new(hex::decode(env(k)).expect("hex handle"));
    let ctx = Ctx {
        config: move || {
            Pkcs11Config::new(
                TokenSelector::Label(std::env::var(LABEL).unwrap_or_default()),
                PinSource::Env(PIN.into()),
            )
            .with_module(std::env::var(MODULE).unwrap_or_default())
        },
        stop: PathBuf::from(env(STOP)),
        ec: handle(EC),
        ec_spki: hex::decode(env(EC_SPKI)).expect("hex spki"),
        mac: handle(MAC),
        mac_secret: hex::decode(env(MAC_SECRET)).expect("hex secret"),
        aes: handle(AES),
        started: Instant::now(),
    };
    match role.as_str() {
        "churn" => churn(&ctx),
        "lister" => lister(&ctx),
        "user" => user(&ctx),
        other => panic!("unknown role {other}"),
    }
}

struct Ctx<F: Fn() -> Pkcs11Config> {
    config: F,
    stop: PathBuf,
    ec: KeyHandle,
    ec_spki: Vec<u8>,
    mac: KeyHandle,
    mac_secret: Vec<u8>,
    aes: KeyHandle,
    started: Instant,
}

impl<F: Fn() -> Pkcs11Config> Ctx<F> {
    fn open(&self) -> keystore_api::Result<Pkcs11Backend> {
        Pkcs11Backend::open(&(self.config)())
    }

    fn stable(&self) -> [&KeyHandle; 3] {
        [&self.ec, &self.mac, &self.aes]
    }

    /// True once the parent asks to stop, or past the child's deadline.
    fn should_stop(&self) -> bool {
        stop_requested(&self.stop) || self.started.elapsed() > CHILD_DEADLINE
    }
}

fn stop_requested(p: &Path) -> bool {
    p.exists()
}

/// One report line: `MP|kind|role|fields…`.
fn report(kind: &str, role: &str, fields: &str) {
    println!("{TAG}{kind}|{role}|{fields}");
}

fn fail(role: &str, what: std::fmt::Arguments<'_>) {
    report("fail", role, &what.to_string().replace('\n', " "));
}

/// Checks that `listed` holds every stable key.
fn check_listing<F: Fn() -> Pkcs11Config>(
    ctx: &Ctx<F>,
    role: &str,
    i: usize,
    listed: &[KeyHandle],
) -> bool {
    let mut ok = true;
    for h in ctx.stable() {
        if !listed.contains(h) {
            fail(role, format_args!("listing {i}: stable key {h:?} missing"));
            ok = false;
        }
    }
    ok
}

fn churn<F: Fn() -> Pkcs11Config>(ctx: &Ctx<F>) {
    let algs = [
        Algorithm::EcdsaP256Sha256,
        Algorithm::HmacSha256,
        Algorithm::Aes256Gcm,
    ];
    let mut cycles = 0;
    let mut slowest_open = Duration::ZERO;
    for i in 0..CHURN_CYCLES {
        if ctx.started.elapsed() > CHILD_DEADLINE {
            break;
        }
        // A fresh process-like open each time: C_Initialize and a login,
        // which rewrites the token's token.object.
        let t = Instant::now();
        let opened = ctx.open();
        slowest_open = slowest_open.max(t.elapsed());
        let b = match opened {
            Ok(b) => b,
            Err(e) => {
                fail("churn", format_args!("open {i}: {e}"));
                continue;
            }
        };
        let alg = algs[i % algs.len()];
        let r = b.generate(&NewKey::new(alg, "churn")).and_then(|k| {
            let used = match alg {
                Algorithm::EcdsaP256Sha256 => b
                    .sign(&BackendKey::new(k.handle.clone(), alg), b"m")
                    .map(|_| ()),
                Algorithm::HmacSha256 => b
                    .hmac_sha256(
                        &BackendKey::new(k.handle.clone(), Algorithm::HmacSha256),
                        b"m",
                    )
                    .map(|_| ()),
                _ => b
                    .encrypt(
                        &BackendKey::new(k.handle.clone(), Algorithm::Aes256Gcm),
                        b"aad",
                        b"m",
                    )
                    .map(|_| ()),
            };
            used.and_then(|()| b.destroy(&k.handle))
        });
        match r {
            Ok(()) => cycles += 1,
            Err(e) => fail("churn", format_args!("cycle {i} ({alg}): {e}")),
        }
        if let Err(e) = b.close() {
            fail("churn", format_args!("close {i}: {e}"));
        }
    }
    report(
        "done",
        "churn",
        &format!(
            "cycles={cycles}|slowest_open_ms={}",
            slowest_open.as_millis()
        ),
    );
}

fn lister<F: Fn() -> Pkcs11Config>(ctx: &Ctx<F>) {
    let mut listings = 0;
    let (mut slowest_open, mut slowest_list) = (Duration::ZERO, Duration::ZERO);
    for i in 0..MAX_LISTINGS {
        if ctx.should_stop() {
            break;
        }
        // Like `keyctl key list`: a fresh open (and C_Initialize) each time.
        let t = Instant::now();
        let opened = ctx.open();
        slowest_open = slowest_open.max(t.elapsed());
        let b = match opened {
            Ok(b) => b,
            Err(e) => {
                fail("lister", format_args!("open {i}: {e}"));
                continue;
            }
        };
        let t = Instant::now();
        let listed = b.list();
        slowest_list = slowest_list.max(t.elapsed());
        match listed {
            Ok(listed) => {
                if check_listing(ctx, "lister", i, &listed) {
                    listings += 1;
                }
            }
            Err(e) => fail("lister", format_args!("listing {i}: {e}")),
        }
        for h in ctx.stable() {
            match b.contains(h) {
                Ok(true) => {}
                Ok(false) => fail(
                    "lister",
                    format_args!("contains {i}: {h:?} reported absent"),
                ),
                Err(e) => fail("lister", format_args!("contains {i}: {e}")),
            }
        }
        drop(b);
    }
    report(
        "done",
        "lister",
        &format!(
            "listings={listings}|slowest_open_ms={}|slowest_list_ms={}",
            slowest_open.as_millis(),
            slowest_list.as_millis()
        ),
    );
}

fn user<F: Fn() -> Pkcs11Config>(ctx: &Ctx<F>) {
    use hmac::Mac;
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&ctx.ec_spki).expect("p256 key");
    let b = match ctx.open() {
        Ok(b) => b,
        Err(e) => {
            fail("user", format_args!("open: {e}"));
            report("done", "user", "rounds=0");
            return;
        }
    };
    let mut rounds = 0;
    for i in 0..MAX_USES {
        if ctx.should_stop() {
            break;
        }
        let mut ok = true;
        let msg = format!("message {i}");
        match b.sign(
            &BackendKey::new(ctx.ec.clone(), Algorithm::EcdsaP256Sha256),
            msg.as_bytes(),
        ) {
            Ok(sig) => {
                let good = p256::ecdsa::Signature::from_slice(&sig)
                    .is_ok_and(|s| vk.verify(msg.as_bytes(), &s).is_ok());
                if !good {
                    fail("user", format_args!("signature {i} does not verify"));
                    ok = false;
                }
            }
            Err(e) => {
                fail("user", format_args!("sign {i}: {e}"));
                ok = false;
            }
        }
        match b.hmac_sha256(
            &BackendKey::new(ctx.mac.clone(), Algorithm::HmacSha256),
            msg.as_bytes(),
        ) {
            Ok(tag) => {
                let mut r =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(&ctx.mac_secret).expect("hmac key");
                r.update(msg.as_bytes());
                if r.finalize().into_bytes()[..] != tag[..] {
                    fail("user", format_args!("HMAC {i} differs from the reference"));
                    ok = false;
                }
            }
            Err(e) => {
                fail("user", format_args!("hmac {i}: {e}"));
                ok = false;
            }
        }
        match b
            .encrypt(
                &BackendKey::new(ctx.aes.clone(), Algorithm::Aes256Gcm),
                b"aad",
                msg.as_bytes(),
            )
            .and_then(|sealed| {
                b.decrypt(
                    &BackendKey::new(ctx.aes.clone(), Algorithm::Aes256Gcm),
                    b"aad",
                    &sealed.nonce,
                    &sealed.ciphertext,
                )
            }) {
            Ok(pt) if pt.expose() == msg.as_bytes() => {}
            Ok(_) => {
                fail(
                    "user",
                    format_args!("AES-GCM round trip {i} changed the data"),
                );
                ok = false;
            }
            Err(e) => {
                fail("user", format_args!("aes {i}: {e}"));
                ok = false;
            }
        }
        if i % 10 == 0 {
            match b.public_key(&BackendKey::new(ctx.ec.clone(), Algorithm::EcdsaP256Sha256)) {
                Ok(pk) if pk.spki_der() == ctx.ec_spki.as_slice() => {}
                Ok(_) => {
                    fail("user", format_args!("public key {i} changed"));
                    ok = false;
                }
                Err(e) => {
                    fail("user", format_args!("public key {i}: {e}"));
                    ok = false;
                }
            }
            match b.list() {
                Ok(listed) => ok &= check_listing(ctx, "user", i, &listed),
                Err(e) => {
                    fail("user", format_args!("listing {i}: {e}"));
                    ok = false;
                }
            }
        }
        if i % 5 == 0 {
            // A second store opened beside the first in the same process
            // (the library stays initialised, so nothing can re-read the
            // token from scratch).
            match ctx.open().and_then(|second| second.list()) {
                Ok(listed) => ok &= check_listing(ctx, "user", i, &listed),
                Err(e) => {
                    fail("user", format_args!("second backend {i}: {e}"));
                    ok = false;
                }
            }
        }
        if ok {
            rounds += 1;
        }
    }
    report("done", "user", &format!("rounds={rounds}"));
}

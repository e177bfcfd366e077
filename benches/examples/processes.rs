//! Sign throughput of one store shared by 1 and by 4 processes (soft and
//! pkcs11), in paired rounds: each round runs 1 process, then 4, each for the
//! same wall time, and reports the 4-process total over the 1-process total.
//! The raw baseline of the same run is aws-lc-rs signing in 1 and 4
//! processes with no keystore at all (the machine's own ceiling).
//!
//! `cargo run --release -p benches --example processes -- [ROUNDS] [SECONDS]`
//! (defaults 5 rounds of 2 s). Each child is this binary re-run with
//! `child BACKEND SPEC SECONDS`, printing its count of signatures.

use backend_pkcs11::testing::{softhsm, TestToken};
use backend_pkcs11::Pkcs11Backend;
use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, OpenOptions, Role, SignatureFormat};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "bench-sign";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1..]);
        return;
    }
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let secs: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let soft = setup_soft(dir.path());
    let token = softhsm()
        .and_then(|h| h.new_token("procbench"))
        .unwrap_or_else(|e| panic!("SoftHSM2 is needed: {e}"));
    let pkcs11 = setup_pkcs11(dir.path(), &token);
    println!("| path | 1 process (sig/s) | 4 processes (sig/s) | 4 ÷ 1 (median of {rounds} paired rounds) |");
    println!("|---|---:|---:|---:|");
    for (name, spec) in [
        ("raw aws-lc-rs", "raw".to_string()),
        ("soft", soft),
        ("pkcs11", pkcs11),
    ] {
        let mut ones = Vec::new();
        let mut fours = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let one = run(&spec, 1, secs, &token);
            let four = run(&spec, 4, secs, &token);
            ones.push(one);
            fours.push(four);
            ratios.push(four / one);
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            median(&mut ones),
            median(&mut fours),
            median(&mut ratios)
        );
    }
    println!(
        "\n{} cores; each child opens the store (key check off at open) and signs for {secs} s.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Total signatures per second of `n` children signing for `secs`.
fn run(spec: &str, n: usize, secs: f64, token: &TestToken) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(&exe)
                .args(["child", spec, &secs.to_string()])
                .env("BENCH_PKCS11_PIN", &token.user_pin)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut total = 0.0;
    for c in children {
        let out = c.wait_with_output().expect("child");
        assert!(out.status.success(), "a child failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let rate: f64 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("child said {text}"));
        total += rate;
    }
    total
}

fn so() -> Actor {
    Actor::new("bench", Role::SecurityOfficer).expect("actor")
}

fn setup_soft(dir: &Path) -> String {
    let key_file = dir.join("kek.key");
    create_key_file(&key_file).expect("key file");
    let store = SoftStore::create(
        &dir.join("soft"),
        &Unlock::KeyFile(key_file.clone()),
        Kdf::KeyFile,
    )
    .expect("soft store");
    let ks = Keystore::open(store, &dir.join("soft.sqlite")).expect("keystore");
    ks.create(&so(), KEY, KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
    format!("soft:{}", dir.display())
}

fn setup_pkcs11(dir: &Path, token: &TestToken) -> String {
    let ks =
        Keystore::open(token.open().expect("token"), &dir.join("p11.sqlite")).expect("keystore");
    ks.create(&so(), KEY, KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
    format!(
        "pkcs11:{}:{}:{}",
        dir.display(),
        token.label,
        token.module.display()
    )
}

/// Opens the store `spec` names and signs for `secs`; prints signatures/s.
fn child(args: &[String]) {
    let (spec, secs) = (&args[0], args[1].parse::<f64>().expect("seconds"));
    let deadline = Duration::from_secs_f64(secs);
    let msg = b"a firmware image digest to sign, 64 bytes long, give or take...";
    let mut n = 0u64;
    let start;
    let opts = OpenOptions::new().check_material(false);
    let clock: Arc<dyn keystore_api::Clock> = Arc::new(keystore_api::SystemClock);
    if spec == "raw" {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .expect("key");
        let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            doc.as_ref(),
        )
        .expect("key pair");
        start = Instant::now();
        while start.elapsed() < deadline {
            kp.sign(&rng, msg).expect("sign");
            n += 1;
        }
    } else if let Some(dir) = spec.strip_prefix("soft:") {
        let dir = PathBuf::from(dir);
        let store = SoftStore::open(&dir.join("soft"), &Unlock::KeyFile(dir.join("kek.key")))
            .expect("open soft");
        let ks = Keystore::open_with(store, &dir.join("soft.sqlite"), clock, opts).expect("open");
        start = Instant::now();
        while start.elapsed() < deadline {
            ks.sign(KEY, msg, SignatureFormat::Der).expect("sign");
            n += 1;
        }
    } else if let Some(rest) = spec.strip_prefix("pkcs11:") {
        let mut parts = rest.splitn(3, ':');
        let (dir, label, module) = (
            PathBuf::from(parts.next().expect("dir")),
            parts.next().expect("label").to_string(),
            parts.next().expect("module").to_string(),
        );
        let pin = std::env::var("BENCH_PKCS11_PIN").expect("pin");
        let config = backend_pkcs11::Pkcs11Config::new(
            backend_pkcs11::TokenSelector::Label(label),
            backend_pkcs11::PinSource::Value(keystore_api::SecretBytes::from_slice(pin.as_bytes())),
        )
        .with_module(module);
        let backend = Pkcs11Backend::open(&config).expect("open token");
        let ks = Keystore::open_with(backend, &dir.join("p11.sqlite"), clock, opts).expect("open");
        start = Instant::now();
        while start.elapsed() < deadline {
            ks.sign(KEY, msg, SignatureFormat::Der).expect("sign");
            n += 1;
        }
    } else {
        panic!("unknown spec {spec}");
    }
    println!("{}", n as f64 / start.elapsed().as_secs_f64());
}

//! Whole-process start cost (not a timed test): `keyctl sign` against
//! `openssl dgst -sha256 -sign`, and a store of 10,000 keys against one of
//! 10, each timed as a whole process from spawn to exit, paired.
//!
//! ```text
//! cargo build --release -p keyctl
//! cargo run --release -p benches --example process_start -- [ROUNDS [RUNS [BIG]]]
//! ```
//!
//! Defaults: 41 rounds of 20 runs of each command, a big store of 10,000
//! keys. The keyctl binary is `target/release/keyctl` beside this example
//! (`KEYCTL_BIN` overrides). `scripts/bench` runs it after the criterion
//! benches.
//!
//! Set-up, through the library (creating 10,000 keys through 10,000 keyctl
//! processes would take far longer than the measurement): two soft stores
//! unlocked by a key file, each with the ECDSA P-256 key `fw`, plus HMAC
//! filler keys to 10 and to BIG keys; the public key of `fw` exported with
//! `keyctl pubkey`; an OpenSSL P-256 `key.pem`; a 4 KiB message.
//!
//! Every timed process must exit 0, and before and after the timed rounds a
//! signature of each command is checked with `openssl dgst -verify`, so a
//! failing command cannot pass for a fast one.
//!
//! Each round runs RUNS processes of each of the three commands, in an order
//! that rotates through all six permutations, so that drift in machine load
//! hits all three alike. Reported: the median over rounds of the mean wall
//! time per process, the children's CPU per process (`cutime + cstime`,
//! 10 ms ticks summed over a round), and the median of the per-round
//! ratios keyctl ÷ openssl (target ≤ 2) and big ÷ small store (target ≤ 1.2).

use benches::{bench_dir, filler_keys, officer, soft_keystore};
use keystore_api::{Algorithm, KeySpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The signing key in both stores.
const KEY: &str = "fw";

/// A command to time, with a name for the report.
struct Cmd {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Cmd {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Explicit flags only: no KEYCTL_* setting of the caller's applies.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KEYCTL_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs once; panics with its stderr unless it exits 0.
    fn run(&self) {
        let out = self.command().output().expect("spawn");
        assert!(
            out.status.success(),
            "{} failed ({}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut num = |default: usize| -> usize {
        args.next()
            .map(|a| a.parse().expect("ROUNDS, RUNS and BIG are numbers"))
            .unwrap_or(default)
    };
    let (rounds, runs, big) = (num(41), num(20), num(10_000));
    assert!(
        rounds >= 10 && runs >= 1 && big >= 10,
        "need ROUNDS ≥ 10, RUNS ≥ 1, BIG ≥ 10"
    );

    let keyctl = keyctl_bin();
    let dir = bench_dir();
    let d = dir.path();
    let msg = d.join("firmware.bin");
    std::fs::write(&msg, firmware()).expect("write message");

    let t = Instant::now();
    let small = make_store(&d.join("small"), 10);
    let small_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let large = make_store(&d.join("big"), big);
    let big_s = t.elapsed().as_secs_f64();
    println!(
        "set-up: store of 10 keys in {small_s:.1} s, of {big} keys in {big_s:.1} s (library, {:.2} ms/key)",
        big_s * 1e3 / big as f64
    );

    let openssl_key = d.join("key.pem");
    let openssl_pub = d.join("openssl-pub.pem");
    sh(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&openssl_key));
    sh(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&openssl_key)
        .arg("-out")
        .arg(&openssl_pub));

    let keyctl_sign = |name: &'static str, store: &Path| {
        let pubkey = store.join("fw-pub.pem");
        sh(Command::new(&keyctl)
            .arg("--store")
            .arg(store)
            .arg("--key-file")
            .arg(store.join("kek"))
            .args(["pubkey", KEY, "--out"])
            .arg(&pubkey));
        let sig = store.join("fw.sig");
        let cmd = Cmd {
            name,
            program: keyctl.clone(),
            args: vec![
                "--store".into(),
                path_arg(store),
                "--key-file".into(),
                path_arg(&store.join("kek")),
                "sign".into(),
                KEY.into(),
                "--in".into(),
                path_arg(&msg),
                "--out".into(),
                path_arg(&sig),
            ],
        };
        (cmd, pubkey, sig)
    };
    let openssl_sig = d.join("openssl.sig");
    let cmds = [
        (
            Cmd {
                name: "openssl",
                program: "openssl".into(),
                args: vec![
                    "dgst".into(),
                    "-sha256".into(),
                    "-sign".into(),
                    path_arg(&openssl_key),
                    "-out".into(),
                    path_arg(&openssl_sig),
                    path_arg(&msg),
                ],
            },
            openssl_pub,
            openssl_sig.clone(),
        ),
        keyctl_sign("keyctl-10", &small),
        keyctl_sign("keyctl-big", &large),
    ];
    let check = |when: &str| {
        for (cmd, pubkey, sig) in &cmds {
            let _ = std::fs::remove_file(sig);
            cmd.run();
            verify(pubkey, sig, &msg);
            println!(
                "{when}: {} signature verified by `openssl dgst -verify`",
                cmd.name
            );
        }
    };
    check("before");
    println!("keyctl: {}", keyctl.display());
    match jitter_symbols(&keyctl) {
        Some(true) => println!(
            "WARNING: keyctl holds aws-lc CPU-jitter entropy (jent_*) symbols; \
             was it built without AWS_LC_SYS_NO_JITTER_ENTROPY=1 (.cargo/config.toml)?"
        ),
        Some(false) => println!("keyctl holds no jent_* symbols (aws-lc seeds from getrandom)"),
        None => {}
    }

    // [command][round]: mean wall ms per process, children's CPU ms per process.
    let mut wall = vec![Vec::with_capacity(rounds); cmds.len()];
    let mut cpu = vec![Vec::with_capacity(rounds); cmds.len()];
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [0, 2, 1],
        [2, 1, 0],
        [1, 0, 2],
    ];
    for round in 0..rounds {
        for &i in &ORDERS[round % ORDERS.len()] {
            let cmd = &cmds[i].0;
            let c0 = children_cpu_ms();
            let t = Instant::now();
            for _ in 0..runs {
                let st = cmd.command().stderr(Stdio::null()).status().expect("spawn");
                assert!(st.success(), "{} failed in round {round}: {st}", cmd.name);
            }
            wall[i].push(t.elapsed().as_secs_f64() * 1e3 / runs as f64);
            cpu[i].push((children_cpu_ms() - c0) / runs as f64);
        }
    }
    check("after");

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let quartiles = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() * 3 / 4])
    };
    println!(
        "\n{rounds} rounds × {runs} processes of each command, whole-process wall time (spawn to exit):"
    );
    for (i, (cmd, _, _)) in cmds.iter().enumerate() {
        let (first, last) = (mean(&wall[i][..5]), mean(&wall[i][rounds - 5..]));
        println!(
            "  {:<11} median {:>7.2} ms/process, CPU {:>6.2} ms/process   (drift: {first:.2} ms in the first 5 rounds, {last:.2} in the last 5)",
            cmd.name,
            median(&wall[i]),
            median(&cpu[i]),
        );
    }
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        wall[a].iter().zip(&wall[b]).map(|(x, y)| x / y).collect()
    };
    for (what, a, b, target) in [
        ("keyctl-10 ÷ openssl", 1, 0, 2.0),
        (&*format!("keyctl-big ({big} keys) ÷ keyctl-10"), 2, 1, 1.2),
    ] {
        let r = ratio(a, b);
        let (lo, hi) = quartiles(&r);
        let m = median(&r);
        println!(
            "  {what}: median {m:.3} (interquartile {lo:.3}..{hi:.3}); target ≤ {target}: {}",
            if m <= target { "met" } else { "NOT met" }
        );
    }
}

/// The keyctl release binary: `KEYCTL_BIN`, else `keyctl` in the directory
/// above this example's (`target/release/`).
fn keyctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("keyctl"))
        .expect("target directory");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --release -p keyctl` first, or set KEYCTL_BIN",
        p.display()
    );
    p
}

/// A soft store in `dir` unlocked by `dir/kek`, with the ECDSA P-256 key
/// `fw` and HMAC filler keys up to `keys` keys in all.
fn make_store(dir: &Path, keys: usize) -> PathBuf {
    std::fs::create_dir_all(dir).expect("store directory");
    let ks = soft_keystore(dir);
    ks.create(&officer(), KEY, KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("fw");
    filler_keys(&ks, keys - 1);
    assert_eq!(ks.list().expect("list").len(), keys);
    dir.to_path_buf()
}

/// 4 KiB of deterministic "firmware".
fn firmware() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

/// Runs a set-up command; panics with its output unless it exits 0.
fn sh(c: &mut Command) {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl dgst -sha256 -verify PUB -signature SIG MSG` must say "Verified OK".
fn verify(pubkey: &Path, sig: &Path, msg: &Path) {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(pubkey)
        .arg("-signature")
        .arg(sig)
        .arg(msg)
        .output()
        .expect("spawn openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Verified OK"),
        "openssl dgst -verify of {} failed: {text}{}",
        sig.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the binary's symbol table names aws-lc's jitter entropy
/// collector (`None` when it cannot be read).
fn jitter_symbols(bin: &Path) -> Option<bool> {
    let bytes = std::fs::read(bin).ok()?;
    let needle = b"jent_entropy_collector_alloc";
    Some(bytes.windows(needle.len()).any(|w| w == needle))
}

/// CPU time (user + system) of this process's waited-for children so far,
/// in ms (`/proc/self/stat` fields 16 and 17, clock ticks of 10 ms).
fn children_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name, field 3 (state) is index 0: cutime is field
    // 16, index 13; cstime field 17, index 14.
    let ticks: f64 = [13, 14]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks * 10.0
}

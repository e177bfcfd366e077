//! Soft ECDSA P-256 sign through `keystored` against the same store in
//! process, paired in one run: in-process `Keystore::sign` (the baseline),
//! the daemon from 1 client (one `Client`, sequential calls) and the daemon
//! from 4 client processes at once. Reports calls/s, per-call latency p50
//! and p99, the CPU time per call of the callers and of the daemon, and the
//! ratios daemon-1-client ÷ in-process (target ≥ 0.5) and 4 clients ÷
//! 1 client (target ≥ 1.5).
//!
//! ```text
//! cargo build --release -p keystored
//! cargo run --release -p benches --example daemon -- [ROUNDS] [SECONDS] [CLIENTS]
//! ```
//!
//! Defaults: 3 rounds of 3 s per side and 4 clients (about 30 s in all);
//! without arguments, `DAEMON_BENCH_ROUNDS`, `DAEMON_BENCH_SECS` and
//! `DAEMON_BENCH_CLIENTS` set them. The rounds alternate the order of the
//! sides (in-process, 1 client, N clients; then N, 1, in-process; ...) so
//! that the machine's noise falls on every side; each figure is the median
//! of the rounds, each ratio the median of the per-round ratios.
//!
//! The daemon is a real `keystored` (`target/release/keystored`, or
//! `KEYSTORED_BIN`) on a soft store in a temporary directory, with a policy
//! that gives this process's uid the application role. Every client is this
//! binary re-run as `worker SOCKET SECONDS`: it connects and warms up, says
//! `ready`, waits for its stdin to close (the barrier: closed for all
//! workers at once), signs for SECONDS and prints its rate, its CPU time
//! and its latencies. CPU time is read from /proc (user + system, 10 ms
//! ticks): the daemon's over the whole window, divided by all its calls.
//! A failed call fails the run (exit 1); a missed target only prints
//! "below target".

use backend_soft::SoftStore;
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SignatureFormat};
use keystore_client::Client;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use test_support::daemon::Daemon;

const KEY: &str = "bench-p256";
const MSG: &[u8] = b"a firmware image digest to sign, 64 bytes long, give or take...";
/// Untimed calls before each timed window.
const WARM_UP: usize = 50;

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("worker") {
        worker(&args[1..])
    } else {
        bench(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemon bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Positional argument `i`, else the variable `var`, else `default`.
fn setting<T: std::str::FromStr>(args: &[String], i: usize, var: &str, default: T) -> Res<T> {
    let text = match args.get(i) {
        Some(a) => a.clone(),
        None => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => return Ok(default),
        },
    };
    text.parse()
        .map_err(|_| format!("'{text}' is not a valid value for {var}"))
}

/// One side's result in one round: total calls/s, every call's latency
/// (sorted, nanoseconds), and the CPU time (user + system) per call of the
/// calling processes and of the daemon (µs; NaN in process).
struct Sample {
    rate: f64,
    lat: Vec<u64>,
    client_cpu: f64,
    daemon_cpu: f64,
}

impl Sample {
    fn percentile_us(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i.min(self.lat.len() - 1)] as f64 / 1e3
    }
}

/// CPU seconds (user + system) used so far by process `pid` (or `self`),
/// from /proc (in USER_HZ ticks, 100 a second on Linux: 10 ms resolution,
/// under 1 % of a window of seconds).
fn cpu_seconds(pid: &str) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_ascii_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / 100.0),
        _ => Err(format!("/proc/{pid}/stat: unexpected format")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(args: &[String]) -> Res<()> {
    let rounds: usize = setting(args, 0, "DAEMON_BENCH_ROUNDS", 3)?;
    let secs: f64 = setting(args, 1, "DAEMON_BENCH_SECS", 3.0)?;
    let clients: usize = setting(args, 2, "DAEMON_BENCH_CLIENTS", 4)?;
    if rounds == 0 || clients == 0 || !secs.is_finite() || secs <= 0.0 {
        return Err("rounds, seconds and clients must be positive".into());
    }
    let began = Instant::now();

    let uid = std::fs::metadata("/proc/self")
        .map_err(|e| format!("/proc/self: {e}"))?
        .uid();
    let policy = format!("[[caller]]\nuid = {uid}\nrole = \"application\"\nkeys = [\"*\"]\n");
    let mut daemon = Daemon::soft(&policy, "");
    let ks = daemon.open_store();
    let officer = Actor::new("bench", Role::SecurityOfficer).map_err(|e| e.to_string())?;
    ks.create(&officer, KEY, KeySpec::new(Algorithm::EcdsaP256Sha256))
        .map_err(|e| format!("create {KEY}: {e}"))?;
    daemon.start();
    let daemon_pid = daemon.pid().ok_or("the daemon is not running")?.to_string();
    let socket = daemon
        .socket()
        .to_str()
        .ok_or("the socket path is not UTF-8")?
        .to_string();

    // The daemon's signature is a real one, over the same key.
    let client = Client::connect(&socket).map_err(|e| format!("connect: {e}"))?;
    let sig = client
        .sign(KEY, MSG, SignatureFormat::Der)
        .map_err(|e| format!("sign through keystored: {e}"))?;
    ks.verify(KEY, MSG, &sig.bytes, Some(sig.version))
        .map_err(|e| format!("the daemon's signature does not verify in process: {e}"))?;
    drop(client);
    eprintln!(
        "set-up: daemon ready, key created, in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let (mut inproc, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut sides = [0, 1, 2];
        if round % 2 == 1 {
            sides.reverse();
        }
        for side in sides {
            match side {
                0 => inproc.push(in_process(&ks, secs)?),
                1 => one.push(through_daemon(&socket, &daemon_pid, 1, secs)?),
                _ => many.push(through_daemon(&socket, &daemon_pid, clients, secs)?),
            }
        }
        let (a, b, c) = (&inproc[round], &one[round], &many[round]);
        eprintln!(
            "round {}: in-process {:.0}/s, 1 client {:.0}/s, {clients} clients {:.0}/s",
            round + 1,
            a.rate,
            b.rate,
            c.rate
        );
    }
    daemon.terminate();

    let row = |name: &str, s: &[Sample]| {
        let daemon_cpu = median(s.iter().map(|x| x.daemon_cpu).collect());
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            median(s.iter().map(|x| x.rate).collect()),
            median(s.iter().map(|x| x.percentile_us(0.50)).collect()),
            median(s.iter().map(|x| x.percentile_us(0.99)).collect()),
            median(s.iter().map(|x| x.client_cpu).collect()),
            if daemon_cpu.is_nan() {
                "–".to_string()
            } else {
                format!("{daemon_cpu:.1}")
            },
        );
    };
    println!(
        "| soft ECDSA P-256 sign | calls/s | p50 (µs) | p99 (µs) | caller CPU/call (µs) | daemon CPU/call (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    row("in process (`Keystore::sign`)", &inproc);
    row("keystored, 1 client", &one);
    row(&format!("keystored, {clients} client processes"), &many);

    let one_ratio = median(
        one.iter()
            .zip(&inproc)
            .map(|(d, p)| d.rate / p.rate)
            .collect(),
    );
    let many_ratio = median(
        many.iter()
            .zip(&one)
            .map(|(m, d)| m.rate / d.rate)
            .collect(),
    );
    let verdict = |r: f64, t: f64| if r >= t { "ok" } else { "below target" };
    println!();
    println!("| ratio (median of {rounds} paired rounds) | value | target | |");
    println!("|---|---:|---:|---|");
    println!(
        "| keystored 1 client ÷ in process | {one_ratio:.2} | ≥ 0.5 | {} |",
        verdict(one_ratio, 0.5)
    );
    println!(
        "| keystored {clients} clients ÷ 1 client | {many_ratio:.2} | ≥ 1.5 | {} |",
        verdict(many_ratio, 1.5)
    );
    println!(
        "\n{} cores; {rounds} rounds of {secs} s per side, order alternating; \
         each client a separate process with its own connection; {:.0} s in all.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `Keystore::sign` in this process for `secs`.
fn in_process(ks: &Keystore<SoftStore>, secs: f64) -> Res<Sample> {
    let sign = || {
        ks.sign(KEY, MSG, SignatureFormat::Der)
            .map(drop)
            .map_err(|e| format!("in-process sign: {e}"))
    };
    for _ in 0..WARM_UP {
        sign()?;
    }
    let cpu = cpu_seconds("self")?;
    let mut s = timed(secs, sign)?;
    s.client_cpu = (cpu_seconds("self")? - cpu) * 1e6 / s.lat.len() as f64;
    Ok(s)
}

/// Calls `f` for `secs`; its rate and sorted latencies.
fn timed(secs: f64, mut f: impl FnMut() -> Res<()>) -> Res<Sample> {
    let deadline = Duration::from_secs_f64(secs);
    let mut lat = Vec::with_capacity(16_384);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        f()?;
        let end = Instant::now();
        lat.push(end.duration_since(t).as_nanos() as u64);
        if end.duration_since(start) >= deadline {
            let rate = lat.len() as f64 / end.duration_since(start).as_secs_f64();
            lat.sort_unstable();
            return Ok(Sample {
                rate,
                lat,
                client_cpu: f64::NAN,
                daemon_cpu: f64::NAN,
            });
        }
    }
}

/// `n` worker processes signing through the daemon (pid `daemon`) at once
/// for `secs`: their summed rate, pooled latencies and CPU per call.
fn through_daemon(socket: &str, daemon: &str, n: usize, secs: f64) -> Res<Sample> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut workers: Vec<(Child, BufReader<ChildStdout>)> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut child = Command::new(&exe)
            .args(["worker", socket, &secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn a worker: {e}"))?;
        let out = BufReader::new(child.stdout.take().ok_or("worker stdout")?);
        workers.push((child, out));
    }
    // Every worker connected and warmed up...
    for (child, out) in &mut workers {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        if line.trim() != "ready" {
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!("a worker did not get ready ({status})"));
        }
    }
    // ...then all go at once.
    let daemon_cpu = cpu_seconds(daemon)?;
    for (child, _) in &mut workers {
        drop(child.stdin.take());
    }
    let mut total = Sample {
        rate: 0.0,
        lat: Vec::new(),
        client_cpu: 0.0,
        daemon_cpu: 0.0,
    };
    let mut failed = None;
    for (mut child, mut out) in workers {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            failed = Some(format!("a worker failed ({status})"));
            continue;
        }
        let mut lines = text.lines();
        let head: Vec<f64> = lines
            .next()
            .unwrap_or("")
            .split_ascii_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [rate, cpu] = head[..] else {
            return Err(format!("a worker said {text:?}"));
        };
        total.rate += rate;
        total.client_cpu += cpu;
        for v in lines.next().unwrap_or("").split_ascii_whitespace() {
            total
                .lat
                .push(v.parse().map_err(|_| format!("bad latency {v:?}"))?);
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let calls = total.lat.len() as f64;
    total.daemon_cpu = (cpu_seconds(daemon)? - daemon_cpu) * 1e6 / calls;
    total.client_cpu = total.client_cpu * 1e6 / calls;
    total.lat.sort_unstable();
    Ok(total)
}

/// `worker SOCKET SECONDS`: one client; prints `ready`, waits for stdin to
/// close, signs for SECONDS, prints its rate and CPU seconds, then its
/// latencies (ns).
fn worker(args: &[String]) -> Res<()> {
    let [socket, secs] = args else {
        return Err("usage: daemon worker SOCKET SECONDS".into());
    };
    let secs: f64 = secs.parse().map_err(|_| format!("bad seconds {secs}"))?;
    let client = Client::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let sign = || {
        client
            .sign(KEY, MSG, SignatureFormat::Der)
            .map(drop)
            .map_err(|e| format!("sign through keystored: {e}"))
    };
    for _ in 0..WARM_UP {
        sign()?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    std::io::stdin()
        .read_to_end(&mut sink)
        .map_err(|e| format!("barrier: {e}"))?;
    let cpu = cpu_seconds("self")?;
    let s = timed(secs, sign)?;
    let cpu = cpu_seconds("self")? - cpu;
    let mut line = String::with_capacity(s.lat.len() * 7);
    for v in &s.lat {
        line.push_str(&v.to_string());
        line.push(' ');
    }
    writeln!(stdout, "{} {cpu}\n{line}", s.rate).map_err(|e| e.to_string())?;
    Ok(())
}

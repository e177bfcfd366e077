//! Provisioning throughput of whole `keyctl provision --batch` processes, in
//! devices per second, paired in one run: 1 station on its own SQLite
//! registry (the baseline), 1 station on a PostgreSQL registry, and 4
//! stations at once on one PostgreSQL registry (aggregate). Reports each
//! configuration's median over the repeats and the ratios PostgreSQL 1
//! station ÷ SQLite 1 station and PostgreSQL 4 stations ÷ SQLite 1 station.
//!
//! ```text
//! cargo build --release -p keyctl
//! cargo run --release -p benches --bin provision-throughput -- [OPTIONS]
//! ```
//!
//! Options: `--devices N` per station (default 500), `--repeats R` (default
//! 3), `--stations S` for the concurrent configuration (default 4),
//! `--timeout SECS` per batch run (default 60 + devices ÷ 2), `--keyctl
//! PATH` (else `KEYCTL_BIN`, else `keyctl` beside this binary:
//! `target/PROFILE/keyctl`), `--json FILE` (the figures as JSON as well),
//! `--smoke` (20 devices, 1 repeat, unless given). `scripts/bench` runs it
//! after the criterion benches (`PROVISION_THROUGHPUT=0` skips it).
//!
//! A station is what a factory line runs: its own production store (soft
//! backend, unlocked by a key file) with its own intermediate, signed by
//! one root, and an operator running `keyctl provision --batch FILE
//! --operator LINE --out-dir DIR` in a process of its own. Every repeat of
//! every configuration gets fresh stations (`keyctl init`, `role set`,
//! `ca sign-intermediate` under the root made once at the start) and, on
//! PostgreSQL, a fresh database on one temporary cluster
//! (`test_support::postgres::TestPostgres`, 127.0.0.1 only), its schema
//! made before the clock starts (`keyctl ca show`); the registry URL
//! reaches keyctl in `KEYCTL_REGISTRY`, never on a command line. None of
//! that is timed.
//!
//! Timed: from spawning the first batch process to the exit of the last;
//! devices/s is every station's devices over that wall time. Every process
//! must exit 0 within the timeout (else it is killed and the run fails),
//! print `provisioned N devices`, and leave N certificates in its out-dir,
//! and the registry must then count every device (`keyctl ca show`), so a
//! failing batch cannot pass for a fast one.
//!
//! The stations' stores and the PostgreSQL cluster are in the same
//! temporary directory's filesystem (`TMPDIR`), so both registries pay the
//! same fsyncs. The configurations run in alternating order (SQLite, PG 1,
//! PG 4; then PG 4, PG 1, SQLite; ...) so that the machine's drift falls on
//! all of them; each figure is the median of the repeats, each ratio the
//! median of the per-repeat ratios.

use serde_json::json;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use test_support::keyctl::Keyctl;
use test_support::postgres::TestPostgres;

/// Credentials of the benchmark's throw-away stores.
const SO_SECRET: &str = "bench security officer credential";
const OP_SECRET: &str = "bench operator credential";
const ROOT_SECRET: &str = "bench root custodian credential";
/// The bound on every set-up and verification command.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

type Res<T> = Result<T, String>;

const USAGE: &str = "usage: provision-throughput [--devices N] [--repeats R] [--stations S] \
     [--timeout SECS] [--keyctl PATH] [--json FILE] [--smoke]";

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provision-throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    devices: usize,
    repeats: usize,
    stations: usize,
    timeout: Duration,
    keyctl: PathBuf,
    json: Option<PathBuf>,
}

fn settings() -> Res<Settings> {
    let mut args = std::env::args().skip(1);
    let (mut devices, mut repeats, mut stations) = (None, None, 4usize);
    let (mut timeout, mut keyctl, mut json, mut smoke) = (None, None, None, false);
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Res<T> {
        let v = v.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        v.parse()
            .map_err(|_| format!("{flag}: '{v}' is not a valid number"))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--devices" => devices = Some(num("--devices", args.next())?),
            "--repeats" => repeats = Some(num("--repeats", args.next())?),
            "--stations" => stations = num("--stations", args.next())?,
            "--timeout" => timeout = Some(num::<f64>("--timeout", args.next())?),
            "--keyctl" => keyctl = Some(PathBuf::from(num::<String>("--keyctl", args.next())?)),
            "--json" => json = Some(PathBuf::from(num::<String>("--json", args.next())?)),
            "--smoke" => smoke = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument '{a}'\n{USAGE}")),
        }
    }
    let devices: usize = devices.unwrap_or(if smoke { 20 } else { 500 });
    let repeats: usize = repeats.unwrap_or(if smoke { 1 } else { 3 });
    if devices == 0 || repeats == 0 || stations == 0 {
        return Err("devices, repeats and stations must be positive".into());
    }
    let timeout = timeout.unwrap_or(60.0 + devices as f64 / 2.0);
    if !timeout.is_finite() || timeout <= 0.0 {
        return Err("the timeout must be a positive number of seconds".into());
    }
    Ok(Settings {
        devices,
        repeats,
        stations,
        timeout: Duration::from_secs_f64(timeout),
        keyctl: keyctl_bin(keyctl)?,
        json,
    })
}

/// `--keyctl`, else `KEYCTL_BIN`, else `keyctl` beside this binary.
fn keyctl_bin(given: Option<PathBuf>) -> Res<PathBuf> {
    let p = match given.or_else(|| std::env::var_os("KEYCTL_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("current exe: {e}"))?
            .with_file_name("keyctl"),
    };
    if !p.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release -p keyctl` (`cargo build -p keyctl` \
             for a debug build of this driver) first, or pass --keyctl PATH / set KEYCTL_BIN",
            p.display()
        ));
    }
    Ok(p)
}

/// Where a configuration keeps its registry.
#[derive(Clone, Copy, PartialEq)]
enum Registry {
    Sqlite,
    Postgres,
}

struct Config {
    name: String,
    key: &'static str,
    registry: Registry,
    stations: usize,
}

/// One run of one configuration.
struct Sample {
    wall: f64,
    rate: f64,
    /// keyctl's own figure (devices/s inside the batch loop), the mean over
    /// stations.
    station_rate: f64,
    /// User + system CPU of the batch processes per device, ms.
    cpu_ms: f64,
}

/// The state shared by every run: the settings, the root, the server.
struct Bench {
    s: Settings,
    top: tempfile::TempDir,
    root: PathBuf,
    root_key: PathBuf,
    pg: TestPostgres,
}

fn bench() -> Res<()> {
    let s = settings()?;
    let began = Instant::now();
    // Under TMPDIR, like the cluster TestPostgres makes (same filesystem).
    let top = tempfile::Builder::new()
        .prefix("provision-bench-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let Some(pg) = TestPostgres::cluster() else {
        // KEYSTORE_TEST_SKIP names postgres and PostgreSQL is missing:
        // TestPostgres printed SKIPPED.
        return Ok(());
    };
    let b = Bench {
        root: top.path().join("root"),
        root_key: top.path().join("root.key"),
        s,
        top,
        pg,
    };
    b.keyctl(None)
        .args(["ca", "init-root", "--root-store"])
        .arg(&b.root)
        .arg("--new-root-key-file")
        .arg(&b.root_key)
        .args(["--cn", "Bench Fleet Root CA"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .run_ok("ca init-root")?;
    eprintln!(
        "set-up: PostgreSQL cluster and root CA ready in {:.1} s; keyctl {}",
        began.elapsed().as_secs_f64(),
        b.s.keyctl.display()
    );

    let n = b.s.stations;
    let configs = [
        Config {
            name: "SQLite (the station's pki.sqlite), 1 station".into(),
            key: "sqlite_1",
            registry: Registry::Sqlite,
            stations: 1,
        },
        Config {
            name: "PostgreSQL, 1 station".into(),
            key: "postgres_1",
            registry: Registry::Postgres,
            stations: 1,
        },
        Config {
            name: format!("PostgreSQL, {n} stations at once"),
            key: "postgres_n",
            registry: Registry::Postgres,
            stations: n,
        },
    ];
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for repeat in 0..b.s.repeats {
        let mut order = [0, 1, 2];
        if repeat % 2 == 1 {
            order.reverse();
        }
        for i in order {
            samples[i].push(b.run(&configs[i], repeat)?);
        }
        let rates: Vec<String> = configs
            .iter()
            .zip(&samples)
            .map(|(c, s)| format!("{} {:.1}/s", c.key, s[repeat].rate))
            .collect();
        eprintln!("repeat {}: {}", repeat + 1, rates.join(", "));
    }

    let med = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let ratio = |i: usize| {
        median(
            samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(x, base)| x.rate / base.rate)
                .collect(),
        )
    };
    let d = b.s.devices;
    let repeats = b.s.repeats;
    println!(
        "| provisioning (`keyctl provision --batch`) | stations | devices | wall (s) | devices/s | \
         per station, keyctl's own figure (devices/s) | keyctl CPU/device (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, c) in configs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.2} |",
            c.name,
            c.stations,
            c.stations * d,
            med(i, |s| s.wall),
            med(i, |s| s.rate),
            med(i, |s| s.station_rate),
            med(i, |s| s.cpu_ms),
        );
    }
    let (r1, rn) = (ratio(1), ratio(2));
    println!();
    println!("| ratio (median of {repeats} paired repeats) | devices/s |");
    println!("|---|---:|");
    println!("| PostgreSQL 1 station ÷ SQLite 1 station | {r1:.2} |");
    println!("| PostgreSQL {n} stations (aggregate) ÷ SQLite 1 station | {rn:.2} |");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let secs = began.elapsed().as_secs_f64();
    println!(
        "\n{cores} cores; {d} devices per station, {repeats} repeat(s), order alternating; each \
         station a `keyctl provision --batch` process on its own soft store (key file) and \
         intermediate under one root, fresh for every run; wall time from spawn to the last \
         exit; stores and the PostgreSQL cluster (127.0.0.1:{}) in {}; {secs:.0} s in all.",
        port_of(&b.pg.url()),
        std::env::temp_dir().display()
    );

    if let Some(path) = &b.s.json {
        let rows: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "configuration": c.key,
                    "name": c.name,
                    "registry": if c.registry == Registry::Sqlite { "sqlite" } else { "postgres" },
                    "stations": c.stations,
                    "devices": c.stations * d,
                    "median_wall_s": med(i, |s| s.wall),
                    "median_devices_per_s": med(i, |s| s.rate),
                    "devices_per_s": samples[i].iter().map(|s| s.rate).collect::<Vec<_>>(),
                    "median_station_devices_per_s": med(i, |s| s.station_rate),
                    "median_cpu_ms_per_device": med(i, |s| s.cpu_ms),
                })
            })
            .collect();
        let doc = json!({
            "benchmark": "provision-throughput",
            "devices_per_station": d,
            "repeats": repeats,
            "cores": cores,
            "configurations": rows,
            "ratios": {
                "postgres_1_over_sqlite_1": r1,
                "postgres_n_over_sqlite_1": rn,
            },
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The port of a `postgresql://user:pw@host:port/db` URL (for the report;
/// never the URL itself, which holds the password).
fn port_of(url: &str) -> String {
    url.rsplit('@')
        .next()
        .and_then(|h| h.split('/').next())
        .and_then(|h| h.rsplit(':').next())
        .unwrap_or("?")
        .to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One station of a run: its store, key file, batch and out-dir.
struct Station {
    store: PathBuf,
    key_file: PathBuf,
    batch: PathBuf,
    out: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Bench {
    /// A keyctl command with no KEYCTL_* (or other test-harness) variable of
    /// the caller's, no stdin, on `station`'s store when given.
    fn keyctl(&self, station: Option<&Station>) -> Command {
        let mut c = Keyctl::new(&self.s.keyctl).command();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KEYCTL_") {
                c.env_remove(k);
            }
        }
        if let Some(st) = station {
            c.arg("--store")
                .arg(&st.store)
                .arg("--key-file")
                .arg(&st.key_file);
        }
        c
    }

    /// A new station `i` in `dir` with its intermediate under the root.
    fn station(&self, dir: &Path, i: usize, repeat: usize) -> Res<Station> {
        let st = Station {
            store: dir.join(format!("station-{i}")),
            key_file: dir.join(format!("station-{i}.key")),
            batch: dir.join(format!("batch-{i}.csv")),
            out: dir.join(format!("out-{i}")),
            stdout: dir.join(format!("station-{i}.stdout")),
            stderr: dir.join(format!("station-{i}.stderr")),
        };
        self.keyctl(None)
            .arg("--store")
            .arg(&st.store)
            .arg("init")
            .arg("--new-key-file")
            .arg(&st.key_file)
            .run_ok("init")?;
        self.keyctl(Some(&st))
            .args(["role", "set", "security-officer"])
            .env("KEYCTL_NEW_ROLE_SECRET", SO_SECRET)
            .run_ok("role set security-officer")?;
        self.keyctl(Some(&st))
            .args(["role", "set", "operator"])
            .env("KEYCTL_ROLE", "security-officer")
            .env("KEYCTL_ROLE_SECRET", SO_SECRET)
            .env("KEYCTL_NEW_ROLE_SECRET", OP_SECRET)
            .run_ok("role set operator")?;
        self.keyctl(Some(&st))
            .args(["ca", "sign-intermediate", "--root-store"])
            .arg(&self.root)
            .arg("--root-key-file")
            .arg(&self.root_key)
            .args(["--cn", &format!("Bench Station {i} Production CA {repeat}")])
            .env("KEYCTL_ROLE", "security-officer")
            .env("KEYCTL_ROLE_SECRET", SO_SECRET)
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .run_ok("ca sign-intermediate")?;
        let mut batch = String::from("device_id\n");
        for j in 0..self.s.devices {
            batch.push_str(&format!("ST{i}-{j:06}\n"));
        }
        fs::write(&st.batch, batch).map_err(|e| format!("write the batch: {e}"))?;
        Ok(st)
    }

    /// `keyctl ca show` on `st` (with the registry, if any): the registry's
    /// device count. Connecting also makes a PostgreSQL registry's schema.
    fn device_count(&self, st: &Station, url: Option<&str>) -> Res<usize> {
        let mut c = self.keyctl(Some(st));
        c.args(["ca", "show"])
            .env("KEYCTL_ROLE", "operator")
            .env("KEYCTL_ROLE_SECRET", OP_SECRET);
        if let Some(url) = url {
            c.env("KEYCTL_REGISTRY", url);
        }
        let out = c.run_ok("ca show")?;
        out.lines()
            .find_map(|l| l.strip_prefix("devices"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("`keyctl ca show` printed no device count: {out}"))
    }

    /// One run of `c`: fresh stations (and database), the timed batches,
    /// the checks.
    fn run(&self, c: &Config, repeat: usize) -> Res<Sample> {
        let dir = tempfile::Builder::new()
            .prefix(c.key)
            .tempdir_in(self.top.path())
            .map_err(|e| format!("run directory: {e}"))?;
        let stations = (0..c.stations)
            .map(|i| self.station(dir.path(), i, repeat))
            .collect::<Res<Vec<_>>>()?;
        let url = (c.registry == Registry::Postgres).then(|| self.pg.fresh_database());
        let before = self.device_count(&stations[0], url.as_deref())?;
        if before != 0 {
            return Err(format!(
                "{}: the registry holds {before} devices before the run",
                c.key
            ));
        }
        let mut cmds = Vec::with_capacity(stations.len());
        for (i, st) in stations.iter().enumerate() {
            let mut cmd = self.keyctl(Some(st));
            cmd.args(["provision", "--batch"])
                .arg(&st.batch)
                .args(["--operator", &format!("line-{i}"), "--out-dir"])
                .arg(&st.out)
                .env("KEYCTL_ROLE", "operator")
                .env("KEYCTL_ROLE_SECRET", OP_SECRET)
                .stdout(file(&st.stdout)?)
                .stderr(file(&st.stderr)?);
            if let Some(url) = &url {
                cmd.env("KEYCTL_REGISTRY", url);
            }
            cmds.push(cmd);
        }

        let cpu0 = children_cpu_ms();
        let start = Instant::now();
        let mut running = Running(Vec::with_capacity(cmds.len()));
        for cmd in &mut cmds {
            let child = cmd
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", self.s.keyctl.display()))?;
            running.0.push(child);
        }
        let statuses = running.wait_all(self.s.timeout)?;
        let wall = start.elapsed().as_secs_f64();
        let cpu_ms = children_cpu_ms() - cpu0;

        let d = self.s.devices;
        let mut station_rates = Vec::with_capacity(stations.len());
        for (st, status) in stations.iter().zip(&statuses) {
            let out = fs::read_to_string(&st.stdout).unwrap_or_default();
            if !status.success() {
                let err = fs::read_to_string(&st.stderr).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                return Err(format!(
                    "{}: `keyctl provision --batch` on {} failed ({status}): {out}{}",
                    c.key,
                    st.store.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            station_rates.push(reported_rate(&out, d).ok_or_else(|| {
                format!(
                    "{}: keyctl did not report {d} devices provisioned: {out}",
                    c.key
                )
            })?);
            let certs = fs::read_dir(&st.out)
                .map_err(|e| format!("{}: {e}", st.out.display()))?
                .flatten()
                .filter(|e| e.path().join("cert.pem").is_file())
                .count();
            if certs != d {
                return Err(format!(
                    "{}: {certs} certificates in {}, not {d}",
                    c.key,
                    st.out.display()
                ));
            }
        }
        let total = d * c.stations;
        let counted = self.device_count(&stations[0], url.as_deref())?;
        if counted != total {
            return Err(format!(
                "{}: the registry counts {counted} devices, not {total}",
                c.key
            ));
        }
        Ok(Sample {
            wall,
            rate: total as f64 / wall,
            station_rate: station_rates.iter().sum::<f64>() / station_rates.len() as f64,
            cpu_ms: cpu_ms / total as f64,
        })
    }
}

/// keyctl's "provisioned N devices in S s (R devices/s)" line: R, when N
/// is `devices`.
fn reported_rate(stdout: &str, devices: usize) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("provisioned {devices} devices in ")))?;
    let (_, rest) = line.split_once('(')?;
    rest.split_whitespace().next()?.parse().ok()
}

fn file(p: &Path) -> Res<File> {
    File::create(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Children that are killed (and reaped) if they are still running when
/// this is dropped: on a timeout, or any early return.
struct Running(Vec<Child>);

impl Running {
    /// Waits for every child, at most `timeout` in all; their statuses in
    /// order. A child still running at the deadline is killed, and that is
    /// an error. Polled every millisecond (the wall time's resolution).
    fn wait_all(&mut self, timeout: Duration) -> Res<Vec<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut statuses = vec![None; self.0.len()];
        loop {
            for (child, status) in self.0.iter_mut().zip(statuses.iter_mut()) {
                if status.is_none() {
                    *status = child.try_wait().map_err(|e| format!("wait: {e}"))?;
                }
            }
            if statuses.iter().all(Option::is_some) {
                return Ok(statuses.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                let left = statuses.iter().filter(|s| s.is_none()).count();
                // Drop kills them.
                return Err(format!(
                    "{left} keyctl process(es) still running after {timeout:?}: killed"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A set-up or check command: run with a bound, output captured.
trait RunOk {
    /// Runs to completion within [`SETUP_TIMEOUT`]; its stdout, or why not.
    fn run_ok(&mut self, what: &str) -> Res<String>;
}

impl RunOk for Command {
    fn run_ok(&mut self, what: &str) -> Res<String> {
        let out = tempfile::tempfile().map_err(|e| e.to_string())?;
        let err = tempfile::tempfile().map_err(|e| e.to_string())?;
        let read = |mut f: &File| {
            use std::io::{Read, Seek};
            let mut s = String::new();
            let _ = f.rewind().and_then(|()| f.read_to_string(&mut s));
            s
        };
        let child = self
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(err.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("keyctl {what}: {e}"))?;
        let mut running = Running(vec![child]);
        let status = running
            .wait_all(SETUP_TIMEOUT)
            .map_err(|e| format!("keyctl {what}: {e}"))?[0];
        let (out, err) = (read(&out), read(&err));
        if !status.success() {
            return Err(format!("keyctl {what} failed ({status}): {out}{err}"));
        }
        Ok(out)
    }
}

/// CPU time (user + system) of this process's waited-for children so far,
/// in ms (`/proc/self/stat` fields 16 and 17, clock ticks of 10 ms).
fn children_cpu_ms() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyctl_s_batch_line_and_the_url_s_port_are_read() {
        let out = "provisioned 20 devices in 0.31 s (64.5 devices/s); files in /x\n";
        assert_eq!(reported_rate(out, 20), Some(64.5));
        assert_eq!(reported_rate(out, 21), None);
        assert_eq!(
            port_of("postgresql://keystore:pw@127.0.0.1:5433/db"),
            "5433"
        );
    }
}

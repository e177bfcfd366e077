//! Factory stations as separate `keyctl` processes, each with its own
//! production store and intermediate under one root, sharing one real
//! PostgreSQL registry (`KEYCTL_REGISTRY`). Proves that concurrent batches
//! neither duplicate nor lose a device, key or serial; that overlapping
//! batches with `--skip-provisioned` give every id to exactly one station;
//! that a station SIGKILLed mid-batch leaves no half-written device in the
//! registry and its batch resumes; that the shared event chain verifies at
//! every station; that every record and certificate a station wrote is the
//! one in the database (and OpenSSL verifies it up to the root); and that no
//! output shows the database password.

use postgres::{Client, NoTls};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};
use test_support::keyctl::{all_text, assert_ok, s, Credential, KeyFileStore, Keyctl};
use test_support::postgres::TestPostgres;
use x509_parser::prelude::{FromDer, X509Certificate};

const OPENSSL: &str = "/usr/bin/openssl";
const ROOT_SECRET: &str = "root custodian credential for tests";
const SO: Credential = Credential::officer("officer credential for tests").by("officer-1");
const OP: Credential = Credential::operator("operator credential for tests").by("station-op");
/// How long the batches of one test may take before they are killed.
const BATCH_WAIT: Duration = Duration::from_secs(15 * 60);
const SIGKILL: i32 = 9;

fn keyctl() -> Keyctl {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl"))
}

/// A root, `n` stations with their intermediates, and one fresh database.
struct Fleet {
    pg: TestPostgres,
    url: String,
    root: tempfile::TempDir,
    stations: Vec<KeyFileStore>,
}

/// A device's rows in the registry.
struct Row {
    record_yaml: String,
    station: String,
    der: Vec<u8>,
    serial: String,
    issuer_serial: String,
}

/// Children killed (SIGKILL) if still running when dropped (a failed test).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Fleet {
    /// `None` only when `TestPostgres` says PostgreSQL is skipped.
    fn new(n: usize) -> Option<Fleet> {
        let pg = TestPostgres::start()?;
        let url = pg.fresh_database();
        let root = tempfile::tempdir().expect("tempdir");
        let (store, key) = (root.path().join("root"), root.path().join("root.key"));
        let ceremony = |mut c: Command, args: &[&str], cn: &str| {
            c.args(["ca"])
                .args(args)
                .args(["--root-store", s(&store), "--cn", cn]);
            c.env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
                .env_remove("KEYCTL_REGISTRY");
            assert_ok(&c.output().expect("run keyctl"));
        };
        ceremony(
            keyctl().command(),
            &["init-root", "--new-root-key-file", s(&key)],
            "Root",
        );
        let stations = (0..n)
            .map(|i| {
                let st = KeyFileStore::create(keyctl(), "production", "production.key", SO);
                st.set_role(OP);
                let args = ["sign-intermediate", "--root-key-file", s(&key)];
                ceremony(st.so(), &args, &format!("Station {i} CA"));
                st
            })
            .collect();
        Some(Fleet {
            pg,
            url,
            root,
            stations,
        })
    }

    /// A command at station `i` as its operator, on the shared registry.
    fn op(&self, i: usize) -> Command {
        let mut c = self.stations[i].with(OP);
        c.env("KEYCTL_REGISTRY", &self.url);
        c
    }

    fn out_dir(&self, i: usize) -> PathBuf {
        self.stations[i].path("out")
    }

    fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the registry")
    }

    #[track_caller]
    fn no_password(&self, text: &str) {
        assert!(
            !text.contains(self.pg.password()),
            "output shows the password"
        );
    }

    /// Starts `provision --batch` of `ids` at station `i`; stdout and stderr
    /// go to `<run>.stdout` and `<run>.stderr` in the station's directory.
    fn spawn_batch(&self, i: usize, ids: &[String], skip: bool, run: &str) -> Child {
        let st = &self.stations[i];
        let batch = st.write(&format!("{run}.batch"), ids.join("\n").as_bytes());
        let file = |ext: &str| fs::File::create(st.path(&format!("{run}.{ext}"))).unwrap();
        let mut c = self.op(i);
        c.args(["provision", "--batch", s(&batch)])
            .args(["--operator", &format!("line-{i}")])
            .args(["--out-dir", s(&self.out_dir(i))]);
        if skip {
            c.arg("--skip-provisioned");
        }
        c.stdout(file("stdout")).stderr(file("stderr"));
        c.spawn().expect("start keyctl")
    }

    /// Runs the batch `lists[i]` at station `i`, all at once; waits (bounded).
    fn run_batches(&self, lists: &[Vec<String>], skip: bool, run: &str) -> Vec<ExitStatus> {
        let mut procs = Procs(
            (lists.iter().enumerate())
                .map(|(i, ids)| self.spawn_batch(i, ids, skip, run))
                .collect(),
        );
        let start = Instant::now();
        let mut done: Vec<Option<ExitStatus>> = vec![None; lists.len()];
        while done.iter().any(Option::is_none) {
            assert!(start.elapsed() < BATCH_WAIT, "batches still running");
            for (c, d) in procs.0.iter_mut().zip(done.iter_mut()) {
                if d.is_none() {
                    *d = c.try_wait().expect("wait for keyctl");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done.into_iter().flatten().collect()
    }

    /// Station `i`'s stdout and stderr of `run` (neither shows the password).
    fn outputs(&self, i: usize, run: &str) -> (String, String) {
        let read = |ext: &str| {
            fs::read_to_string(self.stations[i].path(&format!("{run}.{ext}"))).expect("output")
        };
        let (stdout, stderr) = (read("stdout"), read("stderr"));
        self.no_password(&stdout);
        self.no_password(&stderr);
        (stdout, stderr)
    }

    /// `ca events` at station `i`: exit 0, the summary line, and `provisions`
    /// provision events listed.
    #[track_caller]
    fn events_intact(&self, i: usize, provisions: usize) {
        let out = self.op(i).args(["ca", "events"]).output().expect("keyctl");
        self.no_password(&all_text(&out));
        let stdout = assert_ok(&out);
        let summary = stdout.lines().last().unwrap_or_default();
        assert!(
            summary.starts_with("provisioning event log intact"),
            "{i}: {summary}"
        );
        assert_eq!(stdout.matches(" provision by ").count(), provisions, "{i}");
    }

    /// Checks every device station `i` wrote against `rows`: the record is
    /// the registry's, cert.pem is the registry's certificate, with its
    /// serial, issued by the station's intermediate. Returns the ids written
    /// completely, the registry's station ids of them, and the ids of
    /// directories without cert.pem or record.yaml.
    fn check_outputs(
        &self,
        i: usize,
        rows: &HashMap<String, Row>,
    ) -> (BTreeSet<String>, BTreeSet<String>, Vec<String>) {
        let inter_pem = fs::read(self.stations[i].store.join("pki/intermediate.pem")).unwrap();
        let inter_der = pem_der(&inter_pem);
        let inter = cert(&inter_der);
        let (mut ids, mut stations, mut incomplete) = (BTreeSet::new(), BTreeSet::new(), vec![]);
        let Ok(entries) = fs::read_dir(self.out_dir(i)) else {
            return (ids, stations, incomplete);
        };
        for entry in entries {
            let dir = entry.unwrap().path();
            let id = dir.file_name().unwrap().to_string_lossy().into_owned();
            let (yaml, pem) = (dir.join("record.yaml"), dir.join("cert.pem"));
            if !yaml.is_file() || !pem.is_file() || !dir.join("chain.pem").is_file() {
                incomplete.push(id);
                continue;
            }
            let row = (rows.get(&id)).unwrap_or_else(|| panic!("{id} of station {i} not in PG"));
            assert_eq!(fs::read_to_string(yaml).unwrap(), row.record_yaml, "{id}");
            let der = pem_der(&fs::read(pem).unwrap());
            assert!(der == row.der, "{id}: cert.pem is not the registry's");
            let c = cert(&der);
            assert_eq!(hex::encode(c.raw_serial()), row.serial, "{id}");
            assert_eq!(c.issuer().as_raw(), inter.subject().as_raw(), "{id}");
            assert_eq!(row.issuer_serial, hex::encode(inter.raw_serial()), "{id}");
            stations.insert(row.station.clone());
            ids.insert(id);
        }
        (ids, stations, incomplete)
    }

    /// `openssl verify` of every certificate of `ids` at station `i`, with
    /// the root's own certificate as the only trust anchor.
    fn openssl_verify(&self, i: usize, ids: &BTreeSet<String>) {
        let root = self.root.path().join("root/root-ca.pem");
        let inter = self.stations[i].store.join("pki/intermediate.pem");
        let certs: Vec<PathBuf> = (ids.iter())
            .map(|id| self.out_dir(i).join(id).join("cert.pem"))
            .collect();
        for chunk in certs.chunks(250) {
            let out = Command::new(OPENSSL)
                .args(["verify", "-CAfile", s(&root), "-untrusted", s(&inter)])
                .args(chunk)
                .output()
                .expect("run openssl (install it)");
            let text = all_text(&out);
            assert!(out.status.success(), "{text}");
            let ok = text.lines().filter(|l| l.ends_with(": OK")).count();
            assert_eq!(ok, chunk.len(), "{text}");
        }
    }
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("a PEM certificate");
    pem.contents
}

fn cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, c) = X509Certificate::from_der(der).expect("a DER certificate");
    assert!(rest.is_empty(), "bytes after the certificate");
    c
}

fn count(db: &mut Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).expect(sql).get(0)
}

/// No duplicates: `n` rows of distinct device ids, key fingerprints and
/// serials, one key and one certificate per device.
#[track_caller]
fn assert_unique(db: &mut Client, n: i64) {
    for (table, col) in [
        ("devices", "device_id"),
        ("device_keys", "fingerprint"),
        ("device_keys", "device_id"),
        ("issued", "serial"),
        ("issued", "device_id"),
    ] {
        let sql = format!("SELECT COUNT(*), COUNT(DISTINCT {col}) FROM {table}");
        let r = db.query_one(&sql, &[]).expect("count");
        let got = (r.get::<_, i64>(0), r.get::<_, i64>(1));
        assert_eq!(got, (n, n), "{table}.{col}: (rows, distinct)");
    }
}

/// Queries that count violations of the registry's invariants.
const VIOLATIONS: &[&str] = &[
    "SELECT COUNT(*) FROM issued i LEFT JOIN devices d USING (device_id) WHERE d.device_id IS NULL",
    "SELECT COUNT(*) FROM device_keys k LEFT JOIN devices d USING (device_id)
     WHERE d.device_id IS NULL",
    "SELECT COUNT(*) FROM devices d LEFT JOIN issued i USING (device_id) WHERE i.serial IS NULL",
    "SELECT COUNT(*) FROM (SELECT device_id FROM issued GROUP BY device_id
                           HAVING COUNT(*) <> 1) x",
    "SELECT COUNT(*) FROM issued i LEFT JOIN device_keys k
       ON k.fingerprint = i.fingerprint AND k.device_id = i.device_id
     WHERE k.fingerprint IS NULL",
    // Each device's provision event: its event id, serial and station.
    "SELECT COUNT(*) FROM devices d JOIN issued i USING (device_id) LEFT JOIN events e
       ON e.id = d.event_id AND e.event = 'provision' AND e.device_id = d.device_id
      AND e.serial = i.serial AND e.fingerprint = i.fingerprint AND e.station = d.station
     WHERE e.seq IS NULL",
];

/// The registry's invariants, then every device's rows, each certificate
/// parsed: it names the device (CN), has the row's serial and the row's key.
fn registry_consistent(db: &mut Client) -> HashMap<String, Row> {
    for sql in VIOLATIONS {
        assert_eq!(count(db, sql), 0, "{sql}");
    }
    let devices = count(db, "SELECT COUNT(*) FROM devices");
    let provisions = "SELECT COUNT(*) FROM events WHERE event = 'provision'";
    assert_eq!(count(db, provisions), devices, "provision events");
    let rows = db
        .query(
            "SELECT d.device_id, d.record_yaml, d.station, i.der, i.serial, i.issuer_serial,
                    i.fingerprint
             FROM devices d JOIN issued i USING (device_id)",
            &[],
        )
        .expect("read the registry");
    let mut out = HashMap::new();
    for r in rows {
        let (id, der): (String, Vec<u8>) = (r.get(0), r.get(3));
        let c = cert(&der);
        let cn = c.subject().iter_common_name().next().map(|a| a.as_str());
        assert_eq!(cn, Some(Ok(id.as_str())), "CN of {id}'s certificate");
        let serial: String = r.get(4);
        assert_eq!(hex::encode(c.raw_serial()), serial, "{id}");
        let spki = format!("sha256:{}", hex::encode(Sha256::digest(c.public_key().raw)));
        assert_eq!(spki, r.get::<_, String>(6), "{id}: the certified key");
        let row = Row {
            record_yaml: r.get(1),
            station: r.get(2),
            der,
            serial,
            issuer_serial: r.get(5),
        };
        out.insert(id, row);
    }
    assert_eq!(out.len() as i64, devices);
    out
}

/// The ids of a batch's "batch line N ('ID') skipped: …" lines.
fn skipped_ids(stderr: &str) -> Vec<String> {
    (stderr.lines())
        .filter(|l| l.starts_with("keyctl: batch line ") && l.contains(" skipped: "))
        .map(|l| {
            let start = l.find("('").expect("('ID')") + 2;
            l[start..start + l[start..].find("')").expect("')")].to_string()
        })
        .collect()
}

/// `ids` in a deterministic shuffled order (xorshift, Fisher-Yates).
fn shuffled(ids: &[String], mut seed: u64) -> Vec<String> {
    let mut v = ids.to_vec();
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
fn four_stations_provision_1000_devices_each_concurrently() {
    let Some(f) = Fleet::new(4) else { return };
    let lists: Vec<Vec<String>> = (0..4)
        .map(|i| (0..1000).map(|n| format!("S{i}-{n:04}")).collect())
        .collect();
    let start = Instant::now();
    let statuses = f.run_batches(&lists, false, "run");
    let secs = start.elapsed().as_secs_f64();
    eprintln!("4 stations x 1000 devices: {secs:.1} s");
    for (i, status) in statuses.iter().enumerate() {
        let (stdout, stderr) = f.outputs(i, "run");
        assert!(status.success(), "station {i}: {status}\n{stdout}{stderr}");
        assert!(stdout.contains("provisioned 1000 devices in "), "{stdout}");
        eprintln!("station {i}: {}", stdout.trim());
    }
    let mut db = f.client();
    assert_unique(&mut db, 4000);
    let rows = registry_consistent(&mut db);
    for i in 0..4 {
        f.events_intact(i, 4000);
    }
    let mut stations = BTreeSet::new();
    for (i, ids) in lists.iter().enumerate() {
        let (written, station, incomplete) = f.check_outputs(i, &rows);
        assert!(incomplete.is_empty(), "station {i}: {incomplete:?}");
        assert_eq!(written, ids.iter().cloned().collect(), "station {i}");
        assert_eq!(station.len(), 1, "station {i}'s devices name one station");
        stations.extend(station);
        f.openssl_verify(i, &written);
    }
    assert_eq!(stations.len(), 4, "four distinct station ids");
    eprintln!("whole test: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn overlapping_id_lists_give_each_id_to_exactly_one_station() {
    let Some(f) = Fleet::new(4) else { return };
    let ids: Vec<String> = (0..300).map(|n| format!("OV-{n:03}")).collect();
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    let (mut reversed, mut rotated) = (ids.clone(), ids.clone());
    reversed.reverse();
    rotated.rotate_left(150);
    let lists = [ids.clone(), reversed, rotated, shuffled(&ids, 0x5eed_1234)];
    let statuses = f.run_batches(&lists, true, "run");
    let mut db = f.client();
    assert_unique(&mut db, 300);
    let rows = registry_consistent(&mut db);
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), all);
    let sql = "SELECT station, COUNT(*) FROM devices GROUP BY station";
    let per_station: BTreeMap<String, i64> = (db.query(sql, &[]).expect(sql).iter())
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut union = BTreeSet::new();
    let mut winners = 0;
    for (i, status) in statuses.iter().enumerate() {
        let (stdout, stderr) = f.outputs(i, "run");
        let (won, station, incomplete) = f.check_outputs(i, &rows);
        assert!(incomplete.is_empty(), "station {i}: {incomplete:?}");
        // Every id once: won or skipped (a duplicate breaks the sum).
        let skipped = skipped_ids(&stderr);
        let code = Some(if skipped.is_empty() { 0 } else { 4 });
        assert_eq!(status.code(), code, "station {i}: {stderr}");
        assert_eq!(won.len() + skipped.len(), 300, "station {i}");
        assert_eq!(
            &won | &skipped.iter().cloned().collect(),
            all,
            "station {i}"
        );
        let line = format!("provisioned {} devices in ", won.len());
        assert!(stdout.contains(&line), "{stdout}");
        if !skipped.is_empty() {
            let n = format!("{} of 300 devices of the batch were already", skipped.len());
            assert!(stderr.contains(&n), "{stderr}");
        }
        for id in &won {
            assert!(union.insert(id.clone()), "{id} provisioned by two stations");
        }
        if !won.is_empty() {
            winners += 1;
            assert_eq!(station.len(), 1, "station {i}'s devices name one station");
            let st = station.first().unwrap();
            assert_eq!(per_station.get(st), Some(&(won.len() as i64)), "{i}");
        }
        // Lost to the registry's constraint after signing (not the early read).
        let late = stderr.matches("is already provisioned; a unit").count();
        let (w, sk) = (won.len(), skipped.len());
        eprintln!("station {i}: exit {code:?}, {w} won, {sk} skipped ({late} at the insert)");
    }
    assert_eq!(union, all);
    assert_eq!(per_station.len(), winners, "{per_station:?}");
    for i in 0..4 {
        f.events_intact(i, 300);
    }
}

#[test]
fn a_station_killed_mid_batch_leaves_no_half_written_device() {
    let Some(f) = Fleet::new(1) else { return };
    let ids: Vec<String> = (0..1000).map(|n| format!("K-{n:04}")).collect();
    let mut procs = Procs(vec![f.spawn_batch(0, &ids, false, "killed")]);
    let mut db = f.client();
    let deadline = Instant::now() + Duration::from_secs(300);
    // (The table appears when the station has migrated the new database.)
    let devices = |db: &mut Client| {
        let n = db.query_one("SELECT COUNT(*) FROM devices", &[]);
        n.map_or(0, |r| r.get::<_, i64>(0))
    };
    while devices(&mut db) < 50 {
        let exited = procs.0[0].try_wait().expect("wait");
        assert!(
            exited.is_none(),
            "ended early: {:?}",
            f.outputs(0, "killed")
        );
        assert!(Instant::now() < deadline, "< 50 devices after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    procs.0[0].kill().expect("SIGKILL");
    let status = procs.0[0].wait().expect("wait");
    assert_eq!(status.signal(), Some(SIGKILL), "{status}");
    f.outputs(0, "killed");
    // Until the server has ended the killed station's session (and with it
    // any transaction in flight).
    let sessions = "SELECT COUNT(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut db, sessions) > 0 {
        assert!(Instant::now() < deadline, "the killed session lingers");
        std::thread::sleep(Duration::from_millis(20));
    }

    let done = count(&mut db, "SELECT COUNT(*) FROM devices");
    assert!((50..1000).contains(&done), "{done}");
    assert_unique(&mut db, done);
    let rows = registry_consistent(&mut db);
    f.events_intact(0, done as usize);
    // The station wrote the files of every device but at most the one in
    // flight, whose rows the registry holds (they regenerate from it).
    let (written, _, incomplete) = f.check_outputs(0, &rows);
    let (n, dirs) = (written.len() as i64, written.len() + incomplete.len());
    let counts = format!("{n} written, {incomplete:?} incomplete, {done} devices");
    assert!(
        incomplete.len() <= 1 && n >= done - 1 && dirs as i64 <= done,
        "{counts}"
    );
    let missing: Vec<&String> = (rows.keys())
        .filter(|id| !written.contains(*id) && !incomplete.contains(*id))
        .collect();
    eprintln!(
        "killed after {done} devices: {} written, incomplete {incomplete:?}, no files {missing:?}",
        written.len()
    );

    // The same batch again, skipping what the registry holds.
    let status = f.run_batches(std::slice::from_ref(&ids), true, "resumed")[0];
    let (stdout, stderr) = f.outputs(0, "resumed");
    eprintln!("resumed: {}", stdout.trim());
    assert_eq!(status.code(), Some(4), "{stdout}{stderr}");
    let skipped: BTreeSet<String> = skipped_ids(&stderr).into_iter().collect();
    let registered: BTreeSet<String> = rows.keys().cloned().collect();
    // Every registered unit is skipped, except one registered but killed
    // before its certificate was installed: the rerun finishes that one.
    let resumed: Vec<&String> = registered.difference(&skipped).collect();
    assert!(
        skipped.is_subset(&registered) && resumed.len() <= 1,
        "skipped {} of {} registered; resumed {resumed:?}",
        skipped.len(),
        registered.len()
    );
    let line = format!(
        "provisioned {} devices in ",
        1000 - done + resumed.len() as i64
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert_unique(&mut db, 1000);
    let rows = registry_consistent(&mut db);
    f.events_intact(0, 1000);
    let (written, _, incomplete) = f.check_outputs(0, &rows);
    assert!(
        incomplete.len() <= 1 && written.len() >= 999,
        "{incomplete:?}"
    );
    for id in &resumed {
        assert!(written.contains(*id), "the resumed unit {id} has its files");
    }
    f.openssl_verify(0, &written);
}

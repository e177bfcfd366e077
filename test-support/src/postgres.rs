//! A PostgreSQL server for one test: a temporary cluster made with `initdb`
//! and run with `pg_ctl`, or the server named by `KEYSTORE_TEST_PG_URL`.
//!
//! - The binaries are found on `PATH`, else in the newest
//!   `/usr/lib/postgresql/*/bin` (Debian's place). If they are missing the
//!   test fails with an install hint, unless `KEYSTORE_TEST_SKIP` names
//!   `postgres` ([`crate::skip`]).
//! - The cluster lives in a 0700 directory under [`std::env::temp_dir`]. As
//!   root (PostgreSQL refuses to run as root) it runs as `nobody`, who then
//!   owns the directory.
//! - It listens on 127.0.0.1 only (a free port) and on a Unix socket in the
//!   directory. The user `keystore` logs in with a random password
//!   (SCRAM-SHA-256) that is never printed. The database `keystore` exists.
//! - Every wait is bounded. Dropping stops the server (`pg_ctl stop -m fast`,
//!   SIGKILL if that fails) and removes the directory, and never panics.

use postgres::{Client, Config, NoTls};
use std::fs::{self, Permissions};
use std::os::unix::{fs::PermissionsExt, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

/// The variable naming an external server to use instead of a cluster.
pub const URL_VAR: &str = "KEYSTORE_TEST_PG_URL";
/// The user the tests log in as (and the database `start` creates).
pub const USER: &str = "keystore";

const MISSING: &str = "PostgreSQL (initdb, pg_ctl, postgres) is missing: install it with \
    `apt-get install postgresql`, or run scripts/test, which does";
const CONNECT_WAIT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// A PostgreSQL server for one test: a temporary cluster started with
/// initdb/pg_ctl, or the server named by `KEYSTORE_TEST_PG_URL`.
pub struct TestPostgres {
    url: String,
    password: String,
    /// The cluster; `None` for an external server.
    local: Option<Local>,
    /// The databases of [`TestPostgres::fresh_database`], dropped (best
    /// effort) with an external server's fixture.
    created: Mutex<Vec<String>>,
}

struct Local {
    dir: TempDir,
    bin: PathBuf,
    /// The uid and gid the server runs as when the test runs as root.
    owner: Option<(u32, u32)>,
    port: u16,
}

impl TestPostgres {
    /// Starts a fresh cluster (or uses `KEYSTORE_TEST_PG_URL`). Returns
    /// `None` when PostgreSQL is missing and `KEYSTORE_TEST_SKIP` names
    /// `postgres` (after printing `SKIPPED`); panics with an install hint
    /// when it is missing and not skipped, and with the server log's tail
    /// when the server does not start.
    pub fn start() -> Option<TestPostgres> {
        if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
            return Some(TestPostgres::external(url));
        }
        TestPostgres::cluster()
    }

    /// Like [`TestPostgres::start`], but always a fresh cluster (whatever
    /// `KEYSTORE_TEST_PG_URL` says).
    pub fn cluster() -> Option<TestPostgres> {
        match bin_dir() {
            Some(bin) => Some(TestPostgres::start_cluster(bin)),
            None => crate::skip::skip_or_fail("postgres", MISSING),
        }
    }

    /// The running server at `url`, as [`TestPostgres::start`] takes
    /// `KEYSTORE_TEST_PG_URL`: nothing is started or stopped, and the
    /// databases of [`TestPostgres::fresh_database`] are dropped with it.
    pub fn external(url: String) -> TestPostgres {
        let config: Config = url.parse().expect("the PostgreSQL URL does not parse");
        let password = String::from_utf8_lossy(config.get_password().unwrap_or_default());
        TestPostgres::new(url, password.into_owned(), None)
    }

    fn new(url: String, password: String, local: Option<Local>) -> TestPostgres {
        let created = Mutex::default();
        TestPostgres {
            url,
            password,
            local,
            created,
        }
    }

    fn start_cluster(bin: PathBuf) -> TestPostgres {
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then(nobody);
        let dir = tempfile::Builder::new()
            .prefix("keystore-pg-")
            .tempdir_in(std::env::temp_dir())
            .expect("temporary directory for PostgreSQL");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).expect("chmod 0700");
        let (sock, pwfile) = (dir.path().join("sock"), dir.path().join("pwfile"));
        fs::create_dir(&sock).expect("socket directory");
        let password = random_hex(16);
        // Only its owner can reach the 0700 directory, so the file is private.
        fs::write(&pwfile, &password).expect("write pwfile");
        if let Some((uid, gid)) = owner {
            for p in [dir.path(), &sock, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown to nobody");
            }
        }
        // Made now, so that a panic below stops the server and removes `dir`.
        let local = Local {
            dir,
            bin,
            owner,
            port: 0,
        };
        let mut pg = TestPostgres::new(String::new(), password, Some(local));
        let local = pg.local.as_mut().expect("local");
        let mut initdb = local.command("initdb");
        let args = format!("-U {USER} --auth=scram-sha-256 -E UTF8 --locale=C");
        initdb.arg("-D").arg(local.data()).args(args.split(' '));
        initdb.arg(format!("--pwfile={}", pwfile.display()));
        let initdb = run(&mut initdb, Duration::from_secs(120));
        let _ = fs::remove_file(&pwfile);
        if let Err(e) = initdb {
            panic!("initdb failed: {e}");
        }
        let mut started = Err(String::new());
        for _ in 0..START_ATTEMPTS {
            started = local.start(free_port());
            if started.is_ok() {
                break;
            }
            local.stop();
        }
        if let Err(e) = started {
            let log = local.log_tail();
            panic!("PostgreSQL did not start ({START_ATTEMPTS} ports tried): {e}\nlog:\n{log}");
        }
        let (password, port) = (&pg.password, local.port);
        pg.url = format!("postgresql://{USER}:{password}@127.0.0.1:{port}/postgres");
        pg.connect_admin()
            .batch_execute(&format!("CREATE DATABASE {USER}"))
            .expect("CREATE DATABASE keystore");
        pg.url = with_dbname(&pg.url, USER);
        pg
    }

    /// A connection URL over TCP to 127.0.0.1, e.g.
    /// `postgresql://keystore:PASSWORD@127.0.0.1:PORT/keystore` (or
    /// `KEYSTORE_TEST_PG_URL`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The same database over the Unix socket in the temporary directory, in
    /// the key=value form tokio-postgres's `Config::from_str` accepts; `None`
    /// for an external server.
    pub fn socket_url(&self) -> Option<String> {
        let (l, password) = (self.local.as_ref()?, &self.password);
        let host = l.dir.path().join("sock");
        let (host, port) = (host.display(), l.port);
        Some(format!(
            "host={host} port={port} user={USER} password={password} dbname={USER}"
        ))
    }

    /// The password (for tests that check it never appears in output).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The cluster's temporary directory; `None` for an external server.
    pub fn dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.dir.path())
    }

    /// The postmaster's pid while the cluster runs; `None` for an external
    /// server.
    pub fn pid(&self) -> Option<u32> {
        self.local.as_ref().and_then(Local::pid)
    }

    /// Creates a new, empty database with a fresh random name on this server
    /// and returns its TCP URL (so several tests or several runs can share an
    /// external server without seeing each other's tables).
    pub fn fresh_database(&self) -> String {
        let name = format!("keystore_test_{}", random_hex(8));
        let create = format!("CREATE DATABASE {name}");
        self.connect_admin()
            .batch_execute(&create)
            .expect("CREATE DATABASE (fresh)");
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        with_dbname(&self.url, &name)
    }

    /// A client of the server's database. A failure names neither the URL
    /// nor the password.
    fn connect_admin(&self) -> Client {
        let mut config: Config = self.url.parse().expect("the server's URL parses");
        config.connect_timeout(CONNECT_WAIT);
        config
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to PostgreSQL: {e}"))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(local) = &self.local {
            return local.stop(); // then `dir` is removed
        }
        let names = std::mem::take(self.created.get_mut().unwrap_or_else(|e| e.into_inner()));
        let Ok(mut config) = self.url.parse::<Config>() else {
            return;
        };
        config.connect_timeout(CONNECT_WAIT);
        if let (false, Ok(mut client)) = (names.is_empty(), config.connect(NoTls)) {
            for name in names {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = client.batch_execute(&drop);
            }
        }
    }
}

impl Local {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the cluster's binaries, run as its owner in its directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// `pg_ctl start` on 127.0.0.1:`port` and the socket directory, waiting
    /// (bounded) until the server accepts connections.
    fn start(&mut self, port: u16) -> Result<(), String> {
        self.port = port;
        let dir = self.dir.path();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' \
             -c max_connections=60 -c shared_buffers=32MB",
            dir.join("sock").display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(dir.join("log"));
        cmd.args(["-w", "-t", "60", "-o", &opts, "start"]);
        run(&mut cmd, Duration::from_secs(90))
    }

    fn pid(&self) -> Option<u32> {
        let pidfile = fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }

    /// Stops the server if it runs: `pg_ctl stop -m fast` (bounded), else
    /// SIGKILL to the postmaster. Never panics.
    fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        if run(&mut cmd, Duration::from_secs(40)).is_err() {
            sigkill(pid);
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Runs `cmd` (stdin closed, output captured) for at most `wait`; on failure,
/// why, with its output (a process that outlives `wait` is killed).
fn run(cmd: &mut Command, wait: Duration) -> Result<(), String> {
    let what = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .spawn(move || tx.send(child.wait_with_output()))
        .map_err(|e| format!("cannot wait for {what}: {e}"))?;
    match rx.recv_timeout(wait) {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let (stdout, stderr) = (out.stdout.as_slice(), out.stderr.as_slice());
            let (o, e) = (
                String::from_utf8_lossy(stdout),
                String::from_utf8_lossy(stderr),
            );
            Err(format!("{what} failed ({}):\n{o}{e}", out.status))
        }
        Ok(Err(e)) => Err(format!("waiting for {what}: {e}")),
        Err(_) => {
            sigkill(pid);
            Err(format!("{what} did not finish within {wait:?}"))
        }
    }
}

/// The directory with initdb, pg_ctl and postgres: on `PATH`, else the
/// newest `/usr/lib/postgresql/VERSION/bin`.
fn bin_dir() -> Option<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(d) = std::env::split_paths(&path).find(|d| complete(d)) {
        return Some(d);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| complete(&e.path().join("bin")))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.split('.').map(|n| n.parse().unwrap_or(0)).collect();
            (version, e.path().join("bin"))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The uid and gid of `nobody`, whom the server runs as when tests run as root.
fn nobody() -> (u32, u32) {
    // SAFETY: a NUL-terminated name; the entry is read before any other call.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(
        !pw.is_null(),
        "as root, PostgreSQL runs as `nobody`, a user missing here"
    );
    // SAFETY: non-null, points to the static passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn sigkill(pid: u32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("getrandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `url` with its database replaced by `db` (URL or key=value form).
fn with_dbname(url: &str, db: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={db}");
    };
    let (main, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let host = main.rfind('@').unwrap_or(scheme_end + 3);
    let path = main[host..].find('/').map_or(main.len(), |i| host + i);
    format!("{}/{db}{query}", &main[..path])
}

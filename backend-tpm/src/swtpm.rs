//! A swtpm TPM 2.0 simulator for tests, demos and development.
//!
//! [`Swtpm::start`] runs
//! `swtpm socket --tpm2 --tpmstate dir=D --server type=tcp,port=P
//! --ctrl type=tcp,port=P+1 --flags not-need-init,startup-clear`
//! on a free loopback port pair and waits until it accepts connections; the
//! simulator is killed when the value drops. Its TCTI is
//! `swtpm:host=127.0.0.1,port=P`.
//!
//! swtpm serves one client connection at a time and holds three transient
//! objects; every restart (`startup-clear`) is a TPM Reset: loaded objects
//! and sessions are gone, the seeds and hierarchy auths (NV state in `D`)
//! remain.
//!
//! [`Abrmd::start`] puts the user-space resource manager `tpm2-abrmd` in
//! front of one simulator, so that several processes share it as they
//! share a device's kernel resource manager (`/dev/tpmrm0`): a private D-Bus
//! session bus (`dbus-daemon` with a configuration of its own, listening on
//! a socket in a directory of the caller's), then
//! `tpm2-abrmd --session --dbus-name=N --tcti=swtpm:… --allow-root
//! --flush-all` on it. Its TCTI is `tabrmd:bus_name=N,bus_type=session`, to
//! be used by processes whose `DBUS_SESSION_BUS_ADDRESS` is
//! [`Abrmd::bus_address`]: set it when spawning them ([`Abrmd::env`]).
//! (The tabrmd TCTI reaches the bus through GLib's per-process session-bus
//! connection, which reads that variable once and ends the process if the
//! bus goes away under it; so a test process itself should not talk to
//! abrmd, its children should.)
//!
//! [`manufacture`] prepares a state directory before the simulator starts:
//! EK certificates issued by a test manufacturer CA (a directory of
//! `swtpm_localca`'s), whose certificates [`manufacturer_ca_pem`] returns,
//! for attestation tests (see `manufacture.rs`).

pub use crate::manufacture::{
    manufacture, manufacture_with, manufacturer_ca_pem, manufacturer_issuer_pem,
    manufacturer_root_pem, EkCerts, ISSUER_CA_FILE, ROOT_CA_FILE, SETUP_INSTALL_HINT,
};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hint given when the resource manager or D-Bus is not installed.
pub const ABRMD_INSTALL_HINT: &str =
    "tpm2-abrmd or dbus-daemon is not installed; install them with \
     `apt-get install tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon dbus-bin` (Debian/Ubuntu)";

/// The hint given when the simulator is not installed.
pub const INSTALL_HINT: &str =
    "swtpm is not installed; install it with `apt-get install swtpm swtpm-tools` (Debian/Ubuntu)";

/// A running swtpm process.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state_dir: PathBuf,
}

/// True if the `swtpm` binary can be run.
pub fn available() -> bool {
    Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The lowest port of the kernel's ephemeral range (clients' source ports).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// A port P such that P and P+1 were both free on loopback a moment ago
/// (for a simulator, or for a test's proxy in front of one).
///
/// The pair is taken *below* the ephemeral range: tpm2-tss's swtpm TCTI opens
/// a TCP connection per command, so a busy test run leaves tens of thousands
/// of client sockets in TIME_WAIT on ephemeral ports, where asking the kernel
/// for "any free port" (bind to port 0) then fails.
pub fn free_port_pair() -> Option<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = 10_000u32;
    let high = u32::from(ephemeral_low())
        .saturating_sub(2)
        .max(low + 1_000);
    let span = (high - low) / 2;
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default(),
    );
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + 2 * ((seed.wrapping_add(n.wrapping_mul(7919))) % span);
        let port = u16::try_from(port).ok()?;
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let b = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1));
        if a.is_ok() && b.is_ok() {
            return Some(port);
        }
    }
    None
}

impl Swtpm {
    /// Starts a simulator with its state in `state_dir` (created if
    /// missing; an empty directory is a factory-fresh TPM). `Err` says why,
    /// with an install hint when swtpm is missing.
    pub fn start(state_dir: &Path) -> Result<Swtpm, String> {
        if !available() {
            return Err(INSTALL_HINT.to_string());
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let mut last = String::from("no free loopback port pair");
        for _ in 0..5 {
            let Some(port) = free_port_pair() else {
                continue;
            };
            let mut s = Swtpm {
                child: None,
                port,
                state_dir: state_dir.to_path_buf(),
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(format!("swtpm did not start: {last}"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let p = self.port;
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state_dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={p},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", p + 1))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run swtpm: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, p + 1));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("swtpm exited with {status}: {}", err.trim()));
            }
            // Ready when both channels accept (swtpm binds them one after
            // the other; a connection opened and closed at once is harmless
            // to the data channel, which then waits for the next client)
            // and the process is still ours and alive a moment later: a
            // swtpm that lost a port to another process exits at once,
            // while the probe may have reached that other process.
            let data = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
            if TcpStream::connect_timeout(&ctrl, Duration::from_millis(200)).is_ok()
                && TcpStream::connect_timeout(&data, Duration::from_millis(200)).is_ok()
            {
                std::thread::sleep(Duration::from_millis(30));
                if matches!(child.try_wait(), Ok(None)) {
                    self.child = Some(child);
                    return Ok(());
                }
                continue;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "swtpm did not listen on port {} within 15 s",
                    p + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCTI string for this simulator.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The data port (the control port is one above).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Kills the simulator at once (SIGKILL, like a power loss): volatile
    /// state is lost, NV state already written stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the simulator and starts it again on the same state and port:
    /// a TPM Reset. Retries for a few seconds while the port is released.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `tpm2-abrmd` resource manager in front of one [`Swtpm`], on a private
/// D-Bus session bus; both are killed on drop (abrmd first).
#[derive(Debug)]
pub struct Abrmd {
    abrmd: Option<Child>,
    dbus: Option<Child>,
    bus_name: String,
    bus_address: String,
}

/// True if `tpm2-abrmd`, `dbus-daemon` and `dbus-send` can be run.
pub fn abrmd_available() -> bool {
    let runs = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // `dbus-send --help` exits with 1: being there is enough.
    let present = |cmd: &str| {
        Command::new(cmd)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    runs(&abrmd_program(), "--version") && runs("dbus-daemon", "--version") && present("dbus-send")
}

/// `tpm2-abrmd` from `PATH`, else from `/usr/sbin` (Debian installs it
/// there, outside an ordinary user's `PATH`).
fn abrmd_program() -> String {
    let in_path = Command::new("tpm2-abrmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !in_path && Path::new("/usr/sbin/tpm2-abrmd").exists() {
        "/usr/sbin/tpm2-abrmd".into()
    } else {
        "tpm2-abrmd".into()
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Kills `child` and reaps it. (A bus socket left behind lives in the
/// caller's directory.)
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Abrmd {
    /// Starts a private session bus and `tpm2-abrmd` on it in front of
    /// `swtpm`, with the bus's configuration and socket in `work_dir`
    /// (created if missing; keep the path short, a Unix socket path has
    /// at most 107 bytes), and waits (at most 15 s) until abrmd owns its
    /// name on the bus. `Err` says why, with an install hint when a program
    /// is missing.
    pub fn start(swtpm: &Swtpm, work_dir: &Path) -> Result<Abrmd, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !abrmd_available() {
            return Err(ABRMD_INSTALL_HINT.to_string());
        }
        std::fs::create_dir_all(work_dir)
            .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let socket = work_dir.join(format!("bus-{n}"));
        let _ = std::fs::remove_file(&socket);
        let conf = work_dir.join(format!("bus-{n}.conf"));
        let socket_text = socket
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", socket.display()))?;
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                xml_escape(socket_text)
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut me = Abrmd {
            abrmd: None,
            dbus: None,
            bus_name: format!("com.example.keystore.Tabrmd.p{}.n{n}", std::process::id()),
            bus_address: String::new(),
        };
        me.start_bus(&conf)?;
        me.start_abrmd(swtpm)?;
        Ok(me)
    }

    /// `dbus-daemon --nofork --print-address`: the first line it prints is
    /// the bus address, once it listens.
    fn start_bus(&mut self, conf: &Path) -> Result<(), String> {
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .arg("--print-address=1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run dbus-daemon: {e}"))?;
        let out = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            if let Some(out) = out {
                let mut r = std::io::BufReader::new(out);
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
                // Keep draining so that the daemon never blocks on a pipe.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
        });
        self.dbus = Some(child);
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if !line.trim().is_empty() => {
                self.bus_address = line.trim().to_string();
                Ok(())
            }
            _ => Err("dbus-daemon did not print its address within 15 s".into()),
        }
    }

    fn start_abrmd(&mut self, swtpm: &Swtpm) -> Result<(), String> {
        let mut child = Command::new(abrmd_program())
            .arg("--session")
            .arg(format!("--dbus-name={}", self.bus_name))
            .arg(format!("--tcti={}", swtpm.tcti()))
            .arg("--allow-root")
            .arg("--flush-all")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run tpm2-abrmd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("tpm2-abrmd exited with {status}: {}", err.trim()));
            }
            if self.name_has_owner() {
                // Nothing reads its log from here on: never let it block.
                drop(child.stderr.take());
                self.abrmd = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                stop(&mut child);
                return Err(format!(
                    "tpm2-abrmd did not appear on the bus as {} within 15 s",
                    self.bus_name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the bus (with `dbus-send`) whether abrmd owns its name.
    fn name_has_owner(&self) -> bool {
        Command::new("dbus-send")
            .arg(format!("--bus={}", self.bus_address))
            .arg("--print-reply")
            .arg("--reply-timeout=2000")
            .arg("--dest=org.freedesktop.DBus")
            .arg("/org/freedesktop/DBus")
            .arg("org.freedesktop.DBus.NameHasOwner")
            .arg(format!("string:{}", self.bus_name))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("true"))
            .unwrap_or(false)
    }

    /// The TCTI string for processes that use this resource manager (with
    /// [`Abrmd::bus_address`] as their `DBUS_SESSION_BUS_ADDRESS`).
    pub fn tcti(&self) -> String {
        format!("tabrmd:bus_name={},bus_type=session", self.bus_name)
    }

    /// The name abrmd owns on the bus.
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// The private bus's address: the `DBUS_SESSION_BUS_ADDRESS` of every
    /// process that uses [`Abrmd::tcti`].
    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }

    /// The environment a child process needs to use [`Abrmd::tcti`], for
    /// `Command::envs`.
    pub fn env(&self) -> [(&'static str, String); 1] {
        [("DBUS_SESSION_BUS_ADDRESS", self.bus_address.clone())]
    }

    /// True while both abrmd and its bus run.
    pub fn is_running(&mut self) -> bool {
        let alive =
            |c: &mut Option<Child>| matches!(c.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
        alive(&mut self.abrmd) && alive(&mut self.dbus)
    }
}

impl Drop for Abrmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.abrmd.take() {
            stop(&mut c);
        }
        if let Some(mut c) = self.dbus.take() {
            stop(&mut c);
        }
    }
}

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

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

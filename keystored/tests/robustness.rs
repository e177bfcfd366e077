//! keystored under bad input: malformed HTTP/2, oversized messages, callers
//! that vanish mid-call, a thousand connections at once, and callers that
//! stop reading or never speak. Every test runs the real daemon as its own
//! process on a soft store in a temporary directory, talks to it over its
//! Unix socket (raw bytes or tonic), waits only for bounded times, and after
//! each abuse checks that the daemon still runs, that a fresh client signs
//! and verifies, and that no key was lost (list and info unchanged, earlier
//! signatures and envelopes still good).
//!
//! The tests take a lock so that they run one at a time: they measure the
//! daemon's memory and latency, which other tests' load would blur.

use keystore_api::{Actor, Algorithm, KeyInfo, KeySpec, Role, Signature, SignatureFormat};
use keystore_client::Client;
use keystore_rpc::pb;
use keystore_rpc::pb::key_use_client::KeyUseClient;
use prost::Message;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use test_support::daemon::Daemon;
use tonic::transport::{Channel, Endpoint};

/// The root test process uses keys (sign, encrypt, decrypt).
const POLICY: &str = "[[caller]]\nuid = 0\nrole = \"application\"\nkeys = [\"*\"]\n";

/// Signed and encrypted before any abuse; must still verify and open after.
const EARLY: &[u8] = b"signed before the abuse";

/// Keys as their lifecycle left them: without the AES-GCM encryption counts,
/// which every encryption moves and which another process sees including
/// the daemon's reserved block (`docs/usage-limits.md`).
fn lifecycle(mut keys: Vec<KeyInfo>) -> Vec<KeyInfo> {
    for k in &mut keys {
        for v in &mut k.versions {
            v.encryptions = None;
        }
    }
    keys
}

/// How long any single check may wait for the daemon before it counts as a hang.
const HANG: Duration = Duration::from_secs(30);

/// One test at a time (memory and latency figures are per test).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The daemon, its keys and the health check run after every abuse.

/// A started daemon with an ECDSA key `k` and an AES key `aes`, and what
/// the store held before the abuse.
struct Fixture {
    daemon: Daemon,
    baseline: Vec<KeyInfo>,
    early_sig: Signature,
    early_envelope: Vec<u8>,
}

impl Fixture {
    fn start(limits: &str) -> Fixture {
        let mut daemon = Daemon::soft(POLICY, limits);
        {
            let ks = daemon.open_store();
            let so = Actor::new("setup", Role::SecurityOfficer).expect("actor");
            ks.create(&so, "k", KeySpec::new(Algorithm::EcdsaP256Sha256))
                .expect("create k");
            ks.create(&so, "aes", KeySpec::new(Algorithm::Aes256Gcm))
                .expect("create aes");
        }
        daemon.start();
        let socket = socket_str(&daemon);
        let (baseline, early_sig, early_envelope) = bounded(HANG, "setting up", move || {
            let c = Client::connect(&socket).expect("connect");
            let sig = c.sign("k", EARLY, SignatureFormat::Der).expect("sign");
            let env = c.encrypt("aes", EARLY, b"aad").expect("encrypt");
            (lifecycle(c.list().expect("list")), sig, env)
        });
        assert!(
            baseline.len() >= 2,
            "the store lists its keys: {baseline:?}"
        );
        Fixture {
            daemon,
            baseline,
            early_sig,
            early_envelope,
        }
    }

    fn pid(&self) -> u32 {
        self.daemon.pid().expect("daemon running")
    }

    fn socket(&self) -> PathBuf {
        self.daemon.socket()
    }

    /// The daemon is alive, serves a fresh client (sign, verify, decrypt),
    /// and every key is as it was; no panic in its log.
    fn assert_serving(&self, after: &str) {
        assert_alive(&self.daemon, after);
        let socket = socket_str(&self.daemon);
        let baseline = self.baseline.clone();
        let early_sig = self.early_sig.clone();
        let early_envelope = self.early_envelope.clone();
        let what = format!("a fresh client after {after}");
        let w = what.clone();
        bounded(HANG, &what, move || {
            let c = Client::connect(&socket).unwrap_or_else(|e| panic!("{w}: connect: {e}"));
            let msg = format!("signed after {w}");
            let sig = c
                .sign("k", msg.as_bytes(), SignatureFormat::Der)
                .unwrap_or_else(|e| panic!("{w}: sign: {e}"));
            assert_eq!(
                c.verify("k", msg.as_bytes(), &sig.bytes, None)
                    .unwrap_or_else(|e| panic!("{w}: verify: {e}")),
                sig.version
            );
            assert_eq!(
                c.verify("k", EARLY, &early_sig.bytes, None)
                    .unwrap_or_else(|e| panic!("{w}: verify the early signature: {e}")),
                early_sig.version
            );
            let plain = c
                .decrypt("aes", &early_envelope, b"aad")
                .unwrap_or_else(|e| panic!("{w}: decrypt the early envelope: {e}"));
            assert_eq!(plain.expose(), EARLY, "{w}");
            assert_eq!(
                lifecycle(c.list().expect("list")),
                baseline,
                "{w}: keys changed"
            );
            for k in &baseline {
                let info = lifecycle(vec![c.info(&k.name).expect("info")]);
                assert_eq!(&info[0], k, "{w}: key changed");
            }
        });
        // The store itself, read in this process, agrees.
        let ks = self.daemon.open_store();
        assert_eq!(
            lifecycle(ks.list().expect("list in process")),
            self.baseline,
            "{what}: the store's keys changed"
        );
        assert_eq!(
            ks.verify("k", EARLY, &self.early_sig.bytes, None)
                .expect("verify in process"),
            self.early_sig.version
        );
        self.assert_no_panic(after);
    }

    fn assert_no_panic(&self, after: &str) {
        for line in self.daemon.drain_log() {
            eprintln!("daemon: {line}");
            assert!(
                !line.contains("panicked"),
                "keystored panicked after {after}: {line}"
            );
        }
    }
}

fn socket_str(d: &Daemon) -> String {
    d.socket().display().to_string()
}

/// The daemon's process exists and is not a zombie.
fn assert_alive(d: &Daemon, after: &str) {
    let pid = d.pid().expect("daemon started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("keystored (pid {pid}) is gone after {after}: {e}"));
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .expect("state in /proc/PID/stat");
    assert!(
        state != 'Z' && state != 'X',
        "keystored (pid {pid}) died after {after}; log:\n{}",
        d.drain_log().join("\n")
    );
}

/// Runs `f` on its own thread; a result later than `limit` is a hang and fails the test.
fn bounded<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {limit:?}: the daemon hangs")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sent nothing and did not panic"),
        },
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tonic channels over the socket.

/// A channel of its own connection to the daemon; `connects` counts the
/// connections it dials.
async fn channel(socket: PathBuf, connects: Arc<AtomicUsize>) -> Channel {
    Endpoint::from_static("http://keystored.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = socket.clone();
            let connects = connects.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                connects.fetch_add(1, Ordering::SeqCst);
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect a channel")
}

fn key_use(ch: Channel) -> KeyUseClient<Channel> {
    KeyUseClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

fn sign_request(message: Vec<u8>) -> pb::SignRequest {
    pb::SignRequest {
        name: "k".into(),
        message,
        format: pb::SignatureFormat::Der as i32,
    }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------
// HTTP/2 by hand.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The HTTP/2 error codes a malformed connection may be closed with.
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24);
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// HPACK: a literal header field without indexing, new name, no Huffman.
fn hpack_literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// The header block of a gRPC call to `path`.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "keystored.invalid"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(n, v, &mut b);
    }
    b
}

/// A gRPC length-prefixed message: uncompressed, 4-byte big-endian length.
fn grpc_message(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut m = vec![0u8];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(&body);
    m
}

#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    fn error_code(&self) -> Option<u32> {
        let at = match self.ty {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        self.payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
}

#[derive(Debug)]
enum Next {
    Frame(Frame),
    /// EOF or reset by the daemon.
    Closed,
    TimedOut,
}

/// How a call on a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The daemon ended the stream (a response, or trailers only).
    Stream,
    /// The daemon reset the stream with this code.
    Reset(u32),
    /// The daemon sent GOAWAY with this code.
    GoAway(u32),
    /// The daemon closed the connection.
    Closed,
    /// Nothing within the wait.
    TimedOut,
}

/// A hand-driven HTTP/2 connection: frames in and out, flow control for
/// what it sends, SETTINGS and PING acknowledged while it reads.
struct Raw {
    s: UnixStream,
    buf: Vec<u8>,
    conn_window: i64,
    stream_windows: HashMap<u32, i64>,
    peer_initial_window: i64,
    peer_max_frame: usize,
}

impl Raw {
    fn connect(socket: &std::path::Path) -> Raw {
        let s = UnixStream::connect(socket).expect("connect the raw socket");
        s.set_write_timeout(Some(HANG)).expect("write timeout");
        Raw {
            s,
            buf: Vec::new(),
            conn_window: 65_535,
            stream_windows: HashMap::new(),
            peer_initial_window: 65_535,
            peer_max_frame: 16_384,
        }
    }

    /// Preface and SETTINGS (`params`); `window`: also open the
    /// connection's receive window to its maximum.
    fn handshake(&mut self, params: &[(u16, u32)], window: bool) {
        let mut out = PREFACE.to_vec();
        out.extend(settings(params));
        if window {
            out.extend(window_update(0, MAX_WINDOW - 65_535));
        }
        self.s.write_all(&out).expect("write the preface");
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The next frame, or how the wait ended.
    fn next(&mut self, deadline: Instant) -> Next {
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let f = Frame {
                        ty: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    };
                    self.on_frame(&f);
                    return Next::Frame(f);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            self.s
                .set_read_timeout(Some(deadline - now))
                .expect("read timeout");
            match self.s.read(&mut tmp) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Next::TimedOut
                }
                Err(_) => return Next::Closed,
            }
        }
    }

    fn on_frame(&mut self, f: &Frame) {
        match f.ty {
            SETTINGS if f.flags & ACK == 0 => {
                for p in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    match id {
                        SETTINGS_INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(v) - self.peer_initial_window;
                            self.peer_initial_window = i64::from(v);
                            for w in self.stream_windows.values_mut() {
                                *w += delta;
                            }
                        }
                        SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = v as usize,
                        _ => {}
                    }
                }
                let _ = self.s.write_all(&frame(SETTINGS, ACK, 0, &[]));
            }
            WINDOW_UPDATE if f.payload.len() == 4 => {
                let inc = i64::from(
                    u32::from_be_bytes(f.payload[..4].try_into().expect("4")) & 0x7fff_ffff,
                );
                if f.stream == 0 {
                    self.conn_window += inc;
                } else if let Some(w) = self.stream_windows.get_mut(&f.stream) {
                    *w += inc;
                }
            }
            PING if f.flags & ACK == 0 => {
                let _ = self.s.write_all(&frame(PING, ACK, 0, &f.payload));
            }
            _ => {}
        }
    }

    /// HEADERS of a gRPC call to `path` on `stream`.
    fn send_headers(&mut self, stream: u32, path: &str) {
        self.stream_windows.insert(stream, self.peer_initial_window);
        let f = frame(HEADERS, END_HEADERS, stream, &grpc_headers(path));
        self.write(&f).expect("write HEADERS");
    }

    /// DATA on `stream` within the daemon's flow-control windows, reading
    /// its frames (window updates) while it must wait.
    fn send_data(&mut self, stream: u32, data: &[u8], end: bool, deadline: Instant) {
        let mut off = 0;
        loop {
            let window = self.conn_window.min(self.stream_windows[&stream]);
            let n = (data.len() - off)
                .min(self.peer_max_frame)
                .min(window.max(0) as usize);
            if n > 0 || off == data.len() {
                let last = off + n == data.len();
                let flags = if last && end { END_STREAM } else { 0 };
                self.write(&frame(DATA, flags, stream, &data[off..off + n]))
                    .expect("write DATA");
                self.conn_window -= n as i64;
                *self.stream_windows.get_mut(&stream).expect("stream") -= n as i64;
                off += n;
                if last {
                    return;
                }
                continue;
            }
            match self.next(deadline) {
                Next::Frame(f) if f.ty == GOAWAY || (f.ty == RST_STREAM && f.stream == stream) => {
                    panic!("the daemon refused the upload: {f:?}")
                }
                Next::Frame(_) => {}
                other => panic!("the daemon stopped reading the upload: {other:?}"),
            }
        }
    }

    /// Reads until `stream` ends; returns how, and its DATA payload. Opens
    /// the windows again for what it reads.
    fn response(&mut self, stream: u32, deadline: Instant) -> (End, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Frame(f) => {
                    if f.ty == DATA && f.stream == stream {
                        data.extend_from_slice(&f.payload);
                        if !f.payload.is_empty() {
                            let n = f.payload.len() as u32;
                            let mut wu = window_update(0, n);
                            wu.extend(window_update(stream, n));
                            let _ = self.s.write_all(&wu);
                        }
                    }
                    let ends = (f.ty == DATA || f.ty == HEADERS)
                        && f.stream == stream
                        && f.flags & END_STREAM != 0;
                    if ends {
                        return (End::Stream, data);
                    }
                    if f.ty == RST_STREAM && f.stream == stream {
                        return (End::Reset(f.error_code().unwrap_or(0)), data);
                    }
                    if f.ty == GOAWAY {
                        return (End::GoAway(f.error_code().unwrap_or(0)), data);
                    }
                }
                Next::Closed => return (End::Closed, data),
                Next::TimedOut => return (End::TimedOut, data),
            }
        }
    }

    /// Reads until the daemon closes the connection; the GOAWAY codes seen.
    fn until_closed(&mut self, wait: Duration) -> Result<Vec<u32>, String> {
        let deadline = Instant::now() + wait;
        let mut goaways = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Frame(f) if f.ty == GOAWAY => goaways.push(f.error_code().unwrap_or(0)),
                Next::Frame(_) => {}
                Next::Closed => return Ok(goaways),
                Next::TimedOut => {
                    return Err(format!(
                        "still open after {wait:?} (GOAWAY codes seen: {goaways:?})"
                    ))
                }
            }
        }
    }
}

/// Decodes the one gRPC message of a unary response body.
fn decode_grpc<M: Message + Default>(body: &[u8]) -> M {
    assert!(body.len() >= 5, "a gRPC message: {} bytes", body.len());
    assert_eq!(body[0], 0, "uncompressed");
    let len = u32::from_be_bytes(body[1..5].try_into().expect("4")) as usize;
    assert_eq!(body.len(), 5 + len, "one whole message");
    M::decode(&body[5..]).expect("decode the response")
}

// ---------------------------------------------------------------------------
// 1. Malformed frames.

#[test]
fn malformed_frames_close_that_connection_and_the_daemon_keeps_serving() {
    let _serial = serial();
    let f = Fixture::start("");
    let rss_before = f.daemon.rss_kib();

    let random = garbage(0x5eed, 8192);
    assert_ne!(&random[..PREFACE.len()], PREFACE);
    let mut after_preface = PREFACE.to_vec();
    let frames = garbage(0xfeed, 8192);
    assert_ne!(
        frames[3], SETTINGS,
        "the first garbage frame is not SETTINGS"
    );
    after_preface.extend(&frames);

    let mut preface_settings = PREFACE.to_vec();
    preface_settings.extend(settings(&[]));

    let with = |tail: &[Vec<u8>]| {
        let mut v = preface_settings.clone();
        for t in tail {
            v.extend_from_slice(t);
        }
        v
    };
    let headers = |block: &[u8]| frame(HEADERS, END_HEADERS | END_STREAM, 1, block);
    let mut good_then_bad = grpc_headers("/keystore.v1.KeyUse/Sign");
    good_then_bad.extend([0x80]); // indexed field 0: a decoding error

    // (what, bytes, whether an HTTP/2 error (GOAWAY) must come before the
    // close: yes once the preface was valid)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", random, false),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: keystored\r\n\r\n".to_vec(),
            false,
        ),
        (
            "half a preface, then random bytes",
            [&PREFACE[..12], &garbage(7, 512)[..]].concat(),
            false,
        ),
        ("a preface, then random frames", after_preface, true),
        (
            "a preface, then a frame header claiming 16 MiB",
            [
                PREFACE,
                &settings(&[])[..],
                &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1],
            ]
            .concat(),
            true,
        ),
        (
            "a SETTINGS frame of 5 bytes",
            [PREFACE, &frame(SETTINGS, 0, 0, &[1, 2, 3, 4, 5])[..]].concat(),
            true,
        ),
        (
            "DATA on stream 0",
            with(&[frame(DATA, 0, 0, b"junk")]),
            true,
        ),
        (
            "a WINDOW_UPDATE of 0 on the connection",
            with(&[window_update(0, 0)]),
            true,
        ),
        ("HPACK: indexed field 0", with(&[headers(&[0x80])]), true),
        (
            "HPACK: an index far past both tables",
            with(&[headers(&[0xff, 0xff, 0xff, 0xff, 0x0f])]),
            true,
        ),
        (
            "HPACK: a literal longer than its block",
            with(&[headers(&[0x00, 0x7f, 0xff, 0x7f, b'a', b'b'])]),
            true,
        ),
        (
            "HPACK: a table size update past the limit",
            with(&[headers(&[0x3f, 0xe1, 0xff, 0xff, 0x0f])]),
            true,
        ),
        (
            "HPACK: valid gRPC headers, then a broken field",
            with(&[headers(&good_then_bad)]),
            true,
        ),
    ];

    let mut failures = Vec::new();
    for (what, bytes, goaway) in &cases {
        let mut raw = Raw::connect(&f.socket());
        // The daemon may close before it has read everything.
        let _ = raw.write(bytes);
        match raw.until_closed(Duration::from_secs(10)) {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok(codes) => {
                // An error, not NO_ERROR. (h2 reports HPACK errors as
                // PROTOCOL_ERROR rather than COMPRESSION_ERROR.)
                let errors = [PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR];
                if *goaway && !codes.iter().any(|c| errors.contains(c)) {
                    failures.push(format!(
                        "{what}: closed with GOAWAY codes {codes:?}, not an HTTP/2 error"
                    ));
                }
            }
        }
        assert_alive(&f.daemon, what);
    }
    assert!(
        failures.is_empty(),
        "malformed input was not refused:\n{}",
        failures.join("\n")
    );

    // The same, 50 connections at once, while a client works.
    let socket = f.socket();
    let abusers: Vec<_> = (0..50u64)
        .map(|i| {
            let socket = socket.clone();
            let bytes = cases[i as usize % cases.len()].1.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(&socket);
                let _ = raw.write(&bytes);
                raw.until_closed(Duration::from_secs(15))
            })
        })
        .collect();
    f.assert_serving("malformed frames on 50 connections at once");
    for a in abusers {
        a.join()
            .expect("abuser thread")
            .expect("every malformed connection is closed");
    }

    f.assert_serving("malformed frames");
    let rss_after = f.daemon.rss_kib();
    eprintln!(
        "malformed frames: daemon RSS {:.1} MiB before, {:.1} MiB after",
        mib(rss_before),
        mib(rss_after)
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew by more than 64 MiB"
    );
}

// ---------------------------------------------------------------------------
// 2. Oversized messages.

#[test]
fn oversized_messages_are_refused_and_the_connection_keeps_serving() {
    let _serial = serial();
    let f = Fixture::start("max_message_bytes = 65536");

    // The blocking client: a clear InvalidInput, then the same client works.
    let socket = socket_str(&f.daemon);
    bounded(HANG, "oversized sign through keystore-client", move || {
        let c = Client::connect(&socket).expect("connect");
        let e = c
            .sign("k", &vec![0x5a; 100 * 1024], SignatureFormat::Der)
            .expect_err("a 100 KiB sign is refused");
        assert_eq!(
            e.kind(),
            keystore_api::ErrorKind::InvalidInput,
            "the refusal's kind: {e}"
        );
        let sig = c
            .sign("k", &[0x5a; 1024], SignatureFormat::Der)
            .expect("a 1 KiB sign after the refusal");
        c.verify("k", &[0x5a; 1024], &sig.bytes, None)
            .expect("its signature verifies");
    });

    // Tonic on one counted connection: the exact limit, over it, the
    // response over it, and the same connection afterwards.
    let connects = Arc::new(AtomicUsize::new(0));
    let socket = f.socket();
    let c2 = connects.clone();
    let ks = f.daemon.open_store();
    let overhead = sign_request(vec![0; 65_000]).encoded_len() - 65_000;
    let at_limit_msg = vec![1u8; 65_536 - overhead];
    let m = at_limit_msg.clone();
    let (sig_at_limit, sig_after) = runtime(2).block_on(async move {
        let at_limit_msg = m;
        let mut c = key_use(channel(socket, c2).await);

        let at_limit = sign_request(at_limit_msg.clone());
        assert_eq!(at_limit.encoded_len(), 65_536);
        let over_limit = sign_request(vec![1; 65_536 - overhead + 1]);

        let at = tokio::time::timeout(HANG, c.sign(at_limit))
            .await
            .expect("no hang")
            .expect("a request of exactly max_message_bytes is served")
            .into_inner();

        for (what, req) in [
            ("one byte over the limit", over_limit),
            ("100 KiB", sign_request(vec![2; 100 * 1024])),
            ("4 MiB", sign_request(vec![3; 4 << 20])),
        ] {
            let s = tokio::time::timeout(HANG, c.sign(req))
                .await
                .expect("no hang")
                .expect_err(what);
            assert!(
                matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
                ),
                "{what}: refused with {s:?}"
            );
            assert_eq!(
                keystore_rpc::error_of(&s).kind(),
                keystore_api::ErrorKind::InvalidInput
            );
        }

        // A request under the limit whose response is over it.
        let req = pb::EncryptRequest {
            name: "aes".into(),
            plaintext: vec![4; 65_500],
            aad: vec![],
        };
        assert!(req.encoded_len() < 65_536);
        let s = match tokio::time::timeout(HANG, c.encrypt(req))
            .await
            .expect("no hang")
        {
            Err(s) => s,
            Ok(r) => panic!(
                "a response of {} bytes went out past max_message_bytes = 65536",
                r.into_inner().encoded_len()
            ),
        };
        assert!(
            matches!(
                s.code(),
                tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
            ),
            "response over the limit: {s:?}"
        );

        let after = tokio::time::timeout(HANG, c.sign(sign_request(vec![5; 1024])))
            .await
            .expect("no hang")
            .expect("a 1 KiB sign on the same connection")
            .into_inner();
        (at, after)
    });
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "every call went over the one connection"
    );
    assert!(ks
        .verify("k", &at_limit_msg, &sig_at_limit.signature, None)
        .is_ok());
    assert!(ks
        .verify("k", &[5; 1024], &sig_after.signature, None)
        .is_ok());

    // A raw call whose gRPC length prefix claims 4 GiB: refused at once,
    // without waiting for the bytes (request_timeout is the default 30 s).
    let mut raw = Raw::connect(&f.socket());
    raw.handshake(&[], false);
    raw.send_headers(1, "/keystore.v1.KeyUse/Sign");
    let t = Instant::now();
    raw.write(&frame(DATA, 0, 1, &[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]))
        .expect("write DATA");
    let (end, _) = raw.response(1, Instant::now() + Duration::from_secs(10));
    assert!(
        matches!(end, End::Stream | End::Reset(_)),
        "a 4 GiB length prefix ends the call: {end:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused at once, not after a timeout: {:?}",
        t.elapsed()
    );
    // The connection itself is still usable: a well-formed call on stream 3.
    let body = grpc_message(&sign_request(b"raw".to_vec()));
    raw.send_headers(3, "/keystore.v1.KeyUse/Sign");
    raw.send_data(3, &body, true, Instant::now() + HANG);
    let (end, data) = raw.response(3, Instant::now() + HANG);
    assert_eq!(end, End::Stream);
    let r: pb::SignResponse = decode_grpc(&data);
    assert!(ks.verify("k", b"raw", &r.signature, None).is_ok());

    f.assert_serving("oversized messages");
    eprintln!(
        "oversized messages: refused at the limit + 1 byte, 100 KiB, 4 MiB and a 4 GiB prefix; daemon RSS {:.1} MiB",
        mib(f.daemon.rss_kib())
    );
}

// ---------------------------------------------------------------------------
// 3. Clients that go away mid-call.

#[test]
fn clients_disconnecting_mid_call_leave_the_daemon_serving() {
    let _serial = serial();
    // Few connection slots: a slot leaked by an abandoned call would soon
    // leave no room for the health check.
    let f = Fixture::start("request_timeout_seconds = 3\nmax_connections = 16");
    let rss_before = f.daemon.rss_kib();
    let fds_before = open_fds(f.pid());

    // (a) Raw: a Sign whose length prefix promises 1000 bytes, 10 sent,
    // then the socket closed. Four times the connection limit.
    for i in 0..64u32 {
        let mut raw = Raw::connect(&f.socket());
        raw.handshake(&[], false);
        raw.send_headers(1, "/keystore.v1.KeyUse/Sign");
        let mut partial = vec![0u8];
        partial.extend_from_slice(&1000u32.to_be_bytes());
        partial.extend_from_slice(&[0x0a, 0x01, b'k', 0x12, 0xe3, 0x07, 1, 2, 3, 4]);
        raw.write(&frame(DATA, 0, 1, &partial))
            .expect("write the partial DATA");
        if i % 2 == 1 {
            // Half of them half-close first, as a client that crashed mid-write.
            let _ = raw.s.shutdown(std::net::Shutdown::Write);
        }
        drop(raw);
    }
    assert_alive(&f.daemon, "64 abandoned raw calls");

    // (b) Raw: the same partial request, held open: the daemon ends the
    // call after request_timeout_seconds (3 s), not before, not never.
    let mut raw = Raw::connect(&f.socket());
    raw.handshake(&[], false);
    raw.send_headers(1, "/keystore.v1.KeyUse/Sign");
    let mut partial = vec![0u8];
    partial.extend_from_slice(&1000u32.to_be_bytes());
    partial.extend_from_slice(&[0x0a, 0x01, b'k']);
    let t = Instant::now();
    raw.write(&frame(DATA, 0, 1, &partial)).expect("write");
    let (end, _) = raw.response(1, Instant::now() + Duration::from_secs(15));
    let took = t.elapsed();
    assert!(
        matches!(end, End::Stream | End::Reset(_)),
        "a stalled upload is ended by the daemon: {end:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "ended by request_timeout_seconds = 3: after {took:?}"
    );
    drop(raw);

    // (c) Tonic: large signs interrupted while the request is in flight,
    // by dropping the call, by aborting its task, and by dropping the
    // whole runtime with the call running.
    let big = Arc::new(vec![0x42u8; 12 << 20]);
    let connects = Arc::new(AtomicUsize::new(0));
    let interrupted = AtomicUsize::new(0);
    let rt = runtime(2);
    for delay_ms in [0u64, 1, 3, 10, 30] {
        rt.block_on(async {
            let mut c = key_use(channel(f.socket(), connects.clone()).await);
            let req = sign_request(big.to_vec());
            match tokio::time::timeout(Duration::from_millis(delay_ms), c.sign(req)).await {
                Err(_) => {
                    interrupted.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => {
                    r.expect("a call that was not interrupted succeeds");
                }
            }
            let c = key_use(channel(f.socket(), connects.clone()).await);
            let req = sign_request(big.to_vec());
            let task = tokio::spawn(async move {
                let mut c = c;
                c.sign(req).await
            });
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            task.abort();
            if let Err(e) = task.await {
                assert!(e.is_cancelled());
                interrupted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    drop(rt);
    for delay_ms in [2u64, 20] {
        let rt = runtime(1);
        let socket = f.socket();
        let connects = connects.clone();
        let big = big.clone();
        let task = rt.spawn(async move {
            let mut c = key_use(channel(socket, connects).await);
            c.sign(sign_request(big.to_vec())).await
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        if !task.is_finished() {
            interrupted.fetch_add(1, Ordering::SeqCst);
        }
        rt.shutdown_background();
    }
    let interrupted = interrupted.into_inner();
    eprintln!("disconnects: {interrupted} of 12 tonic calls interrupted in flight");
    assert!(
        interrupted >= 3,
        "at least some calls were really interrupted in flight ({interrupted})"
    );

    f.assert_serving("clients disconnecting mid-call");

    // Every abandoned connection was let go: descriptors back to where they were.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = open_fds(f.pid());
    while fds > fds_before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds = open_fds(f.pid());
    }
    let rss_after = f.daemon.rss_kib();
    eprintln!(
        "disconnects: daemon RSS {:.1} MiB before, {:.1} MiB after; fds {fds_before} before, {fds} after",
        mib(rss_before),
        mib(rss_after)
    );
    assert!(
        fds <= fds_before + 2,
        "connections leaked: {fds} descriptors open, {fds_before} before"
    );
    assert!(
        rss_after < 256 * 1024,
        "daemon RSS {:.1} MiB after the interrupted calls",
        mib(rss_after)
    );
}

// ---------------------------------------------------------------------------
// 4. A thousand connections at once.

/// The soft limit on open files of a process.
fn nofile(pid: &str) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Samples the daemon's RSS until stopped; the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(kib) = rss_of(pid) {
                    p.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One round: `n` connections opened at once, then `n` signs at once.
/// Returns (daemon fds while all are open, RSS peak, RSS after they close, wall time).
fn thousand_connections(f: &Fixture, n: usize, round: usize) -> (usize, u64, u64, Duration) {
    let pid = f.pid();
    let sampler = RssSampler::start(pid);
    let connects = Arc::new(AtomicUsize::new(0));
    let socket = f.socket();
    let t = Instant::now();
    let rt = runtime(2);
    let (results, fds_open) = rt.block_on(async {
        let channels: Vec<Channel> = tokio::time::timeout(HANG, async {
            let tasks: Vec<_> = (0..n)
                .map(|_| tokio::spawn(channel(socket.clone(), connects.clone())))
                .collect();
            let mut chans = Vec::with_capacity(n);
            for t in tasks {
                chans.push(t.await.expect("connect task"));
            }
            chans
        })
        .await
        .expect("1,000 connections opened within 30 s");
        assert_eq!(connects.load(Ordering::SeqCst), n, "one connection each");
        // Wait until the daemon has accepted them all.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut fds = open_fds(pid);
        while fds < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fds = open_fds(pid);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let calls: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(i, ch)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut c = key_use(ch);
                    let msg = format!("round {round} call {i}").into_bytes();
                    barrier.wait().await;
                    let t = Instant::now();
                    let r = c.sign(sign_request(msg.clone())).await;
                    (msg, r.map(|r| r.into_inner()), t.elapsed())
                })
            })
            .collect();
        let results = tokio::time::timeout(Duration::from_secs(60), async {
            let mut out = Vec::with_capacity(n);
            for c in calls {
                out.push(c.await.expect("call task"));
            }
            out
        })
        .await
        .expect("1,000 concurrent signs answered within 60 s (no hang)");
        (results, fds)
    });
    // Every channel is dropped with its task: the connections close.
    drop(rt);
    let took = t.elapsed();

    let ks = f.daemon.open_store();
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for (msg, r, latency) in &results {
        slowest = slowest.max(*latency);
        match r {
            Ok(sig) => assert!(
                ks.verify("k", msg, &sig.signature, None).is_ok(),
                "a signature from the crowd does not verify"
            ),
            Err(s) => failed.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} concurrent signs failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // The daemon lets the closed connections go.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = open_fds(pid);
    while fds > 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds = open_fds(pid);
    }
    assert!(
        fds <= 64,
        "{fds} descriptors still open 10 s after the clients closed"
    );
    std::thread::sleep(Duration::from_millis(500));
    let peak = sampler.stop();
    let after = f.daemon.rss_kib();
    eprintln!(
        "1,000 connections, round {round}: {n} signs in {took:?} (slowest {slowest:?}); daemon fds {fds_open} open, {fds} after; RSS peak {:.1} MiB, {:.1} MiB after close",
        mib(peak),
        mib(after)
    );
    (fds_open, peak, after, took)
}

#[test]
fn a_thousand_concurrent_connections_are_served_with_bounded_memory() {
    let _serial = serial();
    const N: usize = 1000;
    let me = nofile("self");
    assert!(
        me >= 2 * N as u64 + 256,
        "this test needs `ulimit -n` of at least {} (is {me})",
        2 * N + 256
    );
    let f = Fixture::start("");
    let daemon_limit = nofile(&f.pid().to_string());
    assert!(
        daemon_limit >= N as u64 + 256,
        "keystored may open only {daemon_limit} files"
    );
    let rss_before = f.daemon.rss_kib();

    let mut rounds = Vec::new();
    for round in 1..=3 {
        let (fds, peak, after, _) = thousand_connections(&f, N, round);
        assert!(
            fds >= N,
            "round {round}: the daemon held all {N} connections at once ({fds} fds)"
        );
        f.assert_serving(&format!("round {round} of 1,000 concurrent connections"));
        rounds.push((peak, after));
    }

    eprintln!(
        "1,000 connections: daemon RSS {:.1} MiB before; (peak, after close) per round: {}",
        mib(rss_before),
        rounds
            .iter()
            .map(|(p, a)| format!("({:.1}, {:.1}) MiB", mib(*p), mib(*a)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, (peak, after)) in rounds.iter().enumerate() {
        let round = i + 1;
        assert!(
            *peak < 256 * 1024,
            "round {round}: daemon RSS peaked at {:.1} MiB",
            mib(*peak)
        );
        // Flat or lower once the connections are gone (within the
        // sampler's resolution).
        assert!(
            *after <= *peak + 2 * 1024,
            "round {round}: RSS grew after the connections closed"
        );
    }
    // Not growing with every thousand: no per-connection leak.
    let (first, last) = (rounds[0].1, rounds[2].1);
    assert!(
        last < first + 24 * 1024,
        "RSS grows with every round of 1,000 connections: {:.1} MiB after round 1, {:.1} MiB after round 3",
        mib(first),
        mib(last)
    );
}

// ---------------------------------------------------------------------------
// 5. Clients that stop reading, or never speak.

/// A Decrypt of `envelope` sent raw, with windows wide open so the daemon
/// may push the whole (large) response; the caller then stops reading.
fn stuck_decrypt(socket: &std::path::Path, envelope: &[u8]) -> Raw {
    let mut raw = Raw::connect(socket);
    raw.handshake(&[(SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)], true);
    let body = grpc_message(&pb::DecryptRequest {
        name: "aes".into(),
        envelope: envelope.to_vec(),
        aad: vec![],
    });
    raw.send_headers(1, "/keystore.v1.KeyUse/Decrypt");
    raw.send_data(1, &body, true, Instant::now() + HANG);
    raw
}

#[test]
fn a_client_that_never_reads_does_not_stall_others_and_its_call_is_dropped() {
    let _serial = serial();
    const TIMEOUT_S: u64 = 3;
    const STUCK: usize = 8;
    const SIZE: usize = 8 << 20;
    let f = Fixture::start(&format!("request_timeout_seconds = {TIMEOUT_S}"));
    let socket = socket_str(&f.daemon);

    // A large envelope, and the latency of normal calls before the abuse.
    let (envelope, normal) = bounded(HANG, "the large envelope", move || {
        let c = Client::connect(&socket).expect("connect");
        let env = c.encrypt("aes", &vec![0x33; SIZE], b"").expect("encrypt");
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            let t = Instant::now();
            c.sign("k", format!("warm {i}").as_bytes(), SignatureFormat::Der)
                .expect("sign");
            worst = worst.max(t.elapsed());
        }
        (env, worst)
    });
    let rss_before = f.daemon.rss_kib();

    // Clients whose 8 MiB responses sit in the daemon: they never read.
    let t_stuck = Instant::now();
    let mut stuck: Vec<Raw> = (0..STUCK)
        .map(|_| stuck_decrypt(&f.socket(), &envelope))
        .collect();
    let sent = t_stuck.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_stuck = f.daemon.rss_kib();

    // Meanwhile: other clients are served with normal latency.
    let socket = socket_str(&f.daemon);
    let (others_median, others_worst) =
        bounded(HANG, "other clients while some never read", move || {
            let c = Client::connect(&socket).expect("connect");
            let mut took = Vec::new();
            for i in 0..20 {
                let t = Instant::now();
                let m = format!("meanwhile {i}");
                let s = c
                    .sign("k", m.as_bytes(), SignatureFormat::Der)
                    .expect("sign meanwhile");
                c.verify("k", m.as_bytes(), &s.bytes, None)
                    .expect("verify meanwhile");
                took.push(t.elapsed());
            }
            took.sort();
            (took[took.len() / 2], took[took.len() - 1])
        });
    f.assert_serving("clients that never read");
    eprintln!(
        "never-reading clients: {STUCK} x {} MiB responses stuck (uploads took {sent:?}); other sign+verify calls: median {others_median:?}, worst {others_worst:?} (a sign before: worst {normal:?}); daemon RSS {:.1} MiB before, {:.1} MiB with them stuck",
        SIZE >> 20,
        mib(rss_before),
        mib(rss_stuck)
    );
    assert!(
        others_median < Duration::from_millis(250) && others_worst < Duration::from_secs(2),
        "other clients were slowed: sign+verify median {others_median:?}, worst {others_worst:?}"
    );
    // Each stuck call may hold its response (and, for a while, copies of
    // its request and plaintext): no more, and far from the machine's memory.
    let allowance = (4 * STUCK * SIZE / 1024) as u64;
    assert!(
        rss_stuck < 512 * 1024 && rss_stuck < rss_before + allowance,
        "daemon RSS {:.1} MiB with {STUCK} stuck responses ({:.1} MiB before)",
        mib(rss_stuck),
        mib(rss_before)
    );

    // Past request_timeout_seconds (and a grace), the daemon has given up
    // on the stuck calls: reading now yields a reset or a closed
    // connection, not the whole response kept for a reader that never came.
    let give_up = Duration::from_secs(TIMEOUT_S + 5);
    if let Some(rest) = give_up.checked_sub(t_stuck.elapsed()) {
        std::thread::sleep(rest);
    }
    let mut delivered = Vec::new();
    for raw in &mut stuck {
        let (end, data) = raw.response(1, Instant::now() + Duration::from_secs(10));
        delivered.push((end, data.len()));
    }
    let rss_end = f.daemon.rss_kib();
    eprintln!(
        "never-reading clients: {:?} after {:?}; daemon RSS {:.1} MiB",
        delivered,
        t_stuck.elapsed(),
        mib(rss_end)
    );
    drop(stuck);
    f.assert_serving("the stuck clients read at last");
    let kept: Vec<_> = delivered
        .iter()
        .filter(|(end, len)| *end == End::Stream && *len > SIZE)
        .collect();
    assert!(
        kept.is_empty(),
        "keystored kept {} of {STUCK} responses of {} MiB for clients that had not read for {:?} \
         (request_timeout_seconds = {TIMEOUT_S}): a call is not bounded once its response is written, \
         so callers that stop reading pin the daemon's memory and connection slots",
        kept.len(),
        SIZE >> 20,
        give_up
    );
}

#[test]
fn connections_that_never_speak_do_not_hold_the_daemons_slots() {
    let _serial = serial();
    const TIMEOUT_S: u64 = 3;
    let f = Fixture::start(&format!(
        "request_timeout_seconds = {TIMEOUT_S}\nmax_connections = 8"
    ));
    // Every slot taken by a connection that sends nothing, or half a preface.
    let silent: Vec<UnixStream> = (0..8)
        .map(|i| {
            let mut s = UnixStream::connect(f.socket()).expect("connect");
            if i % 2 == 1 {
                s.write_all(&PREFACE[..10]).expect("half a preface");
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A real client is served within request_timeout and a grace: the
    // daemon does not let silent connections hold every slot for ever.
    let socket = socket_str(&f.daemon);
    let t = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = Client::connect(&socket)
            .and_then(|c| c.sign("k", b"past the silent ones", SignatureFormat::Der));
        let _ = tx.send(r.map(|_| ()));
    });
    let wait = Duration::from_secs(TIMEOUT_S + 7);
    let served = rx.recv_timeout(wait);
    eprintln!(
        "silent connections: a real client {:?} after {:?}",
        served,
        t.elapsed()
    );
    drop(silent);
    assert_alive(&f.daemon, "silent connections");
    f.assert_serving("silent connections, closed at last");
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the real client failed: {e}"),
        Err(_) => panic!(
            "with max_connections = 8 held by 8 connections that never sent an HTTP/2 preface, \
             a real client waited more than {wait:?} (request_timeout_seconds = {TIMEOUT_S}): \
             keystored never closes a connection that does not complete its handshake"
        ),
    }
}

//! Shared set-up for the adapter's tests: a keystore on each backend (soft
//! in a temporary directory, a fresh SoftHSM2 token through backend-pkcs11's
//! `testing` module, a swtpm through backend-tpm's `swtpm` module), a test
//! PKI made with rcgen, real TLS peers over 127.0.0.1 (rustls servers and
//! clients, `openssl s_server` and `openssl s_client`), every wait bounded.
//!
//! A missing SoftHSM2 or swtpm fails the test with an install hint unless
//! `KEYSTORE_TEST_SKIP` names the backend (test-support's rule).

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, Backend, KeySpec, Keystore};
use keystore_signer::rustls;
use keystore_signer::KeystoreSigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The keystore type every test uses: any backend behind one type.
pub type Ks = Arc<Keystore<Box<dyn Backend>>>;
/// The adapter over it.
pub type Key = KeystoreSigningKey<Ks>;

/// How long any one network wait may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Soft,
    Pkcs11,
    Tpm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Soft => "soft",
            Kind::Pkcs11 => "pkcs11",
            Kind::Tpm => "tpm",
        }
    }
}

/// A keystore on one backend, in a temporary directory. Field order is drop
/// order: the keystore before the token and the simulator.
pub struct Fixture {
    pub ks: Ks,
    pub kind: Kind,
    _token: Option<backend_pkcs11::testing::TestToken>,
    _swtpm: Option<backend_tpm::swtpm::Swtpm>,
    pub dir: TempDir,
}

impl Fixture {
    /// The keystore on `kind`, or `None` (after printing SKIPPED) when its
    /// simulator is missing and `KEYSTORE_TEST_SKIP` names it.
    pub fn new(kind: Kind) -> Option<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("keystore-signer-")
            .tempdir()
            .expect("temporary directory");
        let metadata = dir.path().join("metadata.sqlite");
        let mut token = None;
        let mut swtpm = None;
        let backend: Box<dyn Backend> = match kind {
            Kind::Soft => {
                let kf = dir.path().join("kek.key");
                create_key_file(&kf).expect("key file");
                let store =
                    SoftStore::create(&dir.path().join("soft"), &Unlock::KeyFile(kf), Kdf::KeyFile)
                        .expect("soft store");
                Box::new(store)
            }
            Kind::Pkcs11 => {
                let hsm = backend_pkcs11::testing::softhsm_or_skip()?;
                let t = hsm.new_token("signer").expect("a SoftHSM2 token");
                let backend = t.open().expect("open the token");
                token = Some(t);
                Box::new(backend)
            }
            Kind::Tpm => {
                if !backend_tpm::swtpm::available() {
                    return test_support::skip::skip_or_fail(
                        "tpm",
                        backend_tpm::swtpm::INSTALL_HINT,
                    );
                }
                let s = backend_tpm::swtpm::Swtpm::start(&dir.path().join("swtpm"))
                    .expect("start swtpm");
                let config = backend_tpm::TpmConfig::new(s.tcti());
                let backend = backend_tpm::TpmBackend::open(config, &dir.path().join("tpm"))
                    .expect("open the TPM backend");
                swtpm = Some(s);
                Box::new(backend)
            }
        };
        let ks = Keystore::open(backend, &metadata).expect("open the keystore");
        assert_eq!(ks.backend_name(), kind.name());
        Some(Fixture {
            ks: Arc::new(ks),
            kind,
            _token: token,
            _swtpm: swtpm,
            dir,
        })
    }

    /// Creates `name` with `alg` and returns a following adapter on it.
    pub fn key(&self, name: &str, alg: Algorithm) -> Key {
        self.ks
            .create(
                &test_support::actors::officer("signer-tests"),
                name,
                KeySpec::new(alg),
            )
            .unwrap_or_else(|e| panic!("create {alg} key on {}: {e}", self.kind.name()));
        KeystoreSigningKey::new(Arc::clone(&self.ks), name).expect("adapter")
    }

    /// The three signing keys the handshake tests use: ECDSA P-256,
    /// RSA-2048 PSS and RSA-2048 PKCS#1 v1.5.
    pub fn standard_keys(&self) -> Vec<Key> {
        vec![
            self.key("ec", Algorithm::EcdsaP256Sha256),
            self.key("pss", Algorithm::Rsa2048PssSha256),
            self.key("pkcs1", Algorithm::Rsa2048Pkcs1Sha256),
        ]
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether a key may sign in a TLS 1.3 handshake (PKCS#1 v1.5 may not).
pub fn tls13_capable(key: &Key) -> bool {
    key.algorithm() != Algorithm::Rsa2048Pkcs1Sha256
        && key.algorithm() != Algorithm::Rsa3072Pkcs1Sha256
}

/// A test PKI: an ECDSA root made for the test, a server identity and a
/// client identity with rcgen's own keys, and leaf certificates for
/// keystore keys.
pub struct Pki {
    root_params: CertificateParams,
    root_key: KeyPair,
    pub root: rcgen::Certificate,
    pub server: rcgen::Certificate,
    pub server_key: KeyPair,
    pub client: rcgen::Certificate,
    pub client_key: KeyPair,
}

fn leaf_params(cn: &str, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.is_ca = IsCa::ExplicitNoCa;
    p
}

impl Pki {
    pub fn new() -> Pki {
        let mut root_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        root_params
            .distinguished_name
            .push(DnType::CommonName, "keystore-signer test root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root_key = KeyPair::generate().expect("root key");
        let root = root_params.self_signed(&root_key).expect("root");
        let issuer = Issuer::from_params(&root_params, &root_key);
        let server_key = KeyPair::generate().expect("server key");
        let server = leaf_params("test server", ExtendedKeyUsagePurpose::ServerAuth)
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let client_key = KeyPair::generate().expect("client key");
        let client = leaf_params("test client", ExtendedKeyUsagePurpose::ClientAuth)
            .signed_by(&client_key, &issuer)
            .expect("client certificate");
        drop(issuer);
        Pki {
            root_params,
            root_key,
            root,
            server,
            server_key,
            client,
            client_key,
        }
    }

    /// A leaf certificate for a keystore key (its public key through the
    /// adapter's `rcgen::PublicKeyData`), signed by the root.
    pub fn issue(&self, key: &Key, eku: ExtendedKeyUsagePurpose) -> CertificateDer<'static> {
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        let cert = leaf_params(&format!("gateway {}", key.name()), eku)
            .signed_by(key, &issuer)
            .expect("leaf certificate");
        assert_eq!(
            keystore_signer::certificate_chain(cert.pem().as_bytes()).unwrap()[0],
            *cert.der(),
            "PEM and DER give the same chain"
        );
        cert.der().clone()
    }

    /// A client identity for `key`: leaf and root.
    pub fn client_chain(&self, key: &Key) -> Vec<CertificateDer<'static>> {
        vec![
            self.issue(key, ExtendedKeyUsagePurpose::ClientAuth),
            self.root.der().clone(),
        ]
    }

    /// A server identity for `key`: leaf and root.
    pub fn server_chain(&self, key: &Key) -> Vec<CertificateDer<'static>> {
        vec![
            self.issue(key, ExtendedKeyUsagePurpose::ServerAuth),
            self.root.der().clone(),
        ]
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.der().clone()).expect("root");
        Arc::new(roots)
    }

    /// Writes root.pem, server.pem, server.key, client.pem and client.key into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("root.pem"), self.root.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), self.server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), self.server_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("client.pem"), self.client.pem()).unwrap();
        std::fs::write(dir.join("client.key"), self.client_key.serialize_pem()).unwrap();
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn version(v: ProtocolVersion) -> &'static SupportedProtocolVersion {
    match v {
        ProtocolVersion::TLSv1_3 => &rustls::version::TLS13,
        ProtocolVersion::TLSv1_2 => &rustls::version::TLS12,
        other => panic!("no such version here: {other:?}"),
    }
}

/// A TCP listener on a free loopback port.
pub fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port")
}

/// Accepts one connection within [`IO_TIMEOUT`].
pub fn accept_one(listener: &TcpListener) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("no connection within the timeout".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// What a rustls server saw of one connection.
#[derive(Debug)]
pub struct ServerSaw {
    pub version: Option<ProtocolVersion>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub line: String,
}

/// A rustls server that requires a client certificate from the test root
/// (WebPkiClientVerifier), for one connection: it reads a line and answers
/// `pong <line>`.
pub fn rustls_server_requiring_client_auth(
    pki: &Pki,
    v: ProtocolVersion,
) -> (
    SocketAddr,
    std::thread::JoinHandle<Result<ServerSaw, String>>,
) {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(pki.roots(), provider())
            .build()
            .expect("client verifier");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version(v)])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.der().clone()], key)
        .expect("server config");
    serve_one(Arc::new(config))
}

/// Serves one connection with `config`: reads a line, answers `pong <line>`.
pub fn serve_one(
    config: Arc<rustls::ServerConfig>,
) -> (
    SocketAddr,
    std::thread::JoinHandle<Result<ServerSaw, String>>,
) {
    let l = listener();
    let addr = l.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let tcp = accept_one(&l)?;
        let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        BufReader::new(&mut tls)
            .read_line(&mut line)
            .map_err(|e| format!("server read: {e}"))?;
        let line = line.trim_end().to_string();
        tls.write_all(format!("pong {line}\n").as_bytes())
            .map_err(|e| format!("server write: {e}"))?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(ServerSaw {
            version: tls.conn.protocol_version(),
            client_chain: tls
                .conn
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default(),
            line,
        })
    });
    (addr, handle)
}

/// A rustls client presenting `identity`, trusting the test root, limited
/// to `v`: sends `ping`, returns the answer line and the negotiated version.
pub fn rustls_client(
    pki: &Pki,
    identity: CertifiedKey,
    v: ProtocolVersion,
    addr: SocketAddr,
) -> Result<(String, Option<ProtocolVersion>), Box<dyn std::error::Error + Send + Sync>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version(v)])?
        .with_root_certificates(pki.roots())
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost")?.to_owned(),
    )?;
    let mut tls = rustls::StreamOwned::new(conn, connect(addr)?);
    tls.write_all(b"ping\n")?;
    tls.flush()?;
    let mut line = String::new();
    BufReader::new(&mut tls).read_line(&mut line)?;
    Ok((line.trim_end().to_string(), tls.conn.protocol_version()))
}

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl_missing(e: std::io::Error) -> ! {
    panic!("cannot run {OPENSSL} ({e}); install it with `apt-get install openssl`")
}

fn version_flag(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLSv1_3 => "-tls1_3",
        _ => "-tls1_2",
    }
}

/// Waits for `child` within [`IO_TIMEOUT`] (killing it after), and returns
/// whether it succeeded, with its stdout and stderr.
fn finish(mut child: Child, out: std::thread::JoinHandle<String>) -> (bool, String) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let text = format!("{}{err}", out.join().unwrap_or_default());
    (status.is_some_and(|s| s.success()), text)
}

/// `openssl s_server -Verify 1 -CAfile root.pem` (a client certificate is
/// required and verified against the test root) for one connection, in
/// `-rev` mode (it answers each line reversed), started on a free loopback
/// port. Returns its address and a handle that waits for it to end.
pub struct OpensslServer {
    pub addr: SocketAddr,
    child: Child,
    out: std::thread::JoinHandle<String>,
}

impl OpensslServer {
    pub fn start(dir: &Path, v: ProtocolVersion) -> OpensslServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = listener().local_addr().unwrap().port();
            let mut child = Command::new(OPENSSL)
                .args(["s_server", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-cert", "server.pem", "-key", "server.key"])
                .args([
                    "-CAfile",
                    "root.pem",
                    "-Verify",
                    "1",
                    "-verify_return_error",
                ])
                .args([version_flag(v), "-naccept", "1", "-rev"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| openssl_missing(e));
            // s_server prints ACCEPT once it listens.
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let out = std::thread::spawn(move || {
                let mut text = String::new();
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.starts_with("ACCEPT") {
                        let _ = tx.send(());
                    }
                    text.push_str(&line);
                    line.clear();
                }
                text
            });
            if rx.recv_timeout(IO_TIMEOUT).is_ok() {
                return OpensslServer {
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    child,
                    out,
                };
            }
            let (_, text) = finish(child, out);
            last = text;
        }
        panic!("openssl s_server did not start: {last}");
    }

    /// Waits for the server to end (it serves one connection); its success
    /// and output.
    pub fn finish(self) -> (bool, String) {
        finish(self.child, self.out)
    }
}

/// `openssl s_client` against `addr`, verifying the server against the test
/// root and for `localhost`, presenting the rcgen client identity, sending
/// `ping` and waiting for the server to close; its success and output.
pub fn openssl_client(dir: &Path, addr: SocketAddr, v: ProtocolVersion) -> (bool, String) {
    let mut child = Command::new(OPENSSL)
        .args(["s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-CAfile", "root.pem", "-verify_return_error"])
        .args(["-cert", "client.pem", "-key", "client.key"])
        .args([version_flag(v), "-brief", "-ign_eof"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| openssl_missing(e));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"ping\n");
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    finish(child, out)
}

/// A directory for the PKI's files.
pub fn pki_dir(f: &Fixture, pki: &Pki) -> PathBuf {
    let dir = f.path().join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    pki.write(&dir);
    dir
}

/// The keystore error behind a rustls error from our signer, if it is one.
pub fn keystore_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a keystore_api::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(k) = err.downcast_ref::<keystore_api::Error>() {
            return Some(k);
        }
        if let Some(rustls::Error::Other(o)) = err.downcast_ref::<rustls::Error>() {
            if let Some(k) = o.0.downcast_ref::<keystore_api::Error>() {
                return Some(k);
            }
        }
        // io::Error's source() skips the error it wraps.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

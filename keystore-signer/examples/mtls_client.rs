//! A gateway presents its keystore-held identity to a TLS server over mutual
//! TLS: the private key stays in the soft store, on the PKCS#11 token or in
//! the TPM, and rustls signs the handshake through the keystore.
//!
//! Two ways to run it:
//!
//! ```text
//! # Self-contained: a throwaway store on the chosen backend (SoftHSM2 and
//! # swtpm are started for pkcs11 and tpm), a key, a test root and a leaf
//! # certificate for the key, and a local rustls server that requires a
//! # client certificate; then the client below connects to it.
//! cargo run -p keystore-signer --example mtls_client -- demo soft
//! cargo run -p keystore-signer --example mtls_client -- demo pkcs11
//! cargo run -p keystore-signer --example mtls_client -- demo tpm
//!
//! # Against a real server, with an existing store (the layout keyctl uses:
//! # DIR/metadata.sqlite, DIR/soft or DIR/tpm) and the key's certificate
//! # chain (PEM, leaf first; e.g. from `keyctl provision`, or as below):
//! cargo run -p keystore-signer --example mtls_client -- connect \
//!     --backend soft --store /var/lib/gateway/keys --key-file /etc/gateway/kek.key \
//!     --key device.identity --cert device-chain.pem --ca root.pem \
//!     --server broker.example:8883 --server-name broker.example
//! #   --backend pkcs11 --pkcs11-uri 'pkcs11:token=gw;pin-source=file:/etc/gw/pin'
//! #   --backend tpm --tcti device:/dev/tpmrm0   (owner auth: $KEYSTORE_TPM_OWNER_AUTH)
//! #   --pin-version N   pins the identity to version N (default: follow the active version)
//! #   --tls 1.2|1.3     limits the protocol version (default: both)
//! ```
//!
//! A complete `connect` run against OpenSSL, with a soft store made by
//! keyctl (the identity's certificate is issued by OpenSSL for the
//! keystore's public key with `-force_pubkey`; the key never leaves the store):
//!
//! ```text
//! K=target/debug/keyctl; export KEYCTL_STORE=./gw KEYCTL_KEY_FILE=kek.key
//! head -c32 /dev/urandom > kek.key && $K init
//! KEYCTL_NEW_ROLE_SECRET=officer-secret-1 $K role set security-officer
//! KEYCTL_ROLE_SECRET=officer-secret-1 $K --as security-officer \
//!     key create --alg ecdsa-p256-sha256 gw.identity
//! $K pubkey gw.identity --out gw-pub.pem
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
//!     -keyout root.key -out root.pem -subj /CN=root -days 30
//! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
//!     -keyout throwaway.key -out gw.csr -subj /CN=gateway-0001
//! printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > gw.ext
//! openssl x509 -req -in gw.csr -CA root.pem -CAkey root.key -force_pubkey gw-pub.pem \
//!     -extfile gw.ext -out gw.pem -days 30
//! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
//!     -keyout server.key -out server.csr -subj /CN=localhost
//! printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
//! openssl x509 -req -in server.csr -CA root.pem -CAkey root.key -extfile server.ext \
//!     -out server.pem -days 30
//! openssl s_server -accept 127.0.0.1:8443 -cert server.pem -key server.key \
//!     -CAfile root.pem -Verify 1 -verify_return_error -rev -naccept 1 &
//! cargo run -p keystore-signer --example mtls_client -- connect --backend soft \
//!     --store ./gw --key-file kek.key --key gw.identity --cert gw.pem \
//!     --ca root.pem --server 127.0.0.1:8443 --server-name localhost
//! ```
//!
//! The client sends one line; `-rev` answers it reversed, and s_server
//! prints the verified client certificate.

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, Backend, KeySpec, Keystore, Role};
use keystore_signer::rustls;
use keystore_signer::{certificate_chain, certified_key, KeystoreSigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Ks = Arc<Keystore<Box<dyn Backend>>>;

const TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(args.get(1).map(String::as_str).unwrap_or("soft")),
        Some("connect") => Options::parse(&args[1..]).and_then(|o| connect(&o)),
        _ => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!("mtls_client: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: mtls_client demo [soft|pkcs11|tpm]\n       \
    mtls_client connect --backend soft|pkcs11|tpm --store DIR --key NAME --cert CHAIN.pem \
    --ca ROOT.pem --server HOST:PORT [--server-name NAME] [--key-file PATH] [--pkcs11-uri URI] \
    [--tcti TCTI] [--pin-version N] [--tls 1.2|1.3]";

/// What `connect` needs.
#[derive(Debug, Default)]
struct Options {
    backend: String,
    store: PathBuf,
    key: String,
    cert: PathBuf,
    ca: PathBuf,
    server: String,
    server_name: Option<String>,
    key_file: Option<PathBuf>,
    pkcs11_uri: Option<String>,
    tcti: Option<String>,
    pin_version: Option<u32>,
    tls: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, Error> {
        let mut o = Options {
            backend: "soft".into(),
            ..Options::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--backend" => o.backend = value()?,
                "--store" => o.store = value()?.into(),
                "--key" => o.key = value()?,
                "--cert" => o.cert = value()?.into(),
                "--ca" => o.ca = value()?.into(),
                "--server" => o.server = value()?,
                "--server-name" => o.server_name = Some(value()?),
                "--key-file" => o.key_file = Some(value()?.into()),
                "--pkcs11-uri" => o.pkcs11_uri = Some(value()?),
                "--tcti" => o.tcti = Some(value()?),
                "--pin-version" => o.pin_version = Some(value()?.parse()?),
                "--tls" => o.tls = Some(value()?),
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        for (missing, what) in [
            (o.store.as_os_str().is_empty(), "--store"),
            (o.key.is_empty(), "--key"),
            (o.cert.as_os_str().is_empty(), "--cert"),
            (o.ca.as_os_str().is_empty(), "--ca"),
            (o.server.is_empty(), "--server"),
        ] {
            if missing {
                return Err(format!("{what} is required\n{USAGE}").into());
            }
        }
        Ok(o)
    }
}

/// Opens the store at `o.store` on the chosen backend.
fn open_store(o: &Options) -> Result<Ks, Error> {
    let backend: Box<dyn Backend> = match o.backend.as_str() {
        "soft" => {
            let key_file = o
                .key_file
                .clone()
                .unwrap_or_else(|| o.store.join("kek.key"));
            Box::new(SoftStore::open(
                &o.store.join("soft"),
                &Unlock::KeyFile(key_file),
            )?)
        }
        "pkcs11" => {
            let uri = o
                .pkcs11_uri
                .as_deref()
                .ok_or("--backend pkcs11 needs --pkcs11-uri (with pin-source)")?;
            let config = backend_pkcs11::uri::Pkcs11Uri::parse(uri)?.to_config(None)?;
            Box::new(backend_pkcs11::Pkcs11Backend::open(&config)?)
        }
        "tpm" => {
            let mut config = backend_tpm::TpmConfig::from_env()?;
            if let Some(tcti) = &o.tcti {
                config = config.with_tcti(tcti.clone());
            }
            Box::new(backend_tpm::TpmBackend::open(config, &o.store.join("tpm"))?)
        }
        other => return Err(format!("unknown backend {other}: soft, pkcs11 or tpm").into()),
    };
    let ks = Keystore::open_with(
        backend,
        &o.store.join("metadata.sqlite"),
        Arc::new(keystore_api::SystemClock),
        keystore_api::OpenOptions::new().check_material(false),
    )?;
    Ok(Arc::new(ks))
}

fn connect(o: &Options) -> Result<(), Error> {
    let ks = open_store(o)?;
    let chain = certificate_chain(&std::fs::read(&o.cert)?)?;
    let roots = CertificateDer::pem_file_iter(&o.ca)?.collect::<Result<Vec<_>, _>>()?;
    let addr = o
        .server
        .to_socket_addrs()?
        .next()
        .ok_or("the server address resolves to nothing")?;
    let host = o.server_name.clone().unwrap_or_else(|| {
        o.server
            .rsplit_once(':')
            .map_or(o.server.clone(), |(h, _)| h.to_string())
    });
    let versions: &[&rustls::SupportedProtocolVersion] = match o.tls.as_deref() {
        None => rustls::DEFAULT_VERSIONS,
        Some("1.3") => &[&rustls::version::TLS13],
        Some("1.2") => &[&rustls::version::TLS12],
        Some(other) => return Err(format!("--tls {other}: 1.2 or 1.3").into()),
    };
    let answer = present_identity(
        &ks,
        &o.key,
        o.pin_version,
        chain,
        roots,
        versions,
        addr,
        &host,
    )?;
    println!("server answered: {answer}");
    Ok(())
}

/// The gateway's part: the keystore key as the TLS client identity.
#[allow(clippy::too_many_arguments)]
fn present_identity(
    ks: &Ks,
    key_name: &str,
    pin_version: Option<u32>,
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    addr: SocketAddr,
    server_name: &str,
) -> Result<String, Error> {
    // Following the active version by default; certified_key pins what it
    // hands to rustls to the version the leaf certificate names.
    let key = match pin_version {
        Some(v) => KeystoreSigningKey::pinned_to(Arc::clone(ks), key_name, v)?,
        None => KeystoreSigningKey::new(Arc::clone(ks), key_name)?,
    };
    let identity = certified_key(chain, &key)?;
    println!(
        "identity: key '{}' version {} ({}, {}) on {}",
        key.name(),
        key.version(),
        key.algorithm(),
        key.fingerprint(),
        ks.backend_name()
    );
    let mut root_store = rustls::RootCertStore::empty();
    for r in roots {
        root_store.add(r)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)?
    .with_root_certificates(root_store)
    .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(server_name.to_string())?,
    )?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("hello from {key_name}\n").as_bytes())?;
    tls.flush()?;
    println!(
        "connected to {addr}: {:?}, {:?}",
        tls.conn.protocol_version().ok_or("no protocol version")?,
        tls.conn
            .negotiated_cipher_suite()
            .map(|s| s.suite())
            .ok_or("no cipher suite")?
    );
    let mut line = String::new();
    BufReader::new(&mut tls).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// The demo: everything in a temporary directory, torn down at the end.
fn demo(backend: &str) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    // The simulators live as long as the keystore (dropped in reverse order).
    let mut _token = None;
    let mut _swtpm = None;
    let boxed: Box<dyn Backend> = match backend {
        "soft" => {
            create_key_file(&dir.path().join("kek.key"))?;
            let unlock = Unlock::KeyFile(dir.path().join("kek.key"));
            Box::new(SoftStore::create(
                &dir.path().join("soft"),
                &unlock,
                Kdf::KeyFile,
            )?)
        }
        "pkcs11" => {
            let hsm = backend_pkcs11::testing::softhsm()?;
            let token = hsm.new_token("mtls-demo")?;
            let b = token.open()?;
            _token = Some(token);
            Box::new(b)
        }
        "tpm" => {
            let swtpm = backend_tpm::swtpm::Swtpm::start(&dir.path().join("swtpm"))?;
            let config = backend_tpm::TpmConfig::new(swtpm.tcti());
            _swtpm = Some(swtpm);
            Box::new(backend_tpm::TpmBackend::open(
                config,
                &dir.path().join("tpm"),
            )?)
        }
        other => return Err(format!("unknown backend {other}: soft, pkcs11 or tpm").into()),
    };
    let ks: Ks = Arc::new(Keystore::open(boxed, &dir.path().join("metadata.sqlite"))?);
    let officer = keystore_api::Actor::new("demo-officer", Role::SecurityOfficer)?;
    ks.create(
        &officer,
        "gateway.identity",
        KeySpec::new(Algorithm::EcdsaP256Sha256),
    )?;

    // A throwaway PKI: a root, the gateway's certificate for the keystore
    // key (signed by the root; rcgen sees only the public key), a server.
    let root_key = rcgen::KeyPair::generate()?;
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mtls demo root");
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key)?;
    let issuer = rcgen::Issuer::from_params(&root_params, &root_key);
    let gateway_key = KeystoreSigningKey::new(Arc::clone(&ks), "gateway.identity")?;
    let mut gw_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    gw_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway-0001");
    gw_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let gw_cert = gw_params.signed_by(&gateway_key, &issuer)?;
    let server_key = rcgen::KeyPair::generate()?;
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    // The server: rustls, requiring a client certificate from the root.
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(root.der().clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        Arc::clone(&provider),
    )
    .build()?;
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<String, Error> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let conn = rustls::ServerConnection::new(Arc::new(server_config))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line)?;
        let peer = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().len())
            .unwrap_or(0);
        tls.write_all(format!("welcome; I verified your {peer}-byte certificate\n").as_bytes())?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(line.trim_end().to_string())
    });

    let chain = vec![gw_cert.der().clone(), root.der().clone()];
    let answer = present_identity(
        &ks,
        "gateway.identity",
        None,
        chain,
        vec![root.der().clone()],
        rustls::DEFAULT_VERSIONS,
        addr,
        "localhost",
    )?; // on failure the server thread, still waiting, ends with the process
    let heard = server.join().map_err(|_| "the server thread panicked")?;
    println!("server heard: {}", heard?);
    println!("server answered: {answer}");
    Ok(())
}

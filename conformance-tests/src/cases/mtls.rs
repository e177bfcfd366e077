//! TEST-KEY-57: a real mutual-TLS 1.3 handshake signed in the backend under
//! test, against a rustls server that requires a client certificate. Every
//! network wait is bounded and on 127.0.0.1 with a port the OS picks.

use super::device::IO_TIMEOUT;
use crate::support::{create_or_prove_unsupported, so, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::Algorithm;
use keystore_signer::rustls;
use keystore_signer::{certified_key, KeystoreSigningKey};
use provisioning::CertInfo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

/// An in-memory test CA (rcgen's own key) with a server identity.
struct TlsPki {
    root_params: CertificateParams,
    root_key: KeyPair,
    root: rcgen::Certificate,
    server: rcgen::Certificate,
    server_key: KeyPair,
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

impl TlsPki {
    fn new() -> TlsPki {
        let mut root_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        root_params
            .distinguished_name
            .push(DnType::CommonName, "conformance mTLS root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_key = KeyPair::generate().expect("root key");
        let root = root_params.self_signed(&root_key).expect("root");
        let server_key = KeyPair::generate().expect("server key");
        let server = leaf_params("conformance server", ExtendedKeyUsagePurpose::ServerAuth)
            .signed_by(&server_key, &Issuer::from_params(&root_params, &root_key))
            .expect("server certificate");
        TlsPki {
            root_params,
            root_key,
            root,
            server,
            server_key,
        }
    }

    /// A client certificate for the keystore key (its public key through
    /// the adapter's `rcgen::PublicKeyData`), then the root.
    fn client_chain(&self, key: &impl rcgen::PublicKeyData) -> Vec<CertificateDer<'static>> {
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        let leaf = leaf_params("conformance device", ExtendedKeyUsagePurpose::ClientAuth)
            .signed_by(key, &issuer)
            .expect("client certificate");
        vec![leaf.der().clone(), self.root.der().clone()]
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.der().clone()).expect("root");
        Arc::new(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What the server saw of the one connection it served.
#[derive(Debug)]
struct ServerSaw {
    version: Option<rustls::ProtocolVersion>,
    client_chain: Vec<CertificateDer<'static>>,
    line: String,
}

fn accept_one(listener: &TcpListener) -> Result<TcpStream, String> {
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
                std::thread::sleep(StdDuration::from_millis(10));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A TLS 1.3 rustls server on a free loopback port that requires a client
/// certificate from `pki`'s root (WebPkiClientVerifier), for one
/// connection: it reads a line and answers `pong <line>`.
fn mtls_server(
    pki: &TlsPki,
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
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.der().clone()], key)
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    let handle = std::thread::spawn(move || {
        let tcp = accept_one(&listener)?;
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

type ClientResult =
    Result<(String, Option<rustls::ProtocolVersion>), Box<dyn std::error::Error + Send + Sync>>;

/// A TLS 1.3 rustls client presenting `identity`: sends `ping`, returns
/// the answer line and the negotiated version.
fn mtls_client(
    pki: &TlsPki,
    identity: rustls::sign::CertifiedKey,
    addr: SocketAddr,
) -> ClientResult {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pki.roots())
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost")?.to_owned(),
    )?;
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"ping\n")?;
    tls.flush()?;
    let mut line = String::new();
    BufReader::new(&mut tls).read_line(&mut line)?;
    Ok((line.trim_end().to_string(), tls.conn.protocol_version()))
}

/// TEST-KEY-57
pub fn device_identity_over_mtls<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = Arc::new(fx.open());
    let Some(info) =
        create_or_prove_unsupported::<F>(&ks, "tls-identity", Algorithm::EcdsaP256Sha256)
    else {
        return unsupported(Algorithm::EcdsaP256Sha256, "generate (TLS identity)");
    };
    let key = KeystoreSigningKey::new(Arc::clone(&ks), "tls-identity").expect("adapter");
    assert_eq!(
        key.spki_der(),
        ks.public_key("tls-identity")
            .expect("public key")
            .spki_der()
    );
    let pki = TlsPki::new();
    let chain = pki.client_chain(&key);
    let identity = certified_key(chain.clone(), &key).expect("certified key");
    let (addr, server) = mtls_server(&pki);
    let client = mtls_client(&pki, identity, addr);
    let saw = server.join().expect("server thread");
    let (line, negotiated) =
        client.unwrap_or_else(|e| panic!("mTLS client on {}: {e}; server: {saw:?}", F::NAME));
    let saw = saw.unwrap_or_else(|e| panic!("mTLS server with {} client: {e}", F::NAME));
    assert_eq!(line, "pong ping");
    assert_eq!(negotiated, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(saw.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(saw.line, "ping");
    assert_eq!(
        saw.client_chain.first(),
        chain.first(),
        "the server saw the keystore key's certificate"
    );
    // The certificate the server verified names the key in the backend.
    let seen = CertInfo::parse(saw.client_chain[0].as_ref()).expect("client certificate");
    assert_eq!(
        info.active().and_then(|v| v.fingerprint.as_deref()),
        Some(seen.spki_fingerprint.as_str())
    );

    // Once the key is revoked in the keystore, the same identity cannot
    // sign a handshake: the server gets no verified client.
    ks.revoke(&so(), "tls-identity", 1, "unit returned")
        .expect("revoke");
    let identity = certified_key(chain, &key);
    if let Ok(identity) = identity {
        let (addr, server) = mtls_server(&pki);
        let client = mtls_client(&pki, identity, addr);
        let saw = server.join().expect("server thread");
        assert!(
            client.is_err() || saw.is_err(),
            "a revoked key completed a handshake on {}",
            F::NAME
        );
    }
    Outcome::Passed
}

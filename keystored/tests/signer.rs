//! The ecosystem adapters over keystored (keystore-signer, feature
//! `client`): a certificate for a daemon-held key signed with rcgen, and a
//! mutual TLS 1.3 handshake whose client signature is made in the daemon.

use keystore_api::{Actor, Algorithm, KeySpec, Role};
use keystore_client::Client;
use keystore_signer::rustls;
use keystore_signer::{certified_key, KeystoreSigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use test_support::daemon::Daemon;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Moves every pending TLS record from `from` to `to`.
fn pump(
    from: &mut rustls::ConnectionCommon<impl rustls::SideData>,
    to: &mut rustls::ConnectionCommon<impl rustls::SideData>,
) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).expect("write to memory");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read from memory");
        to.process_new_packets()?;
    }
    Ok(())
}

#[test]
fn rcgen_and_rustls_sign_with_a_key_held_by_the_daemon() {
    std::env::set_var("KEYSTORED_BIN", env!("CARGO_BIN_EXE_keystored"));
    let mut d = Daemon::soft(
        "[[caller]]\nuid = 0\nrole = \"application\"\nkeys = [\"gw-*\"]\n",
        "",
    );
    d.start();
    let officer = Actor::new("setup", Role::SecurityOfficer).expect("actor");
    d.open_store()
        .create(&officer, "gw-tls", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
    let client = Arc::new(Client::connect(d.socket().to_str().expect("utf-8")).expect("connect"));
    let key = KeystoreSigningKey::new(client.clone(), "gw-tls").expect("adapter over the daemon");

    // A test CA issues the gateway's certificate for the daemon-held key,
    // and the gateway signs a CSR through the daemon (rcgen).
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keystored test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut leaf = CertificateParams::new(vec!["gateway.local".into()]).expect("params");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let csr = leaf
        .serialize_request(&key)
        .expect("CSR signed in the daemon");
    assert!(csr.der().len() > 100);
    let gw_cert = leaf.signed_by(&key, &issuer).expect("gateway certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    // TLS 1.3, the server requiring a client certificate from the CA.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let roots = Arc::new(roots);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .expect("verifier");
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server config");
    let identity =
        certified_key(vec![gw_cert.der().clone(), ca.der().clone()], &key).expect("certified key");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    let mut tls_client = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let mut tls_server = rustls::ServerConnection::new(Arc::new(server_config)).expect("server");
    for _ in 0..10 {
        if !tls_client.is_handshaking() && !tls_server.is_handshaking() {
            break;
        }
        pump(&mut tls_client, &mut tls_server).expect("client to server");
        pump(&mut tls_server, &mut tls_client).expect("server to client");
    }
    assert!(!tls_client.is_handshaking() && !tls_server.is_handshaking());
    assert_eq!(
        tls_server.peer_certificates().and_then(|c| c.first()),
        Some(gw_cert.der()),
        "the server verified the daemon-held key's certificate"
    );
    assert_eq!(
        tls_server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

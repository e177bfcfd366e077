//! Parameter encryption on the host–TPM bus, proven by sniffing it.
//!
//! A recording TCP proxy sits between the TCTI and swtpm (both the command
//! port and the control port) and keeps every byte in both directions.
//! Through it we provision an owner auth, import an HMAC key with known
//! bytes, compute HKDF extracts (PRKs, secret) with a known result (one
//! `TPM2_HMAC`, one HMAC sequence), and seal and unseal a TPM-sealed KEK
//! (unbound and PCR-bound), and agree on an ECDH key with a peer whose
//! shared secret `Z` we compute independently. With parameter encryption none of those secrets
//! appears in the traffic; with it disabled (test-support switch) every one
//! of them does, which shows that the check can fail. A MAC tag (not a
//! secret: its user sends or compares it) travels in clear either way, and
//! so does the PRK when the configuration opts out.
//!
//! What the check cannot see, and does not claim: password authorisations
//! (`ESYS_TR_PASSWORD`) still carry the owner auth and the keys' auth values
//! in clear in each command's session area; the test does not look for them.

use backend_soft::KekProvider;
use backend_tpm::swtpm::Swtpm;
use backend_tpm::{admin, PcrBinding, TpmBackend, TpmConfig, TpmSealedKek};
use hmac::{Hmac, Mac};
use keystore_api::{Algorithm, BackendKey, KeyManagement, Mac as _, NewKey, SecretBytes};
use keystore_backend::{KeyAgreement, PeerPublicKey};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A thread-per-connection TCP forwarder from a port pair (Q, Q+1) to
/// swtpm's (P, P+1), recording every byte that passes in either direction.
struct Proxy {
    port: u16,
    log: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Below the ephemeral range, like swtpm's own ports: a busy test run
        // leaves too many client sockets in TIME_WAIT to bind port 0.
        let (a, b) = (0..50)
            .find_map(|_| {
                let port = backend_tpm::swtpm::free_port_pair()?;
                let a = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
                let b = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).ok()?;
                Some((a, b))
            })
            .expect("a free loopback port pair for the proxy");
        let port = a.local_addr().expect("addr").port();
        for (listener, to) in [(a, target), (b, target + 1)] {
            let (log, stop) = (log.clone(), stop.clone());
            listener.set_nonblocking(true).expect("nonblocking");
            thread::spawn(move || accept_loop(listener, to, log, stop));
        }
        Proxy { port, log, stop }
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Everything recorded so far, and a fresh start.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, to: u16, log: Arc<Mutex<Vec<u8>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, to)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let l2 = log.clone();
                thread::spawn(move || pump(client, server, &l2));
                let l3 = log.clone();
                thread::spawn(move || pump(s2, c2, &l3));
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Copies `from` to `to`, recording each chunk before forwarding it (so a
/// response the client has read is always in the log already).
fn pump(mut from: TcpStream, mut to: TcpStream, log: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                log.lock().expect("log").extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// True if any 8-byte window of `secret` occurs in `traffic` (which must
/// hold something: an empty log would mean the TCTI bypassed the proxy).
fn leaks(traffic: &[u8], secret: &[u8]) -> bool {
    assert!(secret.len() >= 8);
    assert!(!traffic.is_empty(), "the proxy recorded no traffic");
    secret
        .windows(8)
        .any(|w| traffic.windows(8).any(|t| t == w))
}

fn hmac_ref(k: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k).expect("key");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// What crossed the bus in clear in one run.
#[derive(Debug, PartialEq)]
struct Seen {
    new_owner_auth: bool,
    imported_key: bool,
    hmac: bool,
    hmac_sequence: bool,
    kek_sealed_and_unsealed: bool,
    pcr_bound_kek: bool,
    hmac_after_reset: bool,
    imported_key_after_reset: bool,
    mac_tag: bool,
    prk_when_opted_out: bool,
    ecdh_z: bool,
    ecdh_z_when_prk_opted_out: bool,
}

/// An ECDH agreement through the backend, checked against the `p256`
/// crate: the shared secret `Z` (to look for on the bus) and the output.
fn agree(be: &TpmBackend, key: &BackendKey, pk: &keystore_api::PublicKey) -> [u8; 32] {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    use sha2::Digest;
    let secret = p256::SecretKey::from_slice(&Sha256::digest(b"bus peer")).expect("scalar");
    let point = secret.public_key().to_encoded_point(false);
    let peer = PeerPublicKey::parse(Algorithm::EcdhP256, point.as_bytes()).expect("peer");
    let ours = p256::PublicKey::from_public_key_der(pk.spki_der()).expect("spki");
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ours.as_affine());
    let z: [u8; 32] = (*shared.raw_secret_bytes()).into();
    let out = be.agree_sha256_kdf(key, &peer, b"bus", 32).expect("agree");
    let want = Sha256::new()
        .chain_update(1u32.to_be_bytes())
        .chain_update(z)
        .chain_update(b"bus")
        .finalize();
    assert_eq!(out.expose(), &want[..], "the agreement is right");
    z
}

fn run(encrypted: bool) -> Seen {
    backend_tpm::set_parameter_encryption_disabled(!encrypted);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
    let proxy = Proxy::start(swtpm.port());
    let tcti = proxy.tcti();

    // Provisioning: the new owner auth (TPM2_HierarchyChangeAuth).
    let owner = *b"OWNER-AUTH:new-value-0123456789!";
    admin::change_owner_auth(
        &tcti,
        &SecretBytes::default(),
        &SecretBytes::from_slice(&owner),
    )
    .expect("change owner auth");
    let new_owner_auth = leaks(&proxy.take(), &owner);
    let config = || {
        TpmConfig::new(tcti.clone())
            .with_owner_auth(SecretBytes::from_slice(&owner))
            .expect("config")
    };

    let key: [u8; 32] = std::array::from_fn(|i| 0xA0 ^ (i as u8).wrapping_mul(7));
    let msg = b"a public message to MAC";
    let long: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
    let be = TpmBackend::open(config(), &dir.path().join("store")).expect("open");
    assert_eq!(
        be.parameter_encryption_session().expect("probe").is_some(),
        encrypted,
        "a parameter-encryption session exists exactly when enabled"
    );
    proxy.take();
    // TPM2_Create with the key bytes in inSensitive.
    let h = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k"),
            &SecretBytes::from_slice(&key),
        )
        .expect("import");
    let t = be
        .hkdf_extract(&BackendKey::new(h.clone(), Algorithm::HmacSha256), msg)
        .expect("hmac");
    assert_eq!(*t, hmac_ref(&key, msg), "TPM2_HMAC is right");
    let t_long = be
        .hkdf_extract(&BackendKey::new(h.clone(), Algorithm::HmacSha256), &long)
        .expect("hmac sequence");
    assert_eq!(*t_long, hmac_ref(&key, &long), "the HMAC sequence is right");
    let traffic = proxy.take();
    let imported_key = leaks(&traffic, &key);
    let hmac = leaks(&traffic, &*t);
    let hmac_sequence = leaks(&traffic, &*t_long);
    let tag = be
        .hmac_sha256(
            &BackendKey::new(h.clone(), Algorithm::HmacSha256),
            b"a MAC tag",
        )
        .expect("mac");
    assert_eq!(*tag, hmac_ref(&key, b"a MAC tag"));
    let mac_tag = leaks(&proxy.take(), &*tag);
    // TPM2_ECDH_ZGen: Z in its response.
    let ecdh = be
        .generate(&NewKey::new(Algorithm::EcdhP256, "ecdh"))
        .expect("ecdh key");
    let ecdh_key = BackendKey::new(ecdh.handle.clone(), Algorithm::EcdhP256);
    let ecdh_pk = ecdh.public_key.expect("public key");
    proxy.take();
    let z = agree(&be, &ecdh_key, &ecdh_pk);
    let ecdh_z = leaks(&proxy.take(), &z);

    // A TPM reset: the session is gone with the objects; the backend
    // reconnects, starts a new one and retries once.
    swtpm.restart().expect("restart");
    let msg2 = b"after the reset";
    let t2 = be
        .hkdf_extract(&BackendKey::new(h.clone(), Algorithm::HmacSha256), msg2)
        .expect("hmac after reset");
    assert_eq!(*t2, hmac_ref(&key, msg2));
    let key2: [u8; 32] = std::array::from_fn(|i| 0x5C ^ (i as u8).wrapping_mul(13));
    swtpm.restart().expect("restart");
    let h2 = be
        .import(
            &NewKey::new(Algorithm::HmacSha256, "k2"),
            &SecretBytes::from_slice(&key2),
        )
        .expect("import after reset");
    be.hmac_sha256(&BackendKey::new(h2.clone(), Algorithm::HmacSha256), msg)
        .expect("hmac with the new key");
    let traffic = proxy.take();
    let hmac_after_reset = leaks(&traffic, &*t2);
    let imported_key_after_reset = leaks(&traffic, &key2);
    assert_eq!(
        be.parameter_encryption_session().expect("probe").is_some(),
        encrypted
    );
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert!(sessions.is_empty(), "no other session: {sessions:x?}");
    assert!(objects.len() <= 3, "{objects:x?}");
    drop(be);
    // Opting out: the PRK comes back in clear.
    let be = TpmBackend::open(
        config().with_prk_in_clear_on_the_bus(true),
        &dir.path().join("store"),
    )
    .expect("open, PRK in clear");
    let t3 = be
        .hkdf_extract(
            &BackendKey::new(h.clone(), Algorithm::HmacSha256),
            b"opted out",
        )
        .expect("extract");
    assert_eq!(*t3, hmac_ref(&key, b"opted out"));
    let prk_when_opted_out = leaks(&proxy.take(), &*t3);
    // Z is encrypted whatever the PRK option says.
    let z = agree(&be, &ecdh_key, &ecdh_pk);
    let ecdh_z_when_prk_opted_out = leaks(&proxy.take(), &z);
    drop(be);

    // The TPM-sealed KEK: TPM2_GetRandom, TPM2_Create, TPM2_Unseal.
    let provider = TpmSealedKek::new(config());
    let (kek, sealed) = provider.create().expect("seal");
    let unsealed = provider.unseal(&sealed).expect("unseal");
    assert_eq!(unsealed.expose(), kek.expose());
    let kek_sealed_and_unsealed = leaks(&proxy.take(), kek.expose());
    // Bound to a PCR: unsealed under a policy session plus the encryption one.
    let provider =
        TpmSealedKek::new(config()).bound_to(PcrBinding::sha256(&[16]).expect("binding"));
    let (kek, sealed) = provider.create().expect("seal bound");
    let unsealed = provider.unseal(&sealed).expect("unseal bound");
    assert_eq!(unsealed.expose(), kek.expose());
    let pcr_bound_kek = leaks(&proxy.take(), kek.expose());

    // Nothing is left loaded: a fresh connection sees no session but its own.
    let be = TpmBackend::open(config(), &dir.path().join("store")).expect("reopen");
    let (objects, sessions) = be.loaded_handles().expect("handles");
    assert_eq!(objects.len(), 1, "only the primary: {objects:x?}");
    assert!(sessions.is_empty(), "{sessions:x?}");
    drop(be);
    drop(proxy);
    Seen {
        new_owner_auth,
        imported_key,
        hmac,
        hmac_sequence,
        kek_sealed_and_unsealed,
        pcr_bound_kek,
        hmac_after_reset,
        imported_key_after_reset,
        mac_tag,
        prk_when_opted_out,
        ecdh_z,
        ecdh_z_when_prk_opted_out,
    }
}

#[test]
fn secrets_never_cross_the_bus_in_clear_and_the_check_can_fail() {
    if !backend_tpm::swtpm::available() {
        panic!("{}", backend_tpm::swtpm::INSTALL_HINT);
    }
    // Negative control first: without the session every secret is visible,
    // so the sniffer and the search work.
    let clear = run(false);
    // Then the real thing.
    let encrypted = run(true);
    backend_tpm::set_parameter_encryption_disabled(false);
    assert_eq!(
        clear,
        Seen {
            new_owner_auth: true,
            imported_key: true,
            hmac: true,
            hmac_sequence: true,
            kek_sealed_and_unsealed: true,
            pcr_bound_kek: true,
            hmac_after_reset: true,
            imported_key_after_reset: true,
            mac_tag: true,
            prk_when_opted_out: true,
            ecdh_z: true,
            ecdh_z_when_prk_opted_out: true,
        },
        "without parameter encryption the sniffer sees every secret"
    );
    assert_eq!(
        encrypted,
        Seen {
            new_owner_auth: false,
            imported_key: false,
            hmac: false,
            hmac_sequence: false,
            kek_sealed_and_unsealed: false,
            pcr_bound_kek: false,
            hmac_after_reset: false,
            imported_key_after_reset: false,
            mac_tag: true,
            prk_when_opted_out: true,
            ecdh_z: false,
            ecdh_z_when_prk_opted_out: false,
        },
        "with parameter encryption the sniffer sees none"
    );
}

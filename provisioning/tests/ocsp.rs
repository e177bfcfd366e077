//! OCSP (RFC 6960) end to end with real components: soft keystores, the
//! PKI database, the responder signing through the delegated key in the
//! production keystore, its HTTP server on 127.0.0.1, and the checker under
//! `PeerVerifier` (REQ-KEY-REV-03, REQ-KEY-CERT-01; TEST-KEY-07).

mod common;

use backend_soft::SoftStore;
use common::{officer, operator, Pki};
use der::{Decode, Encode};
use keystore_api::{ErrorKind, SignatureFormat};
use provisioning::{
    fetch_ocsp, ocsp_request, serve_ocsp, shared_key_name, verify_ocsp_response, Device, Factory,
    Issued, OcspCertStatus, OcspResponder, OcspResponseCode, OcspServerConfig, OcspShutdown,
    PeerVerifier, Provisioner, RejectReason, RevocationPolicy, DEFAULT_OCSP_SIGNER_VALIDITY,
    OCSP_SIGNER_KEY,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};
use x509_ocsp::{BasicOcspResponse, OcspResponse};

/// A PKI at the real time (the HTTP server answers at the real time), with
/// a delegated OCSP signer.
fn pki() -> Pki {
    let pki = Pki::at(OffsetDateTime::now_utc());
    pki.factory()
        .issue_ocsp_signer(
            &officer(),
            "Test OCSP Responder",
            DEFAULT_OCSP_SIGNER_VALIDITY,
            pki.now(),
        )
        .expect("OCSP signer");
    pki
}

/// Provisions `id` (its key in the production store) through `f`.
fn provision(pki: &Pki, f: &Factory<'_, SoftStore>, id: &str) -> Issued {
    let key = shared_key_name(id).unwrap();
    let dev = Device::new(&pki.prod.ks, &pki.prod.db, &key).unwrap();
    Provisioner::new(f, operator())
        .provision(&dev, &operator(), id, "line-3", pki.now())
        .unwrap()
        .issued
}

fn chain(i: &Issued) -> Vec<Vec<u8>> {
    vec![i.certificate.der.clone(), i.intermediate.der.clone()]
}

/// The responder's answer about `i`'s certificate, with `nonce`.
fn ask(pki: &Pki, i: &Issued, nonce: Option<&[u8]>, now: OffsetDateTime) -> Vec<u8> {
    let req = ocsp_request(&i.certificate.der, &i.intermediate.der, nonce).unwrap();
    OcspResponder::new(pki.factory()).respond(&req, now)
}

/// A verifier trusting `i`'s root, with the root's CRL (which covers the
/// intermediate) and `policy`.
fn verifier(pki: &Pki, i: &Issued, policy: RevocationPolicy) -> PeerVerifier {
    PeerVerifier::new(&i.root.der)
        .unwrap()
        .with_crl(&pki.root_crl)
        .unwrap()
        .with_revocation_policy(policy)
}

#[test]
fn delegated_signer_is_in_the_production_keystore_with_the_right_certificate() {
    let pki = pki();
    let f = pki.factory();
    let cert = f.ocsp_signer().unwrap();
    let info = pki.prod.ks.info(OCSP_SIGNER_KEY).unwrap();
    assert_eq!(info.algorithm, keystore_api::Algorithm::EcdsaP256Sha256);
    let active = info.active().unwrap();
    assert_eq!(active.origin, keystore_api::Origin::Generated);
    assert_eq!(
        active.fingerprint.as_deref(),
        Some(cert.spki_fingerprint.as_str())
    );
    assert!(!cert.is_ca);
    assert!(cert.not_after <= pki.now() + DEFAULT_OCSP_SIGNER_VALIDITY);
    let parsed = x509_cert::Certificate::from_der(&cert.der).unwrap();
    let exts = parsed.tbs_certificate.extensions.unwrap();
    let has = |oid| exts.iter().any(|e| e.extn_id == oid);
    assert!(has(const_oid::db::rfc6960::ID_PKIX_OCSP_NOCHECK));
    let eku = exts
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5912::ID_CE_EXT_KEY_USAGE)
        .unwrap();
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).unwrap();
    assert_eq!(eku.0, vec![const_oid::db::rfc5912::ID_KP_OCSP_SIGNING]);
    // Recorded with its event; only the security officer may issue it.
    let events = f.verify_events().unwrap();
    assert!(events
        .iter()
        .any(|e| e.event == "ocsp-signer" && e.serial.as_deref() == Some(&cert.serial)));
    let err = f
        .issue_ocsp_signer(&operator(), "x", Duration::days(1), pki.now())
        .unwrap_err();
    assert!(
        err.is(ErrorKind::Auth) || err.is(ErrorKind::Policy),
        "{err}"
    );
    let err = f
        .issue_ocsp_signer(&officer(), "x", Duration::days(91), pki.now())
        .unwrap_err();
    assert!(err.is(ErrorKind::InvalidInput), "{err}");
    // Renewal certifies a fresh key version.
    let renewed = f
        .issue_ocsp_signer(
            &officer(),
            "Test OCSP Responder",
            Duration::days(2),
            pki.now(),
        )
        .unwrap();
    assert_ne!(renewed.spki_fingerprint, cert.spki_fingerprint);
    assert_eq!(f.ocsp_signer().unwrap().serial, renewed.serial);
}

#[test]
fn responder_answers_good_revoked_and_unknown_with_update_times_and_nonce() {
    let pki = pki();
    let f = pki.factory();
    let good = provision(&pki, &f, "DEV-GOOD");
    let bad = provision(&pki, &f, "DEV-BAD");
    let at = pki.now();
    f.revoke(
        &officer(),
        &bad.certificate.serial,
        "key-compromise: lost",
        at,
    )
    .unwrap();
    let now = at + Duration::seconds(5);

    let nonce = [7u8; 16];
    let resp = ask(&pki, &good, Some(&nonce), now);
    assert_eq!(
        OcspResponseCode::of(&resp).unwrap(),
        OcspResponseCode::Successful
    );
    let a = verify_ocsp_response(
        &resp,
        &good.certificate.der,
        &good.intermediate.der,
        now,
        Some(&nonce),
    )
    .unwrap();
    assert_eq!(a.status, OcspCertStatus::Good);
    assert_eq!(a.nonce.as_deref(), Some(&nonce[..]));
    assert!(a.delegated);
    assert_eq!(a.this_update, now.replace_nanosecond(0).unwrap());
    assert_eq!(a.next_update - a.this_update, Duration::hours(1));

    let resp = ask(&pki, &bad, None, now);
    let a = verify_ocsp_response(
        &resp,
        &bad.certificate.der,
        &bad.intermediate.der,
        now,
        None,
    )
    .unwrap();
    assert_eq!(
        a.status,
        OcspCertStatus::Revoked {
            at: at.replace_nanosecond(0).unwrap(),
            reason: Some(1)
        }
    );
    assert_eq!(a.nonce, None);

    // A serial this intermediate never issued: unknown.
    let other = Pki::named(at, "Other Root", "Other Production CA");
    let stranger = provision(&other, &other.factory(), "DEV-OTHER");
    let req = ocsp_request(&stranger.certificate.der, &good.intermediate.der, None).unwrap();
    let resp = OcspResponder::new(pki.factory()).respond(&req, now);
    let a = verify_ocsp_response(
        &resp,
        &stranger.certificate.der,
        &good.intermediate.der,
        now,
        None,
    )
    .unwrap();
    assert_eq!(a.status, OcspCertStatus::Unknown);
    // Another issuer's name and key hash: unauthorized, unsigned.
    let resp = ask(&pki, &stranger, None, now);
    assert_eq!(
        OcspResponseCode::of(&resp).unwrap(),
        OcspResponseCode::Unauthorized
    );
    // A longer validity on request.
    let responder = OcspResponder::new(pki.factory())
        .with_response_validity(Duration::hours(6))
        .unwrap();
    let req = ocsp_request(&good.certificate.der, &good.intermediate.der, None).unwrap();
    let a = verify_ocsp_response(
        &responder.respond(&req, now),
        &good.certificate.der,
        &good.intermediate.der,
        now,
        None,
    )
    .unwrap();
    assert_eq!(a.next_update - a.this_update, Duration::hours(6));
    assert!(OcspResponder::new(pki.factory())
        .with_response_validity(Duration::ZERO)
        .is_err());
}

#[test]
fn responder_refuses_garbage_and_answers_try_later_without_a_signer() {
    let pki = Pki::at(OffsetDateTime::now_utc());
    let f = pki.factory();
    let good = provision(&pki, &f, "DEV-1");
    let responder = OcspResponder::new(pki.factory());
    for garbage in [
        &b""[..],
        b"garbage",
        &[0x30, 0x80],
        &[0x30; 300],
        &[0u8; 20_000],
    ] {
        let resp = responder.respond(garbage, pki.now());
        assert_eq!(
            OcspResponseCode::of(&resp).unwrap(),
            OcspResponseCode::MalformedRequest
        );
    }
    // A nonce over 32 octets is malformed (RFC 8954); ours refuses to make one.
    assert!(ocsp_request(
        &good.certificate.der,
        &good.intermediate.der,
        Some(&[1; 33])
    )
    .is_err());
    let mut req = x509_ocsp::OcspRequest::from_der(
        &ocsp_request(
            &good.certificate.der,
            &good.intermediate.der,
            Some(&[1; 32]),
        )
        .unwrap(),
    )
    .unwrap();
    let ext = &mut req.tbs_request.request_extensions.as_mut().unwrap()[0];
    let long = der::asn1::OctetString::new([1u8; 40].to_vec())
        .unwrap()
        .to_der()
        .unwrap();
    ext.extn_value = der::asn1::OctetString::new(long).unwrap();
    let resp = responder.respond(&req.to_der().unwrap(), pki.now());
    assert_eq!(
        OcspResponseCode::of(&resp).unwrap(),
        OcspResponseCode::MalformedRequest
    );
    // No delegated certificate yet: tryLater.
    let resp = ask(&pki, &good, None, pki.now());
    assert_eq!(
        OcspResponseCode::of(&resp).unwrap(),
        OcspResponseCode::TryLater
    );
    // An expired delegated certificate: tryLater too.
    f.issue_ocsp_signer(
        &officer(),
        "Test OCSP Responder",
        Duration::days(1),
        pki.now(),
    )
    .unwrap();
    let resp = ask(&pki, &good, None, pki.now() + Duration::days(2));
    assert_eq!(
        OcspResponseCode::of(&resp).unwrap(),
        OcspResponseCode::TryLater
    );
}

#[test]
fn checker_rejects_revoked_unknown_and_expired_answers() {
    let pki = pki();
    let f = pki.factory();
    let good = provision(&pki, &f, "DEV-GOOD");
    let bad = provision(&pki, &f, "DEV-BAD");
    let ghost = provision(&pki, &f, "DEV-GHOST");
    f.revoke(&officer(), &bad.certificate.serial, "superseded", pki.now())
        .unwrap();
    // A certificate the registry does not know (as if mis-issued).
    rusqlite::Connection::open(pki.prod.dir.join("pki.sqlite"))
        .unwrap()
        .execute(
            "DELETE FROM issued WHERE serial = ?1",
            [&ghost.certificate.serial],
        )
        .unwrap();
    let now = pki.now();
    let v = verifier(&pki, &good, RevocationPolicy::RequireOcsp);

    let resp = ask(&pki, &good, None, now);
    let info = v
        .check_peer_with_ocsp(&chain(&good), Some(&resp), now)
        .unwrap();
    assert_eq!(info.common_name.as_deref(), Some("DEV-GOOD"));

    let resp = ask(&pki, &bad, None, now);
    let r = v
        .check_peer_with_ocsp(&chain(&bad), Some(&resp), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    assert_eq!(r.serial.as_deref(), Some(bad.certificate.serial.as_str()));
    assert_eq!(keystore_api::Error::from(r).kind(), ErrorKind::KeyState);

    let resp = ask(&pki, &ghost, None, now);
    let r = v
        .check_peer_with_ocsp(&chain(&ghost), Some(&resp), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspUnknown, "{r}");

    // Past nextUpdate (the certificates themselves are still valid).
    let resp = ask(&pki, &good, None, now);
    let later = now + Duration::hours(1) + Duration::seconds(1);
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&resp), later)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspExpired, "{r}");
    // thisUpdate from the future (beyond the allowed clock skew).
    let ahead = ask(&pki, &good, None, now + Duration::minutes(6));
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&ahead), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspExpired, "{r}");
    // A response about another certificate does not vouch for this one.
    let resp = ask(&pki, &good, None, now);
    let r = v
        .check_peer_with_ocsp(&chain(&bad), Some(&resp), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspUnavailable, "{r}");
    // Garbage stapled.
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(b"junk"), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::Malformed, "{r}");
}

/// `resp` with its BasicOCSPResponse changed by `edit`.
fn tampered(resp: &[u8], edit: impl FnOnce(&mut BasicOcspResponse)) -> Vec<u8> {
    let mut r = OcspResponse::from_der(resp).unwrap();
    let bytes = r.response_bytes.as_mut().unwrap();
    let mut basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    edit(&mut basic);
    bytes.response = der::asn1::OctetString::new(basic.to_der().unwrap()).unwrap();
    r.to_der().unwrap()
}

#[test]
fn checker_rejects_wrongly_signed_responses() {
    let pki = pki();
    let good = provision(&pki, &pki.factory(), "DEV-GOOD");
    let now = pki.now();
    let v = verifier(&pki, &good, RevocationPolicy::RequireOcsp);
    let resp = ask(&pki, &good, None, now);

    // A flipped signature bit.
    let bad = tampered(&resp, |b| {
        let mut sig = b.signature.raw_bytes().to_vec();
        let n = sig.len() - 3;
        sig[n] ^= 1;
        b.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
    });
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&bad), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadSignature, "{r}");

    // A changed response (nextUpdate removed), signature left as it was.
    let edited = tampered(&ask(&pki, &good, None, now), |b| {
        b.tbs_response_data.responses[0].next_update = None;
    });
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&edited), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadSignature, "{r}");

    // Signed by an unrelated key that claims to be the issuer.
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let forged = tampered(&resp, |b| {
        let inter = x509_cert::Certificate::from_der(&good.intermediate.der).unwrap();
        b.tbs_response_data.responder_id =
            x509_ocsp::ResponderId::ByName(inter.tbs_certificate.subject);
        b.certs = None;
        use p256::ecdsa::signature::Signer;
        let sig: p256::ecdsa::DerSignature = key.sign(&b.tbs_response_data.to_der().unwrap());
        b.signature = der::asn1::BitString::from_bytes(sig.as_bytes()).unwrap();
    });
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&forged), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadSignature, "{r}");

    // Signed by a genuine delegated OCSP signer of another CA.
    let other = pki_named("Other Root", "Other Production CA");
    let other_signer = other.factory().ocsp_signer().unwrap();
    let foreign = tampered(&resp, |b| {
        let sig = other
            .prod
            .ks
            .sign(
                OCSP_SIGNER_KEY,
                &b.tbs_response_data.to_der().unwrap(),
                SignatureFormat::Der,
            )
            .unwrap();
        let cert = x509_cert::Certificate::from_der(&other_signer.der).unwrap();
        let kh = sha1_of(
            cert.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        );
        b.tbs_response_data.responder_id =
            x509_ocsp::ResponderId::ByKey(der::asn1::OctetString::new(kh).unwrap());
        b.certs = Some(vec![cert]);
        b.signature = der::asn1::BitString::from_bytes(&sig.bytes).unwrap();
    });
    let r = v
        .check_peer_with_ocsp(&chain(&good), Some(&foreign), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadSignature, "{r}");
    assert!(r.detail.contains("not authorised"), "{r}");
}

fn pki_named(root: &str, inter: &str) -> Pki {
    let pki = Pki::named(OffsetDateTime::now_utc(), root, inter);
    pki.factory()
        .issue_ocsp_signer(
            &officer(),
            "Other OCSP Responder",
            Duration::days(1),
            pki.now(),
        )
        .unwrap();
    pki
}

fn sha1_of(data: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(data).to_vec()
}

#[test]
fn checker_rejects_replayed_responses() {
    let pki = pki();
    let good = provision(&pki, &pki.factory(), "DEV-GOOD");
    let now = pki.now();
    let resp = ask(&pki, &good, Some(&[1; 16]), now);
    let (cert, issuer) = (&good.certificate.der, &good.intermediate.der);
    let r = verify_ocsp_response(&resp, cert, issuer, now, Some(&[2; 16])).unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspReplay, "{r}");
    let no_nonce = ask(&pki, &good, None, now);
    let r = verify_ocsp_response(&no_nonce, cert, issuer, now, Some(&[2; 16])).unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspReplay, "{r}");
    assert_eq!(keystore_api::Error::from(r).kind(), ErrorKind::Integrity);
}

#[test]
fn policies_require_ocsp_crl_or_either() {
    let pki = pki();
    let f = pki.factory();
    let good = provision(&pki, &f, "DEV-GOOD");
    let bad = provision(&pki, &f, "DEV-BAD");
    let now = pki.now();
    let crl = f
        .revoke(&officer(), &bad.certificate.serial, "key-compromise", now)
        .unwrap();
    let with_crl = |p| verifier(&pki, &good, p).with_crl(&crl).unwrap();

    // Require OCSP: nothing stapled and no fetching fails, CRL or not.
    let r = with_crl(RevocationPolicy::RequireOcsp)
        .check_peer(&chain(&good), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspUnavailable, "{r}");
    // ... and a CRL that lists the certificate still rejects it.
    let resp = ask(&pki, &bad, None, now);
    let r = with_crl(RevocationPolicy::RequireOcsp)
        .check_peer_with_ocsp(&chain(&bad), Some(&resp), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    // Require CRL (the default): the CRL decides, a stapled response is not read.
    verifier(&pki, &good, RevocationPolicy::default())
        .with_crl(&crl)
        .unwrap()
        .check_peer_with_ocsp(&chain(&good), Some(b"junk"), now)
        .unwrap();
    let r = verifier(&pki, &good, RevocationPolicy::RequireCrl)
        .check_peer(&chain(&good), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::RevocationUnknown, "{r}");
    // Either: OCSP when there is a usable answer, else the CRL.
    let either = with_crl(RevocationPolicy::OcspOrCrl);
    either.check_peer(&chain(&good), now).unwrap();
    either
        .check_peer_with_ocsp(&chain(&good), Some(b"junk"), now)
        .unwrap();
    let r = either.check_peer(&chain(&bad), now).unwrap_err();
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    let no_crl = verifier(&pki, &good, RevocationPolicy::OcspOrCrl);
    no_crl
        .check_peer_with_ocsp(&chain(&good), Some(&ask(&pki, &good, None, now)), now)
        .unwrap();
    let r = no_crl.check_peer(&chain(&good), now).unwrap_err();
    assert_eq!(r.reason, RejectReason::RevocationUnknown, "{r}");
    assert!(r.detail.contains("no usable OCSP answer"), "{r}");
    // A verified "revoked" is final under Either, whatever the CRL says.
    let r = verifier(&pki, &good, RevocationPolicy::OcspOrCrl)
        .check_peer_with_ocsp(&chain(&bad), Some(&ask(&pki, &bad, None, now)), now)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::Revoked, "{r}");
}

/// Runs `serve_ocsp` for `responder` on 127.0.0.1 on this thread while
/// `client` runs on another with the address; the server is shut down when
/// `client` returns or panics (the panic is then re-raised here).
fn with_server<B: keystore_api::Backend>(
    responder: &OcspResponder<'_, B>,
    config: &OcspServerConfig,
    client: impl FnOnce(SocketAddr) + Send,
) {
    with_listener(
        responder,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        config,
        client,
    )
}

/// [`with_server`] on a listener the caller bound.
fn with_listener<B: keystore_api::Backend>(
    responder: &OcspResponder<'_, B>,
    listener: TcpListener,
    config: &OcspServerConfig,
    client: impl FnOnce(SocketAddr) + Send,
) {
    let addr = listener.local_addr().unwrap();
    let stop = OcspShutdown::new();
    let outcome = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let c = s.spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client(addr)));
            stop2.shutdown();
            r
        });
        serve_ocsp(responder, listener, config, &stop).expect("serve");
        c.join().unwrap()
    });
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// One raw HTTP/1.1 exchange (`Connection: close`): the status code and body.
fn http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(StdDuration::from_secs(10)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |i| i + 4);
    (code, out[split..].to_vec())
}

fn post(addr: SocketAddr, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    http(addr, &head, body)
}

#[test]
fn server_answers_post_and_get_and_survives_bad_input() {
    let pki = pki();
    let f = pki.factory();
    let good = provision(&pki, &f, "DEV-GOOD");
    let (cert, issuer) = (good.certificate.der.clone(), good.intermediate.der.clone());
    let responder = OcspResponder::new(pki.factory());
    with_server(&responder, &OcspServerConfig::default(), |addr| {
        let url = format!("http://{addr}");
        let t = StdDuration::from_secs(10);
        let check_good = || {
            let nonce = [9u8; 20];
            let req = ocsp_request(&cert, &issuer, Some(&nonce)).unwrap();
            let resp = fetch_ocsp(&url, &req, t).unwrap();
            let now = OffsetDateTime::now_utc();
            let a = verify_ocsp_response(&resp, &cert, &issuer, now, Some(&nonce)).unwrap();
            assert_eq!(a.status, OcspCertStatus::Good);
        };
        check_good();
        // GET: base64 in the path, URL-encoded.
        use base64::Engine;
        let req = ocsp_request(&cert, &issuer, None).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
        let path = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let (code, body) = http(
            addr,
            &format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert_eq!(code, 200);
        let a =
            verify_ocsp_response(&body, &cert, &issuer, OffsetDateTime::now_utc(), None).unwrap();
        assert_eq!(a.status, OcspCertStatus::Good);
        // Garbage bodies: malformedRequest, over and over.
        for garbage in [
            &b"garbage"[..],
            b"",
            &[0x30, 0x82, 0xff, 0xff],
            &[0u8; 1000],
        ] {
            let (code, body) = post(addr, "application/ocsp-request", garbage);
            assert_eq!(code, 200);
            assert_eq!(
                OcspResponseCode::of(&body).unwrap(),
                OcspResponseCode::MalformedRequest
            );
        }
        let (code, body) = http(
            addr,
            "GET /!!notbase64!! HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert_eq!(
            (code, OcspResponseCode::of(&body).unwrap()),
            (200, OcspResponseCode::MalformedRequest)
        );
        // Oversized: declared, or sent without a length (chunked).
        assert_eq!(
            post(addr, "application/ocsp-request", &vec![0x30; 100_000]).0,
            413
        );
        let chunk = vec![b'A'; 40_000];
        let mut chunked = format!("{:x}\r\n", chunk.len()).into_bytes();
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let head =
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        assert_eq!(http(addr, head, &chunked).0, 413);
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "A".repeat(60_000)
        );
        let code = http(addr, &long, b"").0;
        assert!(code == 414 || code == 431 || code == 0, "{code}");
        // Wrong method and media type.
        assert_eq!(
            http(
                addr,
                "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                b""
            )
            .0,
            405
        );
        assert_eq!(post(addr, "text/plain", b"hello").0, 415);
        // Not HTTP at all.
        let (code, _) = http(addr, "\x16\x03\x01\x00\x05hello\r\n\r\n", b"");
        assert!(code == 400 || code == 0, "{code}");
        // A client that connects and says nothing does not hold anything up.
        let _idle = TcpStream::connect(addr).unwrap();
        // And the server still answers.
        check_good();
    });
}

#[test]
fn checker_fetches_from_the_aia_url_and_rejects_a_replaying_server() {
    let pki = pki();
    // The honest responder, on a port bound first so devices carry its URL.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let f = pki.factory().with_ocsp_url(&url).unwrap();
    assert_eq!(f.ocsp_url(), Some(url.as_str()));
    let good = provision(&pki, &f, "DEV-GOOD");
    let bad = provision(&pki, &f, "DEV-BAD");
    f.revoke(
        &officer(),
        &bad.certificate.serial,
        "key-compromise",
        pki.now(),
    )
    .unwrap();
    assert!(pki.factory().with_ocsp_url("ftp://x").is_err());
    let responder = OcspResponder::new(pki.factory());
    let config = OcspServerConfig::default();
    let v = verifier(&pki, &good, RevocationPolicy::RequireOcsp)
        .with_ocsp_fetch(StdDuration::from_secs(10));
    with_listener(&responder, listener, &config, |_| {
        let now = OffsetDateTime::now_utc();
        v.check_peer(&chain(&good), now).unwrap();
        let r = v.check_peer(&chain(&bad), now).unwrap_err();
        assert_eq!(r.reason, RejectReason::Revoked, "{r}");
    });

    // A server that replays an old response (with another nonce) to every
    // request: the nonce check rejects it.
    let replayer = TcpListener::bind("127.0.0.1:0").unwrap();
    let rurl = format!("http://{}", replayer.local_addr().unwrap());
    let fr = pki.factory().with_ocsp_url(&rurl).unwrap();
    let victim = provision(&pki, &fr, "DEV-VICTIM");
    let replayed_victim = ask(&pki, &victim, Some(&[3; 16]), pki.now());
    let server = std::thread::spawn(move || {
        for _ in 0..1 {
            let (mut s, _) = replayer.accept().unwrap();
            s.set_read_timeout(Some(StdDuration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                replayed_victim.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&replayed_victim).unwrap();
        }
    });
    let r = v
        .check_peer(&chain(&victim), OffsetDateTime::now_utc())
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspReplay, "{r}");
    server.join().unwrap();
    // Nobody listening: unavailable, within the timeout.
    let dead = provision(&pki, &fr, "DEV-DEAD");
    let started = std::time::Instant::now();
    let r = v
        .check_peer(&chain(&dead), OffsetDateTime::now_utc())
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::OcspUnavailable, "{r}");
    assert!(started.elapsed() < StdDuration::from_secs(10));
}

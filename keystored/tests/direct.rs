//! The direct framing under bad input, with raw sockets: every abuse ends
//! that connection (after an `InvalidInput` failure where one can be
//! sent), and the daemon keeps serving with no key lost. The same policy
//! applies as over gRPC.

use keystore_api::{Actor, Algorithm, ErrorKind, KeySpec, Role, SignatureFormat};
use keystore_client::Client;
use keystore_rpc::direct::{
    error_of_failure, frame, header, Method, FAILED, HEADER_LEN, MAGIC, OK,
};
use keystore_rpc::pb;
use prost::Message;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use test_support::daemon::Daemon;

fn started(policy: &str, limits: &str) -> Daemon {
    std::env::set_var("KEYSTORED_BIN", env!("CARGO_BIN_EXE_keystored"));
    let mut d = Daemon::soft(policy, limits);
    d.start();
    let officer = Actor::new("setup", Role::SecurityOfficer).expect("actor");
    d.open_store()
        .create(&officer, "k", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("create");
    d
}

const APP: &str = "[[caller]]\nuid = 0\nrole = \"application\"\nkeys = [\"k\"]\n";

/// A raw direct connection, past the magic.
fn dial(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(MAGIC).expect("magic");
    s
}

/// Reads one answer: its tag and body; `None` when the daemon closed.
fn answer(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let (len, tag) = header(head);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((tag, body))
}

fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn sign_request(name: &str, message: &[u8]) -> Vec<u8> {
    frame(
        Method::Sign as u8,
        &pb::SignRequest {
            name: name.into(),
            message: message.to_vec(),
            format: 0,
        },
    )
}

/// The daemon still serves, over both framings, and the key still signs.
fn still_serving(d: &Daemon) {
    let c = Client::connect(d.socket().to_str().expect("utf-8")).expect("connect");
    let sig = c.sign("k", b"after", SignatureFormat::Der).expect("sign");
    assert_eq!(
        c.verify("k", b"after", &sig.bytes, None).expect("verify"),
        1
    );
    assert_eq!(c.list().expect("list over gRPC").len(), 1);
}

#[test]
fn a_sign_over_raw_frames_verifies_and_calls_follow_one_another() {
    let d = started(APP, "");
    let mut s = dial(&d);
    for i in 0..3u8 {
        s.write_all(&sign_request("k", &[i; 10])).expect("send");
        let (tag, body) = answer(&mut s).expect("answer");
        assert_eq!(tag, OK);
        let r = pb::SignResponse::decode(&body[..]).expect("response");
        let pk = d.open_store().public_key("k").expect("pk");
        pk.verify(&[i; 10], &r.signature).expect("verifies");
    }
    // A key outside the caller's names is NotFound, as over gRPC.
    s.write_all(&sign_request("other", b"m")).expect("send");
    let (tag, body) = answer(&mut s).expect("answer");
    assert_eq!(tag, FAILED);
    let e = error_of_failure(&pb::Failure::decode(&body[..]).expect("failure"));
    assert_eq!((e.kind(), e.key()), (ErrorKind::NotFound, Some("other")));
}

#[test]
fn bad_frames_end_the_connection_and_the_daemon_keeps_serving() {
    let d = started(
        APP,
        "max_message_bytes = 65536\nrequest_timeout_seconds = 2",
    );
    // A length over the limit: InvalidInput, then closed.
    let mut s = dial(&d);
    s.write_all(&[0xff, 0xff, 0xff, 0xff, Method::Sign as u8])
        .expect("send");
    let (tag, body) = answer(&mut s).expect("a failure first");
    assert_eq!(tag, FAILED);
    let e = error_of_failure(&pb::Failure::decode(&body[..]).expect("failure"));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(closed(&mut s));
    // An unknown method: InvalidInput, then closed.
    let mut s = dial(&d);
    s.write_all(&[0, 0, 0, 1, 99]).expect("send");
    assert_eq!(answer(&mut s).expect("failure").0, FAILED);
    assert!(closed(&mut s));
    // A body that is not the method's message: InvalidInput, and the
    // connection goes on (the framing held).
    let mut s = dial(&d);
    s.write_all(&[0, 0, 0, 4, Method::Sign as u8, 0xff, 0xff, 0xff])
        .expect("send");
    let (tag, body) = answer(&mut s).expect("answer");
    assert_eq!(tag, FAILED);
    let e = error_of_failure(&pb::Failure::decode(&body[..]).expect("failure"));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    s.write_all(&sign_request("k", b"m")).expect("send");
    assert_eq!(answer(&mut s).expect("answer").0, OK);
    // A body that never completes: closed by the call timeout.
    let mut s = dial(&d);
    s.write_all(&[0, 0, 1, 0, Method::Sign as u8, 1, 2, 3])
        .expect("send");
    let t = Instant::now();
    assert!(answer(&mut s).is_none());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // A client gone mid-request, and one gone before its answer.
    for cut in [3usize, 9] {
        let mut s = dial(&d);
        s.write_all(&sign_request("k", &[7; 100])[..cut])
            .expect("send");
        drop(s);
    }
    let mut s = dial(&d);
    s.write_all(&sign_request("k", b"m")).expect("send");
    drop(s);
    // Garbage instead of the magic is not the direct framing: HTTP/2 (tonic)
    // refuses it.
    let mut s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(b"KSDIRECX garbage garbage garbage")
        .expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    still_serving(&d);
}

#[test]
fn the_direct_framing_applies_the_policy() {
    let d = started(
        "[[caller]]\nuid = 0\nrole = \"operator\"\n",
        "audited_refusals_per_minute = 100",
    );
    let mut s = dial(&d);
    s.write_all(&sign_request("k", b"m")).expect("send");
    let (tag, body) = answer(&mut s).expect("answer");
    assert_eq!(tag, FAILED);
    let e = error_of_failure(&pb::Failure::decode(&body[..]).expect("failure"));
    assert_eq!(e.kind(), ErrorKind::Policy, "{e}");
    let officer = Actor::new("auditor", Role::SecurityOfficer).expect("actor");
    let trail = d.open_store().export_audit(&officer).expect("export");
    assert!(
        trail.iter().any(|e| e.event.as_str() == "refused"
            && e.role == "operator"
            && e.actor.starts_with("uid=0,")
            && e.key_name.as_deref() == Some("k")),
        "the refusal is audited"
    );
}

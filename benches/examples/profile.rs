//! A profiling driver for the `pkcs11` and `tpm` benches (not a benchmark):
//! where the time of a keystore operation goes, layer by layer.
//!
//! ```text
//! cargo run --release -p benches --example profile -- pkcs11|tpm|soft breakdown [ITERS]
//! cargo run --release -p benches --example profile -- pkcs11|tpm|soft PATH ITERS
//! cargo run --release -p benches --example profile -- pkcs11|soft threads ITERS
//! ```
//!
//! `breakdown` times every layer of the sign and MAC paths in turn (median
//! of 5 rounds of ITERS calls; wall time, so only as quiet as the machine).
//! `A/B` (e.g. `raw-ecdsa/ks-ecdsa`) alternates rounds of ITERS calls of
//! two paths and reports the median ratio: drift in machine load, which
//! sequential criterion runs suffer from, then hits both alike.
//!
//! `PATH` runs one path ITERS times inside `measured_loop` and nothing
//! else after set-up, for instruction counts that machine noise does not
//! touch:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_loop*' \
//!     target/release/examples/profile pkcs11 ks-mac 500
//! ```
//!
//! Paths: `raw-mac`, `backend-mac`, `ks-mac`, `raw-ecdsa`, `backend-ecdsa`,
//! `ks-ecdsa`, `raw-rsa`, `ks-rsa`, and for pkcs11 also `raw-attrs` (the
//! `C_GetAttributeValue` of the backend's per-use protection check) and
//! `verify-ecdsa` / `verify-rsa` (the backend's host-side verification).

use backend_pkcs11::testing;
use backend_tpm::swtpm::Swtpm;
use backend_tpm::{TpmBackend, TpmConfig};
use benches::{bench_dir, standard_keys};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use keystore_api::BackendKey;
use keystore_api::Mac;
use keystore_api::Signing;
use keystore_api::{Algorithm, KeyHandle, Keystore, SignatureFormat};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

const MSG: &[u8] = b"gateway telemetry frame: 64 bytes of typical payload..........";
const EC: Algorithm = Algorithm::EcdsaP256Sha256;
const RSA: Algorithm = Algorithm::Rsa2048Pkcs1Sha256;

/// A path: given a runner (a timer, or `measured_loop`), it sets up what it
/// holds (a raw TPM path: the loaded key) and hands the runner one call.
type Op<'a> = Box<dyn FnMut(&mut dyn FnMut(&mut dyn FnMut())) + 'a>;

/// A path that needs no set-up of its own.
fn simple<'a>(mut f: impl FnMut() + 'a) -> Op<'a> {
    Box::new(move |run| run(&mut f))
}

/// The loop callgrind collects in (`--toggle-collect='*measured_loop*'`).
#[inline(never)]
fn measured_loop(iters: u32, f: &mut dyn FnMut()) {
    for _ in 0..iters {
        f();
    }
}

fn median_us(iters: u32, f: &mut dyn FnMut()) -> f64 {
    measured_loop((iters / 10).max(1), f);
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            measured_loop(iters, f);
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// Runs `path` (or every path, timed, for `breakdown`).
fn run(mut ops: BTreeMap<&'static str, (&'static str, Op<'_>)>, path: &str, iters: u32) {
    if path == "breakdown" {
        for (name, (what, op)) in ops.iter_mut() {
            // RSA is ~10x slower than the rest: fewer iterations.
            let n = if name.contains("rsa") {
                (iters / 10).max(10)
            } else {
                iters
            };
            let mut us = 0.0;
            op(&mut |f| us = median_us(n, f));
            println!("{name:<19} {what:<62} {us:>9.2} µs");
        }
        return;
    }
    if let Some((a, b)) = path.split_once('/') {
        paired(&mut ops, a, b, iters);
        return;
    }
    let Some((_, op)) = ops.get_mut(path) else {
        let names: Vec<_> = ops.keys().collect();
        panic!("unknown path '{path}'; one of breakdown, {names:?}");
    };
    op(&mut |f| {
        f();
        measured_loop(iters, f);
    });
}

/// `A/B`: 41 rounds of `iters` calls of A and of B, alternating which goes
/// first, so that drift in machine load hits both alike. Prints the median
/// per-call time of each and the median of the per-round ratios B/A.
fn paired(ops: &mut BTreeMap<&'static str, (&'static str, Op<'_>)>, a: &str, b: &str, iters: u32) {
    for p in [a, b] {
        assert!(ops.contains_key(p), "unknown path '{p}'");
    }
    // (wall µs, this thread's on-CPU µs) per call.
    let mut time = |p: &str| -> (f64, f64) {
        let (_, op) = ops.get_mut(p).expect("path");
        let mut us = (0.0, 0.0);
        op(&mut |f| {
            f();
            let (t, cpu) = (Instant::now(), thread_cpu_ns());
            measured_loop(iters, f);
            us = (
                t.elapsed().as_secs_f64() * 1e6 / iters as f64,
                (thread_cpu_ns() - cpu) as f64 / 1e3 / iters as f64,
            );
        });
        us
    };
    let (mut ta, mut tb, mut ca, mut cb, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..41 {
        let (x, y) = if round % 2 == 0 {
            let x = time(a);
            (x, time(b))
        } else {
            let y = time(b);
            (time(a), y)
        };
        ta.push(x.0);
        tb.push(y.0);
        ca.push(x.1);
        cb.push(y.1);
        ratio.push(y.0 / x.0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "drift: {a} {:.2} µs in the first 5 rounds, {:.2} µs in the last 5; {b} {:.2} → {:.2} µs",
        mean(&ta[..5]),
        mean(&ta[36..]),
        mean(&tb[..5]),
        mean(&tb[36..])
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb, mr) = (median(&mut ta), median(&mut tb), median(&mut ratio));
    let (mca, mcb) = (median(&mut ca), median(&mut cb));
    let (lo, hi) = (ratio[10], ratio[30]);
    println!(
        "{a}: {ma:.2} µs ({mca:.2} µs on this thread's CPU)   {b}: {mb:.2} µs ({mcb:.2} µs on CPU)\n  \
         {b}/{a}: median {mr:.3} (interquartile {lo:.3}..{hi:.3}; 41 rounds of {iters})"
    );
}

/// CPU seconds (user + system) of this process so far, all threads
/// included (`/proc/self/stat`, clock ticks of 10 ms).
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`),
/// so that a path's own CPU time shows apart from time spent waiting for the
/// token or simulator.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn pkcs11(path: &str, iters: u32) {
    let hsm = testing::softhsm().unwrap_or_else(|e| panic!("{e}"));
    let token = hsm.new_token("profile").unwrap_or_else(|e| panic!("{e}"));
    let dir = bench_dir();
    let ks = Keystore::open(
        token.open().expect("backend"),
        &dir.path().join("metadata.sqlite"),
    )
    .expect("keystore");
    standard_keys(&ks);
    let s = token.raw_session().expect("raw session");
    s.login().expect("login");
    let object = |name: &str, class: ObjectClass| -> (ObjectHandle, KeyHandle) {
        let h = ks.backend_handle(name, 1).expect("handle");
        let id = ks.backend().cka_id(&h).expect("id");
        let found = s
            .find_objects(&[Attribute::Class(class), Attribute::Id(id)])
            .expect("find");
        (found[0], h)
    };
    if path == "threads" {
        drop(s);
        pkcs11_threads(&token, &ks, iters);
        return;
    }
    let (ec, ec_h) = object("ecdsa", ObjectClass::PRIVATE_KEY);
    let (rsa, rsa_h) = object("rsa", ObjectClass::PRIVATE_KEY);
    let (mac, mac_h) = object("hmac", ObjectClass::SECRET_KEY);
    let be = ks.backend();
    let attrs = [
        AttributeType::Id,
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::Modifiable,
        AttributeType::Copyable,
        AttributeType::AllowedMechanisms,
    ];
    let ec_sig = be
        .sign(&BackendKey::new(ec_h.clone(), EC), MSG)
        .expect("sign");
    let ec_pk = be
        .public_key(&BackendKey::new(ec_h.clone(), EC))
        .expect("public key");
    let rsa_sig = be
        .sign(&BackendKey::new(rsa_h.clone(), RSA), MSG)
        .expect("sign");
    let rsa_pk = be
        .public_key(&BackendKey::new(rsa_h.clone(), RSA))
        .expect("public key");
    let aws_pk = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        ec_pk.spki_der()[ec_pk.spki_der().len() - 65..].to_vec(),
    );
    let (s, ks) = (&s, &ks);
    let mut ops: BTreeMap<&'static str, (&'static str, Op<'_>)> = BTreeMap::new();
    ops.insert(
        "raw-mac",
        (
            "HMAC: raw C_SignInit+C_Sign (CKM_SHA256_HMAC)",
            simple(move || {
                black_box(s.sign(&Mechanism::Sha256Hmac, mac, MSG).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "raw-attrs",
        (
            "HMAC key: C_GetAttributeValue of the 8 checked attributes",
            simple(move || {
                black_box(s.get_attributes(mac, &attrs).expect("attrs"));
            }),
        ),
    );
    ops.insert(
        "raw-attr-token",
        (
            "HMAC key: C_GetAttributeValue(CKA_TOKEN) alone",
            simple(move || {
                black_box(s.get_attributes(mac, &attrs[1..2]).expect("attrs"));
            }),
        ),
    );
    ops.insert(
        "backend-mac",
        (
            "HMAC: backend (session pool, protection check, C_Sign)",
            simple(move || {
                black_box(
                    be.hmac_sha256(&BackendKey::new(mac_h.clone(), Algorithm::HmacSha256), MSG)
                        .expect("hmac"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-mac",
        (
            "HMAC: keystore (+ active-version lookup)",
            simple(move || {
                black_box(ks.mac("hmac", MSG).expect("mac"));
            }),
        ),
    );
    ops.insert(
        "raw-ecdsa",
        (
            "ECDSA: raw SHA-256 + C_SignInit+C_Sign (CKM_ECDSA)",
            simple(move || {
                let d = Sha256::digest(MSG);
                black_box(s.sign(&Mechanism::Ecdsa, ec, &d).expect("sign"));
            }),
        ),
    );
    let ec_pk2 = ec_pk.clone();
    let ec_sig2 = ec_sig.clone();
    ops.insert(
        "verify-ecdsa",
        (
            "ECDSA: keystore_api PublicKey::verify (p256 crate)",
            simple(move || ec_pk2.verify(MSG, &ec_sig2).expect("verify")),
        ),
    );
    ops.insert(
        "verify-ecdsa-awslc",
        (
            "ECDSA: the same verification with aws-lc-rs",
            simple(move || aws_pk.verify(MSG, &ec_sig).expect("verify")),
        ),
    );
    ops.insert(
        "backend-ecdsa",
        (
            "ECDSA: backend (pool, check, C_Sign, host verify)",
            simple(move || {
                black_box(
                    be.sign(&BackendKey::new(ec_h.clone(), EC), MSG)
                        .expect("sign"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-ecdsa",
        (
            "ECDSA: keystore (+ active-version lookup)",
            simple(move || {
                black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "raw-rsa",
        (
            "RSA: raw C_SignInit+C_Sign (CKM_SHA256_RSA_PKCS)",
            simple(move || {
                black_box(s.sign(&Mechanism::Sha256RsaPkcs, rsa, MSG).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "verify-rsa",
        (
            "RSA: keystore_api PublicKey::verify (rsa crate)",
            simple({
                let (pk, sig) = (rsa_pk.clone(), rsa_sig.clone());
                move || pk.verify(MSG, &sig).expect("verify")
            }),
        ),
    );
    // The SPKI of an RSA-2048 key with e = 65537 ends with its 270-byte
    // PKCS#1 RSAPublicKey, which is what aws-lc-rs verifies with.
    let rsa_der = rsa_pk.spki_der();
    let pkcs1 = rsa_der[rsa_der.len() - 270..].to_vec();
    assert_eq!(pkcs1[..4], [0x30, 0x82, 0x01, 0x0a], "RSA-2048 PKCS#1 key");
    let aws_rsa = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        pkcs1,
    );
    let rsa_sig2 = rsa_sig.clone();
    ops.insert(
        "verify-rsa-awslc",
        (
            "RSA: the same verification with aws-lc-rs",
            simple(move || aws_rsa.verify(MSG, &rsa_sig2).expect("verify")),
        ),
    );
    ops.insert(
        "ks-rsa",
        (
            "RSA: keystore (pool, check, C_Sign, host verify, lookup)",
            simple(move || {
                black_box(ks.sign("rsa", MSG, SignatureFormat::Der).expect("sign"));
            }),
        ),
    );
    run(ops, path, iters);
}

/// Does SoftHSM itself scale to two threads? Raw sessions (one per
/// thread) on the same key and on two different keys, for ECDSA and HMAC,
/// and the keystore on one key; wall time per operation (see `spread`).
fn pkcs11_threads(
    token: &testing::TestToken,
    ks: &Keystore<backend_pkcs11::Pkcs11Backend>,
    iters: u32,
) {
    use keystore_api::KeySpec;
    let so = benches::officer();
    ks.create(&so, "ecdsa-2", KeySpec::new(EC))
        .expect("second key");
    ks.create(&so, "hmac-2", KeySpec::new(Algorithm::HmacSha256))
        .expect("second key");
    let mut sessions: Vec<_> = (0..2)
        .map(|_| {
            let s = token.raw_session().expect("raw session");
            s.login().expect("login");
            s
        })
        .collect();
    let find = |name: &str, class: ObjectClass| -> ObjectHandle {
        let h = ks.backend_handle(name, 1).expect("handle");
        let id = ks.backend().cka_id(&h).expect("id");
        sessions[0]
            .find_objects(&[Attribute::Class(class), Attribute::Id(id)])
            .expect("find")[0]
    };
    let ec = [
        find("ecdsa", ObjectClass::PRIVATE_KEY),
        find("ecdsa-2", ObjectClass::PRIVATE_KEY),
    ];
    let mac = [
        find("hmac", ObjectClass::SECRET_KEY),
        find("hmac-2", ObjectClass::SECRET_KEY),
    ];
    // (median wall µs per op, CPUs busy: process CPU time / wall time).
    let per_op = |n: usize,
                  op: &(dyn Fn(&mut (usize, &mut testing::RawSession)) + Sync),
                  sessions: &mut Vec<testing::RawSession>|
     -> (f64, f64) {
        let (t, cpu) = (Instant::now(), process_cpu_s());
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let mut states: Vec<(usize, &mut testing::RawSession)> =
                    sessions.iter_mut().take(n).enumerate().collect();
                benches::spread(iters as u64, &mut states, op).as_secs_f64() * 1e6 / iters as f64
            })
            .collect();
        let busy = (process_cpu_s() - cpu) / t.elapsed().as_secs_f64();
        rounds.sort_by(f64::total_cmp);
        (rounds[2], busy)
    };
    for (what, keys) in [("ECDSA", ec), ("HMAC", mac)] {
        // `Mechanism` is not `Sync`: each call builds its own.
        let mech = || {
            if what == "ECDSA" {
                Mechanism::Ecdsa
            } else {
                Mechanism::Sha256Hmac
            }
        };
        let data: Vec<u8> = if what == "ECDSA" {
            Sha256::digest(MSG).to_vec()
        } else {
            MSG.to_vec()
        };
        let same = |st: &mut (usize, &mut testing::RawSession)| {
            black_box(st.1.sign(&mech(), keys[0], &data).expect("sign"));
        };
        let own = |st: &mut (usize, &mut testing::RawSession)| {
            black_box(st.1.sign(&mech(), keys[st.0], &data).expect("sign"));
        };
        let (one, b1) = per_op(1, &same, &mut sessions);
        let (two_same, b2) = per_op(2, &same, &mut sessions);
        let (two_own, b3) = per_op(2, &own, &mut sessions);
        println!(
            "raw {what:<5}: 1 thread {one:.2} µs/op ({b1:.2} CPUs busy); 2 threads, one key {two_same:.2} µs/op ({:.2}x, {b2:.2} CPUs busy); \
             2 threads, a key each {two_own:.2} µs/op ({:.2}x, {b3:.2} CPUs busy)",
            one / two_same,
            one / two_own
        );
    }
    // The keystore against raw sessions on one key, 1 and 2 threads in
    // alternating rounds (load drift hits all four alike).
    for what in ["ECDSA", "HMAC"] {
        let mech = || {
            if what == "ECDSA" {
                Mechanism::Ecdsa
            } else {
                Mechanism::Sha256Hmac
            }
        };
        let (key, data): (ObjectHandle, Vec<u8>) = if what == "ECDSA" {
            (ec[0], Sha256::digest(MSG).to_vec())
        } else {
            (mac[0], MSG.to_vec())
        };
        let raw = |st: &mut (usize, &mut testing::RawSession)| {
            black_box(st.1.sign(&mech(), key, &data).expect("sign"));
        };
        let ks_sign = |_: &mut ()| {
            if what == "ECDSA" {
                black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
            } else {
                black_box(ks.mac("hmac", MSG).expect("mac"));
            }
        };
        let mut t: [Vec<f64>; 4] = Default::default();
        for _ in 0..21 {
            for n in [1usize, 2] {
                let mut states = vec![(); n];
                let d = benches::spread(iters as u64, &mut states, ks_sign);
                t[n - 1].push(d.as_secs_f64() * 1e6 / iters as f64);
                let mut states: Vec<(usize, &mut testing::RawSession)> =
                    sessions.iter_mut().take(n).enumerate().collect();
                let d = benches::spread(iters as u64, &mut states, raw);
                t[n + 1].push(d.as_secs_f64() * 1e6 / iters as f64);
            }
        }
        for v in t.iter_mut() {
            v.sort_by(f64::total_cmp);
        }
        let m: Vec<f64> = t.iter().map(|v| v[v.len() / 2]).collect();
        println!(
            "paired {what:<5}: keystore 1 thread {:.2} µs/op, 2 threads {:.2} µs/op ({:.2}x); \
             raw one key 1 thread {:.2}, 2 threads {:.2} ({:.2}x)",
            m[0],
            m[1],
            m[0] / m[1],
            m[2],
            m[3],
            m[2] / m[3]
        );
    }
}

fn tpm(path: &str, iters: u32) {
    let dir = bench_dir();
    let swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
    let ks = Keystore::open(
        TpmBackend::open(TpmConfig::new(swtpm.tcti()), &dir.path().join("tpm")).expect("backend"),
        &dir.path().join("metadata.sqlite"),
    )
    .expect("keystore");
    standard_keys(&ks);
    let be = ks.backend();
    let ec_h = ks.backend_handle("ecdsa", 1).expect("handle");
    let rsa_h = ks.backend_handle("rsa", 1).expect("handle");
    let mac_h = ks.backend_handle("hmac", 1).expect("handle");
    let ks = &ks;
    let mut ops: BTreeMap<&'static str, (&'static str, Op<'_>)> = BTreeMap::new();
    // Raw paths hold the backend's connection only while they run.
    let (ec_r, rsa_r, mac_r) = (ec_h.clone(), rsa_h.clone(), mac_h.clone());
    ops.insert(
        "raw-mac",
        (
            "HMAC: one TPM2_HMAC on the loaded key",
            Box::new(move |run| {
                let mut k = be.loaded_key(&mac_r, Algorithm::HmacSha256).expect("key");
                run(&mut || {
                    black_box(k.hmac(MSG).expect("hmac"));
                })
            }),
        ),
    );
    ops.insert(
        "backend-mac",
        (
            "HMAC: backend (registry check, key cache, TPM2_HMAC)",
            simple(move || {
                black_box(
                    be.hmac_sha256(&BackendKey::new(mac_h.clone(), Algorithm::HmacSha256), MSG)
                        .expect("hmac"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-mac",
        (
            "HMAC: keystore (+ active-version lookup)",
            simple(move || {
                black_box(ks.mac("hmac", MSG).expect("mac"));
            }),
        ),
    );
    ops.insert(
        "ks-hkdf",
        (
            "HKDF: keystore derive (TPM2_HMAC with the PRK encrypted on the bus)",
            simple(move || {
                black_box(
                    ks.derive_hkdf_sha256("kdf", b"salt", b"info", 32)
                        .expect("derive"),
                );
            }),
        ),
    );
    ops.insert(
        "raw-ecdsa",
        (
            "ECDSA: SHA-256 + one TPM2_Sign on the loaded key",
            Box::new(move |run| {
                let mut k = be.loaded_key(&ec_r, EC).expect("key");
                run(&mut || {
                    let d: [u8; 32] = Sha256::digest(MSG).into();
                    black_box(k.sign_digest(&d).expect("sign"));
                })
            }),
        ),
    );
    ops.insert(
        "backend-ecdsa",
        (
            "ECDSA: backend (registry check, key cache, TPM2_Sign)",
            simple(move || {
                black_box(
                    be.sign(&BackendKey::new(ec_h.clone(), EC), MSG)
                        .expect("sign"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-ecdsa",
        (
            "ECDSA: keystore (+ active-version lookup)",
            simple(move || {
                black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "raw-rsa",
        (
            "RSA: SHA-256 + one TPM2_Sign on the loaded key",
            Box::new(move |run| {
                let mut k = be.loaded_key(&rsa_r, RSA).expect("key");
                run(&mut || {
                    let d: [u8; 32] = Sha256::digest(MSG).into();
                    black_box(k.sign_digest(&d).expect("sign"));
                })
            }),
        ),
    );
    ops.insert(
        "ks-rsa",
        (
            "RSA: keystore",
            simple(move || {
                black_box(ks.sign("rsa", MSG, SignatureFormat::Der).expect("sign"));
            }),
        ),
    );
    run(ops, path, iters);
    // The keystore (declared after the simulator) drops first, flushing
    // what it loaded while swtpm still runs.
}

fn soft(path: &str, iters: u32) {
    let dir = bench_dir();
    let ks = benches::soft_keystore(dir.path());
    standard_keys(&ks);
    let be = ks.backend();
    let ec_h = ks.backend_handle("ecdsa", 1).expect("handle");
    let mac_h = ks.backend_handle("hmac", 1).expect("handle");
    let kp = benches::raw::aws_lc_ecdsa();
    let rng = benches::raw::rng();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &benches::K);
    let salt = b"session-nonce-000000000001";
    let info = b"tls 1.3 exporter";
    let (ks, kp, rng, key) = (&ks, &kp, &rng, &key);
    if path == "threads" {
        soft_threads(ks, kp, rng, iters);
        return;
    }
    if path == "scale" {
        soft_scale(iters);
        return;
    }
    let mut ops: BTreeMap<&'static str, (&'static str, Op<'_>)> = BTreeMap::new();
    ops.insert(
        "raw-ecdsa",
        (
            "ECDSA: raw aws-lc-rs EcdsaKeyPair::sign",
            simple(move || {
                black_box(kp.sign(rng, MSG).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "backend-ecdsa",
        (
            "ECDSA: soft backend (record cache, aws-lc-rs sign)",
            simple(move || {
                black_box(
                    be.sign(&BackendKey::new(ec_h.clone(), EC), MSG)
                        .expect("sign"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-ecdsa",
        (
            "ECDSA: keystore (+ active-version lookup, encoding)",
            simple(move || {
                black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
            }),
        ),
    );
    ops.insert(
        "raw-mac",
        (
            "HMAC: raw aws-lc-rs hmac::sign, key built once",
            simple(move || {
                black_box(aws_lc_rs::hmac::sign(key, MSG));
            }),
        ),
    );
    let mac_h2 = mac_h.clone();
    ops.insert(
        "backend-mac",
        (
            "HMAC: soft backend (record cache, aws-lc-rs HMAC)",
            simple(move || {
                black_box(
                    be.hmac_sha256(&BackendKey::new(mac_h2.clone(), Algorithm::HmacSha256), MSG)
                        .expect("hmac"),
                );
            }),
        ),
    );
    ops.insert(
        "ks-mac",
        (
            "HMAC: keystore (+ active-version lookup)",
            simple(move || {
                black_box(ks.mac("hmac", MSG).expect("mac"));
            }),
        ),
    );
    ops.insert(
        "raw-hkdf",
        (
            "HKDF: raw hkdf crate, extract + expand 32 bytes",
            simple(move || {
                let mut out = [0u8; 32];
                benches::raw::hkdf_derive(&benches::K, salt, info, &mut out);
                black_box(out);
            }),
        ),
    );
    ops.insert(
        "backend-hkdf",
        (
            "HKDF: backend HMAC (extract) + hkdf crate expand from the PRK",
            simple(move || {
                let prk = be
                    .hmac_sha256(&BackendKey::new(mac_h.clone(), Algorithm::HmacSha256), salt)
                    .expect("hmac");
                let mut out = [0u8; 32];
                hkdf::Hkdf::<Sha256>::from_prk(&prk[..])
                    .expect("prk")
                    .expand(info, &mut out)
                    .expect("expand");
                black_box(out);
            }),
        ),
    );
    ops.insert(
        "ks-hkdf",
        (
            "HKDF: keystore derive_hkdf_sha256",
            simple(move || {
                black_box(
                    ks.derive_hkdf_sha256("kdf", salt, info, 32)
                        .expect("derive"),
                );
            }),
        ),
    );
    run(ops, path, iters);
}

/// Sign through a store of 10 keys and one of 10,000 in alternating
/// rounds, and the time to open the large one.
fn soft_scale(iters: u32) {
    let n: usize = std::env::var("KEYSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (small, large) = (bench_dir(), bench_dir());
    {
        let ks = benches::soft_keystore(small.path());
        standard_keys(&ks);
        benches::filler_keys(&ks, 10 - benches::STANDARD_KEY_COUNT);
        let ks = benches::soft_keystore(large.path());
        standard_keys(&ks);
        benches::filler_keys(&ks, n - benches::STANDARD_KEY_COUNT);
    }
    let mut opens: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            drop(black_box(benches::soft_keystore(large.path())));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    opens.sort_by(f64::total_cmp);
    println!("open a {n}-key store: median {:.1} ms of 5", opens[2]);
    let stores = [
        benches::soft_keystore(small.path()),
        benches::soft_keystore(large.path()),
    ];
    let mut ops: BTreeMap<&'static str, (&'static str, Op<'_>)> = BTreeMap::new();
    for (name, ks) in ["sign-10", "sign-large"].into_iter().zip(&stores) {
        ops.insert(
            name,
            (
                "",
                simple(move || {
                    black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
                }),
            ),
        );
    }
    paired(&mut ops, "sign-10", "sign-large", iters);
}

/// One and two threads, alternating rounds: the keystore's ECDSA sign and
/// raw aws-lc-rs (the machine's own two-thread scaling), wall time per op.
fn soft_threads(
    ks: &Keystore<backend_soft::SoftStore>,
    kp: &aws_lc_rs::signature::EcdsaKeyPair,
    rng: &aws_lc_rs::rand::SystemRandom,
    iters: u32,
) {
    let ks_op = |_: &mut ()| {
        black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
    };
    let raw_op = |_: &mut ()| {
        black_box(kp.sign(rng, MSG).expect("sign"));
    };
    let mut t: [Vec<f64>; 4] = Default::default();
    for _ in 0..21 {
        for (i, (n, op)) in [
            (1usize, &ks_op as &(dyn Fn(&mut ()) + Sync)),
            (2, &ks_op),
            (1, &raw_op),
            (2, &raw_op),
        ]
        .into_iter()
        .enumerate()
        {
            let mut states = vec![(); n];
            let d = benches::spread(iters as u64, &mut states, op);
            t[i].push(d.as_secs_f64() * 1e6 / iters as f64);
        }
    }
    for v in t.iter_mut() {
        v.sort_by(f64::total_cmp);
    }
    let m: Vec<f64> = t.iter().map(|v| v[v.len() / 2]).collect();
    println!(
        "keystore ECDSA: 1 thread {:.2} µs/op, 2 threads {:.2} µs/op: {:.2}x",
        m[0],
        m[1],
        m[0] / m[1]
    );
    println!(
        "raw aws-lc-rs ECDSA: 1 thread {:.2} µs/op, 2 threads {:.2} µs/op: {:.2}x",
        m[2],
        m[3],
        m[2] / m[3]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().map(String::as_str).unwrap_or("pkcs11");
    let path = args.get(1).map(String::as_str).unwrap_or("breakdown");
    let iters: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000);
    match backend {
        "pkcs11" => pkcs11(path, iters),
        "tpm" => tpm(path, iters),
        "soft" => soft(path, iters),
        other => panic!("unknown backend '{other}' (pkcs11, tpm or soft)"),
    }
}

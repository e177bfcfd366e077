//! The AES-GCM usage limit (SP 800-38D) counted across real processes
//! (TEST-KEY-59): workers (the `conformance-worker` binary) encrypt with one
//! key until the keystore refuses, some run to the end and one is SIGKILLed
//! mid-run and restarted.

use crate::processes::{
    Role, Summary, Worker, WorkerSpec, ENCRYPTION_BLOCK_PARAM, LIMIT_AAD, LIMIT_KEY_PARAM,
    PACE_PARAM, START_FILE_PARAM,
};
use crate::support::{expect_err, so, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::{
    Algorithm, Backend, EncryptionUsage, ErrorKind, KeyManagement, KeySpec, Keystore, Operation,
};
use std::time::Duration;

/// The limit each test key is created with.
const LIMIT: u64 = 1_000;
/// The workers' encryption block: small, so that three processes share the
/// count, and not a divisor of the limit, so that the last reservation is
/// what remains.
const BLOCK: u64 = 7;
/// Workers encrypting at once.
const WORKERS: usize = 3;
/// A bound on each worker's loop, far above the limit: a count that is not
/// shared shows as a sum over the limit rather than as a hang.
const WORKER_BOUND: u64 = 10 * LIMIT;
/// Each worker's pause after an encryption, so that the three interleave
/// and the kill lands mid-run.
const PACE_US: u64 = 300;
/// The run that is killed has reported this many encryptions first.
const KILL_AFTER: u64 = 20;
const WORKER_LIMIT: Duration = Duration::from_secs(600);

/// The message (and context) every refusal at the limit carries.
fn limit_message() -> String {
    format!("has used its AES-GCM limit of {LIMIT} encryptions (SP 800-38D, random nonces)")
}

fn start(spec: &WorkerSpec) -> Worker {
    Worker::start(spec, Role::EncryptUntilRefused, WORKER_BOUND)
        .expect("start an encrypting worker")
}

/// A worker that ran until refused: no failure, refused at the limit of
/// version 1 of `key`. Returns its summary.
fn refused_at_limit(key: &str, res: Result<Summary, String>) -> Summary {
    let sum = res.unwrap_or_else(|e| panic!("encrypting worker: {e}"));
    assert_eq!(sum.failed, 0, "encrypting worker: {:?}", sum.errors);
    let refusal = sum
        .refusal
        .as_deref()
        .unwrap_or_else(|| panic!("a worker stopped without a refusal after {}", sum.ok));
    assert!(
        refusal.starts_with("KeyState: ")
            && refusal.contains(&limit_message())
            && refusal.ends_with(&format!("(key {key}, version 1)")),
        "refused for another reason: {refusal}"
    );
    sum
}

/// The parent's checks once every worker has stopped: the shared count is
/// the whole limit, one more encryption is refused (KeyState, naming limit,
/// key and version), and an envelope a worker made still decrypts.
fn assert_exhausted<B: Backend>(ks: &Keystore<B>, key: &str, sample: Option<&str>) {
    let info = ks.info(key).expect("info");
    assert_eq!(info.encryption_limit, Some(LIMIT));
    assert_eq!(
        info.version(1).and_then(|v| v.encryptions),
        Some(EncryptionUsage {
            reserved: LIMIT,
            limit: LIMIT
        }),
        "{key}: the store counts the whole limit"
    );
    let err = expect_err(
        ks.encrypt(key, b"one more", LIMIT_AAD),
        ErrorKind::KeyState,
        "an encryption past the limit",
    );
    assert!(err.to_string().contains(&limit_message()), "{err}");
    assert_eq!(err.key(), Some(key));
    assert_eq!(err.version(), Some(1));
    let envelope = hex::decode(sample.expect("a worker's envelope")).expect("hex envelope");
    let plain = ks
        .decrypt(key, &envelope, LIMIT_AAD)
        .unwrap_or_else(|e| panic!("{key}: decryption after the limit: {e}"));
    assert!(plain.expose().starts_with(b"message 1 from "));
}

/// TEST-KEY-59
pub fn aes_gcm_limit_across_processes<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let spec = KeySpec::new(Algorithm::Aes256Gcm).with_encryption_limit(LIMIT);
    let caps = ks.backend().capabilities();
    if !caps.supports(Algorithm::Aes256Gcm, Operation::Generate) {
        assert!(!caps.supports(Algorithm::Aes256Gcm, Operation::Encrypt));
        expect_err(
            ks.create(&so(), "limited", spec),
            ErrorKind::Unsupported,
            "an AES-GCM key with an encryption limit",
        );
        return unsupported(Algorithm::Aes256Gcm, "encryption limit across processes");
    }
    for key in ["exact", "killed"] {
        let info = ks
            .create(&so(), key, spec)
            .expect("create a limited AES key");
        assert_eq!(info.encryption_limit, Some(LIMIT));
    }
    let held = if fx.parent_shares_device() {
        Some(ks)
    } else {
        drop(ks);
        None
    };
    let mut base = fx
        .worker_spec()
        .unwrap_or_else(|e| panic!("{}: no worker spec: {e}", F::NAME));
    base.params
        .insert(ENCRYPTION_BLOCK_PARAM.into(), BLOCK.to_string());
    base.params.insert(PACE_PARAM.into(), PACE_US.to_string());
    let spec_for = |key: &str| {
        let mut spec = base.clone();
        spec.params.insert(LIMIT_KEY_PARAM.into(), key.into());
        let go = fx_path(&spec, key);
        spec.params.insert(START_FILE_PARAM.into(), go);
        spec
    };

    // 1. No kill: three processes until each is refused make exactly the limit.
    let exact = spec_for("exact");
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| start(&exact)).collect();
    go(&exact, &mut workers);
    let sums: Vec<Summary> = workers
        .into_iter()
        .map(|w| refused_at_limit("exact", w.finish(WORKER_LIMIT)))
        .collect();
    let made: u64 = sums.iter().map(|s| s.ok).sum();
    assert_eq!(
        made,
        LIMIT,
        "three processes until refused: exactly the limit ({:?})",
        sums.iter().map(|s| s.ok).collect::<Vec<_>>()
    );
    assert!(
        sums.iter().all(|s| s.ok > 0),
        "every process got part of the count: {:?}",
        sums.iter().map(|s| s.ok).collect::<Vec<_>>()
    );
    let exact_sample = sums.iter().find_map(|s| s.sample.clone());

    // 2. One of three is SIGKILLed mid-run and restarted: never more than the
    // limit; what is missing is at most the killed process's block.
    let killed = spec_for("killed");
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| start(&killed)).collect();
    go(&killed, &mut workers);
    let mut victim = workers.remove(0);
    victim
        .wait_encrypted(KILL_AFTER, WORKER_LIMIT)
        .unwrap_or_else(|e| panic!("before the kill: {e}"));
    let by_victim = victim.kill_and_count();
    assert!(by_victim >= KILL_AFTER);
    workers.push(start(&killed));
    let sums: Vec<Summary> = workers
        .into_iter()
        .map(|w| refused_at_limit("killed", w.finish(WORKER_LIMIT)))
        .collect();
    let reported = by_victim + sums.iter().map(|s| s.ok).sum::<u64>();
    assert!(
        reported <= LIMIT,
        "never more than the limit across a kill and a restart: {reported} reported \
         ({by_victim} by the killed run)"
    );
    assert!(
        reported >= LIMIT - BLOCK,
        "only the killed process's block may be lost: {reported} of {LIMIT} reported"
    );
    let killed_sample = sums.iter().find_map(|s| s.sample.clone());
    eprintln!(
        "TEST-KEY-59 on {}: with a kill, {by_victim} by the killed run, {:?} by the others \
         and the restart, {} lost with the killed process",
        F::NAME,
        sums.iter().map(|s| s.ok).collect::<Vec<_>>(),
        LIMIT - reported
    );

    fx.stop_workers();
    let ks = match held {
        Some(ks) => ks,
        None => fx.open(),
    };
    assert_exhausted(&ks, "exact", exact_sample.as_deref());
    assert_exhausted(&ks, "killed", killed_sample.as_deref());
    // Rotation starts the next version's own count under the same limit.
    let info = ks
        .rotate(&so(), "killed", time::Duration::hours(1))
        .expect("rotate");
    assert_eq!(
        info.active().and_then(|v| v.encryptions),
        Some(EncryptionUsage {
            reserved: 0,
            limit: LIMIT
        })
    );
    ks.encrypt("killed", b"after the rotation", LIMIT_AAD)
        .expect("the new version encrypts");
    Outcome::Passed
}

/// The start file of the workers on `key`, beside the metadata.
fn fx_path(spec: &WorkerSpec, key: &str) -> String {
    spec.metadata
        .with_extension(format!("go-{key}"))
        .display()
        .to_string()
}

/// Waits until every worker has opened the store, then starts them at once.
fn go(spec: &WorkerSpec, workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.wait_ready(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let file = spec.params.get(START_FILE_PARAM).expect("a start file");
    std::fs::write(file, b"go").expect("start file");
}

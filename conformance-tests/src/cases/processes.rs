//! Many processes on one store (TEST-KEY-51..53): real separate processes
//! (the `conformance-worker` binary), never threads.

use crate::processes::{self, Jitter, Role, Summary, Worker, WorkerSpec};
use crate::support::{auditor, expect_err, so, verify_independently};
use crate::{Fixture, Outcome};
use keystore_api::BackendKey;
use keystore_api::ErrorKind;
use keystore_api::{Algorithm, Backend, KeySpec, KeyState, Keystore, SignatureFormat};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Operation counts per backend: the same load shape everywhere, scaled to
/// what the device does in a bounded time (a TPM is slow by nature).
struct Load {
    uses: u64,
    rotations: u64,
    listings: u64,
    /// A writer is killed this long (at most, uniformly) after it opened:
    /// long enough to cover a whole create-rotate-destroy-sweep round.
    kill_window_us: u64,
}

fn load(backend: &str) -> Load {
    match backend {
        "tpm" => Load {
            uses: 25,
            rotations: 24,
            listings: 6,
            kill_window_us: 250_000,
        },
        "soft+tpm-sealed" => Load {
            uses: 120,
            rotations: 40,
            listings: 8,
            kill_window_us: 60_000,
        },
        "pkcs11" => Load {
            uses: 120,
            rotations: 60,
            listings: 30,
            kill_window_us: 150_000,
        },
        _ => Load {
            uses: 120,
            rotations: 60,
            listings: 30,
            kill_window_us: 40_000,
        },
    }
}

const WORKER_LIMIT: Duration = Duration::from_secs(600);

fn spec_of<F: Fixture>(fx: &mut F) -> WorkerSpec {
    fx.worker_spec()
        .unwrap_or_else(|e| panic!("{}: no worker spec: {e}", F::NAME))
}

fn expect_clean(role: &str, res: Result<Summary, String>) -> Summary {
    let sum = res.unwrap_or_else(|e| panic!("{role} worker: {e}"));
    assert_eq!(
        sum.failed,
        0,
        "{role} worker: {} of {} operations failed: {:?}",
        sum.failed,
        sum.ok + sum.failed,
        sum.errors
    );
    assert!(sum.ok > 0, "{role} worker did nothing");
    sum
}

/// No version compromised, every version that should have material has it
/// in the backend and works, and the audit trail verifies.
fn assert_store_sound<B: Backend>(ks: &Keystore<B>, metadata: &Path) {
    let listed: HashSet<_> = ks.backend().list().expect("list").into_iter().collect();
    for info in ks.list().expect("list keys") {
        for v in &info.versions {
            assert_ne!(
                v.state,
                KeyState::Compromised,
                "{} v{} compromised: {:?}",
                info.name,
                v.version,
                v.reason
            );
            if !matches!(
                v.state,
                KeyState::Active | KeyState::Suspended | KeyState::Deactivated
            ) {
                continue;
            }
            let h = ks.backend_handle(&info.name, v.version).expect("handle");
            assert!(
                listed.contains(&h),
                "{} v{}: material missing from the backend",
                info.name,
                v.version
            );
            let works = match info.algorithm {
                Algorithm::HmacSha256 => ks
                    .backend()
                    .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"probe")
                    .map(|_| ()),
                Algorithm::Aes256Gcm => ks
                    .backend()
                    .encrypt(
                        &BackendKey::new(h.clone(), Algorithm::Aes256Gcm),
                        b"probe",
                        b"",
                    )
                    .map(|_| ()),
                alg => ks
                    .backend()
                    .sign(&BackendKey::new(h.clone(), alg), b"probe")
                    .and_then(|sig| {
                        let pk = v.public_key.as_ref().expect("public key");
                        if verify_independently(alg, pk.spki_der(), b"probe", &sig) {
                            Ok(())
                        } else {
                            Err(keystore_api::Error::integrity("independent verify"))
                        }
                    }),
            };
            works.unwrap_or_else(|e| panic!("{} v{} does not work: {e}", info.name, v.version));
        }
    }
    // Every backend object is referenced by the metadata (no orphan).
    let conn = rusqlite::Connection::open(metadata).expect("metadata");
    let referenced: HashSet<Vec<u8>> = conn
        .prepare(
            "SELECT handle FROM key_versions WHERE handle IS NOT NULL
             UNION SELECT audit_key FROM store WHERE audit_key IS NOT NULL
             UNION SELECT handle FROM audit_signers WHERE handle IS NOT NULL",
        )
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<HashSet<_>>>()
        })
        .expect("referenced handles");
    for h in &listed {
        assert!(
            referenced.contains(h.as_bytes()),
            "orphan backend object {h:?} after a quiet open"
        );
    }
    let report = ks.verify_audit(&auditor()).expect("verify audit");
    assert!(report.is_intact(), "audit trail: {report:?}");
}

/// TEST-KEY-51
pub fn many_processes_share_one_store<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    processes::create_keys(&ks);
    // The parent keeps its store open throughout, as a gateway daemon does,
    // unless its device admits one connection, which the workers then share
    // through a resource manager (a TPM: the workers hold it open instead).
    let warm = ks.sign(processes::SIGN_KEY, b"warm", SignatureFormat::Der);
    warm.expect("the holder signs before the load");
    let held = if fx.parent_shares_device() {
        Some(ks)
    } else {
        drop(ks);
        None
    };
    let spec = spec_of(fx);
    let load = load(F::NAME);
    let users: Vec<Worker> = (0..4)
        .map(|_| Worker::start(&spec, Role::Use, load.uses).expect("start a user"))
        .collect();
    let rotator = Worker::start(&spec, Role::Rotate, load.rotations).expect("start the rotator");
    let lister = Worker::start(&spec, Role::List, load.listings).expect("start the lister");
    let mut used = 0;
    for u in users {
        used += expect_clean("use", u.finish(WORKER_LIMIT)).ok;
    }
    expect_clean("rotate", rotator.finish(WORKER_LIMIT));
    expect_clean("list", lister.finish(WORKER_LIMIT));
    fx.stop_workers();
    let ks = match held {
        Some(ks) => ks,
        None => fx.open(),
    };
    // The holder sees every rotation at its next call.
    let sig = ks
        .sign(processes::SIGN_KEY, b"after", SignatureFormat::Der)
        .expect("the holder signs after the load");
    let info = ks.info(processes::SIGN_KEY).expect("info");
    assert_eq!(
        Some(sig.version),
        info.active().map(|v| v.version),
        "the holder signed with a version rotated away by another process"
    );
    assert!(info.versions.len() > 1, "the rotator rotated nothing");
    assert_store_sound(&ks, &fx.metadata_path());
    assert!(used > 0);
    Outcome::Passed
}

/// TEST-KEY-52
pub fn killed_writers_lose_nothing<F: Fixture>(fx: &mut F) -> Outcome {
    const KILLS: usize = 200;
    let ks = fx.open();
    processes::create_keys(&ks);
    drop(ks);
    let mut spec = spec_of(fx);
    let stop = fx.metadata_path().with_extension("stop");
    spec.params
        .insert("stop_file".into(), stop.display().to_string());
    let users: Vec<Worker> = (0..2)
        .map(|_| Worker::start(&spec, Role::Use, 1_000_000).expect("start a user"))
        .collect();
    let lister = Worker::start(&spec, Role::List, 1_000_000).expect("start the lister");
    let mut jitter = Jitter::new();
    let window = load(F::NAME).kill_window_us;
    for i in 0..KILLS {
        let mut churn = Worker::start(&spec, Role::Churn, 1_000_000).expect("start a writer");
        churn
            .wait_ready(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("kill {i}: {e}"));
        std::thread::sleep(Duration::from_micros(jitter.below(window)));
        churn.kill();
    }
    std::fs::write(&stop, b"stop").expect("stop file");
    for u in users {
        expect_clean("use", u.finish(WORKER_LIMIT));
    }
    expect_clean("list", lister.finish(WORKER_LIMIT));
    fx.stop_workers();
    // The next quiet open recovers what the kills interrupted...
    let ks = fx.open();
    assert_store_sound(&ks, &fx.metadata_path());
    // ...and the one after finds nothing left to do.
    let ks = fx.restart(ks);
    let report = ks.reconcile_report().clone();
    assert!(
        report.is_clean() && report.unreferenced.is_empty() && report.deferred.is_none(),
        "a second quiet open still found work: {report:?}"
    );
    assert!(
        ks.info(processes::SIGN_KEY).expect("info").versions.len() > 1,
        "no writer got as far as a rotation"
    );
    Outcome::Passed
}

/// TEST-KEY-53
pub fn wrong_backend_fails_open_and_changes_nothing<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    for n in ["w1", "w2", "w3"] {
        ks.create(&so(), n, KeySpec::new(Algorithm::HmacSha256))
            .expect("create");
    }
    let tags: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| ks.mac(n, b"m").expect("mac"))
        .collect();
    let entries = ks.export_audit(&auditor()).expect("export").len();
    drop(ks);
    let err = expect_err(
        fx.open_elsewhere(),
        ErrorKind::NotFound,
        "metadata over the wrong backend storage",
    );
    assert!(
        err.to_string().contains("Nothing was changed"),
        "the error says what happened: {err}"
    );
    let ks = fx.open();
    for (n, tag) in ["w1", "w2", "w3"].iter().zip(&tags) {
        let info = ks.info(n).expect("info");
        assert_eq!(info.versions[0].state, KeyState::Active, "{n} changed");
        assert_eq!(&ks.mac(n, b"m").expect("mac"), tag, "{n} lost");
    }
    let trail = ks.export_audit(&auditor()).expect("export");
    assert_eq!(
        trail.len(),
        entries,
        "the failed open wrote to the audit trail"
    );
    assert!(ks.verify_audit(&auditor()).expect("verify").is_intact());
    Outcome::Passed
}

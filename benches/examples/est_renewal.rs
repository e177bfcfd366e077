//! Many devices renewing against one EST server (issue 12): renewal rate and
//! latency percentiles, on soft stores, over real TLS on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p benches --example est_renewal -- [DEVICES] [CLIENTS]
//! ```
//!
//! Set-up (not timed): an offline root and a production intermediate on soft
//! keystores, `DEVICES` devices (default 1000) provisioned into one device
//! keystore (`device.N.identity`, each its own P-256 key), and an EST server
//! over a second handle on the production store. Timed: `CLIENTS` threads
//! (default 4) renew every device once — stage the next key version,
//! sign the CSR with it, re-enroll over mTLS with the current pair, verify
//! the chain, activate — and the wall time and each renewal's latency are
//! reported. Every renewal must succeed and leave version 2 active.

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Actor, Keystore, Role};
use provisioning::{
    ceremony, Device, EstClient, EstRenewal, EstServer, EstServerConfig, Factory, PkiDb,
    Provisioner, RootCa,
};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};
use time::{Duration, OffsetDateTime};

type Store = (Keystore<SoftStore>, PkiDb);

/// A soft keystore unlocked by a key file in `dir`, and its PKI database
/// (created the first time).
fn store(dir: &Path) -> Store {
    std::fs::create_dir_all(dir).expect("store dir");
    let kf = dir.join("kek.key");
    let unlock = Unlock::KeyFile(kf.clone());
    let soft = if kf.exists() {
        SoftStore::open(&dir.join("soft"), &unlock).expect("open soft store")
    } else {
        create_key_file(&kf).expect("key file");
        SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile).expect("create soft store")
    };
    let ks = Keystore::open(soft, &dir.join("metadata.sqlite")).expect("keystore");
    let db = PkiDb::open(&dir.join("pki.sqlite")).expect("pki db");
    (ks, db)
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let devices = arg(1, 1000);
    let clients = arg(2, 4).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let officer = Actor::new("bench-officer", Role::SecurityOfficer).expect("actor");
    let operator = Actor::new("bench-line", Role::Operator).expect("actor");
    let start = OffsetDateTime::now_utc() - Duration::days(1);

    let (root_ks, root_db) = store(&dir.join("root"));
    let (prod_ks, prod_db) = store(&dir.join("factory"));
    let root = RootCa::new(&root_ks, &root_db);
    root.init(&officer, "Bench Root", Duration::days(3650), start)
        .expect("root");
    let factory = Factory::new(&prod_ks, &prod_db);
    ceremony(
        &root,
        &officer,
        &factory,
        &officer,
        "Bench Production CA",
        Duration::days(1095),
        start,
    )
    .expect("ceremony");
    let root_der = factory.root().expect("root cert").der;

    let (dev_ks, dev_db) = store(&dir.join("devices"));
    let names: Vec<String> = (0..devices)
        .map(|i| format!("device.{i}.identity"))
        .collect();
    let t = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let device = Device::new(&dev_ks, &dev_db, name).expect("device");
        Provisioner::new(&factory, operator.clone())
            .provision(&device, &officer, &format!("BENCH{i:06}"), "line-1", start)
            .expect("provision");
    }
    eprintln!(
        "set-up: {devices} devices provisioned in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(factory);
    drop((prod_ks, prod_db));

    let (srv_ks, srv_db) = store(&dir.join("factory"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let server = EstServer::start(
        Arc::new(srv_ks),
        Arc::new(srv_db),
        operator,
        listener,
        EstServerConfig::default(),
    )
    .expect("EST server");
    let url = format!("https://{}", server.local_addr());

    let dev_ks = Arc::new(dev_ks);
    let dev_db = Arc::new(dev_db);
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(devices));
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let client = EstClient::new(&url, &root_der)
                    .expect("client")
                    .with_timeout(StdDuration::from_secs(60));
                let renewal = EstRenewal::new(
                    Arc::clone(&dev_ks),
                    Arc::clone(&dev_db),
                    name,
                    officer.clone(),
                    client,
                )
                .expect("renewal");
                let began = Instant::now();
                // Every certificate (30 days) is within a 40-day threshold.
                let renewed = renewal
                    .renew_if_due(Duration::days(40))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let took = began.elapsed();
                assert!(renewed.is_some(), "{name} was not renewed");
                latencies.lock().expect("latencies").push(took);
            });
        }
    });
    let wall = t.elapsed();
    server.shutdown().expect("EST server shutdown");

    for name in &names {
        let info = dev_ks.info(name).expect("info");
        assert_eq!(
            info.active().map(|v| v.version),
            Some(2),
            "{name}: version 2 active"
        );
    }
    let mut l = latencies.into_inner().expect("latencies");
    l.sort();
    println!("| devices | clients | wall | renewals/s | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {devices} | {clients} | {:.1} s | {:.1} | {:.1} ms | {:.1} ms | {:.1} ms |",
        wall.as_secs_f64(),
        devices as f64 / wall.as_secs_f64(),
        percentile(&l, 0.50).as_secs_f64() * 1e3,
        percentile(&l, 0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

//! The provisioning registry on a real PostgreSQL server (a temporary cluster,
//! or `KEYSTORE_TEST_PG_URL`), shared by several stations, each with its own
//! production store and intermediate under one root; and the same scenario
//! on a station's own SQLite registry, through the one trait.

mod common;

use common::{custodian, officer, operator, t0, Store};
use keystore_api::{ErrorKind, ManualClock};
use provisioning::{
    ceremony, shared_key_name, Device, DeviceRequest, Factory, PostgresRegistry, Provisioner,
    Registry, RootCa,
};
use std::path::Path;
use std::sync::Arc;
use test_support::postgres::TestPostgres;
use time::Duration;

/// A root and `n` stations, each with its own production store and
/// intermediate, in `dir`.
fn stations(dir: &Path, n: usize) -> Vec<Store> {
    let clock = Arc::new(ManualClock::new(t0()));
    let root = Store::open(&dir.join("root"), clock.clone());
    let ca = RootCa::new(&root.ks, &root.db);
    ca.init(&custodian(), "Fleet Root CA", Duration::days(3650), t0())
        .expect("init root");
    (0..n)
        .map(|i| {
            let s = Store::open(&dir.join(format!("station-{i}")), clock.clone());
            ceremony(
                &ca,
                &custodian(),
                &Factory::new(&s.ks, &s.db),
                &officer(),
                &format!("Station {i} Production CA"),
                Duration::days(1095),
                t0(),
            )
            .expect("ceremony");
            s
        })
        .collect()
}

fn provision(
    station: &Store,
    registry: &dyn Registry,
    id: &str,
) -> keystore_api::Result<provisioning::Provisioned> {
    let factory = Factory::new(&station.ks, &station.db).with_registry(registry);
    let device = Device::new(&station.ks, &station.db, &shared_key_name(id)?)?;
    Provisioner::new(&factory, operator()).provision(&device, &operator(), id, "line-1", t0())
}

fn pg() -> Option<(TestPostgres, String)> {
    let server = TestPostgres::start()?;
    let url = server.fresh_database();
    Some((server, url))
}

/// The shared scenario, for either registry: `registries[i]` is station
/// `i`'s connection to the one registry.
fn two_stations_one_registry(stations: &[Store], registries: [&dyn Registry; 2]) {
    let a = provision(&stations[0], registries[0], "DEV-1").expect("A provisions DEV-1");
    // B cannot provision the same id, whatever its own store holds.
    let e = provision(&stations[1], registries[1], "DEV-1").expect_err("B refused");
    assert!(e.is(ErrorKind::AlreadyExists), "{e}");
    assert!(e.to_string().contains("DEV-1"), "{e}");
    provision(&stations[1], registries[1], "DEV-2").expect("B provisions DEV-2");

    // Nor the same key under another id (the key of DEV-1, a new CSR from it).
    let fa = Factory::new(&stations[0].ks, &stations[0].db).with_registry(registries[0]);
    let fb = Factory::new(&stations[1].ks, &stations[1].db).with_registry(registries[1]);
    let dev1 = Device::new(
        &stations[0].ks,
        &stations[0].db,
        &shared_key_name("DEV-1").unwrap(),
    )
    .unwrap();
    let (csr, version) = dev1.csr("DEV-3").unwrap();
    let e = fb
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "DEV-3",
                operator: "line-2",
                csr_der: &csr.der,
                key_version: version,
                validity: Duration::days(30),
                device_backend: None,
            },
            t0(),
        )
        .expect_err("a key is never issued to two units");
    assert!(e.is(ErrorKind::AlreadyExists), "{e}");
    assert!(fb.record("DEV-3").is_err(), "nothing of DEV-3 was written");

    // Both see one registry.
    for f in [&fa, &fb] {
        assert_eq!(f.device_count().unwrap(), 2);
        assert_eq!(
            f.record("DEV-1").unwrap().certificate_serial,
            a.issued.certificate.serial
        );
        assert_eq!(f.certificates("DEV-2").unwrap().len(), 1);
    }
    // Revocation by B of A's certificate is visible to A's CRL.
    fb.revoke(
        &officer(),
        &a.issued.certificate.serial,
        "key-compromise",
        t0(),
    )
    .expect("revoke");
    let crl = fa.issue_crl(&officer(), t0(), Duration::days(7)).unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert!(
        listed.contains(&a.issued.certificate.serial),
        "{listed:?} lists {}",
        a.issued.certificate.serial
    );
}

#[test]
fn two_stations_share_one_postgres_registry() {
    let Some((_server, url)) = pg() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stations = stations(tmp.path(), 2);
    let ra = PostgresRegistry::connect(&url).expect("connect A");
    let rb = PostgresRegistry::connect(&url).expect("connect B");
    two_stations_one_registry(&stations, [&ra, &rb]);

    // One chain; each station checks its own MACs and counts the other's.
    let station_a = provisioning::station_id(&stations[0].ks).unwrap();
    let station_b = provisioning::station_id(&stations[1].ks).unwrap();
    assert_ne!(station_a, station_b);
    for (i, r) in [(0usize, &ra), (1, &rb)] {
        let f = Factory::new(&stations[i].ks, &stations[i].db).with_registry(r);
        let report = f.verify_event_log().expect("the chain verifies");
        let events: Vec<&str> = report.events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            events.iter().filter(|e| **e == "provision").count(),
            2,
            "{events:?}"
        );
        assert!(
            events.contains(&"revoke") && events.contains(&"crl"),
            "{events:?}"
        );
        let other = if i == 0 { &station_b } else { &station_a };
        assert!(report.other_stations.contains_key(other), "{report:?}");
        assert!(report.macs_checked > 0);
        assert_eq!(
            report.macs_checked + report.other_stations.values().sum::<u64>(),
            report.events.len() as u64
        );
    }
}

#[test]
fn two_stations_share_one_sqlite_registry() {
    // The same scenario through the same trait, on station 0's pki.sqlite.
    let tmp = tempfile::tempdir().unwrap();
    let stations = stations(tmp.path(), 2);
    let shared = &stations[0].db;
    two_stations_one_registry(&stations, [shared, shared]);
}

#[test]
fn stations_racing_for_the_same_ids_each_win_some_and_never_the_same() {
    let Some((_server, url)) = pg() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stations = stations(tmp.path(), 4);
    let ids: Vec<String> = (0..40).map(|i| format!("RACE-{i:03}")).collect();
    let won: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = stations
            .iter()
            .map(|st| {
                let (url, ids) = (&url, &ids);
                s.spawn(move || {
                    let r = PostgresRegistry::connect(url).expect("connect");
                    let mut won = Vec::new();
                    for id in ids {
                        match provision(st, &r, id) {
                            Ok(_) => won.push(id.clone()),
                            Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                            Err(e) => panic!("{id}: {e}"),
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<&String> = won.iter().flatten().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(n, all.len(), "an id was won twice: {won:?}");
    assert_eq!(n, ids.len(), "every id was won once: {won:?}");
    let r = PostgresRegistry::connect(&url).unwrap();
    let f = Factory::new(&stations[0].ks, &stations[0].db).with_registry(&r);
    assert_eq!(f.device_count().unwrap(), ids.len() as u64);
    let report = f.verify_event_log().expect("one valid chain");
    let provisions = report
        .events
        .iter()
        .filter(|e| e.event == "provision")
        .count();
    assert_eq!(provisions, ids.len());
}

#[test]
fn an_edited_or_deleted_event_is_named_by_the_station_that_wrote_it() {
    let Some((_server, url)) = pg() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stations = stations(tmp.path(), 1);
    let r = PostgresRegistry::connect(&url).unwrap();
    for id in ["EDIT-1", "EDIT-2", "EDIT-3"] {
        provision(&stations[0], &r, id).unwrap();
    }
    let f = Factory::new(&stations[0].ks, &stations[0].db).with_registry(&r);
    let n = f.verify_event_log().unwrap().events.len() as i64;
    assert_eq!(n, 3);
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    sql.execute(
        "UPDATE events SET detail = 'nothing happened' WHERE seq = 2",
        &[],
    )
    .unwrap();
    let e = f.verify_event_log().expect_err("an edited event");
    assert!(e.is(ErrorKind::Integrity), "{e}");
    assert!(e.to_string().contains("entry #2"), "{e}");
    // The tail cut off: the head still names event 3.
    sql.execute("DELETE FROM events WHERE seq >= 2", &[])
        .unwrap();
    let e = f.verify_event_log().expect_err("a truncated log");
    assert!(e.is(ErrorKind::Integrity), "{e}");
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_is_refused() {
    let Some((_server, url)) = pg() else { return };
    PostgresRegistry::connect(&url).expect("migrates");
    PostgresRegistry::connect(&url).expect("a second connect changes nothing");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let v: i32 = sql
        .query_one(
            "SELECT version FROM keystore_schema WHERE component = 'registry'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
    sql.execute(
        "UPDATE keystore_schema SET version = 99 WHERE component = 'registry'",
        &[],
    )
    .unwrap();
    let e = PostgresRegistry::connect(&url).expect_err("newer schema");
    assert!(e.is(ErrorKind::Unsupported), "{e}");
    assert!(e.to_string().contains("99"), "{e}");
}

#[test]
fn connection_failures_are_unavailable_and_never_show_the_password() {
    let Some((server, url)) = pg() else { return };
    let password = server.password().to_string();
    let wrong = url.replace(&password, "not-the-password-xyzzy");
    let e = PostgresRegistry::connect(&wrong).expect_err("wrong password");
    assert!(e.is(ErrorKind::Unavailable), "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("not-the-password-xyzzy"), "{text}");
    }
    let r = PostgresRegistry::connect(&url).unwrap();
    for text in [format!("{r:?}"), r.location().to_string()] {
        assert!(!text.contains(&password), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
    }
    // A closed port: Unavailable, within the connect timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgresql://keystore:{password}@127.0.0.1:{port}/keystore");
    let e = PostgresRegistry::connect(&closed).expect_err("nothing listens");
    assert!(e.is(ErrorKind::Unavailable), "{e}");
    assert!(!format!("{e} {e:?}").contains(&password));
    // A URL that does not parse is not repeated.
    let e = PostgresRegistry::connect("postgresql://u:sekrit@[bad/x").expect_err("bad URL");
    assert!(e.is(ErrorKind::InvalidInput), "{e}");
    assert!(!format!("{e} {e:?}").contains("sekrit"));
    // TLS is not built in: refused rather than silently dropped.
    let e = PostgresRegistry::connect(&format!("{url}?sslmode=require")).expect_err("TLS");
    assert!(e.is(ErrorKind::Unsupported), "{e}");
}

#[test]
fn a_provisioning_interrupted_after_registration_is_finished_by_a_rerun() {
    let Some((_server, url)) = pg() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stations = stations(tmp.path(), 2);
    let r = PostgresRegistry::connect(&url).unwrap();
    let st = &stations[0];
    let factory = Factory::new(&st.ks, &st.db).with_registry(&r);
    let device = Device::new(&st.ks, &st.db, &shared_key_name("CUT-1").unwrap()).unwrap();
    // The station died between the registry's commit and the install.
    let (csr, version) = device.generate(&operator(), "CUT-1").unwrap();
    let issued = factory
        .provision(
            &operator(),
            &DeviceRequest {
                device_id: "CUT-1",
                operator: "line-1",
                csr_der: &csr.der,
                key_version: version,
                validity: Duration::days(30),
                device_backend: None,
            },
            t0(),
        )
        .unwrap();
    assert!(device.current().unwrap().is_none());
    // Another station cannot take it over; the same one finishes it.
    let e = provision(&stations[1], &r, "CUT-1").expect_err("another station");
    assert!(e.is(ErrorKind::AlreadyExists), "{e}");
    let done = provision(st, &r, "CUT-1").expect("resumed");
    assert_eq!(done.issued.certificate.serial, issued.certificate.serial);
    assert_eq!(
        device.current().unwrap().map(|c| c.serial),
        Some(issued.certificate.serial.clone())
    );
    assert_eq!(factory.certificates("CUT-1").unwrap().len(), 1);
    // Finished: a third run is AlreadyExists again.
    let e = provision(st, &r, "CUT-1").expect_err("done");
    assert!(e.is(ErrorKind::AlreadyExists), "{e}");
}

//! One registry for the fleet (TEST-KEY-66) and an identity key issued at
//! most once fleet-wide, raced by both stations (TEST-KEY-67).

use super::{assert_report, Fleet, Reader, VALIDITY};
use crate::support::{expect_err, operator, so};
use crate::{Fixture, Outcome};
use keystore_api::{ErrorKind, Origin};
use provisioning::{
    shared_key_name, CertInfo, Device, DeviceRequest, Factory, PostgresRegistry, Provisioned,
};
use std::sync::Barrier;
use time::{Duration, OffsetDateTime};

/// `openssl verify -CAfile root -untrusted intermediate leaf` (strict, for
/// TLS client use): `Ok` or openssl's output.
fn openssl_verify(root: &CertInfo, inter: &CertInfo, leaf: &CertInfo) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| dir.path().join(n);
    for (name, cert) in [("root.pem", root), ("inter.pem", inter), ("leaf.pem", leaf)] {
        std::fs::write(path(name), cert.pem()).expect("write pem");
    }
    let out = std::process::Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(path("root.pem"))
        .arg("-untrusted")
        .arg(path("inter.pem"))
        .arg(path("leaf.pem"))
        .output()
        .expect("run openssl (installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim_end().ends_with(": OK") {
        Ok(())
    } else {
        Err(format!(
            "{}{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------
// TEST-KEY-66

/// Units each station provisions.
const UNITS_PER_STATION: usize = 5;

/// TEST-KEY-66
pub fn shared_registry_across_stations<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let now = OffsetDateTime::now_utc();
    let fleet = match Fleet::new::<F>(&ks, now - Duration::hours(1)) {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    let (fa, fb) = (fleet.fa(), fleet.fb());

    // A's units' identity keys are generated in the backend under test,
    // B's in soft units; both stations issue through the one registry.
    let mut units: Vec<(String, bool, Provisioned)> = Vec::new();
    for i in 1..=UNITS_PER_STATION {
        let id = format!("A-UNIT-{i}");
        let p = fleet.provision_a_in_backend(&id, now);
        let active = ks
            .info(&shared_key_name(&id).expect("key name"))
            .expect("identity key")
            .active()
            .cloned()
            .expect("active");
        assert_eq!(active.origin, Origin::Generated);
        assert_eq!(
            active.fingerprint.as_deref(),
            Some(p.issued.certificate.spki_fingerprint.as_str()),
            "{id}'s certificate names its key in {}",
            F::NAME
        );
        units.push((id, true, p));
        let id = format!("B-UNIT-{i}");
        let p = fleet
            .provision_soft(false, &id, now)
            .unwrap_or_else(|e| panic!("station B provisions {id}: {e}"));
        units.push((id, false, p));
    }
    let total = 2 * UNITS_PER_STATION as u64;
    let events_before = fleet.event_count();

    // A unit id taken on one station is AlreadyExists on the other: through
    // the provisioner (which refuses before generating a key) and through
    // the factory with a fresh CSR naming the taken id (the registry's
    // check); nothing is written either way.
    for (taken, by_a) in [("A-UNIT-3", false), ("B-UNIT-2", true)] {
        let e = fleet
            .provision_soft(by_a, taken, now)
            .expect_err("a taken id was provisioned again");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{taken}: {e}");
        assert!(e.to_string().contains(taken), "{e}");
        let probe_key = format!("device.probe-{}.identity", if by_a { "a" } else { "b" });
        let probe = Device::new(&fleet.units_ks, &fleet.units_db, &probe_key).expect("device");
        let (csr, version) = probe.generate(&so(), taken).expect("probe CSR");
        let req = DeviceRequest {
            device_id: taken,
            operator: "probe",
            csr_der: &csr.der,
            key_version: version,
            validity: VALIDITY,
            device_backend: None,
        };
        let res = if by_a {
            fa.provision(&operator(), &req, now)
        } else {
            fb.provision(&operator(), &req, now)
        };
        let e = expect_err(res, ErrorKind::AlreadyExists, "a taken id, fresh key");
        assert!(e.to_string().contains(taken), "{e}");
        let mut sql = fleet.sql();
        let n: i64 = sql
            .query_one(
                "SELECT COUNT(*) FROM device_keys WHERE fingerprint = $1",
                &[&csr.fingerprint()],
            )
            .expect("query")
            .get(0);
        assert_eq!(n, 0, "the refused key was not registered");
    }
    assert_eq!(
        fleet.event_count(),
        events_before,
        "refusals append nothing"
    );

    // One registry: the same count, records and certificates from either side.
    assert_eq!(fa.device_count().expect("count"), total);
    assert_eq!(fb.device_count().expect("count"), total);
    for (id, by_a, p) in &units {
        let (ra, rb) = (
            fa.record(id).expect("A reads"),
            fb.record(id).expect("B reads"),
        );
        assert_eq!(ra, rb, "{id}: one record");
        assert_eq!(ra.certificate_serial, p.issued.certificate.serial);
        assert_eq!(ra.keys.identity_key, p.issued.certificate.spki_fingerprint);
        assert_eq!(ra.operator, if *by_a { "station-a" } else { "station-b" });
        let (ca, cb) = (
            fa.certificates(id).expect("A"),
            fb.certificates(id).expect("B"),
        );
        assert_eq!(ca, cb, "{id}: one certificate list");
        assert_eq!(ca.len(), 1, "{id}: one certificate");
        assert_eq!(ca[0].der, p.issued.certificate.der);
    }

    // One chain, verified by each station with its own key: A's MACs by A
    // (in the backend under test), B's by B.
    let report_a = fa.verify_event_log().expect("A verifies the chain");
    let report_b = fb.verify_event_log().expect("B verifies the chain");
    assert_eq!(report_a.events, report_b.events, "one log");
    assert_eq!(report_a.events.len() as i64, events_before);
    assert_report(&report_a, &fleet.station_a, &fleet.station_b, "station A");
    assert_report(&report_b, &fleet.station_b, &fleet.station_a, "station B");
    // Each station: its install-intermediate and its units.
    let own = 1 + UNITS_PER_STATION as u64;
    assert_eq!(report_a.macs_checked, own);
    assert_eq!(report_b.macs_checked, own);
    let provisions: Vec<&str> = report_a
        .events
        .iter()
        .filter(|e| e.event == "provision")
        .filter_map(|e| e.device_id.as_deref())
        .collect();
    assert_eq!(provisions.len() as u64, total, "{provisions:?}");
    for (id, by_a, _) in &units {
        let e = report_a
            .events
            .iter()
            .find(|e| e.event == "provision" && e.device_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no provision event for {id}"));
        let station = if *by_a {
            &fleet.station_a
        } else {
            &fleet.station_b
        };
        assert_eq!(
            e.station.as_ref(),
            Some(station),
            "{id}: MAC'd by its station"
        );
    }

    // The certificates verify independently (openssl), each under its own
    // station's intermediate and not under the other's.
    let a_unit = &units.iter().find(|u| u.1).expect("an A unit").2.issued;
    let b_unit = &units.iter().find(|u| !u.1).expect("a B unit").2.issued;
    assert_eq!(a_unit.root, b_unit.root, "one root");
    for (who, unit, other) in [("A", a_unit, b_unit), ("B", b_unit, a_unit)] {
        openssl_verify(&unit.root, &unit.intermediate, &unit.certificate)
            .unwrap_or_else(|e| panic!("openssl rejects station {who}'s unit: {e}"));
        assert!(
            openssl_verify(&unit.root, &other.intermediate, &unit.certificate).is_err(),
            "openssl accepts station {who}'s unit under the other station's intermediate"
        );
    }
    Outcome::Passed
}

// ---------------------------------------------------------------------------
// TEST-KEY-67

/// Rounds of the race.
const RACE_ROUNDS: u32 = 5;

/// TEST-KEY-67
pub fn registry_key_uniqueness_fleet_wide<F: Fixture>(fx: &mut F) -> Outcome
where
    F::Backend: Sync,
{
    let ks = fx.open();
    let now = OffsetDateTime::now_utc();
    let fleet = match Fleet::new::<F>(&ks, now - Duration::hours(1)) {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    let (mut won_by_a, mut by_constraint) = (0u32, 0u32);
    for round in 1..=RACE_ROUNDS {
        // One identity key generated in the backend under test; a CSR of it
        // for each of two unit ids.
        let key = format!("device.race-{round}.identity");
        let device = Device::new(&ks, &fleet.a_units_db, &key).expect("device");
        let ids = [format!("RACE-{round}-A"), format!("RACE-{round}-B")];
        let (csr_a, version) = device.generate(&so(), &ids[0]).expect("key and CSR");
        let (csr_b, version_b) = device.csr(&ids[1]).expect("second CSR");
        assert_eq!(version, version_b);
        Factory::<F::Backend>::check_generated(&ks, &key, version)
            .expect("the identity key was generated in the backend");
        let fingerprint = csr_a.fingerprint();
        assert_eq!(fingerprint, csr_b.fingerprint(), "one key, two CSRs");
        assert_eq!(
            ks.info(&key)
                .expect("info")
                .active()
                .and_then(|v| v.fingerprint.clone()),
            Some(fingerprint.clone())
        );

        // Both stations at once, each from its own thread and connection.
        let barrier = Barrier::new(2);
        let url = fleet.url.as_str();
        let request = |id: &str, csr: &provisioning::VerifiedCsr| (id.to_string(), csr.der.clone());
        let (req_a, req_b) = (request(&ids[0], &csr_a), request(&ids[1], &csr_b));
        let (res_a, res_b) = std::thread::scope(|s| {
            let barrier = &barrier;
            let a = s.spawn(|| {
                let r = PostgresRegistry::connect(url).expect("A's own connection");
                let fa = Factory::new(fleet.a_ks, &fleet.a_db).with_registry(&r);
                barrier.wait();
                fa.provision(
                    &operator(),
                    &DeviceRequest {
                        device_id: &req_a.0,
                        operator: "station-a",
                        csr_der: &req_a.1,
                        key_version: version,
                        validity: VALIDITY,
                        device_backend: Some(F::NAME),
                    },
                    now,
                )
                .map(|issued| issued.certificate)
            });
            let b = s.spawn(|| {
                let r = PostgresRegistry::connect(url).expect("B's own connection");
                let fb = Factory::new(&fleet.b_ks, &fleet.b_db).with_registry(&r);
                barrier.wait();
                fb.provision(
                    &operator(),
                    &DeviceRequest {
                        device_id: &req_b.0,
                        operator: "station-b",
                        csr_der: &req_b.1,
                        key_version: version,
                        validity: VALIDITY,
                        device_backend: Some(F::NAME),
                    },
                    now,
                )
                .map(|issued| issued.certificate)
            });
            (
                a.join().expect("station A's thread"),
                b.join().expect("station B's thread"),
            )
        });
        let (winner, loser, cert, refusal) = match (res_a, res_b) {
            (Ok(cert), Err(e)) => {
                won_by_a += 1;
                (&ids[0], &ids[1], cert, e)
            }
            (Err(e), Ok(cert)) => (&ids[1], &ids[0], cert, e),
            (a, b) => panic!(
                "round {round}: exactly one station may issue the key: A {:?}, B {:?}",
                a.map(|c| c.serial),
                b.map(|c| c.serial)
            ),
        };
        assert_eq!(
            refusal.kind(),
            ErrorKind::AlreadyExists,
            "round {round}: {refusal}"
        );
        assert!(refusal.to_string().contains(&fingerprint), "{refusal}");
        // The early read names the owner; the database's constraint (both
        // passed the read) does not know it.
        if !refusal.to_string().contains(&format!("device '{winner}'")) {
            by_constraint += 1;
        }
        assert_eq!(cert.spki_fingerprint, fingerprint);

        // The winner holds the key; nothing of the loser was written.
        for (who, f) in [("A", &fleet.fa() as &dyn Reader), ("B", &fleet.fb())] {
            let rec = f.record(winner).expect("the winner is registered");
            assert_eq!(rec.keys.identity_key, fingerprint, "{who}");
            assert_eq!(rec.certificate_serial, cert.serial, "{who}");
            expect_err(f.record(loser), ErrorKind::NotFound, "the loser's record");
            assert!(
                f.certificates(loser).expect("certificates").is_empty(),
                "{who}: the loser has no certificate"
            );
            assert_eq!(f.device_count().expect("count"), u64::from(round), "{who}");
        }
        let mut sql = fleet.sql();
        let count = |sql: &mut postgres::Client, q: &str, p: &str| -> i64 {
            sql.query_one(q, &[&p]).expect("query").get(0)
        };
        assert_eq!(
            count(
                &mut sql,
                "SELECT COUNT(*) FROM device_keys WHERE fingerprint = $1",
                &fingerprint
            ),
            1
        );
        assert_eq!(
            count(
                &mut sql,
                "SELECT COUNT(*) FROM issued WHERE fingerprint = $1",
                &fingerprint
            ),
            1
        );
        for table in ["devices", "issued", "device_keys"] {
            let q = format!("SELECT COUNT(*) FROM {table} WHERE device_id = $1");
            assert_eq!(count(&mut sql, &q, loser), 0, "{table} holds the loser");
        }
        assert_eq!(
            count(
                &mut sql,
                "SELECT COUNT(*) FROM events WHERE device_id = $1",
                loser
            ),
            0,
            "the loser's provisioning left an event"
        );
    }
    // One valid chain with one provision event per round.
    for (who, report, own, other) in [
        (
            "A",
            fleet.fa().verify_event_log(),
            &fleet.station_a,
            &fleet.station_b,
        ),
        (
            "B",
            fleet.fb().verify_event_log(),
            &fleet.station_b,
            &fleet.station_a,
        ),
    ] {
        let report = report.unwrap_or_else(|e| panic!("station {who} verifies the chain: {e}"));
        assert_report(&report, own, other, who);
        let provisions = report
            .events
            .iter()
            .filter(|e| e.event == "provision")
            .count();
        assert_eq!(provisions as u32, RACE_ROUNDS, "station {who}");
    }
    eprintln!(
        "{} on {}: {RACE_ROUNDS} rounds, station A won {won_by_a}; {by_constraint} decided by the \
         registry's constraint (both stations past the read check)",
        crate::catalog::by_name::registry_key_uniqueness_fleet_wide.id,
        F::NAME
    );
    Outcome::Passed
}

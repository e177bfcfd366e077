//! Each station accountable for its own events in the shared log
//! (TEST-KEY-68): edits and relabels caught by the hash chain or by the
//! MACs, revocation reserved to the security officer on either station.

use super::{assert_report, Fleet, Reader};
use crate::support::{auditor, expect_err, operator, so};
use crate::{Fixture, Outcome};
use keystore_api::chain::ChainHasher;
use keystore_api::ErrorKind;
use provisioning::EventLogReport;
use time::{Duration, OffsetDateTime};

/// One stored event row, as the attacker reads it.
struct EventRow {
    seq: i64,
    fields: [Option<String>; 10],
    prev_hash: String,
    hash: String,
}

/// The registry's event hash (format v2: the writing station included),
/// recomputed from a row as an attacker with database access can: the
/// chain is unkeyed, only the MACs are not.
fn event_hash_v2(seq: i64, fields: &[Option<String>; 10], prev: &str) -> String {
    let mut h = ChainHasher::new(b"keystore-provisioning-event-v2", seq as u64);
    for f in fields {
        h.text(f.as_deref());
    }
    h.text(Some(prev));
    hex::encode(h.finish())
}

fn read_events(sql: &mut postgres::Client, from: i64) -> Vec<EventRow> {
    sql.query(
        "SELECT seq, id, at, actor, role, event, device_id, serial, fingerprint, detail,
                station, prev_hash, hash FROM events WHERE seq >= $1 ORDER BY seq",
        &[&from],
    )
    .expect("read events")
    .iter()
    .map(|r| EventRow {
        seq: r.get(0),
        fields: std::array::from_fn(|i| r.get(i + 1)),
        prev_hash: r.get(11),
        hash: r.get(12),
    })
    .collect()
}

/// Asserts that `res` is `Integrity` naming `expected` (the chain's
/// message for the first bad event).
#[track_caller]
fn assert_broken(res: keystore_api::Result<EventLogReport>, expected: &str, what: &str) {
    let e = expect_err(res, ErrorKind::Integrity, what);
    assert!(
        e.to_string().contains(expected),
        "{what}: expected '{expected}', got: {e}"
    );
}

/// TEST-KEY-68
pub fn registry_events_accountable_per_station<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let now = OffsetDateTime::now_utc();
    let fleet = match Fleet::new::<F>(&ks, now - Duration::hours(1)) {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    let (fa, fb) = (fleet.fa(), fleet.fb());
    // Both stations append, interleaved: A (in the backend under test)
    // provisions two units and issues a CRL, B provisions two units.
    let u1 = fleet
        .provision_soft(true, "ACC-1", now)
        .expect("A provisions");
    fleet
        .provision_soft(false, "ACC-2", now)
        .expect("B provisions");
    fleet
        .provision_soft(true, "ACC-3", now)
        .expect("A provisions");
    fa.issue_crl(&so(), now, Duration::days(7))
        .expect("A's CRL");
    fleet
        .provision_soft(false, "ACC-4", now)
        .expect("B provisions");
    let report = fa.verify_event_log().expect("intact");
    assert_report(&report, &fleet.station_a, &fleet.station_b, "station A");
    assert_report(
        &fb.verify_event_log().expect("intact"),
        &fleet.station_b,
        &fleet.station_a,
        "station B",
    );
    // k: A's provisioning of ACC-1; k2: A's next event after it.
    let own = |e: &&provisioning::Event| e.station.as_deref() == Some(fleet.station_a.as_str());
    let k = report
        .events
        .iter()
        .filter(own)
        .find(|e| e.device_id.as_deref() == Some("ACC-1"))
        .expect("A's event for ACC-1")
        .seq as i64;
    let k2 = report
        .events
        .iter()
        .filter(own)
        .find(|e| e.seq as i64 > k)
        .expect("a later event of A")
        .seq as i64;
    assert!(
        report.events.iter().any(|e| e.seq as i64 > k && !own(&e)),
        "B appended after k"
    );
    let mut sql = fleet.sql();
    let (detail, station): (String, String) = {
        let r = sql
            .query_one("SELECT detail, station FROM events WHERE seq = $1", &[&k])
            .expect("event k");
        (r.get(0), r.get(1))
    };
    assert_eq!(station, fleet.station_a);
    let edited = format!("entry #{k} was edited");
    let set = |sql: &mut postgres::Client, col: &str, v: &str| {
        let q = format!("UPDATE events SET {col} = $1 WHERE seq = $2");
        assert_eq!(sql.execute(&q, &[&v, &k]).expect("update"), 1);
    };

    // Its detail edited: Integrity at k, for A and for B (the hash).
    set(
        &mut sql,
        "detail",
        "operator station-a key version 1 certificate until 2099",
    );
    assert_broken(fa.verify_event_log(), &edited, "A after a detail edit");
    assert_broken(fb.verify_event_log(), &edited, "B after a detail edit");
    set(&mut sql, "detail", &detail);
    fa.verify_event_log().expect("A: restored");

    // Relabelled to B: Integrity at k (the station is under the hash).
    set(&mut sql, "station", &fleet.station_b);
    assert_broken(fa.verify_event_log(), &edited, "A after a relabel");
    assert_broken(fb.verify_event_log(), &edited, "B after a relabel");
    set(&mut sql, "station", &station);
    fa.verify_event_log().expect("A: restored");

    // Relabelled to B with the unkeyed chain recomputed from k to the head:
    // every hash matches, so the MACs decide. B now checks event k with its
    // key, which never MAC'd it; A finds its next event's MAC no longer
    // over its hash.
    let original = read_events(&mut sql, k);
    let head: String = sql
        .query_one("SELECT hash FROM events_head WHERE id = 1", &[])
        .expect("head")
        .get(0);
    assert_eq!(Some(&head), original.last().map(|r| &r.hash));
    for row in &original {
        assert_eq!(
            event_hash_v2(row.seq, &row.fields, &row.prev_hash),
            row.hash,
            "the test's hash recomputation matches the registry's (event #{})",
            row.seq
        );
    }
    let mut prev = original[0].prev_hash.clone();
    for row in &original {
        let mut fields = row.fields.clone();
        if row.seq == k {
            fields[9] = Some(fleet.station_b.clone());
        }
        let hash = event_hash_v2(row.seq, &fields, &prev);
        sql.execute(
            "UPDATE events SET station = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            &[&fields[9], &prev, &hash, &row.seq],
        )
        .expect("rewrite");
        prev = hash;
    }
    sql.execute("UPDATE events_head SET hash = $1 WHERE id = 1", &[&prev])
        .expect("rewrite head");
    assert_broken(
        fb.verify_event_log(),
        &format!("entry #{k} has a bad MAC"),
        "B after a relabel with the chain recomputed",
    );
    assert_broken(
        fa.verify_event_log(),
        &format!("entry #{k2} has a bad MAC"),
        "A after a relabel with the chain recomputed",
    );
    for row in &original {
        sql.execute(
            "UPDATE events SET station = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            &[&row.fields[9], &row.prev_hash, &row.hash, &row.seq],
        )
        .expect("restore");
    }
    sql.execute("UPDATE events_head SET hash = $1 WHERE id = 1", &[&head])
        .expect("restore head");
    let events = fa.verify_event_log().expect("A: restored").events.len();
    fb.verify_event_log().expect("B: restored");

    // An operator cannot revoke, on either station: Policy, audited in the
    // station's keystore, the certificate unrevoked and nothing appended.
    let serial = &u1.issued.certificate.serial;
    expect_err(
        fa.revoke(&operator(), serial, "key-compromise", now),
        ErrorKind::Policy,
        "an operator revokes on A",
    );
    expect_err(
        fb.revoke(&operator(), serial, "key-compromise", now),
        ErrorKind::Policy,
        "an operator revokes on B",
    );
    for f in [&fa as &dyn Reader, &fb] {
        let certs = f.certificates("ACC-1").expect("certificates");
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].revoked_at, None, "an operator's revoke revoked");
    }
    assert_eq!(fa.verify_event_log().expect("intact").events.len(), events);
    let refused = ks
        .export_audit(&auditor())
        .expect("A's audit trail")
        .into_iter()
        .filter(|e| e.event == keystore_api::AuditEvent::Refused)
        .filter(|e| e.actor == operator().id())
        .count();
    assert!(refused >= 1, "A's keystore audits the refused revocation");
    // The security officer can; the event is A's, MAC'd in the backend.
    fa.revoke(&so(), serial, "key-compromise", now)
        .expect("the security officer revokes");
    let certs = fb.certificates("ACC-1").expect("certificates");
    assert!(certs[0].revoked_at.is_some(), "B sees the revocation");
    // Its events (the revocation, then the CRL it issues) are A's.
    let report = fa.verify_event_log().expect("intact");
    let added: Vec<_> = report.events[events..].iter().collect();
    let kinds: Vec<&str> = added.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["revoke", "crl"], "{added:?}");
    for e in &added {
        assert_eq!(e.actor, so().id());
        assert_eq!(e.station.as_deref(), Some(fleet.station_a.as_str()));
    }
    assert_eq!(added[0].serial.as_deref(), Some(serial.as_str()));
    assert_report(&report, &fleet.station_a, &fleet.station_b, "station A");
    fb.verify_event_log().expect("B: intact");
    Outcome::Passed
}

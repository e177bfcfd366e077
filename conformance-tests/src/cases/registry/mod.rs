//! The provisioning registry shared by many factory stations in PostgreSQL
//! (TEST-KEY-66, -67, -68): the shared fixture. The cases are in
//! [`stations`] (TEST-KEY-66, -67) and [`accountability`] (TEST-KEY-68).
//!
//! Each case runs two production stations under one soft, offline root:
//! station A's store is the backend under test (its intermediate CA key and
//! its event-log MAC key [`EVENT_KEY`] live there), station B's a soft
//! store; both keep their registry (units, keys, certificates, revocations,
//! the hash-chained, MAC'd event log) in one PostgreSQL database.
//!
//! PostgreSQL is a temporary cluster (`test_support::postgres`), one per
//! test process while any case holds it (a fresh database per case); it
//! stops when the last case using it drops it. When PostgreSQL is missing
//! and `KEYSTORE_TEST_SKIP` names `postgres`, the case is recorded as
//! SKIPPED; missing without it, the case fails with an install hint.

mod accountability;
mod stations;

pub use accountability::*;
pub use stations::*;

use crate::support::{create_or_prove_unsupported, operator, so, unsupported};
use crate::{Fixture, Outcome};
use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, Backend, KeyManagement, Keystore, Operation, Origin};
use provisioning::{
    ceremony, shared_key_name, station_id, Device, EventLogReport, Factory, PkiDb,
    PostgresRegistry, Provisioned, Provisioner, RootCa, EVENT_KEY, INTERMEDIATE_KEY,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use tempfile::TempDir;
use test_support::postgres::TestPostgres;
use time::{Duration, OffsetDateTime};

/// Validity of the device certificates the cases issue.
const VALIDITY: Duration = Duration::days(30);

// ---------------------------------------------------------------------------
// The PostgreSQL server and the two stations.

/// The server of this test process, while a case holds it.
static SERVER: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());

/// The process's PostgreSQL server: the running one if another case holds
/// it, else a new cluster. It stops when the last case holding it drops it
/// (a panic included), so none outlives the test process. `Err` is the
/// SKIPPED outcome when PostgreSQL is missing and `KEYSTORE_TEST_SKIP`
/// names `postgres` (`TestPostgres::start` panics with an install hint when
/// it is missing and not named).
fn postgres_server() -> Result<Arc<TestPostgres>, Outcome> {
    let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(server) = slot.upgrade() {
        return Ok(server);
    }
    let server = Arc::new(TestPostgres::start().ok_or_else(|| {
        Outcome::Skipped {
            tool: "postgres",
            why: "PostgreSQL (initdb, pg_ctl, postgres) is missing; the shared registry needs it"
                .to_string(),
        }
    })?);
    *slot = Arc::downgrade(&server);
    Ok(server)
}

/// Proves `Unsupported` when the backend cannot hold what a station needs:
/// an ECDSA P-256 intermediate CA key and an HMAC-SHA256 event-log key.
fn station_unsupported<F: Fixture>(ks: &Keystore<F::Backend>) -> Option<Outcome> {
    let caps = ks.backend().capabilities();
    for (alg, name, what) in [
        (
            Algorithm::EcdsaP256Sha256,
            INTERMEDIATE_KEY,
            "production intermediate CA key",
        ),
        (Algorithm::HmacSha256, EVENT_KEY, "registry event-log key"),
    ] {
        if !caps.supports(alg, Operation::Generate) {
            create_or_prove_unsupported::<F>(ks, name, alg);
            return Some(unsupported(alg, what));
        }
    }
    None
}

/// A soft keystore unlocked by a key file, and a PKI database, in `dir`.
fn soft_store(dir: &Path) -> (Keystore<SoftStore>, PkiDb) {
    std::fs::create_dir_all(dir).expect("store dir");
    let key = dir.join("kek.key");
    create_key_file(&key).expect("key file");
    let unlock = Unlock::KeyFile(key);
    let backend =
        SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile).expect("create soft store");
    let ks = Keystore::open(backend, &dir.join("metadata.sqlite")).expect("open keystore");
    let db = PkiDb::open(&dir.join("pki.sqlite")).expect("open pki db");
    (ks, db)
}

/// Two stations sharing one PostgreSQL registry under one root: A on the
/// backend under test, B on a soft store; plus a soft store of units whose
/// identity keys are not in the backend under test. Field order is drop
/// order: connections, then the server, then the stores, then their
/// directory.
struct Fleet<'k, B: Backend> {
    /// Station A's and B's connections to the registry.
    ra: PostgresRegistry,
    rb: PostgresRegistry,
    /// The database's URL (a fresh database on the process's server).
    url: String,
    _server: Arc<TestPostgres>,
    /// Station A: the backend under test.
    a_ks: &'k Keystore<B>,
    a_db: PkiDb,
    /// Station B: a soft store.
    b_ks: Keystore<SoftStore>,
    b_db: PkiDb,
    /// Units' identity keys outside the backend under test, and their
    /// device-side PKI database.
    units_ks: Keystore<SoftStore>,
    units_db: PkiDb,
    /// Device-side PKI database of units whose identity key is in `a_ks`.
    a_units_db: PkiDb,
    station_a: String,
    station_b: String,
    _tmp: TempDir,
}

impl<'k, B: Backend> Fleet<'k, B> {
    /// The root (soft, closed after the ceremonies), both stations'
    /// intermediates (installed through the shared registry, so each
    /// station's first event is its `install-intermediate`), at `start`.
    /// `Err`: the backend cannot be a station (Unsupported, proven), or
    /// PostgreSQL is missing and skipped.
    fn new<F: Fixture<Backend = B>>(
        a_ks: &'k Keystore<B>,
        start: OffsetDateTime,
    ) -> Result<Self, Outcome> {
        if let Some(outcome) = station_unsupported::<F>(a_ks) {
            return Err(outcome);
        }
        let server = postgres_server()?;
        let url = server.fresh_database();
        let tmp = tempfile::Builder::new()
            .prefix("conformance-registry-")
            .tempdir()
            .expect("tempdir");
        let a_db = PkiDb::open(&tmp.path().join("station-a-pki.sqlite")).expect("A's pki db");
        let a_units_db = PkiDb::open(&tmp.path().join("a-units.sqlite")).expect("units db");
        let (b_ks, b_db) = soft_store(&tmp.path().join("station-b"));
        let (units_ks, units_db) = soft_store(&tmp.path().join("units"));
        let ra = PostgresRegistry::connect(&url).expect("station A connects to the registry");
        let rb = PostgresRegistry::connect(&url).expect("station B connects to the registry");
        {
            let (root_ks, root_db) = soft_store(&tmp.path().join("root"));
            let root = RootCa::new(&root_ks, &root_db);
            root.init(
                &so(),
                "Conformance Fleet Root CA",
                Duration::days(3650),
                start,
            )
            .expect("init root");
            let fa = Factory::new(a_ks, &a_db).with_registry(&ra);
            ceremony(
                &root,
                &so(),
                &fa,
                &so(),
                "Conformance Station A CA",
                Duration::days(1095),
                start,
            )
            .unwrap_or_else(|e| panic!("station A's ceremony on {}: {e}", F::NAME));
            let fb = Factory::new(&b_ks, &b_db).with_registry(&rb);
            ceremony(
                &root,
                &so(),
                &fb,
                &so(),
                "Conformance Station B CA",
                Duration::days(1095),
                start,
            )
            .expect("station B's ceremony");
        }
        // The station's keys are in the backend under test, generated there.
        for name in [INTERMEDIATE_KEY, EVENT_KEY] {
            let info = a_ks.info(name).expect("station A's key");
            let v = info.active().expect("active version");
            assert_eq!(
                v.origin,
                Origin::Generated,
                "{name} generated in {}",
                F::NAME
            );
        }
        let station_a = station_id(a_ks).expect("station A's id");
        let station_b = station_id(&b_ks).expect("station B's id");
        assert_ne!(station_a, station_b, "two event keys, two station ids");
        Ok(Fleet {
            ra,
            rb,
            url,
            _server: server,
            a_ks,
            a_db,
            b_ks,
            b_db,
            units_ks,
            units_db,
            a_units_db,
            station_a,
            station_b,
            _tmp: tmp,
        })
    }

    fn fa(&self) -> Factory<'_, B> {
        Factory::new(self.a_ks, &self.a_db).with_registry(&self.ra)
    }

    fn fb(&self) -> Factory<'_, SoftStore> {
        Factory::new(&self.b_ks, &self.b_db).with_registry(&self.rb)
    }

    /// A direct connection to the registry's database, as a DBA (or an
    /// attacker with database access) has.
    fn sql(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the registry")
    }

    /// Station A provisions unit `id` with its identity key in the backend
    /// under test.
    fn provision_a_in_backend(&self, id: &str, now: OffsetDateTime) -> Provisioned {
        let fa = self.fa();
        let key = shared_key_name(id).expect("key name");
        let device = Device::new(self.a_ks, &self.a_units_db, &key).expect("device");
        Provisioner::new(&fa, operator())
            .with_validity(VALIDITY)
            .provision(&device, &so(), id, "station-a", now)
            .unwrap_or_else(|e| panic!("station A provisions {id}: {e}"))
    }

    /// Station A (`on_a`) or B provisions unit `id` with its identity key
    /// in the soft units store.
    fn provision_soft(
        &self,
        on_a: bool,
        id: &str,
        now: OffsetDateTime,
    ) -> keystore_api::Result<Provisioned> {
        let key = shared_key_name(id)?;
        let device = Device::new(&self.units_ks, &self.units_db, &key)?;
        if on_a {
            let fa = self.fa();
            Provisioner::new(&fa, operator())
                .with_validity(VALIDITY)
                .provision(&device, &so(), id, "station-a", now)
        } else {
            let fb = self.fb();
            Provisioner::new(&fb, operator())
                .with_validity(VALIDITY)
                .provision(&device, &so(), id, "station-b", now)
        }
    }

    /// Number of events in the registry's log.
    fn event_count(&self) -> i64 {
        self.sql()
            .query_one("SELECT COUNT(*) FROM events", &[])
            .expect("count events")
            .get(0)
    }
}

/// Checks a station's report: every event's hash verified, exactly its own
/// events' MACs checked, and the other station's events counted under its id.
#[track_caller]
fn assert_report(report: &EventLogReport, own: &str, other: &str, who: &str) {
    let by_station = |s: &str| {
        report
            .events
            .iter()
            .filter(|e| e.station.as_deref() == Some(s))
            .count() as u64
    };
    assert_eq!(
        report.events.len() as u64,
        by_station(own) + by_station(other),
        "{who}: every event names one of the two stations: {report:?}"
    );
    assert_eq!(
        report.macs_checked,
        by_station(own),
        "{who}: checks the MACs of its own events, and only those"
    );
    let expected: BTreeMap<String, u64> = [(other.to_string(), by_station(other))]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        report.other_stations, expected,
        "{who}: counts the other station's events"
    );
}

/// The registry reads of a factory, whatever its backend.
trait Reader {
    fn record(&self, id: &str) -> keystore_api::Result<provisioning::ProvisioningRecord>;
    fn certificates(&self, id: &str) -> keystore_api::Result<Vec<provisioning::IssuedCert>>;
    fn device_count(&self) -> keystore_api::Result<u64>;
}

impl<B: Backend> Reader for Factory<'_, B> {
    fn record(&self, id: &str) -> keystore_api::Result<provisioning::ProvisioningRecord> {
        Factory::record(self, id)
    }
    fn certificates(&self, id: &str) -> keystore_api::Result<Vec<provisioning::IssuedCert>> {
        Factory::certificates(self, id)
    }
    fn device_count(&self) -> keystore_api::Result<u64> {
        Factory::device_count(self)
    }
}

//! The EST server of a factory whose registry is shared in PostgreSQL: a
//! device provisioned through the shared registry renews over mTLS, and the
//! renewal, its event and the server's own certificate event land in the
//! shared registry, not in the station's `pki.sqlite`.

mod common;
mod est_common;

use common::{officer, operator};
use est_common::{listener, now, pki, renewal, serve_on, soft_device, url};
use provisioning::{Device, EstServerConfig, PostgresRegistry, Provisioner, Registry, DEVICE_KEY};
use std::sync::Arc;
use test_support::postgres::TestPostgres;
use time::Duration;

#[test]
fn an_est_renewal_is_recorded_in_the_shared_registry() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let registry = Arc::new(PostgresRegistry::connect(&server.fresh_database()).unwrap());
    let pki = pki();
    let dev = soft_device(&pki, "device", "EST-PG-1");
    {
        let factory = pki.factory().with_registry(registry.as_ref());
        let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
        Provisioner::new(&factory, operator())
            .with_validity(Duration::days(30))
            .provision(
                &device,
                &officer(),
                &dev.id,
                "line-1",
                now() - Duration::days(25),
            )
            .expect("provision through the shared registry");
    }
    let mut config = EstServerConfig::default();
    config.registry = Some(registry.clone() as Arc<dyn Registry>);
    let est = serve_on(&pki, listener(), config);
    let renewed = renewal(&pki, &dev, &url(&est))
        .renew_at(now())
        .expect("renewal over EST");
    let shared = pki.factory().with_registry(registry.as_ref());
    let certs = shared.certificates("EST-PG-1").unwrap();
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert_eq!(certs[1].serial, renewed.serial);
    let events: Vec<String> = shared
        .verify_event_log()
        .expect("the shared log verifies")
        .events
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in ["provision", "est-server-cert", "renew"] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
    // Nothing of the unit in the station's own registry.
    assert_eq!(pki.factory().device_count().unwrap(), 0);
}

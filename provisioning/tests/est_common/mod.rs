//! Shared set-up of the EST tests: a factory whose CA hierarchy was made 60
//! days ago, an EST server over a second handle on the production store
//! (its own `Arc`s, as a server process has), devices on their own
//! keystores, all on 127.0.0.1 with ports the OS picks.

#![allow(dead_code, unreachable_pub)]

use crate::common::{officer, operator, Pki, Store};
use backend_soft::SoftStore;
use keystore_api::{Backend, Keystore};
use provisioning::{
    Device, EstClient, EstRenewal, EstServer, EstServerConfig, PkiDb, Provisioned, Provisioner,
    DEVICE_KEY,
};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A factory whose root and intermediate were made 60 days ago.
pub fn pki() -> Pki {
    Pki::at(now() - Duration::days(60))
}

/// The production store opened again, shared as a server holds it.
pub fn production(pki: &Pki) -> (Arc<Keystore<SoftStore>>, Arc<PkiDb>) {
    let Store { ks, db, .. } = Store::open(&pki.prod.dir, pki.clock.clone());
    (Arc::new(ks), Arc::new(db))
}

pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Starts an EST server on `listener` over the production store.
pub fn serve_on(pki: &Pki, listener: TcpListener, config: EstServerConfig) -> EstServer {
    let (ks, db) = production(pki);
    EstServer::start(ks, db, operator(), listener, config).expect("start the EST server")
}

pub fn serve(pki: &Pki) -> EstServer {
    serve_on(pki, listener(), EstServerConfig::default())
}

pub fn url(server: &EstServer) -> String {
    format!("https://{}", server.local_addr())
}

/// A device: its keystore and PKI database, shared.
pub struct Dev<B: Backend> {
    pub ks: Arc<Keystore<B>>,
    pub db: Arc<PkiDb>,
    pub id: String,
}

/// A device on a soft keystore of its own in `dir`.
pub fn soft_device(pki: &Pki, name: &str, id: &str) -> Dev<SoftStore> {
    let Store { ks, db, .. } = Store::open(&pki.path(name), pki.clock.clone());
    Dev {
        ks: Arc::new(ks),
        db: Arc::new(db),
        id: id.into(),
    }
}

/// A device over any backend, its PKI database in `dir`.
pub fn device<B: Backend>(ks: Keystore<B>, dir: &Path, id: &str) -> Dev<B> {
    Dev {
        ks: Arc::new(ks),
        db: Arc::new(PkiDb::open(&dir.join("device-pki.sqlite")).expect("device pki db")),
        id: id.into(),
    }
}

/// Provisions `dev` at `at` with certificates valid for `validity`.
pub fn provision<B: Backend>(
    pki: &Pki,
    dev: &Dev<B>,
    at: OffsetDateTime,
    validity: Duration,
) -> Provisioned {
    let factory = pki.factory();
    let device = Device::new(&dev.ks, &dev.db, DEVICE_KEY).unwrap();
    Provisioner::new(&factory, operator())
        .with_validity(validity)
        .provision(&device, &officer(), &dev.id, "line-1", at)
        .expect("provision")
}

/// The device's renewal through the server at `url`, trusting the root.
pub fn renewal<B: Backend + 'static>(pki: &Pki, dev: &Dev<B>, url: &str) -> EstRenewal<B> {
    let root = pki.factory().root().unwrap().der;
    let client = EstClient::new(url, &root)
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(20));
    EstRenewal::new(
        Arc::clone(&dev.ks),
        Arc::clone(&dev.db),
        DEVICE_KEY,
        officer(),
        client,
    )
    .unwrap()
}

/// The names of the factory's events, in order.
pub fn factory_events(pki: &Pki) -> Vec<(String, String)> {
    pki.factory()
        .verify_events()
        .expect("the event log verifies")
        .into_iter()
        .map(|e| (e.event, e.detail))
        .collect()
}

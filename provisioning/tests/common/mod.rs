//! Shared fixtures: real soft keystores in temporary directories, unlocked
//! by key files, with a manual clock; the PKI database beside each.

#![allow(dead_code)]

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Actor, Keystore, ManualClock};
use provisioning::{ceremony, Factory, PkiDb, RootCa};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use test_support::actors;
use time::{Duration, OffsetDateTime};

/// A fixed start time for clocked tests.
pub fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-01-04 09:00:00 UTC)
}

/// A keystore and its PKI database in a directory.
pub struct Store {
    pub dir: PathBuf,
    pub ks: Keystore<SoftStore>,
    pub db: PkiDb,
}

impl Store {
    /// Creates (or reopens) the store in `dir`.
    pub fn open(dir: &Path, clock: Arc<ManualClock>) -> Store {
        std::fs::create_dir_all(dir).expect("store dir");
        let key = dir.join("kek.key");
        let soft = dir.join("soft");
        let unlock = Unlock::KeyFile(key.clone());
        let backend = if key.exists() {
            SoftStore::open(&soft, &unlock).expect("open soft store")
        } else {
            create_key_file(&key).expect("key file");
            SoftStore::create(&soft, &unlock, Kdf::KeyFile).expect("create soft store")
        };
        let ks = Keystore::open_with_clock(backend, &dir.join("metadata.sqlite"), clock)
            .expect("open keystore");
        let db = PkiDb::open(&dir.join("pki.sqlite")).expect("open pki db");
        Store {
            dir: dir.to_path_buf(),
            ks,
            db,
        }
    }
}

pub fn officer() -> Actor {
    actors::officer("officer-1")
}

pub fn custodian() -> Actor {
    actors::officer("root-custodian")
}

pub fn operator() -> Actor {
    actors::operator("station-3")
}

/// A factory whose intermediate was signed by a root in `root_dir`; the root
/// store is closed when this returns. The root's CRL from the ceremony (no
/// entries, valid for 366 days) is in `root_crl`.
pub struct Pki {
    pub tmp: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub prod: Store,
    pub root_dir: PathBuf,
    pub root_crl: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        Self::at(t0())
    }

    pub fn at(start: OffsetDateTime) -> Pki {
        Self::named(
            start,
            "Keystore Test Root CA",
            "Keystore Test Production CA",
        )
    }

    pub fn named(start: OffsetDateTime, root_cn: &str, inter_cn: &str) -> Pki {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(start));
        let root_dir = tmp.path().join("root");
        let prod = Store::open(&tmp.path().join("production"), clock.clone());
        let root_crl = {
            let root = Store::open(&root_dir, clock.clone());
            let ca = RootCa::new(&root.ks, &root.db);
            ca.init(&custodian(), root_cn, Duration::days(3650), start)
                .expect("init root");
            let factory = Factory::new(&prod.ks, &prod.db);
            ceremony(
                &ca,
                &custodian(),
                &factory,
                &officer(),
                inter_cn,
                Duration::days(1095),
                start,
            )
            .expect("ceremony");
            ca.issue_crl(&custodian(), start, Duration::days(366))
                .expect("root crl")
        };
        Pki {
            tmp,
            clock,
            prod,
            root_dir,
            root_crl,
        }
    }

    /// Reopens the offline root's store (a ceremony).
    pub fn root_store(&self) -> Store {
        Store::open(&self.root_dir, self.clock.clone())
    }

    pub fn factory(&self) -> Factory<'_, SoftStore> {
        Factory::new(&self.prod.ks, &self.prod.db)
    }

    pub fn now(&self) -> OffsetDateTime {
        use keystore_api::Clock;
        self.clock.now()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

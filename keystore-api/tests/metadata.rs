//! Metadata-store behaviour that needs no backend material: schema
//! versioning, backend binding and parsing of user-facing strings.

use keystore_api::{
    Aead, AeadSealed, Algorithm, BackendKey, ErrorKind, GeneratedKey, KeyHandle, KeyManagement,
    KeyWrap, Mac, NewKey, Result, SecretBytes, Signing, Usages,
};
use std::str::FromStr;

#[test]
fn algorithm_and_usage_strings_round_trip() {
    for alg in Algorithm::ALL {
        assert_eq!(Algorithm::from_str(alg.id()).unwrap(), alg);
        assert_eq!(Algorithm::from_code(alg.code()), Some(alg));
        assert!(!alg.permitted_usages().is_empty());
    }
    assert_eq!(
        Algorithm::from_str("des").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let u = Usages::from_str("sign, verify").unwrap();
    assert_eq!(u, Usages::SIGN | Usages::VERIFY);
    assert_eq!(u.to_string(), "sign,verify");
    assert_eq!(
        Usages::from_str("").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        Usages::from_str("sign,fly").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// A soft store shared through an `Arc`, under a chosen name: to test
/// backend binding, and two keystores on one metadata database.
#[derive(Debug)]
struct Renamed(std::sync::Arc<backend_soft::SoftStore>, &'static str);

impl KeyManagement for Renamed {
    fn name(&self) -> &'static str {
        self.1
    }
    fn capabilities(&self) -> keystore_api::Capabilities {
        self.0.capabilities()
    }
    fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey> {
        self.0.generate(new)
    }
    fn import(&self, new: &NewKey<'_>, s: &SecretBytes) -> Result<KeyHandle> {
        self.0.import(new, s)
    }
    fn destroy(&self, h: &KeyHandle) -> Result<()> {
        self.0.destroy(h)
    }
    fn list(&self) -> Result<Vec<KeyHandle>> {
        self.0.list()
    }
    fn wipe(&self) -> Result<()> {
        self.0.wipe()
    }
}

impl Signing for Renamed {
    fn public_key(&self, k: &BackendKey) -> Result<keystore_api::PublicKey> {
        self.0.public_key(k)
    }
    fn sign(&self, k: &BackendKey, m: &[u8]) -> Result<Vec<u8>> {
        self.0.sign(k, m)
    }
}

impl Mac for Renamed {
    fn hmac_sha256(&self, k: &BackendKey, d: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        self.0.hmac_sha256(k, d)
    }
}

impl Aead for Renamed {
    fn encrypt(&self, k: &BackendKey, aad: &[u8], p: &[u8]) -> Result<AeadSealed> {
        self.0.encrypt(k, aad, p)
    }
    fn decrypt(&self, k: &BackendKey, aad: &[u8], n: &[u8; 12], c: &[u8]) -> Result<SecretBytes> {
        self.0.decrypt(k, aad, n, c)
    }
}

impl KeyWrap for Renamed {}

impl keystore_api::KeyAgreement for Renamed {}
impl keystore_api::KeyAttestation for Renamed {}
impl keystore_api::MonotonicCounter for Renamed {}

fn soft(dir: &std::path::Path) -> backend_soft::SoftStore {
    let kf = dir.join("kek");
    if !kf.exists() {
        backend_soft::create_key_file(&kf).unwrap();
    }
    let unlock = backend_soft::Unlock::KeyFile(kf);
    backend_soft::SoftStore::open(&dir.join("soft"), &unlock)
        .or_else(|_| {
            backend_soft::SoftStore::create(&dir.join("soft"), &unlock, backend_soft::Kdf::KeyFile)
        })
        .unwrap()
}

#[test]
fn metadata_is_bound_to_its_backend() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    drop(keystore_api::Keystore::open(soft(dir.path()), &db).unwrap());
    let err = keystore_api::Keystore::open(
        Renamed(std::sync::Arc::new(soft(dir.path())), "renamed"),
        &db,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("'soft'"), "{err}");
}

#[test]
fn newer_schema_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    drop(keystore_api::Keystore::open(soft(dir.path()), &db).unwrap());
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let err = keystore_api::Keystore::open(soft(dir.path()), &db).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let v: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99, "the database was left as it was");
}

#[test]
fn a_crash_between_backend_and_metadata_never_dangles() {
    // create() commits metadata only after the backend object exists; if the
    // commit fails (here: a taken name racing past the pre-check is simulated
    // by a read-only database), the backend object is removed again.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    let ks = keystore_api::Keystore::open(soft(dir.path()), &db).unwrap();
    ks.create(
        &officer(),
        "k",
        keystore_api::KeySpec::new(Algorithm::HmacSha256),
    )
    .unwrap();
    let before = keystore_api::KeyManagement::list(ks.backend()).unwrap();
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TRIGGER no_insert BEFORE INSERT ON keys BEGIN SELECT RAISE(ABORT, 'disk full'); END;").unwrap();
    let err = ks
        .create(
            &officer(),
            "k2",
            keystore_api::KeySpec::new(Algorithm::HmacSha256),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert_eq!(
        keystore_api::KeyManagement::list(ks.backend()).unwrap(),
        before,
        "no orphan left in the backend"
    );
    ks.mac("k", b"x").unwrap();
}

fn officer() -> keystore_api::Actor {
    keystore_api::Actor::new("test", keystore_api::Role::SecurityOfficer).unwrap()
}

#[test]
fn a_change_by_another_process_is_seen_at_once() {
    // Two keystores on one metadata database (two processes on a token or a
    // TPM): a revocation by one stops the other's hot path immediately.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    let shared = std::sync::Arc::new(soft(dir.path()));
    let gateway = keystore_api::Keystore::open(Renamed(shared.clone(), "soft"), &db).unwrap();
    let console = keystore_api::Keystore::open(Renamed(shared, "soft"), &db).unwrap();
    gateway
        .create(
            &officer(),
            "k",
            keystore_api::KeySpec::new(Algorithm::HmacSha256),
        )
        .unwrap();
    gateway.mac("k", b"warm the cache").unwrap();
    console.revoke(&officer(), "k", 1, "stolen").unwrap();
    let err = gateway.mac("k", b"m").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyState);
    // The error names its key as data, not only in the message.
    assert_eq!(err.key(), Some("k"), "{err:?}");
    let err = gateway.backend_handle("k", 9).unwrap_err();
    assert_eq!(
        (err.kind(), err.key(), err.version()),
        (ErrorKind::NotFound, Some("k"), Some(9)),
        "{err:?}"
    );
    // And a rotation by the console is picked up: the gateway signs with v2.
    gateway
        .create(
            &officer(),
            "s",
            keystore_api::KeySpec::new(Algorithm::EcdsaP256Sha256),
        )
        .unwrap();
    assert_eq!(
        gateway
            .sign("s", b"m", keystore_api::SignatureFormat::Der)
            .unwrap()
            .version,
        1
    );
    console
        .rotate(&officer(), "s", time::Duration::hours(1))
        .unwrap();
    assert_eq!(
        gateway
            .sign("s", b"m", keystore_api::SignatureFormat::Der)
            .unwrap()
            .version,
        2
    );
}

#[test]
fn a_reader_never_signs_with_a_version_rotated_away_before_its_call() {
    // A console rotates a key over and over, publishing each new version
    // once `rotate` has returned; a gateway on its own connection and its
    // own mapping of the commit generation signs in a loop. A signature
    // whose call began after a rotation returned must carry that version
    // or a newer one: a stale cache would show up as an older version.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.sqlite");
    let shared = std::sync::Arc::new(soft(dir.path()));
    let console = keystore_api::Keystore::open(Renamed(shared.clone(), "soft"), &db).unwrap();
    let gateway = keystore_api::Keystore::open(Renamed(shared, "soft"), &db).unwrap();
    console
        .create(
            &officer(),
            "s",
            keystore_api::KeySpec::new(Algorithm::EcdsaP256Sha256),
        )
        .unwrap();
    let published = AtomicU32::new(1);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..60 {
                let info = console
                    .rotate(&officer(), "s", time::Duration::hours(1))
                    .unwrap();
                published.store(info.active().unwrap().version, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut calls = 0u32;
        while !done.load(Ordering::SeqCst) || calls < 100 {
            let floor = published.load(Ordering::SeqCst);
            let used = gateway
                .sign("s", b"m", keystore_api::SignatureFormat::Fixed)
                .unwrap()
                .version;
            assert!(
                used >= floor,
                "used version {used} after version {floor} was active"
            );
            calls += 1;
        }
    });
}

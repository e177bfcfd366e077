//! A backend chosen at run time: `Keystore<Box<dyn Backend>>` and a backend
//! held through an `Arc` behave as the backend itself, including its
//! overridden `wrap`/`unwrap` (not the trait's `Unsupported` defaults).

use keystore_api::BackendKey;
use keystore_api::KeyManagement;
use keystore_api::Mac;
use keystore_api::{Actor, Algorithm, Backend, KeySpec, Keystore, Role, SignatureFormat, Usages};
use std::sync::Arc;

fn soft(dir: &std::path::Path) -> backend_soft::SoftStore {
    let kf = dir.join("kek");
    backend_soft::create_key_file(&kf).unwrap();
    backend_soft::SoftStore::create(
        &dir.join("soft"),
        &backend_soft::Unlock::KeyFile(kf),
        backend_soft::Kdf::KeyFile,
    )
    .unwrap()
}

#[test]
fn a_boxed_backend_signs_and_backs_up_like_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let chosen: Box<dyn Backend> = Box::new(soft(dir.path()));
    let ks = Keystore::open(chosen, &dir.path().join("m.sqlite")).unwrap();
    assert_eq!(ks.backend_name(), "soft");
    let so = Actor::new("test", Role::SecurityOfficer).unwrap();
    ks.create(&so, "id", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .unwrap();
    let sig = ks.sign("id", b"m", SignatureFormat::Der).unwrap();
    ks.verify("id", b"m", &sig.bytes, None).unwrap();
    // Backup goes through `Backend::wrap`: it must reach the soft store's
    // own implementation.
    ks.create(
        &so,
        "kek",
        KeySpec::new(Algorithm::Aes256Gcm).with_usages(Usages::WRAP),
    )
    .unwrap();
    ks.create(
        &so,
        "data",
        KeySpec::new(Algorithm::Aes256Gcm).backup_eligible(),
    )
    .unwrap();
    let blob = ks.backup(&so, "data", "kek").unwrap();
    ks.restore(&so, &blob, "kek", Some("data-restored"))
        .unwrap();
}

#[test]
fn an_arc_backend_is_the_same_backend_inside_and_outside_the_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(soft(dir.path()));
    let ks = Keystore::open(Arc::clone(&shared), &dir.path().join("m.sqlite")).unwrap();
    let so = Actor::new("test", Role::SecurityOfficer).unwrap();
    ks.create(&so, "k", KeySpec::new(Algorithm::HmacSha256))
        .unwrap();
    let handle = ks.backend_handle("k", 1).unwrap();
    assert!(shared.list().unwrap().contains(&handle));
    assert_eq!(
        &shared
            .hmac_sha256(
                &BackendKey::new(handle.clone(), Algorithm::HmacSha256),
                b"m"
            )
            .unwrap()[..],
        &ks.mac("k", b"m").unwrap()[..]
    );
}

//! AES-GCM usage limits (SP 800-38D): the count per key version, exact at
//! the limit across keystores on one store, lower-only limits, decryption
//! after the limit, blocks given back or lost, and `due`/`rotate_due` with
//! the usage reason.

use keystore_api::{
    Actor, Algorithm, Clock, DueReason, EncryptionUsage, ErrorKind, KeySpec, Keystore, ManualClock,
    OpenOptions, Role, SecretBytes, Usages, MAX_ENCRYPTION_LIMIT,
};
use std::path::Path;
use std::sync::Arc;
use time::macros::datetime;
use time::Duration;

type Ks = Keystore<backend_soft::SoftStore>;

fn soft(dir: &Path) -> backend_soft::SoftStore {
    let kf = dir.join("kek");
    let unlock = backend_soft::Unlock::KeyFile(kf.clone());
    if kf.exists() {
        return backend_soft::SoftStore::open(&dir.join("soft"), &unlock).unwrap();
    }
    backend_soft::create_key_file(&kf).unwrap();
    backend_soft::SoftStore::create(&dir.join("soft"), &unlock, backend_soft::Kdf::KeyFile).unwrap()
}

fn open_with(dir: &Path, clock: &Arc<ManualClock>, options: OpenOptions) -> Ks {
    Keystore::open_with(soft(dir), &dir.join("m.sqlite"), clock.clone(), options).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(datetime!(2026-03-01 12:00:00 UTC)))
}

fn block(n: u64) -> OpenOptions {
    OpenOptions::new().encryption_block(n)
}

fn so() -> Actor {
    Actor::new("officer", Role::SecurityOfficer).unwrap()
}

fn aes(limit: u64) -> KeySpec {
    KeySpec::new(Algorithm::Aes256Gcm).with_encryption_limit(limit)
}

fn usage(ks: &Ks, name: &str, version: u32) -> EncryptionUsage {
    ks.info(name)
        .unwrap()
        .version(version)
        .unwrap()
        .encryptions
        .expect("an AES version reports its encryptions")
}

/// Encrypts with `name` until refused; the successes and the refusal.
fn encrypt_until_refused(ks: &Ks, name: &str) -> (u64, keystore_api::Error) {
    let mut n = 0;
    loop {
        match ks.encrypt(name, b"payload", b"aad") {
            Ok(_) => n += 1,
            Err(e) => return (n, e),
        }
        assert!(n <= MAX_ENCRYPTION_LIMIT, "never refused");
    }
}

#[track_caller]
fn assert_limit_refusal(e: &keystore_api::Error, name: &str, version: u32, limit: u64) {
    assert_eq!(e.kind(), ErrorKind::KeyState, "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("limit of {limit} encryptions")) && msg.contains("SP 800-38D"),
        "the refusal names the limit: {msg}"
    );
    assert_eq!(e.key(), Some(name));
    assert_eq!(e.version(), Some(version));
}

#[test]
fn the_last_encryption_allowed_is_exactly_the_limit_th() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    // A block that does not divide the limit: the last reservation is what remains.
    let ks = open_with(dir.path(), &c, block(3));
    ks.create(&so(), "k", aes(10)).unwrap();
    let first = ks.encrypt("k", b"first", b"aad").unwrap();
    for _ in 1..10 {
        ks.encrypt("k", b"payload", b"aad").unwrap();
    }
    let e = ks.encrypt("k", b"one too many", b"aad").unwrap_err();
    assert_limit_refusal(&e, "k", 1, 10);
    assert_eq!(
        usage(&ks, "k", 1),
        EncryptionUsage {
            reserved: 10,
            limit: 10
        }
    );
    // Refusals write nothing, and decryption goes on.
    for _ in 0..3 {
        assert_eq!(
            ks.encrypt("k", b"x", b"").unwrap_err().kind(),
            ErrorKind::KeyState
        );
    }
    assert_eq!(usage(&ks, "k", 1).reserved, 10);
    assert_eq!(ks.decrypt("k", &first, b"aad").unwrap().expose(), b"first");
    // The same after a restart: the count lives in the store.
    drop(ks);
    let ks = open_with(dir.path(), &c, block(3));
    assert_limit_refusal(&ks.encrypt("k", b"x", b"").unwrap_err(), "k", 1, 10);
    assert_eq!(ks.decrypt("k", &first, b"aad").unwrap().expose(), b"first");
}

#[test]
fn keystores_on_one_store_share_the_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let a = open_with(dir.path(), &c, block(7));
    a.create(&so(), "k", aes(1000)).unwrap();
    let b = open_with(dir.path(), &c, block(5));
    let d = open_with(dir.path(), &c, block(64));
    // Interleaved, each counting its own block down.
    let mut made = 0u64;
    let mut refused = [false; 3];
    while refused.iter().any(|r| !r) {
        for (i, ks) in [&a, &b, &d].into_iter().enumerate() {
            if refused[i] {
                continue;
            }
            match ks.encrypt("k", b"m", b"") {
                Ok(_) => made += 1,
                Err(e) => {
                    assert_limit_refusal(&e, "k", 1, 1000);
                    refused[i] = true;
                }
            }
        }
    }
    assert_eq!(made, 1000, "exactly the limit across three keystores");
    assert_eq!(usage(&a, "k", 1).reserved, 1000);
}

#[test]
fn threads_of_one_keystore_share_the_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ks = Arc::new(open_with(dir.path(), &c, block(7)));
    ks.create(&so(), "k", aes(1000)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ks = Arc::clone(&ks);
            std::thread::spawn(move || encrypt_until_refused(&ks, "k"))
        })
        .collect();
    let mut made = 0;
    for t in threads {
        let (n, e) = t.join().unwrap();
        assert_limit_refusal(&e, "k", 1, 1000);
        made += n;
    }
    assert_eq!(made, 1000);
}

#[test]
fn a_closed_keystore_gives_its_block_back_and_a_lost_one_stays_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ks = open_with(dir.path(), &c, block(100));
    ks.create(&so(), "k", aes(1000)).unwrap();
    ks.encrypt("k", b"m", b"").unwrap();
    // Another process sees the whole block reserved; this one, what it used.
    let other = open_with(dir.path(), &c, block(100));
    assert_eq!(usage(&other, "k", 1).reserved, 100, "one block reserved");
    assert_eq!(
        usage(&ks, "k", 1).reserved,
        1,
        "its own unused block not counted"
    );
    drop(other);
    drop(ks);
    let ks = open_with(dir.path(), &c, block(100));
    assert_eq!(usage(&ks, "k", 1).reserved, 1, "the unused 99 came back");
    ks.encrypt("k", b"m", b"").unwrap();
    // A process that dies gives nothing back: forgetting the keystore runs
    // no clean-up, as a SIGKILL would not.
    std::mem::forget(ks);
    let ks = open_with(dir.path(), &c, block(100));
    assert_eq!(
        usage(&ks, "k", 1).reserved,
        101,
        "the dead block stays counted"
    );
    let (n, e) = encrypt_until_refused(&ks, "k");
    assert_limit_refusal(&e, "k", 1, 1000);
    assert_eq!(
        n,
        1000 - 101,
        "never more than the limit: the lost block is not re-issued"
    );
}

#[test]
fn limits_are_lower_only_and_for_aes_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let ks = open_with(dir.path(), &clock(), OpenOptions::new());
    for bad in [0, MAX_ENCRYPTION_LIMIT + 1, u64::MAX] {
        let e = ks.create(&so(), "bad", aes(bad)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "limit {bad}: {e:?}");
        let e = ks
            .import(&so(), "bad", aes(bad), &SecretBytes::from_slice(&[1; 32]))
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "import, limit {bad}: {e:?}"
        );
    }
    let e = ks
        .create(
            &so(),
            "hmac",
            KeySpec::new(Algorithm::HmacSha256).with_encryption_limit(10),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    assert!(ks.list().unwrap().is_empty(), "nothing was created");

    let info = ks
        .create(&so(), "default", KeySpec::new(Algorithm::Aes256Gcm))
        .unwrap();
    assert_eq!(info.encryption_limit, Some(MAX_ENCRYPTION_LIMIT));
    assert_eq!(
        info.versions[0].encryptions,
        Some(EncryptionUsage {
            reserved: 0,
            limit: 1 << 32
        })
    );
    let info = ks.create(&so(), "max", aes(MAX_ENCRYPTION_LIMIT)).unwrap();
    assert_eq!(info.encryption_limit, Some(1 << 32));
    let info = ks
        .import(
            &so(),
            "imported",
            aes(5),
            &SecretBytes::from_slice(&[1; 32]),
        )
        .unwrap();
    assert_eq!(info.encryption_limit, Some(5));
    let info = ks
        .create(&so(), "mac", KeySpec::new(Algorithm::HmacSha256))
        .unwrap();
    assert_eq!(info.encryption_limit, None);
    assert_eq!(info.versions[0].encryptions, None);
}

#[test]
fn options_out_of_range_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    for options in [
        OpenOptions::new().encryption_block(0),
        OpenOptions::new().usage_due_share(0.0),
        OpenOptions::new().usage_due_share(1.01),
        OpenOptions::new().usage_due_share(f64::NAN),
    ] {
        let Err(e) = Keystore::open_with(
            soft(dir.path()),
            &dir.path().join("m.sqlite"),
            c.clone(),
            options,
        ) else {
            panic!("an invalid option was accepted");
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    }
}

#[test]
fn rotation_carries_the_limit_and_each_version_counts_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ks = open_with(dir.path(), &c, block(4));
    ks.create(&so(), "k", aes(10)).unwrap();
    let old = ks.encrypt("k", b"old", b"").unwrap();
    let (n, e) = encrypt_until_refused(&ks, "k");
    assert_eq!(n, 9);
    assert_limit_refusal(&e, "k", 1, 10);
    let info = ks.rotate(&so(), "k", Duration::days(1)).unwrap();
    assert_eq!(info.encryption_limit, Some(10));
    assert_eq!(
        info.active().unwrap().encryptions,
        Some(EncryptionUsage {
            reserved: 0,
            limit: 10
        })
    );
    let (n, e) = encrypt_until_refused(&ks, "k");
    assert_eq!(n, 10, "version 2 has its own count");
    assert_limit_refusal(&e, "k", 2, 10);
    assert_eq!(usage(&ks, "k", 1).reserved, 10);
    // The old version still decrypts within its grace.
    assert_eq!(ks.decrypt("k", &old, b"").unwrap().expose(), b"old");
}

#[test]
fn due_lists_keys_past_their_usage_share_and_rotate_due_rotates_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    // Blocks of 1: the reserved count is exactly the encryptions made.
    let ks = open_with(dir.path(), &c, block(1));
    ks.create(&so(), "busy", aes(10)).unwrap();
    ks.create(&so(), "quiet", aes(10)).unwrap();
    ks.create(&so(), "both", aes(10).with_cryptoperiod(Duration::days(30)))
        .unwrap();
    ks.create(
        &so(),
        "sig",
        KeySpec::new(Algorithm::EcdsaP256Sha256).with_cryptoperiod(Duration::days(30)),
    )
    .unwrap();
    for _ in 0..9 {
        ks.encrypt("busy", b"m", b"").unwrap();
        ks.encrypt("both", b"m", b"").unwrap();
    }
    ks.encrypt("quiet", b"m", b"").unwrap();
    // 9 of 10 is not more than 90 %.
    assert!(ks.due(c.now()).unwrap().is_empty());
    ks.encrypt("busy", b"m", b"").unwrap();
    let due = ks.due(c.now()).unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].name, "busy");
    assert_eq!(due[0].version, 1);
    assert_eq!(
        due[0].reason,
        DueReason::Usage(EncryptionUsage {
            reserved: 10,
            limit: 10
        })
    );
    assert_eq!(due[0].due_at, "2026-03-01T12:00:00Z");

    // A lower share lists keys sooner.
    drop(ks);
    let ks = open_with(dir.path(), &c, block(1).usage_due_share(0.5));
    let names: Vec<_> = ks
        .due(c.now())
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["both", "busy"]);

    // Past the cryptoperiod too: "both" is listed for each reason, "sig" for its period.
    c.advance(Duration::days(30));
    let due = ks.due(c.now()).unwrap();
    let reasons: Vec<_> = due.iter().map(|d| (d.name.as_str(), d.reason)).collect();
    assert_eq!(
        reasons,
        [
            ("both", DueReason::Cryptoperiod),
            (
                "both",
                DueReason::Usage(EncryptionUsage {
                    reserved: 9,
                    limit: 10
                })
            ),
            (
                "busy",
                DueReason::Usage(EncryptionUsage {
                    reserved: 10,
                    limit: 10
                })
            ),
            ("sig", DueReason::Cryptoperiod),
        ]
    );
    let rotated = ks.rotate_due(&so(), c.now(), Duration::days(1)).unwrap();
    assert_eq!(rotated, ["both", "busy", "sig"], "each key rotated once");
    for name in ["both", "busy"] {
        let info = ks.info(name).unwrap();
        assert_eq!(info.versions.len(), 2, "{name}");
        assert_eq!(
            info.active().unwrap().encryptions,
            Some(EncryptionUsage {
                reserved: 0,
                limit: 10
            })
        );
        ks.encrypt(name, b"m", b"").unwrap();
    }
    assert_eq!(ks.info("quiet").unwrap().versions.len(), 1);
    assert!(ks.due(c.now()).unwrap().is_empty());
}

#[test]
fn a_restored_key_keeps_its_limit_and_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ks = open_with(dir.path(), &c, block(1));
    ks.create(
        &so(),
        "kek",
        KeySpec::new(Algorithm::Aes256Gcm).with_usages(Usages::WRAP),
    )
    .unwrap();
    ks.create(&so(), "data", aes(50).backup_eligible()).unwrap();
    for _ in 0..5 {
        ks.encrypt("data", b"m", b"").unwrap();
    }
    let blob = ks.backup(&so(), "data", "kek").unwrap();
    let info = ks.restore(&so(), &blob, "kek", Some("data2")).unwrap();
    assert_eq!(info.encryption_limit, Some(50));
    assert_eq!(
        info.versions[0].encryptions,
        Some(EncryptionUsage {
            reserved: 5,
            limit: 50
        })
    );
    let (n, _) = encrypt_until_refused(&ks, "data2");
    assert_eq!(n, 45);
}

#[test]
fn a_store_from_before_the_limits_opens_and_counts_its_aes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ks = open_with(dir.path(), &c, block(1));
    ks.create(&so(), "old", KeySpec::new(Algorithm::Aes256Gcm))
        .unwrap();
    let sealed = ks.encrypt("old", b"before", b"").unwrap();
    drop(ks);
    {
        // Back to schema 4: no limit, no count (nor schema 6's evidence).
        let conn = rusqlite::Connection::open(dir.path().join("m.sqlite")).unwrap();
        conn.execute_batch(
            "DROP TABLE audit_checkpoints;
             DROP TABLE audit_signers;
             ALTER TABLE store DROP COLUMN store_id;
             ALTER TABLE store DROP COLUMN rollback_counter;
             ALTER TABLE keys DROP COLUMN encryption_limit;
             ALTER TABLE key_versions DROP COLUMN encryptions_reserved;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let ks = open_with(dir.path(), &c, block(1));
    let info = ks.info("old").unwrap();
    assert_eq!(info.encryption_limit, Some(MAX_ENCRYPTION_LIMIT));
    assert_eq!(
        info.versions[0].encryptions,
        Some(EncryptionUsage {
            reserved: 0,
            limit: MAX_ENCRYPTION_LIMIT
        })
    );
    assert_eq!(ks.decrypt("old", &sealed, b"").unwrap().expose(), b"before");
    ks.encrypt("old", b"after", b"").unwrap();
    assert_eq!(usage(&ks, "old", 1).reserved, 1);
}

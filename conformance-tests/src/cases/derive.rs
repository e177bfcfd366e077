//! HKDF derivation per the DESIGN.md contract:
//! `derive(K, S, I, L) = HKDF-SHA256(salt = K, IKM = S, info = I, L)`.

use crate::support::so;
use crate::support::{expect_err, hkdf_reference, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::KeyManagement;
use keystore_api::{Algorithm, KeySpec, Keystore, Operation, SecretBytes, Usages};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sha2::Digest;

const VECTORS: &str = include_str!("../../vectors/hkdf-sha256.json");

/// Imports `k` as HMAC key `name` for derivation (usage `derive`: a key
/// holds `mac` or `derive`, never both), or proves the backend cannot.
fn import_k<F: Fixture>(ks: &Keystore<F::Backend>, name: &str, k: &[u8]) -> bool {
    let spec = KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE);
    if ks
        .backend()
        .capabilities()
        .supports(Algorithm::HmacSha256, Operation::Import)
    {
        ks.import(&so(), name, spec, &SecretBytes::from_slice(k))
            .expect("import K");
        true
    } else {
        expect_err(
            ks.import(&so(), name, spec, &SecretBytes::from_slice(k)),
            ErrorKind::Unsupported,
            "HMAC import",
        );
        false
    }
}

/// TEST-KEY-04
pub fn hkdf_cross_backend_vectors<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("vector file parses");
    let vectors = doc["vectors"].as_array().expect("vectors array");
    assert!(vectors.len() >= 5, "the committed vectors are present");
    for (i, v) in vectors.iter().enumerate() {
        let field = |f: &str| hex::decode(v[f].as_str().expect("hex field")).expect("hex");
        let (k, salt, info) = (field("k"), field("salt"), field("info"));
        let len = v["len"].as_u64().expect("len") as usize;
        let name = format!("vector-{i}");
        if !import_k::<F>(&ks, &name, &k) {
            return unsupported(Algorithm::HmacSha256, "import");
        }
        let out = ks
            .derive_hkdf_sha256(&name, &salt, &info, len)
            .expect("derive");
        assert_eq!(out.len(), len);
        match v.get("okm").and_then(|o| o.as_str()) {
            Some(okm) => assert_eq!(hex::encode(out.expose()), okm, "vector {i}"),
            None => {
                let want = v["okm_sha256"].as_str().expect("okm_sha256");
                assert_eq!(
                    hex::encode(sha2::Sha256::digest(out.expose())),
                    want,
                    "vector {i}"
                );
            }
        }
    }
    Outcome::Passed
}

/// TEST-KEY-13
pub fn prop_derive_matches_hkdf<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let n = std::cell::Cell::new(0u32);
    let unsupported_seen = std::cell::Cell::new(false);
    runner
        .run(
            &(
                prop::array::uniform32(any::<u8>()),
                prop::collection::vec(any::<u8>(), 0..128),
                prop::collection::vec(any::<u8>(), 0..128),
                prop_oneof![1usize..=64, 65usize..=8160],
            ),
            |(k, salt, info, len)| {
                n.set(n.get() + 1);
                let name = format!("k{}", n.get());
                if !import_k::<F>(&ks, &name, &k) {
                    unsupported_seen.set(true);
                    return Ok(());
                }
                let out = ks
                    .derive_hkdf_sha256(&name, &salt, &info, len)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(out.expose(), &hkdf_reference(&k, &salt, &info, len)[..]);
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    if unsupported_seen.get() {
        return unsupported(Algorithm::HmacSha256, "import");
    }
    // Generated keys derive deterministically too.
    ks.create(
        &so(),
        "gen",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
    )
    .expect("generate a derive key");
    let a = ks
        .derive_hkdf_sha256("gen", b"s", b"i", 32)
        .expect("derive");
    let b = ks
        .derive_hkdf_sha256("gen", b"s", b"i", 32)
        .expect("derive");
    assert_eq!(a, b);
    assert_ne!(
        a,
        ks.derive_hkdf_sha256("gen", b"s", b"j", 32)
            .expect("derive")
    );
    Outcome::Passed
}

/// TEST-KEY-14
pub fn derive_length_bounds<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let k = [9u8; 32];
    if !import_k::<F>(&ks, "kdf", &k) {
        return unsupported(Algorithm::HmacSha256, "import");
    }
    expect_err(
        ks.derive_hkdf_sha256("kdf", b"s", b"i", 0),
        ErrorKind::InvalidInput,
        "L = 0",
    );
    expect_err(
        ks.derive_hkdf_sha256("kdf", b"s", b"i", 8161),
        ErrorKind::InvalidInput,
        "L = 8161",
    );
    expect_err(
        ks.derive_hkdf_sha256("kdf", b"s", b"i", usize::MAX),
        ErrorKind::InvalidInput,
        "L = usize::MAX",
    );
    for len in [1, 32, 8160] {
        let out = ks
            .derive_hkdf_sha256("kdf", b"s", b"i", len)
            .expect("in-range length");
        assert_eq!(out.expose(), &hkdf_reference(&k, b"s", b"i", len)[..]);
    }
    Outcome::Passed
}

/// TEST-KEY-54
pub fn mac_and_derive_never_share_a_key<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let objects = ks.backend().list().expect("list").len();
    // Both usages on one key: Policy at create and at import, before the
    // backend is touched (so also where the backend cannot import).
    let both = KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC | Usages::DERIVE);
    for (what, res) in [
        ("create", ks.create(&so(), "both", both)),
        (
            "import",
            ks.import(&so(), "both", both, &SecretBytes::from_slice(&[7; 32])),
        ),
    ] {
        let err = res.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Policy, "{what}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("never both") && msg.contains("usage derive"),
            "{what}: the message says why and what to do: {msg}"
        );
    }
    expect_err(
        ks.info("both"),
        ErrorKind::NotFound,
        "a refused key is not recorded",
    );
    assert_eq!(
        ks.backend().list().expect("list").len(),
        objects,
        "refusals left no backend object"
    );

    // The default hmac-sha256 key is a MAC key: it MACs, it does not derive.
    assert_eq!(Algorithm::HmacSha256.default_usages(), Usages::MAC);
    let info = ks
        .create(&so(), "mac-key", KeySpec::new(Algorithm::HmacSha256))
        .expect("create a default hmac key");
    assert_eq!(info.usages, Usages::MAC);
    let tag = ks.mac("mac-key", b"m").expect("mac");
    ks.verify_mac("mac-key", b"m", &tag).expect("verify_mac");
    expect_err(
        ks.derive_hkdf_sha256("mac-key", b"s", b"i", 32),
        ErrorKind::Policy,
        "derive with a default hmac key",
    );
    // A derive key derives, and does not MAC.
    let info = ks
        .create(
            &so(),
            "kdf-key",
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
        )
        .expect("create a derive key");
    assert_eq!(info.usages, Usages::DERIVE);
    let okm = ks
        .derive_hkdf_sha256("kdf-key", b"s", b"i", 32)
        .expect("derive");
    expect_err(
        ks.mac("kdf-key", b"m"),
        ErrorKind::Policy,
        "mac with a derive key",
    );
    expect_err(
        ks.verify_mac("kdf-key", b"m", &tag),
        ErrorKind::Policy,
        "verify_mac with a derive key",
    );
    // Imported keys follow the same rule (where the backend imports).
    let k = [0x2a; 32];
    if import_k::<F>(&ks, "kdf-imported", &k) {
        assert_eq!(
            ks.info("kdf-imported").expect("info").usages,
            Usages::DERIVE
        );
        assert_eq!(
            ks.derive_hkdf_sha256("kdf-imported", b"s", b"i", 32)
                .expect("derive")
                .expose(),
            &hkdf_reference(&k, b"s", b"i", 32)[..]
        );
        expect_err(
            ks.mac("kdf-imported", b"s"),
            ErrorKind::Policy,
            "mac with an imported derive key",
        );
        ks.import(
            &so(),
            "mac-imported",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&k),
        )
        .expect("import a mac key");
        expect_err(
            ks.derive_hkdf_sha256("mac-imported", b"s", b"i", 32),
            ErrorKind::Policy,
            "derive with an imported mac key",
        );
    }
    let report = ks.verify_audit(&so()).expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert!(report.keys_with_mac_and_derive.is_empty(), "{report:?}");

    // A key created before the rule (both usages in its metadata) keeps
    // working, and audit verification warns about it.
    drop(ks);
    let conn = rusqlite::Connection::open(fx.metadata_path()).expect("open metadata");
    conn.execute(
        "UPDATE keys SET usages = 'mac,derive' WHERE name = 'kdf-key'",
        [],
    )
    .expect("make an old-style key");
    drop(conn);
    let ks = fx.open();
    assert!(ks
        .info("kdf-key")
        .expect("info")
        .usages
        .has_mac_and_derive());
    assert_eq!(
        ks.derive_hkdf_sha256("kdf-key", b"s", b"i", 32)
            .expect("an old key still derives"),
        okm
    );
    ks.mac("kdf-key", b"m").expect("an old key still MACs");
    let report = ks.verify_audit(&so()).expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.keys_with_mac_and_derive, vec!["kdf-key".to_string()]);
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("'kdf-key'") && warnings[0].contains("both mac and derive"),
        "{warnings:?}"
    );
    // A new key still cannot have both.
    expect_err(
        ks.create(&so(), "both", both),
        ErrorKind::Policy,
        "create with both, after an old key",
    );
    Outcome::Passed
}

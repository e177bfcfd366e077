//! HKDF derivation per the DESIGN.md contract:
//! `derive(K, S, I, L) = HKDF-SHA256(salt = K, IKM = S, info = I, L)`.

use crate::support::so;
use crate::support::{expect_err, hkdf_reference, unsupported};
use crate::{Fixture, Outcome};
use keystore_api::{Algorithm, Backend, KeySpec, Keystore, Operation, SecretBytes};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sha2::Digest;

const VECTORS: &str = include_str!("../../vectors/hkdf-sha256.json");

/// Imports `k` as HMAC key `name`, or proves the backend cannot.
fn import_k<F: Fixture>(ks: &Keystore<F::Backend>, name: &str, k: &[u8]) -> bool {
    let spec = KeySpec::new(Algorithm::HmacSha256);
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
            "Unsupported",
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
    ks.create(&so(), "gen", KeySpec::new(Algorithm::HmacSha256))
        .expect("generate hmac");
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
        "InvalidInput",
        "L = 0",
    );
    expect_err(
        ks.derive_hkdf_sha256("kdf", b"s", b"i", 8161),
        "InvalidInput",
        "L = 8161",
    );
    expect_err(
        ks.derive_hkdf_sha256("kdf", b"s", b"i", usize::MAX),
        "InvalidInput",
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

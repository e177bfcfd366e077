//! Signing: every algorithm verified by an independent implementation.

use crate::support::{
    create_or_prove_unsupported, expect_err, sign_verify_case, spki, unsupported,
    verify_independently,
};
use crate::{Fixture, Outcome};
use keystore_api::ErrorKind;
use keystore_api::{Algorithm, SignatureFormat};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// TEST-KEY-01
pub fn ecdsa_p256_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::EcdsaP256Sha256)
}

/// TEST-KEY-02
pub fn rsa_2048_pss_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::Rsa2048PssSha256)
}

/// TEST-KEY-03
pub fn rsa_2048_pkcs1_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::Rsa2048Pkcs1Sha256)
}

/// TEST-KEY-05
pub fn rsa_3072_pss_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::Rsa3072PssSha256)
}

/// TEST-KEY-06
pub fn rsa_3072_pkcs1_sign_verify<F: Fixture>(fx: &mut F) -> Outcome {
    sign_verify_case(fx, Algorithm::Rsa3072Pkcs1Sha256)
}

/// TEST-KEY-10
pub fn prop_sign_verify_random_messages<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let mut ran = 0;
    for (alg, cases) in [
        (Algorithm::EcdsaP256Sha256, 64),
        (Algorithm::Rsa2048PssSha256, 16),
    ] {
        let name = format!("prop-{}", alg.id());
        let Some(info) = create_or_prove_unsupported::<F>(&ks, &name, alg) else {
            continue;
        };
        ran += 1;
        let spki = spki(&info);
        let mut runner = TestRunner::new(Config {
            cases,
            ..Config::default()
        });
        runner
            .run(
                &(prop::collection::vec(any::<u8>(), 0..2048), any::<bool>()),
                |(msg, fixed)| {
                    let format = if fixed {
                        SignatureFormat::Fixed
                    } else {
                        SignatureFormat::Der
                    };
                    let sig = ks
                        .sign(&name, &msg, format)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    prop_assert!(verify_independently(alg, &spki, &msg, &sig.bytes));
                    prop_assert_eq!(ks.verify(&name, &msg, &sig.bytes, None).ok(), Some(1));
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    if ran == 0 {
        return unsupported(Algorithm::EcdsaP256Sha256, "generate/sign");
    }
    Outcome::Passed
}

/// TEST-KEY-33
pub fn verify_rejects_forgeries<F: Fixture>(fx: &mut F) -> Outcome {
    let ks = fx.open();
    let alg = Algorithm::EcdsaP256Sha256;
    let (Some(_), Some(_)) = (
        create_or_prove_unsupported::<F>(&ks, "alice", alg),
        create_or_prove_unsupported::<F>(&ks, "mallory", alg),
    ) else {
        return unsupported(alg, "generate/sign");
    };
    let msg = b"firmware image digest";
    let sig = ks
        .sign("alice", msg, SignatureFormat::Der)
        .expect("sign")
        .bytes;
    assert_eq!(ks.verify("alice", msg, &sig, Some(1)).expect("verify"), 1);
    expect_err(
        ks.verify("alice", b"firmware image digesT", &sig, None),
        ErrorKind::Integrity,
        "wrong message",
    );
    let mut bad = sig.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    expect_err(
        ks.verify("alice", msg, &bad, None),
        ErrorKind::Integrity,
        "tampered signature",
    );
    let other = ks
        .sign("mallory", msg, SignatureFormat::Der)
        .expect("sign")
        .bytes;
    expect_err(
        ks.verify("alice", msg, &other, None),
        ErrorKind::Integrity,
        "another key's signature",
    );
    expect_err(
        ks.verify("alice", msg, &sig, Some(2)),
        ErrorKind::NotFound,
        "a version that does not exist",
    );
    expect_err(
        ks.verify("alice", msg, &[], None),
        ErrorKind::InvalidInput,
        "empty signature",
    );
    expect_err(
        ks.verify(
            "alice",
            msg,
            &[0u8; keystore_api::limits::MAX_SIGNATURE_LEN + 1],
            None,
        ),
        ErrorKind::InvalidInput,
        "oversized signature",
    );
    Outcome::Passed
}

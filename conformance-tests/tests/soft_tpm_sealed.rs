//! The whole conformance suite on a soft store whose KEK is sealed in a TPM,
//! against a fresh swtpm per case (see
//! `conformance_tests::fixtures::tpm_sealed`), and the sealed-store tests of
//! issue 4: no opening after a TPM clear, and the optional PCR binding.

conformance_tests::suite!(conformance_tests::fixtures::tpm_sealed::TpmSealedFixture);

mod sealed_specific {
    use backend_soft::{Kdf, SoftStore, Unlock};
    use backend_tpm::{admin, PcrBinding, TpmConfig, TpmSealedKek};
    use conformance_tests::fixtures::tpm_sealed::TpmSealedFixture;
    use conformance_tests::Fixture;
    use keystore_api::ErrorKind;
    use keystore_api::{Actor, Algorithm, KeySpec, Role};
    use std::process::Command;
    use std::sync::Arc;

    fn so() -> Actor {
        Actor::new("sealed-test-officer", Role::SecurityOfficer).expect("actor")
    }

    fn fixture() -> Option<TpmSealedFixture> {
        match TpmSealedFixture::setup() {
            Ok(fx) => Some(fx),
            Err(why) => {
                let skip = std::env::var("KEYSTORE_TEST_SKIP")
                    .map(|v| v.split(',').any(|b| b.trim() == "soft+tpm-sealed"))
                    .unwrap_or(false);
                if skip {
                    eprintln!("SKIPPED (KEYSTORE_TEST_SKIP=soft+tpm-sealed): {why}");
                    None
                } else {
                    panic!("the TPM-sealed store tests need swtpm: {why}");
                }
            }
        }
    }

    /// The kind of `r`'s error; an `Ok` fails the test.
    #[track_caller]
    fn kind<T>(r: keystore_api::Result<T>) -> ErrorKind {
        match r {
            Ok(_) => panic!("expected an error, got Ok"),
            Err(e) => e.kind(),
        }
    }

    /// After a TPM clear the sealed store can no longer be opened: the
    /// sealed KEK was made under the old owner seed.
    #[test]
    fn sealed_store_cannot_be_opened_after_a_tpm_clear() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        ks.create(&so(), "data-key", KeySpec::new(Algorithm::Aes256Gcm))
            .expect("create AES key");
        let env = ks
            .encrypt("data-key", b"patient record", b"ctx")
            .expect("encrypt");
        let ks = fx.restart(ks);
        assert_eq!(
            ks.decrypt("data-key", &env, b"ctx")
                .expect("decrypt")
                .expose(),
            b"patient record"
        );
        drop(ks);
        admin::clear(&fx.tcti(), &fx.lockout_auth()).expect("TPM2_Clear");
        // With the old owner auth: the owner hierarchy refuses it.
        assert_eq!(kind(fx.open_store()), ErrorKind::Auth);
        // With the (now empty) owner auth: the sealed KEK does not load.
        let cleared = Unlock::Provider(Arc::new(TpmSealedKek::new(TpmConfig::new(fx.tcti()))));
        let e = SoftStore::open(&fx.store_path(), &cleared).expect_err("opens after clear");
        assert_eq!(e.kind(), ErrorKind::Auth, "{e:?}");
        assert!(e.to_string().contains("cleared"), "{e}");
    }

    fn tpm2(args: &[&str], tcti: &str) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", tcti)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); install tpm2-tools: apt-get install tpm2-tools",
                    args[0]
                )
            });
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The optional PCR binding: a KEK sealed to PCR 16 unseals only while
    /// PCR 16 holds the value it had at sealing time.
    #[test]
    fn pcr_bound_kek_unseals_only_with_the_same_pcr_values() {
        let Some(fx) = fixture() else { return };
        let dir = fx.path().join("pcr-bound");
        let provider =
            TpmSealedKek::new(fx.config()).bound_to(PcrBinding::sha256(&[16]).expect("pcr 16"));
        let unlock = Unlock::Provider(Arc::new(provider));
        let store = SoftStore::create(&dir, &unlock, Kdf::Provider).expect("create");
        drop(store);
        drop(SoftStore::open(&dir, &unlock).expect("opens with unchanged PCRs"));

        let tcti = fx.tcti();
        tpm2(
            &["tpm2_pcrextend", &format!("16:sha256={}", "ab".repeat(32))],
            &tcti,
        );
        let e = SoftStore::open(&dir, &unlock).expect_err("opens after PCR 16 changed");
        assert_eq!(e.kind(), ErrorKind::Auth, "{e:?}");
        assert!(e.to_string().contains("PCR"), "{e}");

        tpm2(&["tpm2_pcrreset", "16"], &tcti);
        drop(SoftStore::open(&dir, &unlock).expect("opens again once PCR 16 is back"));
        assert_eq!(kind(PcrBinding::sha256(&[24])), ErrorKind::InvalidInput);
        assert_eq!(kind(PcrBinding::sha256(&[])), ErrorKind::InvalidInput);
    }
}

//! The whole conformance suite on the TPM backend, against a fresh swtpm
//! per case (see `conformance_tests::fixtures::tpm`), and the TPM-specific
//! tests of issue 4: TPM reset, owner clear (crypto-erase), a soak of 2,000
//! mixed operations, the `tpm2_readpublic` interop check, and damage to the
//! metadata copy of a blob alone.

conformance_tests::suite!(conformance_tests::fixtures::tpm::TpmFixture);

mod tpm_specific {
    use backend_tpm::probe::Attempt;
    use backend_tpm::{rc_code, TpmBackend, TpmConfig};
    use conformance_tests::fixtures::tpm::TpmFixture;
    use conformance_tests::Fixture;
    use keystore_api::BackendKey;
    use keystore_api::Mac;
    use keystore_api::Signing;
    use keystore_api::{
        Actor, Algorithm, ErrorKind, KeySpec, Keystore, Role, SecretBytes, SignatureFormat, Usages,
    };
    use std::path::Path;
    use std::process::Command;

    fn so() -> Actor {
        Actor::new("tpm-test-officer", Role::SecurityOfficer).expect("actor")
    }

    /// A fresh fixture, or `None` when `KEYSTORE_TEST_SKIP` names `tpm` and
    /// swtpm is missing. Without the skip a missing swtpm fails the test.
    fn fixture() -> Option<TpmFixture> {
        match TpmFixture::setup() {
            Ok(fx) => Some(fx),
            Err(why) => {
                let skip = std::env::var("KEYSTORE_TEST_SKIP")
                    .map(|v| v.split(',').any(|b| b.trim() == "tpm"))
                    .unwrap_or(false);
                if skip {
                    eprintln!("SKIPPED (KEYSTORE_TEST_SKIP=tpm): {why}");
                    None
                } else {
                    panic!("the TPM tests need swtpm: {why}");
                }
            }
        }
    }

    fn hkdf(k: &[u8], salt: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(k), salt)
            .expand(info, &mut out)
            .expect("hkdf");
        out
    }

    fn verify(ks: &Keystore<TpmBackend>, name: &str, msg: &[u8], sig: &[u8]) {
        ks.public_key(name)
            .expect("public key")
            .verify(msg, sig)
            .unwrap_or_else(|e| panic!("{name}: signature does not verify: {e}"));
    }

    /// TPM reset: kill swtpm (as a power loss) and restart it on the same
    /// state. With the keystore still open, the next operation reconnects
    /// transparently; after a reopen too, every key works with the same
    /// public key.
    #[test]
    fn tpm_reset_keeps_keys_and_public_keys() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        let k = [0x42u8; 32];
        ks.create(&so(), "ec", KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("ec");
        ks.create(&so(), "rsa", KeySpec::new(Algorithm::Rsa2048PssSha256))
            .expect("rsa");
        ks.import(
            &so(),
            "mac",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&k),
        )
        .expect("import");
        // A key holds mac or derive, never both: the same K as a derive key.
        ks.import(
            &so(),
            "kdf",
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
            &SecretBytes::from_slice(&k),
        )
        .expect("import");
        let ec_pk = ks.public_key("ec").expect("pk");
        let rsa_pk = ks.public_key("rsa").expect("pk");
        let port = fx.swtpm_mut().port();

        // Reset under a live keystore.
        fx.swtpm_mut().restart().expect("restart swtpm");
        assert_eq!(fx.swtpm_mut().port(), port, "same port after restart");
        let sig = ks
            .sign("ec", b"after reset", SignatureFormat::Der)
            .expect("sign after reset");
        verify(&ks, "ec", b"after reset", &sig.bytes);
        let sig = ks
            .sign("rsa", b"after reset", SignatureFormat::Der)
            .expect("sign after reset");
        verify(&ks, "rsa", b"after reset", &sig.bytes);
        assert_eq!(
            ks.derive_hkdf_sha256("kdf", b"s", b"i", 32)
                .expect("derive")
                .expose(),
            &hkdf(&k, b"s", b"i", 32)[..]
        );

        // Reset with the keystore closed, then reopen.
        drop(ks);
        fx.swtpm_mut().restart().expect("restart swtpm");
        let ks = fx.open();
        assert_eq!(ks.public_key("ec").expect("pk"), ec_pk);
        assert_eq!(ks.public_key("rsa").expect("pk"), rsa_pk);
        let sig = ks
            .sign("ec", b"reopened", SignatureFormat::Fixed)
            .expect("sign");
        assert_eq!(sig.bytes.len(), 64);
        verify(&ks, "ec", b"reopened", &sig.bytes);
        let be = ks.backend();
        for name in ["ec", "rsa", "mac", "kdf"] {
            let h = ks.backend_handle(name, 1).expect("handle");
            assert_eq!(
                be.try_load(&h).expect("probe"),
                Attempt::Complied,
                "{name} loads"
            );
        }
        assert_eq!(ks.mac("mac", b"m").expect("mac"), {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&k).expect("key");
            m.update(b"m");
            <[u8; 32]>::from(m.finalize().into_bytes())
        });
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read dir").flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }

    /// Wipe and decommission: an owner clear (TPM2_Clear with the lockout
    /// auth) makes blobs saved before it unloadable, even with a restored
    /// copy of the registry (auth values) and of the metadata.
    #[test]
    fn owner_clear_makes_saved_blobs_unloadable() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        ks.create(&so(), "identity", KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create");
        ks.import(
            &so(),
            "session",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&[9; 32]),
        )
        .expect("import");
        let saved: Vec<_> = ["identity", "session"]
            .iter()
            .map(|n| ks.backend_handle(n, 1).expect("handle"))
            .collect();
        for h in &saved {
            assert_eq!(ks.backend().try_load(h).expect("probe"), Attempt::Complied);
        }
        drop(ks);
        // The copy an attacker (or a stale backup) keeps from before the wipe.
        let copy = fx.path().join("registry-copy");
        copy_dir(&fx.registry_dir(), &copy);
        let metadata_copy = fx.path().join("metadata-copy.sqlite");
        std::fs::copy(fx.metadata_path(), &metadata_copy).expect("copy metadata");

        let backend = fx.open_backend().expect("open");
        backend
            .decommission(&fx.lockout_auth())
            .expect("decommission (TPM2_Clear)");

        // After the clear the owner auth is empty again; restore the copy.
        copy_dir(&copy, &fx.registry_dir());
        let cleared = TpmConfig::new(fx.tcti());
        let backend = TpmBackend::open(cleared, &fx.path().join("tpm")).expect("reopen");
        for h in &saved {
            match backend.try_load(h).expect("probe") {
                Attempt::Refused(rc) => assert!(
                    rc.is(rc_code::INTEGRITY),
                    "an old blob is refused on integrity, got {rc}"
                ),
                Attempt::Complied => panic!("a blob from before the owner clear still loads"),
            }
        }
        let err = backend
            .hmac_sha256(
                &BackendKey::new(saved[1].clone(), Algorithm::HmacSha256),
                b"m",
            )
            .expect_err("a restored key works after the clear");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
        let err = backend
            .sign(
                &BackendKey::new(saved[0].clone(), Algorithm::EcdsaP256Sha256),
                b"m",
            )
            .expect_err("a restored key signs after the clear");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
        // The old owner auth no longer opens the TPM either.
        drop(backend);
        let err = fx.open_backend().expect_err("old owner auth after clear");
        assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
        let _ = metadata_copy;
    }

    /// 2,000 mixed operations on one keystore: every result verifies, and
    /// afterwards the TPM holds only the primary and the backend's cached
    /// keys, and no session. Any TPM_RC_OBJECT_MEMORY / SESSION_MEMORY would
    /// fail an operation and the test.
    #[test]
    fn soak_2000_mixed_operations() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        let k = [0x33u8; 32];
        ks.create(&so(), "ec", KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("ec");
        ks.create(&so(), "rsa", KeySpec::new(Algorithm::Rsa2048Pkcs1Sha256))
            .expect("rsa");
        ks.import(
            &so(),
            "mac",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&k),
        )
        .expect("import");
        // A key holds mac or derive, never both: the same K as a derive key.
        ks.import(
            &so(),
            "kdf",
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
            &SecretBytes::from_slice(&k),
        )
        .expect("import");
        ks.create(&so(), "gen-mac", KeySpec::new(Algorithm::HmacSha256))
            .expect("gen mac");
        let long = vec![0x5Au8; 5000];
        let mut counts = [0usize; 8];
        for i in 0..2000u32 {
            let msg = format!("soak {i}");
            let kind = (i % 8) as usize;
            counts[kind] += 1;
            match kind {
                0 | 1 => {
                    let sig = ks
                        .sign("ec", msg.as_bytes(), SignatureFormat::Der)
                        .expect("sign ec");
                    verify(&ks, "ec", msg.as_bytes(), &sig.bytes);
                }
                2 => {
                    let sig = ks
                        .sign("rsa", msg.as_bytes(), SignatureFormat::Der)
                        .expect("sign rsa");
                    verify(&ks, "rsa", msg.as_bytes(), &sig.bytes);
                }
                3 => {
                    let out = ks
                        .derive_hkdf_sha256("kdf", msg.as_bytes(), b"i", 32)
                        .expect("derive");
                    assert_eq!(out.expose(), &hkdf(&k, msg.as_bytes(), b"i", 32)[..]);
                }
                4 => {
                    // An HMAC sequence (a fourth object beside primary + 2 keys).
                    let tag = ks.mac("mac", &long).expect("long mac");
                    ks.verify_mac("mac", &long, &tag).expect("verify long mac");
                }
                5 => {
                    ks.mac("gen-mac", msg.as_bytes()).expect("mac");
                }
                6 => {
                    // Create and destroy: loads, evictions, registry churn.
                    let name = format!("tmp-{i}");
                    ks.create(&so(), &name, KeySpec::new(Algorithm::HmacSha256))
                        .expect("create tmp");
                    ks.mac(&name, b"x").expect("mac tmp");
                    ks.destroy(&so(), &name).expect("destroy tmp");
                }
                _ => {
                    // Policy sessions (duplication probe) must be flushed too.
                    if i % 80 == 7 {
                        let h = ks.backend_handle("ec", 1).expect("handle");
                        assert!(matches!(
                            ks.backend().try_duplicate(&h).expect("probe"),
                            Attempt::Refused(_)
                        ));
                    } else {
                        ks.sign("ec", b"x", SignatureFormat::Fixed).expect("sign");
                    }
                }
            }
        }
        assert_eq!(counts.iter().sum::<usize>(), 2000);
        let (objects, sessions) = ks.backend().loaded_handles().expect("handles");
        assert!(sessions.is_empty(), "sessions leaked: {sessions:x?}");
        assert_eq!(
            objects.len(),
            1 + ks.backend().cached_keys(),
            "loaded objects are the primary and the cached keys: {objects:x?}"
        );
        assert!(
            objects.len() <= 3,
            "more objects than swtpm's 3 slots: {objects:x?}"
        );
        // Restart: dropping the keystore leaves the TPM empty.
        drop(ks);
        let be = fx.open_backend().expect("reopen");
        let (objects, sessions) = be.loaded_handles().expect("handles");
        assert_eq!(objects.len(), 1, "only the new primary: {objects:x?}");
        assert!(sessions.is_empty());
    }

    fn tool(name: &str) -> Command {
        Command::new(name)
    }

    fn run(cmd: &mut Command, tcti: &str) -> String {
        run_with_stdin(cmd, tcti, &[])
    }

    fn run_with_stdin(cmd: &mut Command, tcti: &str, input: &[u8]) -> String {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = cmd
            .env("TPM2TOOLS_TCTI", tcti)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {cmd:?} ({e}); install tpm2-tools: apt-get install tpm2-tools")
            });
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Interop: tpm2-tools re-creates our storage primary from the same
    /// template, loads one of our stored blobs (the handle's TPM2B_PUBLIC and
    /// TPM2B_PRIVATE, as tpm2-tools files) and `tpm2_readpublic` shows
    /// fixedtpm|fixedparent|sensitivedataorigin.
    #[test]
    fn tpm2_readpublic_shows_fixed_attributes() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        ks.create(&so(), "device-id", KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create");
        let handle = ks.backend_handle("device-id", 1).expect("handle");
        let primary_name = hex::encode(ks.backend().storage_primary_name().expect("name"));
        // swtpm serves one connection: close ours before tpm2-tools connects.
        drop(ks);
        let dir = fx.path().join("tpm2-tools");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let layout = backend_tpm::handle_layout(handle.as_bytes()).expect("layout");
        std::fs::write(dir.join("key.pub"), &handle.as_bytes()[layout.public]).expect("write");
        std::fs::write(dir.join("key.priv"), &handle.as_bytes()[layout.private]).expect("write");
        // The unique field: 64 bytes on stdin, which tpm2-tools splits into x and y.
        let unique = backend_tpm::primary_unique();
        let tcti = fx.tcti();
        let owner = format!("hex:{}", hex::encode(fx.owner_auth()));
        let out = run_with_stdin(
            tool("tpm2_createprimary")
                .args([
                    "-C",
                    "o",
                    "-P",
                    &owner,
                    "-g",
                    "sha256",
                    "-G",
                    "ecc256:aes128cfb",
                ])
                .args([
                    "-a",
                    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
                ])
                .args(["-u", "-"])
                .arg("-c")
                .arg(dir.join("primary.ctx")),
            &tcti,
            &unique,
        );
        assert!(out.contains("noda|restricted|decrypt"), "{out}");
        // Without a resource manager tpm2-tools leave their objects loaded
        // (swtpm has 3 slots): flush them between tools.
        let flush = || run(tool("tpm2_flushcontext").arg("-t"), &tcti);
        flush();
        let out = run(
            tool("tpm2_readpublic")
                .arg("-c")
                .arg(dir.join("primary.ctx")),
            &tcti,
        );
        assert!(
            out.contains(&format!("name: {primary_name}")),
            "tpm2-tools re-created a different primary (want name {primary_name}):\n{out}"
        );
        flush();
        run(
            tool("tpm2_load")
                .arg("-C")
                .arg(dir.join("primary.ctx"))
                .arg("-u")
                .arg(dir.join("key.pub"))
                .arg("-r")
                .arg(dir.join("key.priv"))
                .arg("-c")
                .arg(dir.join("key.ctx")),
            &tcti,
        );
        flush();
        let out = run(
            tool("tpm2_readpublic").arg("-c").arg(dir.join("key.ctx")),
            &tcti,
        );
        let attrs = out
            .lines()
            .skip_while(|l| !l.starts_with("attributes:"))
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(
            attrs.contains("fixedtpm|fixedparent|sensitivedataorigin"),
            "tpm2_readpublic attributes: {attrs}\n{out}"
        );
        assert!(attrs.contains("sign"), "{attrs}");
        assert!(!attrs.contains("decrypt"), "{attrs}");
        flush();
        // tpm2-tools flushed its objects: the keystore opens again.
        let ks = fx.open();
        ks.sign("device-id", b"still mine", SignatureFormat::Der)
            .expect("sign after interop");
    }

    /// Damage to the metadata copy of a blob alone: the keystore's
    /// reconciliation at open no longer finds the handle in the backend's
    /// listing and marks the version compromised (KeyState, audited); the
    /// TPM backend, given the damaged handle directly, reports Integrity.
    #[test]
    fn metadata_only_damage_is_caught() {
        let Some(mut fx) = fixture() else { return };
        let ks = fx.open();
        ks.import(
            &so(),
            "victim",
            KeySpec::new(Algorithm::HmacSha256),
            &SecretBytes::from_slice(&[0x11; 32]),
        )
        .expect("import");
        ks.create(&so(), "bystander", KeySpec::new(Algorithm::EcdsaP256Sha256))
            .expect("create");
        let old = ks.backend_handle("victim", 1).expect("handle");
        let mut bad = old.as_bytes().to_vec();
        let layout = backend_tpm::handle_layout(&bad).expect("layout");
        let mid = layout.private.start + 2 + (layout.private.len() - 2) / 2;
        bad[mid] ^= 0x01;
        let bad = keystore_api::KeyHandle::new(bad);
        let err = ks
            .backend()
            .hmac_sha256(&BackendKey::new(bad.clone(), Algorithm::HmacSha256), b"m")
            .expect_err("damaged blob works");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
        assert!(err.to_string().contains("TPM_RC_INTEGRITY"), "{err}");
        conformance_tests::fixtures::tpm::rewrite_handle(
            &fx.metadata_path(),
            old.as_bytes(),
            bad.as_bytes(),
        );
        let ks = fx.restart(ks);
        assert_eq!(
            ks.reconcile_report().missing,
            vec![("victim".to_string(), 1)]
        );
        let err = ks.mac("victim", b"m").expect_err("damaged key works");
        assert_eq!(err.kind(), ErrorKind::KeyState, "{err:?}");
        let sig = ks
            .sign("bystander", b"m", SignatureFormat::Der)
            .expect("bystander");
        verify(&ks, "bystander", b"m", &sig.bytes);
    }
}

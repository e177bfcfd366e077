//! Interoperability with real tools on the same SoftHSM2 token:
//! - OpenSC's `pkcs11-tool --list-objects` lists our keys by their labels
//!   (the key names) and shows them sensitive and never extractable;
//! - `pkcs11-tool` cannot read their private or secret values;
//! - `openssl` verifies signatures made by the backend against the public
//!   key exported as PEM;
//! - after destroy and wipe, `pkcs11-tool` finds none of our objects.
//!
//! A missing tool fails with an install hint, unless `KEYSTORE_TEST_SKIP`
//! names `pkcs11`.

use backend_pkcs11::testing::{skip_requested, softhsm_or_skip, TestToken};
use backend_pkcs11::Pkcs11Backend;
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SecretBytes, SignatureFormat};
use std::path::Path;
use std::process::{Command, Output};

/// True if `tool` runs; else fails with an install hint (or reports SKIPPED
/// when `KEYSTORE_TEST_SKIP` names pkcs11).
fn have(tool: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .map(|_| true)
        .unwrap_or(false);
    if !ok {
        let why = format!("`{tool}` is missing: install it with `sudo apt-get install {package}`");
        if skip_requested() {
            eprintln!("SKIPPED: {why}");
            return false;
        }
        panic!("{why} (set KEYSTORE_TEST_SKIP=pkcs11 to skip knowingly; CI never does)");
    }
    true
}

fn so() -> Actor {
    Actor::new("interop-so", Role::SecurityOfficer).expect("actor")
}

struct Env {
    token: TestToken,
    dir: tempfile::TempDir,
}

impl Env {
    /// `None` when SoftHSM2 is missing and `KEYSTORE_TEST_SKIP` names pkcs11.
    fn new(prefix: &str) -> Option<Env> {
        let token = softhsm_or_skip()?.new_token(prefix).expect("token");
        Some(Env {
            token,
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    fn keystore(&self) -> Keystore<Pkcs11Backend> {
        Keystore::open(
            self.token.open().expect("backend"),
            &self.dir.path().join("metadata.sqlite"),
        )
        .expect("keystore")
    }

    /// Runs `pkcs11-tool` on this token, logged in as the user.
    fn pkcs11_tool(&self, args: &[&str]) -> Output {
        Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&self.token.module)
            .args(["--token-label", &self.token.label])
            .args(["--login", "--pin", &self.token.user_pin])
            .args(args)
            .output()
            .expect("run pkcs11-tool")
    }

    fn list_objects(&self) -> String {
        let out = self.pkcs11_tool(&["--list-objects"]);
        assert!(
            out.status.success(),
            "pkcs11-tool --list-objects: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The `pkcs11-tool --list-objects` block of the object labelled `label`
/// whose heading starts with `heading` (e.g. "Private Key Object"). A block
/// starts at an unindented line.
fn block(listing: &str, heading: &str, label: &str) -> Option<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in listing.lines() {
        if !line.is_empty() && !line.starts_with(char::is_whitespace) {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks.into_iter().find(|b| {
        b.starts_with(heading)
            && b.lines().any(|l| {
                l.trim_start()
                    .strip_prefix("label:")
                    .is_some_and(|v| v.trim() == label)
            })
    })
}

#[test]
fn pkcs11_tool_lists_our_keys_and_cannot_read_their_values() {
    if !have("pkcs11-tool", "opensc") {
        return;
    }
    let Some(env) = Env::new("interop") else {
        return;
    };
    let ks = env.keystore();
    ks.create(
        &so(),
        "interop-ec",
        KeySpec::new(Algorithm::EcdsaP256Sha256),
    )
    .expect("ec");
    ks.create(
        &so(),
        "interop-rsa",
        KeySpec::new(Algorithm::Rsa2048Pkcs1Sha256),
    )
    .expect("rsa");
    ks.create(&so(), "interop-aes", KeySpec::new(Algorithm::Aes256Gcm))
        .expect("aes");
    ks.import(
        &so(),
        "interop-mac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&[0x42; 32]),
    )
    .expect("import");
    let listing = env.list_objects();
    if std::env::var_os("INTEROP_SHOW").is_some() {
        eprintln!("{listing}");
    }
    for (heading, label, generated) in [
        ("Private Key Object", "interop-ec", true),
        ("Private Key Object", "interop-rsa", true),
        ("Secret Key Object", "interop-aes", true),
        ("Secret Key Object", "interop-mac", false),
    ] {
        let b = block(&listing, heading, label)
            .unwrap_or_else(|| panic!("{heading} '{label}' not listed:\n{listing}"));
        let access = b
            .lines()
            .find(|l| l.trim_start().starts_with("Access:"))
            .unwrap_or_else(|| panic!("no Access line for {label}:\n{b}"));
        assert!(access.contains("sensitive"), "{label}: {access}");
        assert!(
            !access
                .replace("never extractable", "")
                .contains("extractable"),
            "{label} is extractable: {access}"
        );
        if generated {
            assert!(access.contains("never extractable"), "{label}: {access}");
            assert!(access.contains("local"), "{label}: {access}");
        }
        let usage = b
            .lines()
            .find(|l| l.trim_start().starts_with("Usage:"))
            .unwrap_or("");
        for forbidden in ["wrap", "unwrap", "derive"] {
            assert!(
                !usage.split([',', ' ']).any(|u| u == forbidden),
                "{label} allows {forbidden}: {usage}"
            );
        }
    }
    // Public keys are listed too, with the same labels.
    assert!(block(&listing, "Public Key Object", "interop-ec").is_some());

    // Reading the values fails.
    for (label, ty) in [
        ("interop-aes", "secrkey"),
        ("interop-mac", "secrkey"),
        ("interop-ec", "privkey"),
        ("interop-rsa", "privkey"),
    ] {
        let out_file = env.dir.path().join(format!("{label}.out"));
        let out = env.pkcs11_tool(&[
            "--read-object",
            "--type",
            ty,
            "--label",
            label,
            "--output-file",
            out_file.to_str().expect("utf-8 path"),
        ]);
        let read = std::fs::read(&out_file).unwrap_or_default();
        assert!(
            read.is_empty(),
            "pkcs11-tool read {} bytes of {label}: {}",
            read.len(),
            String::from_utf8_lossy(&out.stderr)
        );
        if ty == "secrkey" {
            assert!(!out.status.success(), "reading {label} succeeded");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("CKR_ATTRIBUTE_SENSITIVE"),
                "{label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The keys still work after the tool's attempts.
    ks.sign("interop-ec", b"m", SignatureFormat::Der)
        .expect("sign");
    ks.mac("interop-mac", b"m").expect("mac");
}

fn openssl_verify(dir: &Path, pem: &str, msg: &[u8], sig: &[u8], extra: &[&str]) -> Output {
    let (p, m, s) = (
        dir.join("pub.pem"),
        dir.join("msg.bin"),
        dir.join("sig.bin"),
    );
    std::fs::write(&p, pem).expect("write pem");
    std::fs::write(&m, msg).expect("write msg");
    std::fs::write(&s, sig).expect("write sig");
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&p)
        .args(extra)
        .arg("-signature")
        .arg(&s)
        .arg(&m)
        .output()
        .expect("run openssl")
}

#[test]
fn openssl_verifies_backend_signatures_against_the_exported_pem() {
    if !have("openssl", "openssl") {
        return;
    }
    let Some(env) = Env::new("openssl") else {
        return;
    };
    let ks = env.keystore();
    let msg = b"firmware 1.2.3 for gateway 42";
    for (name, alg, extra) in [
        ("ossl-ec", Algorithm::EcdsaP256Sha256, &[][..]),
        ("ossl-pkcs1", Algorithm::Rsa2048Pkcs1Sha256, &[][..]),
        (
            "ossl-pss",
            Algorithm::Rsa3072PssSha256,
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
                "-sigopt",
                "rsa_mgf1_md:sha256",
            ][..],
        ),
    ] {
        ks.create(&so(), name, KeySpec::new(alg)).expect("create");
        let pem = ks.public_key(name).expect("public key").to_pem();
        let sig = ks
            .sign(name, msg, SignatureFormat::Der)
            .expect("sign")
            .bytes;
        let out = openssl_verify(env.dir.path(), &pem, msg, &sig, extra);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
            "{alg}: openssl says {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And rejects a signature over another message.
        let out = openssl_verify(env.dir.path(), &pem, b"other", &sig, extra);
        assert!(
            !out.status.success(),
            "{alg}: openssl verified a wrong message"
        );
    }
}

#[test]
fn after_destroy_and_wipe_the_token_holds_none_of_our_objects() {
    if !have("pkcs11-tool", "opensc") {
        return;
    }
    let Some(env) = Env::new("gone") else { return };
    let ks = env.keystore();
    let names = ["gone-ec", "gone-rsa", "gone-aes", "gone-mac"];
    for (name, alg) in names.iter().zip([
        Algorithm::EcdsaP256Sha256,
        Algorithm::Rsa2048PssSha256,
        Algorithm::Aes256Gcm,
        Algorithm::HmacSha256,
    ]) {
        ks.create(&so(), name, KeySpec::new(alg)).expect("create");
    }
    let handles: Vec<_> = names
        .iter()
        .map(|n| ks.backend_handle(n, 1).expect("handle"))
        .collect();
    let listing = env.list_objects();
    for n in names {
        assert!(listing.contains(n), "{n} not listed before");
    }
    ks.destroy(&so(), "gone-ec").expect("destroy");
    let listing = env.list_objects();
    assert!(
        !listing.contains("gone-ec"),
        "destroyed key still listed:\n{listing}"
    );
    ks.decommission(&so())
        .expect("decommission wipes the backend");
    let listing = env.list_objects();
    for n in names {
        assert!(
            !listing.contains(n),
            "{n} still listed after wipe:\n{listing}"
        );
    }
    for h in &handles {
        for f in env.token.files() {
            let bytes = std::fs::read(&f).expect("read");
            assert!(
                !bytes.windows(h.as_bytes().len()).any(|w| w == h.as_bytes()),
                "{} still holds {h:?}",
                f.display()
            );
        }
    }
    assert!(env.token.object_files().is_empty(), "object files remain");
}

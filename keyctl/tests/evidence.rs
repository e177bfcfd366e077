//! `keyctl evidence --out DIR` with a real keyctl process: every part of
//! the pack is there with private modes, `sha256sum -c` accepts the
//! manifest, OpenSSL verifies its signature with the audit signing key the
//! auditor recorded beforehand, the trail verifies offline, and an edited
//! file is caught.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use test_support::keyctl::{assert_fails, assert_ok, s, text, Credential, KeyFileStore, Keyctl};

const SO_SECRET: &str = "officer credential for tests";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn evidence_pack_is_complete_signed_and_checkable_off_the_device() {
    let st = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "store",
        "store.key",
        Credential::officer(SO_SECRET),
    );
    let trust = st.path("recorded-audit-keys.pem");
    st.ok(&["audit", "pubkeys", "--out", s(&trust)]);
    st.ok(&["key", "create", "gw-sign", "--alg", "ecdsa-p256-sha256"]);
    st.ok(&["key", "create", "gw-data", "--alg", "aes-256-gcm"]);
    let pack = st.path("pack");
    let said = assert_ok(&st.ok(&["evidence", "--out", s(&pack)]));
    assert!(said.contains("evidence pack written"), "{said}");

    let files = [
        "README.md",
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "SHA256SUMS.signer.pem",
        "conformance/traceability.md",
        "conformance/matrix.json",
        "audit/trail.jsonl",
        "audit/pubkeys.pem",
        "audit/verification.txt",
        "inventory/cbom.cdx.json",
        "policy/key-management-policy.md",
    ];
    for f in files {
        assert!(pack.join(f).is_file(), "{f} missing from the pack");
    }
    assert_eq!(mode(&pack), 0o700);
    for f in ["audit/trail.jsonl", "inventory/cbom.cdx.json", "SHA256SUMS"] {
        assert_eq!(mode(&pack.join(f)), 0o600, "{f}");
    }
    let traceability = std::fs::read_to_string(pack.join("conformance/traceability.md")).unwrap();
    assert!(traceability.contains("TEST-KEY-72") && traceability.contains("REQ-KEY-AUD-01"));
    let cbom = std::fs::read_to_string(pack.join("inventory/cbom.cdx.json")).unwrap();
    assert!(cbom.contains("\"specVersion\": \"1.6\"") || cbom.contains("\"specVersion\":\"1.6\""));
    assert!(cbom.contains("gw-sign") && cbom.contains("gw-data"));
    let policy = std::fs::read_to_string(pack.join("policy/key-management-policy.md")).unwrap();
    assert!(policy.contains("gw-sign"), "{policy}");
    let verification = std::fs::read_to_string(pack.join("audit/verification.txt")).unwrap();
    assert!(
        verification.contains("On the device (chain, MACs, head): intact")
            && verification.contains("verified offline"),
        "{verification}"
    );
    assert!(
        verification.contains("NONE"),
        "soft stores claim no rollback protection"
    );
    assert!(!pack.join("provisioning").exists(), "not a factory store");

    // The manifest lists every file and sha256sum accepts it.
    let sums = std::fs::read_to_string(pack.join("SHA256SUMS")).unwrap();
    for f in files
        .iter()
        .filter(|f| !f.starts_with("SHA256SUMS") && **f != "README.md")
    {
        assert!(
            sums.contains(&format!("  {f}\n")),
            "{f} not in SHA256SUMS:\n{sums}"
        );
    }
    let check = |dir: &Path| {
        Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(dir)
            .output()
            .expect("sha256sum")
    };
    let out = check(&pack);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // OpenSSL verifies the signature with the key recorded beforehand.
    let signed = st.path("signed");
    let mut bytes = b"keystore-evidence-manifest-v1\n".to_vec();
    bytes.extend_from_slice(sums.as_bytes());
    std::fs::write(&signed, &bytes).unwrap();
    let openssl = |key: &Path, msg: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify", s(key), "-signature"])
            .arg(pack.join("SHA256SUMS.sig"))
            .arg(msg)
            .output()
            .expect("openssl")
    };
    let out = openssl(&trust, &signed);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The trail verifies offline with the recorded key.
    let out = Keyctl::new(env!("CARGO_BIN_EXE_keyctl"))
        .command()
        .args(["audit", "verify", "--offline"])
        .arg(pack.join("audit/trail.jsonl"))
        .args(["--trust", s(&trust)])
        .output()
        .expect("keyctl");
    assert_ok(&out);
    // The signature was recorded in the trail.
    let trail = assert_ok(&st.ok(&["audit", "export"]));
    assert!(trail.contains("\"event\":\"evidence\""), "{trail}");

    // An edited file is caught by the manifest; an edited manifest by the signature.
    let cbom_path = pack.join("inventory/cbom.cdx.json");
    std::fs::write(&cbom_path, cbom.replace("gw-data", "gw-xxxx")).unwrap();
    assert!(
        !check(&pack).status.success(),
        "an edited CBOM passes sha256sum -c"
    );
    let forged = st.path("forged");
    let mut bytes = b"keystore-evidence-manifest-v1\n".to_vec();
    bytes.extend_from_slice(sums.replacen('0', "1", 1).as_bytes());
    std::fs::write(&forged, &bytes).unwrap();
    assert!(
        !openssl(&trust, &forged).status.success(),
        "an edited manifest verifies"
    );

    // A pack never overwrites another.
    assert_fails(&st.run(&["evidence", "--out", s(&pack)]), 2, "InvalidInput");
}

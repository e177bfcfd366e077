//! `keyctl evidence --out DIR` on a factory store, with real keyctl
//! processes: the pack carries the verified provisioning event log and a
//! byte-exact copy of every device's record and certificate, all listed in
//! the signed `SHA256SUMS`; OpenSSL verifies the copied certificates and the
//! manifest's signature with the audit key recorded beforehand, and an
//! edited record is caught by `sha256sum -c`.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use test_support::keyctl::{all_text, assert_ok, s, Credential, KeyFileStore, Keyctl};

const SO: Credential = Credential::officer("officer credential for tests").by("officer-1");
const OP: Credential = Credential::operator("operator credential for tests").by("station-3");
const ROOT_SECRET: &str = "root custodian credential for tests";
const DEVICES: [&str; 2] = ["DEV-A-0001", "DEV-B-0002"];

/// A production store with an operator, an intermediate signed by a new
/// offline root, and the `DEVICES` provisioned by the operator.
fn factory() -> KeyFileStore {
    let st = KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "production",
        "production.key",
        SO,
    );
    st.set_role(OP);
    let (root, root_key) = (st.path("root-ca"), st.path("root.key"));
    let o = st
        .keyctl
        .command()
        .args(["ca", "init-root", "--root-store", s(&root)])
        .args(["--new-root-key-file", s(&root_key), "--cn", "Test Root CA"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&o);
    let o = st
        .so()
        .args(["ca", "sign-intermediate", "--root-store", s(&root)])
        .args(["--root-key-file", s(&root_key)])
        .args(["--cn", "Test Production CA"])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&o);
    for id in DEVICES {
        let o = st
            .with(OP)
            .args(["provision", "--device-id", id, "--operator", "line-3"])
            .output()
            .unwrap();
        let said = assert_ok(&o);
        assert!(said.contains(&format!("provisioned '{id}'")), "{said}");
    }
    st
}

fn sha256sum_check(pack: &Path) -> Output {
    Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(pack)
        .output()
        .expect("run sha256sum")
}

#[test]
fn evidence_pack_of_a_factory_store_carries_the_provisioning_records() {
    let st = factory();
    let trust = st.path("trust.pem");
    st.ok(&["audit", "pubkeys", "--out", s(&trust)]);
    let pack = st.path("pack");
    let said = assert_ok(&st.ok(&["evidence", "--out", s(&pack)]));
    assert!(said.contains("evidence pack written"), "{said}");

    // The event log, verified: one provision event per device, then the verdict.
    let log =
        std::fs::read_to_string(pack.join("provisioning/event-log-verification.txt")).unwrap();
    assert!(log.contains("provisioning event log intact"), "{log}");
    assert_eq!(
        log.matches(" provision by ").count(),
        DEVICES.len(),
        "{log}"
    );
    for id in DEVICES {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" provision by station-3 (operator)"))
            .filter(|l| l.contains(&format!(" device={id} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{id}:\n{log}");
    }

    // Every record and certificate, copied byte for byte and in the manifest.
    let sums = std::fs::read_to_string(pack.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains("  provisioning/event-log-verification.txt\n"),
        "{sums}"
    );
    let pki = st.store.join("pki");
    for id in DEVICES {
        for file in ["record.yaml", "cert.pem"] {
            let name = format!("provisioning/records/{id}/{file}");
            let copied = std::fs::read(pack.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let original = std::fs::read(st.store.join("provisioned").join(id).join(file)).unwrap();
            assert_eq!(copied, original, "{name} differs from the store's");
            assert!(
                sums.contains(&format!("  {name}\n")),
                "{name} not in:\n{sums}"
            );
        }
        let record =
            std::fs::read_to_string(pack.join(format!("provisioning/records/{id}/record.yaml")))
                .unwrap();
        assert!(record.contains(&format!("device_id: {id}")), "{record}");
        let o = Command::new("openssl")
            .args(["verify", "-CAfile", s(&pki.join("root.pem")), "-untrusted"])
            .arg(pki.join("intermediate.pem"))
            .arg(pack.join(format!("provisioning/records/{id}/cert.pem")))
            .output()
            .expect("run openssl");
        assert!(
            o.status.success() && all_text(&o).contains(": OK"),
            "{id}: {}",
            all_text(&o)
        );
    }
    // Control: without the intermediate, OpenSSL cannot build the chain.
    let o = Command::new("openssl")
        .args(["verify", "-CAfile", s(&pki.join("root.pem"))])
        .arg(pack.join(format!("provisioning/records/{}/cert.pem", DEVICES[0])))
        .output()
        .expect("run openssl");
    assert!(!o.status.success(), "verified without the intermediate");

    let o = sha256sum_check(&pack);
    assert!(o.status.success(), "{}", all_text(&o));

    // The manifest's signature, with the audit key recorded beforehand.
    let signed = st.path("signed-manifest");
    let mut bytes = b"keystore-evidence-manifest-v1\n".to_vec();
    bytes.extend_from_slice(sums.as_bytes());
    std::fs::write(&signed, &bytes).unwrap();
    let verify = |msg: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify", s(&trust), "-signature"])
            .arg(pack.join("SHA256SUMS.sig"))
            .arg(msg)
            .output()
            .expect("run openssl")
    };
    let o = verify(&signed);
    assert!(o.status.success(), "{}", all_text(&o));
    // Control: a manifest without a device's lines does not verify.
    let dropped: String = sums
        .lines()
        .filter(|l| !l.contains(DEVICES[0]))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(dropped, sums);
    let forged = st.path("forged-manifest");
    std::fs::write(&forged, format!("keystore-evidence-manifest-v1\n{dropped}")).unwrap();
    assert!(
        !verify(&forged).status.success(),
        "a shortened manifest verifies"
    );

    // The CBOM lists certificates.
    let bom: Value =
        serde_json::from_slice(&std::fs::read(pack.join("inventory/cbom.cdx.json")).unwrap())
            .expect("CBOM is JSON");
    let components = bom["components"].as_array().expect("components");
    assert!(
        components
            .iter()
            .any(|c| c["cryptoProperties"]["assetType"] == "certificate"),
        "no certificate component in\n{bom:#}"
    );

    // An edited record is caught by the manifest.
    let name = format!("provisioning/records/{}/record.yaml", DEVICES[1]);
    let record = std::fs::read_to_string(pack.join(&name)).unwrap();
    let edited = record.replace("operator: line-3", "operator: line-9");
    assert_ne!(edited, record, "nothing to edit in\n{record}");
    std::fs::write(pack.join(&name), edited).unwrap();
    let o = sha256sum_check(&pack);
    assert!(!o.status.success(), "an edited record passes sha256sum -c");
    assert!(
        all_text(&o).contains(&format!("{name}: FAILED")),
        "{}",
        all_text(&o)
    );
}

//! `keyctl inventory --format cyclonedx`: real `keyctl` processes on soft
//! stores in temporary directories; the CBOM's content is checked here, and
//! its form by the official CycloneDX 1.6 JSON schema, through
//! cyclonedx-python-lib's strict validator in a venv
//! (`test_support::python::venv`, from PyPI, never skipped). A broken copy
//! must be rejected by the same validator, so the validation can fail.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use test_support::keyctl::{
    assert_fails_last_line, assert_ok, s, Credential, KeyFileStore, Keyctl,
};
use test_support::python::{run_or_fail, INSTALL_HINT};

/// cyclonedx-python-lib with its JSON-validation extra (jsonschema and
/// friends): 11.x bundles the 1.6 schemas and has `SchemaVersion.V1_6`.
const CYCLONEDX_PYTHON_LIB: &str = "cyclonedx-python-lib[json-validation]==11.12.0";

const SO: Credential = Credential::officer("officer credential for tests").by("officer-1");
const AUDITOR: Credential = Credential {
    role: "auditor",
    secret: "auditor credential for tests",
    actor: Some("auditor-1"),
};
const OP: Credential = Credential::operator("operator credential for tests").by("op-1");
const ROOT_SECRET: &str = "root custodian credential for tests";

/// The validator: prints `VALID`, or `INVALID` and the first errors.
const VALIDATE: &str = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
text = open(sys.argv[1], encoding="utf-8").read()
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
if errors is None:
    print("VALID")
else:
    print("INVALID")
    for e in list(errors)[:10]:
        print(e)
"#;

fn keyctl() -> Keyctl {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl"))
}

fn python() -> PathBuf {
    test_support::python::venv(
        "cyclonedx",
        &[CYCLONEDX_PYTHON_LIB],
        "from cyclonedx.schema import SchemaVersion\n\
         from cyclonedx.validation.json import JsonStrictValidator\n\
         JsonStrictValidator(SchemaVersion.V1_6)\n",
    )
}

/// The validator's verdict on the JSON in `path`: `Ok` or the errors.
fn validate(python: &Path, path: &Path) -> Result<(), String> {
    let script = path.with_extension("validate.py");
    std::fs::write(&script, VALIDATE).unwrap();
    let run = run_or_fail(
        Command::new(python).arg(&script).arg(path),
        Duration::from_secs(120),
        "cyclonedx validation",
        INSTALL_HINT,
    );
    assert!(run.status.success(), "validator crashed\n{}", run.report());
    match run.stdout.lines().next() {
        Some("VALID") => Ok(()),
        Some("INVALID") => Err(run.stdout),
        _ => panic!("unexpected validator output\n{}", run.report()),
    }
}

/// Validates `bom` (must pass), then broken copies (must each fail).
fn assert_valid_and_breakable(python: &Path, dir: &Path, bom: &Value) {
    let good = dir.join("bom.json");
    std::fs::write(&good, serde_json::to_vec_pretty(bom).unwrap()).unwrap();
    if let Err(errors) = validate(python, &good) {
        panic!("keyctl's CBOM is not valid CycloneDX 1.6:\n{errors}");
    }
    let mut unknown_state = bom.clone();
    let rcm = unknown_state["components"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["cryptoProperties"]["assetType"] == "related-crypto-material")
        .expect("a key component");
    rcm["cryptoProperties"]["relatedCryptoMaterialProperties"]["state"] = "retired".into();
    let mut no_format = bom.clone();
    no_format.as_object_mut().unwrap().remove("bomFormat");
    let mut extra_field = bom.clone();
    extra_field["metadata"]["inventoryOf"] = "not in the schema".into();
    for (name, broken) in [
        ("unknown-state", unknown_state),
        ("no-bom-format", no_format),
        ("extra-field", extra_field),
    ] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
        let verdict = validate(python, &path);
        assert!(verdict.is_err(), "the validator accepted the {name} copy");
    }
}

fn components(bom: &Value) -> &Vec<Value> {
    bom["components"].as_array().expect("components")
}

fn by_ref<'a>(bom: &'a Value, r: &str) -> &'a Value {
    components(bom)
        .iter()
        .find(|c| c["bom-ref"] == r)
        .unwrap_or_else(|| panic!("no component '{r}' in\n{bom:#}"))
}

fn rcm(c: &Value) -> &Value {
    &c["cryptoProperties"]["relatedCryptoMaterialProperties"]
}

fn property<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
}

/// `keyctl inventory` as `cred` into `out`; the parsed JSON.
fn inventory(st: &KeyFileStore, cred: Credential, out: &Path) -> Value {
    let o = st
        .with(cred)
        .args(["inventory", "--format", "cyclonedx", "--out", s(out)])
        .output()
        .unwrap();
    assert_ok(&o);
    serde_json::from_slice(&std::fs::read(out).unwrap()).expect("JSON")
}

#[test]
fn a_store_with_many_algorithms_is_a_valid_cyclonedx_1_6_cbom() {
    // The venv first: it takes the longest on a first run.
    let python = python();
    let st = KeyFileStore::create(keyctl(), "store", "store.key", SO);
    st.set_role(AUDITOR);
    st.set_role(OP);
    st.ok(&[
        "key",
        "create",
        "sig",
        "--alg",
        "ecdsa-p256-sha256",
        "--cryptoperiod",
        "90d",
    ]);
    st.ok(&["key", "create", "ed", "--alg", "ed25519"]);
    st.ok(&[
        "key",
        "create",
        "data",
        "--alg",
        "aes-256-gcm",
        "--encryption-limit",
        "1000",
    ]);
    st.ok(&["key", "create", "mac", "--alg", "hmac-sha256"]);
    st.ok(&["key", "create", "pq", "--alg", "ml-dsa-65"]);
    // A rotated key with two versions, the old one in its grace period.
    st.ok(&["key", "rotate", "sig", "--grace", "7d"]);
    // A destroyed version: rotated with no grace, then swept.
    st.ok(&["key", "rotate", "data", "--grace", "0s"]);
    std::thread::sleep(Duration::from_millis(1100));
    st.ok(&["sweep"]);
    // A compromised version.
    st.ok(&["key", "rotate", "ed", "--grace", "1d"]);
    st.ok(&["key", "revoke", "ed", "--version", "1", "--reason", "test"]);

    // The operator may not take the inventory (audited refusal, exit 7).
    let out = st
        .with(OP)
        .args(["inventory", "--format", "cyclonedx"])
        .output()
        .unwrap();
    assert_fails_last_line(&out, 7, "Policy");

    let path = st.path("cbom.json");
    let bom = inventory(&st, AUDITOR, &path);
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [SO.secret, AUDITOR.secret, OP.secret] {
        assert!(!text.contains(secret), "a credential in the CBOM");
    }
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    let store = &bom["metadata"]["component"];
    assert_eq!(property(store, "keystore:backend"), Some("soft"));

    let expect = [
        ("sig", 1, "deactivated", "ecdsa-p256-sha256", "private-key"),
        ("sig", 2, "active", "ecdsa-p256-sha256", "private-key"),
        ("ed", 1, "compromised", "ed25519", "private-key"),
        ("ed", 2, "active", "ed25519", "private-key"),
        ("data", 1, "destroyed", "aes-256-gcm", "secret-key"),
        ("data", 2, "active", "aes-256-gcm", "secret-key"),
        ("mac", 1, "active", "hmac-sha256", "secret-key"),
        ("pq", 1, "active", "ml-dsa-65", "private-key"),
    ];
    for (name, v, state, alg, kind) in expect {
        let c = by_ref(&bom, &format!("key:{name}:v{v}"));
        assert_eq!(c["type"], "cryptographic-asset");
        let m = rcm(c);
        assert_eq!(m["state"], state, "{name} v{v}");
        assert_eq!(m["type"], kind, "{name} v{v}");
        assert_eq!(m["algorithmRef"], format!("algorithm:{alg}"), "{name} v{v}");
        assert!(m["creationDate"].is_string(), "{name} v{v}");
        by_ref(&bom, &format!("algorithm:{alg}"));
    }
    let sig = by_ref(&bom, "key:sig:v1");
    assert!(rcm(sig)["expirationDate"].is_string(), "grace end");
    assert!(
        property(sig, "keystore:public-key-fingerprint").is_some_and(|f| f.starts_with("sha256:"))
    );
    assert_eq!(
        property(sig, "keystore:cryptoperiod-seconds"),
        Some("7776000")
    );
    assert!(property(by_ref(&bom, "key:data:v1"), "keystore:destruction-date").is_some());
    assert_eq!(
        property(by_ref(&bom, "key:data:v2"), "keystore:encryption-limit"),
        Some("1000")
    );
    let audit = by_ref(&bom, "key:keystore-audit:v1");
    assert_eq!(property(audit, "keystore:internal"), Some("true"));
    let pq = by_ref(&bom, "algorithm:ml-dsa-65");
    assert_eq!(
        pq["cryptoProperties"]["algorithmProperties"]["nistQuantumSecurityLevel"],
        3
    );

    assert_valid_and_breakable(&python, st.dir.path(), &bom);
}

#[test]
fn a_factory_store_lists_its_ca_and_device_certificates_linked_to_keys() {
    let python = python();
    let st = KeyFileStore::create(keyctl(), "production", "production.key", SO);
    st.set_role(OP);
    let root = st.path("root-ca");
    let root_key = st.path("root.key");
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
        .args([
            "--root-key-file",
            s(&root_key),
            "--cn",
            "Test Production CA",
        ])
        .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
        .output()
        .unwrap();
    assert_ok(&o);
    let o = st
        .with(OP)
        .args([
            "provision",
            "--device-id",
            "DEV12345",
            "--operator",
            "line-3",
        ])
        .output()
        .unwrap();
    assert_ok(&o);

    let bom = inventory(&st, SO, &st.path("factory.json"));
    let certs: Vec<&Value> = components(&bom)
        .iter()
        .filter(|c| c["cryptoProperties"]["assetType"] == "certificate")
        .collect();
    let role = |r: &str| {
        certs
            .iter()
            .find(|c| property(c, "keystore:certificate-role") == Some(r))
            .unwrap_or_else(|| panic!("no {r} certificate in\n{bom:#}"))
    };
    let root_cert = role("root-ca");
    let p = &root_cert["cryptoProperties"]["certificateProperties"];
    assert!(p["subjectName"].as_str().unwrap().contains("Test Root CA"));
    assert_eq!(p["certificateFormat"], "X.509");
    // The root's key is in the offline root store: a public-key asset.
    let root_key_ref = p["subjectPublicKeyRef"].as_str().unwrap();
    assert!(
        root_key_ref.starts_with("public-key:sha256:"),
        "{root_key_ref}"
    );
    let inter = role("intermediate-ca");
    let p = &inter["cryptoProperties"]["certificateProperties"];
    // The intermediate's key is the production store's.
    let key = p["subjectPublicKeyRef"].as_str().unwrap();
    assert!(key.starts_with("key:pki.intermediate-ca:v"), "{key}");
    let sig = p["signatureAlgorithmRef"].as_str().unwrap();
    by_ref(&bom, sig);
    let device = role("device");
    assert_eq!(property(device, "keystore:device-id"), Some("DEV12345"));
    let p = &device["cryptoProperties"]["certificateProperties"];
    let key = p["subjectPublicKeyRef"].as_str().unwrap();
    let linked = by_ref(&bom, key);
    assert_eq!(rcm(linked)["type"], "private-key", "{key}");
    assert!(p["issuerName"]
        .as_str()
        .unwrap()
        .contains("Test Production CA"));

    assert_valid_and_breakable(&python, st.dir.path(), &bom);
}

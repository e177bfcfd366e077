//! Evidence off the device, end to end with real keyctl processes: the
//! exported trail with its signed checkpoints verifies with nothing but the
//! trusted public keys (`keyctl audit verify --offline`, no store), and an
//! independent verifier in Python (the `cryptography` package from PyPI,
//! tests/python/verify_audit_export.py) reaches the same verdicts, naming
//! the same first bad entry; the decommission's erasure certificate verifies
//! offline and with OpenSSL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use test_support::keyctl::{assert_fails, assert_ok, s, text, Credential, KeyFileStore, Keyctl};
use test_support::python;

const SO_SECRET: &str = "officer credential for tests";

/// The pinned verifier dependency.
const CRYPTOGRAPHY: &str = "cryptography==46.0.3";

fn new_store() -> KeyFileStore {
    KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "store",
        "store.key",
        Credential::officer(SO_SECRET),
    )
}

/// keyctl without any store: the offline commands need none.
fn keyctl_alone() -> Command {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl")).command()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_audit_export.py")
}

/// The Python verifier's verdict line ("OK …" or "BAD <seq> <why>").
fn python_verdict(python: &Path, trail: &Path, trust: &Path) -> String {
    let out = python::run_or_fail(
        Command::new(python).arg(script()).arg(trail).arg(trust),
        Duration::from_secs(120),
        "verify_audit_export.py",
        python::INSTALL_HINT,
    );
    let verdict = out.stdout.trim().to_string();
    assert!(
        verdict.starts_with("OK ") || verdict.starts_with("BAD "),
        "{}",
        out.report()
    );
    assert_eq!(
        out.status.success(),
        verdict.starts_with("OK "),
        "{}",
        out.report()
    );
    verdict
}

fn offline(trail: &Path, trust: &Path) -> std::process::Output {
    keyctl_alone()
        .args([
            "audit",
            "verify",
            "--offline",
            s(trail),
            "--trust",
            s(trust),
        ])
        .output()
        .expect("run keyctl")
}

/// Rewrites line `n` (1-based) of `from` with `edit` into `to`.
fn edit_line(from: &Path, to: &Path, n: usize, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(from).expect("trail");
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { edit(l) } else { l.to_string() })
        .collect();
    std::fs::write(to, lines.join("\n") + "\n").expect("write");
}

fn activity(st: &KeyFileStore, prefix: &str) {
    for i in 0..3 {
        let name = format!("{prefix}{i}");
        st.ok(&["key", "create", &name, "--alg", "ecdsa-p256-sha256"]);
        st.ok(&["key", "rotate", &name, "--grace", "1d"]);
    }
}

#[test]
fn exported_trail_verifies_offline_and_in_python_with_the_same_verdicts() {
    let python = python::venv("audit", &[CRYPTOGRAPHY], "import cryptography");
    let st = new_store();
    // The auditor records the signing key beforehand, off the device.
    let trust = st.path("audit-pubkeys.pem");
    st.ok(&["audit", "pubkeys", "--out", s(&trust)]);
    assert!(std::fs::read_to_string(&trust)
        .expect("pem")
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    activity(&st, "k");
    let trail = st.path("trail.jsonl");
    st.ok(&["audit", "export", "--out", s(&trail)]);
    let entries = std::fs::read_to_string(&trail)
        .expect("trail")
        .lines()
        .filter(|l| l.starts_with("{\"seq\""))
        .count();
    assert!(entries >= 7, "{entries}");

    // Good trail: both accept it, without the store.
    let out = offline(&trail, &trust);
    let said = assert_ok(&out);
    assert!(
        said.contains("verified offline") && said.contains(&format!("{entries} entries")),
        "{said}"
    );
    assert!(python_verdict(&python, &trail, &trust).starts_with(&format!("OK {entries} ")));

    // An edited entry: both name entry #3.
    let edited = st.path("edited.jsonl");
    edit_line(&trail, &edited, 3, |l| {
        l.replace("\"detail\":\"", "\"detail\":\"x")
    });
    let out = offline(&edited, &trust);
    assert_fails(&out, 9, "Integrity");
    assert!(text(&out.stderr).contains("#3"), "{}", text(&out.stderr));
    assert_eq!(python_verdict(&python, &edited, &trust), "BAD 3 edited");

    // A cut-off tail: the last checkpoint names entries the file lacks.
    let cut = st.path("cut.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&trail)
        .expect("trail")
        .lines()
        .enumerate()
        .filter(|(i, l)| !(l.starts_with("{\"seq\"") && *i + 1 == entries))
        .map(|(_, l)| l.to_string())
        .collect();
    std::fs::write(&cut, kept.join("\n") + "\n").expect("write");
    let out = offline(&cut, &trust);
    assert_fails(&out, 9, "Integrity");
    assert!(
        text(&out.stderr).contains(&format!("#{entries}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        python_verdict(&python, &cut, &trust),
        format!("BAD {entries} truncated")
    );

    // A forged checkpoint signature (one hex digit changed).
    let forged = st.path("forged.jsonl");
    let last_cp = std::fs::read_to_string(&trail)
        .expect("trail")
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.starts_with("{\"checkpoint\""))
        .expect("a checkpoint line");
    edit_line(&trail, &forged, last_cp + 1, |l| {
        let at = l.find("\"signature\":\"").expect("signature") + 20;
        let mut b = l.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).expect("utf8")
    });
    let out = offline(&forged, &trust);
    assert_fails(&out, 9, "Integrity");
    assert!(python_verdict(&python, &forged, &trust).starts_with("BAD "));

    // Another store's key is not trusted.
    let other = new_store();
    let other_trust = other.path("other.pem");
    other.ok(&["audit", "pubkeys", "--out", s(&other_trust)]);
    let out = offline(&trail, &other_trust);
    assert_fails(&out, 9, "Integrity");
    assert!(
        text(&out.stderr).contains("not a trusted key"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        python_verdict(&python, &trail, &other_trust),
        "BAD 1 untrusted-signer"
    );

    // A rotation hands over: the recorded anchor still verifies everything.
    let rotated = assert_ok(&st.ok(&["audit", "rotate-signer"]));
    assert!(rotated.contains("version 2"), "{rotated}");
    activity(&st, "r");
    let trail2 = st.path("trail2.jsonl");
    st.ok(&["audit", "export", "--out", s(&trail2)]);
    assert_ok(&offline(&trail2, &trust));
    assert!(python_verdict(&python, &trail2, &trust).starts_with("OK "));

    // Decommission: the final trail and the erasure certificate verify
    // offline after the store is gone.
    let final_trail = st.path("final.jsonl");
    let done = assert_ok(&st.ok(&["decommission", "--audit-out", s(&final_trail), "--yes"]));
    let cert = PathBuf::from(format!("{}.erasure.json", final_trail.display()));
    assert!(done.contains("erasure certificate"), "{done}");
    assert!(!st.store.join("soft").join("store.hdr").exists());
    assert!(python_verdict(&python, &final_trail, &trust).starts_with("OK "));
    let out = keyctl_alone()
        .args([
            "audit",
            "verify-erasure",
            s(&cert),
            "--trust",
            s(&trust),
            "--trail",
            s(&final_trail),
        ])
        .output()
        .expect("run");
    let said = assert_ok(&out);
    for k in ["k0", "k1", "k2", "r0"] {
        let body = std::fs::read_to_string(&cert).expect("cert");
        assert!(body.contains(k), "{k} not in the certificate");
    }
    assert!(
        said.contains("erasure certificate verified") && said.contains("6 key(s)"),
        "{said}"
    );
    // Without the trail the rotated signer is not trusted by the old anchor.
    let out = keyctl_alone()
        .args(["audit", "verify-erasure", s(&cert), "--trust", s(&trust)])
        .output()
        .expect("run");
    assert_fails(&out, 9, "Integrity");
    // OpenSSL checks the certificate's signature with the handed-over key.
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cert).expect("cert")).expect("json");
    let signer = c["signer"].as_str().expect("signer");
    let pem = final_signer_pem(&final_trail, signer);
    let (msg, sig, key) = (
        st.path("cert.msg"),
        st.path("cert.sig"),
        st.path("signer.pem"),
    );
    std::fs::write(
        &msg,
        format!(
            "keystore-erasure-certificate-v1\n{}",
            c["body"].as_str().expect("body")
        ),
    )
    .expect("msg");
    std::fs::write(&sig, hex_decode(c["signature"].as_str().expect("sig"))).expect("sig");
    std::fs::write(&key, pem).expect("pem");
    let out = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            s(&key),
            "-signature",
            s(&sig),
            s(&msg),
        ])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        text(&out.stdout) + &text(&out.stderr)
    );
    // A forged certificate does not verify.
    let forged = st.path("forged.erasure.json");
    std::fs::write(
        &forged,
        std::fs::read_to_string(&cert)
            .expect("cert")
            .replacen("k1", "kX", 1),
    )
    .expect("write");
    let out = keyctl_alone()
        .args([
            "audit",
            "verify-erasure",
            s(&forged),
            "--trust",
            s(&trust),
            "--trail",
            s(&final_trail),
        ])
        .output()
        .expect("run");
    assert_fails(&out, 9, "Integrity");
}

fn final_signer_pem(trail: &Path, fingerprint: &str) -> String {
    for line in std::fs::read_to_string(trail).expect("trail").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if v["audit_signer"]["fingerprint"] == fingerprint {
            return v["audit_signer"]["public_key_pem"]
                .as_str()
                .expect("pem")
                .to_string();
        }
    }
    panic!("signer {fingerprint} not in the trail");
}

fn hex_decode(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

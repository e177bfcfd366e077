//! `keyctl policy`: the key management policy generated from a store's
//! actual configuration and state, checked against real `keyctl` processes
//! on temporary stores: keys with their cryptoperiods, grace and versions,
//! rotation schedules, algorithms in use, role credentials (set or not,
//! never the secret), and the revocation sources of a factory store.

use keystore_api::parse_rfc3339;
use std::collections::BTreeSet;
use std::process::Command;
use test_support::keyctl::{all_text, assert_ok, s, Credential, KeyFileStore, Keyctl};
use time::Duration;

const SO_SECRET: &str = "officer secret 7Qx!policy";
const OP_SECRET: &str = "operator secret 9Zr!policy";
const ROOT_SECRET: &str = "root custodian secret 4Kp!policy";
const SO: Credential = Credential::officer(SO_SECRET).by("officer-1");
const OP: Credential = Credential::operator(OP_SECRET).by("station-3");

fn keyctl() -> Keyctl {
    Keyctl::new(env!("CARGO_BIN_EXE_keyctl"))
}

fn store() -> KeyFileStore {
    KeyFileStore::create(keyctl(), "store", "store.key", SO)
}

/// `keyctl policy` on `st` without a role; returns the document.
#[track_caller]
fn policy(st: &KeyFileStore) -> String {
    assert_ok(&st.bare().arg("policy").output().expect("run keyctl"))
}

/// The text of the `### Key `name`` section.
#[track_caller]
fn key_section<'a>(doc: &'a str, name: &str) -> &'a str {
    let head = format!("### Key `{name}`\n");
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("no section for {name}:\n{doc}"));
    let rest = &doc[start + head.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

/// The value of the table row `| field | value |` in `sec`.
#[track_caller]
fn row<'a>(sec: &'a str, field: &str) -> &'a str {
    let head = format!("| {field} | ");
    let line = sec
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no row {field}:\n{sec}"));
    line[head.len()..].trim_end_matches(" |")
}

/// The versions table of a key section: (version, state, created, grace end).
fn versions(sec: &str) -> Vec<(u32, String, String, String)> {
    sec.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split(" | ").map(|c| c.trim_matches(['|', ' '])).collect();
            let v = c.first()?.parse().ok()?;
            Some((v, c[1].to_string(), c[3].to_string(), c[5].to_string()))
        })
        .collect()
}

/// The set of algorithm ids on the "Algorithms in use" line.
#[track_caller]
fn algorithms_in_use(doc: &str) -> BTreeSet<String> {
    let line = doc
        .lines()
        .find_map(|l| l.strip_prefix("- Algorithms in use: "))
        .unwrap_or_else(|| panic!("no algorithms line:\n{doc}"));
    line.split(", ")
        .filter_map(|a| a.strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

/// The due time named on a key's Rotation row, and the version it names.
#[track_caller]
fn next_due(sec: &str) -> (time::OffsetDateTime, String) {
    let r = row(sec, "Rotation");
    let rest = r.strip_prefix("next due ").unwrap_or_else(|| panic!("{r}"));
    let (at, why) = rest.split_once(' ').unwrap();
    (parse_rfc3339(at).unwrap(), why.to_string())
}

#[test]
fn the_policy_follows_keys_cryptoperiods_grace_and_rotation() {
    let st = store();
    st.ok(&[
        "key",
        "create",
        "fw-signer",
        "--alg",
        "ecdsa-p256-sha256",
        "--cryptoperiod",
        "90d",
    ]);
    st.ok(&[
        "key",
        "create",
        "telemetry-key",
        "--alg",
        "aes-256-gcm",
        "--cryptoperiod",
        "12h",
        "--encryption-limit",
        "1000",
        "--backup-eligible",
    ]);
    st.ok(&[
        "key",
        "create",
        "session-master",
        "--alg",
        "hmac-sha256",
        "--usages",
        "derive",
    ]);

    let doc = policy(&st);
    assert!(doc.starts_with("# Key management policy\n"), "{doc}");
    assert!(
        doc.contains(&format!("| Store | `{}` |", s(&st.store))),
        "{doc}"
    );
    assert!(doc.contains("`soft`: sealed software store") && doc.contains("a 32-byte key file"));
    assert!(doc.contains(&format!("| keyctl | {} |", env!("CARGO_PKG_VERSION"))));
    assert!(doc.contains("no hardware monotonic counter"), "{doc}");
    let expected: BTreeSet<String> = ["aes-256-gcm", "ecdsa-p256-sha256", "hmac-sha256"]
        .map(String::from)
        .into();
    assert_eq!(algorithms_in_use(&doc), expected);

    let fw = key_section(&doc, "fw-signer");
    assert_eq!(row(fw, "Cryptoperiod"), "90d (7776000 s)");
    assert_eq!(row(fw, "Usages"), "sign, verify");
    assert!(
        row(fw, "Grace period").starts_with("none in effect"),
        "{fw}"
    );
    assert!(row(fw, "Backup").starts_with("never"), "{fw}");
    let v = versions(fw);
    assert_eq!(v.len(), 1, "{fw}");
    assert_eq!((v[0].0, v[0].1.as_str()), (1, "active"));
    let (due, why) = next_due(fw);
    assert_eq!(
        due,
        parse_rfc3339(&v[0].2).unwrap() + Duration::days(90),
        "{fw}"
    );
    assert!(why.starts_with("(version 1 created"), "{why}");

    let tk = key_section(&doc, "telemetry-key");
    assert_eq!(row(tk, "Cryptoperiod"), "12h (43200 s)");
    assert!(
        row(tk, "AES-GCM limit").starts_with("1000 encryptions per version"),
        "{tk}"
    );
    assert!(row(tk, "AES-GCM limit").contains("0/1000 reserved"), "{tk}");
    assert!(row(tk, "Backup").starts_with("eligible: wrapped"), "{tk}");
    let (due, _) = next_due(tk);
    assert_eq!(
        due,
        parse_rfc3339(&versions(tk)[0].2).unwrap() + Duration::hours(12)
    );

    let sm = key_section(&doc, "session-master");
    assert_eq!(row(sm, "Cryptoperiod"), "none (no scheduled rotation)");
    assert_eq!(row(sm, "Rotation"), "not scheduled (no cryptoperiod)");
    assert_eq!(row(sm, "Purpose"), "key derivation (HKDF)");
    assert_eq!(row(sm, "Backup"), "not eligible (fixed at creation)");
    assert!(!sm.contains("AES-GCM limit"), "{sm}");

    // A rotation with a 3-day grace: two versions, the old one in grace, the
    // schedule follows the new active version.
    st.ok(&["key", "rotate", "fw-signer", "--grace", "3d"]);
    let doc = policy(&st);
    let fw = key_section(&doc, "fw-signer");
    let v = versions(fw);
    assert_eq!(v.len(), 2, "{fw}");
    assert_eq!((v[0].0, v[0].1.as_str()), (1, "deactivated"));
    assert_eq!((v[1].0, v[1].1.as_str()), (2, "active"));
    assert_eq!(v[1].3, "-");
    let grace_end = parse_rfc3339(&v[0].3).expect("grace end of version 1");
    assert!(row(fw, "Grace period").starts_with("3d (259200 s) at the last rotation: version 1"));
    assert!(row(fw, "Grace period").ends_with(&v[0].3), "{fw}");
    let (due, why) = next_due(fw);
    assert!(why.starts_with("(version 2 created"), "{why}");
    assert_eq!(due, parse_rfc3339(&v[1].2).unwrap() + Duration::days(90));
    assert!(grace_end > parse_rfc3339(&v[1].2).unwrap() + Duration::days(2));

    // Destroying the only hmac key removes its algorithm from those in use.
    st.ok(&["key", "destroy", "session-master", "--yes"]);
    let doc = policy(&st);
    let expected: BTreeSet<String> = ["aes-256-gcm", "ecdsa-p256-sha256"]
        .map(String::from)
        .into();
    assert_eq!(algorithms_in_use(&doc), expected);
    assert!(!doc.contains("### Key `session-master`"), "{doc}");
}

#[test]
fn an_empty_store_uses_no_algorithm() {
    let st = store();
    let doc = policy(&st);
    assert!(algorithms_in_use(&doc).is_empty(), "{doc}");
    assert!(doc.contains("- Algorithms in use: none (no keys)"), "{doc}");
    assert!(doc.contains("The store holds no keys."), "{doc}");
}

#[test]
fn role_credentials_show_set_or_not_and_never_the_secret() {
    let st = store();
    let doc = policy(&st);
    let role_row = |doc: &str, role: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| {role} | ")))
            .unwrap_or_else(|| panic!("no row for {role}:\n{doc}"))
            .to_string()
    };
    assert!(
        role_row(&doc, "security-officer").contains("| set ("),
        "{doc}"
    );
    assert!(role_row(&doc, "operator").contains("| not set |"), "{doc}");

    st.set_role(OP);
    let out = st.so().arg("policy").output().unwrap();
    let doc = assert_ok(&out);
    for (role, set) in [
        ("security-officer", true),
        ("operator", true),
        ("auditor", false),
        ("application", false),
    ] {
        let r = role_row(&doc, role);
        assert_eq!(r.contains("| set ("), set, "{r}");
        assert_eq!(r.contains("| not set |"), !set, "{r}");
    }
    assert!(role_row(&doc, "auditor").contains("verify and export the audit trail"));
    assert!(
        doc.contains("| Generated by | `officer-1` (security-officer) |"),
        "{doc}"
    );
    for secret in [SO_SECRET, OP_SECRET] {
        assert!(!all_text(&out).contains(secret), "a secret leaked");
    }

    // To a file: owner-only, and still no secret; a wrong credential fails.
    let path = st.path("policy.md");
    let out = st
        .so()
        .args(["policy", "--out", s(&path)])
        .output()
        .unwrap();
    assert_ok(&out);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("| operator | set ("), "{written}");
    assert!(!written.contains(SO_SECRET) && !written.contains(OP_SECRET));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let wrong = Credential::officer("not the officer secret");
    let out = st.with(wrong).arg("policy").output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", all_text(&out));
}

fn ceremony(st: &KeyFileStore) {
    let (root, root_key) = (st.path("root-ca"), st.path("root.key"));
    assert_ok(
        &keyctl()
            .command()
            .args(["ca", "init-root", "--root-store", s(&root)])
            .args([
                "--new-root-key-file",
                s(&root_key),
                "--cn",
                "Policy Root CA",
            ])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
    assert_ok(
        &st.so()
            .args(["ca", "sign-intermediate", "--root-store", s(&root)])
            .args([
                "--root-key-file",
                s(&root_key),
                "--cn",
                "Policy Production CA",
            ])
            .env("KEYCTL_ROOT_SECRET", ROOT_SECRET)
            .output()
            .unwrap(),
    );
}

fn provision(st: &KeyFileStore, id: &str, ocsp_url: Option<&str>) {
    let mut c: Command = st.with(OP);
    c.args(["provision", "--device-id", id, "--operator", "line-3"]);
    if let Some(url) = ocsp_url {
        c.args(["--ocsp-url", url]);
    }
    assert_ok(&c.output().unwrap());
}

#[test]
fn a_factory_store_lists_its_revocation_sources_and_a_plain_store_none() {
    let plain = store();
    let doc = policy(&plain);
    assert!(
        doc.contains("- Certificate revocation sources: none configured"),
        "{doc}"
    );
    assert!(!doc.contains("Intermediate CRL"), "{doc}");

    let st = store();
    st.set_role(OP);
    ceremony(&st);
    let doc = policy(&st);
    let pki = st.store.join("pki");
    assert!(!doc.contains("none configured"), "{doc}");
    assert!(
        doc.contains("- Certificate revocation sources (factory store):"),
        "{doc}"
    );
    assert!(doc.contains(&format!(
        "PKI database: `{}`",
        s(&st.store.join("pki.sqlite"))
    )));
    assert!(doc.contains("Root CA: CN=Policy Root CA"), "{doc}");
    assert!(
        doc.contains("Production intermediate: CN=Policy Production CA"),
        "{doc}"
    );
    assert!(doc.contains("Intermediate CRL: last issued"), "{doc}");
    assert!(
        doc.contains(&format!("`{}` (present)", s(&pki.join("crl.pem")))),
        "{doc}"
    );
    assert!(
        doc.contains(&format!("`{}` (present)", s(&pki.join("root-crl.pem")))),
        "{doc}"
    );
    assert!(doc.contains("OCSP: not configured"), "{doc}");
    assert!(
        doc.contains("OCSP URLs in issued certificates (0 under"),
        "{doc}"
    );

    // The delegated signer and devices whose certificates name a responder.
    assert_ok(&st.so().args(["ca", "ocsp-signer"]).output().unwrap());
    let url = "http://127.0.0.1:9/ocsp";
    provision(&st, "DEV-1", Some(url));
    provision(&st, "DEV-2", Some(url));
    provision(&st, "DEV-3", None);
    std::fs::remove_file(pki.join("root-crl.pem")).unwrap();
    let doc = policy(&st);
    assert!(doc.contains("OCSP: delegated signer serial"), "{doc}");
    assert!(doc.contains("(key `pki.ocsp-signer`)"), "{doc}");
    assert!(!doc.contains("OCSP: not configured"), "{doc}");
    assert!(
        doc.contains(&format!(
            "OCSP URLs in issued certificates (3 under `{}`): `{url}` (2 certificates)",
            s(&st.store.join("provisioned"))
        )),
        "{doc}"
    );
    assert!(
        doc.contains("CRL distribution points in issued certificates: none"),
        "{doc}"
    );
    assert!(
        doc.contains(&format!("`{}` (missing)", s(&pki.join("root-crl.pem")))),
        "{doc}"
    );

    // The offline root's own store names its CRL.
    let root_doc = assert_ok(
        &keyctl()
            .command()
            .args([
                "--store",
                s(&st.path("root-ca")),
                "--key-file",
                s(&st.path("root.key")),
            ])
            .arg("policy")
            .output()
            .unwrap(),
    );
    assert!(
        root_doc.contains("this is an offline root CA store"),
        "{root_doc}"
    );
    assert!(!root_doc.contains(ROOT_SECRET));
}

#[test]
fn policy_runs_on_the_host_only() {
    let out = keyctl()
        .command()
        .args(["--connect", "unix:/nonexistent/keystored.sock", "policy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_text(&out));
    assert!(
        all_text(&out).contains("`keyctl policy`"),
        "{}",
        all_text(&out)
    );
}

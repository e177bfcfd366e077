//! The algorithms added for device fleets, end to end through the `keyctl`
//! binary: Ed25519, ECDSA P-384 and ML-DSA-65 keys created, signed with,
//! rotated and revoked, their PEM public keys read by OpenSSL; and ECDH
//! `agree` checked against `openssl pkeyutl -derive` + `openssl kdf SSKDF`.

use std::path::Path;
use std::process::Command;
use test_support::keyctl::{assert_fails, s, text, Credential, KeyFileStore, Keyctl};

const OPENSSL: &str = "/usr/bin/openssl";

fn new_store() -> KeyFileStore {
    KeyFileStore::create(
        Keyctl::new(env!("CARGO_BIN_EXE_keyctl")),
        "store",
        "store.key",
        Credential::officer("officer credential for tests"),
    )
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new(OPENSSL)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {OPENSSL}: {e}"))
}

/// `openssl pkeyutl -verify -rawin` with `digest` (none for Ed25519).
fn openssl_verifies(pem: &Path, sig: &Path, msg: &Path, digest: Option<&str>) -> bool {
    let mut args = vec![
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        s(pem),
        "-rawin",
        "-in",
        s(msg),
        "-sigfile",
        s(sig),
    ];
    if let Some(d) = digest {
        args.extend(["-digest", d]);
    }
    let out = openssl(&args);
    out.status.success() && text(&out.stdout).contains("Signature Verified Successfully")
}

#[test]
fn openssl_reads_and_verifies_ed25519_and_p384() {
    for (alg, digest, key_text) in [
        ("ed25519", None, "ED25519 Public-Key"),
        ("ecdsa-p384-sha384", Some("sha384"), "NIST CURVE: P-384"),
    ] {
        let st = new_store();
        st.ok(&["key", "create", "k", "--alg", alg]);
        let msg = st.write("msg", b"firmware image 2.0.0\n");
        let tampered = st.write("tampered", b"firmware image 2.0.1\n");
        let (sig, pem) = (st.path("sig"), st.path("pub.pem"));
        st.ok(&["sign", "k", "--in", s(&msg), "--out", s(&sig)]);
        st.ok(&["pubkey", "k", "--out", s(&pem)]);
        let shown = openssl(&["pkey", "-pubin", "-in", s(&pem), "-noout", "-text"]);
        assert!(shown.status.success(), "{alg}: openssl cannot read the PEM");
        assert!(
            text(&shown.stdout).contains(key_text),
            "{alg}: {}",
            text(&shown.stdout)
        );
        assert!(openssl_verifies(&pem, &sig, &msg, digest), "{alg}");
        assert!(!openssl_verifies(&pem, &sig, &tampered, digest), "{alg}");
        st.ok(&["verify", "k", "--in", s(&msg), "--sig", s(&sig)]);
        // Rotation and revocation work as for every algorithm.
        st.ok(&["key", "rotate", "k", "--grace", "1h"]);
        st.ok(&["verify", "k", "--in", s(&msg), "--sig", s(&sig)]);
        st.ok(&["key", "revoke", "k", "--version", "2", "--reason", "test"]);
        assert_fails(
            &st.run(&["sign", "k", "--in", s(&msg), "--out", s(&sig)]),
            6,
            "KeyState",
        );
    }
}

#[test]
fn ml_dsa_65_signs_and_documents_its_sizes() {
    let st = new_store();
    st.ok(&["key", "create", "pq", "--alg", "ml-dsa-65"]);
    let msg = st.write("msg", b"firmware image 3.0.0\n");
    let (sig, pem) = (st.path("sig"), st.path("pub.pem"));
    st.ok(&["sign", "pq", "--in", s(&msg), "--out", s(&sig)]);
    assert_eq!(std::fs::read(&sig).expect("sig").len(), 3309);
    st.ok(&["pubkey", "pq", "--out", s(&pem)]);
    assert!(std::fs::read_to_string(&pem)
        .expect("pem")
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    st.ok(&["verify", "pq", "--in", s(&msg), "--sig", s(&sig)]);
    let bad = st.write("bad", b"firmware image 3.0.1\n");
    assert_fails(
        &st.run(&["verify", "pq", "--in", s(&bad), "--sig", s(&sig)]),
        9,
        "Integrity",
    );
}

#[test]
fn agree_matches_openssl_sskdf() {
    let st = new_store();
    st.ok(&["key", "create", "dh", "--alg", "ecdh-p256"]);
    let ours = st.path("ours.pem");
    st.ok(&["pubkey", "dh", "--out", s(&ours)]);
    let (peer, peer_pub) = (st.path("peer.pem"), st.path("peer-pub.pem"));
    assert!(openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&peer)
    ])
    .status
    .success());
    assert!(
        openssl(&["pkey", "-in", s(&peer), "-pubout", "-out", s(&peer_pub)])
            .status
            .success()
    );
    let z = st.path("z.bin");
    assert!(openssl(&[
        "pkeyutl",
        "-derive",
        "-inkey",
        s(&peer),
        "-peerkey",
        s(&ours),
        "-out",
        s(&z)
    ])
    .status
    .success());
    let z = std::fs::read(&z).expect("z");
    let info = "0102030405";
    let want = openssl(&[
        "kdf",
        "-keylen",
        "48",
        "-kdfopt",
        "digest:SHA256",
        "-kdfopt",
        &format!("hexkey:{}", hex::encode(&z)),
        "-kdfopt",
        &format!("hexinfo:{info}"),
        "SSKDF",
    ]);
    assert!(want.status.success(), "{want:?}");
    let want = text(&want.stdout).trim().replace(':', "").to_lowercase();
    let got = st.ok(&[
        "agree",
        "dh",
        "--peer",
        s(&peer_pub),
        "--info-hex",
        info,
        "--len",
        "48",
    ]);
    assert_eq!(text(&got.stdout).trim(), want);
    assert!(
        text(&got.stderr).contains("secret"),
        "warns about secret output"
    );
    let out = st.path("okm.bin");
    st.ok(&[
        "agree",
        "dh",
        "--peer",
        s(&peer_pub),
        "--info-hex",
        info,
        "--len",
        "48",
        "--out",
        s(&out),
    ]);
    assert_eq!(hex::encode(std::fs::read(&out).expect("okm")), want);
    // A bad peer key is exit 2 (invalid input), and a signing key does not agree.
    let junk = st.write(
        "junk.pem",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let r = st.run(&["agree", "dh", "--peer", s(&junk), "--len", "32"]);
    assert_fails(&r, 2, "InvalidInput");
    st.ok(&["key", "create", "sig", "--alg", "ecdsa-p256-sha256"]);
    let r = st.run(&["agree", "sig", "--peer", s(&peer_pub), "--len", "32"]);
    assert_fails(&r, 7, "Policy");
}

//! `keyctl tour`: an end-to-end walk through the keystore in a throwaway
//! directory, unlocked by a freshly generated key file (no prompt).

use crate::commands;
use crate::error::{CliError, CliResult};
use crate::store::{Layout, Store};
use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::{Actor, Algorithm, ErrorKind, KeySpec, Keystore, Role, SignatureFormat, Usages};

struct Steps(u32);

impl Steps {
    fn next(&mut self, title: &str) -> CliResult<()> {
        self.0 += 1;
        outln!()?;
        outln!("[{}] {title}", self.0)
    }
}

fn ok(line: impl AsRef<str>) -> CliResult<()> {
    outln!("    {}", line.as_ref())
}

/// Requires `result` to fail with `kind`; anything else fails the tour.
fn expect_err<T>(
    result: keystore_api::Result<T>,
    kind: ErrorKind,
    what: &str,
) -> CliResult<CliError> {
    match result {
        Err(e) if e.kind() == kind => Ok(CliError::Api(e)),
        Err(e) => Err(CliError::Internal(format!(
            "tour: {what} failed with {} instead of {kind}: {e}",
            e.kind()
        ))),
        Ok(_) => Err(CliError::Internal(format!(
            "tour: {what} succeeded but should have failed with {kind}"
        ))),
    }
}

pub fn run() -> CliResult<()> {
    let tmp = tempfile::Builder::new()
        .prefix("keyctl-tour-")
        .tempdir()
        .map_err(|e| CliError::io("create a directory in", &std::env::temp_dir(), e))?;
    let layout = Layout::new(tmp.path());
    let mut step = Steps(0);

    step.next("Create a soft store unlocked by a fresh 32-byte key file")?;
    let key_file = tmp.path().join("store.key");
    backend_soft::create_key_file(&key_file)?;
    let backend = SoftStore::create(&layout.soft, &Unlock::KeyFile(key_file), Kdf::KeyFile)?;
    let ks: Store = Keystore::open(
        Box::new(backend) as crate::backend::AnyBackend,
        &layout.metadata,
    )?;
    step.next("Set the security officer's credential and log in as the officer")?;
    let credential = keystore_api::SecretBytes::from_slice(b"tour officer credential");
    ks.set_role_credential(None, Role::SecurityOfficer, &credential)?;
    let officer = ks.authenticate("tour-officer", Role::SecurityOfficer, &credential)?;
    ok("lifecycle operations now need this credential; an operator or auditor has their own")?;
    ok(format!("store in {}", tmp.path().display()))?;

    step.next("Generate an ECDSA P-256 signing key inside the store")?;
    let info = ks.create(
        &officer,
        "tour-ecdsa",
        KeySpec::new(Algorithm::EcdsaP256Sha256),
    )?;
    ok(format!(
        "key 'tour-ecdsa' version 1, usages {}, origin generated",
        info.usages
    ))?;

    let message = b"firmware image 1.4.2 for infusion pump model X";
    step.next("Sign a message (DER signature)")?;
    let sig = ks.sign("tour-ecdsa", message, SignatureFormat::Der)?;
    let sig_v1 = sig.bytes.clone();
    ok(format!(
        "{}-byte signature made by version {}",
        sig.bytes.len(),
        sig.version
    ))?;

    step.next("Verify the signature, then a tampered message")?;
    let v = ks.verify("tour-ecdsa", message, &sig.bytes, None)?;
    ok(format!("OK (version {v})"))?;
    let e = expect_err(
        ks.verify("tour-ecdsa", b"tampered message", &sig.bytes, None),
        ErrorKind::Integrity,
        "verifying a tampered message",
    )?;
    ok(format!("tampered message rejected: {e}"))?;

    step.next("Export the public key as PEM")?;
    let pk = ks.public_key("tour-ecdsa")?;
    outln!("{}", indent(&pk.to_pem()).trim_end_matches('\n'))?;
    ok(format!("fingerprint {}", pk.fingerprint()))?;

    step.next("Generate an RSA-2048 PSS key, sign and verify")?;
    ks.create(
        &officer,
        "tour-rsa-pss",
        KeySpec::new(Algorithm::Rsa2048PssSha256),
    )?;
    let sig = ks.sign("tour-rsa-pss", message, SignatureFormat::Der)?;
    let v = ks.verify("tour-rsa-pss", message, &sig.bytes, None)?;
    ok(format!(
        "{}-byte RSASSA-PSS signature, verified: OK (version {v})",
        sig.bytes.len()
    ))?;

    step.next("Generate an HMAC-SHA256 key (usage mac, the default) and MAC a message")?;
    let info = ks.create(&officer, "tour-hmac", KeySpec::new(Algorithm::HmacSha256))?;
    let tag = ks.mac("tour-hmac", message)?;
    ks.verify_mac("tour-hmac", message, &tag)?;
    ok(format!(
        "usages {}; 32-byte tag {}, verified",
        info.usages,
        hex::encode(tag)
    ))?;

    step.next("Generate a derivation key (usage derive) and derive 32 bytes with HKDF-SHA256")?;
    let info = ks.create(
        &officer,
        "tour-kdf",
        KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::DERIVE),
    )?;
    let okm = ks.derive_hkdf_sha256("tour-kdf", b"session-nonce-0001", b"tour session key", 32)?;
    ok(format!(
        "usages {}; {} bytes: {} (a throwaway demo key; real derived keys are secret)",
        info.usages,
        okm.len(),
        hex::encode(okm.expose())
    ))?;
    let e = expect_err(
        ks.derive_hkdf_sha256("tour-hmac", b"session-nonce-0001", b"tour session key", 32),
        ErrorKind::Policy,
        "deriving with a mac key",
    )?;
    ok(format!("the mac key does not derive: {e}"))?;
    let e = expect_err(
        ks.create(
            &officer,
            "tour-both",
            KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC | Usages::DERIVE),
        ),
        ErrorKind::Policy,
        "creating a key with both mac and derive",
    )?;
    ok(format!("a key holds mac or derive, never both: {e}"))?;

    step.next("Generate an AES-256-GCM key, encrypt and decrypt with AAD")?;
    ks.create(&officer, "tour-aes", KeySpec::new(Algorithm::Aes256Gcm))?;
    let plaintext = b"patient-id=12345; dose=2.5ml";
    let aad = b"device=pump-0042";
    let envelope = ks.encrypt("tour-aes", plaintext, aad)?;
    let back = ks.decrypt("tour-aes", &envelope, aad)?;
    if back.expose() != plaintext {
        return Err(CliError::Internal(
            "tour: decryption returned different bytes".into(),
        ));
    }
    ok(format!(
        "{}-byte plaintext -> {}-byte envelope -> round trip OK",
        plaintext.len(),
        envelope.len()
    ))?;
    let e = expect_err(
        ks.decrypt("tour-aes", &envelope, b"device=pump-9999"),
        ErrorKind::Integrity,
        "decrypting with a wrong AAD",
    )?;
    ok(format!("wrong AAD rejected: {e}"))?;

    step.next("Rotate the ECDSA key with a 7-day grace period")?;
    let rotated = ks.rotate(&officer, "tour-ecdsa", time::Duration::days(7))?;
    let new_sig = ks.sign("tour-ecdsa", message, SignatureFormat::Der)?;
    let old_ok = ks.verify("tour-ecdsa", message, &sig_v1, None)?;
    ok(format!(
        "version {} is active and signs (signature by version {}); version 1 is deactivated until {} and still verifies its signature (version {old_ok})",
        rotated.active().map(|v| v.version).unwrap_or(0),
        new_sig.version,
        rotated
            .version(1)
            .and_then(|v| v.grace_end)
            .map(keystore_api::rfc3339)
            .unwrap_or_default()
    ))?;

    step.next("An operator may not revoke; the refusal is audited")?;
    let operator = Actor::new("tour-operator", Role::Operator)?;
    let e = expect_err(
        ks.revoke(&operator, "tour-ecdsa", 2, "demo"),
        ErrorKind::Policy,
        "an operator revoking",
    )?;
    ok(format!("refused: {e}"))?;

    step.next("List the keys")?;
    outln!(
        "{}",
        indent(&commands::render_list(&ks.list()?)).trim_end_matches('\n')
    )?;

    step.next("Destroy 'tour-rsa-pss' and try to use it")?;
    ks.destroy(&officer, "tour-rsa-pss")?;
    ok("destroyed")?;
    let e = expect_err(
        ks.sign("tour-rsa-pss", message, SignatureFormat::Der),
        ErrorKind::NotFound,
        "signing with a destroyed key",
    )?;
    ok(format!("signing now fails: {e}"))?;

    step.next("Verify the tamper-evident audit trail")?;
    let auditor = Actor::new("tour-auditor", Role::Auditor)?;
    let report = ks.verify_audit(&auditor)?;
    if !report.is_intact() {
        return Err(CliError::Internal(format!(
            "tour: audit trail reported {:?}",
            report.first_bad
        )));
    }
    let trail = ks.export_audit(&auditor)?;
    let events: Vec<&str> = trail.iter().map(|e| e.event.as_str()).collect();
    if !report.macs_checked() || !report.warnings().is_empty() {
        return Err(CliError::Internal(format!(
            "tour: audit verification did not check every MAC or warned: {:?}",
            report.warnings()
        )));
    }
    ok(format!(
        "{} entries, hash chain and MACs intact: {}",
        report.entries,
        events.join(", ")
    ))?;

    drop(ks);
    tmp.close()
        .map_err(|e| CliError::io("remove", &layout.root, e))?;
    outln!()?;
    outln!("tour complete")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

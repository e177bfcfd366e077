//! `keyctl tour`: an end-to-end walk through the keystore in a throwaway
//! directory, unlocked by a freshly generated key file (no prompt).

use crate::commands;
use crate::error::{CliError, CliResult};
use crate::store::{Layout, Store};
use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::{Algorithm, KeySpec, Keystore, SignatureFormat};

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
fn expect_err<T>(result: keystore_api::Result<T>, kind: &str, what: &str) -> CliResult<CliError> {
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
    let ks: Store = Keystore::open(backend, &layout.metadata)?;
    let officer = keystore_api::Actor::new("tour-officer", keystore_api::Role::SecurityOfficer)?;
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
        "Integrity",
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

    step.next("Generate an HMAC-SHA256 key and derive 32 bytes with HKDF-SHA256")?;
    ks.create(&officer, "tour-hmac", KeySpec::new(Algorithm::HmacSha256))?;
    let okm = ks.derive_hkdf_sha256("tour-hmac", b"session-nonce-0001", b"tour session key", 32)?;
    ok(format!(
        "{} bytes: {} (a throwaway demo key; real derived keys are secret)",
        okm.len(),
        hex::encode(okm.expose())
    ))?;

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
        "Integrity",
        "decrypting with a wrong AAD",
    )?;
    ok(format!("wrong AAD rejected: {e}"))?;

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
        "NotFound",
        "signing with a destroyed key",
    )?;
    ok(format!("signing now fails: {e}"))?;

    drop(ks);
    tmp.close()
        .map_err(|e| CliError::io("remove", &layout.root, e))?;
    outln!()?;
    outln!("tour complete")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

//! The subcommands that work on an existing store, opened here or reached
//! through keystored ([`Target`]).

use crate::cli::{
    AgreeArgs, CryptArgs, DeriveArgs, KeyCommand, PubkeyArgs, SigFormat, SignArgs, VerifyArgs,
};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::target::Target;
use keystore_api::rfc3339;
use keystore_api::{limits, Algorithm, KeyInfo, KeySpec, SecretBytes, SignatureFormat, Usages};
use std::path::Path;
use zeroize::Zeroizing;

/// Largest `--secret-file` accepted: 64 hex characters and a CRLF.
const MAX_SECRET_FILE: u64 = 66;

/// `keyctl key destroy` without `--yes`: checked before the store is unlocked.
pub fn check_destroy_confirmed(cmd: &KeyCommand) -> CliResult<()> {
    match cmd {
        KeyCommand::Destroy { name, yes: false } => Err(CliError::invalid(format!(
            "destroying key '{name}' is irreversible; pass --yes to confirm"
        ))),
        _ => Ok(()),
    }
}

pub fn key(ks: &Target, cmd: KeyCommand) -> CliResult<()> {
    match cmd {
        KeyCommand::Create {
            name,
            alg,
            usages,
            backup_eligible,
            cryptoperiod,
            encryption_limit,
        } => {
            let mut spec = spec(alg, usages.as_deref())?;
            if backup_eligible {
                spec = spec.backup_eligible();
            }
            if let Some(p) = cryptoperiod {
                spec = spec.with_cryptoperiod(p);
            }
            if let Some(n) = encryption_limit {
                spec = spec.with_encryption_limit(n);
            }
            let info = ks.caller("key create")?.create(&name, spec)?;
            outln!("created {}", summary(&info))?;
        }
        KeyCommand::Import {
            name,
            alg,
            secret_file,
            usages,
        } => {
            let spec = spec(alg, usages.as_deref())?;
            let secret = read_import_secret(&secret_file)?;
            let info = ks.caller("key import")?.import(&name, spec, &secret)?;
            outln!("imported {}", summary(&info))?;
        }
        KeyCommand::List => print_list(&ks.list()?)?,
        KeyCommand::Show { name } => print_show(&ks.info(&name)?)?,
        KeyCommand::Destroy { name, yes } => {
            if !yes {
                return check_destroy_confirmed(&KeyCommand::Destroy { name, yes });
            }
            ks.caller("key destroy")?.destroy(&name)?;
            outln!("destroyed key '{name}' (every version; the name stays reserved)")?;
        }
        lifecycle => crate::admin::key(ks, &lifecycle)?,
    }
    Ok(())
}

fn spec(alg: Algorithm, usages: Option<&str>) -> CliResult<KeySpec> {
    let spec = KeySpec::new(alg);
    Ok(match usages {
        Some(u) => spec.with_usages(u.parse::<Usages>()?),
        None => spec,
    })
}

/// Reads a 32-byte secret: 32 raw bytes, or 64 hex characters with an
/// optional trailing newline.
pub fn read_import_secret(path: &Path) -> CliResult<SecretBytes> {
    let raw = files::read_secret(path, MAX_SECRET_FILE, "secret file")?;
    if raw.len() == 32 {
        return Ok(raw);
    }
    let text = raw.expose();
    let text = text
        .strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text);
    if text.len() == 64 {
        let mut out = SecretBytes::zeroed(32);
        if hex::decode_to_slice(text, out.expose_mut()).is_ok() {
            return Ok(out);
        }
    }
    Err(CliError::invalid(format!(
        "secret file {} must hold 32 raw bytes or 64 hex characters",
        path.display()
    )))
}

fn summary(info: &KeyInfo) -> String {
    let mut s = format!(
        "key '{}' ({}, usages {})",
        info.name, info.algorithm, info.usages
    );
    if let Some(v) = info.active() {
        s.push_str(&format!(", version {}", v.version));
        if let Some(fp) = &v.fingerprint {
            s.push_str(&format!(", {fp}"));
        }
    }
    s
}

fn print_list(keys: &[KeyInfo]) -> CliResult<()> {
    outln!("{}", render_list(keys).trim_end_matches('\n'))
}

/// The `key list` table.
pub(crate) fn render_list(keys: &[KeyInfo]) -> String {
    if keys.is_empty() {
        return "no keys\n".to_string();
    }
    let header = [
        "NAME",
        "ALGORITHM",
        "USAGES",
        "ACTIVE",
        "ORIGIN",
        "FINGERPRINT",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = keys
        .iter()
        .map(|k| {
            let active = k.active();
            [
                k.name.clone(),
                k.algorithm.to_string(),
                k.usages.to_string(),
                active.map_or("-".into(), |v| v.version.to_string()),
                active.map_or("-".into(), |v| v.origin.to_string()),
                active
                    .and_then(|v| v.fingerprint.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn print_show(k: &KeyInfo) -> CliResult<()> {
    outln!("name:       {}", k.name)?;
    outln!("algorithm:  {}", k.algorithm)?;
    outln!("usages:     {}", k.usages)?;
    if k.usages.has_mac_and_derive() {
        outln!(
            "warning:    this key holds both mac and derive usages, which new keys cannot: {}; \
             create separate mac and derive keys and retire this one",
            Usages::MAC_AND_DERIVE_REASON
        )?;
    }
    outln!("created:    {}", rfc3339(k.created_at))?;
    outln!(
        "active:     {}",
        k.active()
            .map_or("none".to_string(), |v| format!("version {}", v.version))
    )?;
    if let Some(limit) = k.encryption_limit {
        outln!("limit:      {limit} encryptions per version (AES-GCM, SP 800-38D)")?;
    }
    outln!("versions:")?;
    for v in &k.versions {
        outln!("  - version:     {}", v.version)?;
        outln!("    state:       {}", v.state)?;
        outln!("    origin:      {}", v.origin)?;
        outln!("    created:     {}", rfc3339(v.created_at))?;
        outln!(
            "    fingerprint: {}",
            v.fingerprint.as_deref().unwrap_or("- (secret key)")
        )?;
        if let Some(u) = v.encryptions {
            outln!("    encryptions: {}/{}", u.reserved, u.limit)?;
        }
    }
    Ok(())
}

pub fn sign(ks: &Target, a: SignArgs) -> CliResult<()> {
    let msg = files::read_input(&a.input, limits::MAX_DATA_LEN, "message")?;
    let format = match a.format {
        SigFormat::Der => SignatureFormat::Der,
        SigFormat::Fixed => SignatureFormat::Fixed,
    };
    let sig = ks.sign(&a.name, &msg, format)?;
    files::write_public(&a.out, &sig.bytes)?;
    note!(
        "signed with key '{}' version {} ({} bytes)",
        a.name,
        sig.version,
        sig.bytes.len()
    );
    Ok(())
}

pub fn verify(ks: &Target, a: VerifyArgs) -> CliResult<()> {
    let msg = files::read_input(&a.input, limits::MAX_DATA_LEN, "message")?;
    let sig = files::read_input(&a.sig, limits::MAX_SIGNATURE_LEN, "signature")?;
    let version = ks.verify(&a.name, &msg, &sig, a.version)?;
    outln!("OK (version {version})")?;
    Ok(())
}

pub fn pubkey(ks: &Target, a: PubkeyArgs) -> CliResult<()> {
    let pk = ks.public_key(&a.name)?;
    match &a.out {
        Some(path) => {
            files::write_public(path, pk.to_pem().as_bytes())?;
            note!(
                "wrote the public key of '{}' ({}) to {}",
                a.name,
                pk.fingerprint(),
                path.display()
            );
        }
        None => files::write_public(Path::new("-"), pk.to_pem().as_bytes())?,
    }
    Ok(())
}

pub fn encrypt(ks: &Target, a: CryptArgs) -> CliResult<()> {
    let plaintext = Zeroizing::new(files::read_input(
        &a.input,
        limits::MAX_DATA_LEN,
        "plaintext",
    )?);
    let envelope = ks.encrypt(&a.name, &plaintext, a.aad.as_bytes())?;
    files::write_public(&a.out, &envelope)
}

pub fn decrypt(ks: &Target, a: CryptArgs) -> CliResult<()> {
    let envelope = files::read_input(
        &a.input,
        limits::MAX_DATA_LEN + keystore_api::envelope::MIN_LEN,
        "ciphertext",
    )?;
    let plaintext = ks.decrypt(&a.name, &envelope, a.aad.as_bytes())?;
    files::write_secret(&a.out, plaintext.expose())
}

pub fn derive(ks: &Target, a: DeriveArgs) -> CliResult<()> {
    let salt = hex::decode(a.salt_hex.trim())
        .map_err(|e| CliError::invalid(format!("--salt-hex is not valid hex: {e}")))?;
    let okm = ks.derive_hkdf_sha256(&a.name, &salt, a.info.as_bytes(), a.len)?;
    write_derived(&okm, a.out.as_deref())
}

pub fn agree(ks: &Target, a: AgreeArgs) -> CliResult<()> {
    let info = hex::decode(a.info_hex.trim())
        .map_err(|e| CliError::invalid(format!("--info-hex is not valid hex: {e}")))?;
    let peer = files::read_input(&a.peer, 16 * 1024, "peer public key")?;
    let okm = ks.agree_sha256_kdf(&a.name, &peer, &info, a.len)?;
    write_derived(&okm, a.out.as_deref())
}

/// Derived secret bytes to `out` (0600), or as hex to stdout with a warning.
fn write_derived(okm: &SecretBytes, out: Option<&Path>) -> CliResult<()> {
    match out {
        Some(path) => {
            files::write_secret(path, okm.expose())?;
            note!(
                "wrote {} derived bytes to {} (secret: protect this file)",
                okm.len(),
                path.display()
            );
        }
        None => {
            let hex = Zeroizing::new(hex::encode(okm.expose()));
            outln!("{}", hex.as_str())?;
            note!("note: derived key material is secret; prefer --out FILE over the terminal");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_secret_formats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        let key: Vec<u8> = (0u8..32).collect();
        let hexed = hex::encode(&key);
        for content in [
            key.clone(),
            hexed.clone().into_bytes(),
            format!("{hexed}\n").into_bytes(),
            format!("{hexed}\r\n").into_bytes(),
        ] {
            std::fs::write(&p, &content).expect("write");
            assert_eq!(read_import_secret(&p).expect("parse").expose(), &key[..]);
        }
        for bad in [vec![1u8; 31], vec![b'z'; 64], vec![1u8; 33]] {
            std::fs::write(&p, &bad).expect("write");
            assert_eq!(read_import_secret(&p).unwrap_err().exit_code(), 2);
        }
    }
}

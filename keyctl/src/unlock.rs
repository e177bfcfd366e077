//! Where the store's key-encryption key comes from: a key file or a passphrase
//! (file, environment variable, or an interactive prompt on a terminal).

use crate::cli::UnlockArgs;
use crate::error::{CliError, CliResult};
use crate::files;
use backend_soft::Unlock;
use keystore_api::SecretBytes;
use std::io::IsTerminal;
use std::path::Path;

/// The environment variable read for a passphrase when `--passphrase-env` is not given.
pub const DEFAULT_PASSPHRASE_ENV: &str = "KEYCTL_PASSPHRASE";

/// Largest passphrase file accepted (the soft store takes at most 4096 bytes).
const MAX_PASSPHRASE_FILE: u64 = 8192;

/// Why the unlock is needed: opening asks once, creating asks twice on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    Create,
}

/// Resolves the unlock source, in this order: key file, passphrase file,
/// passphrase environment variable, interactive prompt (terminal only).
pub fn resolve(args: &UnlockArgs, store: &Path, purpose: Purpose) -> CliResult<Unlock> {
    if let Some(path) = &args.key_file {
        // Checked here so that a missing file is reported as an I/O problem on
        // a user file rather than as a backend failure.
        std::fs::metadata(path).map_err(|e| CliError::io("read key file", path, e))?;
        return Ok(Unlock::KeyFile(path.clone()));
    }
    passphrase(args, store, purpose).map(Unlock::Passphrase)
}

fn passphrase(args: &UnlockArgs, store: &Path, purpose: Purpose) -> CliResult<SecretBytes> {
    if let Some(path) = &args.passphrase_file {
        return read_passphrase_file(path);
    }
    let (var, explicit) = match &args.passphrase_env {
        Some(v) => (v.as_str(), true),
        None => (DEFAULT_PASSPHRASE_ENV, false),
    };
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        return Err(CliError::invalid(format!(
            "--passphrase-env needs a variable name, got '{var}'"
        )));
    }
    if let Some(value) = std::env::var_os(var) {
        return Ok(SecretBytes::new(value.into_encoded_bytes()));
    }
    if explicit {
        return Err(CliError::invalid(format!(
            "the environment variable {var} named by --passphrase-env is not set"
        )));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::invalid(format!(
            "no passphrase source and stdin is not a terminal; use --key-file, \
             --passphrase-file or set {DEFAULT_PASSPHRASE_ENV}"
        )));
    }
    prompt(store, purpose)
}

/// Reads a passphrase file, removing one trailing newline (`\n` or `\r\n`).
pub fn read_passphrase_file(path: &Path) -> CliResult<SecretBytes> {
    let mut bytes = files::read_secret(path, MAX_PASSPHRASE_FILE, "passphrase file")?;
    let mut len = bytes.len();
    if bytes.expose().ends_with(b"\r\n") {
        len -= 2;
    } else if bytes.expose().ends_with(b"\n") {
        len -= 1;
    }
    if len == bytes.len() {
        return Ok(bytes);
    }
    let trimmed = SecretBytes::from_slice(&bytes.expose()[..len]);
    bytes.expose_mut().fill(0);
    Ok(trimmed)
}

fn prompt(store: &Path, purpose: Purpose) -> CliResult<SecretBytes> {
    let ask = |text: &str| -> CliResult<SecretBytes> {
        rpassword::prompt_password(text)
            .map(|s| SecretBytes::new(s.into_bytes()))
            .map_err(|e| CliError::io("read a passphrase from", Path::new("the terminal"), e))
    };
    let first = ask(&format!("Passphrase for {}: ", store.display()))?;
    if purpose == Purpose::Create {
        let second = ask("Repeat the passphrase: ")?;
        if first != second {
            return Err(CliError::invalid("the passphrases do not match"));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_loses_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, expected) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret\n\n", b"secret\n"),
            (b"secret", b"secret"),
        ] {
            let p = dir.path().join("pw");
            std::fs::write(&p, content).expect("write");
            let got = read_passphrase_file(&p).expect("read");
            assert_eq!(got.expose(), expected);
        }
    }
}

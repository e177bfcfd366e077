//! Key-encryption keys: where the key that wraps the store key comes from.

use crate::header::Reader;
use keystore_api::{Error, Result, SecretBytes};
use std::path::{Path, PathBuf};

/// How a soft store is unlocked.
pub enum Unlock {
    /// A passphrase, stretched by the KDF recorded in the store header.
    Passphrase(SecretBytes),
    /// A file holding exactly 32 random bytes, used as the KEK directly.
    KeyFile(PathBuf),
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase([REDACTED])"),
            Unlock::KeyFile(p) => write!(f, "Unlock::KeyFile({})", p.display()),
        }
    }
}

/// The passphrase KDF and its cost parameters, recorded in the store header
/// so that they can be raised later with [`crate::SoftStore::change_unlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA256 (NIST SP 800-132), with a 32-byte salt.
    Pbkdf2Sha256 {
        /// Iteration count; at least [`Kdf::MIN_PBKDF2_ITERATIONS`].
        iterations: u32,
    },
    /// Argon2id (RFC 9106), with a 32-byte salt.
    Argon2id {
        /// Memory in KiB; at least [`Kdf::MIN_ARGON2_MEMORY_KIB`].
        memory_kib: u32,
        /// Passes; at least 1.
        iterations: u32,
        /// Lanes; at least 1.
        parallelism: u32,
    },
    /// No KDF: the KEK is a 32-byte key file.
    KeyFile,
}

impl Kdf {
    /// Lowest PBKDF2 iteration count accepted when creating a store.
    pub const MIN_PBKDF2_ITERATIONS: u32 = 100_000;
    /// Lowest Argon2id memory accepted when creating a store (OWASP minimum, 19 MiB).
    pub const MIN_ARGON2_MEMORY_KIB: u32 = 19 * 1024;

    /// The default passphrase KDF: PBKDF2-HMAC-SHA256 with 600,000 iterations
    /// (the current OWASP figure for SP 800-132 PBKDF2-HMAC-SHA256).
    pub fn default_passphrase() -> Kdf {
        Kdf::Pbkdf2Sha256 {
            iterations: 600_000,
        }
    }

    /// The recommended Argon2id setting: 64 MiB, 3 passes, 1 lane.
    pub fn argon2id_default() -> Kdf {
        Kdf::Argon2id {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }

    /// Rejects parameters below the floors.
    pub fn check(self) -> Result<()> {
        match self {
            Kdf::Pbkdf2Sha256 { iterations } if iterations < Self::MIN_PBKDF2_ITERATIONS => {
                Err(Error::Policy(format!(
                    "PBKDF2 needs at least {} iterations, got {iterations}",
                    Self::MIN_PBKDF2_ITERATIONS
                )))
            }
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } if memory_kib < Self::MIN_ARGON2_MEMORY_KIB
                || iterations == 0
                || parallelism == 0
                || parallelism > 16 =>
            {
                Err(Error::Policy(format!(
                    "Argon2id needs at least {} KiB of memory, 1 pass and 1..=16 lanes",
                    Self::MIN_ARGON2_MEMORY_KIB
                )))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn encode(self, out: &mut Vec<u8>) {
        match self {
            Kdf::Pbkdf2Sha256 { iterations } => {
                out.push(1);
                out.extend_from_slice(&iterations.to_be_bytes());
            }
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } => {
                out.push(2);
                out.extend_from_slice(&memory_kib.to_be_bytes());
                out.extend_from_slice(&iterations.to_be_bytes());
                out.extend_from_slice(&parallelism.to_be_bytes());
            }
            Kdf::KeyFile => out.push(3),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Kdf> {
        Ok(match r.u8()? {
            1 => Kdf::Pbkdf2Sha256 {
                iterations: r.u32()?,
            },
            2 => Kdf::Argon2id {
                memory_kib: r.u32()?,
                iterations: r.u32()?,
                parallelism: r.u32()?,
            },
            3 => Kdf::KeyFile,
            other => {
                return Err(Error::Integrity(format!(
                    "soft store header names unknown KEK kind {other}"
                )))
            }
        })
    }
}

/// A 32-byte key-encryption key in zeroizing memory.
pub(crate) struct Kek(SecretBytes);

impl Kek {
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// Derives the KEK for `unlock` under `kdf` and `salt`. This is the only
    /// place a passphrase KDF runs: once per open or re-key.
    pub fn derive(unlock: &Unlock, kdf: Kdf, salt: &[u8]) -> Result<Kek> {
        match (unlock, kdf) {
            (Unlock::KeyFile(path), Kdf::KeyFile) => read_key_file(path),
            (Unlock::Passphrase(pw), Kdf::Pbkdf2Sha256 { iterations }) => {
                check_passphrase(pw)?;
                let mut out = SecretBytes::zeroed(32);
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    pw.expose(),
                    salt,
                    iterations,
                    out.expose_mut(),
                );
                Ok(Kek(out))
            }
            (
                Unlock::Passphrase(pw),
                Kdf::Argon2id {
                    memory_kib,
                    iterations,
                    parallelism,
                },
            ) => {
                check_passphrase(pw)?;
                let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
                    .map_err(|_| {
                        Error::Integrity("soft store header has invalid Argon2id parameters".into())
                    })?;
                let a2 = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = SecretBytes::zeroed(32);
                a2.hash_password_into(pw.expose(), salt, out.expose_mut())
                    .map_err(|_| {
                        Error::InvalidInput("Argon2id rejected the passphrase or salt".into())
                    })?;
                Ok(Kek(out))
            }
            (Unlock::Passphrase(_), Kdf::KeyFile) => Err(Error::Auth(
                "this soft store is unlocked with a key file, not a passphrase".into(),
            )),
            (Unlock::KeyFile(_), _) => Err(Error::Auth(
                "this soft store is unlocked with a passphrase, not a key file".into(),
            )),
        }
    }
}

fn check_passphrase(pw: &SecretBytes) -> Result<()> {
    if pw.is_empty() {
        return Err(Error::InvalidInput("the passphrase is empty".into()));
    }
    if pw.len() > 4096 {
        return Err(Error::InvalidInput(
            "the passphrase is longer than 4096 bytes".into(),
        ));
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Kek> {
    let bytes = std::fs::read(path).map(SecretBytes::new).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("key file {} does not exist", path.display()))
        } else {
            Error::backend(
                "soft",
                format!("cannot read key file {}", path.display()),
                e,
            )
        }
    })?;
    if bytes.len() != 32 {
        return Err(Error::InvalidInput(format!(
            "key file {} must hold exactly 32 bytes, it holds {}",
            path.display(),
            bytes.len()
        )));
    }
    Ok(Kek(bytes))
}

/// Writes a new random 32-byte key file at `path` (mode 0600), failing if it exists.
pub fn create_key_file(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut key = SecretBytes::zeroed(32);
    crate::random(key.expose_mut())?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::AlreadyExists(format!("key file {} already exists", path.display()))
        } else {
            Error::backend(
                "soft",
                format!("cannot create key file {}", path.display()),
                e,
            )
        }
    })?;
    f.write_all(key.expose())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            Error::backend(
                "soft",
                format!("cannot write key file {}", path.display()),
                e,
            )
        })
}

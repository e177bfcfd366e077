//! The daemon's configuration file (TOML): where it listens, which store it
//! owns and how it unlocks it, its limits, and where its policy is.
//!
//! ```toml
//! policy = "/etc/keystore/policy.toml"
//!
//! [socket]
//! path = "/run/keystore/keystore.sock"
//! group = "keystore-users"        # name or numeric gid; the socket is 0660
//!
//! [store]
//! dir = "/var/lib/keystore"       # holds metadata.sqlite (and soft/, tpm/)
//! backend = "soft"                # soft | pkcs11 | tpm | soft+tpm-sealed
//! key_file = "/etc/keystore/store.key"   # soft: 32-byte key file
//! # passphrase_file = "..."        # soft: or a passphrase
//! # pkcs11_module, token_label or token_serial, pin_file: pkcs11
//! # tcti, owner_auth_file: tpm and soft+tpm-sealed
//!
//! [limits]
//! max_message_bytes = 16842752
//! max_connections = 4096
//! request_timeout_seconds = 30
//! lock_timeout_seconds = 5
//! ```
//!
//! Secrets are never in this file: it names the files that hold them.

use keystore_api::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The policy file (caller → role and key names).
    pub policy: PathBuf,
    /// The listening socket.
    pub socket: SocketConfig,
    /// The store the daemon owns.
    pub store: StoreConfig,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// The Unix socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Its path. Its directory must exist; a stale socket there is replaced.
    pub path: PathBuf,
    /// The group that may connect (name or gid). Without one, the socket's
    /// group is the daemon's.
    pub group: Option<String>,
}

/// Which backend holds the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendKind {
    /// The software sealed store (`DIR/soft`).
    #[serde(rename = "soft")]
    Soft,
    /// A PKCS#11 token.
    #[serde(rename = "pkcs11")]
    Pkcs11,
    /// A TPM 2.0 (`DIR/tpm` registry).
    #[serde(rename = "tpm")]
    Tpm,
    /// The software store with its key-encryption key sealed in a TPM.
    #[serde(rename = "soft+tpm-sealed")]
    SoftTpmSealed,
}

/// The store and how to unlock it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The store directory (`metadata.sqlite`, and `soft/` or `tpm/`).
    pub dir: PathBuf,
    /// The backend.
    pub backend: BackendKind,
    /// soft: a file of exactly 32 random bytes.
    pub key_file: Option<PathBuf>,
    /// soft: a file holding the passphrase.
    pub passphrase_file: Option<PathBuf>,
    /// pkcs11: the module (default: SoftHSM2).
    pub pkcs11_module: Option<PathBuf>,
    /// pkcs11: the token's label.
    pub token_label: Option<String>,
    /// pkcs11: the token's serial.
    pub token_serial: Option<String>,
    /// pkcs11: the file holding the user PIN.
    pub pin_file: Option<PathBuf>,
    /// pkcs11: the key namespace on the token.
    pub pkcs11_namespace: Option<String>,
    /// tpm, soft+tpm-sealed: the TCTI (default: `TPM2TOOLS_TCTI`, else the device).
    pub tcti: Option<String>,
    /// tpm, soft+tpm-sealed: a file holding the owner hierarchy auth.
    pub owner_auth_file: Option<PathBuf>,
}

/// Limits that keep one caller from exhausting the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent calls on one connection.
    pub max_streams_per_connection: u32,
    /// A call (reading the request included) that takes longer is cancelled.
    pub request_timeout_seconds: u64,
    /// How long a lifecycle call waits for the store's write lock.
    pub lock_timeout_seconds: u64,
    /// Audited refusals per caller uid per minute; more are counted and
    /// reported in the next audited one.
    pub audited_refusals_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: keystore_rpc::DEFAULT_MAX_MESSAGE_LEN,
            max_connections: 4096,
            max_streams_per_connection: 64,
            request_timeout_seconds: 30,
            lock_timeout_seconds: 5,
            audited_refusals_per_minute: 60,
        }
    }
}

impl Limits {
    /// The call timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](keystore_api::ErrorKind::NotFound) for a
    /// missing file; [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput)
    /// for bad TOML, unknown keys or out-of-range limits, naming what is wrong.
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_text(path, "configuration")?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| Error::invalid_input(format!("{}: {}", path.display(), e.message())))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let l = &self.limits;
        if l.max_message_bytes < 1024 || l.max_message_bytes > 64 * 1024 * 1024 {
            return Err(Error::invalid_input(
                "limits.max_message_bytes is 1 KiB to 64 MiB",
            ));
        }
        if l.max_connections == 0 || l.max_streams_per_connection == 0 {
            return Err(Error::invalid_input(
                "limits.max_connections and limits.max_streams_per_connection are at least 1",
            ));
        }
        if l.request_timeout_seconds == 0 {
            return Err(Error::invalid_input(
                "limits.request_timeout_seconds is at least 1",
            ));
        }
        Ok(())
    }
}

/// Reads a small text file, naming it in the error.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let msg = format!("cannot read the {what} file {}: {e}", path.display());
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(msg)
        } else {
            Error::invalid_input(msg)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads_and_limits_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keystored.toml");
        std::fs::write(&path, include_str!("../deploy/keystored.toml")).expect("write");
        let c = Config::load(&path).expect("example");
        assert_eq!(c.store.backend, BackendKind::Soft);
        assert_eq!(c.socket.group.as_deref(), Some("keystore-users"));
        assert_eq!(c.limits.max_connections, 4096);
        let bad = include_str!("../deploy/keystored.toml")
            .replace("max_message_bytes = 16842752", "max_message_bytes = 10");
        std::fs::write(&path, bad).expect("write");
        assert!(Config::load(&path)
            .unwrap_err()
            .detail()
            .contains("max_message_bytes"));
        std::fs::write(&path, "policy = 1").expect("write");
        assert_eq!(
            Config::load(&path).unwrap_err().kind(),
            keystore_api::ErrorKind::InvalidInput
        );
        assert_eq!(
            Config::load(&dir.path().join("missing.toml"))
                .unwrap_err()
                .kind(),
            keystore_api::ErrorKind::NotFound
        );
    }
}

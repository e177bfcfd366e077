//! Where the token is and how to log in: module path, token selector, user
//! PIN source and the key namespace.
//!
//! The user PIN is read when the backend opens, held only long enough to
//! log in (in zeroizing memory) and never logged or printed. The SO PIN is
//! not part of this configuration: only [`crate::admin`] takes it.

use crate::error::COMPONENT;
use keystore_backend::{Error, Result, SecretBytes};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable that overrides the default PKCS#11 module path.
pub const MODULE_ENV: &str = "KEYSTORE_PKCS11_MODULE";

/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "keystore";

/// Where SoftHSM2's module lives on common platforms, in search order.
const SOFTHSM_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
    "/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",
];

/// The PKCS#11 module to load when none is configured: `$KEYSTORE_PKCS11_MODULE`
/// if set, else the first SoftHSM2 module found in the platform's usual
/// locations, else the Debian/Ubuntu path (so the error names a real
/// location).
pub fn default_module_path() -> PathBuf {
    if let Some(p) = std::env::var_os(MODULE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    SOFTHSM_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or(Path::new(SOFTHSM_CANDIDATES[0]))
        .to_path_buf()
}

/// Which token to use. Slot numbers are deliberately not offered: they are
/// not stable (SoftHSM renumbers slots when a token is initialised, and
/// readers enumerate in any order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token whose `CK_TOKEN_INFO.label` equals this (trailing blanks
    /// ignored). Two tokens with the same label are an error.
    Label(String),
    /// The token whose `CK_TOKEN_INFO.serialNumber` equals this.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "token labelled '{l}'"),
            TokenSelector::Serial(s) => write!(f, "token with serial '{s}'"),
        }
    }
}

/// Where the user PIN comes from.
pub enum PinSource {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file (one trailing newline removed).
    File(PathBuf),
    /// A PIN the caller already holds (e.g. from its own secret store).
    Value(SecretBytes),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env(var) => write!(f, "PinSource::Env({var})"),
            PinSource::File(path) => write!(f, "PinSource::File({})", path.display()),
            PinSource::Value(_) => f.write_str("PinSource::Value([REDACTED])"),
        }
    }
}

impl PinSource {
    /// Reads the PIN. A missing variable or file, or an empty PIN, is
    /// [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput); an unreadable file is [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend).
    pub fn read(&self) -> Result<SecretBytes> {
        let pin = match self {
            PinSource::Env(var) => match std::env::var_os(var) {
                Some(v) => SecretBytes::new(v.into_encoded_bytes()),
                None => {
                    return Err(Error::invalid_input(format!(
                        "the PIN environment variable {var} is not set"
                    )))
                }
            },
            PinSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::invalid_input(format!("PIN file {} does not exist", path.display()))
                    } else {
                        Error::backend(
                            COMPONENT,
                            format!("cannot read PIN file {}", path.display()),
                            e,
                        )
                    }
                })?;
                let mut bytes = SecretBytes::new(bytes);
                let mut len = bytes.len();
                if bytes.expose().ends_with(b"\n") {
                    len -= 1;
                    if bytes.expose()[..len].ends_with(b"\r") {
                        len -= 1;
                    }
                }
                let trimmed = SecretBytes::from_slice(&bytes.expose()[..len]);
                zeroize::Zeroize::zeroize(bytes.expose_mut());
                trimmed
            }
            PinSource::Value(v) => SecretBytes::from_slice(v.expose()),
        };
        if pin.is_empty() {
            return Err(Error::invalid_input("the user PIN is empty"));
        }
        Ok(pin)
    }
}

/// Which signatures [`crate::Pkcs11Backend`] verifies on the host (with
/// aws-lc-rs, an implementation independent of the token) against the key's
/// public key object before returning them.
///
/// A verification costs about 60–90 µs for ECDSA P-256 and 20–30 µs for
/// RSA-2048 on a 2-core gateway, as much as or more than the token's own
/// signature on a software token; what it catches is a key pair on the token
/// whose private and public halves do not match (damaged, swapped or
/// planted objects), or a token that computes faulty signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureCheck {
    /// The first signature made with a key's private key object after it was
    /// looked up (after open, after its handle was forgotten) or had its
    /// protection attributes re-checked (at most every
    /// [`crate::PROTECTION_RECHECK_INTERVAL`] while the key is in use) is
    /// verified; the others are not. A mismatched or damaged key pair is
    /// caught on its first use and within that interval after it changes,
    /// for at most one verification per key per interval.
    #[default]
    FirstUse,
    /// Every signature is verified before it is returned (for tokens whose
    /// arithmetic is not trusted, e.g. against fault attacks).
    Always,
}

/// How to reach the token and which of its objects belong to this store.
#[derive(Debug)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library) to load.
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The user PIN.
    pub user_pin: PinSource,
    /// Separates stores that share one token: it is part of every key
    /// handle (`CKA_ID`), so `list`, `wipe` and reconciliation only see this
    /// store's objects. Changing it orphans the store's keys.
    pub namespace: String,
    /// Idle sessions kept open for reuse beyond the logged-in anchor session.
    pub max_idle_sessions: usize,
    /// Which signatures are verified on the host before they are returned
    /// (default [`SignatureCheck::FirstUse`]).
    pub signature_check: SignatureCheck,
    /// How long opening keeps looking for a token that is missing or
    /// unreadable, or fails transiently, before it reports `NotFound` (or
    /// the last error): another process writing the token makes SoftHSM
    /// hide it for a moment (default [`DEFAULT_TOKEN_WAIT`]).
    pub token_wait: Duration,
}

/// The default [`Pkcs11Config::token_wait`]: 2 seconds.
pub const DEFAULT_TOKEN_WAIT: Duration = Duration::from_secs(2);

impl Pkcs11Config {
    /// A configuration with the default module ([`default_module_path`]),
    /// the default namespace, up to 8 idle sessions,
    /// [`SignatureCheck::FirstUse`] and a [`DEFAULT_TOKEN_WAIT`] token wait.
    pub fn new(token: TokenSelector, user_pin: PinSource) -> Self {
        Pkcs11Config {
            module: default_module_path(),
            token,
            user_pin,
            namespace: DEFAULT_NAMESPACE.to_string(),
            max_idle_sessions: 8,
            signature_check: SignatureCheck::default(),
            token_wait: DEFAULT_TOKEN_WAIT,
        }
    }

    /// Uses the module at `path`.
    pub fn with_module(mut self, path: impl Into<PathBuf>) -> Self {
        self.module = path.into();
        self
    }

    /// Uses `namespace` for this store's key handles.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Verifies signatures on the host as `check` says.
    pub fn with_signature_check(mut self, check: SignatureCheck) -> Self {
        self.signature_check = check;
        self
    }

    /// Keeps looking for a missing or unreadable token for up to `wait`
    /// when opening ([`Pkcs11Config::token_wait`]).
    pub fn with_token_wait(mut self, wait: Duration) -> Self {
        self.token_wait = wait;
        self
    }

    /// Checks the fields that can be checked without the token.
    pub(crate) fn check(&self) -> Result<()> {
        if self.namespace.is_empty() || self.namespace.len() > 64 {
            return Err(Error::invalid_input(
                "a PKCS#11 key namespace is 1 to 64 bytes",
            ));
        }
        let empty = match &self.token {
            TokenSelector::Label(l) => l.trim_end().is_empty(),
            TokenSelector::Serial(s) => s.trim_end().is_empty(),
        };
        if empty {
            return Err(Error::invalid_input("the token label or serial is empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_backend::ErrorKind;

    #[test]
    fn pin_file_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pin");
        std::fs::write(&p, b"1234\r\n").expect("write");
        assert_eq!(
            PinSource::File(p.clone()).read().expect("pin").expose(),
            b"1234"
        );
        std::fs::write(&p, b"12 34\n\n").expect("write");
        assert_eq!(
            PinSource::File(p.clone()).read().expect("pin").expose(),
            b"12 34\n"
        );
        std::fs::write(&p, b"\n").expect("write");
        assert_eq!(
            PinSource::File(p).read().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn missing_sources_are_invalid_input() {
        let e = PinSource::Env("KEYSTORE_TEST_SURELY_UNSET_PIN_VAR".into())
            .read()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = PinSource::File("/nonexistent/pin".into())
            .read()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn debug_redacts_the_pin() {
        let s = format!("{:?}", PinSource::Value(SecretBytes::from_slice(b"98765")));
        assert!(!s.contains("98765"), "{s}");
    }
}

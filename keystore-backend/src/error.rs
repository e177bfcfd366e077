//! The one error type of the keystore.
//!
//! Every fallible operation in every crate of the workspace returns [`Error`].
//! Messages name keys, algorithms and operations; they never carry key
//! material, plaintexts, passphrases or PINs.

/// Result alias used across the keystore crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error carried by [`Error::Backend`].
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in stable variants that callers can match on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named key, version or backend object does not exist (or was destroyed).
    #[error("not found: {0}")]
    NotFound(String),
    /// A key with this name already exists; the existing key was left untouched.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The backend cannot perform this operation for this algorithm.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller passed a malformed, empty or oversized argument.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The key version's lifecycle state forbids the operation.
    #[error("key state: {0}")]
    KeyState(String),
    /// The key's usage policy (or the store's policy) forbids the operation.
    #[error("policy: {0}")]
    Policy(String),
    /// A passphrase, PIN or key-encryption key was wrong.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Stored or supplied data failed an integrity check (AEAD tag, signature,
    /// record binding, truncation).
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// Another process (or thread) held the store's write lock for longer than
    /// the configured wait; nothing was changed. The message names the holder.
    /// Retrying later is safe.
    #[error("busy: {0}")]
    Busy(String),
    /// The backend or the metadata store failed for a reason of its own.
    #[error("{component}: {message}")]
    Backend {
        /// Which component failed, e.g. `soft`, `pkcs11`, `metadata`.
        component: &'static str,
        /// What the keystore was doing when it failed.
        message: String,
        /// The underlying error, if any. Never carries secret bytes.
        #[source]
        source: Option<BoxedSource>,
    },
}

impl Error {
    /// A backend error with an underlying source.
    pub fn backend(
        component: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxedSource>,
    ) -> Self {
        Error::Backend {
            component,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A backend error without an underlying source.
    pub fn backend_msg(component: &'static str, message: impl Into<String>) -> Self {
        Error::Backend {
            component,
            message: message.into(),
            source: None,
        }
    }

    /// The message without the variant's prefix (for one-line reports).
    pub fn message(&self) -> String {
        match self {
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::Unsupported(m)
            | Error::InvalidInput(m)
            | Error::KeyState(m)
            | Error::Policy(m)
            | Error::Auth(m)
            | Error::Integrity(m)
            | Error::Busy(m) => m.clone(),
            Error::Backend {
                component, message, ..
            } => format!("{component}: {message}"),
        }
    }

    /// The stable name of the variant, used by the CLI and the conformance matrix.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "NotFound",
            Error::AlreadyExists(_) => "AlreadyExists",
            Error::Unsupported(_) => "Unsupported",
            Error::InvalidInput(_) => "InvalidInput",
            Error::KeyState(_) => "KeyState",
            Error::Policy(_) => "Policy",
            Error::Auth(_) => "Auth",
            Error::Integrity(_) => "Integrity",
            Error::Busy(_) => "Busy",
            Error::Backend { .. } => "Backend",
        }
    }
}

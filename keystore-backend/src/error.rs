//! The one error type of the keystore.
//!
//! Every fallible operation in every crate of the workspace returns [`Error`].
//! Callers branch on its [`ErrorKind`] (a `Copy` enum), may read the
//! [`Component`] that failed and the key and version it concerned, and show
//! its message to a person. Messages name keys, algorithms and operations;
//! they never carry key material, plaintexts, passphrases or PINs.

use std::fmt;

/// Result alias used across the keystore crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error carried by an [`Error`].
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in stable kinds that callers match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named key, version or backend object does not exist (or was destroyed).
    NotFound,
    /// A key with this name already exists; the existing key was left untouched.
    AlreadyExists,
    /// The backend cannot perform this operation for this algorithm.
    Unsupported,
    /// The caller passed a malformed, empty or oversized argument.
    InvalidInput,
    /// The key version's lifecycle state forbids the operation.
    KeyState,
    /// The key's usage policy (or the store's policy, or the caller's role) forbids the operation.
    Policy,
    /// A passphrase, PIN or key-encryption key was wrong.
    Auth,
    /// Stored or supplied data failed an integrity check (AEAD tag, signature,
    /// record binding, truncation).
    Integrity,
    /// Another process (or thread) held the store's write lock for longer than
    /// the configured wait; nothing was changed. Retrying later is safe.
    Busy,
    /// A device, the metadata store or the file system failed for a reason of
    /// its own; [`Error::component`] names which.
    Backend,
    /// The keystore service (`keystored`) could not be reached, or the
    /// connection ended before it answered: whether the call took effect is
    /// unknown. Reconnecting and retrying a use is safe; check a lifecycle
    /// call's outcome before repeating it.
    Unavailable,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Unsupported,
        ErrorKind::InvalidInput,
        ErrorKind::KeyState,
        ErrorKind::Policy,
        ErrorKind::Auth,
        ErrorKind::Integrity,
        ErrorKind::Busy,
        ErrorKind::Backend,
        ErrorKind::Unavailable,
    ];

    /// The stable name of the kind (`"NotFound"`, …), as the CLI prints it and
    /// the conformance matrix records it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::KeyState => "KeyState",
            ErrorKind::Policy => "Policy",
            ErrorKind::Auth => "Auth",
            ErrorKind::Integrity => "Integrity",
            ErrorKind::Busy => "Busy",
            ErrorKind::Backend => "Backend",
            ErrorKind::Unavailable => "Unavailable",
        }
    }

    /// The kind named `name` (as [`ErrorKind::as_str`] spells it), if any.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The prefix of an error's one-line display.
    const fn prefix(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::KeyState => "key state",
            ErrorKind::Policy => "policy",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::Integrity => "integrity check failed",
            ErrorKind::Busy => "busy",
            ErrorKind::Backend => "backend",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of the system an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// The software sealed store (`backend-soft`).
    Soft,
    /// A PKCS#11 token (`backend-pkcs11`).
    Pkcs11,
    /// A TPM 2.0 (`backend-tpm`).
    Tpm,
    /// The keystore's SQLite metadata.
    Metadata,
    /// The keystore engine itself (locks, files, the OS).
    Keystore,
    /// The device PKI (`provisioning`).
    Provisioning,
    /// The device PKI's database (`pki.sqlite`).
    PkiDb,
    /// The keystore service (`keystored`) or the connection to it.
    Service,
}

impl Component {
    /// Every component, in declaration order.
    pub const ALL: [Component; 8] = [
        Component::Soft,
        Component::Pkcs11,
        Component::Tpm,
        Component::Metadata,
        Component::Keystore,
        Component::Provisioning,
        Component::PkiDb,
        Component::Service,
    ];

    /// The component named `name` (as [`Component::as_str`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The component's stable short name (`soft`, `pkcs11`, `tpm`, `metadata`,
    /// `keystore`, `provisioning`, `pki-db`, `service`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Soft => "soft",
            Component::Pkcs11 => "pkcs11",
            Component::Tpm => "tpm",
            Component::Metadata => "metadata",
            Component::Keystore => "keystore",
            Component::Provisioning => "provisioning",
            Component::PkiDb => "pki-db",
            Component::Service => "service",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A keystore error: a kind to branch on, a message for people, and
/// structured context (component, key, version) beside it.
///
/// `Result<T>` stays one pointer wide: the details are boxed.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    component: Option<Component>,
    key: Option<String>,
    version: Option<u32>,
    message: String,
    source: Option<BoxedSource>,
}

macro_rules! kind_constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Error::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// An error of `kind` with a message for people.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            component: None,
            key: None,
            version: None,
            message: message.into(),
            source: None,
        }))
    }

    kind_constructors! {
        /// [`ErrorKind::NotFound`].
        not_found => NotFound;
        /// [`ErrorKind::AlreadyExists`].
        already_exists => AlreadyExists;
        /// [`ErrorKind::Unsupported`].
        unsupported => Unsupported;
        /// [`ErrorKind::InvalidInput`].
        invalid_input => InvalidInput;
        /// [`ErrorKind::KeyState`].
        key_state => KeyState;
        /// [`ErrorKind::Policy`].
        policy => Policy;
        /// [`ErrorKind::Auth`].
        auth => Auth;
        /// [`ErrorKind::Integrity`].
        integrity => Integrity;
        /// [`ErrorKind::Busy`].
        busy => Busy;
        /// [`ErrorKind::Unavailable`].
        unavailable => Unavailable;
    }

    /// An [`ErrorKind::Backend`] error of `component` with an underlying source.
    pub fn backend(
        component: Component,
        message: impl Into<String>,
        source: impl Into<BoxedSource>,
    ) -> Self {
        Error::backend_msg(component, message).with_source(source)
    }

    /// An [`ErrorKind::Backend`] error of `component` without an underlying source.
    pub fn backend_msg(component: Component, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Backend, message).in_component(component)
    }

    /// Names the component the error comes from.
    #[must_use]
    pub fn in_component(mut self, component: Component) -> Self {
        self.0.component = Some(component);
        self
    }

    /// Names the key the error concerns (unless an inner layer already did).
    #[must_use]
    pub fn with_key(mut self, name: impl Into<String>) -> Self {
        if self.0.key.is_none() {
            self.0.key = Some(name.into());
        }
        self
    }

    /// Names the key version the error concerns (unless an inner layer already did).
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        if self.0.version.is_none() {
            self.0.version = Some(version);
        }
        self
    }

    /// Attaches the underlying error. It must carry no secret bytes.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxedSource>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Replaces the message, keeping kind, context and source.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether the error is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.0.kind == kind
    }

    /// The component that failed, when known (always for [`ErrorKind::Backend`]).
    pub fn component(&self) -> Option<Component> {
        self.0.component
    }

    /// The name of the key the error concerns, when known.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The key version the error concerns, when known.
    pub fn version(&self) -> Option<u32> {
        self.0.version
    }

    /// The message without the kind's prefix (for one-line reports); a
    /// backend error's message starts with its component.
    pub fn message(&self) -> String {
        match (self.0.kind, self.0.component) {
            (ErrorKind::Backend, Some(c)) => format!("{c}: {}", self.0.message),
            _ => self.0.message.clone(),
        }
    }

    /// The message as given, without prefix or component.
    pub fn detail(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.kind, self.0.component) {
            (ErrorKind::Backend, Some(c)) => write!(f, "{c}: {}", self.0.message),
            (kind, _) => write!(f, "{}: {}", kind.prefix(), self.0.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind);
        if let Some(c) = self.0.component {
            d.field("component", &c);
        }
        if let Some(k) = &self.0.key {
            d.field("key", k);
        }
        if let Some(v) = self.0.version {
            d.field("version", &v);
        }
        d.field("message", &self.0.message);
        if let Some(s) = &self.0.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_kind_prefix_and_backend_component() {
        assert_eq!(
            Error::not_found("key 'a'").to_string(),
            "not found: key 'a'"
        );
        let e = Error::backend_msg(Component::Tpm, "bus gone");
        assert_eq!(e.to_string(), "tpm: bus gone");
        assert_eq!(e.message(), "tpm: bus gone");
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert_eq!(e.component(), Some(Component::Tpm));
    }

    #[test]
    fn context_is_structured_and_the_innermost_wins() {
        let e = Error::key_state("revoked")
            .with_key("fw")
            .with_version(2)
            .with_key("outer")
            .with_version(9);
        assert_eq!(e.key(), Some("fw"));
        assert_eq!(e.version(), Some(2));
        assert!(e.is(ErrorKind::KeyState));
        let dbg = format!("{e:?}");
        assert!(dbg.contains("KeyState") && dbg.contains("fw"), "{dbg}");
    }

    #[test]
    fn kind_names_are_stable_and_distinct() {
        let names: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::Integrity.to_string(), "Integrity");
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        for c in Component::ALL {
            assert_eq!(Component::from_name(c.as_str()), Some(c));
        }
        assert_eq!(ErrorKind::from_name("nope"), None);
    }
}

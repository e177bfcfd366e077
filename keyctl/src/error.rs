//! The CLI's error type, its one-line report and its exit codes.

use keystore_api::ErrorKind;
use std::fmt;
use std::path::Path;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// An error from the keystore or the backend.
    Api(keystore_api::Error),
    /// A file named on the command line could not be read or written.
    Io {
        /// What keyctl was doing, naming the file.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A self-check failed (e.g. a `tour` step did not behave as expected).
    Internal(String),
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An [`ErrorKind::InvalidInput`] with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        CliError::Api(keystore_api::Error::invalid_input(msg))
    }

    /// An I/O error on `path`.
    pub fn io(action: &str, path: &Path, source: std::io::Error) -> Self {
        CliError::Io {
            what: format!("cannot {action} {}", path.display()),
            source,
        }
    }

    /// The stable kind name printed in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Api(e) => e.kind().as_str(),
            CliError::Io { .. } => "Io",
            CliError::Internal(_) => "Internal",
        }
    }

    /// The process exit code for this error (see `keyctl --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api(e) => exit_code_of(e.kind()),
            CliError::Io { .. } => 11,
            CliError::Internal(_) => 1,
        }
    }

    /// The message without the kind, on one line, with the source chain.
    pub fn message(&self) -> String {
        let msg = match self {
            CliError::Api(e) => with_sources(e.message(), e),
            CliError::Io { what, source } => format!("{what}: {source}"),
            CliError::Internal(m) => m.clone(),
        };
        one_line(&msg)
    }
}

/// The exit code of a keystore error kind; a kind added later exits 1.
fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::AlreadyExists => 4,
        ErrorKind::Unsupported => 5,
        ErrorKind::KeyState => 6,
        ErrorKind::Policy => 7,
        ErrorKind::Auth => 8,
        ErrorKind::Integrity => 9,
        ErrorKind::Backend => 10,
        ErrorKind::Busy => 12,
        ErrorKind::Unavailable => 13,
        _ => 1,
    }
}

/// Appends the `source()` chain of `e` (never secrets: the keystore's error
/// contract forbids them in every error it produces).
fn with_sources(head: String, e: &dyn std::error::Error) -> String {
    let mut out = head;
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl From<keystore_api::Error> for CliError {
    fn from(e: keystore_api::Error) -> Self {
        CliError::Api(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_api::{Component, Error as E};

    #[test]
    fn kinds_map_to_distinct_codes() {
        let cases: Vec<(CliError, u8)> = vec![
            (E::invalid_input("x").into(), 2),
            (E::not_found("x").into(), 3),
            (E::already_exists("x").into(), 4),
            (E::unsupported("x").into(), 5),
            (E::key_state("x").into(), 6),
            (E::policy("x").into(), 7),
            (E::auth("x").into(), 8),
            (E::integrity("x").into(), 9),
            (E::backend_msg(Component::Soft, "x").into(), 10),
            (
                CliError::io("read", Path::new("f"), std::io::Error::other("x")),
                11,
            ),
            (CliError::Internal("x".into()), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }

    #[test]
    fn report_is_one_line_without_duplicated_kind() {
        let e: CliError = E::not_found("no key named 'k'\nsecond line").into();
        assert_eq!(e.to_string(), "NotFound: no key named 'k' second line");
        let e: CliError = E::backend(
            Component::Soft,
            "cannot read",
            std::io::Error::other("boom"),
        )
        .into();
        assert_eq!(e.to_string(), "Backend: soft: cannot read: boom");
    }
}

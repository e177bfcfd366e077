//! Errors across the socket: one gRPC status code per error kind, and the
//! kind, component, key and version in trailers.

use keystore_api::{Component, Error, ErrorKind};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

const KIND: &str = "keystore-error-kind";
const COMPONENT: &str = "keystore-component";
const KEY: &str = "keystore-key";
const VERSION: &str = "keystore-version";

/// The status code of an error kind. One to one: [`kind_of`] inverts it.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::KeyState => Code::FailedPrecondition,
        ErrorKind::Policy => Code::PermissionDenied,
        ErrorKind::Auth => Code::Unauthenticated,
        ErrorKind::Integrity => Code::DataLoss,
        ErrorKind::Busy => Code::Aborted,
        ErrorKind::Backend => Code::Internal,
        ErrorKind::Unavailable => Code::Unavailable,
        // A kind added later is at least not reported as success.
        _ => Code::Unknown,
    }
}

/// The error kind of a status code: the inverse of [`code_of`], and for
/// the codes no kind maps to, the nearest kind (`RESOURCE_EXHAUSTED`, a
/// message over the size limit: `InvalidInput`; `CANCELLED` and
/// `DEADLINE_EXCEEDED`: `Unavailable`; anything else: `Backend`).
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::Unimplemented => ErrorKind::Unsupported,
        Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {
            ErrorKind::InvalidInput
        }
        Code::FailedPrecondition => ErrorKind::KeyState,
        Code::PermissionDenied => ErrorKind::Policy,
        Code::Unauthenticated => ErrorKind::Auth,
        Code::DataLoss => ErrorKind::Integrity,
        Code::Aborted => ErrorKind::Busy,
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

/// The status a keystore error travels as: the kind's code, the error's
/// one-line message (never secret, by the error contract) and its context
/// in trailers.
pub fn status_of(e: &Error) -> Status {
    let mut status = Status::new(code_of(e.kind()), e.detail().to_string());
    let md = status.metadata_mut();
    md.insert(KIND, MetadataValue::from_static(e.kind().as_str()));
    if let Some(c) = e.component() {
        md.insert(COMPONENT, MetadataValue::from_static(c.as_str()));
    }
    if let Some(v) = e.key().and_then(|k| MetadataValue::try_from(k).ok()) {
        md.insert(KEY, v);
    }
    if let Some(v) = e.version() {
        md.insert(VERSION, MetadataValue::from(v));
    }
    status
}

/// The keystore error a status stands for: the kind from its trailer when
/// the daemon set one, else from its code ([`kind_of`]); the component
/// ([`Component::Service`] when none was sent), key and version from the
/// trailers; the status message as the message.
pub fn error_of(status: &Status) -> Error {
    let md = status.metadata();
    let text = |name: &str| md.get(name).and_then(|v| v.to_str().ok());
    let kind = text(KIND)
        .and_then(ErrorKind::from_name)
        .unwrap_or_else(|| kind_of(status.code()));
    let mut message = status.message().to_string();
    if text(KIND).is_none() {
        // Not the daemon's own error: say where it came from.
        message = format!("keystore service: {} ({:?})", message, status.code());
    }
    let mut e = Error::new(kind, message);
    match text(COMPONENT).and_then(Component::from_name) {
        Some(c) => e = e.in_component(c),
        None if kind == ErrorKind::Backend || kind == ErrorKind::Unavailable => {
            e = e.in_component(Component::Service)
        }
        None => {}
    }
    if let Some(k) = text(KEY) {
        e = e.with_key(k);
    }
    if let Some(v) = text(VERSION).and_then(|v| v.parse().ok()) {
        e = e.with_version(v);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_comes_back() {
        let mut codes = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let code = code_of(kind);
            assert!(codes.insert(code as i32), "{kind} shares {code:?}");
            assert_eq!(kind_of(code), kind);
            let e = Error::new(kind, "m").with_key("k").with_version(3);
            let back = error_of(&status_of(&e));
            assert_eq!(
                (back.kind(), back.key(), back.version(), back.detail()),
                (kind, Some("k"), Some(3), "m")
            );
        }
        assert!(!codes.contains(&(Code::Ok as i32)));
    }

    #[test]
    fn foreign_statuses_get_the_nearest_kind() {
        let e = error_of(&Status::resource_exhausted("too big"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.detail().contains("too big"));
        let e = error_of(&Status::unavailable("gone"));
        assert_eq!(
            (e.kind(), e.component()),
            (ErrorKind::Unavailable, Some(Component::Service))
        );
    }
}

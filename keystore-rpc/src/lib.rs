//! # keystore-rpc
//!
//! The interface of `keystored`, the keystore as a local service: the
//! `keystore.v1` gRPC types and services generated from
//! `proto/keystore/v1/keystore.proto` ([`pb`]), and the one mapping between
//! them and `keystore-api`'s types that the daemon and every Rust client
//! share:
//!
//! - [`status_of`] and [`error_of`]: each [`ErrorKind`](keystore_api::ErrorKind)
//!   has one gRPC status code, and the kind, component, key and version
//!   travel in trailers, so a client rebuilds the error the daemon had.
//! - [`convert`]: key facts, audit entries, times and durations.
//! - [`direct`]: the key-use calls framed without HTTP/2, on the same socket.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod convert;
pub mod direct;
mod redact;
mod status;

pub use status::{code_of, error_of, kind_of, status_of};

/// The generated `keystore.v1` messages, clients and servers.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("keystore.v1");
}

/// The largest request or response the daemon and the clients accept by
/// default: a 16 MiB message ([`keystore_api::limits::MAX_DATA_LEN`]) plus
/// room for its envelope and framing.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = keystore_api::limits::MAX_DATA_LEN + 64 * 1024;

//! # keystored
//!
//! The keystore as a local service. One daemon owns one store (soft,
//! pkcs11, tpm or soft+tpm-sealed) and serves it as `keystore.v1` (gRPC,
//! see `proto/keystore/v1/keystore.proto`) on a Unix socket. Separation of
//! duties is enforced by the OS: each call is tied to the peer credentials
//! of its connection (`SO_PEERCRED`: uid, gid, pid) and authorised by a
//! [`policy`] that maps uids and gids to the keystore's roles and, for
//! applications, to the key names they may use. The audit trail records the
//! caller's uid, pid and executable with its role.
//!
//! - [`config`]: the daemon's configuration file.
//! - [`policy`]: the caller policy (reloaded on SIGHUP).
//! - [`Daemon`]: open, bind (0660, configured group), serve, drain on SIGTERM.
//!
//! Only the daemon's user reads and writes the store; callers never open it.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
mod connection;
mod direct;
mod notify;
mod open;
mod peer;
pub mod policy;
mod server;
mod service;

pub use config::Config;
pub use open::{open, Store};
pub use peer::Caller;
pub use server::Daemon;

//! The SQLite metadata store: names → versions → backend handles.
//!
//! Holds no secret material: handles are references, public keys are public.
//! The schema is versioned with `PRAGMA user_version` and upgraded by ordered
//! migrations, so later lifecycle features add tables and columns in new
//! migrations instead of rewriting old ones.

mod checkpoints;
pub(crate) mod encryptions;
mod intents;
mod rows;
mod schema;
mod states;
mod store;
mod store_row;

pub(crate) use checkpoints::{
    checkpoints, insert_checkpoint, insert_signer, last_checkpoint, retire_signer,
    rollback_counter, set_rollback_counter, signers, store_id, CheckpointRow,
};
pub use intents::Intent;
pub(crate) use intents::{
    add_intent, add_pending_create, clear_pending_creates, intents, pending_creates, remove_intent,
    remove_pending_create,
};
pub(crate) use rows::{
    insert_key, insert_version, key, key_by_id, keys, mark_key_destroyed, referenced_handles,
    set_cryptoperiod, set_state, versions, KeyRow, NewKey, NewVersion, StateChange, VersionRow,
};
pub use states::{KeyState, Origin};
pub(crate) use store::Metadata;
pub(crate) use store_row::{
    audit_key, decommission, decommissioned_at, role_credential, set_audit_key, set_role_credential,
};

use crate::error::{Component, Error, Result};

/// The keystore's one conversion of a SQLite failure into [`Error`]:
/// `Backend { component: "metadata", .. }` with the SQLite error as its source.
/// (`Error` lives in `keystore-backend`, which knows no SQLite, so this cannot
/// be a `From` impl.)
pub(crate) fn sql_error(e: rusqlite::Error) -> Error {
    Error::backend(Component::Metadata, "metadata database operation failed", e)
}

/// `.sql()?` on a rusqlite result: [`sql_error`] on failure.
pub(crate) trait SqlResult<T> {
    /// The value, or the failure as a metadata [`Error`].
    fn sql(self) -> Result<T>;
}

impl<T> SqlResult<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T> {
        self.map_err(sql_error)
    }
}

fn corrupt(msg: String) -> Error {
    Error::integrity(format!("metadata database: {msg}"))
}

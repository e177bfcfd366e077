//! The SQLite metadata store: names → versions → backend handles.
//!
//! Holds no secret material: handles are references, public keys are public.
//! The schema is versioned with `PRAGMA user_version` and upgraded by ordered
//! migrations, so later lifecycle features add tables and columns in new
//! migrations instead of rewriting old ones.

mod intents;
mod rows;
mod schema;
mod states;
mod store;
mod store_row;

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

use crate::error::Error;

fn corrupt(msg: String) -> Error {
    Error::Integrity(format!("metadata database: {msg}"))
}

//! Read-only facts about a store for a generated key-management policy
//! (`keyctl policy`): which roles have a credential (never the credential),
//! what the backend can do, the audit trail's length and whether the store
//! was decommissioned. Nothing here writes, audits or needs a role.

use crate::algorithm::Capabilities;
use crate::backend::Backend;
use crate::error::Result;
use crate::keystore::Keystore;
use crate::metadata::{self as md, SqlResult};
use crate::roles::Role;
use rusqlite::OptionalExtension;

impl<B: Backend> Keystore<B> {
    /// Each role, with the time (RFC 3339 UTC) its credential was last set,
    /// or `None` when it has none. Only the fact and the time: the verifier,
    /// its salt and the credential itself are never returned.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database fails.
    pub fn role_credentials_set(&self) -> Result<Vec<(Role, Option<String>)>> {
        let md = self.md();
        let mut stmt = md
            .conn()
            .prepare("SELECT set_at FROM role_credentials WHERE role = ?1")
            .sql()?;
        Role::ALL
            .into_iter()
            .map(|role| {
                let at: Option<String> =
                    stmt.query_row([role.id()], |r| r.get(0)).optional().sql()?;
                Ok((role, at))
            })
            .collect()
    }

    /// What the backend performs, per algorithm (see [`Capabilities`]).
    pub fn backend_capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// Entries in the audit trail.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database fails.
    pub fn audit_entry_count(&self) -> Result<u64> {
        let n: i64 = self
            .md()
            .conn()
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .sql()?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// When the store was decommissioned (RFC 3339 UTC), if it was.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database fails.
    pub fn decommissioned_at(&self) -> Result<Option<String>> {
        md::decommissioned_at(self.md().conn())
    }
}

//! Rollback detection: the store's newest signed checkpoint against the
//! backend's hardware monotonic counter.
//!
//! Each checkpoint that carries a counter value `c + 1` is committed first,
//! then the counter is raised from `c` to `c + 1`, under the store's write
//! lock. So in honest operation the counter never exceeds the database's
//! newest checkpoint, and after a crash between the two it is one behind
//! (finished at the next open or checkpoint). A counter ahead of the
//! database means the database is an older copy: [`ErrorKind::Integrity`]
//! at open.

use super::Keystore;
use crate::algorithm::Algorithm;
use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{self as md, CheckpointRow};
use crate::public_key::PublicKey;

impl<B: Backend> Keystore<B> {
    /// With the write lock held: the counter and its value, after finishing
    /// an increment a crash left undone. A counter ahead of the database is
    /// [`ErrorKind::Integrity`].
    pub(super) fn settle_counter(&self) -> Result<Option<(Vec<u8>, u64)>> {
        let (reference, last) = {
            let md = self.md();
            match md::rollback_counter(md.conn())? {
                Some(r) => (r, md::last_checkpoint(md.conn())?),
                None => return Ok(None),
            }
        };
        let value = self.read_counter(&reference)?;
        let recorded = last.as_ref().and_then(|c| c.counter_value);
        match recorded {
            Some(c) if value == c => Ok(Some((reference, c))),
            Some(c) if value + 1 == c => {
                self.backend.counter_increment(&reference)?;
                Ok(Some((reference, c)))
            }
            _ => Err(self.rollback_error(&reference, value, last.as_ref())),
        }
    }

    pub(super) fn read_counter(&self, reference: &[u8]) -> Result<u64> {
        self.backend.counter_read(reference).map_err(|e| {
            if e.is(ErrorKind::NotFound) {
                Error::integrity(format!(
                    "the store's rollback counter ({}) is gone from the device (the TPM was \
                     cleared, or the counter removed): the metadata cannot be checked against it",
                    self.backend.counter_describe(reference)
                ))
            } else if e.is(ErrorKind::Unsupported) {
                Error::integrity(format!(
                    "the store's checkpoints are bound to the monotonic counter {}, which the {} \
                     backend as opened cannot read (a soft store opened without its TPM KEK \
                     provider?): the metadata cannot be checked against it",
                    self.backend.counter_describe(reference),
                    self.backend.name()
                ))
            } else {
                e
            }
        })
    }

    fn rollback_error(&self, reference: &[u8], value: u64, last: Option<&CheckpointRow>) -> Error {
        let counter = self.backend.counter_describe(reference);
        match last {
            Some(c) if c.counter_value.is_some_and(|v| value > v) => Error::integrity(format!(
                "rollback detected: the monotonic counter {counter} is at {value}, but the \
                 newest checkpoint in the metadata database (#{}, audit head #{} {}) was signed \
                 at {}: the database, or its audit tables, is an older copy; restore the newest \
                 copy or investigate",
                c.id,
                c.audit_seq,
                hex::encode(&c.head_hash),
                c.counter_value.unwrap_or_default()
            )),
            Some(c) => Error::integrity(format!(
                "the monotonic counter {counter} is at {value}, behind the metadata database's \
                 newest checkpoint (#{}, audit head #{} {}, counter {:?}): the counter was reset \
                 or the database does not belong to this device",
                c.id,
                c.audit_seq,
                hex::encode(&c.head_hash),
                c.counter_value
            )),
            None => Error::integrity(format!(
                "the store is bound to the monotonic counter {counter} (at {value}) but its \
                 metadata holds no checkpoint: the checkpoints were removed"
            )),
        }
    }

    /// At open, before anything else changes the store: the database's
    /// newest checkpoint against the counter. A store whose trail records
    /// that it was bound to a counter must still reference it, and its
    /// newest checkpoint must be validly signed and name that counter.
    pub(super) fn check_rollback(&self) -> Result<()> {
        let (reference, last) = {
            let md = self.md();
            if md::decommissioned_at(md.conn())?.is_some() {
                // The counter was removed with the keys; the trail exported
                // at decommission is the evidence.
                return Ok(());
            }
            let reference = md::rollback_counter(md.conn())?;
            let last = md::last_checkpoint(md.conn())?;
            (reference, last)
        };
        let Some(reference) = reference else {
            if last.as_ref().is_some_and(|c| c.counter_value.is_some())
                || self.trail_records_counter_binding()?
            {
                return Err(Error::integrity(
                    "the store was bound to a monotonic counter but its metadata no longer \
                     references it: the reference was removed; the database is not trusted",
                ));
            }
            return Ok(());
        };
        // The counter first, then the database: an honest checkpoint commits
        // before it raises the counter, so this order never sees it ahead.
        let value = self.read_counter(&reference)?;
        let fresh = {
            let md = self.md();
            md::last_checkpoint(md.conn())?
        };
        let Some(last) = fresh.or(last) else {
            return Err(self.rollback_error(&reference, value, None));
        };
        self.check_checkpoint_signature(&last)?;
        let named = self.backend.counter_describe(&reference);
        if last.counter.as_deref() != Some(named.as_str()) {
            return Err(Error::integrity(format!(
                "the store references the monotonic counter {named}, but its newest checkpoint \
                 (#{}) was signed with {}: the reference was replaced; the database is not \
                 trusted",
                last.id,
                last.counter.as_deref().unwrap_or("no counter")
            )));
        }
        if last.counter_value == Some(value) {
            return Ok(());
        }
        // Anything else is settled under the write lock, where no
        // checkpoint is half-done.
        let _w = self.writing("check the rollback counter")?;
        self.settle_counter().map(|_| ())
    }

    /// Whether the trail's own record of the audit keys' creation says the
    /// store was bound to a monotonic counter.
    pub(super) fn trail_records_counter_binding(&self) -> Result<bool> {
        let md = self.md();
        let n: i64 = md
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE event IN ('audit-init', 'audit-signer')
                 AND instr(detail, 'bound to the monotonic counter') > 0",
                [],
                |r| r.get(0),
            )
            .map_err(crate::metadata::sql_error)?;
        Ok(n > 0)
    }

    /// A stored checkpoint's signature. Whether the trail still holds the
    /// head it names is part of audit verification, which names the entry.
    fn check_checkpoint_signature(&self, row: &CheckpointRow) -> Result<()> {
        let md = self.md();
        let c = self.checkpoint_of(md.conn(), row)?;
        let signer = md::signers(md.conn())?
            .into_iter()
            .find(|s| s.version == row.signer)
            .ok_or_else(|| Error::integrity("a checkpoint names an unknown audit signer"))?;
        c.verify_signature(&PublicKey::from_spki_der(
            Algorithm::EcdsaP256Sha256,
            signer.public_key,
        )?)
    }
}

/// The monotonic counter a store's checkpoints are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RollbackCounter {
    /// The counter, named (e.g. `TPM NV index 0x01a3b2c1`).
    pub counter: String,
    /// Its value on the device now.
    pub value: u64,
}

impl<B: Backend> Keystore<B> {
    /// The hardware monotonic counter the store's checkpoints are bound to,
    /// read from the device now; `None` when the store has none (its backend
    /// had no counter when the signing key was created: a restored older
    /// copy of the metadata is then not detected).
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the device no longer holds the counter;
    /// [`ErrorKind::Backend`] when the database or the device fails.
    pub fn rollback_counter(&self) -> Result<Option<RollbackCounter>> {
        let reference = md::rollback_counter(self.md().conn())?;
        reference
            .map(|r| {
                Ok(RollbackCounter {
                    counter: self.backend.counter_describe(&r),
                    value: self.read_counter(&r)?,
                })
            })
            .transpose()
    }
}

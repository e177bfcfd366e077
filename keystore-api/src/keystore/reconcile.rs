//! Crash recovery at open, and the fault-injection points that test it.
//!
//! Order of work makes every crash recoverable:
//! - create/import/rotate/restore: a pending-create record is committed, the
//!   backend object is made, then the metadata is committed and the record
//!   removed together. A crash in between leaves the record and an *orphan*
//!   (backend object, no metadata); reconciliation destroys the orphan, so the
//!   state is the old one. Without a pending record, an unreferenced object
//!   is only reported: damaged metadata must never cost a genuine key.
//! - destroy/sweep/revoke: an *intent* is committed first, the material is
//!   destroyed, then the metadata completes and the intent goes. A crash in
//!   between leaves the intent; reconciliation finishes it, so the state is
//!   the new one.
//!
//! A version whose material is missing without an intent (someone removed a
//! token object by hand) is not silently dropped: it is marked compromised
//! with the reason, audited and reported.

use super::{Keystore, Subject};
use crate::backend::{Backend, KeyHandle};
use crate::error::{Error, Result};
use crate::lifecycle::has_material;
use crate::metadata::{self as md, KeyState, StateChange};
use std::collections::HashSet;

/// A point between a backend operation and its metadata commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// `create`: after the backend generated the key.
    AfterBackendCreate,
    /// `rotate`: after the backend generated the new version.
    AfterBackendRotate,
    /// `destroy`: after the backend destroyed a version's material.
    AfterBackendDestroy,
    /// `revoke`: after the backend destroyed the compromised material.
    AfterBackendRevoke,
    /// `sweep`: after the backend destroyed an expired version's material.
    AfterBackendSweep,
}

/// What reconciliation at open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Interrupted destroys/revokes completed: (key, version, operation).
    pub completed: Vec<(String, u32, String)>,
    /// Backend objects no metadata referenced, left by an interrupted
    /// creation, destroyed.
    pub orphans_removed: Vec<KeyHandle>,
    /// Backend objects no metadata references while no creation was
    /// interrupted (damaged metadata, or another store's objects): reported,
    /// never destroyed.
    pub unreferenced: Vec<KeyHandle>,
    /// Versions whose material was missing, now marked compromised.
    pub missing: Vec<(String, u32)>,
    /// True if the backend cannot enumerate its objects (orphans and missing
    /// material could not be checked).
    pub listing_unsupported: bool,
}

impl ReconcileReport {
    /// True if reconciliation changed nothing.
    pub fn is_clean(&self) -> bool {
        self.completed.is_empty() && self.orphans_removed.is_empty() && self.missing.is_empty()
    }
}

impl<B: Backend> Keystore<B> {
    pub(crate) fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        self.complete_intents(&mut report)?;
        let listed = match self.backend.list() {
            Ok(l) => l,
            Err(Error::Unsupported(_)) => {
                // Nothing can be matched; an interrupted creation left at
                // most an object the backend cannot name.
                report.listing_unsupported = true;
                let mut md = self.md();
                let tx = md.tx()?;
                md::clear_pending_creates(&tx)?;
                tx.commit()?;
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        let listed: HashSet<KeyHandle> = listed.into_iter().collect();
        let (referenced, interrupted): (HashSet<KeyHandle>, bool) = {
            let md = self.md();
            let referenced = md::referenced_handles(md.conn())?.into_iter().collect();
            (referenced, !md::pending_creates(md.conn())?.is_empty())
        };
        for orphan in listed.difference(&referenced) {
            if !interrupted {
                report.unreferenced.push(orphan.clone());
                continue;
            }
            match self.backend.destroy(orphan) {
                Ok(()) | Err(Error::NotFound(_)) => report.orphans_removed.push(orphan.clone()),
                Err(e) => return Err(e),
            }
        }
        if interrupted {
            let mut md = self.md();
            let tx = md.tx()?;
            md::clear_pending_creates(&tx)?;
            tx.commit()?;
        }
        self.mark_missing(&listed, &mut report)?;
        Ok(report)
    }

    fn complete_intents(&self, report: &mut ReconcileReport) -> Result<()> {
        let intents = md::intents(self.md().conn())?;
        for intent in intents {
            let (key, version) = {
                let md = self.md();
                let key = md::key_by_id(md.conn(), intent.key_id)?;
                let v = md::versions(md.conn(), key.id)?
                    .into_iter()
                    .find(|v| v.version == intent.version);
                (key, v)
            };
            let final_state = if intent.op == "revoke" {
                KeyState::Compromised
            } else {
                KeyState::Destroyed
            };
            match version {
                Some(v) => self.finish_material_removal(
                    key.id,
                    v.version,
                    v.handle.as_ref(),
                    intent.id,
                    final_state,
                )?,
                None => {
                    let mut md = self.md();
                    let tx = md.tx()?;
                    md::remove_intent(&tx, intent.id)?;
                    tx.commit()?;
                }
            }
            let mut md = self.md();
            if md::audit_key(md.conn())?.is_some() {
                let tx = md.tx()?;
                self.audit(
                    &tx,
                    None,
                    "reconcile",
                    Subject::version(&key.name, intent.version, None),
                    format!("interrupted {} completed at open", intent.op),
                )?;
                tx.commit()?;
            }
            report.completed.push((key.name, intent.version, intent.op));
        }
        Ok(())
    }

    fn mark_missing(
        &self,
        listed: &HashSet<KeyHandle>,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let now = self.now();
        let mut md = self.md();
        let mut missing = Vec::new();
        for key in md::keys(md.conn())? {
            for v in md::versions(md.conn(), key.id)? {
                if let Some(h) = &v.handle {
                    if has_material(v.state) && !listed.contains(h) {
                        missing.push((key.id, key.name.clone(), v.version, v.fingerprint.clone()));
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let tx = md.tx()?;
        let reason = "material missing from the backend at open";
        for (key_id, name, version, fp) in &missing {
            md::set_state(
                &tx,
                *key_id,
                *version,
                &StateChange {
                    reason: Some(reason),
                    ..StateChange::material_gone(KeyState::Compromised, &now)
                },
            )?;
            if md::audit_key(&tx)?.is_some() {
                self.audit(
                    &tx,
                    None,
                    "missing",
                    Subject::version(name, *version, fp.as_deref()),
                    reason.into(),
                )?;
            }
            report.missing.push((name.clone(), *version));
        }
        tx.commit()?;
        Ok(())
    }

    /// Returns an error (a simulated crash) if `point` is armed.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn fault_at(&self, point: FaultPoint) -> Result<()> {
        let mut armed = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(Error::backend_msg(
                "keystore",
                format!("injected crash at {point:?}"),
            ));
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    pub(crate) fn fault_at(&self, _point: FaultPoint) -> Result<()> {
        Ok(())
    }

    /// Arms a simulated crash at `point`: the next operation that reaches it
    /// returns an error at once, skipping every clean-up a real crash would
    /// also skip. Test builds only (`fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, point: FaultPoint) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
    }
}

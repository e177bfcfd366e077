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
//! Many processes share a store, so recovery must never mistake another
//! process's work in progress for a crash. Every lifecycle operation holds
//! the store's write lock (an `flock` the kernel drops when its holder dies)
//! from its first record to its last, so a pending record or an intent seen
//! *while holding that lock* belongs to an owner that is gone. Reconciliation
//! therefore first looks without the lock (cheap, changes nothing), and acts
//! only under the lock, on what it reads afresh there.
//!
//! A version whose material is missing without an intent (someone removed a
//! token object by hand) is not silently dropped: it is marked compromised
//! with the reason, audited and reported — but only under the write lock,
//! after two listings agree, and never on a backend error. When most or all
//! versions are missing (the wrong token, TPM or directory), the open fails
//! and nothing changes.

use super::{Keystore, Subject};
use crate::audit::AuditEvent;
use crate::backend::{Backend, KeyHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::has_material;
use crate::metadata::{self as md, Intent, KeyState, StateChange};
use std::collections::HashSet;
use std::time::Duration;

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
#[non_exhaustive]
pub struct ReconcileReport {
    /// Interrupted destroys/revokes completed: (key, version, operation).
    pub completed: Vec<(String, u32, Intent)>,
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
    /// Why checks that needed the write lock or a backend listing were put
    /// off to a later open (another process held the lock past the timeout,
    /// or the backend failed to list): nothing was changed for them.
    pub deferred: Option<String>,
}

impl ReconcileReport {
    /// True if reconciliation changed nothing.
    pub fn is_clean(&self) -> bool {
        self.completed.is_empty() && self.orphans_removed.is_empty() && self.missing.is_empty()
    }
}

/// Material-bearing versions the metadata references: (key id, name,
/// version, fingerprint, handle).
type MaterialVersion = (i64, String, u32, Option<String>, KeyHandle);

/// How often a failed backend listing is tried at open.
const LIST_ATTEMPTS: u32 = 3;
/// Pause between the two listings that must agree before material counts
/// as missing.
const RECHECK_PAUSE: Duration = Duration::from_millis(50);

impl<B: Backend> Keystore<B> {
    pub(crate) fn reconcile(&self, check_material: bool) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        // First look: no lock, no change.
        let interrupted = {
            let md = self.md();
            !md::intents(md.conn())?.is_empty() || !md::pending_creates(md.conn())?.is_empty()
        };
        let mut suspicious = interrupted;
        if check_material && !suspicious {
            match self.list_backend() {
                Ok(Some(listed)) => {
                    let (unreferenced, missing) = self.compare(&listed)?;
                    suspicious = !unreferenced.is_empty() || !missing.is_empty();
                }
                Ok(None) => {
                    report.listing_unsupported = true;
                    return Ok(report);
                }
                Err(e) => {
                    report.deferred = Some(format!("the backend could not list its objects: {e}"));
                    return Ok(report);
                }
            }
        }
        if !suspicious {
            return Ok(report);
        }
        // Then act, under the write lock, on a fresh reading.
        let _w = match self.writing("recover at open") {
            Ok(w) => w,
            Err(e) if e.is(ErrorKind::Busy) => {
                report.deferred = Some(e.detail().to_string());
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        self.reconcile_locked(check_material, &mut report)?;
        Ok(report)
    }

    /// The backend's objects, retried on failure; `None` if it cannot list.
    fn list_backend(&self) -> Result<Option<HashSet<KeyHandle>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.backend.list() {
                Ok(l) => return Ok(Some(l.into_iter().collect())),
                Err(ref e) if e.is(ErrorKind::Unsupported) => return Ok(None),
                Err(_) if attempt < LIST_ATTEMPTS => {
                    std::thread::sleep(RECHECK_PAUSE * attempt);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Objects nobody references, and material-bearing versions (without an
    /// intent) whose object is not listed.
    fn compare(
        &self,
        listed: &HashSet<KeyHandle>,
    ) -> Result<(Vec<KeyHandle>, Vec<MaterialVersion>)> {
        let md = self.md();
        let referenced: HashSet<KeyHandle> =
            md::referenced_handles(md.conn())?.into_iter().collect();
        let with_intent: HashSet<(i64, u32)> = md::intents(md.conn())?
            .into_iter()
            .map(|i| (i.key_id, i.version))
            .collect();
        let mut unreferenced: Vec<KeyHandle> = listed.difference(&referenced).cloned().collect();
        unreferenced.sort();
        let mut missing = Vec::new();
        for (key_id, name, version, fp, handle) in material_versions(md.conn())? {
            if !listed.contains(&handle) && !with_intent.contains(&(key_id, version)) {
                missing.push((key_id, name, version, fp, handle));
            }
        }
        Ok((unreferenced, missing))
    }

    fn reconcile_locked(&self, check_material: bool, report: &mut ReconcileReport) -> Result<()> {
        let pending = !md::pending_creates(self.md().conn())?.is_empty();
        let has_intents = !md::intents(self.md().conn())?.is_empty();
        if !(check_material || pending || has_intents) {
            return Ok(());
        }
        let listed = match self.list_backend() {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                report.listing_unsupported = true;
                None
            }
            Err(e) => {
                // Intents need no listing; orphans and missing material do.
                report.deferred = Some(format!("the backend could not list its objects: {e}"));
                self.complete_intents(report)?;
                return Ok(());
            }
        };
        let Some(listed) = listed else {
            self.complete_intents(report)?;
            // Nothing can be matched; an interrupted creation left at most an
            // object the backend cannot name.
            let mut md = self.md();
            let tx = md.tx()?;
            md::clear_pending_creates(&tx)?;
            tx.commit()?;
            return Ok(());
        };
        // A wholesale mismatch changes nothing, so it is decided first.
        let (_, first) = self.compare(&listed)?;
        let missing = if first.is_empty() {
            first
        } else {
            std::thread::sleep(RECHECK_PAUSE);
            let again = match self.list_backend() {
                Ok(Some(l)) => l,
                Ok(None) => listed.clone(),
                Err(e) => {
                    report.deferred = Some(format!("the backend could not list its objects: {e}"));
                    self.complete_intents(report)?;
                    return Ok(());
                }
            };
            let (_, second) = self.compare(&again)?;
            let second: HashSet<(i64, u32)> = second.iter().map(|m| (m.0, m.2)).collect();
            first
                .into_iter()
                .filter(|m| second.contains(&(m.0, m.2)))
                .collect()
        };
        // The audit key counts too: on the right device it is there even when
        // the only key's reference was damaged; on the wrong one it is not.
        let (total, missing_count) = {
            let md = self.md();
            let audit = md::audit_key(md.conn())?;
            let total = material_versions(md.conn())?.len() + usize::from(audit.is_some());
            let audit_missing = audit.is_some_and(|h| !listed.contains(&h));
            (total, missing.len() + usize::from(audit_missing))
        };
        if !missing.is_empty() && missing_count * 2 > total {
            return Err(Error::not_found(format!(
                "{missing_count} of the {total} keys this metadata references (audit key included) are missing \
                 from the {} backend: is this the right token, TPM or store directory? Nothing was changed",
                self.backend.name()
            )));
        }
        self.complete_intents(report)?;
        // Orphans: objects left by creations whose owner is gone.
        let referenced: HashSet<KeyHandle> = md::referenced_handles(self.md().conn())?
            .into_iter()
            .collect();
        let mut unreferenced: Vec<KeyHandle> = listed.difference(&referenced).cloned().collect();
        unreferenced.sort();
        for orphan in unreferenced {
            if !pending {
                report.unreferenced.push(orphan);
                continue;
            }
            match self.backend.destroy(&orphan) {
                Ok(()) => report.orphans_removed.push(orphan),
                Err(e) if e.is(ErrorKind::NotFound) => report.orphans_removed.push(orphan),
                Err(e) => return Err(e),
            }
        }
        if pending {
            let mut md = self.md();
            let tx = md.tx()?;
            md::clear_pending_creates(&tx)?;
            tx.commit()?;
        }
        if check_material || pending || has_intents {
            self.mark_missing(missing, report)?;
        }
        Ok(())
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
            let final_state = if intent.op == Intent::Revoke {
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
                    AuditEvent::Reconcile,
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
        missing: Vec<MaterialVersion>,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut md = self.md();
        let tx = md.tx()?;
        let reason = "material missing from the backend at open";
        for (key_id, name, version, fp, _) in &missing {
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
                    AuditEvent::Missing,
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
                crate::error::Component::Keystore,
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

/// Every version that should have material in the backend, the audit key
/// excluded (it is checked by the audit trail itself).
fn material_versions(conn: &rusqlite::Connection) -> Result<Vec<MaterialVersion>> {
    let mut out = Vec::new();
    for key in md::keys(conn)? {
        for v in md::versions(conn, key.id)? {
            if let Some(h) = v.handle {
                if has_material(v.state) {
                    out.push((key.id, key.name.clone(), v.version, v.fingerprint, h));
                }
            }
        }
    }
    Ok(out)
}

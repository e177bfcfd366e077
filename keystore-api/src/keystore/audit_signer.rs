//! The audit signing key and signed checkpoints (REQ-KEY-AUD-01): evidence
//! that can be checked off the device. Rollback detection against the
//! checkpoints is in [`super::rollback`].

use super::Keystore;
use crate::algorithm::Algorithm;
use crate::audit::{
    self, AuditEvent, AuditExport, AuditSigner, Checkpoint, CheckpointReason, ExportedStore,
};
use crate::backend::{Backend, KeyHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{self as md, CheckpointRow};
use crate::public_key::PublicKey;
use crate::roles::{Actor, Duty};
use crate::{BackendKey, NewKey};
use rusqlite::Connection;

/// The label of the audit signing key in the backend.
const SIGNER_LABEL: &str = "keystore-audit-signer";

/// A new signing key, before the store records it.
pub(super) struct NewSigner {
    pub handle: KeyHandle,
    pub public_key: PublicKey,
}

impl<B: Backend> Keystore<B> {
    /// Generates a signing key in the backend.
    pub(super) fn generate_signer(&self) -> Result<NewSigner> {
        let g = self
            .backend
            .generate(&NewKey::new(Algorithm::EcdsaP256Sha256, SIGNER_LABEL))?;
        let key = BackendKey::new(g.handle.clone(), Algorithm::EcdsaP256Sha256);
        match self.backend.public_key(&key) {
            Ok(public_key) => Ok(NewSigner {
                handle: g.handle,
                public_key,
            }),
            Err(e) => {
                let _ = self.backend.destroy(&g.handle);
                Err(e)
            }
        }
    }

    /// ECDSA P-256 signature (DER) by the audit signing key `handle`.
    pub(super) fn sign_as_auditor(&self, handle: &KeyHandle, message: &[u8]) -> Result<Vec<u8>> {
        let key = BackendKey::new(handle.clone(), Algorithm::EcdsaP256Sha256);
        let raw = self.backend.sign(&key, message)?;
        if p256::ecdsa::Signature::from_der(&raw).is_ok() {
            return Ok(raw);
        }
        Ok(p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|_| Error::integrity("the backend's ECDSA signature is malformed"))?
            .to_der()
            .as_bytes()
            .to_vec())
    }

    /// Creates a signing key in the backend (crash-safe) and records it
    /// with `commit`, inside the transaction that removes its pending record.
    fn create_signer(
        &self,
        commit: impl FnOnce(&Connection, &NewSigner) -> Result<()>,
    ) -> Result<NewSigner> {
        self.create_in_backend(
            SIGNER_LABEL,
            None,
            || {
                let s = self.generate_signer()?;
                let h = s.handle.clone();
                Ok((s, vec![h]))
            },
            commit,
        )
    }

    /// A new counter, or `None` when the backend has none.
    pub(super) fn create_counter(&self) -> Result<Option<(crate::CounterRef, u64)>> {
        match self.backend.counter_create() {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.is(ErrorKind::Unsupported) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What rollback protection the store has, in words.
    pub(crate) fn rollback_words(&self, conn: &Connection) -> Result<String> {
        Ok(match md::rollback_counter(conn)? {
            Some(r) => format!(
                "a restored older copy of the metadata is detected at open: signed checkpoints \
                 are bound to the monotonic counter {}",
                self.backend.counter_describe(&r)
            ),
            None => format!(
                "NONE: the {} backend has no hardware monotonic counter, so a restored older copy \
                 of the metadata database is not detected on the device; keep exported trails \
                 off the device to compare against",
                self.backend.name()
            ),
        })
    }

    /// Records signer version 1 (and the counter, if any) and signs the
    /// first checkpoint, inside `tx`. The audit entry recording it must be
    /// appended before.
    pub(super) fn bind_signer(
        &self,
        tx: &Connection,
        signer: &NewSigner,
        counter: Option<&(crate::CounterRef, u64)>,
    ) -> Result<()> {
        let now = self.now();
        md::insert_signer(tx, 1, &signer.handle, signer.public_key.spki_der(), &now)?;
        md::set_rollback_counter(tx, counter.map(|(c, _)| c.reference()))?;
        let value = counter.map(|(_, v)| *v);
        self.sign_checkpoint(tx, CheckpointReason::Bound, None, value)?;
        Ok(())
    }

    /// Describes a new signer and counter for the audit trail.
    pub(super) fn signer_detail(
        &self,
        signer: &NewSigner,
        counter: Option<&(crate::CounterRef, u64)>,
    ) -> String {
        let counter = match counter {
            Some((c, v)) => format!("bound to the monotonic counter {} at {v}", c.description()),
            None => format!(
                "no rollback counter (the {} backend has none)",
                self.backend.name()
            ),
        };
        format!(
            "audit signing key v1 {} (ECDSA P-256) created in the {} backend; {counter}",
            signer.public_key.fingerprint(),
            self.backend.name()
        )
    }

    /// Gives a store made by an earlier version its signing key (and
    /// counter) at open.
    pub(super) fn ensure_audit_signer(&self) -> Result<()> {
        let needs = || -> Result<bool> {
            let md = self.md();
            Ok(md::decommissioned_at(md.conn())?.is_none()
                && md::audit_key(md.conn())?.is_some()
                && md::signers(md.conn())?.is_empty())
        };
        if !needs()? {
            return Ok(());
        }
        let _w = self.writing("create the audit signing key")?;
        if !needs()? {
            return Ok(());
        }
        let counter = self.create_counter()?;
        let made = self.create_signer(|tx, signer| {
            self.audit(
                tx,
                None,
                AuditEvent::AuditSigner,
                super::Subject::default(),
                self.signer_detail(signer, counter.as_ref()),
            )?;
            self.bind_signer(tx, signer, counter.as_ref())
        });
        if made.is_err() {
            if let Some((c, _)) = &counter {
                let _ = self.backend.counter_destroy(c.reference());
            }
        }
        made.map(|_| ())
    }

    /// The active signer's version and handle.
    pub(super) fn active_signer(conn: &Connection) -> Result<Option<(u32, KeyHandle, Vec<u8>)>> {
        Ok(md::signers(conn)?
            .into_iter()
            .rev()
            .find_map(|s| s.handle.map(|h| (s.version, h, s.public_key))))
    }

    /// Signs and records the next checkpoint inside `tx`. `counter_value`
    /// is the value the checkpoint carries (`None`: no counter).
    fn sign_checkpoint(
        &self,
        tx: &Connection,
        reason: CheckpointReason,
        handover: Option<&PublicKey>,
        counter_value: Option<u64>,
    ) -> Result<CheckpointRow> {
        let signer = Self::active_signer(tx)?.ok_or_else(|| {
            Error::key_state("the store has no audit signing key (it is decommissioned)")
        })?;
        self.sign_checkpoint_by(tx, signer, reason, handover, counter_value)
    }

    /// As [`Keystore::sign_checkpoint`], by the signer given.
    fn sign_checkpoint_by(
        &self,
        tx: &Connection,
        (version, handle, spki): (u32, KeyHandle, Vec<u8>),
        reason: CheckpointReason,
        handover: Option<&PublicKey>,
        counter_value: Option<u64>,
    ) -> Result<CheckpointRow> {
        let signer = PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, spki)?;
        let (seq, head) = audit::head_position(tx)?;
        let number = md::last_checkpoint(tx)?.map_or(1, |c| c.id + 1);
        let counter = match (md::rollback_counter(tx)?, counter_value) {
            (Some(r), Some(_)) => Some(self.backend.counter_describe(&r)),
            _ => None,
        };
        let now = self.now();
        let mut c = Checkpoint {
            store_id: md::store_id(tx)?,
            number,
            seq,
            head_hash: hex::encode(&head),
            at: crate::clock::parse_rfc3339(&now)
                .ok_or_else(|| Error::invalid_input("the clock gave a malformed time"))?,
            reason,
            signer: signer.fingerprint(),
            handover: handover.map(PublicKey::fingerprint),
            counter: counter.clone(),
            counter_value: counter.as_ref().and(counter_value),
            signature: String::new(),
        };
        c.check_fields()?;
        let der = self.sign_as_auditor(&handle, &c.signed_message())?;
        c.signature = hex::encode(&der);
        c.verify_signature(&signer)?;
        let handover_version = match handover {
            Some(k) => md::signers(tx)?
                .into_iter()
                .find(|s| s.public_key == k.spki_der())
                .map(|s| s.version),
            None => None,
        };
        let row = CheckpointRow {
            id: number,
            audit_seq: seq,
            head_hash: head,
            at: now,
            reason: reason.as_str().to_string(),
            signer: version,
            handover: handover_version,
            counter,
            counter_value: c.counter_value,
            signature: der,
        };
        md::insert_checkpoint(tx, &row)?;
        Ok(row)
    }

    /// The typed form of a stored checkpoint.
    pub(super) fn checkpoint_of(
        &self,
        conn: &Connection,
        row: &CheckpointRow,
    ) -> Result<Checkpoint> {
        let signers = md::signers(conn)?;
        let fp = |v: u32| -> Result<String> {
            let s = signers.iter().find(|s| s.version == v).ok_or_else(|| {
                Error::integrity(format!("checkpoint #{} names an unknown signer", row.id))
            })?;
            Ok(
                PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, s.public_key.clone())?
                    .fingerprint(),
            )
        };
        Ok(Checkpoint {
            store_id: md::store_id(conn)?,
            number: row.id,
            seq: row.audit_seq,
            head_hash: hex::encode(&row.head_hash),
            at: crate::clock::parse_rfc3339(&row.at).ok_or_else(|| {
                Error::integrity(format!("checkpoint #{} holds a malformed time", row.id))
            })?,
            reason: row.reason.parse()?,
            signer: fp(row.signer)?,
            handover: row.handover.map(fp).transpose()?,
            counter: row.counter.clone(),
            counter_value: row.counter_value,
            signature: hex::encode(&row.signature),
        })
    }

    /// Signs a checkpoint now, in its own transaction, and raises the
    /// counter after the commit. The caller holds the write lock.
    pub(super) fn checkpoint_now(
        &self,
        reason: CheckpointReason,
        handover: Option<&PublicKey>,
    ) -> Result<Checkpoint> {
        let counter = self.settle_counter()?;
        let mut md = self.md();
        let tx = md.tx()?;
        let row =
            self.sign_checkpoint(&tx, reason, handover, counter.as_ref().map(|(_, v)| v + 1))?;
        let c = self.checkpoint_of(&tx, &row)?;
        tx.commit()?;
        drop(md);
        if let Some((r, _)) = counter {
            self.backend.counter_increment(&r)?;
        }
        Ok(c)
    }

    /// When a write operation ends: signs a checkpoint if at least the
    /// checkpoint interval of entries followed the last one, or one of them
    /// destroyed, revoked or changed the state of a key, or set a
    /// credential. Best effort: a failure leaves it due for the next
    /// operation.
    pub(super) fn checkpoint_if_due(&self) {
        let due = (|| -> Result<bool> {
            let md = self.md();
            if Self::active_signer(md.conn())?.is_none() {
                return Ok(false);
            }
            let (seq, _) = audit::head_position(md.conn())?;
            let last = md::last_checkpoint(md.conn())?.map_or(0, |c| c.audit_seq);
            if seq.saturating_sub(last) >= self.checkpoint_interval {
                return Ok(true);
            }
            // A change a rollback would undo (a key destroyed or revoked, a
            // credential set) is checkpointed when its operation ends.
            let critical: i64 = md
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM audit WHERE seq > ?1
                     AND event IN ('destroy', 'state', 'sweep', 'credential', 'restore')",
                    [last],
                    |r| r.get(0),
                )
                .map_err(crate::metadata::sql_error)?;
            Ok(critical > 0)
        })();
        if let Ok(true) = due {
            let _ = self.checkpoint_now(CheckpointReason::Interval, None);
        }
    }

    /// Signs a checkpoint of the audit head now (and raises the store's
    /// monotonic counter, where it has one). Needs the security-officer or
    /// auditor role.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (audited);
    /// [`ErrorKind::Busy`] when the write lock is held past the timeout;
    /// [`ErrorKind::KeyState`] after decommission; [`ErrorKind::Integrity`]
    /// when the counter is ahead of the database (a rollback);
    /// [`ErrorKind::Backend`] when the database or the backend fails.
    pub fn checkpoint(&self, actor: &Actor) -> Result<Checkpoint> {
        let _w = self.writing("audit checkpoint")?;
        self.require(actor, Duty::Audit, "audit checkpoint", None)?;
        self.checkpoint_now(CheckpointReason::Requested, None)
    }

    /// The trail with its evidence, for verification off the device
    /// ([`AuditExport::verify_offline`]): signs an export checkpoint of the
    /// current head first, so that every entry is covered. Needs the
    /// security-officer or auditor role. On a decommissioned store no
    /// checkpoint can be signed; the export holds those signed before.
    ///
    /// # Errors
    /// As [`Keystore::checkpoint`], except after decommission.
    pub fn export_audit_evidence(&self, actor: &Actor) -> Result<AuditExport> {
        let _w = self.writing("audit export")?;
        self.require(actor, Duty::Audit, "audit export", None)?;
        let live = md::decommissioned_at(self.md().conn())?.is_none();
        if live {
            self.checkpoint_now(CheckpointReason::Export, None)?;
        }
        self.evidence_snapshot()
    }

    /// Entries, signers, checkpoints and the store line, as stored now.
    pub(super) fn evidence_snapshot(&self) -> Result<AuditExport> {
        let md = self.md();
        let conn = md.conn();
        let checkpoints = md::checkpoints(conn)?
            .iter()
            .map(|r| self.checkpoint_of(conn, r))
            .collect::<Result<Vec<_>>>()?;
        Ok(AuditExport {
            store: ExportedStore {
                store_id: md::store_id(conn)?,
                backend: self.backend.name().to_string(),
                rollback_protection: self.rollback_words(conn)?,
            },
            entries: audit::entries(conn)?,
            signers: self.audit_signers_in(conn)?,
            checkpoints,
        })
    }

    fn audit_signers_in(&self, conn: &Connection) -> Result<Vec<AuditSigner>> {
        md::signers(conn)?
            .iter()
            .map(|s| {
                AuditSigner::new(
                    s.version,
                    &s.public_key,
                    &s.created_at,
                    s.retired_at.as_deref(),
                )
            })
            .collect()
    }

    /// Every audit signing key the store has had (public parts), oldest
    /// first; the last one not retired signs.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`] when the database fails.
    pub fn audit_signers(&self) -> Result<Vec<AuditSigner>> {
        self.audit_signers_in(self.md().conn())
    }

    /// Rotates the audit signing key: a new key is generated in the
    /// backend, the outgoing key signs a checkpoint handing over to it, and
    /// the outgoing key's private part is destroyed (its public key stays in
    /// the export). Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (audited);
    /// [`ErrorKind::KeyState`] after decommission; otherwise as
    /// [`Keystore::checkpoint`].
    pub fn rotate_audit_signer(&self, actor: &Actor) -> Result<AuditSigner> {
        let _w = self.writing("rotate the audit signing key")?;
        self.require(actor, Duty::Administer, "audit signing key rotation", None)?;
        let outgoing = Self::active_signer(self.md().conn())?
            .ok_or_else(|| Error::key_state("the store has no audit signing key"))?;
        let (old_version, old_handle) = (outgoing.0, outgoing.1.clone());
        let version = old_version + 1;
        let counter = self.settle_counter()?;
        // One transaction: the new key recorded, the rotation audited, the
        // outgoing key's handover signed over it, the outgoing key retired.
        self.create_signer(|tx, s| {
            md::insert_signer(tx, version, &s.handle, s.public_key.spki_der(), &self.now())?;
            self.audit(
                tx,
                Some(actor),
                AuditEvent::AuditSigner,
                super::Subject::default(),
                format!(
                    "audit signing key rotated: v{old_version} hands over to v{version} {}",
                    s.public_key.fingerprint()
                ),
            )?;
            self.sign_checkpoint_by(
                tx,
                outgoing.clone(),
                CheckpointReason::Rotation,
                Some(&s.public_key),
                counter.as_ref().map(|(_, v)| v + 1),
            )?;
            md::retire_signer(tx, old_version, &self.now())
        })?;
        if let Some((r, _)) = counter {
            self.backend.counter_increment(&r)?;
        }
        match self.backend.destroy(&old_handle) {
            Ok(()) => {}
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.audit_signers()?
            .into_iter()
            .find(|s| s.version == version)
            .ok_or_else(|| Error::integrity("the new audit signing key was not recorded"))
    }
}

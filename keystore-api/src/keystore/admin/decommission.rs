//! Decommission (REQ-KEY-WIPE-01): the final audit entry and checkpoint,
//! every key destroyed, a signed crypto-erase certificate, then the signing
//! key, the monotonic counter and the metadata.

use crate::audit::{
    AuditEvent, AuditExport, CheckpointReason, ErasedKey, ErasedVersion, ErasureCertificate,
    ErasureStatement, ERASURE_DOMAIN,
};
use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::keystore::{Keystore, Subject};
use crate::metadata as md;
use crate::public_key::PublicKey;
use crate::roles::{Actor, Duty};
use crate::Algorithm;

/// What a decommission leaves: the final trail and the erasure certificate,
/// both to be kept off the device.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decommissioned {
    /// The whole trail with its checkpoints (the last covers the
    /// `decommission` entry) and signers, verifiable offline.
    pub trail: AuditExport,
    /// The signed crypto-erase certificate.
    pub certificate: ErasureCertificate,
}

impl<B: Backend> Keystore<B> {
    /// Decommissions the store (REQ-KEY-WIPE-01): records a final audit
    /// event and signs a final checkpoint over it, destroys every backend
    /// object but the audit signing key, signs the crypto-erase certificate
    /// ([`ErasureCertificate`]: every key and version, the method, the actor,
    /// the final checkpoint), then wipes the backend (the signing key with
    /// it), removes the store's monotonic counter and deletes all key
    /// metadata. After it no key is usable through any API and none can be
    /// created. Needs the security-officer role.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::Policy`] when `actor`'s role lacks the duty (the refusal is audited);
    /// [`ErrorKind::KeyState`] when the store is already decommissioned;
    /// [`ErrorKind::Integrity`] when the audit key reference is missing from a live store, or the
    /// monotonic counter is ahead of the database (a rollback);
    /// [`ErrorKind::Backend`] when the metadata database or the backend fails (a failed wipe leaves
    /// the store live, with the final event recorded; no certificate is issued).
    pub fn decommission(&self, actor: &Actor) -> Result<Decommissioned> {
        let _w = self.writing("decommission")?;
        self.require(actor, Duty::Administer, "decommission", None)?;
        let (keys, counter, store_id) = {
            let mut md = self.md();
            if md::decommissioned_at(md.conn())?.is_some() {
                return Err(Error::key_state("this store is already decommissioned"));
            }
            let mut keys = Vec::new();
            for k in md::keys(md.conn())? {
                let versions = md::versions(md.conn(), k.id)?
                    .into_iter()
                    .map(|v| ErasedVersion {
                        version: v.version,
                        state: v.state.as_str().to_string(),
                        had_material: v.handle.is_some(),
                        fingerprint: v.fingerprint,
                    })
                    .collect();
                keys.push(ErasedKey {
                    name: k.name,
                    algorithm: k.algorithm.to_string(),
                    versions,
                });
            }
            let counter = md::rollback_counter(md.conn())?;
            let store_id = md::store_id(md.conn())?;
            let tx = md.tx()?;
            self.audit(
                &tx,
                Some(actor),
                AuditEvent::Decommission,
                Subject::default(),
                format!(
                    "wiping {} key(s) from the {} backend, then the metadata",
                    keys.len(),
                    self.backend.name()
                ),
            )?;
            tx.commit()?;
            (keys, counter, store_id)
        };
        let final_checkpoint = self.checkpoint_now(CheckpointReason::Decommission, None)?;
        let (_, signer_handle, signer_spki) = Self::active_signer(self.md().conn())?
            .ok_or_else(|| Error::key_state("the store has no audit signing key"))?;
        let signer = PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, signer_spki)?;
        // Everything but the signing key, then the certificate, then the rest.
        let mut destroyed = 0u64;
        for h in self.backend.list()? {
            if h == signer_handle {
                continue;
            }
            match self.backend.destroy(&h) {
                Ok(()) => destroyed += 1,
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // The counter is no longer needed once the final checkpoint is
        // signed; the certificate says whether it went.
        let counter_removed = counter.as_ref().map(|c| {
            let name = self.backend.counter_describe(c);
            match self.backend.counter_destroy(c) {
                Ok(()) => format!("{name} removed"),
                Err(e) => format!("{name} NOT removed: {}", e.message()),
            }
        });
        let statement = ErasureStatement {
            format: ERASURE_DOMAIN.to_string(),
            store_id,
            backend: self.backend.name().to_string(),
            method: self.backend.erasure_method(),
            at: self
                .clock
                .now()
                .replace_nanosecond(0)
                .unwrap_or(self.clock.now()),
            actor: actor.id().to_string(),
            role: actor.role().id().to_string(),
            keys,
            objects_destroyed: destroyed,
            signing_key_destroyed_after_signature: signer.fingerprint(),
            counter_removed,
            final_checkpoint,
        };
        let certificate = ErasureCertificate::sign(&statement, &signer, |m| {
            self.sign_as_auditor(&signer_handle, m)
        })?;
        self.backend.wipe()?;
        let now = self.now();
        {
            let mut md = self.md();
            let tx = md.tx()?;
            md::decommission(&tx, &now)?;
            tx.commit()?;
        }
        Ok(Decommissioned {
            trail: self.evidence_snapshot()?,
            certificate,
        })
    }
}

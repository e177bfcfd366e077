//! Signing an evidence pack's manifest with the audit signing key.

use super::{Keystore, Subject};
use crate::audit::{AuditEvent, AuditSigner};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::roles::{Actor, Duty};
use sha2::{Digest, Sha256};

/// The first line of what an evidence manifest's signature covers: the
/// signed bytes are this, a `\n`, then the manifest (e.g. a `SHA256SUMS`
/// file). The prefix keeps manifest signatures apart from checkpoints and
/// erasure certificates, which the same key signs.
pub const EVIDENCE_DOMAIN: &str = "keystore-evidence-manifest-v1";

impl<B: Backend> Keystore<B> {
    /// Signs `manifest` with the audit signing key (ECDSA P-256 SHA-256,
    /// DER) over [`EVIDENCE_DOMAIN`], `\n` and the manifest, and records
    /// the manifest's SHA-256 in the audit trail. Returns the signature and
    /// the signing key. Needs the security-officer or auditor role.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor`'s role lacks the duty (audited);
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission;
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when the write lock is held past the timeout;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the database or the backend fails.
    pub fn sign_evidence_manifest(
        &self,
        actor: &Actor,
        manifest: &[u8],
    ) -> Result<(Vec<u8>, AuditSigner)> {
        let _w = self.writing("sign an evidence manifest")?;
        self.require(actor, Duty::Audit, "evidence manifest signature", None)?;
        let no_signer = || Error::key_state("the store has no audit signing key");
        let (version, handle, _) = Self::active_signer(self.md().conn())?.ok_or_else(no_signer)?;
        let info = self
            .audit_signers()?
            .into_iter()
            .find(|s| s.version == version)
            .ok_or_else(no_signer)?;
        let mut message = format!("{EVIDENCE_DOMAIN}\n").into_bytes();
        message.extend_from_slice(manifest);
        let signature = self.sign_as_auditor(&handle, &message)?;
        let mut md = self.md();
        let tx = md.tx()?;
        self.audit(
            &tx,
            Some(actor),
            AuditEvent::Evidence,
            Subject::default(),
            format!(
                "evidence manifest sha256:{} signed by {}",
                hex::encode(Sha256::digest(manifest)),
                info.fingerprint
            ),
        )?;
        tx.commit()?;
        Ok((signature, info))
    }
}

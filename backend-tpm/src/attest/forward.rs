//! The keystore's [`KeyAttestation`] family for [`TpmBackend`]: each method
//! forwards to the inherent method of the same role.
//!
//! An [`AttestationKeyBlob`]'s `public_area` is the AK's `TPMT_PUBLIC`
//! and its `context` is [`AttestationKey::to_bytes`].

use super::{AttestationKey, TpmBackend};
use keystore_backend::{
    AttestationKeyBlob, BackendKey, Error, KeyAttestation, KeyCertification, Result,
};

/// The AK of `blob`, whose public area must be the one its context holds.
fn attestation_key(blob: &AttestationKeyBlob) -> Result<AttestationKey> {
    let ak = AttestationKey::from_bytes(blob.context())?;
    if ak.public_area() != blob.public_area() {
        return Err(Error::integrity(
            "attestation key blob: its public area is not the one its context holds",
        ));
    }
    Ok(ak)
}

impl KeyAttestation for TpmBackend {
    /// [`TpmBackend::ek_certificate`].
    fn endorsement_certificate(&self) -> Result<Vec<u8>> {
        TpmBackend::ek_certificate(self)
    }

    /// [`TpmBackend::ek_public`].
    fn endorsement_public(&self) -> Result<Vec<u8>> {
        TpmBackend::ek_public(self)
    }

    /// [`TpmBackend::create_attestation_key`].
    fn create_attestation_key(&self) -> Result<AttestationKeyBlob> {
        let ak = TpmBackend::create_attestation_key(self)?;
        Ok(AttestationKeyBlob::new(
            ak.public_area().to_vec(),
            ak.to_bytes(),
        ))
    }

    /// [`TpmBackend::activate_credential`].
    fn activate_credential(
        &self,
        ak: &AttestationKeyBlob,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        TpmBackend::activate_credential(self, &attestation_key(ak)?, blob, encrypted_secret)
    }

    /// [`TpmBackend::certify`] of a key that must be of `key`'s algorithm,
    /// with its public area ([`TpmBackend::key_public_area`]).
    fn certify(
        &self,
        ak: &AttestationKeyBlob,
        key: &BackendKey,
        nonce: &[u8],
    ) -> Result<KeyCertification> {
        let (attestation, signature, public_area) =
            self.certify_as(&attestation_key(ak)?, key.handle(), key.algorithm(), nonce)?;
        Ok(KeyCertification {
            attestation,
            signature,
            public_area,
        })
    }
}

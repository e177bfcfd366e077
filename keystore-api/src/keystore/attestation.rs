//! Key attestation through the store: the device's endorsement
//! certificate, an attestation key, credential activation and the
//! certification of a key's active version, for a verifier off the device
//! (`provisioning::attest_tpm`). Nothing returned is secret; nothing is
//! written and nothing is audited here (the verifier records its verdict).

use super::Keystore;
use crate::attestation::{AttestationKeyBlob, KeyCertification};
use crate::backend::Backend;
use crate::error::Result;

impl<B: Backend> Keystore<B> {
    /// The device's endorsement certificate (DER).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) from a
    /// backend without attestation; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound)
    /// when the device has no certificate; [`ErrorKind::Backend`](crate::ErrorKind::Backend)
    /// when it fails.
    pub fn endorsement_certificate(&self) -> Result<Vec<u8>> {
        self.backend.endorsement_certificate()
    }

    /// The endorsement key's public area (the certificate's key).
    ///
    /// # Errors
    /// As [`Keystore::endorsement_certificate`].
    pub fn endorsement_public(&self) -> Result<Vec<u8>> {
        self.backend.endorsement_public()
    }

    /// A fresh attestation key tied to the endorsement key.
    ///
    /// # Errors
    /// As [`Keystore::endorsement_certificate`].
    pub fn create_attestation_key(&self) -> Result<AttestationKeyBlob> {
        self.backend.create_attestation_key()
    }

    /// Unwraps a credential made for this device's endorsement key and
    /// `ak`'s Name.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when it was made
    /// for another device or key; otherwise as
    /// [`Keystore::endorsement_certificate`].
    pub fn activate_credential(
        &self,
        ak: &AttestationKeyBlob,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        self.backend.activate_credential(ak, blob, encrypted_secret)
    }

    /// Certifies the active version of `name` with `ak` over `nonce`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a
    /// malformed name or a nonce the device refuses;
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no
    /// active version; otherwise as [`Keystore::endorsement_certificate`].
    pub fn certify_key(
        &self,
        name: &str,
        ak: &AttestationKeyBlob,
        nonce: &[u8],
    ) -> Result<KeyCertification> {
        let r = self.resolve_active(name, None)?;
        self.backend
            .certify(ak, &r.backend_key, nonce)
            .map_err(|e| e.with_key(name).with_version(r.version))
    }
}

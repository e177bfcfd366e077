//! Optional key attestation, TPM 2.0-style: the device proves to a
//! verifier off the device that a key it holds was generated inside it and
//! cannot leave it. The structures are the device's own (for a TPM,
//! `TPMT_PUBLIC`, `TPMS_ATTEST` and `TPMT_SIGNATURE`, marshalled, without
//! `TPM2B` size prefixes); the verifier parses and checks them
//! (`provisioning::attest_tpm`). Nothing here is secret: the private parts
//! of the endorsement and attestation keys never leave the device.

use crate::backend::{BackendKey, KeyManagement};
use crate::error::{Error, Result};

/// An attestation key the device made: its public area and what the
/// backend needs to load it again (opaque; for a TPM, its public and
/// wrapped private blobs, usable only inside that TPM).
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationKeyBlob {
    public_area: Vec<u8>,
    context: Vec<u8>,
}

impl std::fmt::Debug for AttestationKeyBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKeyBlob")
            .field("public_area_len", &self.public_area.len())
            .field("context_len", &self.context.len())
            .finish()
    }
}

impl AttestationKeyBlob {
    /// An attestation key with `public_area` and the backend's `context`.
    pub fn new(public_area: Vec<u8>, context: Vec<u8>) -> Self {
        AttestationKeyBlob {
            public_area,
            context,
        }
    }

    /// The key's public area (for a TPM, `TPMT_PUBLIC`).
    pub fn public_area(&self) -> &[u8] {
        &self.public_area
    }

    /// What the backend loads the key from.
    pub fn context(&self) -> &[u8] {
        &self.context
    }
}

/// What the device says about one of its keys: the attestation structure,
/// the attestation key's signature over it, and the key's public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCertification {
    /// For a TPM, the `TPMS_ATTEST` of `TPM2_Certify`.
    pub attestation: Vec<u8>,
    /// For a TPM, the `TPMT_SIGNATURE` by the attestation key.
    pub signature: Vec<u8>,
    /// For a TPM, the certified key's `TPMT_PUBLIC`.
    pub public_area: Vec<u8>,
}

fn unsupported(backend: &str) -> Error {
    Error::unsupported(format!(
        "the {backend} backend has no key attestation (no TPM endorsement key)"
    ))
}

/// Optional key attestation. The default of every method is
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported): soft stores
/// and tokens without an endorsement hierarchy have nothing to attest with.
pub trait KeyAttestation: KeyManagement {
    /// The endorsement key's certificate (DER), as the manufacturer stored it.
    ///
    /// # Errors
    /// `Unsupported` without attestation; `NotFound` when the device has no
    /// certificate; `Backend` when the device fails.
    fn endorsement_certificate(&self) -> Result<Vec<u8>> {
        Err(unsupported(self.name()))
    }

    /// The endorsement key's public area, the key of
    /// [`KeyAttestation::endorsement_certificate`].
    ///
    /// # Errors
    /// As [`KeyAttestation::endorsement_certificate`].
    fn endorsement_public(&self) -> Result<Vec<u8>> {
        Err(unsupported(self.name()))
    }

    /// Creates an attestation key tied to the endorsement key (restricted:
    /// it signs only structures the device made).
    ///
    /// # Errors
    /// As [`KeyAttestation::endorsement_certificate`].
    fn create_attestation_key(&self) -> Result<AttestationKeyBlob> {
        Err(unsupported(self.name()))
    }

    /// Unwraps a credential made for the endorsement key and `ak`'s Name
    /// (for a TPM, `TPM2_ActivateCredential`; `blob` and `encrypted_secret`
    /// are the `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET` buffers).
    ///
    /// # Errors
    /// `Integrity` when the credential was not made for this device and this
    /// key; otherwise as [`KeyAttestation::endorsement_certificate`].
    fn activate_credential(
        &self,
        ak: &AttestationKeyBlob,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        let _ = (ak, blob, encrypted_secret);
        Err(unsupported(self.name()))
    }

    /// Certifies `key` with `ak` over `nonce` (for a TPM, `TPM2_Certify`
    /// with `nonce` as qualifying data, at most 64 bytes).
    ///
    /// # Errors
    /// `InvalidInput` for a longer nonce; `NotFound` for a key the device
    /// does not hold; otherwise as
    /// [`KeyAttestation::endorsement_certificate`].
    fn certify(
        &self,
        ak: &AttestationKeyBlob,
        key: &BackendKey,
        nonce: &[u8],
    ) -> Result<KeyCertification> {
        let _ = (ak, key, nonce);
        Err(unsupported(self.name()))
    }
}

//! The device side of [`attest_tpm`](super::attest_tpm) for a keystore:
//! its backend's endorsement certificate and key, an attestation key made
//! under the endorsement key, credential activation and the certification
//! of the identity key's active version. A backend without attestation
//! (soft, PKCS#11) answers `Unsupported`, which the factory refuses.

use super::TpmAttester;
use keystore_api::{AttestationKeyBlob, Backend, Error, Keystore, Result};

/// A device whose identity key `key_name` lives in `ks`.
pub struct KeystoreAttester<'a, B: Backend> {
    ks: &'a Keystore<B>,
    key_name: String,
    ak: Option<AttestationKeyBlob>,
}

impl<B: Backend> std::fmt::Debug for KeystoreAttester<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoreAttester")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Backend> KeystoreAttester<'a, B> {
    /// The attester for identity key `key_name` in `ks`.
    pub fn new(ks: &'a Keystore<B>, key_name: &str) -> Self {
        KeystoreAttester {
            ks,
            key_name: key_name.to_string(),
            ak: None,
        }
    }

    fn ak(&self) -> Result<&AttestationKeyBlob> {
        self.ak
            .as_ref()
            .ok_or_else(|| Error::key_state("no attestation key was created yet"))
    }
}

impl<B: Backend> TpmAttester for KeystoreAttester<'_, B> {
    fn ek_certificate(&self) -> Result<Vec<u8>> {
        self.ks.endorsement_certificate()
    }

    fn ek_public(&self) -> Result<Vec<u8>> {
        self.ks.endorsement_public()
    }

    fn create_attestation_key(&mut self) -> Result<Vec<u8>> {
        let ak = self.ks.create_attestation_key()?;
        let public = ak.public_area().to_vec();
        self.ak = Some(ak);
        Ok(public)
    }

    fn activate_credential(&self, blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>> {
        self.ks
            .activate_credential(self.ak()?, blob, encrypted_secret)
    }

    fn certify_identity(&self, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let c = self.ks.certify_key(&self.key_name, self.ak()?, nonce)?;
        Ok((c.attestation, c.signature, c.public_area))
    }
}

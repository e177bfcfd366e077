//! The keystore's backend families ([`KeyManagement`], [`Signing`],
//! [`Mac`], [`Aead`], [`KeyWrap`]) for [`TpmBackend`]; key agreement is in
//! `agreement`.

use crate::ops::resolve_in;
use crate::{blob, pubkey, templates, TpmBackend};
use keystore_backend::{
    Aead, AeadSealed, Algorithm, BackendKey, Capabilities, Error, GeneratedKey, KeyClass,
    KeyHandle, KeyManagement, KeyWrap, Mac, NewKey, PublicKey, Result, SecretBytes, Signing,
};
use sha2::{Digest as _, Sha256, Sha384};
use zeroize::Zeroizing;

fn unsupported_aead() -> Error {
    templates::not_in_tpm2(Algorithm::Aes256Gcm)
        .unwrap_or_else(|| Error::unsupported("aes-256-gcm: not offered by the tpm backend"))
}

impl KeyManagement for TpmBackend {
    fn permission_report(&self) -> keystore_backend::fsperm::PermissionReport {
        self.permissions.clone()
    }

    fn name(&self) -> &'static str {
        "tpm"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey> {
        let algorithm = new.algorithm;
        // Unsupported for what TPM 2.0 lacks (AES-GCM, Ed25519, ML-DSA-65),
        // then for what this TPM refused in TPM2_TestParms.
        if let Some(e) = templates::not_in_tpm2(algorithm) {
            return Err(e);
        }
        if !self
            .caps
            .supports(algorithm, keystore_backend::Operation::Generate)
        {
            return Err(Error::unsupported(format!(
                "{algorithm}: this TPM does not support it (TPM2_TestParms refused)"
            )));
        }
        let template = templates::key(algorithm, true, Default::default())?;
        let (handle, public) = self.create_key(algorithm, &template, &[])?;
        let public_key = match algorithm.class() {
            KeyClass::Asymmetric => Some(pubkey::spki(algorithm, &public)?),
            KeyClass::Symmetric => None,
        };
        Ok(GeneratedKey { handle, public_key })
    }

    fn import(&self, new: &NewKey<'_>, secret: &SecretBytes) -> Result<KeyHandle> {
        let algorithm = new.algorithm;
        if algorithm.class() == keystore_backend::KeyClass::Asymmetric {
            return Err(Error::policy(format!(
                "{algorithm} keys cannot be imported; generate them inside the backend"
            )));
        }
        if let Some(e) = templates::not_in_tpm2(algorithm) {
            return Err(e);
        }
        if algorithm != Algorithm::HmacSha256 {
            return Err(Error::unsupported(format!(
                "{algorithm} keys cannot be imported into a TPM"
            )));
        }
        if secret.len() != 32 {
            return Err(Error::invalid_input(format!(
                "{algorithm} needs a 32-byte secret, got {} bytes",
                secret.len()
            )));
        }
        let template = templates::key(algorithm, false, Default::default())?;
        Ok(self.create_key(algorithm, &template, secret.expose())?.0)
    }

    /// Shreds the key's registry entry (its auth value) and flushes any
    /// loaded copy; the TPM then refuses every use of the blob.
    fn destroy(&self, handle: &KeyHandle) -> Result<()> {
        let (id, _) = blob::peek(handle)?;
        let mut st = self.lock();
        // Flushed even if another process destroyed the key first.
        if let Some(conn) = st.conn.as_mut() {
            conn.evict(&id);
        }
        if !st.registry.remove(&id)? {
            return Err(Error::not_found(format!(
                "TPM key {} does not exist",
                hex::encode(id)
            )));
        }
        Ok(())
    }

    /// The keys whose entry files are in the registry directory now,
    /// whichever process created them.
    fn list(&self) -> Result<Vec<KeyHandle>> {
        let mut st = self.lock();
        st.registry.scan()?;
        Ok(st.registry.handles())
    }

    /// Shreds every registry entry and flushes every loaded key. Blobs of
    /// this store become unusable; an owner clear
    /// ([`TpmBackend::decommission`]) also makes them unloadable.
    fn wipe(&self) -> Result<()> {
        let mut st = self.lock();
        if let Some(conn) = st.conn.as_mut() {
            conn.evict_all();
        }
        st.registry.scan()?;
        for id in st.registry.ids() {
            st.registry.remove(&id)?;
        }
        Ok(())
    }

    fn erasure_method(&self) -> String {
        "TPM objects flushed and persistent handles evicted (TPM2_FlushContext, \
         TPM2_EvictControl); the key blobs wrapped under the TPM's storage key overwritten in place and unlinked. \
         No TPM2_Clear: the storage hierarchy is kept, so a copy of a blob taken before would \
         still load in this TPM"
            .to_string()
    }
}

impl Signing for TpmBackend {
    fn public_key(&self, key: &BackendKey) -> Result<PublicKey> {
        let algorithm = key.algorithm();
        if algorithm.class() != KeyClass::Asymmetric {
            return Err(Error::policy(format!(
                "{algorithm} keys have no public key"
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let r = resolve_in(&mut st.registry, &mut st.resolved, key.handle(), algorithm)?;
        pubkey::spki(algorithm, &r.blob.public)
    }

    fn sign(&self, key: &BackendKey, message: &[u8]) -> Result<Vec<u8>> {
        let algorithm = key.algorithm();
        if !algorithm.signs() {
            return Err(Error::policy(format!("{algorithm} keys do not sign")));
        }
        // The digest of the key's scheme (SHA-384 for P-384, else SHA-256),
        // computed here; TPM2_Sign gets it with a NULL ticket.
        let mut buf = [0u8; 48];
        let digest: &[u8] = if algorithm == Algorithm::EcdsaP384Sha384 {
            buf.copy_from_slice(&Sha384::digest(message));
            &buf
        } else {
            buf[..32].copy_from_slice(&Sha256::digest(message));
            &buf[..32]
        };
        let scheme = templates::signature_scheme(algorithm);
        let sig = self.run(key.handle(), algorithm, "sign", |conn, loaded| {
            conn.esys.sign(loaded, digest, scheme)
        })?;
        pubkey::signature_bytes(algorithm, sig)
    }
}

impl Mac for TpmBackend {
    fn hmac_sha256(&self, key: &BackendKey, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(key.handle(), "MAC input", data, false)
    }

    /// As [`Mac::hmac_sha256`], with the result (a secret PRK)
    /// encrypted on the bus unless the configuration says otherwise
    /// ([`TpmConfig::with_prk_in_clear_on_the_bus`]).
    ///
    /// [`TpmConfig::with_prk_in_clear_on_the_bus`]: crate::TpmConfig::with_prk_in_clear_on_the_bus
    fn hkdf_extract(&self, key: &BackendKey, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(key.handle(), "HKDF salt", salt, !self.config.prk_in_clear())
    }
}

/// TPM 2.0 has no AES-GCM: both methods are
/// [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported).
impl Aead for TpmBackend {
    fn encrypt(&self, _key: &BackendKey, _aad: &[u8], _plaintext: &[u8]) -> Result<AeadSealed> {
        Err(unsupported_aead())
    }

    fn decrypt(
        &self,
        _key: &BackendKey,
        _aad: &[u8],
        _nonce: &[u8; 12],
        _ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        Err(unsupported_aead())
    }
}

/// Wrapped export is not offered: wrap and unwrap are
/// [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported).
impl KeyWrap for TpmBackend {}

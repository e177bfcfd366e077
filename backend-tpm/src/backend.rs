//! The keystore [`Backend`] contract for [`TpmBackend`].

use crate::ops::resolve_in;
use crate::{blob, pubkey, templates, TpmBackend};
use keystore_backend::{
    AeadSealed, Algorithm, Backend, Capabilities, Error, GeneratedKey, KeyClass, KeyHandle,
    PublicKey, Result, SecretBytes,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

fn unsupported_aead() -> Error {
    Error::unsupported(
        "aes-256-gcm: TPM 2.0 has no AES-GCM; use a TPM-sealed soft store for AEAD keys",
    )
}

impl Backend for TpmBackend {
    fn permission_report(&self) -> keystore_backend::fsperm::PermissionReport {
        self.permissions.clone()
    }

    fn name(&self) -> &'static str {
        "tpm"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn generate(&self, algorithm: Algorithm, _label: &str) -> Result<GeneratedKey> {
        if algorithm == Algorithm::Aes256Gcm {
            return Err(unsupported_aead());
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

    fn import(
        &self,
        algorithm: Algorithm,
        secret: &SecretBytes,
        _label: &str,
    ) -> Result<KeyHandle> {
        match algorithm {
            Algorithm::HmacSha256 => {}
            Algorithm::Aes256Gcm => return Err(unsupported_aead()),
            a => {
                return Err(Error::policy(format!(
                    "{a} keys cannot be imported; generate them inside the backend"
                )))
            }
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

    fn public_key(&self, handle: &KeyHandle, algorithm: Algorithm) -> Result<PublicKey> {
        if algorithm.class() != KeyClass::Asymmetric {
            return Err(Error::policy(format!(
                "{algorithm} keys have no public key"
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let r = resolve_in(&mut st.registry, &mut st.resolved, handle, algorithm)?;
        pubkey::spki(algorithm, &r.blob.public)
    }

    fn sign(&self, handle: &KeyHandle, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        if algorithm.class() != KeyClass::Asymmetric {
            return Err(Error::policy(format!("{algorithm} keys do not sign")));
        }
        let digest = Sha256::digest(message);
        let scheme = templates::signature_scheme(algorithm);
        let sig = self.run(handle, algorithm, "sign", |conn, key| {
            conn.esys.sign(key, &digest, scheme)
        })?;
        pubkey::signature_bytes(algorithm, sig)
    }

    fn hmac_sha256(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(handle, "MAC input", data, false)
    }

    /// As [`Backend::hmac_sha256`], with the result (a secret PRK)
    /// encrypted on the bus unless the configuration says otherwise
    /// ([`TpmConfig::with_prk_in_clear_on_the_bus`]).
    ///
    /// [`TpmConfig::with_prk_in_clear_on_the_bus`]: crate::TpmConfig::with_prk_in_clear_on_the_bus
    fn hkdf_extract(&self, handle: &KeyHandle, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac(handle, "HKDF salt", salt, !self.config.prk_in_clear())
    }

    fn encrypt(&self, _handle: &KeyHandle, _aad: &[u8], _plaintext: &[u8]) -> Result<AeadSealed> {
        Err(unsupported_aead())
    }

    fn decrypt(
        &self,
        _handle: &KeyHandle,
        _aad: &[u8],
        _nonce: &[u8; 12],
        _ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        Err(unsupported_aead())
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
}

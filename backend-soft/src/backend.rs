//! The backend families ([`KeyManagement`], [`Signing`], [`Mac`], [`Aead`],
//! [`KeyWrap`], [`KeyAgreement`]) of [`SoftStore`]: key management, use,
//! wrapping and wipe over the sealed records.

use crate::record::ID_LEN;
use crate::{fsio, material};
use crate::{record_id, wrap_aad, SoftStore, HEADER_FILE, RECORD_EXT};
use keystore_backend::{
    fsperm::PermissionReport, Aead, AeadSealed, Algorithm, BackendKey, Capabilities, Error,
    ErrorKind, GeneratedKey, KeyAgreement, KeyHandle, KeyManagement, KeyWrap, Mac, NewKey,
    Operation, PeerPublicKey, PublicKey, Result, SecretBytes, Signing,
};
use std::fs;
use zeroize::Zeroizing;

impl KeyManagement for SoftStore {
    fn name(&self) -> &'static str {
        "soft"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all()
            .with(Algorithm::Aes256Gcm, Operation::Wrap)
            .with(Algorithm::HmacSha256, Operation::Wrap);
        for alg in Algorithm::ALL {
            if !self.provider.supports(alg) {
                caps = caps.without_algorithm(alg);
            }
        }
        caps
    }

    fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey> {
        let algorithm = new.algorithm;
        let secret = material::generate(self.provider, algorithm)?;
        let (id, m) = self.store(algorithm, &secret)?;
        let public_key = match algorithm.class() {
            keystore_backend::KeyClass::Asymmetric => Some(m.public_key(algorithm)?),
            keystore_backend::KeyClass::Symmetric => None,
        };
        Ok(GeneratedKey {
            handle: KeyHandle::new(id.to_vec()),
            public_key,
        })
    }

    fn import(&self, new: &NewKey<'_>, secret: &SecretBytes) -> Result<KeyHandle> {
        let algorithm = new.algorithm;
        match algorithm.secret_len() {
            None => Err(Error::policy(format!(
                "{algorithm} keys cannot be imported; generate them inside the backend"
            ))),
            Some(n) if n != secret.len() => Err(Error::invalid_input(format!(
                "{algorithm} needs a {n}-byte secret, got {} bytes",
                secret.len()
            ))),
            Some(_) => Ok(KeyHandle::new(self.store(algorithm, secret)?.0.to_vec())),
        }
    }

    fn destroy(&self, handle: &KeyHandle) -> Result<()> {
        let id = record_id(handle)?;
        self.cache().entries.remove(&id);
        fsio::remove_durably(&self.path_of(&id))
    }

    fn list(&self) -> Result<Vec<KeyHandle>> {
        let entries = fs::read_dir(&self.records)
            .map_err(|e| fsio::io_err(format!("cannot list {}", self.records.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| fsio::io_err("cannot list records", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(&format!(".{RECORD_EXT}")) {
                if let Ok(id) = hex::decode(stem) {
                    if id.len() == ID_LEN {
                        out.push(KeyHandle::new(id));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes every record, then overwrites and removes the header holding
    /// the wrapped store key. The store cannot be opened afterwards.
    fn wipe(&self) -> Result<()> {
        self.cache().entries.clear();
        for h in self.list()? {
            match self.destroy(&h) {
                Ok(()) => {}
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let header = self.dir.join(HEADER_FILE);
        fsio::overwrite_in_place(&header)?;
        fsio::remove_durably(&header)
    }

    fn permission_report(&self) -> PermissionReport {
        self.permissions.clone()
    }

    fn erasure_method(&self) -> String {
        "crypto-erase by file destruction: each sealed key file overwritten in place with zeros, \
         fsynced and unlinked, then the store header holding the wrapped store key overwritten and \
         unlinked (every key file was encrypted under that store key)"
            .to_string()
    }
}

impl Signing for SoftStore {
    fn public_key(&self, key: &BackendKey) -> Result<PublicKey> {
        let algorithm = key.algorithm();
        self.with_material(key.handle(), algorithm, |m| m.public_key(algorithm))
    }

    fn sign(&self, key: &BackendKey, message: &[u8]) -> Result<Vec<u8>> {
        let algorithm = key.algorithm();
        self.with_material(key.handle(), algorithm, |m| m.sign(algorithm, message))
    }
}

impl Mac for SoftStore {
    fn hmac_sha256(&self, key: &BackendKey, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.with_material(key.handle(), Algorithm::HmacSha256, |m| m.hmac(data))
    }
}

impl Aead for SoftStore {
    fn encrypt(&self, key: &BackendKey, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        self.with_material(key.handle(), Algorithm::Aes256Gcm, |m| {
            m.encrypt(aad, plaintext)
        })
    }

    fn decrypt(
        &self,
        key: &BackendKey,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        self.with_material(key.handle(), Algorithm::Aes256Gcm, |m| {
            m.decrypt(aad, nonce, ciphertext)
        })
    }
}

/// No endorsement key: attestation is `Unsupported` (the default).
impl keystore_backend::KeyAttestation for SoftStore {}

impl KeyAgreement for SoftStore {
    fn agree_sha256_kdf(
        &self,
        key: &BackendKey,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let algorithm = key.algorithm();
        if algorithm != Algorithm::EcdhP256 {
            return Err(Error::policy(format!(
                "{algorithm} keys do no key agreement"
            )));
        }
        self.with_material(key.handle(), algorithm, |m| {
            m.agree_sha256_kdf(peer, fixed_info, len)
        })
    }
}

impl KeyWrap for SoftStore {
    /// Wraps with AES-256-GCM under the wrapping key; AAD binds the
    /// algorithm and `context`. Symmetric keys only.
    fn wrap(&self, wrapping_key: &BackendKey, key: &BackendKey, context: &[u8]) -> Result<Vec<u8>> {
        let algorithm = key.algorithm();
        if algorithm.class() != keystore_backend::KeyClass::Symmetric {
            return Err(Error::policy(format!(
                "{algorithm} keys are never exported"
            )));
        }
        let kek = self.load(wrapping_key.handle(), Algorithm::Aes256Gcm)?;
        let secret = self.read_record(&record_id(key.handle())?, algorithm)?;
        let sealed = kek.encrypt(&wrap_aad(algorithm, context), secret.expose())?;
        let mut out = sealed.nonce.to_vec();
        out.extend_from_slice(&sealed.ciphertext);
        Ok(out)
    }

    fn unwrap(
        &self,
        wrapping_key: &BackendKey,
        new: &NewKey<'_>,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<KeyHandle> {
        let algorithm = new.algorithm;
        if algorithm.class() != keystore_backend::KeyClass::Symmetric {
            return Err(Error::policy(format!(
                "{algorithm} keys are never imported"
            )));
        }
        if wrapped.len() < 12 + 16 {
            return Err(Error::integrity("wrapped key is truncated"));
        }
        let kek = self.load(wrapping_key.handle(), Algorithm::Aes256Gcm)?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&wrapped[..12]);
        let secret = kek.decrypt(&wrap_aad(algorithm, context), &nonce, &wrapped[12..])?;
        if Some(secret.len()) != algorithm.secret_len() {
            return Err(Error::integrity("wrapped key has the wrong length"));
        }
        Ok(KeyHandle::new(self.store(algorithm, &secret)?.0.to_vec()))
    }
}

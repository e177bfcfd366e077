//! Using keys: public keys, signing (ECDSA P-256/P-384, Ed25519, RSA),
//! HMAC and AEAD.

use super::{gcm_params, TAG_LEN};
use crate::error::{map, COMPONENT};
use crate::objects::Kind;
use crate::{Pkcs11Backend, SignatureCheck};
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::types::Ulong;
use keystore_backend::{
    AeadSealed, Algorithm, Error, KeyClass, KeyHandle, PublicKey, Result, SecretBytes,
};
use sha2::{Digest, Sha256, Sha384};
use std::sync::atomic::Ordering;
use zeroize::{Zeroize, Zeroizing};

impl Pkcs11Backend {
    pub(crate) fn public_key_of(&self, handle: &KeyHandle, alg: Algorithm) -> Result<PublicKey> {
        if alg.class() != KeyClass::Asymmetric {
            return Err(Error::policy(format!("{alg} keys have no public key")));
        }
        let id = self.prefix.id_of(handle)?;
        Ok(self.verifier(&id, alg)?.public().clone())
    }

    /// Signs on the token; verifies the signature on the host against the
    /// key's public key object as [`SignatureCheck`] says before returning
    /// it (a signature that does not verify is `Integrity`, and the key's
    /// cached handle is forgotten).
    pub(crate) fn sign_message(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        if !alg.signs() {
            return Err(Error::policy(format!(
                "sign is not an operation of {alg} keys"
            )));
        }
        let id = self.prefix.id_of(handle)?;
        Kind::of(alg)?;
        // ECDSA: hashed on the host, then CKM_ECDSA (as tokens without the
        // hash-and-sign mechanisms need).
        let prehash = match alg {
            Algorithm::EcdsaP256Sha256 => Some(Sha256::digest(message).to_vec()),
            Algorithm::EcdsaP384Sha384 => Some(Sha384::digest(message).to_vec()),
            _ => None,
        };
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: Ulong::from(32u64),
        };
        let (sig, used) = self.with_key(
            &id,
            alg,
            |s, key| match &prehash {
                Some(hash) => s.sign(&Mechanism::Ecdsa, key, hash),
                // Pure Ed25519 (RFC 8032): CKM_EDDSA without parameters.
                None if alg == Algorithm::Ed25519 => s.sign(
                    &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    key,
                    message,
                ),
                None if alg.is_rsa_pss() => s.sign(&Mechanism::Sha256RsaPkcsPss(pss), key, message),
                None => s.sign(&Mechanism::Sha256RsaPkcs, key, message),
            },
            |e| map(&format!("sign with {alg} key {}", id.short()), e),
        )?;
        if let Some(want) = alg.signature_len().filter(|n| *n != sig.len()) {
            // A P-256 key object used as P-384 (or the reverse) signs; only
            // the length shows it before the host-side check would.
            self.forget(&id);
            return Err(Error::integrity(format!(
                "the token returned a {}-byte signature where {alg} makes {want}-byte ones: \
                 key {} on the token is not a {alg} key, or is damaged",
                sig.len(),
                id.short()
            )));
        }
        let verify = match self.signature_check {
            SignatureCheck::Always => true,
            SignatureCheck::FirstUse => used.unverified,
        };
        if verify {
            let verifier = self.verifier(&id, alg)?;
            self.verified.fetch_add(1, Ordering::Relaxed);
            if !verifier.verifies(message, &sig) {
                self.forget(&id);
                return Err(Error::integrity(format!(
                    "the signature the token made with key {} does not verify under the key's \
                     public key object: the key pair on the token is damaged or mismatched",
                    id.short()
                )));
            }
            self.mark_verified(&id, used.handle);
        }
        Ok(sig)
    }

    pub(crate) fn hmac(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let id = self.prefix.id_of(handle)?;
        let (mut tag, _) = self.with_key(
            &id,
            Algorithm::HmacSha256,
            |s, key| s.sign(&Mechanism::Sha256Hmac, key, data),
            |e| map(&format!("HMAC-SHA256 with key {}", id.short()), e),
        )?;
        let mut out = Zeroizing::new([0u8; 32]);
        let ok = tag.len() == 32;
        if ok {
            out.copy_from_slice(&tag);
        }
        tag.zeroize();
        if !ok {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an HMAC-SHA256 tag of the wrong length",
            ));
        }
        Ok(out)
    }

    pub(crate) fn aead_encrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<AeadSealed> {
        if aad.is_empty() {
            // SoftHSM 2.6.1 crashes on AES-GCM with empty AAD.
            return Err(Error::invalid_input(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM \
                 (the keystore's AAD always starts with the envelope header)",
            ));
        }
        let id = self.prefix.id_of(handle)?;
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let (ciphertext, _) = self.with_key(
            &id,
            Algorithm::Aes256Gcm,
            |s, key| {
                let mut iv = nonce;
                let params = gcm_params(&mut iv, aad)?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
            },
            |e| map(&format!("AES-GCM encrypt with key {}", id.short()), e),
        )?;
        if ciphertext.len() != plaintext.len() + TAG_LEN {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an AES-GCM ciphertext of the wrong length",
            ));
        }
        Ok(AeadSealed { nonce, ciphertext })
    }

    pub(crate) fn aead_decrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        if aad.is_empty() {
            return Err(Error::invalid_input(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM",
            ));
        }
        let id = self.prefix.id_of(handle)?;
        if ciphertext.len() < TAG_LEN {
            return Err(Error::integrity("ciphertext is shorter than its tag"));
        }
        let (plaintext, _) = self.with_key(
            &id,
            Algorithm::Aes256Gcm,
            |s, key| {
                let mut iv = *nonce;
                let params = gcm_params(&mut iv, aad)?;
                s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
            },
            |e| match &e {
                // A wrong tag, nonce, AAD or ciphertext. SoftHSM reports a
                // wrong tag as CKR_GENERAL_ERROR from C_Decrypt itself (after
                // C_DecryptInit read the key): not transient there.
                CkError::Pkcs11(
                    rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange),
                    _,
                )
                | CkError::Pkcs11(
                    rv @ (RvError::FunctionFailed | RvError::GeneralError),
                    Function::Decrypt | Function::DecryptUpdate | Function::DecryptFinal,
                ) => Error::integrity(format!(
                    "AES-GCM authentication failed with key {} ({})",
                    id.short(),
                    crate::error::ckr_name(*rv)
                )),
                _ => map(&format!("AES-GCM decrypt with key {}", id.short()), e),
            },
        )?;
        Ok(SecretBytes::new(plaintext))
    }
}

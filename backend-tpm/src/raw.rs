//! Raw TPM calls on an already-loaded key, for benchmark baselines
//! (`test-support` feature; never in production builds).
//!
//! [`TpmBackend::loaded_key`] resolves and loads a key once, the way the
//! backend does (through its LRU of loaded keys), and returns it with the
//! backend's connection locked. Each call on the [`LoadedKey`] is then one
//! TPM command on the loaded object and nothing else: no registry lookup,
//! no blob parsing or Name check, no cache lookup, no conversion of the
//! result. That is what an application calling tss-esapi directly with the
//! key already loaded pays, and what the keystore's own path is measured
//! against.
//!
//! While a [`LoadedKey`] lives, every other use of the backend (from any
//! thread) waits for it: drop it before using the keystore again.

use crate::esys::Tr;
use crate::ops::load_error;
use crate::{templates, State, TpmBackend};
use keystore_backend::{Algorithm, Component, Error, KeyHandle, Result};
use std::sync::MutexGuard;
use tss_esapi::structures::{Signature, SignatureScheme};
use zeroize::Zeroizing;

/// A key loaded in the TPM, with the backend's connection held.
pub struct LoadedKey<'a> {
    state: MutexGuard<'a, State>,
    tr: Tr,
    alg: Algorithm,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for LoadedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TpmBackend {
    /// Test support: resolves the key of `handle` (an `algorithm` key of
    /// this store), loads it if the backend has not already, and returns it
    /// with the connection locked for raw calls.
    pub fn loaded_key(&self, handle: &KeyHandle, algorithm: Algorithm) -> Result<LoadedKey<'_>> {
        let mut st = self.lock();
        let (blob, auth) = st.resolve(handle, algorithm)?;
        let conn = st.connect(&self.config)?;
        let tr = conn
            .key(handle.as_bytes(), &blob, auth.expose())
            .map_err(|rc| load_error(&blob, rc))?;
        Ok(LoadedKey {
            state: st,
            tr,
            alg: algorithm,
            scheme: templates::signature_scheme(algorithm),
        })
    }
}

impl LoadedKey<'_> {
    fn esys(&mut self) -> Result<&mut crate::esys::Esys> {
        self.state
            .conn
            .as_mut()
            .map(|c| &mut c.esys)
            .ok_or_else(|| Error::backend_msg(Component::Tpm, "no TPM connection"))
    }

    /// `TPM2_Sign` of a `digest` computed by the caller with the key's hash
    /// (32 bytes of SHA-256, or 48 of SHA-384 for P-384) with the key's
    /// scheme and a NULL hashcheck ticket; the TPM's signature structure as
    /// ESYS returns it.
    pub fn sign_digest(&mut self, digest: &[u8]) -> Result<Signature> {
        let (tr, scheme) = (self.tr, self.scheme);
        self.esys()?
            .sign(tr, digest, scheme)
            .map_err(|rc| crate::rc::to_error("sign", rc))
    }

    /// One `TPM2_ECDH_ZGen` with the peer point `(x, y)` (unchecked on the
    /// host; the TPM checks it): the shared secret `Z`, the x-coordinate
    /// of the product, 32 bytes for P-256. It comes back encrypted on the
    /// bus, as in the backend's agreement.
    pub fn ecdh_zgen(&mut self, x: &[u8], y: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (tr, field_len) = (self.tr, keystore_backend::EcCurve::P256.field_len());
        self.esys()?
            .ecdh_zgen(tr, x, y, field_len)
            .map_err(|rc| crate::rc::to_error("compute an ECDH shared secret", rc))
    }

    /// One `TPM2_HMAC` (SHA-256) of `data` (at most the TPM's input buffer),
    /// its result in clear on the bus (what a plain tss-esapi call pays).
    pub fn hmac(&mut self, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let tr = self.tr;
        self.esys()?
            .hmac(tr, data, false)
            .map_err(|rc| crate::rc::to_error("compute an HMAC", rc))
    }
}

//! Key agreement: ECDH with an `ecdh-p256` key and the one-step KDF of
//! SP 800-56C Rev. 2 (SHA-256). Like the rest of key use, no actor and no
//! audit entry (the hot path).

use super::Keystore;
use crate::agreement::{check_kdf_input, PeerPublicKey};
use crate::algorithm::Usages;
use crate::backend::Backend;
use crate::error::Result;
use crate::secret::SecretBytes;

impl<B: Backend> Keystore<B> {
    /// ECDH between the active version of `name` and `peer_public_key` (a DER
    /// `SubjectPublicKeyInfo`, a PEM `PUBLIC KEY`, or a SEC1 point), then
    /// `K_i = SHA-256(be32(i) ‖ Z ‖ fixed_info)` for i = 1, 2, … truncated to
    /// `len` bytes (OpenSSL's `SSKDF` with SHA-256). The shared secret `Z`
    /// never leaves the backend (or, on a TPM, host memory that is zeroized);
    /// only the derived bytes are returned, zeroized on drop.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed name, a peer key that is not a P-256 point
    /// (wrong length, another curve, not on the curve, the identity), `len` outside 1..=[`crate::agreement::MAX_AGREE_LEN`] or a
    /// `fixed_info` over [`crate::agreement::MAX_FIXED_INFO_LEN`];
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for an unknown or destroyed key;
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) when it has no active version (suspended, revoked, rotated away);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the key may not agree (not an `ecdh-p256` key);
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) from a backend without ECDH;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn agree_sha256_kdf(
        &self,
        name: &str,
        peer_public_key: &[u8],
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        check_kdf_input(fixed_info, len)?;
        let r = self.resolve_active(name, Some((Usages::AGREE, "agree")))?;
        let peer = PeerPublicKey::parse(r.key.algorithm, peer_public_key)
            .map_err(|e| e.with_key(name).with_version(r.version))?;
        self.backend
            .agree_sha256_kdf(&r.backend_key, &peer, fixed_info, len)
            .map_err(|e| e.with_key(name).with_version(r.version))
    }
}

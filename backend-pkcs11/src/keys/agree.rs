//! Key agreement: ECDH P-256 on the token, then the one-step KDF on the
//! token, so the shared secret `Z` never leaves it.
//!
//! 1. `C_DeriveKey(CKM_ECDH1_DERIVE, kdf = CKD_NULL, public data = the
//!    peer's uncompressed point)` into a session object
//!    ([`objects::shared_secret_template`]): `Z`, 32 bytes, sensitive,
//!    non-extractable.
//! 2. Per output block `i`: `C_DigestInit(CKM_SHA256)`,
//!    `C_DigestUpdate(be32(i))`, `C_DigestKey(Z)`,
//!    `C_DigestUpdate(FixedInfo)`, `C_DigestFinal`: `SHA-256(be32(i) ‖ Z ‖
//!    FixedInfo)`, as [`keystore_backend::agreement::one_step_kdf_sha256`].
//! 3. `C_DestroyObject(Z)` on every path: explicitly after success (a
//!    failure to destroy fails the call), by a drop guard otherwise; the
//!    pool also closes a session whose operation failed, which destroys its
//!    session objects.
//!
//! SoftHSM 2.6.1 digests a sensitive, non-extractable key with `C_DigestKey`
//! for SHA-1 and SHA-2 only (other digests answer `CKR_KEY_INDIGESTIBLE`);
//! a token that refuses it makes the agreement
//! [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported):
//! the secret is never made extractable instead.

use crate::error::{ckr_name, map, rv_of};
use crate::objects;
use crate::Pkcs11Backend;
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use keystore_backend::agreement::{check_kdf_input, PeerPublicKey};
use keystore_backend::{Algorithm, EcCurve, Error, KeyHandle, Result, SecretBytes};
use zeroize::Zeroizing;

/// The SHA-256 output length, one KDF block.
const BLOCK_LEN: usize = 32;

impl Pkcs11Backend {
    /// ECDH between the `ecdh-p256` key `handle` and `peer`, then
    /// `one_step_kdf_sha256(Z, fixed_info, len)`, both on the token.
    ///
    /// Errors: `Policy` for a key of another algorithm; `InvalidInput` for
    /// a `fixed_info` or `len` out of range, or a peer key on another curve
    /// or that the token refuses; `Unsupported` when the token will not
    /// digest the secret; `Integrity` when the key object is not an ECDH
    /// key (or damaged); otherwise as every key operation.
    pub(crate) fn agree(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        if alg != Algorithm::EcdhP256 {
            return Err(Error::policy(format!(
                "{alg} keys do no key agreement; use an ecdh-p256 key"
            )));
        }
        check_kdf_input(fixed_info, len)?;
        if peer.curve() != EcCurve::P256 {
            return Err(Error::invalid_input(format!(
                "the peer key is on {:?}; an ecdh-p256 key agrees with P-256 keys only",
                peer.curve()
            )));
        }
        let id = self.prefix.id_of(handle)?;
        let (out, _) = self.with_key(
            &id,
            alg,
            |s, key| {
                let z = SharedSecret::derive(s, key, peer)?;
                self.probe_shared_secret(s, z.handle);
                if let Err(e) = z.check_len()? {
                    return Ok(Err(e));
                }
                let out = kdf_on_token(s, z.handle, fixed_info, len)?;
                z.destroy()?;
                Ok(out)
            },
            |e| fail(&format!("ECDH agreement with key {}", id.short()), e),
        )?;
        out
    }

    #[cfg(feature = "test-support")]
    fn probe_shared_secret(&self, s: &Session, z: ObjectHandle) {
        if let Some(probe) = &self.agreement_probe {
            probe(s, z);
        }
    }

    #[cfg(not(feature = "test-support"))]
    fn probe_shared_secret(&self, _: &Session, _: ObjectHandle) {}
}

/// Maps a failed step, named by its PKCS#11 function: a peer point the
/// token refuses is `InvalidInput`, a secret it will not digest
/// `Unsupported`; the rest as [`map`].
fn fail(what: &str, e: CkError) -> Error {
    let step = match &e {
        CkError::Pkcs11(_, function) => format!("{what}, {function}"),
        _ => what.to_string(),
    };
    match rv_of(&e) {
        Some(rv @ RvError::KeyIndigestible) => Error::unsupported(format!(
            "{step}: {}: the token will not digest the sensitive shared secret, so it cannot \
             run the KDF without releasing the secret; agreement is not offered on it",
            ckr_name(rv)
        )),
        _ => match e {
            CkError::Pkcs11(
                rv @ (RvError::DomainParamsInvalid | RvError::ArgumentsBad),
                Function::DeriveKey,
            ) => Error::invalid_input(format!(
                "{step}: {}: the token refused the peer public key",
                ckr_name(rv)
            )),
            e => map(&step, e),
        },
    }
}

/// The shared secret `Z` as a session object, destroyed when dropped.
struct SharedSecret<'s> {
    session: &'s Session,
    handle: ObjectHandle,
    live: bool,
}

impl<'s> SharedSecret<'s> {
    /// `C_DeriveKey` with `CKM_ECDH1_DERIVE` (no KDF) and `peer`'s
    /// uncompressed point.
    fn derive(
        session: &'s Session,
        key: ObjectHandle,
        peer: &PeerPublicKey,
    ) -> cryptoki::error::Result<SharedSecret<'s>> {
        let params = Ecdh1DeriveParams::new(EcKdf::null(), peer.uncompressed_point());
        let handle = session.derive_key(
            &Mechanism::Ecdh1Derive(params),
            key,
            &objects::shared_secret_template(),
        )?;
        Ok(SharedSecret {
            session,
            handle,
            live: true,
        })
    }

    /// `Err` inside if the token made `Z` of another length than asked.
    fn check_len(&self) -> cryptoki::error::Result<Result<()>> {
        let attrs = self
            .session
            .get_attributes(self.handle, &[AttributeType::ValueLen])?;
        let len = attrs.into_iter().find_map(|a| match a {
            Attribute::ValueLen(n) => Some(u64::from(n)),
            _ => None,
        });
        Ok(match len {
            Some(objects::SHARED_SECRET_LEN) => Ok(()),
            other => Err(Error::backend_msg(
                crate::error::COMPONENT,
                format!(
                    "the token made an ECDH P-256 shared secret of {other:?} bytes, not {}",
                    objects::SHARED_SECRET_LEN
                ),
            )),
        })
    }

    /// Destroys the object, reporting a failure.
    fn destroy(mut self) -> cryptoki::error::Result<()> {
        self.live = false;
        self.session.destroy_object(self.handle)
    }
}

impl Drop for SharedSecret<'_> {
    fn drop(&mut self) {
        if self.live {
            // Best effort on an error path; the pool closes this session
            // after a failure, which destroys its session objects too.
            let _ = self.session.destroy_object(self.handle);
        }
    }
}

/// `K_1 ‖ K_2 ‖ …` truncated to `len`, `K_i = SHA-256(be32(i) ‖ Z ‖
/// fixed_info)`, each block digested on the token over the key object `z`.
/// `Err` inside for a digest of the wrong length.
fn kdf_on_token(
    s: &Session,
    z: ObjectHandle,
    fixed_info: &[u8],
    len: usize,
) -> cryptoki::error::Result<Result<SecretBytes>> {
    let mut out = SecretBytes::zeroed(len);
    for (i, chunk) in out.expose_mut().chunks_mut(BLOCK_LEN).enumerate() {
        // At most 255 blocks (`check_kdf_input`).
        let counter = (i as u32 + 1).to_be_bytes();
        s.digest_init(&Mechanism::Sha256)?;
        s.digest_update(&counter)?;
        s.digest_key(z)?;
        if !fixed_info.is_empty() {
            s.digest_update(fixed_info)?;
        }
        let block = Zeroizing::new(s.digest_final()?);
        if block.len() != BLOCK_LEN {
            return Ok(Err(Error::backend_msg(
                crate::error::COMPONENT,
                format!("the token returned a {}-byte SHA-256 digest", block.len()),
            )));
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(Ok(out))
}

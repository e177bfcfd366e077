//! The key operations behind [`crate::Pkcs11Backend`]'s `Backend` methods.

mod agree;
mod create;
mod inventory;
mod lookup;
mod usage;

use crate::error::{ck, rv_of};
use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::pubkey;
use crate::retry;
use cryptoki::error::RvError;
use cryptoki::object::{AttributeType, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use keystore_backend::{Algorithm, Error, PublicKey, Result};
use std::cell::Cell;

/// GCM tag length in bytes.
const TAG_LEN: usize = 16;

fn damaged(id: &KeyId, kind: Kind, why: &str) -> Error {
    Error::integrity(format!(
        "key {}: its {} object is damaged or was altered ({why}); not using it",
        id.short(),
        kind.name()
    ))
}

/// GCM parameters: the 12-byte IV, the AAD and a 128-bit tag.
fn gcm_params<'a>(
    iv: &'a mut [u8; 12],
    aad: &'a [u8],
) -> cryptoki::error::Result<cryptoki::mechanism::aead::GcmParams<'a>> {
    cryptoki::mechanism::aead::GcmParams::new(iv, aad, Ulong::from(128u64))
}

/// The key object an operation used, and how it was obtained.
#[derive(Debug, Clone, Copy)]
struct Primary {
    handle: ObjectHandle,
    /// Looked up or re-checked during this call (not trusted from the cache).
    checked_now: bool,
    /// No signature made with it has been verified since it was last
    /// checked ([`SignatureCheck::FirstUse`] verifies this one).
    unverified: bool,
}

/// What one attempt of an operation learnt about retrying it (see
/// [`Pkcs11Backend::retried`]).
#[derive(Debug, Default)]
pub(crate) struct Hints {
    /// The key's state may be passing (a key object missing while the rest
    /// of the key remains).
    settling: Cell<bool>,
    /// A cached handle turned out not to be the key's.
    stale: Cell<bool>,
}

/// `Ok(None)` for an error saying the object's handle is invalid (the
/// object vanished since it was found), else `r` as `Ok(Some(..))`/`Err`.
fn vanished_as_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if retry::is_handle_invalid(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `C_DestroyObject`; an object already gone is fine.
fn destroy_object(s: &Session, obj: ObjectHandle) -> Result<()> {
    match s.destroy_object(obj) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                rv_of(&e),
                Some(RvError::ObjectHandleInvalid) | Some(RvError::KeyHandleInvalid)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(ck("C_DestroyObject")(e)),
    }
}

/// Reads the public key of a public key object.
fn read_public(s: &Session, obj: ObjectHandle, alg: Algorithm) -> Result<PublicKey> {
    let missing =
        |what: &str| Error::integrity(format!("the token's public key object has no {what}"));
    let kind = Kind::of(alg)?;
    match kind {
        Kind::Ec | Kind::Ed => {
            let params = objects::bytes_attr(s, obj, AttributeType::EcParams)?
                .ok_or_else(|| missing("CKA_EC_PARAMS"))?;
            let point = objects::bytes_attr(s, obj, AttributeType::EcPoint)?
                .ok_or_else(|| missing("CKA_EC_POINT"))?;
            if kind == Kind::Ed {
                pubkey::ed25519_spki(&params, &point)
            } else {
                pubkey::ec_spki(alg, &params, &point)
            }
        }
        Kind::Rsa => {
            let n = objects::bytes_attr(s, obj, AttributeType::Modulus)?
                .ok_or_else(|| missing("CKA_MODULUS"))?;
            let e = objects::bytes_attr(s, obj, AttributeType::PublicExponent)?
                .ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
            pubkey::rsa_spki(alg, &n, &e)
        }
        Kind::Aes | Kind::Hmac => Err(Error::policy(format!("{alg} keys have no public key"))),
    }
}

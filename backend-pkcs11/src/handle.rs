//! Key handles: the `CKA_ID` every object of a key carries.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "KSP1"
//! 4       4     namespace tag: SHA-256("keystore-pkcs11 namespace\0" ‖ namespace)[..4]
//! 8       16    random key id (OS RNG)
//! ```
//! The magic and tag let `list`, `wipe` and reconciliation recognise this
//! store's objects among everything else on a shared token. A handle that is
//! not 24 bytes or does not carry this store's prefix is not ours: every
//! operation answers it with `NotFound`.

use keystore_backend::{Error, KeyHandle, Result};
use sha2::{Digest, Sha256};

/// `CKA_ID` prefix of every object this crate creates.
pub(crate) const MAGIC: [u8; 4] = *b"KSP1";
/// Total `CKA_ID` length.
pub(crate) const ID_LEN: usize = 24;
const PREFIX_LEN: usize = 8;

/// The 8-byte prefix shared by every key of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix([u8; PREFIX_LEN]);

impl Prefix {
    pub(crate) fn for_namespace(namespace: &str) -> Prefix {
        let mut h = Sha256::new();
        h.update(b"keystore-pkcs11 namespace\0");
        h.update(namespace.as_bytes());
        let tag = h.finalize();
        let mut p = [0u8; PREFIX_LEN];
        p[..4].copy_from_slice(&MAGIC);
        p[4..].copy_from_slice(&tag[..4]);
        Prefix(p)
    }

    /// A fresh random id in this namespace.
    pub(crate) fn new_id(&self) -> Result<KeyId> {
        let mut id = [0u8; ID_LEN];
        id[..PREFIX_LEN].copy_from_slice(&self.0);
        crate::random(&mut id[PREFIX_LEN..])?;
        Ok(KeyId(id))
    }

    /// Parses `bytes` as one of this namespace's ids.
    pub(crate) fn parse(&self, bytes: &[u8]) -> Option<KeyId> {
        let id: [u8; ID_LEN] = bytes.try_into().ok()?;
        (id[..PREFIX_LEN] == self.0).then_some(KeyId(id))
    }

    /// The id in `handle`, or `NotFound` if the handle is not one of ours.
    pub(crate) fn id_of(&self, handle: &KeyHandle) -> Result<KeyId> {
        self.parse(handle.as_bytes()).ok_or_else(|| {
            Error::not_found(format!(
                "{handle:?} is not a key handle of this PKCS#11 store"
            ))
        })
    }
}

/// One key's `CKA_ID`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct KeyId([u8; ID_LEN]);

impl KeyId {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn handle(&self) -> KeyHandle {
        KeyHandle::new(self.0.to_vec())
    }

    /// Short hex form for messages (the random part's first 8 bytes).
    pub(crate) fn short(&self) -> String {
        hex::encode(&self.0[PREFIX_LEN..PREFIX_LEN + 8])
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_backend::ErrorKind;

    #[test]
    fn ids_carry_their_namespace() {
        let a = Prefix::for_namespace("a");
        let b = Prefix::for_namespace("b");
        let id = a.new_id().expect("id");
        assert_eq!(id.as_bytes().len(), ID_LEN);
        assert_eq!(&id.as_bytes()[..4], b"KSP1");
        assert_eq!(a.parse(id.as_bytes()), Some(id));
        assert_eq!(b.parse(id.as_bytes()), None);
        assert_eq!(a.parse(&id.as_bytes()[..20]), None);
        assert_ne!(a.new_id().expect("id"), id);
        let e = a.id_of(&KeyHandle::new(vec![0xEE; 16])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}

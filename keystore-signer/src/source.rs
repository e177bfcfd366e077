//! What the adapter needs from a keystore: a key's facts, the active
//! version's public key, and signing with the active version.

use keystore_api::{Backend, KeyInfo, Keystore, PublicKey, Result, Signature, SignatureFormat};

/// A keystore the adapter signs through: an in-process
/// [`Keystore`](keystore_api::Keystore), or (feature `client`) keystored's
/// `keystore_client::Client`, where the key stays in the daemon.
/// Each method has the contract of the `Keystore` method of the same name.
pub trait SigningKeystore {
    /// The key's facts, every version included.
    fn info(&self, name: &str) -> Result<KeyInfo>;
    /// The active version's public key.
    fn public_key(&self, name: &str) -> Result<PublicKey>;
    /// Signs `message` with the active version.
    fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature>;
}

impl<B: Backend> SigningKeystore for Keystore<B> {
    fn info(&self, name: &str) -> Result<KeyInfo> {
        Keystore::info(self, name)
    }

    fn public_key(&self, name: &str) -> Result<PublicKey> {
        Keystore::public_key(self, name)
    }

    fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        Keystore::sign(self, name, message, format)
    }
}

#[cfg(feature = "client")]
impl SigningKeystore for keystore_client::Client {
    fn info(&self, name: &str) -> Result<KeyInfo> {
        keystore_client::Client::info(self, name)
    }

    fn public_key(&self, name: &str) -> Result<PublicKey> {
        keystore_client::Client::public_key(self, name)
    }

    fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        keystore_client::Client::sign(self, name, message, format)
    }
}

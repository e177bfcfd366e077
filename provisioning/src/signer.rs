//! The bridge between rcgen and the keystore: keystore-signer's adapter
//! (feature `rcgen`), an [`rcgen::SigningKey`] whose `sign` is
//! [`Keystore::sign`](keystore_api::Keystore::sign). The private key never
//! leaves the backend; rcgen only sees the public key and the signatures.

use keystore_api::{Error, Keystore, Result};

/// A keystore key, pinned to the version that is active when the signer is
/// made ([`KeystoreSigner::for_rcgen`](keystore_signer::KeystoreSigningKey::for_rcgen)),
/// presented to rcgen as a signing key.
///
/// Certificates carry the public key of one version; if the key is rotated
/// between `for_rcgen` and a signature, the signature would be made by
/// another version and the certificate would not verify. The signer
/// therefore refuses signatures whose version differs from its own
/// ([`map_rcgen_error`](keystore_signer::KeystoreSigningKey::map_rcgen_error)
/// gives the `KeyState` error behind rcgen's `RemoteKeyError`).
pub type KeystoreSigner<'a, B> = keystore_signer::KeystoreSigningKey<&'a Keystore<B>>;

/// The rcgen signature algorithm for a keystore algorithm (ECDSA P-256 and
/// RSA PKCS#1 v1.5; anything else is `Unsupported`).
pub(crate) use keystore_signer::rcgen_algorithm;

/// The BIT STRING contents of a SubjectPublicKeyInfo.
pub(crate) fn spki_bit_string(spki_der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| Error::invalid_input("a public key is not a valid SPKI"))?;
    if !rest.is_empty() {
        return Err(Error::invalid_input(
            "a public key has trailing bytes after its SPKI",
        ));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

//! The adapter: one keystore key, named and resolved once, that signs through
//! [`Keystore::sign`](keystore_api::Keystore::sign) following the active version or pinned to one.

use crate::verifying::VerifyingKey;
use crate::SigningKeystore;
use keystore_api::{
    Algorithm, Error, KeyClass, KeyInfo, PublicKey, Result, Signature, SignatureFormat, Usages,
    VersionInfo,
};
use std::ops::Deref;

/// Which key version signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every signature is made by the version active at that moment: after a
    /// rotation the adapter signs with the new version without being rebuilt.
    Follow,
    /// Every signature must be made by this version; once another version is
    /// active, signing is refused ([`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState)).
    Pinned(u32),
}

/// A keystore key behind the ecosystem's signing traits: RustCrypto
/// [`signature::Signer`] and [`signature::Keypair`], rustls'
/// [`SigningKey`](rustls::sign::SigningKey) and, with the `rcgen` feature,
/// rcgen's `SigningKey` and `PublicKeyData`.
///
/// `K` is how the adapter reaches the keystore: `&Keystore<B>` for use within
/// a borrow (rcgen, RustCrypto), `Arc<Keystore<B>>` where the key must be
/// `'static` (rustls). Any `K: Deref<Target = Keystore<B>>` works.
///
/// The private key never leaves the backend: every signature is one call of
/// [`Keystore::sign`](keystore_api::Keystore::sign), so usage policy, lifecycle state and the backend's own
/// checks apply to each.
///
/// # Versions
///
/// An adapter is built on one version of the key, its *reference version*
/// ([`version`](Self::version)): [`public_key`](Self::public_key),
/// [`verifying_key`](signature::Keypair::verifying_key) and rcgen's public key
/// describe it. Which version *signs* depends on the [`Mode`]:
///
/// - [`Mode::Follow`] ([`new`](Self::new)): the version active at each
///   signature. After a rotation, signatures come from the new version and
///   no longer verify under the reference version's key; [`sign`](Self::sign)
///   tells which version signed, and [`refreshed`](Self::refreshed) gives an
///   adapter on the new version. A certificate names one version's public
///   key, so a following adapter is never paired with a certificate as it
///   is: [`certified_key`](crate::certified_key) checks that the active
///   version's key is the certificate's and pins the key it hands to rustls
///   to that version.
/// - [`Mode::Pinned`] ([`pinned`](Self::pinned), [`pinned_to`](Self::pinned_to)):
///   only the reference version may sign. [`Keystore::sign`](keystore_api::Keystore::sign) always signs
///   with the active version, so a pinned adapter checks the version of
///   each signature and refuses ([`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState), the
///   signature discarded) when the active version is another one: after a
///   rotation, a suspension or a revocation of its version it stops signing
///   instead of signing with a key its certificate does not name.
///
/// rcgen's impls refuse any signature not made by the reference version in
/// either mode, since the structure rcgen signs carries that version's key.
pub struct KeystoreSigningKey<K> {
    pub(crate) ks: K,
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) version: u32,
    pub(crate) algorithm: Algorithm,
    pub(crate) public_key: PublicKey,
    pub(crate) verifying_key: VerifyingKey,
    /// The BIT STRING contents of the SPKI (the raw public key).
    pub(crate) raw_public_key: Vec<u8>,
    /// The keystore error behind the last refused rcgen signature: rcgen
    /// can only report an opaque `RemoteKeyError`.
    #[cfg(feature = "rcgen")]
    pub(crate) rcgen_error: std::sync::Mutex<Option<Error>>,
}

impl<K: Clone> Clone for KeystoreSigningKey<K> {
    fn clone(&self) -> Self {
        KeystoreSigningKey {
            ks: self.ks.clone(),
            name: self.name.clone(),
            mode: self.mode,
            version: self.version,
            algorithm: self.algorithm,
            public_key: self.public_key.clone(),
            verifying_key: self.verifying_key.clone(),
            raw_public_key: self.raw_public_key.clone(),
            #[cfg(feature = "rcgen")]
            rcgen_error: std::sync::Mutex::new(None),
        }
    }
}

impl<K> std::fmt::Debug for KeystoreSigningKey<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoreSigningKey")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.public_key.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Whether the adapter takes keys of `alg`: ECDSA P-256 and P-384, Ed25519
/// and the RSA signature algorithms. Symmetric and ECDH keys sign nothing;
/// ML-DSA-65 keys sign, but the adapter refuses them (see
/// [`check_signing_algorithm`]).
pub(crate) fn adapts(alg: Algorithm) -> bool {
    alg.class() == KeyClass::Asymmetric && alg.signs() && alg != Algorithm::MlDsa65
}

/// The error for a key that cannot be an adapter's: `Unsupported` for
/// symmetric and agreement-only (ECDH) keys, which sign nothing, and for
/// ML-DSA-65 keys, which the adapter does not put behind rustls, rcgen or
/// RustCrypto's ECDSA/RSA/Ed25519 types (sign them with `Keystore::sign`).
pub(crate) fn check_signing_algorithm(name: &str, alg: Algorithm) -> Result<()> {
    if adapts(alg) {
        return Ok(());
    }
    let why = if alg == Algorithm::MlDsa65 {
        format!(
            "key '{name}' is an {alg} key: keystore-signer does not adapt ML-DSA keys to \
             rustls, rcgen or RustCrypto signers; sign with Keystore::sign"
        )
    } else {
        format!(
            "key '{name}' is a {alg} key and cannot sign; use an ecdsa-p256-sha256, \
             ecdsa-p384-sha384, ed25519 or rsa-* key"
        )
    };
    Err(Error::unsupported(why).with_key(name))
}

impl<K, Ks> KeystoreSigningKey<K>
where
    K: Deref<Target = Ks>,
    Ks: SigningKeystore + ?Sized,
{
    /// An adapter on `name` that follows the active version ([`Mode::Follow`]);
    /// its reference version is the one active now.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported) for a key that does not sign
    /// (symmetric, `ecdh-p256`) or an `ml-dsa-65` key;
    /// [`ErrorKind::Policy`](keystore_api::ErrorKind::Policy) when the key may not sign;
    /// [`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState) when it has no active version;
    /// otherwise the errors of [`Keystore::info`](keystore_api::Keystore::info) (unknown or destroyed key,
    /// malformed name, metadata without a public key, a failing database).
    pub fn new(ks: K, name: &str) -> Result<Self> {
        let info = ks.info(name)?;
        let active = active_version(&info)?.clone();
        Self::from_info(ks, &info, &active, Mode::Follow)
    }

    /// An adapter pinned to the version of `name` active now ([`Mode::Pinned`]).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn pinned(ks: K, name: &str) -> Result<Self> {
        let info = ks.info(name)?;
        let active = active_version(&info)?.clone();
        let mode = Mode::Pinned(active.version);
        Self::from_info(ks, &info, &active, mode)
    }

    /// An adapter pinned to `version` of `name`. The version need not be
    /// active now (a suspended version may be resumed), but it signs only
    /// while it is the active one.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](keystore_api::ErrorKind::NotFound) when the key has no such version;
    /// [`ErrorKind::Integrity`](keystore_api::ErrorKind::Integrity) when the metadata holds no public key for it;
    /// otherwise as [`new`](Self::new) (except that no active version is needed).
    pub fn pinned_to(ks: K, name: &str, version: u32) -> Result<Self> {
        let info = ks.info(name)?;
        let v = info
            .version(version)
            .ok_or_else(|| {
                Error::not_found(format!("key '{name}' has no version {version}"))
                    .with_key(name)
                    .with_version(version)
            })?
            .clone();
        Self::from_info(ks, &info, &v, Mode::Pinned(version))
    }

    /// The adapter for `v` of the key `info` describes.
    pub(crate) fn from_info(ks: K, info: &KeyInfo, v: &VersionInfo, mode: Mode) -> Result<Self> {
        let name = info.name.as_str();
        check_signing_algorithm(name, info.algorithm)?;
        if !info.usages.contains(Usages::SIGN) {
            return Err(Error::policy(format!(
                "key '{name}' does not permit signing (usages: {})",
                info.usages.names().join(",")
            ))
            .with_key(name));
        }
        let public_key = v.public_key.clone().ok_or_else(|| {
            Error::integrity(format!(
                "metadata holds no public key for '{name}' version {}",
                v.version
            ))
            .with_key(name)
            .with_version(v.version)
        })?;
        let verifying_key = VerifyingKey::from_public_key(&public_key)?;
        let raw_public_key = spki_bit_string(public_key.spki_der())?;
        Ok(KeystoreSigningKey {
            ks,
            name: name.to_string(),
            mode,
            version: v.version,
            algorithm: info.algorithm,
            public_key,
            verifying_key,
            raw_public_key,
            #[cfg(feature = "rcgen")]
            rcgen_error: std::sync::Mutex::new(None),
        })
    }

    /// The keystore the adapter signs through.
    pub fn keystore(&self) -> &Ks {
        &self.ks
    }

    /// The public key of the version active now (in [`Mode::Follow`], the
    /// key the next signature will be made with, barring a rotation in
    /// between).
    ///
    /// # Errors
    /// The errors of [`Keystore::public_key`](keystore_api::Keystore::public_key) (no active version, unknown or
    /// destroyed key, metadata or backend failure).
    pub fn active_public_key(&self) -> Result<PublicKey> {
        self.ks.public_key(&self.name)
    }

    /// Signs `message` as the key's algorithm does (ECDSA P-256 and RSA hash
    /// it with SHA-256, ECDSA P-384 with SHA-384; Ed25519 signs it whole), in
    /// `format` for ECDSA keys, and returns the signature with the version
    /// that made it.
    /// In [`Mode::Pinned`] a signature by any other version is refused.
    ///
    /// # Errors
    /// [`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState) when a pinned adapter's version is not the active
    /// one (rotated, suspended, revoked), or the key has no active version;
    /// otherwise the errors of [`Keystore::sign`](keystore_api::Keystore::sign) (policy, message too long,
    /// unknown or destroyed key, backend or integrity failures).
    pub fn sign(&self, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        let sig = self.ks.sign(&self.name, message, format)?;
        if let Mode::Pinned(pin) = self.mode {
            if sig.version != pin {
                return Err(self.not_pinned_version(sig.version));
            }
        }
        Ok(sig)
    }

    /// Signs with the reference version only, in either mode (what a
    /// structure that carries the reference version's public key needs).
    #[cfg(feature = "rcgen")]
    pub(crate) fn sign_as_reference(
        &self,
        message: &[u8],
        format: SignatureFormat,
    ) -> Result<Vec<u8>> {
        let sig = self.ks.sign(&self.name, message, format)?;
        if sig.version != self.version {
            return Err(Error::key_state(format!(
                "key '{}' was rotated while signing (version {} signed, the certificate names version {})",
                self.name, sig.version, self.version
            ))
            .with_key(&self.name)
            .with_version(sig.version));
        }
        Ok(sig.bytes)
    }

    fn not_pinned_version(&self, signed: u32) -> Error {
        Error::key_state(format!(
            "key '{}' is pinned to version {}, but version {signed} is active (rotated, suspended \
             or revoked); the signature was discarded: pair version {signed} with the certificate \
             that names its key",
            self.name, self.version
        ))
        .with_key(&self.name)
        .with_version(signed)
    }

    /// An adapter in the same mode on the version active now: a following
    /// adapter's reference version moves to it, a pinned adapter is pinned
    /// to it.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn refreshed(&self) -> Result<Self>
    where
        K: Clone,
    {
        let info = self.ks.info(&self.name)?;
        let active = active_version(&info)?.clone();
        let mode = match self.mode {
            Mode::Follow => Mode::Follow,
            Mode::Pinned(_) => Mode::Pinned(active.version),
        };
        Self::from_info(self.ks.clone(), &info, &active, mode)
    }

    /// A copy pinned to the reference version.
    pub fn to_pinned(&self) -> Self
    where
        K: Clone,
    {
        let mut pinned = self.clone();
        pinned.mode = Mode::Pinned(self.version);
        pinned
    }
}

impl<K> KeystoreSigningKey<K> {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Following the active version, or pinned to one.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The reference version: the pinned version, or for a following
    /// adapter the version active when it was built or refreshed.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key of the reference version.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The DER SubjectPublicKeyInfo of the reference version.
    pub fn spki_der(&self) -> &[u8] {
        self.public_key.spki_der()
    }

    /// `sha256:` fingerprint of the reference version's SPKI (the keystore's
    /// fingerprint format).
    pub fn fingerprint(&self) -> String {
        self.public_key.fingerprint()
    }

    /// The keystore error for "this adapter's key cannot make signatures of
    /// type `what`".
    pub(crate) fn wrong_algorithm(&self, what: &str) -> Error {
        Error::unsupported(format!(
            "key '{}' is a {} key and cannot make {what} signatures",
            self.name, self.algorithm
        ))
        .with_key(&self.name)
    }
}

/// The active version, or the error for a key without one.
pub(crate) fn active_version(info: &KeyInfo) -> Result<&VersionInfo> {
    info.active().ok_or_else(|| {
        Error::key_state(format!(
            "key '{}' has no active version (suspended, revoked or rotated away)",
            info.name
        ))
        .with_key(&info.name)
    })
}

/// The BIT STRING contents of a SubjectPublicKeyInfo.
pub(crate) fn spki_bit_string(spki_der: &[u8]) -> Result<Vec<u8>> {
    use spki::der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| Error::invalid_input("a public key is not a valid SPKI"))?;
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::invalid_input("a public key's BIT STRING has unused bits"))
}

//! The contract every kind of key device implements, split by operation
//! family: [`KeyManagement`], [`Signing`], [`Mac`], [`Aead`] and the optional
//! [`KeyWrap`]. [`Backend`] is their union, implemented for every type that
//! implements all five, so `Box<dyn Backend>` and `Arc<B>` are backends too.
//!
//! The keystore resolves a name and version once into a [`BackendKey`] (the
//! handle and its algorithm) and hands that typed key to the family's
//! method; no method takes the algorithm again.

use crate::agreement::PeerPublicKey;
use crate::algorithm::{Algorithm, Capabilities};
use crate::attestation::{AttestationKeyBlob, KeyAttestation, KeyCertification};
use crate::counter::{CounterRef, MonotonicCounter};
use crate::error::{Error, Result};
use crate::public_key::PublicKey;
use crate::secret::SecretBytes;
use zeroize::Zeroizing;

/// An opaque, non-secret reference to a key inside a backend that the backend
/// can resolve again after a restart: a soft record id, a PKCS#11 `CKA_ID`,
/// a TPM key blob. The keystore stores it in its metadata and never
/// interprets it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHandle(Vec<u8>);

impl KeyHandle {
    /// Wraps handle bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        KeyHandle(bytes)
    }

    /// The handle bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A handle is a reference, not key material; short ones are shown in
        // full, long ones (TPM blobs) abbreviated.
        if self.0.len() <= 32 {
            write!(f, "KeyHandle({})", hex::encode(&self.0))
        } else {
            write!(
                f,
                "KeyHandle({}…, {} bytes)",
                hex::encode(&self.0[..16]),
                self.0.len()
            )
        }
    }
}

/// A key inside a backend, resolved once from the keystore's metadata: its
/// handle and the algorithm it was created for. Every use method takes one.
/// Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    handle: KeyHandle,
    algorithm: Algorithm,
}

impl BackendKey {
    /// The key `handle` refers to, of `algorithm`.
    pub fn new(handle: KeyHandle, algorithm: Algorithm) -> Self {
        BackendKey { handle, algorithm }
    }

    /// The backend's handle.
    pub fn handle(&self) -> &KeyHandle {
        &self.handle
    }

    /// The algorithm the key was created for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// What the keystore asks a backend to create: the algorithm, and the key's
/// name. A device whose objects carry a human-readable label (PKCS#11
/// `CKA_LABEL`) may show the name there; the name never identifies the key
/// (the returned [`KeyHandle`] does), and other backends ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewKey<'a> {
    /// The algorithm of the new key.
    pub algorithm: Algorithm,
    /// The keystore name of the key, for labels only.
    pub name: &'a str,
}

impl<'a> NewKey<'a> {
    /// A new key of `algorithm` named `name`.
    pub fn new(algorithm: Algorithm, name: &'a str) -> Self {
        NewKey { algorithm, name }
    }
}

/// What [`KeyManagement::generate`] returns.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The handle to store in metadata.
    pub handle: KeyHandle,
    /// The public key, for asymmetric algorithms.
    pub public_key: Option<PublicKey>,
}

/// An AEAD ciphertext as a backend returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadSealed {
    /// The 96-bit nonce the backend chose at random.
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Key management: creating, listing and destroying a device's keys.
///
/// Implementations hold key material and never return private or secret key
/// bytes through any method of any family, and their `Debug` output redacts
/// anything secret. Each does its own locking. Unless stated otherwise, a
/// method given a key the backend does not hold returns
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound); an operation the
/// backend cannot do returns
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported); and a failed
/// call leaves every other key intact.
pub trait KeyManagement: Send + Sync + std::fmt::Debug {
    /// A short stable name (`soft`, `pkcs11`, `tpm`) used in errors, metadata
    /// and the conformance matrix.
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Generates a new key inside the backend, with its RNG.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the
    /// device cannot generate the algorithm;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device, its
    /// RNG or its storage fails. Nothing is left behind on failure.
    fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey>;

    /// Imports secret material for a symmetric algorithm. The backend stores it
    /// non-extractably; `secret` is zeroized by the caller's drop.
    ///
    /// # Errors
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for an algorithm whose
    /// keys cannot be imported (private keys are generated inside the backend);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when
    /// `secret` has the wrong length;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the
    /// device cannot hold such a key;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn import(&self, new: &NewKey<'_>, secret: &SecretBytes) -> Result<KeyHandle>;

    /// Destroys the key material.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when the handle is
    /// already gone (the keystore, finishing an interrupted destruction,
    /// treats it as done);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device
    /// fails, in which case the material may still be there.
    fn destroy(&self, handle: &KeyHandle) -> Result<()>;

    /// Every key handle this backend holds for this store.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) from a
    /// backend that cannot enumerate its objects (reconciliation at open then
    /// skips the material check);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device
    /// fails. A failed listing never means "no keys".
    fn list(&self) -> Result<Vec<KeyHandle>>;

    /// Destroys every key this backend holds for this store.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device or
    /// the file system fails part way; keys already destroyed stay destroyed
    /// and a later call destroys the rest.
    fn wipe(&self) -> Result<()>;

    /// How [`KeyManagement::destroy`] and [`KeyManagement::wipe`] erase key
    /// material on this device, in one sentence for an erasure certificate
    /// (e.g. files overwritten and unlinked, token objects destroyed).
    fn erasure_method(&self) -> String {
        format!("objects destroyed through the {} backend", self.name())
    }

    /// Paths of this backend's store (directories, records, header, lock)
    /// that were accessible to other local users when it was opened, each
    /// tightened or reported as not tightenable (see [`crate::fsperm`]).
    /// Backends that keep no files of their own (PKCS#11) report none.
    fn permission_report(&self) -> crate::fsperm::PermissionReport {
        crate::fsperm::PermissionReport::default()
    }
}

/// Signatures with asymmetric keys, and their public keys.
pub trait Signing {
    /// The public key of an asymmetric key.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for a symmetric
    /// algorithm (no public key);
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the stored
    /// object is damaged or is not a key of the key's algorithm;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn public_key(&self, key: &BackendKey) -> Result<PublicKey>;

    /// Signs `message` (the backend hashes it as its device requires). Returns
    /// ECDSA signatures as fixed `r‖s`, RSA signatures as their bytes.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when the algorithm does
    /// not sign;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the
    /// device cannot;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the key
    /// object is damaged or a host-side check of the signature fails;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn sign(&self, key: &BackendKey, message: &[u8]) -> Result<Vec<u8>>;
}

/// HMAC-SHA256 and the extract step of HKDF derivation.
pub trait Mac {
    /// HMAC-SHA256 of `data` under the key. Also the first (extract) step of
    /// HKDF derivation, so the result is treated as secret.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the object
    /// is damaged or is not an HMAC key;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn hmac_sha256(&self, key: &BackendKey, data: &[u8]) -> Result<Zeroizing<[u8; 32]>>;

    /// The HKDF-SHA256 extract step of `keystore_api::Keystore::derive_hkdf_sha256`:
    /// `PRK = HMAC-SHA256(K, salt)`, the same bytes as [`Mac::hmac_sha256`].
    /// Unlike a MAC tag, the PRK is secret: a backend whose transport could
    /// expose results protects it there (the TPM backend encrypts it on the
    /// bus). The default calls `hmac_sha256`.
    ///
    /// # Errors
    /// As [`Mac::hmac_sha256`].
    fn hkdf_extract(&self, key: &BackendKey, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.hmac_sha256(key, salt)
    }
}

/// AES-256-GCM authenticated encryption.
pub trait Aead {
    /// Encryption under a fresh random 96-bit nonce. The keystore always
    /// passes a non-empty `aad` (it starts with the envelope header); a
    /// backend may answer an empty one with
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the object
    /// is damaged or is not an AES-256-GCM key;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an
    /// input the device refuses (an empty `aad` on some tokens);
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the
    /// device has no AES-GCM (TPM);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn encrypt(&self, key: &BackendKey, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed>;

    /// Decryption. A wrong tag, nonce, AAD or ciphertext is
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity), and no
    /// plaintext is released.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a wrong tag,
    /// nonce, AAD or ciphertext (or one too short to hold a tag); otherwise
    /// as [`Aead::encrypt`].
    fn decrypt(
        &self,
        key: &BackendKey,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes>;
}

/// Optional export and import of symmetric keys wrapped under an AES key,
/// for backups. Both methods default to
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
pub trait KeyWrap: KeyManagement {
    /// Exports the symmetric `key` wrapped (AEAD) under the AES key
    /// `wrapping_key`, binding the key's algorithm and `context` as
    /// associated data. Only backup-eligible keys reach this call.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) from
    /// backends that cannot wrap (the default);
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) for an asymmetric key
    /// (never exported);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when an object is
    /// damaged or is not of the expected algorithm;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn wrap(&self, wrapping_key: &BackendKey, key: &BackendKey, context: &[u8]) -> Result<Vec<u8>> {
        let _ = (wrapping_key, context);
        Err(Error::unsupported(format!(
            "the {} backend cannot export wrapped {} keys",
            self.name(),
            key.algorithm()
        )))
    }

    /// Imports a key wrapped by [`KeyWrap::wrap`] as `new`; a wrong KEK,
    /// algorithm or context is
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a wrong KEK,
    /// algorithm or context, or truncated or damaged `wrapped` bytes;
    /// otherwise as [`KeyWrap::wrap`].
    fn unwrap(
        &self,
        wrapping_key: &BackendKey,
        new: &NewKey<'_>,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<KeyHandle> {
        let _ = (wrapping_key, wrapped, context);
        Err(Error::unsupported(format!(
            "the {} backend cannot import wrapped {} keys",
            self.name(),
            new.algorithm
        )))
    }
}

/// Optional key agreement: ECDH with an `ecdh-p256` key, then the one-step
/// KDF of [`crate::agreement`]. The default is
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
pub trait KeyAgreement: KeyManagement {
    /// ECDH between `key` and `peer` (already validated), then
    /// `one_step_kdf_sha256(Z, fixed_info, len)`. The shared secret `Z`
    /// stays inside the backend, or in zeroizing host memory where the
    /// device returns it over a protected channel; only the KDF output is
    /// returned. `fixed_info` and `len` are already checked by
    /// [`crate::agreement::check_kdf_input`].
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) from a
    /// backend without ECDH (the default);
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a key the
    /// backend does not hold;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the object
    /// is damaged or is not an ECDH key;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a peer
    /// key the device refuses;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the device fails.
    fn agree_sha256_kdf(
        &self,
        key: &BackendKey,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let _ = (peer, fixed_info, len);
        Err(Error::unsupported(format!(
            "the {} backend does no key agreement with {} keys",
            self.name(),
            key.algorithm()
        )))
    }
}

/// A key device: every operation family. Implemented for every type that
/// implements the eight family traits; never implement it directly.
pub trait Backend:
    KeyManagement + Signing + Mac + Aead + KeyWrap + KeyAgreement + KeyAttestation + MonotonicCounter
{
}

impl<
        T: KeyManagement
            + Signing
            + Mac
            + Aead
            + KeyWrap
            + KeyAgreement
            + KeyAttestation
            + MonotonicCounter
            + ?Sized,
    > Backend for T
{
}

/// `Box<T>` and `Arc<T>` forward every family (the defaulted methods
/// included, so a backend's own `wrap`/`unwrap` are never shadowed by the
/// `Unsupported` defaults). This lets an application pick its backend at run
/// time (`Keystore<Box<dyn Backend>>`) or share one backend between
/// keystores.
macro_rules! forward_families {
    ($($ptr:ident)::+) => {
        impl<T: KeyManagement + ?Sized> KeyManagement for $($ptr)::+<T> {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn generate(&self, new: &NewKey<'_>) -> Result<GeneratedKey> {
                (**self).generate(new)
            }
            fn import(&self, new: &NewKey<'_>, secret: &SecretBytes) -> Result<KeyHandle> {
                (**self).import(new, secret)
            }
            fn destroy(&self, handle: &KeyHandle) -> Result<()> {
                (**self).destroy(handle)
            }
            fn list(&self) -> Result<Vec<KeyHandle>> {
                (**self).list()
            }
            fn wipe(&self) -> Result<()> {
                (**self).wipe()
            }
            fn erasure_method(&self) -> String {
                (**self).erasure_method()
            }
            fn permission_report(&self) -> crate::fsperm::PermissionReport {
                (**self).permission_report()
            }
        }

        impl<T: Signing + ?Sized> Signing for $($ptr)::+<T> {
            fn public_key(&self, key: &BackendKey) -> Result<PublicKey> {
                (**self).public_key(key)
            }
            fn sign(&self, key: &BackendKey, message: &[u8]) -> Result<Vec<u8>> {
                (**self).sign(key, message)
            }
        }

        impl<T: Mac + ?Sized> Mac for $($ptr)::+<T> {
            fn hmac_sha256(&self, key: &BackendKey, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
                (**self).hmac_sha256(key, data)
            }
            fn hkdf_extract(&self, key: &BackendKey, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
                (**self).hkdf_extract(key, salt)
            }
        }

        impl<T: Aead + ?Sized> Aead for $($ptr)::+<T> {
            fn encrypt(&self, key: &BackendKey, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
                (**self).encrypt(key, aad, plaintext)
            }
            fn decrypt(
                &self,
                key: &BackendKey,
                aad: &[u8],
                nonce: &[u8; 12],
                ciphertext: &[u8],
            ) -> Result<SecretBytes> {
                (**self).decrypt(key, aad, nonce, ciphertext)
            }
        }

        impl<T: KeyWrap + ?Sized> KeyWrap for $($ptr)::+<T> {
            fn wrap(
                &self,
                wrapping_key: &BackendKey,
                key: &BackendKey,
                context: &[u8],
            ) -> Result<Vec<u8>> {
                (**self).wrap(wrapping_key, key, context)
            }
            fn unwrap(
                &self,
                wrapping_key: &BackendKey,
                new: &NewKey<'_>,
                wrapped: &[u8],
                context: &[u8],
            ) -> Result<KeyHandle> {
                (**self).unwrap(wrapping_key, new, wrapped, context)
            }
        }

        impl<T: KeyAgreement + ?Sized> KeyAgreement for $($ptr)::+<T> {
            fn agree_sha256_kdf(
                &self,
                key: &BackendKey,
                peer: &PeerPublicKey,
                fixed_info: &[u8],
                len: usize,
            ) -> Result<SecretBytes> {
                (**self).agree_sha256_kdf(key, peer, fixed_info, len)
            }
        }

        impl<T: KeyAttestation + ?Sized> KeyAttestation for $($ptr)::+<T> {
            fn endorsement_certificate(&self) -> Result<Vec<u8>> {
                (**self).endorsement_certificate()
            }

            fn endorsement_public(&self) -> Result<Vec<u8>> {
                (**self).endorsement_public()
            }

            fn create_attestation_key(&self) -> Result<AttestationKeyBlob> {
                (**self).create_attestation_key()
            }

            fn activate_credential(
                &self,
                ak: &AttestationKeyBlob,
                blob: &[u8],
                encrypted_secret: &[u8],
            ) -> Result<Vec<u8>> {
                (**self).activate_credential(ak, blob, encrypted_secret)
            }

            fn certify(
                &self,
                ak: &AttestationKeyBlob,
                key: &BackendKey,
                nonce: &[u8],
            ) -> Result<KeyCertification> {
                (**self).certify(ak, key, nonce)
            }
        }

        impl<T: MonotonicCounter + ?Sized> MonotonicCounter for $($ptr)::+<T> {
            fn counter_create(&self) -> Result<(CounterRef, u64)> {
                (**self).counter_create()
            }

            fn counter_read(&self, counter: &[u8]) -> Result<u64> {
                (**self).counter_read(counter)
            }

            fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
                (**self).counter_increment(counter)
            }

            fn counter_destroy(&self, counter: &[u8]) -> Result<()> {
                (**self).counter_destroy(counter)
            }

            fn counter_describe(&self, counter: &[u8]) -> String {
                (**self).counter_describe(counter)
            }
        }
    };
}

forward_families!(Box);
forward_families!(std::sync::Arc);

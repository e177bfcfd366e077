//! # keystore-signer
//!
//! Keystore keys behind the Rust ecosystem's signing traits, for any
//! backend (soft, PKCS#11, TPM): one adapter type, [`KeystoreSigningKey`],
//! over [`Keystore::sign`](keystore_api::Keystore::sign),
//! [`public_key`](keystore_api::Keystore::public_key) and
//! [`info`](keystore_api::Keystore::info), that implements
//!
//! - RustCrypto [`signature::Signer`] for ECDSA P-256
//!   ([`p256::ecdsa::Signature`], fixed `r‖s`, and [`p256::ecdsa::DerSignature`]),
//!   ECDSA P-384 ([`p384::ecdsa::Signature`], [`p384::ecdsa::DerSignature`]),
//!   Ed25519 ([`ed25519_dalek::Signature`]), RSA-PSS ([`rsa::pss::Signature`])
//!   and RSA PKCS#1 v1.5 ([`rsa::pkcs1v15::Signature`]), each for keys of
//!   its algorithm, and [`signature::Keypair`], whose [`VerifyingKey`] is
//!   the `p256`/`p384`/`ed25519-dalek`/`rsa` crates' verifying key;
//! - rustls 0.23's [`SigningKey`](rustls::sign::SigningKey) (aws-lc-rs
//!   provider): `ecdsa_secp256r1_sha256`, `ecdsa_secp384r1_sha384`,
//!   `ed25519`, `rsa_pss_rsae_sha256`, and `rsa_pkcs1_sha256` in TLS 1.2
//!   (one per key: [`tls_signature_scheme`]), with
//!   [`certified_key`] pairing a certificate chain ([`certificate_chain`],
//!   PEM or DER) with the key version its leaf names, for mTLS clients and
//!   servers;
//! - with the `rcgen` feature, rcgen's `SigningKey` and `PublicKeyData`
//!   (`KeystoreSigningKey::for_rcgen`, `rcgen_algorithm`), the bridge
//!   the device PKI (`provisioning`) builds certificates, CSRs and CRLs on.
//!
//! The private key never leaves its backend; every signature is one
//! [`Keystore::sign`](keystore_api::Keystore::sign), under the key's usage
//! policy and lifecycle state. Keys that do not sign (symmetric,
//! `ecdh-p256`) and `ml-dsa-65` keys are refused when an adapter is built
//! ([`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported)); sign
//! with ML-DSA through `Keystore::sign` itself.
//!
//! # Following the active version, or pinned to one
//!
//! [`KeystoreSigningKey::new`] follows the key's active version
//! ([`Mode::Follow`]): every signature is made by whichever version is
//! active at that moment, so the adapter survives rotations. A certificate,
//! though, names one version's public key: after a rotation a following
//! adapter would sign with a key the certificate does not name, and the
//! peer would reject the handshake. So [`certified_key`] checks that the
//! leaf certificate names the active version's key and pins the key it
//! gives rustls to that version; build a new `CertifiedKey` when the
//! renewed certificate is installed.
//!
//! [`KeystoreSigningKey::pinned`] and [`KeystoreSigningKey::pinned_to`] pin
//! the adapter to one version ([`Mode::Pinned`]). `Keystore::sign` always
//! signs with the active version (it has no per-version signing), so a
//! pinned adapter checks the version each signature carries and refuses it
//! ([`ErrorKind::KeyState`](keystore_api::ErrorKind::KeyState), the
//! signature discarded) once another version is active.
//!
//! `K`, the adapter's way to the keystore, is `&Keystore<B>` or
//! `Arc<Keystore<B>>`; rustls needs `'static` keys, so use an `Arc` there.
//! Any [`SigningKeystore`] works behind `K`: with feature `client`,
//! keystored's `keystore_client::Client` (`Arc<Client>`), so a gateway
//! that does not own the store gets the same TLS and X.509 signing with the
//! key kept in the daemon.
//!
//! # Errors
//!
//! Every failure is a [`keystore_api::Error`] (its
//! [`ErrorKind`](keystore_api::ErrorKind) to branch on, no secrets in
//! messages). Through the traits it arrives as their error type with the
//! keystore error kept: `signature::Error` with it as
//! [`source`](std::error::Error::source), `rustls::Error::Other`, and for
//! rcgen an opaque `RemoteKeyError` that
//! `KeystoreSigningKey::map_rcgen_error` (feature `rcgen`) turns back into it.
//!
//! # Example
//!
//! A gateway identity on a soft store, signing through RustCrypto's traits
//! and offered to rustls:
//!
//! ```
//! use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
//! use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role};
//! use keystore_signer::{KeystoreSigningKey, Mode};
//! use rustls::sign::SigningKey as _;
//! use rustls::SignatureScheme;
//! use signature::{Keypair, Signer, Verifier};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! create_key_file(&dir.join("kek.key"))?;
//! let unlock = Unlock::KeyFile(dir.join("kek.key"));
//! let soft = SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile)?;
//! let ks = Arc::new(Keystore::open(soft, &dir.join("metadata.sqlite"))?);
//! let officer = Actor::new("officer-1", Role::SecurityOfficer)?;
//! ks.create(&officer, "gateway-identity", KeySpec::new(Algorithm::EcdsaP256Sha256))?;
//!
//! // RustCrypto: sign, and verify with the p256 crate's verifying key.
//! let key = KeystoreSigningKey::new(Arc::clone(&ks), "gateway-identity")?;
//! assert_eq!(key.mode(), Mode::Follow);
//! let sig: p256::ecdsa::DerSignature = key.try_sign(b"telemetry frame 7")?;
//! let vk = key.verifying_key();
//! vk.as_ecdsa_p256().expect("a P-256 key").verify(b"telemetry frame 7", &sig)?;
//!
//! // rustls: the key offers only the scheme it can make.
//! let offered = [SignatureScheme::RSA_PSS_SHA256, SignatureScheme::ECDSA_NISTP256_SHA256];
//! let signer = key.choose_scheme(&offered).expect("ECDSA is offered");
//! assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
//! let tls_sig = signer.sign(b"handshake transcript")?;
//! assert!(key.public_key().verify(b"handshake transcript", &tls_sig).is_ok());
//!
//! // A pinned adapter stops signing once its version is rotated away;
//! // the following one signs with the new version.
//! let pinned = KeystoreSigningKey::pinned(Arc::clone(&ks), "gateway-identity")?;
//! ks.rotate(&officer, "gateway-identity", time::Duration::days(1))?;
//! assert!(pinned.sign(b"x", Default::default()).is_err());
//! assert_eq!(key.sign(b"x", Default::default())?.version, 2);
//! # Ok(())
//! # }
//! ```
//!
//! A TLS client with this identity: `certified_key(certificate_chain(pem)?,
//! &key)?` into `rustls::sign::SingleCertAndKey`, given to
//! `ClientConfig::builder().with_root_certificates(roots).with_client_cert_resolver(…)`;
//! `examples/mtls_client.rs` does it for a soft, PKCS#11 or TPM store.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod key;
#[cfg(feature = "rcgen")]
mod rcgen_key;
mod rustcrypto;
mod source;
mod tls;
mod verifying;

pub use key::{KeystoreSigningKey, Mode};
#[cfg(feature = "rcgen")]
pub use rcgen_key::rcgen_algorithm;
pub use source::SigningKeystore;
pub use tls::{certificate_chain, certified_key, tls_signature_scheme};
pub use verifying::VerifyingKey;

/// The rustls this crate implements `SigningKey` for (0.23, aws-lc-rs), so
/// that users name the same version.
pub use rustls;
/// The RustCrypto `signature` crate whose traits the adapter implements.
pub use signature;

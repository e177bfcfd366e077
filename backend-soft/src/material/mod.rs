//! Key material inside the soft store, behind a crypto-provider seam:
//! generation, parsing of sealed-record plaintext, and use. Both providers
//! read and write the same record plaintext (PKCS#8 for ECDSA, raw bytes for
//! secrets), so one store opens under either.

#[cfg(feature = "aws-lc")]
mod aws;
#[cfg(feature = "rustcrypto")]
mod rustcrypto;

use keystore_backend::agreement::PeerPublicKey;
use keystore_backend::{AeadSealed, Algorithm, Error, PublicKey, Result, SecretBytes};
use zeroize::Zeroizing;

/// Which implementation runs the soft store's key operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoProvider {
    /// aws-lc-rs: the fast, constant-time default; FIPS-capable through
    /// aws-lc-rs's `fips` feature. Feature `aws-lc`.
    AwsLc,
    /// RustCrypto: pure Rust for targets without a C toolchain; no RSA.
    /// Feature `rustcrypto`.
    RustCrypto,
}

impl CryptoProvider {
    /// aws-lc-rs when compiled in, else RustCrypto.
    pub fn default_for_build() -> CryptoProvider {
        if cfg!(feature = "aws-lc") {
            CryptoProvider::AwsLc
        } else {
            CryptoProvider::RustCrypto
        }
    }

    /// Fails with `Unsupported` if this build lacks the provider.
    pub(crate) fn check_available(self) -> Result<()> {
        let available = match self {
            CryptoProvider::AwsLc => cfg!(feature = "aws-lc"),
            CryptoProvider::RustCrypto => cfg!(feature = "rustcrypto"),
        };
        if available {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "the {self:?} crypto provider is not compiled into this build of backend-soft"
            )))
        }
    }

    /// The algorithms this provider serves: every one with aws-lc-rs; with
    /// RustCrypto, ECDSA P-256, AES-256-GCM and HMAC-SHA256 only.
    pub fn supports(self, alg: Algorithm) -> bool {
        self == CryptoProvider::AwsLc
            || matches!(
                alg,
                Algorithm::EcdsaP256Sha256 | Algorithm::Aes256Gcm | Algorithm::HmacSha256
            )
    }
}

/// A usable key from one provider. Lives behind an `Arc` in the store's
/// cache, so the size difference between variants costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Material {
    #[cfg(feature = "aws-lc")]
    AwsLc(aws::Key),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(rustcrypto::Key),
}

/// Fresh material for `alg` from `provider`'s generator.
pub(crate) fn generate(provider: CryptoProvider, alg: Algorithm) -> Result<SecretBytes> {
    provider.check_available()?;
    match provider {
        #[cfg(feature = "aws-lc")]
        CryptoProvider::AwsLc => aws::generate(alg),
        #[cfg(feature = "rustcrypto")]
        CryptoProvider::RustCrypto => rustcrypto::generate(alg),
        #[allow(unreachable_patterns)]
        _ => unreachable_provider(),
    }
}

/// Parses sealed-record plaintext for `provider`.
pub(crate) fn parse(
    provider: CryptoProvider,
    alg: Algorithm,
    bytes: &SecretBytes,
) -> Result<Material> {
    provider.check_available()?;
    match provider {
        #[cfg(feature = "aws-lc")]
        CryptoProvider::AwsLc => aws::parse(alg, bytes).map(Material::AwsLc),
        #[cfg(feature = "rustcrypto")]
        CryptoProvider::RustCrypto => rustcrypto::parse(alg, bytes).map(Material::RustCrypto),
        #[allow(unreachable_patterns)]
        _ => unreachable_provider(),
    }
}

fn unreachable_provider<T>() -> Result<T> {
    Err(Error::unsupported(
        "no crypto provider is compiled into backend-soft",
    ))
}

macro_rules! dispatch {
    ($self:ident, $k:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "aws-lc")]
            Material::AwsLc($k) => $e,
            #[cfg(feature = "rustcrypto")]
            Material::RustCrypto($k) => $e,
        }
    };
}

impl Material {
    /// The public key, for private keys.
    pub(crate) fn public_key(&self, alg: Algorithm) -> Result<PublicKey> {
        dispatch!(self, k => k.public_key(alg))
    }

    /// Signs `message`: ECDSA as fixed `r‖s`, RSA in the key's fixed scheme.
    pub(crate) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>> {
        dispatch!(self, k => k.sign(alg, message))
    }

    /// HMAC-SHA256 of `data`.
    pub(crate) fn hmac(&self, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        dispatch!(self, k => k.hmac(data))
    }

    /// ECDH with `peer`, then the one-step KDF of SP 800-56C.
    pub(crate) fn agree_sha256_kdf(
        &self,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        dispatch!(self, k => k.agree_sha256_kdf(peer, fixed_info, len))
    }

    /// AES-256-GCM under a fresh random nonce.
    pub(crate) fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<AeadSealed> {
        dispatch!(self, k => k.encrypt(aad, plaintext))
    }

    /// AES-256-GCM decryption; any mismatch is `Integrity`.
    pub(crate) fn decrypt(
        &self,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        dispatch!(self, k => k.decrypt(aad, nonce, ciphertext))
    }
}

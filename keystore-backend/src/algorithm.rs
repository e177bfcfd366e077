//! Algorithms, key usages and backend capabilities.

use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A key's algorithm. One key serves exactly one algorithm and, for RSA, one
/// padding scheme; the scheme is fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256 (`ecdsa-p256-sha256`).
    EcdsaP256Sha256,
    /// RSA-2048, RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    Rsa2048PssSha256,
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048Pkcs1Sha256,
    /// RSA-3072, RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    Rsa3072PssSha256,
    /// RSA-3072, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa3072Pkcs1Sha256,
    /// AES-256-GCM with a random 96-bit nonce and a 128-bit tag.
    Aes256Gcm,
    /// HMAC-SHA256 with a 32-byte secret: a MAC key (`mac`, the default) or
    /// a key-derivation key for HKDF (`derive`), never both (see
    /// [`Usages::MAC_AND_DERIVE_REASON`]).
    HmacSha256,
    /// ECDSA over NIST P-384 with SHA-384 (`ecdsa-p384-sha384`).
    EcdsaP384Sha384,
    /// Ed25519 (RFC 8032, pure EdDSA): 32-byte public keys, 64-byte
    /// signatures.
    Ed25519,
    /// ECDH over NIST P-256 (SP 800-56A), used only through the one-step
    /// KDF of SP 800-56C with SHA-256; the shared secret never leaves the
    /// backend (`ecdh-p256`, usage `agree`).
    EcdhP256,
    /// ML-DSA-65 (FIPS 204), a post-quantum signature: 1,952-byte public
    /// keys, 3,309-byte signatures (`ml-dsa-65`).
    MlDsa65,
}

/// A NIST elliptic curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// P-256 (secp256r1).
    P256,
    /// P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// The length of a field element (and of a scalar) in bytes.
    pub fn field_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }
}

/// Whether a key has a public half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// A private key with a public key (signing).
    Asymmetric,
    /// A secret key (AEAD, MAC, derivation).
    Symmetric,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 11] = [
        Algorithm::EcdsaP256Sha256,
        Algorithm::Rsa2048PssSha256,
        Algorithm::Rsa2048Pkcs1Sha256,
        Algorithm::Rsa3072PssSha256,
        Algorithm::Rsa3072Pkcs1Sha256,
        Algorithm::Aes256Gcm,
        Algorithm::HmacSha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::EcdhP256,
        Algorithm::MlDsa65,
    ];

    /// The stable identifier used in metadata, records and the CLI.
    pub fn id(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::Rsa2048PssSha256 => "rsa-2048-pss-sha256",
            Algorithm::Rsa2048Pkcs1Sha256 => "rsa-2048-pkcs1-sha256",
            Algorithm::Rsa3072PssSha256 => "rsa-3072-pss-sha256",
            Algorithm::Rsa3072Pkcs1Sha256 => "rsa-3072-pkcs1-sha256",
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdhP256 => "ecdh-p256",
            Algorithm::MlDsa65 => "ml-dsa-65",
        }
    }

    /// A stable one-byte code, used where an algorithm is bound into binary
    /// formats (sealed records, ciphertext envelopes).
    pub fn code(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 1,
            Algorithm::Rsa2048PssSha256 => 2,
            Algorithm::Rsa2048Pkcs1Sha256 => 3,
            Algorithm::Rsa3072PssSha256 => 4,
            Algorithm::Rsa3072Pkcs1Sha256 => 5,
            Algorithm::Aes256Gcm => 6,
            Algorithm::HmacSha256 => 7,
            Algorithm::EcdsaP384Sha384 => 8,
            Algorithm::Ed25519 => 9,
            Algorithm::EcdhP256 => 10,
            Algorithm::MlDsa65 => 11,
        }
    }

    /// Inverse of [`Algorithm::code`].
    pub fn from_code(code: u8) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Asymmetric (has a public key) or symmetric.
    pub fn class(self) -> KeyClass {
        match self {
            Algorithm::Aes256Gcm | Algorithm::HmacSha256 => KeyClass::Symmetric,
            _ => KeyClass::Asymmetric,
        }
    }

    /// RSA modulus size in bits, for RSA algorithms.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            Algorithm::Rsa2048PssSha256 | Algorithm::Rsa2048Pkcs1Sha256 => Some(2048),
            Algorithm::Rsa3072PssSha256 | Algorithm::Rsa3072Pkcs1Sha256 => Some(3072),
            _ => None,
        }
    }

    /// The NIST curve of an ECDSA or ECDH key.
    pub fn ec_curve(self) -> Option<EcCurve> {
        match self {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdhP256 => Some(EcCurve::P256),
            Algorithm::EcdsaP384Sha384 => Some(EcCurve::P384),
            _ => None,
        }
    }

    /// True for the algorithms that make signatures.
    pub fn signs(self) -> bool {
        self.operations().contains(&Operation::Sign)
    }

    /// The length of a signature in its raw form (ECDSA as fixed `r‖s`), for
    /// signing algorithms.
    pub fn signature_len(self) -> Option<usize> {
        match self {
            Algorithm::EcdsaP256Sha256 | Algorithm::Ed25519 => Some(64),
            Algorithm::EcdsaP384Sha384 => Some(96),
            Algorithm::MlDsa65 => Some(3309),
            other => other.rsa_bits().map(|bits| bits / 8),
        }
    }

    /// True for the RSASSA-PSS variants.
    pub fn is_rsa_pss(self) -> bool {
        matches!(
            self,
            Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256
        )
    }

    /// Length of the secret for symmetric algorithms (the only ones that can be
    /// imported).
    pub fn secret_len(self) -> Option<usize> {
        match self {
            Algorithm::Aes256Gcm | Algorithm::HmacSha256 => Some(32),
            _ => None,
        }
    }

    /// The usages this algorithm can ever have. For `hmac-sha256` that is
    /// `mac` or `derive`, but one key gets only one of them
    /// ([`Usages::check_combination`]).
    pub fn permitted_usages(self) -> Usages {
        match self {
            Algorithm::Aes256Gcm => Usages::ENCRYPT | Usages::DECRYPT | Usages::WRAP,
            Algorithm::HmacSha256 => Usages::MAC | Usages::DERIVE,
            Algorithm::EcdhP256 => Usages::AGREE,
            _ => Usages::SIGN | Usages::VERIFY,
        }
    }

    /// The usages a key gets unless the caller chooses them: every permitted
    /// usage except `wrap`, which a backup KEK asks for explicitly, and except
    /// `derive` for `hmac-sha256`, whose keys are MAC keys unless created
    /// for derivation (`derive` only).
    pub fn default_usages(self) -> Usages {
        match self {
            Algorithm::Aes256Gcm => Usages::ENCRYPT | Usages::DECRYPT,
            Algorithm::HmacSha256 => Usages::MAC,
            other => other.permitted_usages(),
        }
    }

    /// Operations a backend must implement to serve this algorithm.
    pub fn operations(self) -> &'static [Operation] {
        match self {
            Algorithm::Aes256Gcm => &[Operation::Encrypt, Operation::Decrypt],
            Algorithm::HmacSha256 => &[Operation::Mac],
            Algorithm::EcdhP256 => &[Operation::Agree],
            _ => &[Operation::Sign],
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.id() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.id()).collect();
                Error::invalid_input(format!(
                    "unknown algorithm '{s}'; expected one of: {}",
                    known.join(", ")
                ))
            })
    }
}

/// A set of key usages. The set is fixed when a key is created and enforced
/// on every operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Usages(u8);

impl Usages {
    /// Make signatures.
    pub const SIGN: Usages = Usages(1);
    /// Verify signatures.
    pub const VERIFY: Usages = Usages(2);
    /// AEAD-encrypt.
    pub const ENCRYPT: Usages = Usages(4);
    /// AEAD-decrypt.
    pub const DECRYPT: Usages = Usages(8);
    /// Compute and verify HMAC tags.
    pub const MAC: Usages = Usages(16);
    /// Derive keys with HKDF.
    pub const DERIVE: Usages = Usages(32);
    /// Wrap other keys for backup (backup KEKs; never a default).
    pub const WRAP: Usages = Usages(64);
    /// Key agreement (ECDH) followed by a KDF.
    pub const AGREE: Usages = Usages(128);

    const NAMES: [(Usages, &'static str); 8] = [
        (Usages::SIGN, "sign"),
        (Usages::VERIFY, "verify"),
        (Usages::ENCRYPT, "encrypt"),
        (Usages::DECRYPT, "decrypt"),
        (Usages::MAC, "mac"),
        (Usages::DERIVE, "derive"),
        (Usages::WRAP, "wrap"),
        (Usages::AGREE, "agree"),
    ];

    /// The empty set.
    pub const fn empty() -> Usages {
        Usages(0)
    }

    /// True if every usage in `other` is in `self`.
    pub fn contains(self, other: Usages) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no usage is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Why one key never holds both `mac` and `derive` (DESIGN.md,
    /// "Derivation"), for errors and warnings.
    pub const MAC_AND_DERIVE_REASON: &'static str = "mac(K, S) equals the HKDF PRK that \
        derive(K, S, ...) expands, so a MAC tag over a value later used as derive input \
        reveals the derived keys";

    /// True if the set holds both `mac` and `derive`, which no new key may
    /// (keys created before the rule keep working, with a warning).
    pub fn has_mac_and_derive(self) -> bool {
        self.contains(Usages::MAC | Usages::DERIVE)
    }

    /// Checks that the usages may share one key: `mac` and `derive` together
    /// are [`ErrorKind::Policy`](crate::ErrorKind::Policy) (see [`Usages::MAC_AND_DERIVE_REASON`]).
    pub fn check_combination(self) -> Result<()> {
        if self.has_mac_and_derive() {
            return Err(Error::policy(format!(
                "usages {{{self}}} refused: a key holds mac or derive, never both, because {}; \
                 create one key with usage mac and another with usage derive",
                Usages::MAC_AND_DERIVE_REASON
            )));
        }
        Ok(())
    }

    /// The usage names, in a stable order.
    pub fn names(self) -> Vec<&'static str> {
        Usages::NAMES
            .iter()
            .filter(|(u, _)| self.contains(*u))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::ops::BitOr for Usages {
    type Output = Usages;
    fn bitor(self, rhs: Usages) -> Usages {
        Usages(self.0 | rhs.0)
    }
}

impl fmt::Debug for Usages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usages({})", self)
    }
}

impl fmt::Display for Usages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for Usages {
    type Err = Error;
    /// Parses a comma-separated list such as `sign,verify`.
    fn from_str(s: &str) -> Result<Self> {
        let mut out = Usages::empty();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (u, _) = Usages::NAMES
                .iter()
                .find(|(_, n)| *n == part)
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "unknown usage '{part}'; expected sign, verify, encrypt, decrypt, mac, derive, wrap or agree"
                    ))
                })?;
            out = out | *u;
        }
        if out.is_empty() {
            return Err(Error::invalid_input("a key needs at least one usage"));
        }
        Ok(out)
    }
}

/// A backend operation, as listed in [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Generate a key inside the backend.
    Generate,
    /// Import secret key material (symmetric algorithms only).
    Import,
    /// Sign a message.
    Sign,
    /// AEAD-encrypt.
    Encrypt,
    /// AEAD-decrypt.
    Decrypt,
    /// HMAC-SHA256 with the key (also the first step of HKDF derivation).
    Mac,
    /// ECDH with a peer's public key, then the one-step KDF.
    Agree,
    /// Export a symmetric key wrapped under a backup KEK, and import it back.
    Wrap,
}

/// What a backend can do, per algorithm. A pair missing from the set means
/// the backend answers that operation with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported); the
/// conformance suite checks that it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    supported: BTreeSet<(Algorithm, Operation)>,
}

impl Capabilities {
    /// No capabilities.
    pub fn none() -> Self {
        Capabilities::default()
    }

    /// Every algorithm with its generate, operation and (for symmetric keys)
    /// import capability.
    pub fn all() -> Self {
        let mut c = Capabilities::none();
        for alg in Algorithm::ALL {
            c = c.with_algorithm(alg);
        }
        c
    }

    /// Adds `alg` with generate, its operations and, if symmetric, import.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Self {
        self.supported.insert((alg, Operation::Generate));
        if alg.class() == KeyClass::Symmetric {
            self.supported.insert((alg, Operation::Import));
        }
        for op in alg.operations() {
            self.supported.insert((alg, *op));
        }
        self
    }

    /// Adds `op` for `alg`.
    pub fn with(mut self, alg: Algorithm, op: Operation) -> Self {
        self.supported.insert((alg, op));
        self
    }

    /// Removes every capability of `alg`.
    pub fn without_algorithm(mut self, alg: Algorithm) -> Self {
        self.supported.retain(|(a, _)| *a != alg);
        self
    }

    /// True if the backend performs `op` for `alg`.
    pub fn supports(&self, alg: Algorithm, op: Operation) -> bool {
        self.supported.contains(&(alg, op))
    }

    /// Algorithms that the backend can generate.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| self.supports(*a, Operation::Generate))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn hmac_defaults_to_mac_only() {
        assert_eq!(Algorithm::HmacSha256.default_usages(), Usages::MAC);
        for alg in Algorithm::ALL {
            assert!(
                !alg.default_usages().has_mac_and_derive(),
                "{alg} defaults to both mac and derive"
            );
            assert!(alg.default_usages().check_combination().is_ok());
        }
    }

    #[test]
    fn ids_and_codes_are_unique_and_round_trip() {
        let mut ids = std::collections::BTreeSet::new();
        let mut codes = std::collections::BTreeSet::new();
        for alg in Algorithm::ALL {
            assert!(ids.insert(alg.id()), "{alg}: id reused");
            assert!(codes.insert(alg.code()), "{alg}: code reused");
            assert_eq!(Algorithm::from_code(alg.code()), Some(alg));
            assert_eq!(alg.id().parse::<Algorithm>().expect("parses"), alg);
            assert_eq!(alg.signs(), alg.signature_len().is_some(), "{alg}");
        }
        assert_eq!(Algorithm::EcdhP256.default_usages(), Usages::AGREE);
        assert!(!Algorithm::EcdhP256.signs());
    }

    #[test]
    fn mac_and_derive_together_is_policy() {
        let both: Usages = "mac,derive".parse().expect("still parses (old records)");
        assert!(both.has_mac_and_derive());
        let err = both.check_combination().expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Policy);
        let msg = err.to_string();
        assert!(
            msg.contains("never both") && msg.contains("another with usage derive"),
            "{msg}"
        );
        for one in [Usages::MAC, Usages::DERIVE, Usages::MAC | Usages::VERIFY] {
            assert!(!one.has_mac_and_derive());
            assert!(one.check_combination().is_ok());
        }
    }
}

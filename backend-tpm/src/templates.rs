//! The public-area templates of every object this backend creates.
//!
//! Every key is a child of the storage primary with
//! `fixedTPM | fixedParent | userWithAuth | noDA`, plus
//! `sensitiveDataOrigin` when the TPM generated the secret (not for imported
//! HMAC keys), `sign` for signing and MAC keys and `decrypt` (unrestricted)
//! for ECDH keys. The scheme is fixed in the key (ECDSA-SHA256 on P-256,
//! ECDSA-SHA384 on P-384, RSASSA-SHA256, RSAPSS-SHA256, HMAC-SHA256, ECDH on
//! P-256), so the TPM itself refuses any other use: a signing key cannot do
//! `TPM2_ECDH_ZGen`, an ECDH key cannot sign. Ed25519 and ML-DSA-65 have no
//! template: TPM 2.0 has neither. `noDA` is set because each key's auth
//! value is 256 random bits (guessing is hopeless), and so that a refused
//! stale blob never counts towards a lockout of the whole TPM.

use keystore_backend::{Algorithm, Component, Error, Result};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
    KeyedHashScheme, Public, PublicBuilder, PublicEccParameters, PublicEccParametersBuilder,
    PublicKeyRsa, PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SignatureScheme, SymmetricDefinitionObject,
};

fn built<T>(r: tss_esapi::Result<T>) -> Result<T> {
    r.map_err(|e| Error::backend(Component::Tpm, "building a TPM public template failed", e))
}

const SHA256: HashingAlgorithm = HashingAlgorithm::Sha256;
const SHA384: HashingAlgorithm = HashingAlgorithm::Sha384;

/// The label hashed into the primary's unique field.
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
pub const PRIMARY_UNIQUE_LABEL: &[u8] = b"keystore backend-tpm storage primary v1";

/// The unique field of the storage primary: x = SHA-256 of
/// [`PRIMARY_UNIQUE_LABEL`], y = 32 zero bytes (tpm2-tools:
/// `tpm2_createprimary -u -` with these 64 bytes on stdin). Public with the
/// `test-support` feature only.
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
pub fn primary_unique() -> [u8; 64] {
    use sha2::{Digest as _, Sha256};
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&Sha256::digest(PRIMARY_UNIQUE_LABEL));
    out
}

/// The storage primary: the ECC NIST P-256 storage key template of the TCG
/// TPM v2.0 Provisioning Guidance (the "SRK" template: restricted decrypt,
/// AES-128-CFB for its children, SHA-256 names, empty auth, `noDA`), with
/// one change: a project-specific unique field ([`primary_unique`]). The TPM
/// derives the same key from the owner seed and this template every time.
/// The unique field makes it a key of its own rather than the shared SRK
/// that other software may keep persistent at `0x81000001`: our blobs load
/// only under a primary that takes the owner auth to create.
pub(crate) fn storage_primary() -> Result<Public> {
    let attrs = built(
        ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build(),
    )?;
    let params = built(
        PublicEccParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
        .build(),
    )?;
    built(
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(SHA256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(params)
            .with_ecc_unique_identifier(unique_point()?)
            .build(),
    )
}

fn unique_point() -> Result<EccPoint> {
    let u = primary_unique();
    let x = built(EccParameter::try_from(&u[..32]))?;
    let y = built(EccParameter::try_from(&u[32..]))?;
    Ok(EccPoint::new(x, y))
}

/// The attributes of a key: `sign` for signing and MAC keys, `decrypt`
/// (never both) for key-agreement keys.
fn key_attributes(
    generated: bool,
    agreement: bool,
) -> Result<tss_esapi::attributes::ObjectAttributes> {
    built(
        ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(generated)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_sign_encrypt(!agreement)
            .with_decrypt(agreement)
            .build(),
    )
}

/// The ECC parameters of a key of `alg`, if it is an ECC key: an
/// unrestricted ECDSA signing key, or an unrestricted ECDH decrypt key (no
/// symmetric algorithm, no KDF: `TPM2_ECDH_ZGen` returns the raw point).
fn ecc_parameters(alg: Algorithm) -> Option<Result<PublicEccParameters>> {
    let builder = match alg {
        Algorithm::EcdsaP256Sha256 => PublicEccParametersBuilder::new_unrestricted_signing_key(
            EccScheme::EcDsa(HashScheme::new(SHA256)),
            EccCurve::NistP256,
        ),
        Algorithm::EcdsaP384Sha384 => PublicEccParametersBuilder::new_unrestricted_signing_key(
            EccScheme::EcDsa(HashScheme::new(SHA384)),
            EccCurve::NistP384,
        ),
        Algorithm::EcdhP256 => PublicEccParametersBuilder::new()
            .with_ecc_scheme(EccScheme::EcDh(HashScheme::new(SHA256)))
            .with_curve(EccCurve::NistP256)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .with_is_decryption_key(true)
            .with_restricted(false),
        _ => return None,
    };
    Some(built(builder.build()))
}

/// The template of a key of `alg`. `generated` is false only for imported
/// HMAC keys. `auth_policy` is empty for every stored key; the
/// non-extractability probe sets it on a throw-away twin.
///
/// # Errors
/// [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported) for
/// the algorithms TPM 2.0 does not have (AES-GCM, Ed25519, ML-DSA-65).
pub(crate) fn key(alg: Algorithm, generated: bool, auth_policy: Digest) -> Result<Public> {
    let attrs = key_attributes(generated, alg == Algorithm::EcdhP256)?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(SHA256)
        .with_object_attributes(attrs)
        .with_auth_policy(auth_policy);
    if let Some(params) = ecc_parameters(alg) {
        return built(
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(params?)
                .with_ecc_unique_identifier(EccPoint::default())
                .build(),
        );
    }
    match alg {
        Algorithm::Rsa2048PssSha256
        | Algorithm::Rsa2048Pkcs1Sha256
        | Algorithm::Rsa3072PssSha256
        | Algorithm::Rsa3072Pkcs1Sha256 => {
            let scheme = if alg.is_rsa_pss() {
                RsaScheme::RsaPss(HashScheme::new(SHA256))
            } else {
                RsaScheme::RsaSsa(HashScheme::new(SHA256))
            };
            let bits = if alg.rsa_bits() == Some(3072) {
                RsaKeyBits::Rsa3072
            } else {
                RsaKeyBits::Rsa2048
            };
            let params = built(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    scheme,
                    bits,
                    RsaExponent::default(),
                )
                .build(),
            )?;
            built(
                builder
                    .with_public_algorithm(PublicAlgorithm::Rsa)
                    .with_rsa_parameters(params)
                    .with_rsa_unique_identifier(PublicKeyRsa::default())
                    .build(),
            )
        }
        Algorithm::HmacSha256 => built(
            builder
                .with_public_algorithm(PublicAlgorithm::KeyedHash)
                .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
                    KeyedHashScheme::HMAC_SHA_256,
                ))
                .with_keyed_hash_unique_identifier(Digest::default())
                .build(),
        ),
        other => Err(not_in_tpm2(other).unwrap_or_else(|| {
            Error::unsupported(format!("{other}: not offered by the tpm backend"))
        })),
    }
}

/// The [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported)
/// error for an algorithm TPM 2.0 does not have (AES-GCM, Ed25519,
/// ML-DSA-65), naming where such keys can live instead; `None` for the
/// others.
pub(crate) fn not_in_tpm2(alg: Algorithm) -> Option<Error> {
    let why = match alg {
        Algorithm::Aes256Gcm => {
            "aes-256-gcm: TPM 2.0 has no AES-GCM; use a TPM-sealed soft store for AEAD keys"
        }
        Algorithm::Ed25519 => {
            "ed25519: not offered by the tpm backend: TPM 2.0 devices (and swtpm) have no Ed25519 (EdDSA); use another backend for Ed25519 keys"
        }
        Algorithm::MlDsa65 => {
            "ml-dsa-65: not offered by the tpm backend: TPM 2.0 devices (and swtpm) have no ML-DSA; use another backend for ML-DSA-65 keys"
        }
        _ => return None,
    };
    Some(Error::unsupported(why))
}

/// The scheme `TPM2_Sign` is asked for (the same one the key fixes); the
/// NULL scheme for algorithms that do not sign (the TPM then refuses).
pub(crate) fn signature_scheme(alg: Algorithm) -> SignatureScheme {
    let hash_scheme = HashScheme::new(SHA256);
    match alg {
        Algorithm::EcdsaP256Sha256 => SignatureScheme::EcDsa { hash_scheme },
        Algorithm::EcdsaP384Sha384 => SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(SHA384),
        },
        a if a.is_rsa_pss() => SignatureScheme::RsaPss { hash_scheme },
        a if a.rsa_bits().is_some() => SignatureScheme::RsaSsa { hash_scheme },
        _ => SignatureScheme::Null,
    }
}

/// A sealed data object (keyed-hash, NULL scheme, no sign/decrypt) holding a
/// caller-supplied secret. With a non-empty `policy` the object can be
/// unsealed only through that policy (`userWithAuth` clear).
pub(crate) fn sealed_data(policy: Option<Digest>) -> Result<Public> {
    let attrs = built(
        ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .with_user_with_auth(policy.is_none())
            .build(),
    )?;
    built(
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(SHA256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy.unwrap_or_default())
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build(),
    )
}

/// The attestation key (AK): ECC NIST P-256, SHA-256 names, a *restricted*
/// signing key with the ECDSA-SHA256 scheme fixed, `fixedTPM |
/// fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign`,
/// empty auth value and policy. Restricted: the TPM signs only digests it
/// computed itself over structures it built (`TPMS_ATTEST` starting with
/// `TPM_GENERATED_VALUE`), never a caller's digest that could imitate one,
/// so a signature by the AK is the TPM's own statement. `fixedTPM`
/// (through its EK parent, itself `fixedTPM`) and `sensitiveDataOrigin`:
/// the key was made inside this TPM and cannot leave it, which
/// `TPM2_ActivateCredential` lets a verifier check through the EK.
pub(crate) fn attestation_key() -> Result<Public> {
    let attrs = built(
        ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_sign_encrypt(true)
            .build(),
    )?;
    let params = built(
        PublicEccParametersBuilder::new()
            .with_symmetric(SymmetricDefinitionObject::Null)
            .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(SHA256)))
            .with_curve(EccCurve::NistP256)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .with_is_signing_key(true)
            .with_is_decryption_key(false)
            .with_restricted(true)
            .build(),
    )?;
    built(
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(SHA256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(params)
            .with_ecc_unique_identifier(EccPoint::default())
            .build(),
    )
}

/// The endorsement key template of the TCG EK Credential Profile (low
/// range, "template L-1" for RSA-2048 and "L-2" for ECC P-256: restricted
/// decrypt, AES-128-CFB, SHA-256 names, `authPolicy` = PolicySecret(TPM_RH_ENDORSEMENT),
/// `userWithAuth` and `adminWithPolicy` as specified, zero-filled
/// unique field), as tss-esapi builds it. The TPM derives the same key from
/// the endorsement seed every time: the key whose public part the
/// manufacturer certified.
pub(crate) fn endorsement_key(ecc: bool) -> Result<Public> {
    use tss_esapi::abstraction::{ek, AsymmetricAlgorithmSelection, DefaultKey};
    let alg = if ecc {
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256)
    } else {
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)
    };
    built(ek::create_ek_public_from_default_template_2(
        alg, DefaultKey,
    ))
}

//! TPM key attestation at provisioning: before it certifies a device
//! identity key, the factory proves that the key was generated inside a TPM
//! and cannot leave it.
//!
//! [`attest_tpm`] runs the exchange with the device (a [`TpmAttester`]) and
//! checks, in this order:
//! 1. the EK certificate chains to a trusted manufacturer CA
//!    ([`AttestationPolicy::manufacturer_roots`]) and names the EK the
//!    device presents;
//! 2. the attestation key (AK) is a restricted signing key fixed to its TPM;
//! 3. the AK lives in the same TPM as the EK: a secret wrapped to the EK for
//!    the AK's Name (`TPM2_MakeCredential`, in software) comes back
//!    unwrapped (`TPM2_ActivateCredential`);
//! 4. `TPM2_Certify` of the identity key, signed by the AK over the
//!    factory's fresh nonce, names the key's public area, which carries
//!    `fixedTPM | fixedParent | sensitiveDataOrigin` and the public key the
//!    CSR carries.
//!
//! Each failure is `Integrity` (or `Policy` for an untrusted manufacturer)
//! with a message that says which step failed; the caller audits it. What
//! passes is a [`VerifiedAttestation`], the only way to tell the factory
//! that a key was attested, carrying the digest of all the evidence.

mod credential;
mod device;
mod ek;
mod tpm;

pub use device::KeystoreAttester;

use crate::util::{random_bytes, sha256_tag};
use keystore_api::{Error, Result};
use sha2::{Digest, Sha256};
use tpm::{attr, CertifyInfo, Public, PublicKey, ALG_SHA256, ECC_NIST_P256};

/// What a device's TPM answers during attestation. Implemented for any
/// keystore by [`KeystoreAttester`] (a backend without attestation answers
/// `Unsupported`); all structures are TPM 2.0 marshalled, without `TPM2B`
/// size prefixes.
pub trait TpmAttester {
    /// The EK certificate (DER) from the TPM's NV memory.
    fn ek_certificate(&self) -> Result<Vec<u8>>;
    /// The EK's `TPMT_PUBLIC`.
    fn ek_public(&self) -> Result<Vec<u8>>;
    /// Creates an attestation key under the EK; returns its `TPMT_PUBLIC`.
    fn create_attestation_key(&mut self) -> Result<Vec<u8>>;
    /// `TPM2_ActivateCredential` with the AK made last: the unwrapped secret.
    fn activate_credential(&self, blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>>;
    /// `TPM2_Certify` of the identity key by the AK over `nonce`:
    /// (`TPMS_ATTEST`, `TPMT_SIGNATURE`, the identity key's `TPMT_PUBLIC`).
    fn certify_identity(&self, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)>;
}

/// Whom the factory trusts to vouch for TPMs. Whether attestation is
/// mandatory is the factory's setting
/// ([`Factory::require_attestation`](crate::Factory::require_attestation)).
#[derive(Debug, Clone, Default)]
pub struct AttestationPolicy {
    /// The manufacturer CA certificates (DER) an EK certificate must chain
    /// to; roots and intermediates alike, each trusted as an anchor.
    pub manufacturer_roots: Vec<Vec<u8>>,
}

/// A key attestation that passed every check of [`attest_tpm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAttestation {
    /// `sha256:` of the identity key's SubjectPublicKeyInfo (as the CSR
    /// carries it).
    pub key_fingerprint: String,
    /// `sha256:` over every piece of evidence (EK certificate, EK, AK,
    /// certify structure and signature, key public area), each
    /// length-prefixed.
    pub evidence_digest: String,
    /// `sha256:` of the EK certificate.
    pub ek_certificate: String,
    /// The EK certificate's issuer.
    pub manufacturer: String,
}

/// The attestation state the registry records for a unit.
pub const ATTESTED_TPM: &str = "attested-tpm";
/// The state of a unit whose key was not attested.
pub const UNATTESTED: &str = "unattested";

fn refused(step: &str, why: impl std::fmt::Display) -> Error {
    Error::integrity(format!("TPM key attestation refused at {step}: {why}"))
}

/// Runs the attestation exchange with `device` for the identity key whose
/// SubjectPublicKeyInfo the CSR carries (`csr_spki`, DER) under `policy`.
///
/// # Errors
/// `Policy` for an EK certificate that no manufacturer root vouches for (or
/// no roots configured); `Integrity` for any other failed check, naming it;
/// `InvalidInput` for malformed structures; `Unsupported` for an EK or AK
/// kind this verifier does not handle; the device's own errors.
pub fn attest_tpm(
    policy: &AttestationPolicy,
    device: &mut dyn TpmAttester,
    csr_spki: &[u8],
) -> Result<VerifiedAttestation> {
    // 1. EK certificate and EK.
    let ek_cert = device.ek_certificate()?;
    let manufacturer = ek::verify_ek_certificate(&ek_cert, &policy.manufacturer_roots)?;
    let ek_bytes = device.ek_public()?;
    let ek = Public::parse(&ek_bytes, "the EK public area")?;
    ek::check_ek_matches(&ek_cert, &ek)?;
    if !ek.has(attr::FIXED_TPM | attr::FIXED_PARENT | attr::RESTRICTED | attr::DECRYPT) {
        return Err(refused(
            "the EK",
            "it is not a restricted decryption key fixed to its TPM",
        ));
    }
    // 2. The AK.
    let ak_bytes = device.create_attestation_key()?;
    let ak = Public::parse(&ak_bytes, "the AK public area")?;
    let wanted = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::RESTRICTED
        | attr::SIGN;
    if !ak.has(wanted) || ak.has(attr::DECRYPT) {
        return Err(refused(
            "the AK",
            "it is not a restricted signing key generated in and fixed to its TPM",
        ));
    }
    let ak_name = ak.name()?;
    // 3. The AK is in the EK's TPM.
    let secret = random_bytes::<32>()?;
    let credential = credential::make_credential(&ek, &ak_name, &secret)?;
    let back = device
        .activate_credential(&credential.blob, &credential.encrypted_secret)
        .map_err(|e| {
            refused(
                "credential activation",
                format!(
                    "the AK is not in the TPM of the EK certificate ({})",
                    e.message()
                ),
            )
        })?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        back.as_slice(),
        secret.as_slice(),
    )) {
        return Err(refused(
            "credential activation",
            "the secret came back wrong; the AK is not in the TPM of the EK certificate",
        ));
    }
    // 4. Certify of the identity key.
    let nonce = random_bytes::<32>()?;
    let (attest, signature, key_bytes) = device.certify_identity(&nonce)?;
    verify_ak_signature(&ak, &attest, &signature)?;
    let info = CertifyInfo::parse(&attest)?;
    if info.extra_data != nonce {
        return Err(refused(
            "TPM2_Certify",
            "it does not answer this factory's nonce (replayed)",
        ));
    }
    let key = Public::parse(&key_bytes, "the identity key's public area")?;
    if info.name != key.name()? {
        return Err(refused(
            "TPM2_Certify",
            "it certifies another object than the public area presented",
        ));
    }
    if !key.has(attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN) {
        return Err(refused(
            "the identity key",
            format!(
                "its attributes 0x{:08x} lack fixedTPM, fixedParent or sensitiveDataOrigin: \
                 it may leave the TPM or was not generated in it",
                key.attributes
            ),
        ));
    }
    if !ek::spki_matches(csr_spki, &key.key)? {
        return Err(refused(
            "TPM2_Certify",
            "the certified key is not the key in the CSR",
        ));
    }
    let mut h = Sha256::new();
    for part in [
        &ek_cert, &ek_bytes, &ak_bytes, &attest, &signature, &key_bytes,
    ] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    Ok(VerifiedAttestation {
        key_fingerprint: sha256_tag(csr_spki),
        evidence_digest: format!("sha256:{}", hex::encode(h.finalize())),
        ek_certificate: sha256_tag(&ek_cert),
        manufacturer,
    })
}

/// Checks the AK's ECDSA P-256 / SHA-256 signature over `attest`.
fn verify_ak_signature(ak: &Public, attest: &[u8], signature: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::Verifier;
    let (hash, r, s) = tpm::ecdsa_signature(signature)?;
    let PublicKey::Ecc { curve, x, y } = &ak.key else {
        return Err(Error::unsupported("an attestation key that is not ECC"));
    };
    if *curve != ECC_NIST_P256 || hash != ALG_SHA256 || ak.scheme.map(|s| s.1) != Some(ALG_SHA256) {
        return Err(Error::unsupported(
            "an attestation key other than ECDSA P-256 with SHA-256",
        ));
    }
    let point = ek::sec1_point(x, y, 32)?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| refused("the AK", "its public key is not a point on P-256"))?;
    let fixed = |v: &[u8]| -> Result<[u8; 32]> {
        let v = strip_zeros(v);
        if v.len() > 32 {
            return Err(Error::invalid_input(
                "an ECDSA signature component is too long",
            ));
        }
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        Ok(out)
    };
    let sig = p256::ecdsa::Signature::from_scalars(fixed(&r)?, fixed(&s)?)
        .map_err(|_| refused("TPM2_Certify", "its signature is malformed"))?;
    key.verify(attest, &sig)
        .map_err(|_| refused("TPM2_Certify", "its signature does not verify under the AK"))
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| **b == 0).count();
    &v[n..]
}

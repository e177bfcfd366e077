//! The attestation key's value type and the EK selection it records.

use crate::blob;
use keystore_backend::{Component, Error, Result};
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::Marshall;

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile,
/// low range).
pub const EK_CERT_NV_RSA2048: u32 = 0x01c0_0002;
/// NV index of the ECC NIST P-256 EK certificate (TCG EK Credential
/// Profile, low range).
pub const EK_CERT_NV_ECC_P256: u32 = 0x01c0_000a;

/// Which endorsement key: the ECC P-256 one when the TPM holds its
/// certificate, else the RSA-2048 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EkAlgorithm {
    /// RSA-2048, template L-1; certificate at [`EK_CERT_NV_RSA2048`].
    Rsa2048,
    /// ECC NIST P-256, template L-2; certificate at [`EK_CERT_NV_ECC_P256`].
    EccP256,
}

impl EkAlgorithm {
    /// The NV index of this EK's certificate.
    pub fn nv_index(self) -> u32 {
        match self {
            EkAlgorithm::Rsa2048 => EK_CERT_NV_RSA2048,
            EkAlgorithm::EccP256 => EK_CERT_NV_ECC_P256,
        }
    }

    pub(super) fn code(self) -> u8 {
        match self {
            EkAlgorithm::Rsa2048 => 1,
            EkAlgorithm::EccP256 => 2,
        }
    }
}

/// An attestation key (AK): ECC NIST P-256, restricted signing
/// (ECDSA/SHA-256), `fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | restricted | sign`, empty auth value and policy, a child
/// of the endorsement key (EK) made from the TCG default EK template that
/// matches the EK certificate ([`AttestationKey::ek_algorithm`]). Holds
/// the (public, private) blob pair needed to load it again under that EK
/// in this TPM: the private blob is encrypted by the TPM and useless
/// elsewhere, so nothing here is secret. `Debug` shows the EK algorithm and
/// the Name only.
#[derive(Clone)]
pub struct AttestationKey {
    pub(super) ek: EkAlgorithm,
    pub(super) public: Public,
    pub(super) private: Private,
    public_area: Vec<u8>,
}

const AK_MAGIC: &[u8; 4] = b"KTAK";
const AK_FORMAT: u8 = 1;

impl std::fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKey")
            .field("ek", &self.ek)
            .field("name", &hex::encode(self.name()))
            .finish_non_exhaustive()
    }
}

impl AttestationKey {
    pub(super) fn new(ek: EkAlgorithm, public: Public, private: Private) -> Result<AttestationKey> {
        let public_area = public
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
        Ok(AttestationKey {
            ek,
            public,
            private,
            public_area,
        })
    }

    /// The AK's public area: `TPMT_PUBLIC` marshalled (no `TPM2B` size
    /// prefix).
    pub fn public_area(&self) -> &[u8] {
        &self.public_area
    }

    /// The AK's Name: `nameAlg (0x000B) ‖ SHA-256(public_area)`, 34 bytes.
    pub fn name(&self) -> Vec<u8> {
        blob::name(&self.public_area)
    }

    /// The EK this AK is a child of.
    pub fn ek_algorithm(&self) -> EkAlgorithm {
        self.ek
    }

    /// A storable form, for a provisioning run that spans restarts:
    /// `"KTAK" | 1 | EK (1 = RSA-2048, 2 = ECC P-256) | TPM2B_PUBLIC |
    /// TPM2B_PRIVATE`. Not secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        let private = self.private.value();
        let mut out = Vec::with_capacity(10 + self.public_area.len() + private.len());
        out.extend_from_slice(AK_MAGIC);
        out.push(AK_FORMAT);
        out.push(self.ek.code());
        out.extend_from_slice(&(self.public_area.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.public_area);
        out.extend_from_slice(&(private.len() as u16).to_be_bytes());
        out.extend_from_slice(private);
        out
    }

    /// Parses [`AttestationKey::to_bytes`]. Malformed bytes are
    /// [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity);
    /// whether the TPM accepts the blob shows at its first use.
    pub fn from_bytes(bytes: &[u8]) -> Result<AttestationKey> {
        let bad = |what: &str| Error::integrity(format!("attestation key bytes: {what}"));
        if bytes.len() < 6 || &bytes[..4] != AK_MAGIC || bytes[4] != AK_FORMAT {
            return Err(bad("not an attestation key (bad magic or format)"));
        }
        let ek = match bytes[5] {
            1 => EkAlgorithm::Rsa2048,
            2 => EkAlgorithm::EccP256,
            _ => return Err(bad("unknown EK algorithm")),
        };
        let mut rest = &bytes[6..];
        let mut take = || -> Option<&[u8]> {
            let n = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
            let body = rest.get(2..2 + n)?;
            rest = &rest[2 + n..];
            Some(body)
        };
        let area = take().ok_or_else(|| bad("public area truncated"))?;
        let private = take().ok_or_else(|| bad("private area truncated"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let public =
            crate::esys::unmarshal_public(area).ok_or_else(|| bad("public area does not parse"))?;
        let private = Private::try_from(private).map_err(|_| bad("private area too large"))?;
        AttestationKey::new(ek, public, private)
    }
}

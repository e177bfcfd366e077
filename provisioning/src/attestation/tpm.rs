//! The few TPM 2.0 structures a factory reads from a device (TPM 2.0 Library
//! Part 2), parsed without a TSS: `TPMT_PUBLIC` (RSA, ECC and keyed-hash
//! objects), `TPMS_ATTEST` of `TPM2_Certify`, and an ECDSA `TPMT_SIGNATURE`.
//! Every length is checked; malformed input is `InvalidInput` naming the
//! structure, never a panic.

use keystore_api::{Error, Result};
use sha2::{Digest, Sha256};

pub(crate) const ALG_RSA: u16 = 0x0001;
pub(crate) const ALG_SHA256: u16 = 0x000B;
const ALG_KEYEDHASH: u16 = 0x0008;
const ALG_NULL: u16 = 0x0010;
const ALG_XOR: u16 = 0x000A;
pub(crate) const ALG_ECDSA: u16 = 0x0018;
const ALG_ECC: u16 = 0x0023;
pub(crate) const ALG_AES: u16 = 0x0006;
pub(crate) const ALG_CFB: u16 = 0x0043;
pub(crate) const ECC_NIST_P256: u16 = 0x0003;

/// `TPM_GENERATED_VALUE`: the TPM made this structure.
const TPM_GENERATED: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY`.
const ST_ATTEST_CERTIFY: u16 = 0x8017;

/// Object attributes (`TPMA_OBJECT`).
pub(crate) mod attr {
    pub(crate) const FIXED_TPM: u32 = 1 << 1;
    pub(crate) const FIXED_PARENT: u32 = 1 << 4;
    pub(crate) const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub(crate) const RESTRICTED: u32 = 1 << 16;
    pub(crate) const DECRYPT: u32 = 1 << 17;
    pub(crate) const SIGN: u32 = 1 << 18;
}

/// A big-endian reader over one structure.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn short(&self) -> Error {
        Error::invalid_input(format!("{} is truncated or malformed", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `TPM2B_*`: a u16 size, then that many bytes.
    fn sized(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "{} has {} trailing bytes",
                self.what,
                self.buf.len()
            )))
        }
    }
}

/// The public key of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA modulus and exponent.
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// An ECC point on `curve`.
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
    /// A keyed-hash object (HMAC key or sealed data): no public key.
    KeyedHash,
}

/// A parsed `TPMT_PUBLIC`.
#[derive(Debug, Clone)]
pub(crate) struct Public {
    pub(crate) name_alg: u16,
    pub(crate) attributes: u32,
    /// The symmetric algorithm of a storage (restricted decrypt) key:
    /// (algorithm, key bits, mode), or `None`.
    pub(crate) symmetric: Option<(u16, u16, u16)>,
    /// The signing scheme's (scheme, hash), or `None` for NULL.
    pub(crate) scheme: Option<(u16, u16)>,
    pub(crate) key: PublicKey,
    /// The marshalled structure, as the Name hashes it.
    bytes: Vec<u8>,
}

impl Public {
    /// Parses a marshalled `TPMT_PUBLIC` (no `TPM2B` size prefix).
    pub(crate) fn parse(bytes: &[u8], what: &'static str) -> Result<Public> {
        let mut r = Reader::new(bytes, what);
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        let attributes = r.u32()?;
        let _auth_policy = r.sized()?;
        let (symmetric, scheme, key) = match kind {
            ALG_RSA => {
                let symmetric = sym_def(&mut r)?;
                let scheme = read_scheme(&mut r)?;
                let _bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65_537,
                    e => e,
                };
                let modulus = r.sized()?.to_vec();
                (symmetric, scheme, PublicKey::Rsa { modulus, exponent })
            }
            ALG_ECC => {
                let symmetric = sym_def(&mut r)?;
                let scheme = read_scheme(&mut r)?;
                let curve = r.u16()?;
                let _kdf = read_scheme(&mut r)?;
                let x = r.sized()?.to_vec();
                let y = r.sized()?.to_vec();
                (symmetric, scheme, PublicKey::Ecc { curve, x, y })
            }
            ALG_KEYEDHASH => {
                let s = r.u16()?;
                if s != ALG_NULL {
                    let _hash = r.u16()?;
                    if s == ALG_XOR {
                        let _kdf = r.u16()?;
                    }
                }
                let _unique = r.sized()?;
                (None, None, PublicKey::KeyedHash)
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{what}: object type 0x{other:04x} is not RSA, ECC or keyed-hash"
                )))
            }
        };
        r.end()?;
        Ok(Public {
            name_alg,
            attributes,
            symmetric,
            scheme,
            key,
            bytes: bytes.to_vec(),
        })
    }

    /// The object's Name: `nameAlg || H(TPMT_PUBLIC)` (SHA-256 only).
    pub(crate) fn name(&self) -> Result<Vec<u8>> {
        if self.name_alg != ALG_SHA256 {
            return Err(Error::unsupported(format!(
                "name algorithm 0x{:04x} (only SHA-256 Names are checked)",
                self.name_alg
            )));
        }
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.bytes));
        Ok(name)
    }

    /// Whether every attribute in `bits` is set.
    pub(crate) fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }
}

/// `TPMT_SYM_DEF_OBJECT`: NULL, or (algorithm, key bits, mode).
fn sym_def(r: &mut Reader<'_>) -> Result<Option<(u16, u16, u16)>> {
    let alg = r.u16()?;
    if alg == ALG_NULL {
        return Ok(None);
    }
    Ok(Some((alg, r.u16()?, r.u16()?)))
}

/// A scheme (`TPMT_*_SCHEME`, `TPMT_KDF_SCHEME`): NULL, or (scheme, hash).
fn read_scheme(r: &mut Reader<'_>) -> Result<Option<(u16, u16)>> {
    let s = r.u16()?;
    if s == ALG_NULL {
        return Ok(None);
    }
    Ok(Some((s, r.u16()?)))
}

/// A parsed `TPMS_ATTEST` of `TPM2_Certify`.
#[derive(Debug, Clone)]
pub(crate) struct CertifyInfo {
    /// The caller's qualifying data (the factory's nonce).
    pub(crate) extra_data: Vec<u8>,
    /// The Name of the certified object.
    pub(crate) name: Vec<u8>,
}

impl CertifyInfo {
    /// Parses a marshalled `TPMS_ATTEST`; anything but a TPM-generated
    /// certify structure is `InvalidInput`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<CertifyInfo> {
        let mut r = Reader::new(bytes, "the TPM2_Certify structure (TPMS_ATTEST)");
        if r.u32()? != TPM_GENERATED {
            return Err(Error::invalid_input(
                "the TPM2_Certify structure was not generated by a TPM (magic)",
            ));
        }
        if r.u16()? != ST_ATTEST_CERTIFY {
            return Err(Error::invalid_input(
                "the attestation structure is not a TPM2_Certify (type)",
            ));
        }
        let _signer = r.sized()?;
        let extra_data = r.sized()?.to_vec();
        let _clock_info = r.take(17)?;
        let _firmware = r.take(8)?;
        let name = r.sized()?.to_vec();
        let _qualified = r.sized()?;
        r.end()?;
        Ok(CertifyInfo { extra_data, name })
    }
}

/// An ECDSA `TPMT_SIGNATURE`: (hash algorithm, r, s).
pub(crate) fn ecdsa_signature(bytes: &[u8]) -> Result<(u16, Vec<u8>, Vec<u8>)> {
    let mut r = Reader::new(bytes, "the attestation signature (TPMT_SIGNATURE)");
    let alg = r.u16()?;
    if alg != ALG_ECDSA {
        return Err(Error::unsupported(format!(
            "attestation signature algorithm 0x{alg:04x} (only ECDSA is accepted)"
        )));
    }
    let hash = r.u16()?;
    let sig_r = r.sized()?.to_vec();
    let sig_s = r.sized()?.to_vec();
    r.end()?;
    Ok((hash, sig_r, sig_s))
}

//! Conversions between Rust values and the TSS2 structures ESYS takes and
//! returns (no FFI calls).

use super::local;
use crate::rc::TpmRc;
use tss_esapi::structures::Public;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys as sys;
use zeroize::{Zeroize, Zeroizing};

pub(super) fn tpm2b_auth(auth: &[u8]) -> Result<sys::TPM2B_AUTH, TpmRc> {
    let mut out = sys::TPM2B_AUTH::default();
    if auth.len() > out.buffer.len() {
        return Err(TpmRc::LOCAL_BAD_VALUE);
    }
    out.size = auth.len() as u16;
    out.buffer[..auth.len()].copy_from_slice(auth);
    Ok(out)
}

pub(super) fn tpm2b_max_buffer(data: &[u8]) -> Result<sys::TPM2B_MAX_BUFFER, TpmRc> {
    let mut out = sys::TPM2B_MAX_BUFFER::default();
    if data.len() > out.buffer.len() {
        return Err(TpmRc::LOCAL_BAD_VALUE);
    }
    out.size = data.len() as u16;
    out.buffer[..data.len()].copy_from_slice(data);
    Ok(out)
}

pub(super) fn tpm2b_public(public: &Public) -> Result<sys::TPM2B_PUBLIC, TpmRc> {
    sys::TPM2B_PUBLIC::try_from(public.clone()).map_err(local)
}

pub(super) fn digest32(d: sys::TPM2B_DIGEST) -> Result<Zeroizing<[u8; 32]>, TpmRc> {
    let mut d = d;
    let res = if d.size == 32 {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&d.buffer[..32]);
        Ok(out)
    } else {
        Err(TpmRc::LOCAL_BAD_VALUE)
    };
    d.buffer.zeroize();
    res
}

/// A PCR selection in one bank (`TPML_PCR_SELECTION` with one entry).
pub(crate) fn pcr_selection(hash_alg: u16, mask: u32) -> sys::TPML_PCR_SELECTION {
    let mut sel = sys::TPML_PCR_SELECTION::default();
    if mask != 0 {
        sel.count = 1;
        sel.pcrSelections[0].hash = hash_alg;
        sel.pcrSelections[0].sizeofSelect = 3;
        sel.pcrSelections[0].pcrSelect[0] = mask as u8;
        sel.pcrSelections[0].pcrSelect[1] = (mask >> 8) as u8;
        sel.pcrSelections[0].pcrSelect[2] = (mask >> 16) as u8;
    }
    sel
}

/// `TPM2B_PUBLIC` bytes (size prefix + marshalled `TPMT_PUBLIC`), the form
/// tpm2-tools reads and writes (`tpm2_load -u`).
pub(crate) fn marshal_public(public: &Public) -> Result<Vec<u8>, TpmRc> {
    let body = public.marshall().map_err(local)?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses a marshalled `TPMT_PUBLIC` (without size prefix).
pub(crate) fn unmarshal_public(body: &[u8]) -> Option<Public> {
    let public = Public::unmarshall(body).ok()?;
    // Reject trailing bytes: the marshalled form must round-trip exactly.
    (public.marshall().ok()? == body).then_some(public)
}

//! NV index commands for monotonic counters: `TPM2_NV_DefineSpace`,
//! `TPM2_NV_Increment` and `TPM2_NV_UndefineSpace`, each authorised by a
//! password session. Public areas and reads are in `attest.rs`
//! ([`Esys::nv_info`], [`Esys::nv_read`]). Nothing here is secret (the new
//! index's auth value is empty), so no command uses parameter encryption.

use super::{check, Esys, Tr, NONE, PASSWORD};
use crate::rc::TpmRc;
use tss_esapi::constants::tss as c;
use tss_esapi::tss2_esys as sys;

/// `TPMA_NV_OWNERWRITE`: the owner hierarchy authorises writes (increments).
pub(crate) const NV_OWNERWRITE: u32 = 1 << 1;
/// The type field of a counter index (`TPM_NT_COUNTER`).
pub(crate) const NV_TYPE_COUNTER: u32 = (c::TPM2_NT_COUNTER as u32) << sys::TPMA_NV_TPM2_NT_SHIFT;
/// `TPMA_NV_NO_DA`: failed authorisations with the index's auth value do
/// not count towards the dictionary-attack lockout.
pub(crate) const NV_NO_DA: u32 = 1 << 25;
/// `TPMA_NV_WRITTEN`: the index has been written (a counter: incremented).
pub(crate) const NV_WRITTEN: u32 = 1 << 29;
/// State bits the TPM sets on its own (`WRITELOCKED`, `WRITTEN`,
/// `READLOCKED`), not chosen at definition.
pub(crate) const NV_STATE_BITS: u32 = (1 << 11) | NV_WRITTEN | (1 << 31);

impl Esys {
    /// `TPM2_NV_DefineSpace` of NV index `index` (a TPM handle) with
    /// `attributes`, `size` bytes of data, name algorithm SHA-256, an empty
    /// auth value and no policy, authorised by `hierarchy` (whose auth was
    /// set). Returns the ESYS handle of the new index; release it with
    /// [`Esys::tr_close`] (or by [`Esys::nv_undefine_space`]).
    pub(crate) fn nv_define_space(
        &mut self,
        hierarchy: Tr,
        index: u32,
        attributes: u32,
        size: u16,
    ) -> Result<Tr, TpmRc> {
        let auth = sys::TPM2B_AUTH::default();
        let public = sys::TPM2B_NV_PUBLIC {
            // ESYS marshals the structure and computes the size itself.
            size: 0,
            nvPublic: sys::TPMS_NV_PUBLIC {
                nvIndex: index,
                nameAlg: c::TPM2_ALG_SHA256,
                attributes,
                authPolicy: sys::TPM2B_DIGEST::default(),
                dataSize: size,
            },
        };
        let mut tr = NONE;
        // SAFETY: initialised inputs that outlive the call; `tr` receives
        // the new ESYS handle.
        check(unsafe {
            sys::Esys_NV_DefineSpace(
                self.ctx, hierarchy, PASSWORD, NONE, NONE, &auth, &public, &mut tr,
            )
        })?;
        Ok(tr)
    }

    /// `TPM2_NV_Increment` of the counter index `index`, authorised by
    /// `auth` (a hierarchy or the index itself, whose auth was set).
    pub(crate) fn nv_increment(&mut self, auth: Tr, index: Tr) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe { sys::Esys_NV_Increment(self.ctx, auth, index, PASSWORD, NONE, NONE) })
    }

    /// `TPM2_NV_UndefineSpace` of `index`, authorised by `hierarchy` (whose
    /// auth was set). On success ESYS releases the handle `index`; on
    /// failure the caller still owns it.
    pub(crate) fn nv_undefine_space(&mut self, hierarchy: Tr, index: Tr) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe {
            sys::Esys_NV_UndefineSpace(self.ctx, hierarchy, index, PASSWORD, NONE, NONE)
        })
    }
}

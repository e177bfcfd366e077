//! Hierarchy commands: clear, change a hierarchy's auth value.

use super::convert::tpm2b_auth;
use super::{check, Crypt, Esys, Tr, NONE, PASSWORD};
use crate::rc::TpmRc;
use tss_esapi::tss2_esys as sys;
use zeroize::Zeroize;

impl Esys {
    /// `TPM2_Clear` authorised by `hierarchy` (lockout or platform), whose
    /// auth was set.
    pub(crate) fn clear(&mut self, hierarchy: Tr) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe { sys::Esys_Clear(self.ctx, hierarchy, PASSWORD, NONE, NONE) })
    }

    /// `TPM2_HierarchyChangeAuth`; ESYS then uses `new_auth` for `hierarchy`.
    pub(crate) fn hierarchy_change_auth(
        &mut self,
        hierarchy: Tr,
        new_auth: &[u8],
    ) -> Result<(), TpmRc> {
        let mut a = tpm2b_auth(new_auth)?;
        // The new auth value goes encrypted.
        let rc = match self.enc(Crypt::Command) {
            Err(rc) => rc.0,
            // SAFETY: initialised input.
            Ok(enc) => unsafe {
                sys::Esys_HierarchyChangeAuth(self.ctx, hierarchy, PASSWORD, enc, NONE, &a)
            },
        };
        a.buffer.zeroize();
        check(rc)
    }
}

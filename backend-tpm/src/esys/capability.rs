//! Capability queries: supported parameters, loaded handles, fixed
//! properties.

use super::{check, missing, Esys, Out, NONE};
use crate::rc::TpmRc;
use tss_esapi::constants::tss as c;
use tss_esapi::structures::Public;
use tss_esapi::tss2_esys as sys;

impl Esys {
    /// `TPM2_TestParms`: whether the TPM supports the parameters of `template`.
    pub(crate) fn test_parms(&mut self, template: &Public) -> Result<(), TpmRc> {
        let t = sys::TPMT_PUBLIC::from(template.clone());
        let parms = sys::TPMT_PUBLIC_PARMS {
            type_: t.type_,
            parameters: t.parameters,
        };
        // SAFETY: initialised input.
        check(unsafe { sys::Esys_TestParms(self.ctx, NONE, NONE, NONE, &parms) })
    }

    /// TPM handles currently loaded from `first` on (`TPM2_GetCapability`
    /// with `TPM2_CAP_HANDLES`).
    pub(crate) fn handles(&mut self, first: u32) -> Result<Vec<u32>, TpmRc> {
        let mut out = Vec::new();
        let mut next = first;
        loop {
            let mut more: sys::TPMI_YES_NO = 0;
            let mut data = Out::<sys::TPMS_CAPABILITY_DATA>::new();
            // SAFETY: valid context and output slots.
            check(unsafe {
                sys::Esys_GetCapability(
                    self.ctx,
                    NONE,
                    NONE,
                    NONE,
                    c::TPM2_CAP_HANDLES,
                    next,
                    64,
                    &mut more,
                    data.slot(),
                )
            })?;
            let Some(d) = data.get() else {
                return missing();
            };
            if d.capability != c::TPM2_CAP_HANDLES {
                return missing();
            }
            // SAFETY: the TPM answered TPM2_CAP_HANDLES, so `handles` is the
            // active member of the union.
            let list = unsafe { d.data.handles };
            let n = (list.count as usize).min(list.handle.len());
            let page: Vec<u32> = list.handle[..n]
                .iter()
                .copied()
                .filter(|h| h >> 24 == first >> 24)
                .collect();
            let last = page.last().copied();
            out.extend(page);
            match last {
                Some(h) if more != 0 => next = h + 1,
                _ => break,
            }
        }
        Ok(out)
    }

    /// A fixed TPM property (`TPM2_GetCapability` with `TPM2_CAP_TPM_PROPERTIES`).
    pub(crate) fn property(&mut self, pt: u32) -> Result<Option<u32>, TpmRc> {
        let mut more: sys::TPMI_YES_NO = 0;
        let mut data = Out::<sys::TPMS_CAPABILITY_DATA>::new();
        // SAFETY: valid context and output slots.
        check(unsafe {
            sys::Esys_GetCapability(
                self.ctx,
                NONE,
                NONE,
                NONE,
                c::TPM2_CAP_TPM_PROPERTIES,
                pt,
                1,
                &mut more,
                data.slot(),
            )
        })?;
        let Some(d) = data.get() else {
            return missing();
        };
        if d.capability != c::TPM2_CAP_TPM_PROPERTIES {
            return missing();
        }
        // SAFETY: the TPM answered TPM2_CAP_TPM_PROPERTIES.
        let props = unsafe { d.data.tpmProperties };
        let n = (props.count as usize).min(props.tpmProperty.len());
        Ok(props.tpmProperty[..n]
            .iter()
            .find(|p| p.property == pt)
            .map(|p| p.value))
    }
}

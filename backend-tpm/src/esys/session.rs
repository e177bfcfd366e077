//! Sessions: the parameter-encryption session (and its test-support
//! switch) and policy sessions.

use super::{check, missing, Esys, Out, Tr, NONE};
use crate::rc::TpmRc;
use tss_esapi::constants::tss as c;
use tss_esapi::tss2_esys as sys;

#[cfg(feature = "test-support")]
static ENCRYPTION_DISABLED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Test support: when `true`, connections opened from now on start no
/// parameter-encryption session, so secrets cross the bus in clear (the
/// negative control of the bus-sniffing test). Process-wide.
#[cfg(feature = "test-support")]
pub fn set_parameter_encryption_disabled(disabled: bool) {
    ENCRYPTION_DISABLED.store(disabled, std::sync::atomic::Ordering::SeqCst);
}

/// Whether new connections start a parameter-encryption session (always,
/// outside test support).
pub(crate) fn parameter_encryption_enabled() -> bool {
    #[cfg(feature = "test-support")]
    {
        !ENCRYPTION_DISABLED.load(std::sync::atomic::Ordering::SeqCst)
    }
    #[cfg(not(feature = "test-support"))]
    {
        true
    }
}

impl Esys {
    /// Starts the parameter-encryption session: `TPM2_StartAuthSession` of
    /// an unbound HMAC session (SHA-256, AES-128-CFB) salted with
    /// `tpm_key` (an ECC storage key: ESYS does the ECDH salt exchange, so
    /// the session key never crosses the bus). It stays loaded (one session
    /// slot) until [`Esys::end_encryption_session`]; a session already
    /// started is flushed first.
    pub(crate) fn start_encryption_session(&mut self, tpm_key: Tr) -> Result<(), TpmRc> {
        self.end_encryption_session();
        let symmetric = sys::TPMT_SYM_DEF {
            algorithm: c::TPM2_ALG_AES,
            keyBits: sys::TPMU_SYM_KEY_BITS { aes: 128 },
            mode: sys::TPMU_SYM_MODE {
                aes: c::TPM2_ALG_CFB,
            },
        };
        let mut session = NONE;
        // SAFETY: initialised inputs; `session` receives the handle. A null
        // caller nonce makes ESYS draw a fresh one.
        check(unsafe {
            sys::Esys_StartAuthSession(
                self.ctx,
                tpm_key,
                NONE,
                NONE,
                NONE,
                NONE,
                std::ptr::null(),
                c::TPM2_SE_HMAC,
                &symmetric,
                c::TPM2_ALG_SHA256,
                &mut session,
            )
        })?;
        self.enc = session;
        Ok(())
    }

    /// Flushes the parameter-encryption session, if any.
    pub(crate) fn end_encryption_session(&mut self) {
        let enc = std::mem::replace(&mut self.enc, NONE);
        if enc != NONE {
            let _ = self.flush(enc);
        }
    }

    /// The TPM handle of the parameter-encryption session, if one is started.
    #[cfg(feature = "test-support")]
    pub(crate) fn encryption_session_handle(&mut self) -> Option<u32> {
        if self.enc == NONE {
            return None;
        }
        let mut h: sys::TPM2_HANDLE = 0;
        // SAFETY: valid context and ESYS handle; `h` receives the TPM handle.
        let rc = unsafe { sys::Esys_TR_GetTpmHandle(self.ctx, self.enc, &mut h) };
        (rc == 0).then_some(h)
    }

    /// `TPM2_StartAuthSession`: an unbound, unsalted policy (or trial)
    /// session with SHA-256. The caller flushes it.
    pub(crate) fn start_policy_session(&mut self, trial: bool) -> Result<Tr, TpmRc> {
        let symmetric = sys::TPMT_SYM_DEF {
            algorithm: c::TPM2_ALG_NULL,
            ..Default::default()
        };
        let kind = if trial {
            c::TPM2_SE_TRIAL
        } else {
            c::TPM2_SE_POLICY
        };
        let mut session = NONE;
        // SAFETY: initialised inputs; `session` receives the handle.
        check(unsafe {
            sys::Esys_StartAuthSession(
                self.ctx,
                NONE,
                NONE,
                NONE,
                NONE,
                NONE,
                // ESYS draws a fresh caller nonce itself when given none.
                std::ptr::null(),
                kind,
                &symmetric,
                c::TPM2_ALG_SHA256,
                &mut session,
            )
        })?;
        Ok(session)
    }

    /// `TPM2_PolicyPCR` with the current values of `pcrs`.
    pub(crate) fn policy_pcr(
        &mut self,
        session: Tr,
        pcrs: &sys::TPML_PCR_SELECTION,
    ) -> Result<(), TpmRc> {
        let digest = sys::TPM2B_DIGEST::default();
        // SAFETY: initialised inputs.
        check(unsafe { sys::Esys_PolicyPCR(self.ctx, session, NONE, NONE, NONE, &digest, pcrs) })
    }

    /// `TPM2_PolicyCommandCode`.
    #[cfg(feature = "test-support")]
    pub(crate) fn policy_command_code(&mut self, session: Tr, code: u32) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe { sys::Esys_PolicyCommandCode(self.ctx, session, NONE, NONE, NONE, code) })
    }

    /// `TPM2_PolicyGetDigest`.
    pub(crate) fn policy_get_digest(&mut self, session: Tr) -> Result<Vec<u8>, TpmRc> {
        let mut out = Out::<sys::TPM2B_DIGEST>::new();
        // SAFETY: valid context and output slot.
        check(unsafe {
            sys::Esys_PolicyGetDigest(self.ctx, session, NONE, NONE, NONE, out.slot())
        })?;
        match out.get() {
            Some(d) => Ok(d.buffer[..(d.size as usize).min(d.buffer.len())].to_vec()),
            None => missing(),
        }
    }
}

//! The one connection to the TPM: an ESYS context over a TCTI, driven through
//! the raw `Esys_*` functions that `tss-esapi` 7 re-exports as
//! [`tss_esapi::tss2_esys`].
//!
//! Why not `tss_esapi::Context`: tss-esapi 7.x (7.7.0 is the newest 7.x)
//! does not wrap `TPM2_HMAC_Start`, `TPM2_SequenceUpdate` or
//! `TPM2_SequenceComplete` (they arrive in the 8.0 alphas), and its `Context`
//! does not expose the ESYS context, so the missing commands cannot be added
//! beside it. A TPM without a resource manager (swtpm, `/dev/tpm0`) has one
//! set of object slots for every connection, and swtpm serves one connection
//! at a time, so every command must go through one ESYS context. This module
//! owns that context and issues each command the backend needs; tss-esapi 7
//! still supplies the FFI bindings, the typed structures (`Public`,
//! `Private`, `Signature`, …) and their marshalling.
//!
//! (tpm2-tss's swtpm TCTI opens a TCP connection per command and closes it
//! after the response; a simulator restart is therefore invisible to the
//! transport and shows up as `TPM_RC_REFERENCE_H0` on the next command.)
//!
//! This module and its submodules hold the crate's only `unsafe` code. Every call follows the same
//! contract: inputs are fully initialised values on the Rust stack that live
//! across the call; outputs are ESYS-allocated and owned by [`Out`], which
//! zeroes and frees them with `Esys_Free` exactly once. Secret inputs
//! (auth values, imported key bytes) are zeroed after the call.
//!
//! Authorisation is by password sessions (`ESYS_TR_PASSWORD`), which occupy
//! no session slot, or by policy sessions, which callers flush (see
//! [`Esys::flush`]). Password authorisations carry the auth value itself in
//! clear in the command's session area.
//!
//! **Parameter encryption.** A connection may hold one more session, started
//! by [`Esys::start_encryption_session`]: an HMAC session, unbound, *salted*
//! with an ECC P-256 storage key (ESYS does the ECDH exchange, so the
//! session key never crosses the bus), AES-128-CFB, SHA-256. It authorises
//! nothing; it is passed as an extra session (after the password or policy
//! session, or alone for commands without an authorised handle) with
//! `continueSession` and, set right before each command, `decrypt` (the
//! command's first parameter, a TPM2B, goes encrypted) or `encrypt` (the
//! response's first parameter, a TPM2B, comes back encrypted):
//!
//! | command | direction | what it hides |
//! |---|---|---|
//! | `TPM2_Create` | decrypt | `inSensitive`: a new key's auth value, imported key bytes, a sealed KEK |
//! | `TPM2_HMAC`, `TPM2_SequenceComplete` | encrypt, for secret results only | the HKDF PRK of `derive` |
//! | `TPM2_ECDH_ZGen` | encrypt | the ECDH shared secret `Z` of key agreement |
//! | `TPM2_Unseal` | encrypt | the unsealed KEK |
//! | `TPM2_ActivateCredential` | encrypt | the credential released to an attestation key |
//! | `TPM2_GetRandom` | encrypt | random bytes used as auth values and KEKs |
//! | `TPM2_HierarchyChangeAuth` | decrypt | the new hierarchy auth |
//!
//! Not encrypted: `TPM2_Sign` (digest in, signature out: both public; kept
//! on the fastest path), MAC tags (`secret == false`: their user sends or
//! compares them anyway; each encrypted command costs ESYS ≈3.8 ms of
//! host CPU with libtss2-esys 3.2.1 and OpenSSL 3), the empty sequence auth
//! of `TPM2_HMAC_Start`, the data fed to `TPM2_HMAC` / `TPM2_SequenceUpdate`
//! (the caller's message or HKDF salt), public areas and private blobs
//! (already encrypted by the parent), the peer point of `TPM2_ECDH_ZGen`,
//! and the password authorisations
//! themselves: the owner auth at `TPM2_CreatePrimary` and each key's auth
//! value at every use still cross the bus in clear. Without a session
//! (`enc` is `NONE`) every command goes in clear.

#![allow(unsafe_code)]

mod attest;
mod capability;
mod convert;
mod crypto;
mod hierarchy;
pub(crate) mod nv;
mod object;
mod session;

use crate::rc::TpmRc;
use convert::tpm2b_auth;
use std::ffi::CString;
use std::ptr::null_mut;
use tss_esapi::constants::tss as c;
use tss_esapi::tss2_esys as sys;
use zeroize::Zeroize;

pub(crate) use attest::{NV_AUTHREAD, NV_OWNERREAD};
pub(crate) use convert::{marshal_public, pcr_selection, unmarshal_public};
pub(crate) use session::parameter_encryption_enabled;
#[cfg(feature = "test-support")]
pub use session::set_parameter_encryption_disabled;

/// An ESYS object handle (`ESYS_TR`), valid only within its [`Esys`].
pub(crate) type Tr = sys::ESYS_TR;

/// The owner hierarchy.
pub(crate) const RH_OWNER: Tr = sys::ESYS_TR_RH_OWNER;
/// The NULL hierarchy (no auth value; its seed changes at every reset).
pub(crate) const RH_NULL: Tr = sys::ESYS_TR_RH_NULL;
/// The lockout hierarchy.
pub(crate) const RH_LOCKOUT: Tr = sys::ESYS_TR_RH_LOCKOUT;
/// The endorsement hierarchy.
pub(crate) const RH_ENDORSEMENT: Tr = sys::ESYS_TR_RH_ENDORSEMENT;
const PASSWORD: Tr = sys::ESYS_TR_PASSWORD;
const NONE: Tr = sys::ESYS_TR_NONE;

/// Largest `TPM2B_MAX_BUFFER` payload the bindings can carry.
pub(crate) const MAX_BUFFER: usize = sys::TPM2_MAX_DIGEST_BUFFER as usize;

/// An ESYS-allocated output, zeroed and freed on drop.
struct Out<T: Copy>(*mut T);

impl<T: Copy> Out<T> {
    fn new() -> Self {
        Out(null_mut())
    }

    fn slot(&mut self) -> *mut *mut T {
        &mut self.0
    }

    /// The value, if ESYS produced one.
    fn get(&self) -> Option<T> {
        if self.0.is_null() {
            None
        } else {
            // SAFETY: ESYS set the pointer to a valid, initialised T that it
            // allocated, and nothing else frees it before our drop.
            Some(unsafe { *self.0 })
        }
    }
}

impl<T: Copy> Drop for Out<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from ESYS (calloc), is freed once, and
            // T is plain old data, so overwriting it with zero bytes is sound.
            unsafe {
                std::ptr::write_bytes(self.0, 0, 1);
                sys::Esys_Free(self.0.cast());
            }
        }
    }
}

fn check(rc: sys::TSS2_RC) -> Result<(), TpmRc> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TpmRc(rc))
    }
}

/// A missing output after a successful call: an ESYS bug, reported as a
/// local "bad value" code.
fn missing<T>() -> Result<T, TpmRc> {
    Err(TpmRc::LOCAL_BAD_VALUE)
}

/// Converts a tss-esapi wrapper error (a structure that does not fit) into
/// the local "bad value" code.
fn local<E>(_: E) -> TpmRc {
    TpmRc::LOCAL_BAD_VALUE
}

/// Parameter encryption wanted for one command on the encryption session.
#[derive(Clone, Copy)]
enum Crypt {
    /// `TPMA_SESSION_DECRYPT`: the command's first parameter (a TPM2B) is
    /// sent encrypted.
    Command,
    /// `TPMA_SESSION_ENCRYPT`: the response's first parameter (a TPM2B) is
    /// returned encrypted.
    Response,
}

/// An open ESYS context and the TCTI under it.
pub(crate) struct Esys {
    ctx: *mut sys::ESYS_CONTEXT,
    tcti: *mut sys::TSS2_TCTI_CONTEXT,
    /// The salted, unbound HMAC session used only for parameter encryption
    /// (`NONE` when there is none: commands then go in clear).
    enc: Tr,
}

// SAFETY: an ESYS context may be used from any thread as long as only one
// thread uses it at a time; the backend keeps it behind a Mutex and `&mut`
// receivers enforce exclusive use.
unsafe impl Send for Esys {}

impl std::fmt::Debug for Esys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Esys { .. }")
    }
}

impl Esys {
    /// Connects through the TCTI named by `conf` (`swtpm:host=…,port=…`,
    /// `device:/dev/tpmrm0`, …).
    pub(crate) fn connect(conf: &str) -> Result<Esys, TpmRc> {
        let conf = CString::new(conf).map_err(|_| TpmRc::LOCAL_BAD_VALUE)?;
        let mut tcti = null_mut();
        // SAFETY: `conf` is a valid C string; `tcti` receives a context that
        // we finalize in Drop (or below on failure).
        check(unsafe { sys::Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut tcti) })?;
        let mut ctx = null_mut();
        // SAFETY: `tcti` is initialised; a null ABI version selects the
        // library's own.
        let rc = unsafe { sys::Esys_Initialize(&mut ctx, tcti, null_mut()) };
        if rc != 0 {
            // SAFETY: `tcti` came from Tss2_TctiLdr_Initialize and is unused.
            unsafe { sys::Tss2_TctiLdr_Finalize(&mut tcti) };
            return Err(TpmRc(rc));
        }
        Ok(Esys {
            ctx,
            tcti,
            enc: NONE,
        })
    }

    /// [`Esys::enc`] when `wanted`, else `NONE` (in clear, and without the
    /// cost of ESYS's session cryptography).
    fn enc_if(&mut self, wanted: bool, crypt: Crypt) -> Result<Tr, TpmRc> {
        if wanted {
            self.enc(crypt)
        } else {
            Ok(NONE)
        }
    }

    /// The encryption session, with its attributes set for the next command
    /// (`continueSession` plus `decrypt` or `encrypt`), or `NONE` if there
    /// is no session.
    fn enc(&mut self, crypt: Crypt) -> Result<Tr, TpmRc> {
        if self.enc == NONE {
            return Ok(NONE);
        }
        let dir = match crypt {
            Crypt::Command => c::TPMA_SESSION_DECRYPT,
            Crypt::Response => c::TPMA_SESSION_ENCRYPT,
        };
        let mask =
            c::TPMA_SESSION_CONTINUESESSION | c::TPMA_SESSION_DECRYPT | c::TPMA_SESSION_ENCRYPT;
        // SAFETY: valid context and session handle; plain values.
        check(unsafe {
            sys::Esys_TRSess_SetAttributes(
                self.ctx,
                self.enc,
                (c::TPMA_SESSION_CONTINUESESSION | dir) as sys::TPMA_SESSION,
                mask as sys::TPMA_SESSION,
            )
        })?;
        Ok(self.enc)
    }

    /// Sets the auth value ESYS uses for `tr` in password sessions.
    pub(crate) fn set_auth(&mut self, tr: Tr, auth: &[u8]) -> Result<(), TpmRc> {
        let mut a = tpm2b_auth(auth)?;
        // SAFETY: valid context and a TPM2B_AUTH that outlives the call.
        let rc = unsafe { sys::Esys_TR_SetAuth(self.ctx, tr, &a) };
        a.buffer.zeroize();
        check(rc)
    }

    /// `TPM2_FlushContext`: removes a loaded object or session from the TPM
    /// and releases the ESYS handle.
    pub(crate) fn flush(&mut self, tr: Tr) -> Result<(), TpmRc> {
        // SAFETY: valid context; ESYS checks the handle.
        check(unsafe { sys::Esys_FlushContext(self.ctx, tr) })
    }

    /// An ESYS handle for a TPM handle that is already loaded (a leftover
    /// object or session of an earlier connection), so that it can be flushed.
    pub(crate) fn tr_from_tpm(&mut self, tpm_handle: u32) -> Result<Tr, TpmRc> {
        let mut tr = NONE;
        // SAFETY: valid context; `tr` receives the new ESYS handle.
        check(unsafe {
            sys::Esys_TR_FromTPMPublic(self.ctx, tpm_handle, NONE, NONE, NONE, &mut tr)
        })?;
        Ok(tr)
    }
}

impl Drop for Esys {
    fn drop(&mut self) {
        // SAFETY: both pointers came from their initialisers and are
        // finalised once, context first.
        unsafe {
            sys::Esys_Finalize(&mut self.ctx);
            sys::Tss2_TctiLdr_Finalize(&mut self.tcti);
        }
    }
}

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
//! This is the only module with `unsafe` code. Every call follows the same
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
//! | `TPM2_Unseal` | encrypt | the unsealed KEK |
//! | `TPM2_GetRandom` | encrypt | random bytes used as auth values and KEKs |
//! | `TPM2_HierarchyChangeAuth` | decrypt | the new hierarchy auth |
//!
//! Not encrypted: `TPM2_Sign` (digest in, signature out: both public; kept
//! on the fastest path), MAC tags (`secret == false`: their user sends or
//! compares them anyway; each encrypted command costs ESYS ≈3.8 ms of
//! host CPU with libtss2-esys 3.2.1 and OpenSSL 3), the empty sequence auth
//! of `TPM2_HMAC_Start`, the data fed to `TPM2_HMAC` / `TPM2_SequenceUpdate`
//! (the caller's message or HKDF salt), public areas and private blobs
//! (already encrypted by the parent), and the password authorisations
//! themselves: the owner auth at `TPM2_CreatePrimary` and each key's auth
//! value at every use still cross the bus in clear. Without a session
//! (`enc` is `NONE`) every command goes in clear.

#![allow(unsafe_code)]

use crate::rc::TpmRc;
use std::ffi::CString;
use std::ptr::null_mut;
use tss_esapi::constants::tss as c;
use tss_esapi::structures::{Private, Public, Signature, SignatureScheme};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys as sys;
use zeroize::{Zeroize, Zeroizing};

/// An ESYS object handle (`ESYS_TR`), valid only within its [`Esys`].
pub(crate) type Tr = sys::ESYS_TR;

/// The owner hierarchy.
pub(crate) const RH_OWNER: Tr = sys::ESYS_TR_RH_OWNER;
/// The NULL hierarchy (no auth value; its seed changes at every reset).
pub(crate) const RH_NULL: Tr = sys::ESYS_TR_RH_NULL;
/// The lockout hierarchy.
pub(crate) const RH_LOCKOUT: Tr = sys::ESYS_TR_RH_LOCKOUT;
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

fn tpm2b_auth(auth: &[u8]) -> Result<sys::TPM2B_AUTH, TpmRc> {
    let mut out = sys::TPM2B_AUTH::default();
    if auth.len() > out.buffer.len() {
        return Err(TpmRc::LOCAL_BAD_VALUE);
    }
    out.size = auth.len() as u16;
    out.buffer[..auth.len()].copy_from_slice(auth);
    Ok(out)
}

fn tpm2b_max_buffer(data: &[u8]) -> Result<sys::TPM2B_MAX_BUFFER, TpmRc> {
    let mut out = sys::TPM2B_MAX_BUFFER::default();
    if data.len() > out.buffer.len() {
        return Err(TpmRc::LOCAL_BAD_VALUE);
    }
    out.size = data.len() as u16;
    out.buffer[..data.len()].copy_from_slice(data);
    Ok(out)
}

fn tpm2b_public(public: &Public) -> Result<sys::TPM2B_PUBLIC, TpmRc> {
    sys::TPM2B_PUBLIC::try_from(public.clone()).map_err(local)
}

fn digest32(d: sys::TPM2B_DIGEST) -> Result<Zeroizing<[u8; 32]>, TpmRc> {
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
    pub fn connect(conf: &str) -> Result<Esys, TpmRc> {
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

    /// Starts the parameter-encryption session: `TPM2_StartAuthSession` of
    /// an unbound HMAC session (SHA-256, AES-128-CFB) salted with
    /// `tpm_key` (an ECC storage key: ESYS does the ECDH salt exchange, so
    /// the session key never crosses the bus). It stays loaded (one session
    /// slot) until [`Esys::end_encryption_session`]; a session already
    /// started is flushed first.
    pub fn start_encryption_session(&mut self, tpm_key: Tr) -> Result<(), TpmRc> {
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
    pub fn end_encryption_session(&mut self) {
        let enc = std::mem::replace(&mut self.enc, NONE);
        if enc != NONE {
            let _ = self.flush(enc);
        }
    }

    /// The TPM handle of the parameter-encryption session, if one is started.
    pub fn encryption_session_handle(&mut self) -> Option<u32> {
        if self.enc == NONE {
            return None;
        }
        let mut h: sys::TPM2_HANDLE = 0;
        // SAFETY: valid context and ESYS handle; `h` receives the TPM handle.
        let rc = unsafe { sys::Esys_TR_GetTpmHandle(self.ctx, self.enc, &mut h) };
        (rc == 0).then_some(h)
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
    pub fn set_auth(&mut self, tr: Tr, auth: &[u8]) -> Result<(), TpmRc> {
        let mut a = tpm2b_auth(auth)?;
        // SAFETY: valid context and a TPM2B_AUTH that outlives the call.
        let rc = unsafe { sys::Esys_TR_SetAuth(self.ctx, tr, &a) };
        a.buffer.zeroize();
        check(rc)
    }

    /// `TPM2_CreatePrimary` under `hierarchy` (whose auth was set) from
    /// `template`. Returns the loaded object and its public area.
    pub fn create_primary(
        &mut self,
        hierarchy: Tr,
        template: &Public,
    ) -> Result<(Tr, Public), TpmRc> {
        let sensitive = sys::TPM2B_SENSITIVE_CREATE::default();
        let public = tpm2b_public(template)?;
        let outside = sys::TPM2B_DATA::default();
        let pcrs = sys::TPML_PCR_SELECTION::default();
        let mut handle = NONE;
        let mut out_public = Out::<sys::TPM2B_PUBLIC>::new();
        // SAFETY: inputs are initialised locals; outputs we do not want are
        // null, which ESYS accepts.
        check(unsafe {
            sys::Esys_CreatePrimary(
                self.ctx,
                hierarchy,
                PASSWORD,
                NONE,
                NONE,
                &sensitive,
                &public,
                &outside,
                &pcrs,
                &mut handle,
                out_public.slot(),
                null_mut(),
                null_mut(),
                null_mut(),
            )
        })?;
        let public = match out_public.get() {
            Some(p) => Public::try_from(p).map_err(local),
            None => missing(),
        };
        match public {
            Ok(p) => Ok((handle, p)),
            Err(e) => {
                let _ = self.flush(handle);
                Err(e)
            }
        }
    }

    /// `TPM2_Create` of a child of `parent` from `template`, with `auth` as
    /// its auth value and `data` as its sensitive data (empty: the TPM
    /// generates the key).
    pub fn create(
        &mut self,
        parent: Tr,
        template: &Public,
        auth: &[u8],
        data: &[u8],
    ) -> Result<(Public, Private), TpmRc> {
        let mut sensitive = sys::TPM2B_SENSITIVE_CREATE::default();
        let user_auth = tpm2b_auth(auth)?;
        sensitive.sensitive.userAuth = user_auth;
        if data.len() > sensitive.sensitive.data.buffer.len() {
            sensitive.sensitive.userAuth.buffer.zeroize();
            return Err(TpmRc::LOCAL_BAD_VALUE);
        }
        sensitive.sensitive.data.size = data.len() as u16;
        sensitive.sensitive.data.buffer[..data.len()].copy_from_slice(data);
        sensitive.size = std::mem::size_of::<sys::TPMS_SENSITIVE_CREATE>() as u16;
        let public = tpm2b_public(template)?;
        let outside = sys::TPM2B_DATA::default();
        let pcrs = sys::TPML_PCR_SELECTION::default();
        let mut out_private = Out::<sys::TPM2B_PRIVATE>::new();
        let mut out_public = Out::<sys::TPM2B_PUBLIC>::new();
        // inSensitive (auth value, imported key bytes) goes encrypted.
        let rc = match self.enc(Crypt::Command) {
            Err(rc) => rc.0,
            // SAFETY: as for create_primary.
            Ok(enc) => unsafe {
                sys::Esys_Create(
                    self.ctx,
                    parent,
                    PASSWORD,
                    enc,
                    NONE,
                    &sensitive,
                    &public,
                    &outside,
                    &pcrs,
                    out_private.slot(),
                    out_public.slot(),
                    null_mut(),
                    null_mut(),
                    null_mut(),
                )
            },
        };
        sensitive.sensitive.userAuth.buffer.zeroize();
        sensitive.sensitive.data.buffer.zeroize();
        let mut user_auth = user_auth;
        user_auth.buffer.zeroize();
        check(rc)?;
        let (Some(private), Some(public)) = (out_private.get(), out_public.get()) else {
            return missing();
        };
        Ok((
            Public::try_from(public).map_err(local)?,
            Private::try_from(private).map_err(local)?,
        ))
    }

    /// `TPM2_Load` of a (public, private) pair under `parent`.
    pub fn load(&mut self, parent: Tr, public: &Public, private: &Private) -> Result<Tr, TpmRc> {
        let in_private: sys::TPM2B_PRIVATE = private.clone().into();
        let in_public = tpm2b_public(public)?;
        let mut handle = NONE;
        // SAFETY: initialised inputs; `handle` receives the new object.
        check(unsafe {
            sys::Esys_Load(
                self.ctx,
                parent,
                PASSWORD,
                NONE,
                NONE,
                &in_private,
                &in_public,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// `TPM2_FlushContext`: removes a loaded object or session from the TPM
    /// and releases the ESYS handle.
    pub fn flush(&mut self, tr: Tr) -> Result<(), TpmRc> {
        // SAFETY: valid context; ESYS checks the handle.
        check(unsafe { sys::Esys_FlushContext(self.ctx, tr) })
    }

    /// `TPM2_ReadPublic`: the public area and Name the TPM holds for `tr`.
    pub fn read_public(&mut self, tr: Tr) -> Result<(Public, Vec<u8>), TpmRc> {
        let mut out_public = Out::<sys::TPM2B_PUBLIC>::new();
        let mut name = Out::<sys::TPM2B_NAME>::new();
        // SAFETY: valid context and output slots.
        check(unsafe {
            sys::Esys_ReadPublic(
                self.ctx,
                tr,
                NONE,
                NONE,
                NONE,
                out_public.slot(),
                name.slot(),
                null_mut(),
            )
        })?;
        let (Some(p), Some(n)) = (out_public.get(), name.get()) else {
            return missing();
        };
        let size = (n.size as usize).min(n.name.len());
        Ok((Public::try_from(p).map_err(local)?, n.name[..size].to_vec()))
    }

    /// `TPM2_Sign` of a digest computed on the host, with a NULL hashcheck
    /// ticket (allowed because our keys are not `restricted`).
    pub fn sign(
        &mut self,
        key: Tr,
        digest: &[u8],
        scheme: SignatureScheme,
    ) -> Result<Signature, TpmRc> {
        let mut d = sys::TPM2B_DIGEST::default();
        if digest.len() > d.buffer.len() {
            return Err(TpmRc::LOCAL_BAD_VALUE);
        }
        d.size = digest.len() as u16;
        d.buffer[..digest.len()].copy_from_slice(digest);
        let scheme: sys::TPMT_SIG_SCHEME = scheme.into();
        let ticket = sys::TPMT_TK_HASHCHECK {
            tag: c::TPM2_ST_HASHCHECK,
            hierarchy: c::TPM2_RH_NULL,
            digest: sys::TPM2B_DIGEST::default(),
        };
        let mut sig = Out::<sys::TPMT_SIGNATURE>::new();
        // SAFETY: initialised inputs and output slot.
        check(unsafe {
            sys::Esys_Sign(
                self.ctx,
                key,
                PASSWORD,
                NONE,
                NONE,
                &d,
                &scheme,
                &ticket,
                sig.slot(),
            )
        })?;
        match sig.get() {
            Some(s) => Signature::try_from(s).map_err(local),
            None => missing(),
        }
    }

    /// `TPM2_HMAC` (SHA-256) of at most [`MAX_BUFFER`] bytes. A `secret`
    /// result (an HKDF PRK) comes back encrypted on the bus; a MAC tag,
    /// which its user sends or compares anyway, in clear.
    pub fn hmac(
        &mut self,
        key: Tr,
        data: &[u8],
        secret: bool,
    ) -> Result<Zeroizing<[u8; 32]>, TpmRc> {
        let mut buf = tpm2b_max_buffer(data)?;
        let mut out = Out::<sys::TPM2B_DIGEST>::new();
        let rc = match self.enc_if(secret, Crypt::Response) {
            Err(rc) => rc.0,
            // SAFETY: initialised inputs and output slot.
            Ok(enc) => unsafe {
                sys::Esys_HMAC(
                    self.ctx,
                    key,
                    PASSWORD,
                    enc,
                    NONE,
                    &buf,
                    c::TPM2_ALG_SHA256,
                    out.slot(),
                )
            },
        };
        buf.buffer.zeroize();
        check(rc)?;
        match out.get() {
            Some(d) => digest32(d),
            None => missing(),
        }
    }

    /// `TPM2_HMAC_Start` (SHA-256) with an empty sequence auth. The sequence
    /// object occupies a transient slot until [`Esys::sequence_complete`] or
    /// [`Esys::flush`].
    pub fn hmac_start(&mut self, key: Tr) -> Result<Tr, TpmRc> {
        let auth = sys::TPM2B_AUTH::default();
        let mut seq = NONE;
        // The sequence auth is empty: nothing to encrypt.
        let enc = NONE;
        // SAFETY: initialised inputs; `seq` receives the sequence handle.
        check(unsafe {
            sys::Esys_HMAC_Start(
                self.ctx,
                key,
                PASSWORD,
                enc,
                NONE,
                &auth,
                c::TPM2_ALG_SHA256,
                &mut seq,
            )
        })?;
        Ok(seq)
    }

    /// `TPM2_SequenceUpdate` with at most [`MAX_BUFFER`] bytes.
    pub fn sequence_update(&mut self, seq: Tr, data: &[u8]) -> Result<(), TpmRc> {
        let mut buf = tpm2b_max_buffer(data)?;
        // SAFETY: initialised input.
        let rc = unsafe { sys::Esys_SequenceUpdate(self.ctx, seq, PASSWORD, NONE, NONE, &buf) };
        buf.buffer.zeroize();
        check(rc)
    }

    /// `TPM2_SequenceComplete` with the last (at most [`MAX_BUFFER`]) bytes;
    /// the TPM flushes the sequence object.
    /// A `secret` result comes back encrypted, as for [`Esys::hmac`].
    pub fn sequence_complete(
        &mut self,
        seq: Tr,
        data: &[u8],
        secret: bool,
    ) -> Result<Zeroizing<[u8; 32]>, TpmRc> {
        let mut buf = tpm2b_max_buffer(data)?;
        let mut out = Out::<sys::TPM2B_DIGEST>::new();
        let rc = match self.enc_if(secret, Crypt::Response) {
            Err(rc) => rc.0,
            // SAFETY: initialised input; the validation output is not wanted.
            Ok(enc) => unsafe {
                sys::Esys_SequenceComplete(
                    self.ctx,
                    seq,
                    PASSWORD,
                    enc,
                    NONE,
                    &buf,
                    sys::ESYS_TR_RH_NULL,
                    out.slot(),
                    null_mut(),
                )
            },
        };
        buf.buffer.zeroize();
        check(rc)?;
        match out.get() {
            Some(d) => digest32(d),
            None => missing(),
        }
    }

    /// `TPM2_GetRandom` until `len` bytes are collected.
    pub fn get_random(&mut self, len: usize) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        while out.len() < len {
            let want = (len - out.len()).min(32) as u16;
            let mut r = Out::<sys::TPM2B_DIGEST>::new();
            // The random bytes (auth values, KEKs) come back encrypted.
            let enc = self.enc(Crypt::Response)?;
            // SAFETY: valid context and output slot.
            check(unsafe { sys::Esys_GetRandom(self.ctx, enc, NONE, NONE, want, r.slot()) })?;
            let Some(mut d) = r.get() else {
                return missing();
            };
            let n = (d.size as usize).min(d.buffer.len());
            out.extend_from_slice(&d.buffer[..n]);
            d.buffer.zeroize();
            if n == 0 {
                return Err(TpmRc::LOCAL_BAD_VALUE);
            }
        }
        out.truncate(len);
        Ok(out)
    }

    /// `TPM2_Unseal` of a sealed data object, authorised by `session` (a
    /// policy session) or, when `None`, by its auth value.
    pub fn unseal(&mut self, item: Tr, session: Option<Tr>) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
        let mut out = Out::<sys::TPM2B_SENSITIVE_DATA>::new();
        // The unsealed data comes back encrypted.
        let enc = self.enc(Crypt::Response)?;
        // SAFETY: valid context and output slot.
        check(unsafe {
            sys::Esys_Unseal(
                self.ctx,
                item,
                session.unwrap_or(PASSWORD),
                enc,
                NONE,
                out.slot(),
            )
        })?;
        let Some(mut d) = out.get() else {
            return missing();
        };
        let n = (d.size as usize).min(d.buffer.len());
        let v = Zeroizing::new(d.buffer[..n].to_vec());
        d.buffer.zeroize();
        Ok(v)
    }

    /// `TPM2_StartAuthSession`: an unbound, unsalted policy (or trial)
    /// session with SHA-256. The caller flushes it.
    pub fn start_policy_session(&mut self, trial: bool) -> Result<Tr, TpmRc> {
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
    pub fn policy_pcr(&mut self, session: Tr, pcrs: &sys::TPML_PCR_SELECTION) -> Result<(), TpmRc> {
        let digest = sys::TPM2B_DIGEST::default();
        // SAFETY: initialised inputs.
        check(unsafe { sys::Esys_PolicyPCR(self.ctx, session, NONE, NONE, NONE, &digest, pcrs) })
    }

    /// `TPM2_PolicyCommandCode`.
    pub fn policy_command_code(&mut self, session: Tr, code: u32) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe { sys::Esys_PolicyCommandCode(self.ctx, session, NONE, NONE, NONE, code) })
    }

    /// `TPM2_PolicyGetDigest`.
    pub fn policy_get_digest(&mut self, session: Tr) -> Result<Vec<u8>, TpmRc> {
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

    /// `TPM2_Duplicate` of `object` to no new parent, authorised by the
    /// policy `session`. Returns `Ok(true)` if the TPM released a duplicate
    /// (which is discarded unread), or the TPM's refusal.
    pub fn duplicate(&mut self, object: Tr, session: Tr) -> Result<bool, TpmRc> {
        let key_in = sys::TPM2B_DATA::default();
        let sym = sys::TPMT_SYM_DEF_OBJECT {
            algorithm: c::TPM2_ALG_NULL,
            ..Default::default()
        };
        let mut key_out = Out::<sys::TPM2B_DATA>::new();
        let mut dup = Out::<sys::TPM2B_PRIVATE>::new();
        let mut seed = Out::<sys::TPM2B_ENCRYPTED_SECRET>::new();
        // SAFETY: initialised inputs and output slots (freed, unread, on drop).
        check(unsafe {
            sys::Esys_Duplicate(
                self.ctx,
                object,
                sys::ESYS_TR_RH_NULL,
                session,
                NONE,
                NONE,
                &key_in,
                &sym,
                key_out.slot(),
                dup.slot(),
                seed.slot(),
            )
        })?;
        Ok(dup.get().is_some())
    }

    /// `TPM2_Clear` authorised by `hierarchy` (lockout or platform), whose
    /// auth was set.
    pub fn clear(&mut self, hierarchy: Tr) -> Result<(), TpmRc> {
        // SAFETY: plain values.
        check(unsafe { sys::Esys_Clear(self.ctx, hierarchy, PASSWORD, NONE, NONE) })
    }

    /// `TPM2_HierarchyChangeAuth`; ESYS then uses `new_auth` for `hierarchy`.
    pub fn hierarchy_change_auth(&mut self, hierarchy: Tr, new_auth: &[u8]) -> Result<(), TpmRc> {
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

    /// `TPM2_TestParms`: whether the TPM supports the parameters of `template`.
    pub fn test_parms(&mut self, template: &Public) -> Result<(), TpmRc> {
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
    pub fn handles(&mut self, first: u32) -> Result<Vec<u32>, TpmRc> {
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
    pub fn property(&mut self, pt: u32) -> Result<Option<u32>, TpmRc> {
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

    /// An ESYS handle for a TPM handle that is already loaded (a leftover
    /// object or session of an earlier connection), so that it can be flushed.
    pub fn tr_from_tpm(&mut self, tpm_handle: u32) -> Result<Tr, TpmRc> {
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

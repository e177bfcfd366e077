//! Objects: create the primary and keys, load, read the public area,
//! duplicate.

use super::convert::{tpm2b_auth, tpm2b_public};
use super::{check, local, missing, Crypt, Esys, Out, Tr, NONE, PASSWORD};
use crate::rc::TpmRc;
use std::ptr::null_mut;
#[cfg(feature = "test-support")]
use tss_esapi::constants::tss as c;
use tss_esapi::structures::{Private, Public};
use tss_esapi::tss2_esys as sys;
use zeroize::Zeroize;

impl Esys {
    /// `TPM2_CreatePrimary` under `hierarchy` (whose auth was set) from
    /// `template`. Returns the loaded object and its public area.
    pub(crate) fn create_primary(
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
    pub(crate) fn create(
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

    /// `TPM2_Load` of a (public, private) pair under `parent`, the parent
    /// authorised by its (empty) password.
    pub(crate) fn load(
        &mut self,
        parent: Tr,
        public: &Public,
        private: &Private,
    ) -> Result<Tr, TpmRc> {
        self.load_child(parent, PASSWORD, public, private)
    }

    /// `TPM2_Load` of a (public, private) pair under `parent`, the parent
    /// authorised by `session`.
    pub(crate) fn load_child(
        &mut self,
        parent: Tr,
        session: Tr,
        public: &Public,
        private: &Private,
    ) -> Result<Tr, TpmRc> {
        let in_private: sys::TPM2B_PRIVATE = private.clone().into();
        let in_public = tpm2b_public(public)?;
        let mut handle = NONE;
        // SAFETY: initialised inputs; `handle` receives the new object.
        check(unsafe {
            sys::Esys_Load(
                self.ctx,
                parent,
                session,
                NONE,
                NONE,
                &in_private,
                &in_public,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// `TPM2_ReadPublic`: the public area and Name the TPM holds for `tr`.
    #[cfg(feature = "test-support")]
    pub(crate) fn read_public(&mut self, tr: Tr) -> Result<(Public, Vec<u8>), TpmRc> {
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

    /// `TPM2_Duplicate` of `object` to no new parent, authorised by the
    /// policy `session`. Returns `Ok(true)` if the TPM released a duplicate
    /// (which is discarded unread), or the TPM's refusal.
    #[cfg(feature = "test-support")]
    pub(crate) fn duplicate(&mut self, object: Tr, session: Tr) -> Result<bool, TpmRc> {
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
}

//! Attestation commands: policy authorisation by a hierarchy
//! (`TPM2_PolicySecret`), children of the endorsement key (create and load
//! under a policy session), `TPM2_ActivateCredential`, `TPM2_Certify`, and
//! NV reads (the EK certificate). With `test-support`: `TPM2_LoadExternal`
//! of a public area and `TPM2_MakeCredential`.

use super::{check, local, missing, Crypt, Esys, Out, Tr, NONE, PASSWORD};
use crate::rc::TpmRc;
use std::ptr::null_mut;
use tss_esapi::structures::{Private, Public, Signature, SignatureScheme};
use tss_esapi::tss2_esys as sys;
use zeroize::{Zeroize, Zeroizing};

use super::convert::tpm2b_public;

/// The public parts of an NV index that matter to a reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NvInfo {
    /// `TPMA_NV` bits.
    pub attributes: u32,
    /// Size of the index's data in bytes.
    pub size: u16,
}

/// `TPMA_NV_AUTHREAD`: the index's own auth value authorises reads.
pub(crate) const NV_AUTHREAD: u32 = 1 << 18;
/// `TPMA_NV_OWNERREAD`: the owner hierarchy authorises reads.
pub(crate) const NV_OWNERREAD: u32 = 1 << 17;

fn copy_into(to: &mut [u8], from: &[u8]) -> Result<u16, TpmRc> {
    if from.len() > to.len() {
        return Err(TpmRc::LOCAL_BAD_VALUE);
    }
    to[..from.len()].copy_from_slice(from);
    Ok(from.len() as u16)
}

impl Esys {
    /// `TPM2_PolicySecret` on `session` with `auth_handle` (a hierarchy
    /// whose auth value was set with [`Esys::set_auth`]) authorised by a
    /// password session; no nonce, cpHash, policyRef or expiration.
    pub(crate) fn policy_secret(&mut self, auth_handle: Tr, session: Tr) -> Result<(), TpmRc> {
        let nonce = sys::TPM2B_NONCE::default();
        let cp_hash = sys::TPM2B_DIGEST::default();
        let policy_ref = sys::TPM2B_NONCE::default();
        // SAFETY: initialised inputs; the timeout and ticket outputs are not
        // wanted (null, which ESYS accepts).
        check(unsafe {
            sys::Esys_PolicySecret(
                self.ctx,
                auth_handle,
                session,
                PASSWORD,
                NONE,
                NONE,
                &nonce,
                &cp_hash,
                &policy_ref,
                0,
                null_mut(),
                null_mut(),
            )
        })
    }

    /// `TPM2_Create` of a TPM-generated child of `parent` from `template`,
    /// with an empty auth value, the parent authorised by `session` (a
    /// policy session the caller satisfied and flushes).
    pub(crate) fn create_child(
        &mut self,
        parent: Tr,
        session: Tr,
        template: &Public,
    ) -> Result<(Public, Private), TpmRc> {
        let sensitive = sys::TPM2B_SENSITIVE_CREATE {
            size: std::mem::size_of::<sys::TPMS_SENSITIVE_CREATE>() as u16,
            ..Default::default()
        };
        let public = tpm2b_public(template)?;
        let outside = sys::TPM2B_DATA::default();
        let pcrs = sys::TPML_PCR_SELECTION::default();
        let mut out_private = Out::<sys::TPM2B_PRIVATE>::new();
        let mut out_public = Out::<sys::TPM2B_PUBLIC>::new();
        // SAFETY: initialised inputs and output slots; the creation data,
        // hash and ticket are not wanted.
        check(unsafe {
            sys::Esys_Create(
                self.ctx,
                parent,
                session,
                NONE,
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
        })?;
        let (Some(private), Some(public)) = (out_private.get(), out_public.get()) else {
            return missing();
        };
        Ok((
            Public::try_from(public).map_err(local)?,
            Private::try_from(private).map_err(local)?,
        ))
    }

    /// `TPM2_ActivateCredential`: `activate` (the object the credential was
    /// made for, authorised by its auth value) and `key` (the EK, whose
    /// policy `key_session` satisfies). `id_object` and `secret` are the
    /// buffers of the `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`
    /// (without size prefixes). The credential comes back encrypted on the
    /// bus.
    pub(crate) fn activate_credential(
        &mut self,
        activate: Tr,
        key: Tr,
        key_session: Tr,
        id_object: &[u8],
        secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
        let mut blob = sys::TPM2B_ID_OBJECT::default();
        blob.size = copy_into(&mut blob.credential, id_object)?;
        let mut enc_secret = sys::TPM2B_ENCRYPTED_SECRET::default();
        enc_secret.size = copy_into(&mut enc_secret.secret, secret)?;
        let mut out = Out::<sys::TPM2B_DIGEST>::new();
        let enc = self.enc(Crypt::Response)?;
        // SAFETY: initialised inputs and output slot.
        check(unsafe {
            sys::Esys_ActivateCredential(
                self.ctx,
                activate,
                key,
                PASSWORD,
                key_session,
                enc,
                &blob,
                &enc_secret,
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

    /// `TPM2_Certify` of `object` (authorised by its auth value) signed by
    /// `signer` (authorised by its auth value) with `scheme`, over
    /// `qualifying` (at most 64 bytes). Returns the marshalled
    /// `TPMS_ATTEST` (the `TPM2B_ATTEST` buffer) and the signature.
    pub(crate) fn certify(
        &mut self,
        object: Tr,
        signer: Tr,
        qualifying: &[u8],
        scheme: SignatureScheme,
    ) -> Result<(Vec<u8>, Signature), TpmRc> {
        let mut data = sys::TPM2B_DATA::default();
        data.size = copy_into(&mut data.buffer, qualifying)?;
        let scheme: sys::TPMT_SIG_SCHEME = scheme.into();
        let mut attest = Out::<sys::TPM2B_ATTEST>::new();
        let mut sig = Out::<sys::TPMT_SIGNATURE>::new();
        // SAFETY: initialised inputs and output slots.
        check(unsafe {
            sys::Esys_Certify(
                self.ctx,
                object,
                signer,
                PASSWORD,
                PASSWORD,
                NONE,
                &data,
                &scheme,
                attest.slot(),
                sig.slot(),
            )
        })?;
        let (Some(a), Some(s)) = (attest.get(), sig.get()) else {
            return missing();
        };
        let n = (a.size as usize).min(a.attestationData.len());
        Ok((
            a.attestationData[..n].to_vec(),
            Signature::try_from(s).map_err(local)?,
        ))
    }

    /// The public information of NV index `index` (a TPM handle,
    /// `0x01xxxxxx`), or `None` if the TPM has no such index.
    pub(crate) fn nv_info(&mut self, index: u32) -> Result<Option<(Tr, NvInfo)>, TpmRc> {
        // Asked first with TPM2_GetCapability, which answers an absent
        // index without an error (ESYS logs every TPM error).
        if !self.handles(index)?.contains(&index) {
            return Ok(None);
        }
        let tr = match self.tr_from_tpm(index) {
            Ok(tr) => tr,
            Err(rc) if rc.is(crate::rc::code::HANDLE) => return Ok(None),
            Err(rc) => return Err(rc),
        };
        let mut public = Out::<sys::TPM2B_NV_PUBLIC>::new();
        // SAFETY: valid context and output slot; the name is not wanted.
        let rc = check(unsafe {
            sys::Esys_NV_ReadPublic(self.ctx, tr, NONE, NONE, NONE, public.slot(), null_mut())
        });
        let info = rc.and_then(|()| match public.get() {
            Some(p) => Ok(NvInfo {
                attributes: p.nvPublic.attributes,
                size: p.nvPublic.dataSize,
            }),
            None => missing(),
        });
        match info {
            Ok(i) => Ok(Some((tr, i))),
            Err(rc) => {
                self.tr_close(tr);
                Err(rc)
            }
        }
    }

    /// `TPM2_NV_Read` of the whole index `index` (from [`Esys::nv_info`]),
    /// authorised by `auth` (the index itself or a hierarchy, whose auth
    /// value was set) in chunks of at most `chunk` bytes.
    pub(crate) fn nv_read(
        &mut self,
        auth: Tr,
        index: Tr,
        size: u16,
        chunk: u16,
    ) -> Result<Vec<u8>, TpmRc> {
        let mut out = Vec::with_capacity(size as usize);
        while out.len() < size as usize {
            let want = (size as usize - out.len()).min(chunk.max(1) as usize) as u16;
            let mut data = Out::<sys::TPM2B_MAX_NV_BUFFER>::new();
            // SAFETY: valid context and output slot.
            check(unsafe {
                sys::Esys_NV_Read(
                    self.ctx,
                    auth,
                    index,
                    PASSWORD,
                    NONE,
                    NONE,
                    want,
                    out.len() as u16,
                    data.slot(),
                )
            })?;
            let Some(d) = data.get() else {
                return missing();
            };
            let n = (d.size as usize).min(d.buffer.len());
            if n == 0 {
                return Err(TpmRc::LOCAL_BAD_VALUE);
            }
            out.extend_from_slice(&d.buffer[..n]);
        }
        Ok(out)
    }

    /// Releases ESYS's record of a handle that cannot be flushed (an NV
    /// index), without a TPM command.
    pub(crate) fn tr_close(&mut self, tr: Tr) {
        let mut tr = tr;
        // SAFETY: valid context; ESYS checks the handle.
        let _ = unsafe { sys::Esys_TR_Close(self.ctx, &mut tr) };
    }

    /// `TPM2_LoadExternal` of a public area alone into the NULL hierarchy.
    #[cfg(feature = "test-support")]
    pub(crate) fn load_external_public(&mut self, public: &Public) -> Result<Tr, TpmRc> {
        let in_public = tpm2b_public(public)?;
        let mut handle = NONE;
        // SAFETY: initialised input; no private part (null).
        check(unsafe {
            sys::Esys_LoadExternal(
                self.ctx,
                NONE,
                NONE,
                NONE,
                std::ptr::null(),
                &in_public,
                sys::ESYS_TR_RH_NULL,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// `TPM2_MakeCredential` with the loaded public key `key` for the
    /// object Name `name`: the `TPM2B_ID_OBJECT` and
    /// `TPM2B_ENCRYPTED_SECRET` buffers (without size prefixes).
    #[cfg(feature = "test-support")]
    pub(crate) fn make_credential(
        &mut self,
        key: Tr,
        credential: &[u8],
        name: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmRc> {
        let mut cred = sys::TPM2B_DIGEST::default();
        cred.size = copy_into(&mut cred.buffer, credential)?;
        let mut object_name = sys::TPM2B_NAME::default();
        object_name.size = copy_into(&mut object_name.name, name)?;
        let mut blob = Out::<sys::TPM2B_ID_OBJECT>::new();
        let mut secret = Out::<sys::TPM2B_ENCRYPTED_SECRET>::new();
        // SAFETY: initialised inputs and output slots.
        check(unsafe {
            sys::Esys_MakeCredential(
                self.ctx,
                key,
                NONE,
                NONE,
                NONE,
                &cred,
                &object_name,
                blob.slot(),
                secret.slot(),
            )
        })?;
        let (Some(b), Some(s)) = (blob.get(), secret.get()) else {
            return missing();
        };
        let nb = (b.size as usize).min(b.credential.len());
        let ns = (s.size as usize).min(s.secret.len());
        Ok((b.credential[..nb].to_vec(), s.secret[..ns].to_vec()))
    }
}

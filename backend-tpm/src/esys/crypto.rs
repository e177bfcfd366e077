//! Key use and TPM secrets: sign, HMAC and HMAC sequences, ECDH shared
//! secrets, random bytes, unseal.

use super::convert::{digest32, tpm2b_max_buffer};
use super::{check, local, missing, Crypt, Esys, Out, Tr, NONE, PASSWORD};
use crate::rc::TpmRc;
use std::ptr::null_mut;
use tss_esapi::constants::tss as c;
use tss_esapi::structures::{Signature, SignatureScheme};
use tss_esapi::tss2_esys as sys;
use zeroize::{Zeroize, Zeroizing};

impl Esys {
    /// `TPM2_Sign` of a digest computed on the host, with a NULL hashcheck
    /// ticket (allowed because our keys are not `restricted`).
    pub(crate) fn sign(
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
    ///
    /// [`MAX_BUFFER`]: super::MAX_BUFFER
    pub(crate) fn hmac(
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
    pub(crate) fn hmac_start(&mut self, key: Tr) -> Result<Tr, TpmRc> {
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
    ///
    /// [`MAX_BUFFER`]: super::MAX_BUFFER
    pub(crate) fn sequence_update(&mut self, seq: Tr, data: &[u8]) -> Result<(), TpmRc> {
        let mut buf = tpm2b_max_buffer(data)?;
        // SAFETY: initialised input.
        let rc = unsafe { sys::Esys_SequenceUpdate(self.ctx, seq, PASSWORD, NONE, NONE, &buf) };
        buf.buffer.zeroize();
        check(rc)
    }

    /// `TPM2_SequenceComplete` with the last (at most [`MAX_BUFFER`]) bytes;
    /// the TPM flushes the sequence object.
    /// A `secret` result comes back encrypted, as for [`Esys::hmac`].
    ///
    /// [`MAX_BUFFER`]: super::MAX_BUFFER
    pub(crate) fn sequence_complete(
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

    /// `TPM2_ECDH_ZGen`: the point `d·P` for the loaded ECDH key (private
    /// scalar `d`) and the peer point `P = (x, y)`, of which only the
    /// x-coordinate is returned, left-padded to `field_len` bytes: the
    /// shared secret `Z` of SP 800-56A. The output point comes back
    /// encrypted on the bus (when the connection has an encryption
    /// session); the peer point, public, goes in clear. The TPM checks that
    /// the point is on the key's curve (`TPM_RC_ECC_POINT` otherwise).
    pub(crate) fn ecdh_zgen(
        &mut self,
        key: Tr,
        x: &[u8],
        y: &[u8],
        field_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
        let mut point = sys::TPM2B_ECC_POINT::default();
        for (to, from) in [(&mut point.point.x, x), (&mut point.point.y, y)] {
            if from.len() > to.buffer.len() {
                return Err(TpmRc::LOCAL_BAD_VALUE);
            }
            to.size = from.len() as u16;
            to.buffer[..from.len()].copy_from_slice(from);
        }
        let mut out = Out::<sys::TPM2B_ECC_POINT>::new();
        // Z comes back encrypted.
        let enc = self.enc(Crypt::Response)?;
        // SAFETY: initialised input and output slot.
        check(unsafe {
            sys::Esys_ECDH_ZGen(self.ctx, key, PASSWORD, enc, NONE, &point, out.slot())
        })?;
        let Some(mut p) = out.get() else {
            return missing();
        };
        let x = &p.point.x.buffer[..(p.point.x.size as usize).min(p.point.x.buffer.len())];
        // Strip leading zeros, then left-pad to the field length.
        let first = x.iter().position(|b| *b != 0).unwrap_or(x.len());
        let x = &x[first..];
        let z = match field_len.checked_sub(x.len()) {
            Some(zeros) => {
                let mut z = Zeroizing::new(vec![0u8; field_len]);
                z[zeros..].copy_from_slice(x);
                Ok(z)
            }
            None => Err(TpmRc::LOCAL_BAD_VALUE),
        };
        p.point.x.buffer.zeroize();
        p.point.y.buffer.zeroize();
        z
    }

    /// `TPM2_GetRandom` until `len` bytes are collected.
    pub(crate) fn get_random(&mut self, len: usize) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
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
    pub(crate) fn unseal(
        &mut self,
        item: Tr,
        session: Option<Tr>,
    ) -> Result<Zeroizing<Vec<u8>>, TpmRc> {
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
}

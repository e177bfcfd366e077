//! The device side of TPM key attestation (see
//! `docs/design/tpm-attestation.md`).
//!
//! - **Endorsement key (EK)**: re-created on demand from the TCG default
//!   EK template (EK Credential Profile, low range: RSA-2048 "L-1" or ECC
//!   NIST P-256 "L-2") under the endorsement hierarchy, never persisted
//!   by us. The manufacturer's certificate for it sits in NV: the ECC
//!   P-256 one at [`EK_CERT_NV_ECC_P256`], the RSA-2048 one at
//!   [`EK_CERT_NV_RSA2048`]. The *selected* EK is the ECC one when its
//!   certificate index exists, else the RSA one ([`EkAlgorithm`]);
//!   [`TpmBackend::ek_certificate`] and [`TpmBackend::ek_public`] always
//!   answer for the same EK.
//! - **Attestation key (AK)**: a restricted ECDSA P-256 signing key created
//!   as a child of the selected EK ([`AttestationKey`]); its (public,
//!   private) blob pair is kept by the caller and loaded under the EK for
//!   each use. Its auth value is empty.
//! - Every use of the EK as a parent or for `TPM2_ActivateCredential`
//!   is authorised by a policy session with
//!   `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)` (the EK's `authPolicy`), the
//!   endorsement auth coming from [`TpmConfig::with_endorsement_auth`]
//!   (empty by default).
//! - **Slots**: the EK and the AK are transient objects. Before an
//!   operation the backend's LRU of loaded keys is emptied as far as needed
//!   so that the storage primary, the EK and the AK (or the AK and the
//!   keystore key) fit in the TPM's transient slots (three on swtpm); the
//!   EK and AK are flushed before the method returns, whatever happens.
//!   One policy session at a time is added beside the connection's
//!   parameter-encryption session.
//!
//! [`TpmConfig::with_endorsement_auth`]: crate::TpmConfig::with_endorsement_auth

mod forward;
mod key;

pub use key::{AttestationKey, EkAlgorithm, EK_CERT_NV_ECC_P256, EK_CERT_NV_RSA2048};

use crate::config::TpmConfig;
use crate::conn::{self, Conn};
use crate::esys::{Esys, Tr, NV_AUTHREAD, NV_OWNERREAD, RH_ENDORSEMENT, RH_OWNER};
use crate::ops::{load_error, resolve_in};
use crate::rc::{self, code, TpmRc};
use crate::{blob, templates, State, TpmBackend};
use keystore_backend::{Algorithm, Component, Error, KeyHandle, Result, SecretBytes};
use tss_esapi::constants::tss as c;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{HashScheme, Public, SignatureScheme};
use tss_esapi::traits::Marshall;

/// Largest `qualifying` data [`TpmBackend::certify`] accepts (a
/// `TPM2B_DATA`).
pub const MAX_QUALIFYING_LEN: usize = 64;

/// A failed step: the TPM code (for the lost-connection check; a local
/// code for failures that are not the TPM's) and the error to report.
type Fail = (TpmRc, Error);

fn fail(what: &'static str) -> impl Fn(TpmRc) -> Fail {
    move |rc| (rc, rc::to_error(what, rc))
}

fn plain(e: Error) -> Fail {
    (TpmRc::LOCAL_BAD_VALUE, e)
}

/// The selected EK: ECC P-256 when its certificate index exists.
pub(crate) fn selected_ek(esys: &mut Esys) -> std::result::Result<EkAlgorithm, Fail> {
    match esys
        .nv_info(EK_CERT_NV_ECC_P256)
        .map_err(fail("look for the EK certificate"))?
    {
        Some((tr, _)) => {
            esys.tr_close(tr);
            Ok(EkAlgorithm::EccP256)
        }
        None => Ok(EkAlgorithm::Rsa2048),
    }
}

/// Re-creates the EK of `alg` (`TPM2_CreatePrimary` under the endorsement
/// hierarchy) after freeing room for it and `extra` more objects, runs `f`
/// with it (the endorsement auth set, for [`ek_session`]), and flushes it.
pub(crate) fn with_ek<T>(
    conn: &mut Conn,
    config: &TpmConfig,
    alg: EkAlgorithm,
    extra: usize,
    f: impl FnOnce(&mut Esys, Tr, &Public) -> std::result::Result<T, Fail>,
) -> std::result::Result<T, Fail> {
    let template = templates::endorsement_key(alg == EkAlgorithm::EccP256).map_err(plain)?;
    conn.make_room(1 + extra, None);
    let esys = &mut conn.esys;
    esys.set_auth(RH_ENDORSEMENT, config.endorsement_auth())
        .map_err(fail("set the endorsement auth"))?;
    let out = match esys.create_primary(RH_ENDORSEMENT, &template) {
        Ok((ek, public)) => {
            let r = f(esys, ek, &public);
            let _ = esys.flush(ek);
            r
        }
        Err(rc) => Err(fail("re-create the endorsement key")(rc)),
    };
    let _ = esys.set_auth(RH_ENDORSEMENT, &[]);
    out
}

/// A policy session satisfying the EK's `authPolicy`:
/// `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)`. The caller flushes it.
pub(crate) fn ek_session(esys: &mut Esys) -> std::result::Result<Tr, Fail> {
    let s = esys
        .start_policy_session(false)
        .map_err(fail("start a policy session for the EK"))?;
    if let Err(rc) = esys.policy_secret(RH_ENDORSEMENT, s) {
        let _ = esys.flush(s);
        return Err(fail(
            "satisfy the EK policy (PolicySecret on the endorsement hierarchy)",
        )(rc));
    }
    Ok(s)
}

/// Loads `ak` under the (loaded) EK `ek`.
fn load_ak(esys: &mut Esys, ek: Tr, ak: &AttestationKey) -> std::result::Result<Tr, Fail> {
    let s = ek_session(esys)?;
    let r = esys.load_child(ek, s, &ak.public, &ak.private);
    let _ = esys.flush(s);
    r.map_err(|rc| {
        let e = if rc::is_blob_rejection(rc) {
            Error::integrity(format!(
                "the TPM refused to load the attestation key {} under its {:?} EK ({rc}): made by another TPM, before an endorsement change, or damaged",
                hex::encode(ak.name()),
                ak.ek
            ))
        } else {
            rc::to_error("load the attestation key", rc)
        };
        (rc, e)
    })
}

/// Trims an EK certificate read from NV to its DER length: some TPMs pad
/// the index after the certificate.
fn der_certificate(index: u32, data: Vec<u8>) -> Result<Vec<u8>> {
    let bad = || {
        Error::integrity(format!(
            "NV index 0x{index:08x} does not hold a DER certificate"
        ))
    };
    let (&tag, rest) = data.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (header, len) = if first < 0x80 {
        (2, first as usize)
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (2 + n, len)
    };
    let total = header + len;
    if total > data.len() {
        return Err(bad());
    }
    let mut data = data;
    data.truncate(total);
    Ok(data)
}

impl TpmBackend {
    /// Runs `f` on the live connection (state locked by the caller),
    /// re-opening it once if it was lost.
    pub(crate) fn with_conn<T>(
        &self,
        st: &mut State,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        for attempt in 1..=2 {
            let conn = st.connect(&self.config)?;
            match f(conn) {
                Ok(v) => return Ok(v),
                Err((rc, _)) if attempt == 1 && conn::is_connection_lost(rc) => st.disconnect(),
                Err((_, e)) => return Err(e),
            }
        }
        Err(Error::backend_msg(
            Component::Tpm,
            "the TPM connection was lost twice",
        ))
    }

    /// The EK certificate (DER) the manufacturer stored in NV: the ECC
    /// P-256 one at [`EK_CERT_NV_ECC_P256`] if that index exists, else the
    /// RSA-2048 one at [`EK_CERT_NV_RSA2048`], trimmed to its DER length.
    /// Read with the index's own (empty) auth value when it has
    /// `TPMA_NV_AUTHREAD`, else with the owner auth (`TPMA_NV_OWNERREAD`).
    /// [`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound) when
    /// the TPM has neither index.
    pub fn ek_certificate(&self) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let owner_auth = SecretBytes::from_slice(self.config.owner_auth());
        self.with_conn(&mut st, |conn| {
            let chunk = conn
                .esys
                .property(c::TPM2_PT_NV_BUFFER_MAX)
                .ok()
                .flatten()
                .unwrap_or(512)
                .clamp(64, 2048) as u16;
            for index in [EK_CERT_NV_ECC_P256, EK_CERT_NV_RSA2048] {
                let esys = &mut conn.esys;
                let Some((tr, info)) = esys
                    .nv_info(index)
                    .map_err(fail("read the EK certificate's NV index"))?
                else {
                    continue;
                };
                let read = if info.attributes & NV_AUTHREAD != 0 {
                    esys.set_auth(tr, &[])
                        .and_then(|()| esys.nv_read(tr, tr, info.size, chunk))
                } else if info.attributes & NV_OWNERREAD != 0 {
                    let r = esys
                        .set_auth(RH_OWNER, owner_auth.expose())
                        .and_then(|()| esys.nv_read(RH_OWNER, tr, info.size, chunk));
                    let _ = esys.set_auth(RH_OWNER, &[]);
                    r
                } else {
                    Err(TpmRc(code::ATTRIBUTES))
                };
                esys.tr_close(tr);
                let data = read.map_err(|rc| {
                    (
                        rc,
                        rc::to_error(&format!("read the EK certificate at NV index 0x{index:08x}"), rc),
                    )
                })?;
                return der_certificate(index, data).map_err(plain);
            }
            Err(plain(Error::not_found(format!(
                "this TPM holds no EK certificate: neither NV index 0x{EK_CERT_NV_ECC_P256:08x} (ECC P-256) nor 0x{EK_CERT_NV_RSA2048:08x} (RSA-2048) exists"
            ))))
        })
    }

    /// The public area (`TPMT_PUBLIC` marshalled, no size prefix) of the EK
    /// that matches [`TpmBackend::ek_certificate`]: the ECC P-256 EK if the
    /// ECC certificate's index exists, else the RSA-2048 EK, re-created
    /// from the TCG default EK template. Its public key is the
    /// certificate's subject public key (when the certificate is genuine).
    pub fn ek_public(&self) -> Result<Vec<u8>> {
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            let alg = selected_ek(&mut conn.esys)?;
            with_ek(conn, &self.config, alg, 0, |_, _, public| {
                public.marshall().map_err(|e| {
                    plain(Error::backend(
                        Component::Tpm,
                        "marshalling a public area failed",
                        e,
                    ))
                })
            })
        })
    }

    /// Creates an attestation key (see [`AttestationKey`]) under the
    /// selected EK (`TPM2_Create`, the EK authorised by
    /// `PolicySecret(TPM_RH_ENDORSEMENT)` with the endorsement auth of
    /// [`TpmConfig::with_endorsement_auth`], empty by default). Nothing is
    /// left loaded. A wrong endorsement auth is
    /// [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
    ///
    /// [`TpmConfig::with_endorsement_auth`]: crate::TpmConfig::with_endorsement_auth
    pub fn create_attestation_key(&self) -> Result<AttestationKey> {
        let template = templates::attestation_key()?;
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            let alg = selected_ek(&mut conn.esys)?;
            let (public, private) = with_ek(conn, &self.config, alg, 1, |esys, ek, _| {
                let s = ek_session(esys)?;
                let r = esys.create_child(ek, s, &template);
                let _ = esys.flush(s);
                r.map_err(fail("create the attestation key under the EK"))
            })?;
            AttestationKey::new(alg, public, private).map_err(plain)
        })
    }

    /// `TPM2_ActivateCredential`: loads `ak` under its EK and returns the
    /// credential (the `certInfo` secret, at most 32 bytes) if the blob was
    /// made (`TPM2_MakeCredential`) with this TPM's EK public key for the
    /// Name of `ak`. The credential comes back encrypted on the bus.
    ///
    /// - `credential_blob`: the `TPM2B_ID_OBJECT` buffer **without** its
    ///   u16 size prefix, i.e. `integrityHMAC` as a `TPM2B_DIGEST` (u16
    ///   size ‖ 32-byte HMAC) followed by `encIdentity` (the AES-128-CFB
    ///   encrypted `TPM2B_DIGEST` credential, its u16 size included); at
    ///   most 132 bytes.
    /// - `encrypted_secret`: the `TPM2B_ENCRYPTED_SECRET` buffer
    ///   **without** its u16 size prefix: for an RSA EK the 256-byte
    ///   RSA-OAEP (SHA-256, label `"IDENTITY\0"`) ciphertext of the seed; for
    ///   an ECC EK the marshalled `TPMS_ECC_POINT` (u16 size ‖ x ‖ u16 size
    ///   ‖ y) of the ephemeral key; at most 512 bytes.
    ///
    /// A blob made for another EK or another AK Name is
    /// [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity)
    /// (the TPM answers `TPM_RC_INTEGRITY`, or `TPM_RC_VALUE` /
    /// `TPM_RC_ECC_POINT` / `TPM_RC_SIZE` for a secret it cannot
    /// decrypt); empty or oversized inputs are
    /// [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput).
    pub fn activate_credential(
        &self,
        ak: &AttestationKey,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        for (what, v, max) in [
            ("credential blob (TPM2B_ID_OBJECT)", credential_blob, 132),
            (
                "encrypted secret (TPM2B_ENCRYPTED_SECRET)",
                encrypted_secret,
                512,
            ),
        ] {
            if v.is_empty() || v.len() > max {
                return Err(Error::invalid_input(format!(
                    "the {what} is {} bytes; it must be 1 to {max}",
                    v.len()
                )));
            }
        }
        let mut st = self.lock();
        let secret = self.with_conn(&mut st, |conn| {
            with_ek(conn, &self.config, ak.ek, 1, |esys, ek, _| {
                let ak_tr = load_ak(esys, ek, ak)?;
                let r = ek_session(esys).and_then(|s| {
                    let r =
                        esys.activate_credential(ak_tr, ek, s, credential_blob, encrypted_secret);
                    let _ = esys.flush(s);
                    r.map_err(|rc| (rc, activation_error(ak, rc)))
                });
                let _ = esys.flush(ak_tr);
                r
            })
        })?;
        Ok(secret.to_vec())
    }

    /// `TPM2_Certify` of the keystore key `key` (a handle of this backend)
    /// signed by `ak` with ECDSA-SHA256, `qualifying` (at most
    /// [`MAX_QUALIFYING_LEN`] bytes, else
    /// [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput))
    /// as `qualifyingData`, which the TPM copies into `extraData`.
    ///
    /// Returns `(attest, signature)`: `attest` is the marshalled
    /// `TPMS_ATTEST` (the `TPM2B_ATTEST` buffer without its size prefix;
    /// `type` = `TPM_ST_ATTEST_CERTIFY`, `attested.certify.name` = the
    /// key's Name, `nameAlg ‖ SHA-256(key_public_area)`), and `signature`
    /// the marshalled `TPMT_SIGNATURE` (`sigAlg` ECDSA, `hash` SHA-256,
    /// `r` and `s` as `TPM2B_ECC_PARAMETER`s) over SHA-256(`attest`) by the
    /// AK. The key is checked against the registry first (a destroyed or
    /// unknown key is [`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound)).
    pub fn certify(
        &self,
        ak: &AttestationKey,
        key: &KeyHandle,
        qualifying: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let (attest, sig, _) = self.certify_as(ak, key, handle_algorithm(key)?, qualifying)?;
        Ok((attest, sig))
    }

    /// [`TpmBackend::certify`] of a key that must be an `alg` key; also
    /// returns the key's public area.
    pub(crate) fn certify_as(
        &self,
        ak: &AttestationKey,
        key: &KeyHandle,
        alg: Algorithm,
        qualifying: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        if qualifying.len() > MAX_QUALIFYING_LEN {
            return Err(Error::invalid_input(format!(
                "qualifying data is {} bytes; TPM2_Certify takes at most {MAX_QUALIFYING_LEN}",
                qualifying.len()
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let (kblob, auth) = {
            let r = resolve_in(&mut st.registry, &mut st.resolved, key, alg)?;
            (r.blob.clone(), SecretBytes::from_slice(r.auth.expose()))
        };
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let (attest, sig) = self.with_conn(st, |conn| {
            // Room for the EK and the AK; the EK is flushed once the AK is
            // loaded, which leaves room for the key.
            let ak_tr = with_ek(conn, &self.config, ak.ek, 1, |esys, ek, _| {
                load_ak(esys, ek, ak)
            })?;
            let r = conn
                .key(key.as_bytes(), &kblob, auth.expose())
                .map_err(|rc| (rc, load_error(&kblob, rc)))
                .and_then(|key_tr| {
                    conn.esys
                        .certify(key_tr, ak_tr, qualifying, scheme)
                        .map_err(fail("certify the key with the attestation key"))
                });
            let _ = conn.esys.flush(ak_tr);
            r
        })?;
        let sig = sig
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a signature failed", e))?;
        Ok((attest, sig, kblob.public_area))
    }

    /// The public area (`TPMT_PUBLIC` marshalled, no size prefix) of the
    /// keystore key `key`, as registered (the TPM checks it against the
    /// private blob at every load). Its Name is `0x000B ‖ SHA-256(area)`.
    pub fn key_public_area(&self, key: &KeyHandle) -> Result<Vec<u8>> {
        let alg = handle_algorithm(key)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let r = resolve_in(&mut st.registry, &mut st.resolved, key, alg)?;
        Ok(r.blob.public_area.clone())
    }
}

/// The algorithm a handle names.
pub(crate) fn handle_algorithm(key: &KeyHandle) -> Result<Algorithm> {
    let (_, code) = blob::peek(key)?;
    Algorithm::from_code(code)
        .ok_or_else(|| Error::integrity("TPM key handle names an unknown algorithm"))
}

fn activation_error(ak: &AttestationKey, rc: TpmRc) -> Error {
    let refused = [
        code::INTEGRITY,
        code::VALUE,
        code::SIZE,
        code::ECC_POINT,
        code::NO_RESULT,
        code::INSUFFICIENT,
        code::KEY,
        code::SCHEME,
    ];
    if refused.iter().any(|c| rc.is(*c)) {
        Error::integrity(format!(
            "the credential was not made for this TPM's {:?} EK and the attestation key {}: TPM2_ActivateCredential refused it ({rc})",
            ak.ek,
            hex::encode(ak.name())
        ))
    } else {
        rc::to_error("activate a credential", rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_certificates_are_trimmed_to_their_length() {
        let mut cert = vec![0x30, 0x82, 0x00, 0x03, 1, 2, 3];
        cert.extend_from_slice(&[0xFF; 5]);
        assert_eq!(
            der_certificate(1, cert).unwrap(),
            [0x30, 0x82, 0, 3, 1, 2, 3]
        );
        assert_eq!(
            der_certificate(1, vec![0x30, 0x01, 9, 0]).unwrap(),
            [0x30, 1, 9]
        );
        assert!(der_certificate(1, vec![0x31, 0x01, 9]).is_err());
        assert!(der_certificate(1, vec![0x30, 0x82, 0x01]).is_err());
        assert!(der_certificate(1, vec![0x30, 0x05, 1]).is_err());
        assert!(der_certificate(1, vec![]).is_err());
    }
}

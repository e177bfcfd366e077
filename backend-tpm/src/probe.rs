//! Raw-level checks below the keystore API, for the conformance probe and
//! for operators. None of them can return key material: they report what
//! the TPM answered.
//!
//! - [`TpmBackend::read_public`]: the attributes the TPM reports
//!   (`TPM2_ReadPublic`) for a loaded key, and whether they match the blob.
//! - [`TpmBackend::try_duplicate`]: asks the TPM to export the key
//!   (`TPM2_Duplicate`, under a policy session that allows duplication).
//! - [`TpmBackend::try_duplicate_permissive_twin`]: the same for a throw-away
//!   key with our attributes but an `authPolicy` that *does* permit
//!   duplication, showing that `fixedParent` alone makes the TPM refuse.
//! - [`TpmBackend::try_use_without_auth`]: loads a blob directly and tries to
//!   use it with an empty auth value (after `destroy`, the auth is gone).
//! - [`TpmBackend::try_load`]: loads a blob directly (after an owner clear,
//!   the TPM refuses it).
//! - [`TpmBackend::loaded_handles`]: transient objects and sessions loaded in
//!   the TPM (a leak check; the backend's own parameter-encryption session,
//!   [`TpmBackend::parameter_encryption_session`], is not listed; behind a
//!   resource manager, this connection's objects only and no sessions).

use crate::blob::{self, Blob};
use crate::esys::Tr;
use crate::rc::TpmRc;
use crate::{templates, TpmBackend};
use keystore_backend::Component;
use keystore_backend::{Algorithm, Error, KeyHandle, Result};
use sha2::{Digest as _, Sha256};
use tss_esapi::constants::tss as c;
use tss_esapi::structures::Digest;
use tss_esapi::traits::Marshall;

/// Object attributes as the TPM reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// The raw `TPMA_OBJECT` bits.
    pub raw: u32,
    /// `fixedTPM`: the object cannot be duplicated to another TPM.
    pub fixed_tpm: bool,
    /// `fixedParent`: the object cannot be duplicated at all.
    pub fixed_parent: bool,
    /// `sensitiveDataOrigin`: the TPM generated the secret.
    pub sensitive_data_origin: bool,
    /// `userWithAuth`: use is authorised by the auth value.
    pub user_with_auth: bool,
    /// `noDA`: exempt from dictionary-attack lockout.
    pub no_da: bool,
    /// `sign`.
    pub sign: bool,
    /// `decrypt`.
    pub decrypt: bool,
    /// `restricted`.
    pub restricted: bool,
}

impl Attributes {
    fn from_raw(raw: u32) -> Attributes {
        let bit = |n: u32| raw & (1 << n) != 0;
        Attributes {
            raw,
            fixed_tpm: bit(1),
            fixed_parent: bit(4),
            sensitive_data_origin: bit(5),
            user_with_auth: bit(6),
            no_da: bit(10),
            restricted: bit(16),
            decrypt: bit(17),
            sign: bit(18),
        }
    }
}

/// What `TPM2_ReadPublic` reported for a loaded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPublic {
    /// The attributes.
    pub attributes: Attributes,
    /// The TPM's Name for the object.
    pub name: Vec<u8>,
    /// True if the TPM's public area is byte-for-byte the stored one.
    pub matches_blob: bool,
}

/// What the TPM answered to a request it should refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The TPM refused, with this response code.
    Refused(TpmRc),
    /// The TPM complied (a leak, or a use that should have been impossible).
    Complied,
}

impl Attempt {
    fn of<T>(r: std::result::Result<T, TpmRc>) -> Attempt {
        match r {
            Ok(_) => Attempt::Complied,
            Err(rc) => Attempt::Refused(rc),
        }
    }
}

fn tpm_err(what: &str, rc: TpmRc) -> Error {
    Error::backend(Component::Tpm, format!("probe: cannot {what}"), rc)
}

impl TpmBackend {
    /// `TPM2_ReadPublic` on the loaded key of `handle`.
    pub fn read_public(&self, handle: &KeyHandle) -> Result<ReadPublic> {
        let mut st = self.lock();
        let alg = handle_alg(handle)?;
        let (blob, auth) = st.resolve(handle, alg)?;
        let conn = st.connect(&self.config)?;
        let (public, name) = conn
            .with_transient(&blob, auth.expose(), |esys, tr| esys.read_public(tr))
            .map_err(|rc| tpm_err("read the public area", rc))?;
        let area = public
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
        Ok(ReadPublic {
            attributes: Attributes::from_raw(public.object_attributes().into()),
            matches_blob: area == blob.public_area && name == blob::name(&area),
            name,
        })
    }

    /// Asks the TPM to duplicate (export) the key of `handle`, under a
    /// policy session satisfying `TPM2_PolicyCommandCode(TPM2_CC_Duplicate)`.
    pub fn try_duplicate(&self, handle: &KeyHandle) -> Result<Attempt> {
        let mut st = self.lock();
        let alg = handle_alg(handle)?;
        let (blob, auth) = st.resolve(handle, alg)?;
        let conn = st.connect(&self.config)?;
        conn.with_transient(&blob, auth.expose(), duplicate)
            .map_err(|rc| tpm_err("load the key or start a policy session", rc))
    }

    /// Creates a throw-away key of `alg` with the same attributes as ours
    /// (`fixedTPM | fixedParent`) but an `authPolicy` that permits
    /// duplication, and asks the TPM to duplicate it. The TPM must refuse
    /// on the attributes alone (`TPM_RC_ATTRIBUTES`).
    pub fn try_duplicate_permissive_twin(&self, alg: Algorithm) -> Result<Attempt> {
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        // The policy digest of PolicyCommandCode(Duplicate), from a trial session.
        let trial = conn
            .esys
            .start_policy_session(true)
            .map_err(|rc| tpm_err("start a trial session", rc))?;
        let digest = conn
            .esys
            .policy_command_code(trial, c::TPM2_CC_Duplicate)
            .and_then(|()| conn.esys.policy_get_digest(trial));
        let _ = conn.esys.flush(trial);
        let digest = digest.map_err(|rc| tpm_err("compute a policy digest", rc))?;
        let policy = Digest::try_from(digest)
            .map_err(|e| Error::backend(Component::Tpm, "policy digest too long", e))?;
        let template = templates::key(alg, true, policy)?;
        let (public, private) = conn
            .create(&template, &[], &[])
            .map_err(|rc| tpm_err("create the twin", rc))?;
        let area = public
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
        let twin = Blob {
            id: [0; blob::ID_LEN],
            alg,
            public,
            private,
            public_area: area,
        };
        conn.with_transient(&twin, &[], duplicate)
            .map_err(|rc| tpm_err("load the twin or start a policy session", rc))
    }

    /// Loads the blob of `handle` directly (no registry check) and tries to
    /// use it with an empty auth value: the check that a destroyed key's
    /// blob is useless. Returns the TPM's answer to the use, or to the load
    /// if the TPM refused the blob itself.
    pub fn try_use_without_auth(&self, handle: &KeyHandle) -> Result<Attempt> {
        let blob = blob::parse(handle)?;
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        let digest = Sha256::digest(b"probe");
        let alg = blob.alg;
        let res = conn.with_transient(&blob, &[], |esys, tr| match alg {
            Algorithm::HmacSha256 => esys.hmac(tr, b"probe", false).map(|_| ()),
            Algorithm::EcdhP256 => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                let g = p256::AffinePoint::GENERATOR.to_encoded_point(false);
                let (x, y) = g.as_bytes()[1..].split_at(32);
                esys.ecdh_zgen(tr, x, y, 32).map(|_| ())
            }
            a => esys
                .sign(tr, &digest, templates::signature_scheme(a))
                .map(|_| ()),
        });
        Ok(Attempt::of(res))
    }

    /// Loads the blob of `handle` directly (no registry check) and flushes
    /// it: whether this TPM, under its current owner seed, accepts the blob.
    pub fn try_load(&self, handle: &KeyHandle) -> Result<Attempt> {
        let blob = blob::parse(handle)?;
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        Ok(Attempt::of(conn.with_transient(&blob, &[], |_, _| Ok(()))))
    }

    /// The TPM handles of loaded transient objects and loaded sessions,
    /// leaving out this backend's own parameter-encryption session (see
    /// [`TpmBackend::parameter_encryption_session`]): any session listed is
    /// one that something started and did not flush.
    ///
    /// On a direct TCTI (swtpm, `/dev/tpm0`) this is the whole TPM. Behind a
    /// resource manager (`/dev/tpmrm0`, tpm2-abrmd) the objects are this
    /// connection's own, under the manager's virtual handles (the primary
    /// and the LRU's keys: still `1 + cached_keys()`), but the session list
    /// is empty whatever this connection holds: the manager context-saves
    /// every session after each command and does not virtualise the session
    /// query, so the TPM reports none loaded. A session-leak check is only
    /// meaningful on a direct TCTI.
    pub fn loaded_handles(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        let own = conn.esys.encryption_session_handle();
        let objects = conn
            .esys
            .handles(c::TPM2_TRANSIENT_FIRST)
            .map_err(|rc| tpm_err("list transient objects", rc))?;
        let sessions = conn
            .esys
            .handles(c::TPM2_LOADED_SESSION_FIRST)
            .map_err(|rc| tpm_err("list sessions", rc))?
            .into_iter()
            .filter(|h| Some(*h) != own)
            .collect();
        Ok((objects, sessions))
    }

    /// The TPM handle of the backend's parameter-encryption session (the
    /// salted HMAC session that encrypts secrets on the bus), if the live
    /// connection has one.
    pub fn parameter_encryption_session(&self) -> Result<Option<u32>> {
        let mut st = self.lock();
        let conn = st.connect(&self.config)?;
        Ok(conn.esys.encryption_session_handle())
    }

    /// How many keys the backend's LRU holds loaded right now.
    pub fn cached_keys(&self) -> usize {
        self.lock().conn.as_ref().map_or(0, |c| c.cached())
    }

    /// How many handles the backend's resolved-handle cache holds (at most
    /// [`crate::RESOLVED_CACHE_CAPACITY`]).
    pub fn resolved_handles(&self) -> usize {
        self.lock().resolved.len()
    }
}

fn handle_alg(handle: &KeyHandle) -> Result<Algorithm> {
    let (_, code) = blob::peek(handle)?;
    Algorithm::from_code(code)
        .ok_or_else(|| Error::integrity("TPM key handle names an unknown algorithm"))
}

/// Duplicate `tr` under a policy session allowing `TPM2_Duplicate`; the
/// session is flushed whatever happens. Failing to set the session up is an
/// error, not a refusal.
fn duplicate(esys: &mut crate::esys::Esys, tr: Tr) -> std::result::Result<Attempt, TpmRc> {
    let session = esys.start_policy_session(false)?;
    let res = esys
        .policy_command_code(session, c::TPM2_CC_Duplicate)
        .map(|()| esys.duplicate(tr, session));
    let _ = esys.flush(session);
    Ok(match res? {
        Ok(true) => Attempt::Complied,
        Ok(false) => Attempt::Refused(TpmRc::LOCAL_BAD_VALUE),
        Err(rc) => Attempt::Refused(rc),
    })
}

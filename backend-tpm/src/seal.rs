//! A TPM-sealed key-encryption key for the soft store
//! ([`backend_soft::KekProvider`]), so that TPM-only devices get AES-GCM
//! keys whose protection is the TPM.
//!
//! The KEK is 32 random bytes from the TPM's RNG, sealed in a keyed-hash
//! *data* object (NULL scheme, no sign/decrypt) under the storage primary:
//! `fixedTPM | fixedParent | noDA`, no auth value, and either
//! `userWithAuth` or, when bound to PCRs, an `authPolicy` of
//! `TPM2_PolicyPCR` over the chosen SHA-256 PCRs (then only a policy
//! session whose PCR values match can unseal it).
//!
//! Sealed form kept in the soft store header:
//! ```text
//! "KTSEAL" | format = 1 | PCR mask (u32 BE, SHA-256 bank; 0 = not bound)
//! | TPM2B_PUBLIC | TPM2B_PRIVATE
//! ```
//! Unsealing needs this TPM, its current owner seed (an owner clear makes
//! the blob unloadable), the owner auth (to re-create the primary) and, if
//! bound, the same PCR values. Each call opens its own connection and closes
//! it, so a sealed soft store does not hold the TPM.
//!
//! The provider also offers the TPM's NV counters (the `counter_*` methods
//! of [`KekProvider`], the same code as `TpmBackend`'s `MonotonicCounter`,
//! see `counter.rs`), so a sealed soft store has a rollback counter.

use crate::blob::Blob;
use crate::config::TpmConfig;
use crate::conn::{Conn, OpenError};
use crate::counter;
use crate::esys::{marshal_public, pcr_selection, unmarshal_public};
use crate::rc::{self, TpmRc};
use crate::templates;
use backend_soft::KekProvider;
use keystore_backend::{Component, CounterRef, Error, Result, SecretBytes};
use tss_esapi::constants::tss as c;
use tss_esapi::structures::{Digest, Private};
use tss_esapi::traits::Marshall;

const MAGIC: &[u8; 6] = b"KTSEAL";
const FORMAT: u8 = 1;
/// The provider kind recorded in the soft store header.
pub const KIND: &str = "tpm2-sealed";

/// PCRs of the SHA-256 bank that a sealed KEK is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcrBinding {
    mask: u32,
}

impl PcrBinding {
    /// Binds to the SHA-256 PCRs `pcrs` (each 0..=23, at least one).
    pub fn sha256(pcrs: &[u8]) -> Result<PcrBinding> {
        let mut mask = 0u32;
        for &p in pcrs {
            if p > 23 {
                return Err(Error::invalid_input(format!(
                    "PCR {p} does not exist (0..=23)"
                )));
            }
            mask |= 1 << p;
        }
        if mask == 0 {
            return Err(Error::invalid_input("a PCR binding needs at least one PCR"));
        }
        Ok(PcrBinding { mask })
    }

    /// The bound PCR indices.
    pub fn pcrs(&self) -> Vec<u8> {
        (0..24).filter(|i| self.mask & (1 << i) != 0).collect()
    }
}

/// The TPM-sealed KEK provider.
pub struct TpmSealedKek {
    config: TpmConfig,
    pcrs: Option<PcrBinding>,
}

impl std::fmt::Debug for TpmSealedKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSealedKek")
            .field("tcti", &self.config.tcti())
            .field("owner_auth", &"[REDACTED]")
            .field("pcrs", &self.pcrs.map(|p| p.pcrs()))
            .finish()
    }
}

impl TpmSealedKek {
    /// A provider that seals with the TPM `config` names.
    pub fn new(config: TpmConfig) -> TpmSealedKek {
        TpmSealedKek { config, pcrs: None }
    }

    /// Binds KEKs sealed from now on to the current values of `pcrs`.
    /// (Unsealing follows the binding recorded in each sealed form.)
    pub fn bound_to(mut self, pcrs: PcrBinding) -> TpmSealedKek {
        self.pcrs = Some(pcrs);
        self
    }

    fn connect(&self) -> Result<Conn> {
        self.connect_to("unseal the store key")
    }

    /// A connection of its own, to do `what` (named in a connect failure).
    fn connect_to(&self, what: &str) -> Result<Conn> {
        Conn::open(&self.config).map_err(|e| match e {
            OpenError::Connect(rc) => Error::backend(
                Component::Tpm,
                format!(
                    "cannot connect to the TPM through TCTI '{}' to {what}",
                    self.config.tcti()
                ),
                rc,
            ),
            OpenError::OwnerAuth(rc) => Error::auth(format!(
                "the TPM owner hierarchy refused its auth value ({rc})"
            )),
            OpenError::Tpm(what, rc) => rc::to_error(what, rc),
        })
    }
}

/// The policy digest of `TPM2_PolicyPCR` over the current values of `mask`.
fn pcr_policy(conn: &mut Conn, mask: u32) -> std::result::Result<Vec<u8>, TpmRc> {
    let trial = conn.esys.start_policy_session(true)?;
    let sel = pcr_selection(c::TPM2_ALG_SHA256, mask);
    let digest = conn
        .esys
        .policy_pcr(trial, &sel)
        .and_then(|()| conn.esys.policy_get_digest(trial));
    let _ = conn.esys.flush(trial);
    digest
}

impl KekProvider for TpmSealedKek {
    fn kind(&self) -> &str {
        KIND
    }

    fn create(&self) -> Result<(SecretBytes, Vec<u8>)> {
        let mut conn = self.connect()?;
        let kek = conn
            .esys
            .get_random(32)
            .map_err(|rc| rc::to_error("draw a KEK from the TPM's RNG", rc))?;
        let mask = self.pcrs.map_or(0, |p| p.mask);
        let policy = if mask == 0 {
            None
        } else {
            let d = pcr_policy(&mut conn, mask)
                .map_err(|rc| rc::to_error("compute the PCR policy", rc))?;
            Some(
                Digest::try_from(d)
                    .map_err(|e| Error::backend(Component::Tpm, "policy digest", e))?,
            )
        };
        let template = templates::sealed_data(policy)?;
        let (public, private) = conn
            .create(&template, &[], &kek)
            .map_err(|rc| rc::to_error("seal the KEK", rc))?;
        let mut blob = Vec::with_capacity(512);
        blob.extend_from_slice(MAGIC);
        blob.push(FORMAT);
        blob.extend_from_slice(&mask.to_be_bytes());
        blob.extend(marshal_public(&public).map_err(|rc| {
            Error::backend(Component::Tpm, "marshalling a public area failed", rc)
        })?);
        blob.extend_from_slice(&(private.len() as u16).to_be_bytes());
        blob.extend_from_slice(private.value());
        Ok((SecretBytes::from_slice(&kek), blob))
    }

    fn unseal(&self, sealed: &[u8]) -> Result<SecretBytes> {
        let (mask, blob) = parse(sealed)?;
        let mut conn = self.connect()?;
        let out = conn.with_transient(&blob, &[], |esys, tr| {
            if mask == 0 {
                return esys.unseal(tr, None);
            }
            let session = esys.start_policy_session(false)?;
            let sel = pcr_selection(c::TPM2_ALG_SHA256, mask);
            let res = esys
                .policy_pcr(session, &sel)
                .and_then(|()| esys.unseal(tr, Some(session)));
            let _ = esys.flush(session);
            res
        });
        match out {
            Ok(kek) => Ok(SecretBytes::from_slice(&kek)),
            Err(rc) if rc::is_blob_rejection(rc) => Err(Error::auth(format!(
                "this TPM cannot load the sealed store key ({rc}): the TPM was cleared since, or it is another TPM"
            ))),
            Err(rc) if rc.is_auth() => Err(Error::auth(format!(
                "the TPM refused to unseal the store key ({rc}): the bound PCR values have changed"
            ))),
            Err(rc) => Err(rc::to_error("unseal the store key", rc)),
        }
    }

    /// A TPM NV counter, as [`TpmBackend`](crate::TpmBackend)'s
    /// `MonotonicCounter` (see `counter.rs`), on a connection of its own.
    fn counter_create(&self) -> Result<(CounterRef, u64)> {
        let mut conn = self.connect_to("define a monotonic counter")?;
        counter::create(&mut conn.esys, self.config.owner_auth()).map_err(|(_, e)| e)
    }

    fn counter_read(&self, reference: &[u8]) -> Result<u64> {
        let index = counter::index_of(reference)?;
        let mut conn = self.connect_to("read a monotonic counter")?;
        counter::read(&mut conn.esys, index).map_err(|(_, e)| e)
    }

    fn counter_increment(&self, reference: &[u8]) -> Result<u64> {
        let index = counter::index_of(reference)?;
        let mut conn = self.connect_to("increment a monotonic counter")?;
        counter::increment(&mut conn.esys, self.config.owner_auth(), index).map_err(|(_, e)| e)
    }

    fn counter_destroy(&self, reference: &[u8]) -> Result<()> {
        let index = counter::index_of(reference)?;
        let mut conn = self.connect_to("destroy a monotonic counter")?;
        counter::destroy(&mut conn.esys, self.config.owner_auth(), index).map_err(|(_, e)| e)
    }

    fn counter_describe(&self, reference: &[u8]) -> String {
        counter::describe(reference)
    }
}

fn parse(sealed: &[u8]) -> Result<(u32, Blob)> {
    let bad = |what: &str| Error::integrity(format!("the TPM-sealed KEK is damaged: {what}"));
    if sealed.len() < 11 || &sealed[..6] != MAGIC || sealed[6] != FORMAT {
        return Err(bad("not a TPM-sealed KEK"));
    }
    let mask = u32::from_be_bytes([sealed[7], sealed[8], sealed[9], sealed[10]]);
    let mut rest = &sealed[11..];
    let mut take = || -> Option<&[u8]> {
        if rest.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + n {
            return None;
        }
        let (body, tail) = rest[2..].split_at(n);
        rest = tail;
        Some(body)
    };
    let area = take().ok_or_else(|| bad("public area truncated"))?;
    let private = take().ok_or_else(|| bad("private area truncated"))?;
    let public = unmarshal_public(area).ok_or_else(|| bad("public area does not parse"))?;
    let private = Private::try_from(private).map_err(|_| bad("private area too large"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let public_area = public
        .marshall()
        .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
    Ok((
        mask,
        Blob {
            id: [0; crate::blob::ID_LEN],
            alg: keystore_backend::Algorithm::HmacSha256,
            public,
            private,
            public_area,
        },
    ))
}

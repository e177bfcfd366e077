//! Running TPM commands on the store's keys: the connection slot (re-opened
//! once when lost), handle resolution against the registry and its cache,
//! key creation, and the mapping of open and load failures to errors.

use crate::blob::{self, Blob, KeyId};
use crate::conn::{self, Conn, OpenError};
use crate::esys::Tr;
use crate::rc::{self, TpmRc};
use crate::registry::{self, Entry, Lookup, Registry};
use crate::resolved::{Resolved, ResolvedCache};
use crate::{State, TpmBackend, TpmConfig, OWNER_AUTH_ENV, OWNER_AUTH_FILE_ENV};
use keystore_backend::{
    limits, Algorithm, Component, Error, ErrorKind, KeyHandle, Result, SecretBytes,
};
use tss_esapi::structures::Public;
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

/// The live connection in `slot`, opening one if the last was lost.
pub(crate) fn connect_slot<'a>(
    slot: &'a mut Option<Conn>,
    config: &TpmConfig,
) -> Result<&'a mut Conn> {
    if slot.is_none() {
        *slot = Some(Conn::open(config).map_err(|e| open_error(config, e))?);
    }
    match slot.as_mut() {
        Some(c) => Ok(c),
        None => Err(Error::backend_msg(Component::Tpm, "no TPM connection")),
    }
}

/// Forgets the broken connection in `slot` without talking to the TPM.
pub(crate) fn disconnect_slot(slot: &mut Option<Conn>) {
    if let Some(mut c) = slot.take() {
        c.mark_dead();
    }
}

/// Checks `handle` against `registry`: a live key of `alg` whose public
/// area is the one registered under its id. A handle whose exact bytes
/// passed this check since the registry last changed is answered from
/// `cache`; anything else is checked from scratch, and cached if it passes.
/// Either way the key's entry file is first checked on disk
/// ([`Registry::sync_id`]: one `stat` in the steady state).
pub(crate) fn resolve_in<'c>(
    registry: &mut Registry,
    cache: &'c mut ResolvedCache,
    handle: &KeyHandle,
    alg: Algorithm,
) -> Result<&'c Resolved> {
    let bytes = handle.as_bytes();
    // Another process may have destroyed the key (its entry file is gone:
    // the entry is dropped and the generation bumped, which empties the
    // cache) or created it (not known here yet: read from disk).
    let (id, _) = blob::peek(handle)?;
    registry.sync_id(&id)?;
    let generation = registry.generation();
    let i = match cache.find(bytes, generation) {
        Some(i) => i,
        None => {
            let (blob, auth) = resolve_uncached(registry, handle)?;
            cache.insert(bytes, generation, blob, auth)
        }
    };
    let r = cache.get(i).ok_or_else(|| {
        Error::backend_msg(Component::Tpm, "the resolved-handle cache lost an entry")
    })?;
    if r.blob.alg != alg {
        return Err(Error::integrity(format!(
            "TPM key {} holds a {} key, not {alg}",
            hex::encode(r.blob.id),
            r.blob.alg
        )));
    }
    Ok(r)
}

/// The full check behind [`resolve_in`], with no cache: the registry entry
/// of the handle's id, the blob parsed, its Name compared with the entry's.
fn resolve_uncached(registry: &Registry, handle: &KeyHandle) -> Result<(Blob, SecretBytes)> {
    let (id, _) = blob::peek(handle)?;
    let entry = match registry.get(&id) {
        Lookup::Live(e) => e,
        Lookup::Damaged => return Err(registry::damaged_error(&id)),
        Lookup::Absent => {
            return Err(Error::not_found(format!(
                "TPM key {} does not exist (never made here, or destroyed)",
                hex::encode(id)
            )))
        }
    };
    let blob = blob::parse(handle)?;
    if blob.alg.code() != entry.alg_code || blob::name(&blob.public_area) != entry.name {
        return Err(Error::integrity(format!(
            "the stored blob of TPM key {} is not the key registered under this id (swapped or altered)",
            hex::encode(id)
        )));
    }
    Ok((blob, SecretBytes::from_slice(entry.auth.expose())))
}

pub(crate) fn open_error(config: &TpmConfig, e: OpenError) -> Error {
    match e {
        OpenError::Connect(rc) => Error::backend(
            Component::Tpm,
            format!(
                "cannot connect to the TPM through TCTI '{}' (is the TPM present, or the simulator running?)",
                config.tcti()
            ),
            rc,
        ),
        OpenError::OwnerAuth(rc) => Error::auth(format!(
            "the TPM owner hierarchy refused its auth value ({rc}); check {OWNER_AUTH_ENV} or {OWNER_AUTH_FILE_ENV}"
        )),
        OpenError::Tpm(what, rc) => rc::to_error(what, rc),
    }
}

/// A `TPM2_Load` failure on a stored blob.
pub(crate) fn load_error(blob: &Blob, rc: TpmRc) -> Error {
    if rc::is_blob_rejection(rc) {
        Error::integrity(format!(
            "the TPM rejected the stored blob of key {} ({rc}): corrupted, truncated, or made before an owner clear",
            hex::encode(blob.id)
        ))
    } else {
        rc::to_error("load a key", rc)
    }
}

impl TpmBackend {
    /// HMAC-SHA256 of `data` (named `what` in errors) with the key
    /// `handle`; a `secret` result is encrypted on the bus.
    pub(crate) fn hmac(
        &self,
        handle: &KeyHandle,
        what: &str,
        data: &[u8],
        secret: bool,
    ) -> Result<Zeroizing<[u8; 32]>> {
        if data.len() > limits::MAX_DATA_LEN {
            return Err(Error::invalid_input(format!(
                "{what} is {} bytes; the limit is {}",
                data.len(),
                limits::MAX_DATA_LEN
            )));
        }
        self.run(
            handle,
            Algorithm::HmacSha256,
            "compute an HMAC",
            |conn, key| conn.hmac(key, data, secret),
        )
    }

    /// Runs `op` on the loaded key of `handle`, re-opening the connection
    /// once if it was lost (a TPM or simulator restart).
    pub(crate) fn run<T>(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        what: &str,
        mut op: impl FnMut(&mut Conn, Tr) -> std::result::Result<T, TpmRc>,
    ) -> Result<T> {
        let mut guard = self.lock();
        // Borrow the fields apart: the resolved entry stays borrowed from
        // the cache while the connection is used.
        let State {
            conn: slot,
            registry,
            resolved,
        } = &mut *guard;
        let r = match resolve_in(registry, resolved, handle, alg) {
            Ok(r) => r,
            Err(e) => {
                // A key destroyed by another process may still be loaded
                // here: free its slot.
                if let (true, Ok((id, _)), Some(conn)) =
                    (e.is(ErrorKind::NotFound), blob::peek(handle), slot.as_mut())
                {
                    conn.evict(&id);
                }
                return Err(e);
            }
        };
        let mut rejected = None;
        for attempt in 1..=2 {
            let conn = connect_slot(slot, &self.config)?;
            let res = match conn.key(handle.as_bytes(), &r.blob, r.auth.expose()) {
                Err(rc) => Err((rc, true)),
                Ok(key) => op(conn, key).map_err(|rc| (rc, false)),
            };
            match res {
                Ok(v) => return Ok(v),
                Err((rc, _)) if attempt == 1 && conn::is_connection_lost(rc) => {
                    disconnect_slot(slot)
                }
                Err((rc, true)) => {
                    rejected = Some((load_error(&r.blob, rc), rc::is_blob_rejection(rc)));
                    break;
                }
                Err((rc, false)) => return Err(rc::to_error(what, rc)),
            }
        }
        match rejected {
            Some((e, drop_entry)) => {
                // A blob the TPM refuses is not worth keeping parsed.
                if drop_entry {
                    resolved.remove(handle.as_bytes());
                }
                Err(e)
            }
            None => Err(Error::backend_msg(
                Component::Tpm,
                "the TPM connection was lost twice",
            )),
        }
    }

    /// Creates a key from `template` (with `data` as its secret when
    /// imported) and records it in the registry.
    pub(crate) fn create_key(
        &self,
        alg: Algorithm,
        template: &Public,
        data: &[u8],
    ) -> Result<(KeyHandle, Public)> {
        let mut st = self.lock();
        let mut made = None;
        for attempt in 1..=2 {
            let conn = st.connect(&self.config)?;
            let res = conn.esys.get_random(48).and_then(|rnd| {
                let (auth, id) = rnd.split_at(32);
                let (public, private) = conn.create(template, auth, data)?;
                Ok((SecretBytes::from_slice(auth), id.to_vec(), public, private))
            });
            match res {
                Ok(v) => {
                    made = Some(v);
                    break;
                }
                Err(rc) if attempt == 1 && conn::is_connection_lost(rc) => st.disconnect(),
                Err(rc) => return Err(rc::to_error(&format!("create a {alg} key"), rc)),
            }
        }
        let (auth, id, public, private) = made.ok_or_else(|| {
            Error::backend_msg(Component::Tpm, "the TPM connection was lost twice")
        })?;
        let id: KeyId = id.as_slice().try_into().map_err(|_| {
            Error::backend_msg(Component::Tpm, "the TPM returned too few random bytes")
        })?;
        let handle = blob::encode(&id, alg, &public, &private)?;
        let area = public
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a public area failed", e))?;
        let entry = Entry {
            alg_code: alg.code(),
            name: blob::name(&area),
            auth,
            handle: handle.clone(),
        };
        st.registry.insert(id, entry, &id)?;
        Ok((handle, public))
    }
}

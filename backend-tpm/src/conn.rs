//! One live connection: the ESYS context, the storage primary loaded once,
//! and a small LRU of loaded keys that never exceeds the TPM's transient
//! object slots.
//!
//! Slot accounting (swtpm and the PC Client minimum: 3 transient objects):
//! the primary holds one slot for the connection's lifetime; cached keys
//! hold the rest; an operation that needs one more object (an HMAC
//! sequence) first evicts least-recently-used keys. Everything loaded is
//! flushed on eviction and on drop, so a closed connection leaves the TPM
//! empty (swtpm and `/dev/tpm0` have no resource manager to do it for us).
//! Behind a resource manager (`/dev/tpmrm0`, tpm2-abrmd) the same accounting
//! holds per connection: the manager reports the TPM's slot count and
//! swaps each connection's objects in for its commands.
//!
//! Session accounting (swtpm: 3 loaded sessions): the connection holds one
//! session for its lifetime, the salted parameter-encryption session (see
//! [`crate::esys`]), started right after the primary at open and flushed on
//! drop; the only other sessions are the policy sessions of an unseal or a
//! probe, one at a time, flushed by their callers. After a TPM reset the
//! session is gone with the primary; the first command that names it fails
//! with `TPM_RC_REFERENCE_*` ([`is_connection_lost`]) and the connection,
//! session included, is re-opened once.
//!
//! Loaded keys are found by the exact bytes of their handle (compared in
//! full; the LRU holds at most `slots - 1` entries, so a linear scan is the
//! cheapest lookup): a tampered handle never hits an entry loaded from the
//! genuine one.

use crate::blob::{Blob, KeyId};
use crate::config::TpmConfig;
use crate::esys::{self, Esys, Tr, MAX_BUFFER, RH_OWNER};
use crate::rc::{code, TpmRc};
use crate::templates;
use tss_esapi::constants::tss as c;
use tss_esapi::structures::Public;
use zeroize::Zeroizing;

/// A loaded key.
struct Cached {
    /// The whole handle the key was loaded from, compared byte for byte.
    handle: Box<[u8]>,
    id: KeyId,
    tr: Tr,
    last_used: u64,
}

/// Why opening a connection failed.
pub(crate) enum OpenError {
    /// The TCTI could not be initialised (no device, simulator not running).
    Connect(TpmRc),
    /// The owner hierarchy refused its auth value.
    OwnerAuth(TpmRc),
    /// Any other TPM failure.
    Tpm(&'static str, TpmRc),
}

/// An open connection with its storage primary.
pub(crate) struct Conn {
    pub esys: Esys,
    pub primary: Tr,
    pub primary_public: Public,
    cache: Vec<Cached>,
    tick: u64,
    /// Transient objects this connection may hold at once, primary included.
    slots: usize,
    /// Largest data chunk per TPM2_HMAC / TPM2_SequenceUpdate.
    pub chunk: usize,
    /// Set after a transport failure: nothing more is sent on drop.
    dead: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("cached", &self.cache.len())
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects, flushes objects and sessions that an earlier connection
    /// left loaded, and re-creates the storage primary from its template
    /// (authorised by the owner hierarchy auth).
    pub(crate) fn open(cfg: &TpmConfig) -> Result<Conn, OpenError> {
        let mut esys = Esys::connect(cfg.tcti()).map_err(OpenError::Connect)?;
        if !behind_resource_manager(cfg.tcti()) {
            flush_leftovers(&mut esys);
        }
        let slots = esys
            .property(c::TPM2_PT_HR_TRANSIENT_MIN)
            .ok()
            .flatten()
            .map(|v| v as usize)
            .unwrap_or(3)
            .clamp(2, 64);
        let chunk = esys
            .property(c::TPM2_PT_INPUT_BUFFER)
            .ok()
            .flatten()
            .map(|v| v as usize)
            .unwrap_or(MAX_BUFFER)
            .clamp(64, MAX_BUFFER);
        esys.set_auth(RH_OWNER, cfg.owner_auth())
            .map_err(|rc| OpenError::Tpm("set the owner auth", rc))?;
        let template = templates::storage_primary()
            .map_err(|_| OpenError::Tpm("build the primary template", TpmRc::LOCAL_BAD_VALUE))?;
        let (primary, primary_public) = esys.create_primary(RH_OWNER, &template).map_err(|rc| {
            if rc.is_auth() {
                OpenError::OwnerAuth(rc)
            } else {
                OpenError::Tpm("create the storage primary", rc)
            }
        })?;
        // The owner auth is not needed again on this connection.
        let _ = esys.set_auth(RH_OWNER, &[]);
        let mut conn = Conn {
            esys,
            primary,
            primary_public,
            cache: Vec::new(),
            tick: 0,
            slots,
            chunk,
            dead: false,
        };
        // The parameter-encryption session, salted with the primary. On
        // failure `conn` drops and flushes the primary.
        if esys::parameter_encryption_enabled() {
            conn.esys
                .start_encryption_session(conn.primary)
                .map_err(|rc| OpenError::Tpm("start the parameter-encryption session", rc))?;
        }
        Ok(conn)
    }

    /// Marks the connection broken: drop will not talk to the TPM.
    pub(crate) fn mark_dead(&mut self) {
        self.dead = true;
    }

    /// The loaded object for `blob`, from the cache or freshly loaded under
    /// the primary with `auth` set for password sessions.
    pub(crate) fn key(&mut self, handle: &[u8], blob: &Blob, auth: &[u8]) -> Result<Tr, TpmRc> {
        self.tick += 1;
        if let Some(e) = self.cache.iter_mut().find(|e| *e.handle == *handle) {
            e.last_used = self.tick;
            return Ok(e.tr);
        }
        self.make_room(1, None);
        let tr = self.esys.load(self.primary, &blob.public, &blob.private)?;
        if let Err(rc) = self.esys.set_auth(tr, auth) {
            let _ = self.esys.flush(tr);
            return Err(rc);
        }
        self.cache.push(Cached {
            handle: handle.into(),
            id: blob.id,
            tr,
            last_used: self.tick,
        });
        Ok(tr)
    }

    /// Evicts least-recently-used keys (never `keep`) until `extra` more
    /// objects fit beside the primary and the cache.
    pub(crate) fn make_room(&mut self, extra: usize, keep: Option<Tr>) {
        while 1 + self.cache.len() + extra > self.slots {
            let victim = self
                .cache
                .iter()
                .enumerate()
                .filter(|(_, e)| Some(e.tr) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            let e = self.cache.swap_remove(i);
            let _ = self.esys.flush(e.tr);
        }
    }

    /// Flushes every loaded copy of key `id`.
    pub(crate) fn evict(&mut self, id: &KeyId) {
        let mut i = 0;
        while i < self.cache.len() {
            if self.cache[i].id == *id {
                let e = self.cache.swap_remove(i);
                let _ = self.esys.flush(e.tr);
            } else {
                i += 1;
            }
        }
    }

    /// Flushes every cached key (the primary stays).
    pub(crate) fn evict_all(&mut self) {
        for e in std::mem::take(&mut self.cache) {
            let _ = self.esys.flush(e.tr);
        }
    }

    /// HMAC-SHA256 of `data` with the loaded key `key`: one `TPM2_HMAC` for
    /// short data, else an HMAC sequence fed in TPM-sized chunks.
    /// A `secret` result (an HKDF PRK) is encrypted on the bus.
    pub(crate) fn hmac(
        &mut self,
        key: Tr,
        data: &[u8],
        secret: bool,
    ) -> Result<Zeroizing<[u8; 32]>, TpmRc> {
        if data.len() <= self.chunk {
            return self.esys.hmac(key, data, secret);
        }
        // The sequence object takes a transient slot of its own.
        self.make_room(1, Some(key));
        let seq = self.esys.hmac_start(key)?;
        let last_len = (data.len() - 1) % self.chunk + 1;
        let (body, last) = data.split_at(data.len() - last_len);
        let fed = body
            .chunks(self.chunk)
            .try_for_each(|c| self.esys.sequence_update(seq, c));
        let out = fed.and_then(|()| self.esys.sequence_complete(seq, last, secret));
        if out.is_err() {
            // On success the TPM flushed the sequence; on failure we do.
            let _ = self.esys.flush(seq);
        }
        out
    }

    /// `TPM2_Create` of a child of the primary. The TPM builds the new
    /// object in a transient slot of its own, so one is freed first.
    pub(crate) fn create(
        &mut self,
        template: &Public,
        auth: &[u8],
        data: &[u8],
    ) -> Result<(Public, tss_esapi::structures::Private), TpmRc> {
        self.make_room(1, None);
        self.esys.create(self.primary, template, auth, data)
    }

    /// Loads a blob without caching it, runs `f` on it and flushes it.
    pub(crate) fn with_transient<T>(
        &mut self,
        blob: &Blob,
        auth: &[u8],
        f: impl FnOnce(&mut Esys, Tr) -> Result<T, TpmRc>,
    ) -> Result<T, TpmRc> {
        self.make_room(1, None);
        let tr = self.esys.load(self.primary, &blob.public, &blob.private)?;
        let out = self
            .esys
            .set_auth(tr, auth)
            .and_then(|()| f(&mut self.esys, tr));
        let _ = self.esys.flush(tr);
        out
    }

    /// How many keys are loaded (for tests of the slot accounting).
    #[cfg(feature = "test-support")]
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.dead {
            return;
        }
        self.evict_all();
        self.esys.end_encryption_session();
        let _ = self.esys.flush(self.primary);
    }
}

/// True for a TCTI that goes through a resource manager: the kernel's
/// (`device:/dev/tpmrm*`) or tpm2-abrmd (`tabrmd`). A resource manager
/// gives every connection its own virtual object handles, context-saves
/// its objects and sessions between commands and flushes them when the
/// connection closes, so several connections (and processes) share the
/// TPM, and a connection finds nothing of anyone else's to flush.
pub(crate) fn behind_resource_manager(tcti: &str) -> bool {
    let t = tcti.trim();
    t == "tabrmd" || t.starts_with("tabrmd:") || t.starts_with("device:/dev/tpmrm")
}

/// Flushes transient objects and loaded sessions that a previous
/// connection left behind (a process that died without closing cleanly).
/// Only on a direct TCTI (swtpm, `/dev/tpm0`): there every connection
/// shares the TPM's slots, so this also flushes what another live
/// connection holds, which is why a direct TCTI serves one process at a
/// time (see the crate documentation). Behind a resource manager it is
/// skipped: there is nothing of ours to see, and the manager cleans up
/// after a dead client itself.
fn flush_leftovers(esys: &mut Esys) {
    for first in [
        c::TPM2_TRANSIENT_FIRST,
        c::TPM2_LOADED_SESSION_FIRST,
        c::TPM2_POLICY_SESSION_FIRST,
    ] {
        let Ok(handles) = esys.handles(first) else {
            continue;
        };
        for h in handles {
            if let Ok(tr) = esys.tr_from_tpm(h) {
                let _ = esys.flush(tr);
            }
        }
    }
}

/// True when an error means the connection, or the TPM state behind it, is
/// gone: a broken transport, a TPM that needs `TPM2_Startup`, or a TPM that
/// was reset and no longer holds our primary (swtpm's TCTI reconnects by
/// itself, so a simulator restart shows up as `TPM_RC_REFERENCE_H0`).
pub(crate) fn is_connection_lost(rc: TpmRc) -> bool {
    rc.is_transport() || rc.is(code::INITIALIZE) || rc.is_reference_lost()
}

//! Sessions: one long-lived logged-in anchor plus a pool for operations.
//!
//! - The anchor session is opened and logged in once, when the backend
//!   opens, and stays open until it closes. PKCS#11 login state belongs to
//!   the application and token, so every other session of the backend is
//!   logged in too, and the token never sees its last session close while
//!   an operation runs (SoftHSM 2.6.1 has concurrency bugs on that path).
//! - Operations take a session from the pool (a `cryptoki::Session` is
//!   `Send` but not `Sync`: one thread at a time), opening one only when all
//!   are busy, and return it afterwards; at most `max_idle` stay open. In
//!   steady state no operation opens a session or logs in.
//! - A session whose operation failed is closed rather than returned, so a
//!   half-finished operation never leaks into the next user.

use crate::context::{Library, LoginTicket};
use crate::error::ck;
use crate::token::Found;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keystore_backend::{Result, SecretBytes};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

pub(crate) struct Pool {
    slot: Slot,
    max_idle: usize,
    /// Sessions opened so far, the anchor included (diagnostics).
    opened: AtomicUsize,
    idle: Mutex<Vec<Session>>,
    /// Never used for operations; a Mutex only to make the pool `Sync`.
    anchor: Mutex<Option<Session>>,
    login: Option<LoginTicket>,
    lib: Option<Library>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("slot", &self.slot.id())
            .field("idle", &self.idle().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Opens the anchor session on `slot` and logs the user in.
    pub(crate) fn open(
        lib: Library,
        token: &Found,
        pin: &SecretBytes,
        max_idle: usize,
    ) -> Result<Pool> {
        let anchor = lib
            .pkcs11()
            .open_rw_session(token.slot)
            .map_err(ck(format!("open a session on token {}", token.serial)))?;
        let login = lib.login(&anchor, token, pin)?;
        Ok(Pool {
            slot: token.slot,
            max_idle,
            opened: AtomicUsize::new(1),
            idle: Mutex::new(Vec::new()),
            anchor: Mutex::new(Some(anchor)),
            login: Some(login),
            lib: Some(lib),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Session>> {
        // A Vec push/pop cannot be left half-done by a panic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Result<Session> {
        if let Some(s) = self.idle().pop() {
            return Ok(s);
        }
        let lib = self.lib.as_ref().ok_or_else(|| {
            keystore_backend::Error::backend_msg(
                keystore_backend::Component::Pkcs11,
                "backend is closed",
            )
        })?;
        let s = lib
            .pkcs11()
            .open_rw_session(self.slot)
            .map_err(ck("open a pooled session"))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// How many sessions this pool has opened, the anchor included.
    pub(crate) fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    fn give_back(&self, s: Session) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(s);
        }
        // Otherwise `s` drops here and closes; the anchor stays open.
    }

    /// Runs `f` on a pooled session. The session goes back to the pool if
    /// `f` succeeded and is closed if it failed.
    pub(crate) fn run<T>(&self, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
        let s = self.take()?;
        let r = f(&s);
        if r.is_ok() {
            self.give_back(s);
        }
        r
    }

    /// Closes every session (pooled first, the anchor last), ends the login
    /// registration and releases the library (`C_Finalize` if this was its
    /// last user). Reports the first error.
    pub(crate) fn close(&mut self) -> Result<()> {
        let mut first = Ok(());
        let mut note = |r: Result<()>| {
            if first.is_ok() {
                first = r;
            }
        };
        let idle: Vec<Session> = std::mem::take(&mut *self.idle());
        for s in idle {
            note(s.close().map_err(ck("close a pooled session")));
        }
        let anchor = self
            .anchor
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(anchor) = anchor {
            note(anchor.close().map_err(ck("close the anchor session")));
        }
        self.login = None;
        if let Some(lib) = self.lib.take() {
            note(lib.release());
        }
        first
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

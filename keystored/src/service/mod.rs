//! The `keystore.v1` services over one store: every call is tied to its
//! caller's OS identity, authorised by the policy, then run on the
//! keystore, whose own role checks and audit trail apply unchanged.
//!
//! - [`key_use`]: sign, verify, MAC, derive, encrypt, decrypt, public keys,
//!   list and info.
//! - [`lifecycle`]: create, import, rotate, suspend, resume, revoke,
//!   destroy, sweep, due, backup, restore.
//! - [`audit`]: verify and export the trail.

use crate::open::Store;
use crate::peer::Caller;
use crate::policy::{Grant, Policy};
use keystore_api::{Actor, Error, Result, Role};
use keystore_rpc::status_of;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tonic::{Request, Status};

pub(crate) mod audit;
pub(crate) mod key_use;
pub(crate) mod lifecycle;

/// What every service shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    /// Key use runs on the async workers (a backend whose key operations
    /// are in-process computation); otherwise on the blocking pool.
    inline_use: bool,
    pub(crate) policy: RwLock<Arc<Policy>>,
    refusals: Mutex<RefusalLimiter>,
}

/// An authorised caller.
pub(crate) struct Authorized {
    pub(crate) uid: u32,
    pub(crate) actor: Actor,
    pub(crate) grant: Grant,
}

impl Authorized {
    /// NotFound, worded as the keystore words a missing key, unless the
    /// caller may see `name`: a key outside its names is invisible.
    pub(crate) fn see(&self, name: &str) -> Result<()> {
        if self.grant.may_see(name) {
            return Ok(());
        }
        Err(Error::not_found(format!("no key named '{name}'")).with_key(name))
    }
}

impl Shared {
    pub(crate) fn new(
        store: Arc<Store>,
        policy: Policy,
        refusals_per_minute: u32,
        inline_use: bool,
    ) -> Shared {
        Shared {
            store,
            inline_use,
            policy: RwLock::new(Arc::new(policy)),
            refusals: Mutex::new(RefusalLimiter::new(refusals_per_minute)),
        }
    }

    /// Replaces the policy (SIGHUP); calls in flight keep the one they had.
    pub(crate) fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    /// Runs a key use: on this worker when key operations are in-process
    /// computation (no device to wait for), otherwise on the blocking pool.
    pub(crate) async fn key_use<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.inline_use {
            f()
        } else {
            off_workers(f).await
        }
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The caller of `request` and its grant. A caller that the policy does
    /// not know is refused (`PERMISSION_DENIED`) and the refusal audited.
    pub(crate) fn authorize<T>(&self, request: &Request<T>, what: &str) -> Result<Authorized> {
        self.authorize_peer(Caller::of(request).as_deref(), what)
    }

    /// [`Shared::authorize`] for the caller of a connection.
    pub(crate) fn authorize_peer(
        &self,
        peer: Option<&(Caller, String)>,
        what: &str,
    ) -> Result<Authorized> {
        let Some(peer) = peer else {
            return Err(Error::auth(
                "the connection carries no peer credentials; keystored serves Unix sockets only",
            ));
        };
        let (caller, actor_id) = peer;
        let Some(grant) = self.policy().grant(caller.uid, caller.gid) else {
            self.record(caller.uid, actor_id, None, what, None);
            return Err(Error::policy(format!(
                "uid {} (gid {}) is not in keystored's policy; {what} refused",
                caller.uid, caller.gid
            )));
        };
        let actor = Actor::new(actor_id, grant.role())?;
        Ok(Authorized {
            uid: caller.uid,
            actor,
            grant,
        })
    }

    /// Refuses a key use to any role but the application's, audited.
    pub(crate) fn require_application(
        &self,
        who: &Authorized,
        what: &str,
        key: &str,
    ) -> Result<()> {
        if who.grant.role() == Role::Application {
            return Ok(());
        }
        let caller_id = who.actor.id();
        self.record(who.uid, caller_id, Some(who.grant.role()), what, Some(key));
        Err(Error::policy(format!(
            "{what} needs the application role; '{caller_id}' acts as {}",
            who.grant.role()
        ))
        .with_key(key))
    }

    /// Audits a refusal, at most the configured number per uid and minute;
    /// the ones left out are counted into the next one recorded.
    fn record(&self, uid: u32, actor_id: &str, role: Option<Role>, what: &str, key: Option<&str>) {
        let suppressed = {
            let mut l = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            match l.admit(uid) {
                Some(n) => n,
                None => return,
            }
        };
        let what = if suppressed > 0 {
            format!("{what} ({suppressed} earlier refusals of this caller not recorded)")
        } else {
            what.to_string()
        };
        if let Err(e) = self.store.record_refusal(actor_id, role, &what, key) {
            eprintln!("keystored: could not audit a refusal of {actor_id}: {e}");
        }
        eprintln!(
            "keystored: refused {actor_id} ({}): {what}",
            role.map_or("no role", |r| r.id())
        );
    }
}

/// At most `per_minute` audited refusals per uid and minute.
struct RefusalLimiter {
    per_minute: u32,
    windows: HashMap<u32, (Instant, u32, u64)>,
}

impl RefusalLimiter {
    fn new(per_minute: u32) -> Self {
        RefusalLimiter {
            per_minute,
            windows: HashMap::new(),
        }
    }

    /// `Some(suppressed since the last recorded)` if this refusal is to be
    /// recorded, `None` if it is only counted.
    fn admit(&mut self, uid: u32) -> Option<u64> {
        let now = Instant::now();
        if self.windows.len() > 10_000 {
            self.windows
                .retain(|_, (start, _, _)| now.duration_since(*start).as_secs() < 60);
        }
        let (start, count, suppressed) = self.windows.entry(uid).or_insert((now, 0, 0));
        if now.duration_since(*start).as_secs() >= 60 {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            *suppressed += 1;
            return None;
        }
        *count += 1;
        Some(std::mem::take(suppressed))
    }
}

/// Runs a keystore call on the blocking pool, off the async workers.
async fn off_workers<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(Error::backend_msg(
            keystore_api::Component::Service,
            "a call failed unexpectedly",
        ))
    })
}

/// Runs a keystore call off the async workers and maps its error.
pub(crate) async fn blocking<T, F>(f: F) -> std::result::Result<T, Status>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    off_workers(f).await.map_err(|e| status_of(&e))
}

/// Maps a keystore error to its status.
pub(crate) fn status(e: Error) -> Status {
    status_of(&e)
}

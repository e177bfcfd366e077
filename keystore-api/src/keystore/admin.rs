//! Lifecycle administration: create, import, rotate, suspend, resume,
//! revoke, destroy, sweep, scheduled rotation, decommission, role
//! credentials and the audit trail. Every operation states its actor, is
//! checked against the actor's role, and is audited in the same transaction
//! as its metadata change.

use super::{check_name, live_key, KeyInfo, KeySpec, Keystore, Subject};
use crate::algorithm::KeyClass;
use crate::audit::{self, AuditEntry, AuditReport};
use crate::backend::{Backend, KeyHandle};
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::lifecycle::{check_transition, has_material};
use crate::metadata::{self as md, KeyState, NewKey, NewVersion, Origin, StateChange};
use crate::roles::{Actor, Duty, Role};
use crate::secret::SecretBytes;
use time::{Duration, OffsetDateTime};

/// A key whose active version has outlived its cryptoperiod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDue {
    /// The key.
    pub name: String,
    /// Its active version.
    pub version: u32,
    /// When the cryptoperiod ended (RFC 3339 UTC).
    pub due_at: String,
}

/// PBKDF2 iterations for role credentials (checked once per CLI call).
const CREDENTIAL_ITERATIONS: u32 = 200_000;

impl<B: Backend> Keystore<B> {
    fn check_spec(spec: KeySpec) -> Result<()> {
        let permitted = spec.algorithm.permitted_usages();
        if spec.usages.is_empty() || !permitted.contains(spec.usages) {
            return Err(Error::Policy(format!(
                "{} keys permit usages {{{permitted}}}; requested {{{}}}",
                spec.algorithm, spec.usages
            )));
        }
        spec.usages.check_combination()?;
        if spec.backup_eligible && spec.algorithm.class() != KeyClass::Symmetric {
            return Err(Error::Policy(format!(
                "{} keys sign and are never backed up (REQ-KEY-BAK-01); only symmetric keys may be backup-eligible",
                spec.algorithm
            )));
        }
        if let Some(p) = spec.cryptoperiod {
            if p <= Duration::ZERO {
                return Err(Error::InvalidInput(
                    "a cryptoperiod must be positive".into(),
                ));
            }
        }
        Ok(())
    }

    fn check_name_free(&self, name: &str) -> Result<()> {
        let md = self.md();
        if md::decommissioned_at(md.conn())?.is_some() {
            return Err(Error::KeyState(
                "this store was decommissioned; no key can be created".into(),
            ));
        }
        match md::key(md.conn(), name)? {
            None => Ok(()),
            Some(k) if k.destroyed_at.is_some() => Err(Error::AlreadyExists(format!(
                "key '{name}' was destroyed and its tombstone keeps the name; choose another name"
            ))),
            Some(_) => Err(Error::AlreadyExists(format!("key '{name}' already exists"))),
        }
    }

    /// Generates a key named `name` inside the backend (version 1, active).
    /// Needs the security-officer or operator role.
    pub fn create(&self, actor: &Actor, name: &str, spec: KeySpec) -> Result<KeyInfo> {
        let _w = self.writing("create")?;
        check_name(name)?;
        Self::check_spec(spec)?;
        self.require(actor, Duty::Provision, "create", Some(name))?;
        self.check_name_free(name)?;
        self.create_in_backend(
            name,
            Some(super::FaultPoint::AfterBackendCreate),
            || {
                let g = self.backend.generate(spec.algorithm, name)?;
                let public = match (&g.public_key, spec.algorithm.class()) {
                    (Some(pk), KeyClass::Asymmetric) => {
                        Some((pk.spki_der().to_vec(), pk.fingerprint()))
                    }
                    (None, KeyClass::Symmetric) => None,
                    _ => {
                        self.discard(&g.handle);
                        return Err(Error::backend_msg(
                            self.backend.name(),
                            "backend returned a public key that does not match the algorithm",
                        ));
                    }
                };
                Ok(((g.handle.clone(), public), vec![g.handle]))
            },
            |tx, (handle, public)| {
                self.record_new_key(
                    tx,
                    actor,
                    name,
                    spec,
                    Origin::Generated,
                    handle,
                    public.clone(),
                )
            },
        )?;
        self.info(name)
    }

    /// Imports a 32-byte secret for a symmetric key (AES-256-GCM, HMAC-SHA256),
    /// recorded with origin `imported`. Private keys cannot be imported: they
    /// are generated inside the backend ([`Error::Policy`]).
    pub fn import(
        &self,
        actor: &Actor,
        name: &str,
        spec: KeySpec,
        secret: &SecretBytes,
    ) -> Result<KeyInfo> {
        let _w = self.writing("import")?;
        check_name(name)?;
        Self::check_spec(spec)?;
        let Some(len) = spec.algorithm.secret_len() else {
            return Err(Error::Policy(format!(
                "{} keys cannot be imported; generate them inside the backend",
                spec.algorithm
            )));
        };
        if secret.len() != len {
            return Err(Error::InvalidInput(format!(
                "{} needs a {len}-byte secret, got {} bytes",
                spec.algorithm,
                secret.len()
            )));
        }
        self.require(actor, Duty::Provision, "import", Some(name))?;
        self.check_name_free(name)?;
        self.create_in_backend(
            name,
            None,
            || {
                let h = self.backend.import(spec.algorithm, secret, name)?;
                Ok((h.clone(), vec![h]))
            },
            |tx, handle| self.record_new_key(tx, actor, name, spec, Origin::Imported, handle, None),
        )?;
        self.info(name)
    }

    /// Records a new key (version 1, active) and its audit entry inside `tx`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_new_key(
        &self,
        tx: &rusqlite::Connection,
        actor: &Actor,
        name: &str,
        spec: KeySpec,
        origin: Origin,
        handle: &KeyHandle,
        public: Option<(Vec<u8>, String)>,
    ) -> Result<()> {
        let now = self.now();
        {
            let key_id = md::insert_key(
                tx,
                &NewKey {
                    name,
                    algorithm: spec.algorithm,
                    usages: spec.usages,
                    backup_eligible: spec.backup_eligible,
                    cryptoperiod_secs: spec.cryptoperiod.map(|d| d.whole_seconds()),
                    created_at: &now,
                },
            )?;
            let fp = public.as_ref().map(|p| p.1.as_str());
            md::insert_version(
                tx,
                key_id,
                &NewVersion {
                    version: 1,
                    state: KeyState::Active,
                    origin,
                    handle,
                    public_key: public.as_ref().map(|p| p.0.as_slice()),
                    fingerprint: fp,
                    created_at: &now,
                },
            )?;
            let event = match origin {
                Origin::Imported => "import",
                _ => "generate",
            };
            self.audit(
                tx,
                Some(actor),
                event,
                Subject::version(name, 1, fp),
                format!(
                    "{} {{{}}}{}",
                    spec.algorithm,
                    spec.usages,
                    if spec.backup_eligible {
                        " backup-eligible"
                    } else {
                        ""
                    }
                ),
            )?;
        }
        Ok(())
    }

    /// Best-effort removal of a backend object that metadata will not reference.
    pub(crate) fn discard(&self, handle: &KeyHandle) {
        // The caller reports the original error; a failure here leaves an
        // orphan that reconciliation at the next open removes.
        let _ = self.backend.destroy(handle);
    }

    /// Rotates `name`: a new version is generated and becomes active; the
    /// previous active (or suspended) version becomes deactivated until
    /// `now + grace` (verify and decrypt only), after which [`Keystore::sweep`]
    /// destroys it. Needs the security-officer role.
    pub fn rotate(&self, actor: &Actor, name: &str, grace: Duration) -> Result<KeyInfo> {
        let _w = self.writing("rotate")?;
        check_name(name)?;
        if grace < Duration::ZERO {
            return Err(Error::InvalidInput(
                "a grace period cannot be negative".into(),
            ));
        }
        self.require(actor, Duty::Administer, "rotate", Some(name))?;
        let (key, versions) = {
            let md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            (key, versions)
        };
        let next = versions.last().map(|v| v.version + 1).unwrap_or(1);
        let previous: Vec<_> = versions
            .iter()
            .filter(|v| matches!(v.state, KeyState::Active | KeyState::Suspended))
            .collect();
        let now = self.now();
        let grace_end = rfc3339(self.now_time() + grace);
        self.create_in_backend(
            name,
            Some(super::FaultPoint::AfterBackendRotate),
            || {
                let g = self.backend.generate(key.algorithm, name)?;
                Ok((g.clone(), vec![g.handle]))
            },
            |tx, generated| {
                let public = generated
                    .public_key
                    .as_ref()
                    .map(|pk| (pk.spki_der().to_vec(), pk.fingerprint()));
                for v in &previous {
                    check_transition(v.state, KeyState::Deactivated)?;
                    md::set_state(
                        tx,
                        key.id,
                        v.version,
                        &StateChange {
                            grace_end: Some(&grace_end),
                            ..StateChange::to(KeyState::Deactivated, &now)
                        },
                    )?;
                    self.audit(
                        tx,
                        Some(actor),
                        "state",
                        Subject::version(name, v.version, v.fingerprint.as_deref()),
                        format!("{} -> deactivated until {grace_end}", v.state),
                    )?;
                }
                let fp = public.as_ref().map(|p| p.1.as_str());
                md::insert_version(
                    tx,
                    key.id,
                    &NewVersion {
                        version: next,
                        state: KeyState::Active,
                        origin: Origin::Generated,
                        handle: &generated.handle,
                        public_key: public.as_ref().map(|p| p.0.as_slice()),
                        fingerprint: fp,
                        created_at: &now,
                    },
                )?;
                self.audit(
                    tx,
                    Some(actor),
                    "rotate",
                    Subject::version(name, next, fp),
                    format!("version {next} active; grace {} s", grace.whole_seconds()),
                )?;
                Ok(())
            },
        )?;
        self.info(name)
    }

    /// Suspends version `version` of `name`: no use until resumed. Needs the
    /// security-officer or operator role.
    pub fn suspend(&self, actor: &Actor, name: &str, version: u32) -> Result<()> {
        let _w = self.writing("suspend")?;
        self.require(actor, Duty::Maintain, "suspend", Some(name))?;
        self.change_state(actor, name, version, KeyState::Suspended, None)
    }

    /// Resumes a suspended version: it becomes active again, provided no
    /// other version is active. Needs the security-officer or operator role.
    pub fn resume(&self, actor: &Actor, name: &str, version: u32) -> Result<()> {
        let _w = self.writing("resume")?;
        self.require(actor, Duty::Maintain, "resume", Some(name))?;
        self.change_state(actor, name, version, KeyState::Active, None)
    }

    /// A state change that keeps the material (suspend, resume).
    fn change_state(
        &self,
        actor: &Actor,
        name: &str,
        version: u32,
        to: KeyState,
        reason: Option<&str>,
    ) -> Result<()> {
        check_name(name)?;
        let now = self.now();
        let mut md = self.md();
        let key = live_key(md.conn(), name)?;
        let versions = md::versions(md.conn(), key.id)?;
        let v = versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::NotFound(format!("key '{name}' has no version {version}")))?;
        check_transition(v.state, to)?;
        if to == KeyState::Active && versions.iter().any(|o| o.state == KeyState::Active) {
            return Err(Error::KeyState(format!(
                "key '{name}' already has an active version; only one version is active at a time"
            )));
        }
        let tx = md.tx()?;
        md::set_state(
            &tx,
            key.id,
            version,
            &StateChange {
                reason,
                ..StateChange::to(to, &now)
            },
        )?;
        self.audit(
            &tx,
            Some(actor),
            "state",
            Subject::version(name, version, v.fingerprint.as_deref()),
            format!("{} -> {to}", v.state),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes version `version` of `name` as compromised, at once: every
    /// later use is [`Error::KeyState`], and the material is destroyed.
    /// Needs the security-officer role.
    pub fn revoke(&self, actor: &Actor, name: &str, version: u32, reason: &str) -> Result<()> {
        let _w = self.writing("revoke")?;
        check_name(name)?;
        if reason.is_empty()
            || reason.len() > super::limits::MAX_REASON_LEN
            || reason.contains(['\n', '\r'])
        {
            return Err(Error::InvalidInput(format!(
                "a revocation reason is one line of 1 to {} bytes",
                super::limits::MAX_REASON_LEN
            )));
        }
        self.require(actor, Duty::Administer, "revoke", Some(name))?;
        let now = self.now();
        // 1. Refuse use at once and record the intent to destroy the material.
        let (key_id, handle, intent) = {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let v = md::versions(md.conn(), key.id)?
                .into_iter()
                .find(|v| v.version == version)
                .ok_or_else(|| Error::NotFound(format!("key '{name}' has no version {version}")))?;
            check_transition(v.state, KeyState::Compromised)?;
            let tx = md.tx()?;
            md::set_state(
                &tx,
                key.id,
                version,
                &StateChange {
                    reason: Some(reason),
                    ..StateChange::to(KeyState::Compromised, &now)
                },
            )?;
            let intent = md::add_intent(&tx, "revoke", key.id, version, &now)?;
            self.audit(
                &tx,
                Some(actor),
                "state",
                Subject::version(name, version, v.fingerprint.as_deref()),
                format!("{} -> compromised: {reason}", v.state),
            )?;
            tx.commit()?;
            (key.id, v.handle, intent)
        };
        // 2. Destroy the material, then forget the handle.
        self.finish_material_removal(
            key_id,
            version,
            handle.as_ref(),
            intent,
            KeyState::Compromised,
        )
    }

    /// Destroys material for an intent, then completes its metadata. A crash
    /// in between is completed by reconciliation at the next open.
    pub(crate) fn finish_material_removal(
        &self,
        key_id: i64,
        version: u32,
        handle: Option<&KeyHandle>,
        intent: i64,
        final_state: KeyState,
    ) -> Result<()> {
        if let Some(h) = handle {
            match self.backend.destroy(h) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let fault = match final_state {
            KeyState::Destroyed => super::FaultPoint::AfterBackendDestroy,
            _ => super::FaultPoint::AfterBackendRevoke,
        };
        self.fault_at(fault)?;
        let now = self.now();
        let mut md = self.md();
        let tx = md.tx()?;
        md::set_state(
            &tx,
            key_id,
            version,
            &StateChange::material_gone(final_state, &now),
        )?;
        md::remove_intent(&tx, intent)?;
        tx.commit()?;
        Ok(())
    }

    /// Destroys every version of `name`: material first in the backend, then
    /// the metadata becomes a tombstone (public data kept, name reserved).
    /// Afterwards every use of `name` is [`Error::NotFound`]. Needs the
    /// security-officer role.
    pub fn destroy(&self, actor: &Actor, name: &str) -> Result<()> {
        let _w = self.writing("destroy")?;
        check_name(name)?;
        self.require(actor, Duty::Administer, "destroy", Some(name))?;
        let now = self.now();
        let (key_id, pending) = {
            let mut md = self.md();
            let key = live_key(md.conn(), name)?;
            let versions = md::versions(md.conn(), key.id)?;
            let tx = md.tx()?;
            let mut pending = Vec::new();
            for v in &versions {
                if v.handle.is_some() || has_material(v.state) {
                    let intent = md::add_intent(&tx, "destroy", key.id, v.version, &now)?;
                    pending.push((v.version, v.handle.clone(), intent));
                }
            }
            md::mark_key_destroyed(&tx, key.id, &now)?;
            self.audit(
                &tx,
                Some(actor),
                "destroy",
                Subject {
                    name: Some(name),
                    ..Subject::default()
                },
                format!("{} version(s) destroyed", versions.len()),
            )?;
            tx.commit()?;
            (key.id, pending)
        };
        for (version, handle, intent) in pending {
            self.finish_material_removal(
                key_id,
                version,
                handle.as_ref(),
                intent,
                KeyState::Destroyed,
            )?;
        }
        Ok(())
    }

    /// Destroys the material of every deactivated version whose grace period
    /// has ended, leaving tombstones. Returns the (name, version) pairs swept.
    /// Needs the security-officer or operator role.
    pub fn sweep(&self, actor: &Actor) -> Result<Vec<(String, u32)>> {
        let _w = self.writing("sweep")?;
        self.require(actor, Duty::Maintain, "sweep", None)?;
        let now_t = self.now_time();
        let now = self.now();
        let mut todo = Vec::new();
        {
            let mut md = self.md();
            let mut expired = Vec::new();
            for key in md::keys(md.conn())? {
                for v in md::versions(md.conn(), key.id)? {
                    if v.state == KeyState::Deactivated
                        && v.grace_end_time().is_none_or(|end| end <= now_t)
                    {
                        expired.push((key.id, key.name.clone(), v));
                    }
                }
            }
            if expired.is_empty() {
                return Ok(Vec::new());
            }
            let tx = md.tx()?;
            for (key_id, name, v) in &expired {
                let intent = md::add_intent(&tx, "destroy", *key_id, v.version, &now)?;
                self.audit(
                    &tx,
                    Some(actor),
                    "sweep",
                    Subject::version(name, v.version, v.fingerprint.as_deref()),
                    format!(
                        "grace ended {}; material destroyed",
                        v.grace_end.as_deref().unwrap_or("-")
                    ),
                )?;
                todo.push((*key_id, name.clone(), v.version, v.handle.clone(), intent));
            }
            tx.commit()?;
        }
        let mut swept = Vec::new();
        for (key_id, name, version, handle, intent) in todo {
            if let Some(h) = &handle {
                match self.backend.destroy(h) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            self.fault_at(super::FaultPoint::AfterBackendSweep)?;
            let mut md = self.md();
            let tx = md.tx()?;
            md::set_state(
                &tx,
                key_id,
                version,
                &StateChange::material_gone(KeyState::Destroyed, &now),
            )?;
            md::remove_intent(&tx, intent)?;
            tx.commit()?;
            swept.push((name, version));
        }
        Ok(swept)
    }

    /// Sets or clears the cryptoperiod of `name`. Needs the security-officer role.
    pub fn set_cryptoperiod(
        &self,
        actor: &Actor,
        name: &str,
        period: Option<Duration>,
    ) -> Result<()> {
        let _w = self.writing("set cryptoperiod")?;
        check_name(name)?;
        if period.is_some_and(|p| p <= Duration::ZERO) {
            return Err(Error::InvalidInput(
                "a cryptoperiod must be positive".into(),
            ));
        }
        self.require(actor, Duty::Administer, "set a cryptoperiod", Some(name))?;
        let mut md = self.md();
        let key = live_key(md.conn(), name)?;
        let tx = md.tx()?;
        md::set_cryptoperiod(&tx, key.id, period.map(|p| p.whole_seconds()))?;
        self.audit(
            &tx,
            Some(actor),
            "policy",
            Subject {
                name: Some(name),
                ..Subject::default()
            },
            match period {
                Some(p) => format!("cryptoperiod {} s", p.whole_seconds()),
                None => "cryptoperiod cleared".into(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Keys whose active version is at least one cryptoperiod old at `now`.
    pub fn due(&self, now: OffsetDateTime) -> Result<Vec<RotationDue>> {
        let md = self.md();
        let mut out = Vec::new();
        for key in md::keys(md.conn())? {
            let Some(secs) = key.cryptoperiod_secs.filter(|_| key.destroyed_at.is_none()) else {
                continue;
            };
            let Some(active) = md::versions(md.conn(), key.id)?
                .into_iter()
                .find(|v| v.state == KeyState::Active)
            else {
                continue;
            };
            let Some(created) = crate::clock::parse_rfc3339(&active.created_at) else {
                continue;
            };
            let due_at = created + Duration::seconds(secs);
            if due_at <= now {
                out.push(RotationDue {
                    name: key.name,
                    version: active.version,
                    due_at: rfc3339(due_at),
                });
            }
        }
        Ok(out)
    }

    /// Rotates every key [`Keystore::due`] at `now`, with `grace` for the old
    /// versions. Returns the rotated names. Needs the security-officer role.
    pub fn rotate_due(
        &self,
        actor: &Actor,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<Vec<String>> {
        let _w = self.writing("rotate due")?;
        self.require(actor, Duty::Administer, "scheduled rotation", None)?;
        let mut rotated = Vec::new();
        for due in self.due(now)? {
            self.rotate(actor, &due.name, grace)?;
            rotated.push(due.name);
        }
        Ok(rotated)
    }

    /// Decommissions the store (REQ-KEY-WIPE-01): records a final audit
    /// event, exports the whole trail (returned, to be kept off the device),
    /// wipes every key in the backend, then deletes all key metadata. After
    /// it, no key is usable through any API and none can be created. Needs
    /// the security-officer role.
    pub fn decommission(&self, actor: &Actor) -> Result<Vec<AuditEntry>> {
        let _w = self.writing("decommission")?;
        self.require(actor, Duty::Administer, "decommission", None)?;
        let exported = {
            let mut md = self.md();
            if md::decommissioned_at(md.conn())?.is_some() {
                return Err(Error::KeyState(
                    "this store is already decommissioned".into(),
                ));
            }
            let tx = md.tx()?;
            let keys = md::keys(&tx)?.len();
            self.audit(
                &tx,
                Some(actor),
                "decommission",
                Subject::default(),
                format!(
                    "wiping {keys} key(s) from the {} backend, then the metadata",
                    self.backend.name()
                ),
            )?;
            tx.commit()?;
            audit::entries(md.conn())?
        };
        self.backend.wipe()?;
        let now = self.now();
        let mut md = self.md();
        let tx = md.tx()?;
        md::decommission(&tx, &now)?;
        tx.commit()?;
        Ok(exported)
    }

    /// Sets the credential for `role`. Needs the security-officer role,
    /// except for the very first security-officer credential of a store
    /// (bootstrap), which anyone may set once.
    pub fn set_role_credential(
        &self,
        actor: Option<&Actor>,
        role: Role,
        secret: &SecretBytes,
    ) -> Result<()> {
        let _w = self.writing("set role credential")?;
        if secret.len() < 8 || secret.len() > 1024 {
            return Err(Error::InvalidInput(
                "a role credential is 8 to 1024 bytes".into(),
            ));
        }
        let bootstrap = role == Role::SecurityOfficer
            && md::role_credential(self.md().conn(), Role::SecurityOfficer.id())?.is_none();
        match actor {
            Some(a) => {
                if !bootstrap {
                    self.require(a, Duty::Administer, "set a role credential", None)?;
                }
            }
            None if bootstrap => {}
            None => {
                return Err(Error::Policy(
                    "setting a role credential needs the security-officer role".into(),
                ))
            }
        }
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt)
            .map_err(|_| Error::backend_msg("keystore", "the OS random generator failed"))?;
        let verifier = credential_verifier(secret, &salt, CREDENTIAL_ITERATIONS);
        let now = self.now();
        let mut md = self.md();
        let tx = md.tx()?;
        md::set_role_credential(
            &tx,
            role.id(),
            CREDENTIAL_ITERATIONS,
            &salt,
            &verifier,
            &now,
        )?;
        self.audit(
            &tx,
            actor,
            "credential",
            Subject::default(),
            format!(
                "credential for role {role} set{}",
                if bootstrap { " (bootstrap)" } else { "" }
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Authenticates `id` acting as `role` with `secret` against the role's
    /// credential. A wrong or missing credential is [`Error::Auth`].
    pub fn authenticate(&self, id: &str, role: Role, secret: &SecretBytes) -> Result<Actor> {
        let actor = Actor::new(id, role)?;
        let Some(stored) = md::role_credential(self.md().conn(), role.id())? else {
            return Err(Error::Auth(format!("no credential is set for role {role}")));
        };
        let got = credential_verifier(secret, &stored.salt, stored.iterations);
        if crate::secret::ct_eq(&got, &stored.verifier) {
            Ok(actor)
        } else {
            Err(Error::Auth(format!("wrong credential for role {role}")))
        }
    }

    /// Appends an application event (e.g. `provision`, `renew`) to the audit
    /// trail, about `key` (name and version) if given. Event names are
    /// lower-case words with dashes; the keystore's own event names cannot be
    /// forged this way. Needs the security-officer or operator role.
    pub fn record_event(
        &self,
        actor: &Actor,
        event: &str,
        key: Option<(&str, u32)>,
        detail: &str,
    ) -> Result<()> {
        let _w = self.writing("record event")?;
        const RESERVED: &[&str] = &[
            "audit-init",
            "generate",
            "import",
            "rotate",
            "state",
            "sweep",
            "destroy",
            "backup",
            "restore",
            "wipe",
            "decommission",
            "refused",
            "reconcile",
            "missing",
            "credential",
            "policy",
        ];
        let well_formed = !event.is_empty()
            && event.len() <= 32
            && event.starts_with(|c: char| c.is_ascii_lowercase())
            && event
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed || RESERVED.contains(&event) {
            return Err(Error::InvalidInput(format!(
                "'{event}' is not an application event name (lower-case words with dashes, not one of the keystore's own)"
            )));
        }
        if detail.len() > super::limits::MAX_REASON_LEN || detail.contains(['\n', '\r']) {
            return Err(Error::InvalidInput(format!(
                "event detail is one line of at most {} bytes",
                super::limits::MAX_REASON_LEN
            )));
        }
        self.require(actor, Duty::Provision, event, key.map(|k| k.0))?;
        let subject_fp = match key {
            Some((name, version)) => {
                check_name(name)?;
                let md = self.md();
                let k = live_key(md.conn(), name)?;
                let v = md::versions(md.conn(), k.id)?
                    .into_iter()
                    .find(|v| v.version == version)
                    .ok_or_else(|| {
                        Error::NotFound(format!("key '{name}' has no version {version}"))
                    })?;
                v.fingerprint
            }
            None => None,
        };
        let mut md = self.md();
        let tx = md.tx()?;
        let subject = match key {
            Some((name, version)) => Subject::version(name, version, subject_fp.as_deref()),
            None => Subject::default(),
        };
        self.audit(&tx, Some(actor), event, subject, detail.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Verifies the audit trail (chain, MACs, head). Needs the security-officer
    /// or auditor role. The report names the first bad entry, if any, says
    /// what was checked ([`AuditReport::checked`]: after decommission the
    /// chain only, no MAC) and lists keys holding both `mac` and `derive`. A
    /// live store whose audit key reference is missing or replaced is
    /// [`Error::Integrity`].
    pub fn verify_audit(&self, actor: &Actor) -> Result<AuditReport> {
        self.require(actor, Duty::Audit, "audit verification", None)?;
        let md = self.md();
        audit::verify_store(md.conn(), &self.backend)
    }

    /// Every audit entry, in order. Needs the security-officer or auditor role.
    pub fn export_audit(&self, actor: &Actor) -> Result<Vec<AuditEntry>> {
        self.require(actor, Duty::Audit, "audit export", None)?;
        audit::entries(self.md().conn())
    }
}

fn credential_verifier(secret: &SecretBytes, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret.expose(), salt, iterations, &mut out);
    out
}

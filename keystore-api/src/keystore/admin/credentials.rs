//! Role credentials: setting them and authenticating actors.

use crate::audit::AuditEvent;
use crate::backend::Backend;
use crate::error::{Component, Error, Result};
use crate::keystore::{Keystore, Subject};
use crate::metadata as md;
use crate::roles::{Actor, Duty, Role};
use crate::secret::SecretBytes;

/// PBKDF2 iterations for role credentials (checked once per CLI call).
const CREDENTIAL_ITERATIONS: u32 = 200_000;

impl<B: Backend> Keystore<B> {
    /// Sets the credential for `role`. Needs the security-officer role,
    /// except for the very first security-officer credential of a store
    /// (bootstrap), which anyone may set once.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when another process or thread holds the store's write lock past the
    /// lock timeout (nothing is changed);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a secret not 8 to 1024 bytes long;
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) when `actor` is `None` or lacks the security-officer role (audited
    /// when an actor is given), outside the bootstrap;
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the audit key reference is missing from a live store, and
    /// [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) after decommission (nothing is changed);
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails or the OS random
    /// generator fails.
    pub fn set_role_credential(
        &self,
        actor: Option<&Actor>,
        role: Role,
        secret: &SecretBytes,
    ) -> Result<()> {
        let _w = self.writing("set role credential")?;
        if secret.len() < 8 || secret.len() > 1024 {
            return Err(Error::invalid_input("a role credential is 8 to 1024 bytes"));
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
                return Err(Error::policy(
                    "setting a role credential needs the security-officer role",
                ))
            }
        }
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|_| {
            Error::backend_msg(Component::Keystore, "the OS random generator failed")
        })?;
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
            AuditEvent::Credential,
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
    /// credential. A wrong or missing credential is [`ErrorKind::Auth`](crate::ErrorKind::Auth).
    ///
    /// # Errors
    /// [`ErrorKind::Auth`](crate::ErrorKind::Auth) when no credential is set for `role` or `secret` is wrong;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a malformed actor id;
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) when the metadata database or the backend fails.
    pub fn authenticate(&self, id: &str, role: Role, secret: &SecretBytes) -> Result<Actor> {
        let actor = Actor::new(id, role)?;
        let Some(stored) = md::role_credential(self.md().conn(), role.id())? else {
            return Err(Error::auth(format!("no credential is set for role {role}")));
        };
        let got = credential_verifier(secret, &stored.salt, stored.iterations);
        if crate::secret::ct_eq(&got, &stored.verifier) {
            Ok(actor)
        } else {
            Err(Error::auth(format!("wrong credential for role {role}")))
        }
    }
}

fn credential_verifier(secret: &SecretBytes, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret.expose(), salt, iterations, &mut out);
    out
}

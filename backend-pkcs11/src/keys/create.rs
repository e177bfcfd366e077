//! Generating and importing keys on the token.

use super::read_public;
use crate::error::{ck, COMPONENT};
use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::pubkey::Verifier;
use crate::retry::{self, Backoff};
use crate::Pkcs11Backend;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keystore_backend::{Algorithm, Error, GeneratedKey, KeyHandle, Result, SecretBytes};
use std::sync::Arc;

impl Pkcs11Backend {
    /// Generates a key under a fresh id. An attempt that fails transiently
    /// is retried (for up to [`retry::OPERATION_WAIT`]) under a new id, and
    /// only once a fresh search confirms that nothing of the failed attempt
    /// is left on the token ([`Self::purge`]): a retry never leaves a second
    /// key behind, and two objects never share an id. A failure that is not
    /// transient, or whose leftovers cannot be confirmed gone, is returned.
    pub(crate) fn generate_key(&self, alg: Algorithm, label: &str) -> Result<GeneratedKey> {
        self.creating(|s, id| self.generate_once(s, id, alg, label))
    }

    /// [`Self::generate_key`]'s attempt with `id`.
    fn generate_once(
        &self,
        s: &Session,
        id: &KeyId,
        alg: Algorithm,
        label: &str,
    ) -> Result<GeneratedKey> {
        let kind = Kind::of(alg)?;
        let mech = match kind {
            Kind::Ec => Mechanism::EccKeyPairGen,
            Kind::Ed => Mechanism::EccEdwardsKeyPairGen,
            Kind::Rsa => Mechanism::RsaPkcsKeyPairGen,
            Kind::Aes => Mechanism::AesKeyGen,
            Kind::Hmac => Mechanism::GenericSecretKeyGen,
        };
        if kind.asymmetric() {
            let (pub_t, priv_t) = objects::keypair_templates(alg, id, label)?;
            let (pub_h, priv_h) = s
                .generate_key_pair(&mech, &pub_t, &priv_t)
                .map_err(ck(format!("generate a {alg} key pair")))?;
            let pk = read_public(s, pub_h, alg)?;
            self.remember(id, priv_h, alg);
            // Parsed lazily instead if aws-lc-rs rejects it: signing
            // then reports the public key object as damaged.
            if let Ok(v) = Verifier::new(pk.clone()) {
                self.public_keys().insert(*id, Arc::new(v));
            }
            Ok(GeneratedKey {
                handle: id.handle(),
                public_key: Some(pk),
            })
        } else {
            let key = s
                .generate_key(&mech, &objects::secret_template(alg, id, label)?)
                .map_err(ck(format!("generate a {alg} key")))?;
            self.add_marker(s, id, key, alg, label)?;
            Ok(GeneratedKey {
                handle: id.handle(),
                public_key: None,
            })
        }
    }

    /// Imports a secret key; retried like [`Self::generate_key`].
    pub(crate) fn import_key(
        &self,
        alg: Algorithm,
        secret: &SecretBytes,
        label: &str,
    ) -> Result<KeyHandle> {
        self.creating(|s, id| {
            let mut template = objects::import_template(alg, id, label, secret.expose())?;
            let created = s.create_object(&template);
            objects::zeroize_values(&mut template);
            let key = created.map_err(ck(format!("import a {alg} key")))?;
            self.add_marker(s, id, key, alg, label)?;
            Ok(id.handle())
        })
    }

    /// Runs `attempt` with a fresh id until it succeeds. After a failure,
    /// whatever it created is destroyed and confirmed gone; only then, and
    /// only if the failure was transient, is another id tried.
    fn creating<T>(&self, attempt: impl Fn(&Session, &KeyId) -> Result<T>) -> Result<T> {
        let mut backoff = Backoff::new(retry::OPERATION_WAIT);
        loop {
            let id = self.prefix.new_id()?;
            let e = match self.pool.run(|s| attempt(s, &id)) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            self.forget(&id);
            let cleaned = self.purge(&id);
            self.forget(&id);
            if !retry::is_transient(&e) {
                return Err(e);
            }
            if let Err(why) = cleaned {
                return Err(Error::backend_msg(
                    COMPONENT,
                    format!(
                        "{e}; what that attempt may have left under key id {} could not be \
                         confirmed removed ({why}), so it was not retried",
                        id.short()
                    ),
                ));
            }
            if !backoff.wait() {
                return Err(backoff.annotate(e));
            }
        }
    }

    /// Creates the marker of a new secret key (the caller removes the key
    /// if this fails: see [`Self::creating`]).
    fn add_marker(
        &self,
        s: &Session,
        id: &KeyId,
        key: ObjectHandle,
        alg: Algorithm,
        label: &str,
    ) -> Result<()> {
        s.create_object(&objects::marker_template(id, label))
            .map_err(ck("create the key's marker object"))?;
        self.remember(id, key, alg);
        Ok(())
    }
}

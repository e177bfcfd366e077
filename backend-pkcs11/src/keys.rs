//! The key operations behind [`crate::Pkcs11Backend`]'s `Backend` methods.

use crate::error::{ck, rv_of, COMPONENT};
use crate::handle::KeyId;
use crate::objects::{self, Kind};
use crate::pubkey;
use crate::Pkcs11Backend;
use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use keystore_api::{
    AeadSealed, Algorithm, Error, GeneratedKey, KeyClass, KeyHandle, PublicKey, Result, SecretBytes,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use zeroize::{Zeroize, Zeroizing};

/// GCM tag length in bytes.
const TAG_LEN: usize = 16;

impl Pkcs11Backend {
    // ----- lookups -------------------------------------------------------

    /// The key's primary object, checked before every use: its `CKA_ID`
    /// must still be the key's (object handles can be reused) and its
    /// protection attributes intact ([`objects::check_protection`]). From
    /// the cache when possible, else by search. Absent is `NotFound` when
    /// nothing of the key is left and `Integrity` when its companion still
    /// is; present but with damaged protection is `Integrity`.
    fn primary(&self, s: &Session, id: &KeyId, alg: Algorithm) -> Result<ObjectHandle> {
        let kind = Kind::of(alg);
        let cached = self.handles().get(id).copied();
        if let Some(h) = cached {
            match objects::check_protection(s, h, id, &[objects::allowed_mechanism(alg)]) {
                Ok(objects::Check::Intact) => return Ok(h),
                Ok(objects::Check::Damaged(why)) => {
                    self.forget(id);
                    return Err(damaged(id, kind, &why));
                }
                // Destroyed, replaced or reused: search again.
                Ok(objects::Check::NotThisKey) | Err(_) => self.forget(id),
            }
        }
        // Several matches are copies of the same key (only a holder of the
        // token's user PIN can create private objects, and only this crate
        // creates ids with this prefix); any intact one is the key.
        let mut damage = None;
        for h in objects::find(s, &objects::primary_query(kind, id))? {
            match objects::check_protection(s, h, id, &[objects::allowed_mechanism(alg)])? {
                objects::Check::Intact => {
                    self.handles().insert(*id, h);
                    return Ok(h);
                }
                objects::Check::Damaged(why) => damage = Some(why),
                objects::Check::NotThisKey => {}
            }
        }
        Err(match damage {
            Some(why) => damaged(id, kind, &why),
            None => self.absent(s, id, kind),
        })
    }

    /// Why the key's primary object was not found.
    fn absent(&self, s: &Session, id: &KeyId, kind: Kind) -> Error {
        let left = objects::find(s, &objects::id_query(id))
            .map(|v| v.len())
            .unwrap_or(0)
            + objects::find(s, &objects::marker_query(id))
                .map(|v| v.len())
                .unwrap_or(0);
        if left == 0 {
            Error::NotFound(format!("key {} does not exist on the token", id.short()))
        } else {
            Error::Integrity(format!(
                "key {}: its {} object is missing, damaged, of another type or lacks its \
                 protection attributes, while {left} other object(s) of the key remain on the token",
                id.short(),
                kind.name()
            ))
        }
    }

    /// The public key of an asymmetric key, from the cache or the token's
    /// public key object.
    fn public_from_token(&self, s: &Session, id: &KeyId, alg: Algorithm) -> Result<PublicKey> {
        if let Some(pk) = self.public_keys().get(id) {
            if pk.algorithm() == alg {
                return Ok(pk.clone());
            }
        }
        let kind = Kind::of(alg);
        let Some(obj) = objects::find(s, &objects::public_query(kind, id))?
            .first()
            .copied()
        else {
            let private = objects::find(s, &objects::id_query(id))?;
            return Err(if private.is_empty() {
                Error::NotFound(format!("key {} does not exist on the token", id.short()))
            } else {
                Error::Integrity(format!(
                    "key {}: its public key object is missing or of another type",
                    id.short()
                ))
            });
        };
        let pk = read_public(s, obj, alg)?;
        self.public_keys().insert(*id, pk.clone());
        Ok(pk)
    }

    // ----- generate and import ------------------------------------------

    pub(crate) fn generate_key(&self, alg: Algorithm, label: &str) -> Result<GeneratedKey> {
        let id = self.prefix.new_id()?;
        let kind = Kind::of(alg);
        self.pool.run(|s| {
            if kind.asymmetric() {
                let (pub_t, priv_t) = objects::keypair_templates(alg, &id, label);
                let mech = match kind {
                    Kind::Ec => Mechanism::EccKeyPairGen,
                    _ => Mechanism::RsaPkcsKeyPairGen,
                };
                let (pub_h, priv_h) = s
                    .generate_key_pair(&mech, &pub_t, &priv_t)
                    .map_err(ck(format!("generate a {alg} key pair")))?;
                let pk = match read_public(s, pub_h, alg) {
                    Ok(pk) => pk,
                    Err(e) => {
                        let _ = s.destroy_object(priv_h);
                        let _ = s.destroy_object(pub_h);
                        return Err(e);
                    }
                };
                self.handles().insert(id, priv_h);
                self.public_keys().insert(id, pk.clone());
                Ok(GeneratedKey {
                    handle: id.handle(),
                    public_key: Some(pk),
                })
            } else {
                let mech = match kind {
                    Kind::Aes => Mechanism::AesKeyGen,
                    _ => Mechanism::GenericSecretKeyGen,
                };
                let key = s
                    .generate_key(&mech, &objects::secret_template(alg, &id, label))
                    .map_err(ck(format!("generate a {alg} key")))?;
                self.add_marker(s, &id, key, label)?;
                Ok(GeneratedKey {
                    handle: id.handle(),
                    public_key: None,
                })
            }
        })
    }

    pub(crate) fn import_key(
        &self,
        alg: Algorithm,
        secret: &SecretBytes,
        label: &str,
    ) -> Result<KeyHandle> {
        let id = self.prefix.new_id()?;
        self.pool.run(|s| {
            let mut template = objects::import_template(alg, &id, label, secret.expose());
            let created = s.create_object(&template);
            objects::zeroize_values(&mut template);
            let key = created.map_err(ck(format!("import a {alg} key")))?;
            self.add_marker(s, &id, key, label)?;
            Ok(id.handle())
        })
    }

    /// Creates the marker of a new secret key; if that fails the key goes
    /// too, so nothing half-made stays behind.
    fn add_marker(&self, s: &Session, id: &KeyId, key: ObjectHandle, label: &str) -> Result<()> {
        match s.create_object(&objects::marker_template(id, label)) {
            Ok(_) => {
                self.handles().insert(*id, key);
                Ok(())
            }
            Err(e) => {
                let _ = s.destroy_object(key);
                Err(ck("create the key's marker object")(e))
            }
        }
    }

    // ----- use -----------------------------------------------------------

    pub(crate) fn public_key_of(&self, handle: &KeyHandle, alg: Algorithm) -> Result<PublicKey> {
        if alg.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!("{alg} keys have no public key")));
        }
        let id = self.prefix.id_of(handle)?;
        self.pool.run(|s| self.public_from_token(s, &id, alg))
    }

    /// Signs on the token, then verifies the signature on the host against
    /// the key's public key object before returning it.
    pub(crate) fn sign_message(
        &self,
        handle: &KeyHandle,
        alg: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        if alg.class() != KeyClass::Asymmetric {
            return Err(Error::Policy(format!(
                "sign is not an operation of {alg} keys"
            )));
        }
        let id = self.prefix.id_of(handle)?;
        let kind = Kind::of(alg);
        let (sig, pk) = self.pool.run(|s| {
            let key = self.primary(s, &id, alg)?;
            let what = format!("sign with {alg} key {}", id.short());
            let sig = match kind {
                Kind::Ec => {
                    let digest = Sha256::digest(message);
                    s.sign(&Mechanism::Ecdsa, key, &digest).map_err(ck(&what))?
                }
                _ if alg.is_rsa_pss() => {
                    let params = PkcsPssParams {
                        hash_alg: MechanismType::SHA256,
                        mgf: PkcsMgfType::MGF1_SHA256,
                        s_len: Ulong::from(32u64),
                    };
                    s.sign(&Mechanism::Sha256RsaPkcsPss(params), key, message)
                        .map_err(ck(&what))?
                }
                _ => s
                    .sign(&Mechanism::Sha256RsaPkcs, key, message)
                    .map_err(ck(&what))?,
            };
            let pk = self.public_from_token(s, &id, alg)?;
            Ok((sig, pk))
        })?;
        if kind == Kind::Ec && sig.len() != 64 {
            return Err(Error::backend_msg(
                COMPONENT,
                format!(
                    "the token returned a {}-byte ECDSA P-256 signature",
                    sig.len()
                ),
            ));
        }
        if pk.verify(message, &sig).is_err() {
            self.forget(&id);
            return Err(Error::Integrity(format!(
                "the signature the token made with key {} does not verify under the key's \
                 public key object: the key pair on the token is damaged or mismatched",
                id.short()
            )));
        }
        Ok(sig)
    }

    pub(crate) fn hmac(&self, handle: &KeyHandle, data: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let id = self.prefix.id_of(handle)?;
        let mut tag = self.pool.run(|s| {
            let key = self.primary(s, &id, Algorithm::HmacSha256)?;
            s.sign(&Mechanism::Sha256Hmac, key, data)
                .map_err(ck(format!("HMAC-SHA256 with key {}", id.short())))
        })?;
        let mut out = Zeroizing::new([0u8; 32]);
        let ok = tag.len() == 32;
        if ok {
            out.copy_from_slice(&tag);
        }
        tag.zeroize();
        if !ok {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an HMAC-SHA256 tag of the wrong length",
            ));
        }
        Ok(out)
    }

    pub(crate) fn aead_encrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<AeadSealed> {
        if aad.is_empty() {
            // SoftHSM 2.6.1 crashes on AES-GCM with empty AAD.
            return Err(Error::InvalidInput(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM \
                 (the keystore's AAD always starts with the envelope header)"
                    .into(),
            ));
        }
        let id = self.prefix.id_of(handle)?;
        let mut nonce = [0u8; 12];
        crate::random(&mut nonce)?;
        let ciphertext = self.pool.run(|s| {
            let key = self.primary(s, &id, Algorithm::Aes256Gcm)?;
            let mut iv = nonce;
            let params = gcm_params(&mut iv, aad)?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                .map_err(ck(format!("AES-GCM encrypt with key {}", id.short())))
        })?;
        if ciphertext.len() != plaintext.len() + TAG_LEN {
            return Err(Error::backend_msg(
                COMPONENT,
                "the token returned an AES-GCM ciphertext of the wrong length",
            ));
        }
        Ok(AeadSealed { nonce, ciphertext })
    }

    pub(crate) fn aead_decrypt(
        &self,
        handle: &KeyHandle,
        aad: &[u8],
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        if aad.is_empty() {
            return Err(Error::InvalidInput(
                "the PKCS#11 backend needs a non-empty AAD for AES-GCM".into(),
            ));
        }
        let id = self.prefix.id_of(handle)?;
        if ciphertext.len() < TAG_LEN {
            return Err(Error::Integrity(
                "ciphertext is shorter than its tag".into(),
            ));
        }
        let plaintext = self.pool.run(|s| {
            let key = self.primary(s, &id, Algorithm::Aes256Gcm)?;
            let mut iv = *nonce;
            let params = gcm_params(&mut iv, aad)?;
            s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
                .map_err(|e| match rv_of(&e) {
                    // A wrong tag, nonce, AAD or ciphertext.
                    Some(
                        rv @ (RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::FunctionFailed
                        | RvError::GeneralError),
                    ) => Error::Integrity(format!(
                        "AES-GCM authentication failed with key {} ({})",
                        id.short(),
                        crate::error::ckr_name(rv)
                    )),
                    _ => ck(format!("AES-GCM decrypt with key {}", id.short()))(e),
                })
        })?;
        Ok(SecretBytes::new(plaintext))
    }

    // ----- destroy, list, wipe -------------------------------------------

    /// Destroys every object of the key, the primary first. Nothing left
    /// of it at all is `NotFound`.
    pub(crate) fn destroy_key(&self, handle: &KeyHandle) -> Result<()> {
        let id = self.prefix.id_of(handle)?;
        self.forget(&id);
        self.pool.run(|s| {
            let mut primaries = Vec::new();
            let mut others = objects::find(s, &objects::marker_query(&id))?;
            for obj in objects::find(s, &objects::id_query(&id))? {
                match objects::class_of(s, obj)? {
                    Some(c) if c == ObjectClass::PRIVATE_KEY || c == ObjectClass::SECRET_KEY => {
                        primaries.push(obj)
                    }
                    _ => others.push(obj),
                }
            }
            if primaries.is_empty() && others.is_empty() {
                return Err(Error::NotFound(format!(
                    "key {} does not exist on the token",
                    id.short()
                )));
            }
            for obj in primaries.into_iter().chain(others) {
                destroy_object(s, obj)?;
            }
            Ok(())
        })
    }

    /// Every key of this namespace that has any object left on the token
    /// (a key whose primary object is damaged is listed: it is still held,
    /// and using it reports `Integrity`).
    pub(crate) fn list_keys(&self) -> Result<Vec<KeyHandle>> {
        let ids = self
            .pool
            .run(|s| Ok(self.scan(s)?.into_keys().collect::<BTreeSet<_>>()))?;
        Ok(ids.into_iter().map(|id| id.handle()).collect())
    }

    /// Destroys every object of this namespace, primaries first.
    pub(crate) fn wipe_namespace(&self) -> Result<()> {
        self.handles().clear();
        self.public_keys().clear();
        self.pool.run(|s| {
            let scan = self.scan(s)?;
            let (mut primaries, mut others) = (Vec::new(), Vec::new());
            for objs in scan.into_values() {
                for (class, obj) in objs {
                    if class == ObjectClass::PRIVATE_KEY || class == ObjectClass::SECRET_KEY {
                        primaries.push(obj);
                    } else {
                        others.push(obj);
                    }
                }
            }
            for obj in primaries.into_iter().chain(others) {
                destroy_object(s, obj)?;
            }
            Ok(())
        })
    }

    /// Every object of this namespace, by key id, with its class.
    pub(crate) fn scan(
        &self,
        s: &Session,
    ) -> Result<std::collections::BTreeMap<KeyId, Vec<(ObjectClass, ObjectHandle)>>> {
        let mut out: std::collections::BTreeMap<KeyId, Vec<(ObjectClass, ObjectHandle)>> =
            Default::default();
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::SECRET_KEY,
            ObjectClass::PUBLIC_KEY,
        ] {
            let template = [Attribute::Class(class), Attribute::Token(true)];
            for obj in objects::find(s, &template)? {
                if let Some(id) = objects::bytes_attr(s, obj, AttributeType::Id)?
                    .and_then(|v| self.prefix.parse(&v))
                {
                    out.entry(id).or_default().push((class, obj));
                }
            }
        }
        let markers = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(objects::APPLICATION.to_vec()),
        ];
        for obj in objects::find(s, &markers)? {
            if let Some(id) = objects::bytes_attr(s, obj, AttributeType::Value)?
                .and_then(|v| self.prefix.parse(&v))
            {
                out.entry(id).or_default().push((ObjectClass::DATA, obj));
            }
        }
        Ok(out)
    }
}

fn damaged(id: &KeyId, kind: Kind, why: &str) -> Error {
    Error::Integrity(format!(
        "key {}: its {} object is damaged or was altered ({why}); not using it",
        id.short(),
        kind.name()
    ))
}

/// GCM parameters: the 12-byte IV, the AAD and a 128-bit tag.
fn gcm_params<'a>(
    iv: &'a mut [u8; 12],
    aad: &'a [u8],
) -> Result<cryptoki::mechanism::aead::GcmParams<'a>> {
    cryptoki::mechanism::aead::GcmParams::new(iv, aad, Ulong::from(128u64))
        .map_err(|e| Error::backend(COMPONENT, "AES-GCM parameters", e))
}

/// `C_DestroyObject`; an object already gone is fine.
fn destroy_object(s: &Session, obj: ObjectHandle) -> Result<()> {
    match s.destroy_object(obj) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                rv_of(&e),
                Some(RvError::ObjectHandleInvalid) | Some(RvError::KeyHandleInvalid)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(ck("C_DestroyObject")(e)),
    }
}

/// Reads the public key of a public key object.
fn read_public(s: &Session, obj: ObjectHandle, alg: Algorithm) -> Result<PublicKey> {
    let missing =
        |what: &str| Error::Integrity(format!("the token's public key object has no {what}"));
    match Kind::of(alg) {
        Kind::Ec => {
            let params = objects::bytes_attr(s, obj, AttributeType::EcParams)?
                .ok_or_else(|| missing("CKA_EC_PARAMS"))?;
            let point = objects::bytes_attr(s, obj, AttributeType::EcPoint)?
                .ok_or_else(|| missing("CKA_EC_POINT"))?;
            pubkey::ec_spki(&params, &point)
        }
        _ => {
            let n = objects::bytes_attr(s, obj, AttributeType::Modulus)?
                .ok_or_else(|| missing("CKA_MODULUS"))?;
            let e = objects::bytes_attr(s, obj, AttributeType::PublicExponent)?
                .ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
            pubkey::rsa_spki(alg, &n, &e)
        }
    }
}

//! Object templates and searches.
//!
//! Every key is one or two token objects carrying the key's `CKA_ID`, plus
//! for secret keys a public marker:
//!
//! | algorithm | primary object | companion |
//! |---|---|---|
//! | ECDSA P-256/P-384, RSA | `CKO_PRIVATE_KEY` (`CKA_SIGN` only) | `CKO_PUBLIC_KEY` (`CKA_VERIFY` only) |
//! | Ed25519 | `CKO_PRIVATE_KEY` `CKK_EC_EDWARDS` (`CKA_SIGN` only) | `CKO_PUBLIC_KEY` (`CKA_VERIFY` only) |
//! | ECDH P-256 | `CKO_PRIVATE_KEY` `CKK_EC` (`CKA_DERIVE` only) | `CKO_PUBLIC_KEY` (no usage) |
//! | AES-256-GCM | `CKO_SECRET_KEY` `CKK_AES` (`CKA_ENCRYPT`, `CKA_DECRYPT`) | `CKO_DATA` marker |
//! | HMAC-SHA256 | `CKO_SECRET_KEY` `CKK_GENERIC_SECRET` (`CKA_SIGN`) | `CKO_DATA` marker |
//!
//! Primary objects always set `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`,
//! `CKA_EXTRACTABLE=false`, `CKA_MODIFIABLE=false` and `CKA_COPYABLE=false`
//! explicitly, set every usage they do not need to false (SoftHSM's defaults
//! enable decrypt/unwrap/wrap), and restrict `CKA_ALLOWED_MECHANISMS` to the
//! one mechanism of their algorithm. They are found with a query that
//! requires the protection attributes and checked ([`check_protection`])
//! when found, again whenever their cached handle is older than
//! [`crate::PROTECTION_RECHECK_INTERVAL`], and right after any failed
//! operation, so an object planted without them is never used and one that
//! lost them behind the token's back is not used beyond that interval.
//!
//! The companion tells "this key never existed / was destroyed" (nothing
//! left: `NotFound`) apart from "its key object vanished or was damaged"
//! (companion still there: `Integrity`). The marker is a public
//! `CKO_DATA` object (`CKA_APPLICATION` = [`APPLICATION`], `CKA_VALUE` = the
//! key's `CKA_ID`, `CKA_LABEL` = its name); it holds nothing secret.
//!
//! An agreement's shared secret is a session object
//! ([`shared_secret_template`]): never on the token, sensitive,
//! non-extractable, destroyed when the agreement ends.

use crate::error::ck;
use crate::handle::KeyId;
use crate::pubkey;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use keystore_backend::{Algorithm, Error, Result};

/// `CKA_APPLICATION` of the marker objects.
pub(crate) const APPLICATION: &[u8] = b"keystore-rs/backend-pkcs11 key marker v1";

/// The kind of key an algorithm needs on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `CKK_EC`: ECDSA P-256 and P-384, ECDH P-256.
    Ec,
    /// `CKK_EC_EDWARDS`: Ed25519.
    Ed,
    Rsa,
    Aes,
    Hmac,
}

/// Why an algorithm has no PKCS#11 mapping here: ML-DSA-65 (SoftHSM 2.6
/// has no ML-DSA, and this crate maps it to no mechanism).
pub(crate) fn not_offered(alg: Algorithm) -> Error {
    Error::unsupported(format!(
        "{alg} keys are not offered by the PKCS#11 backend: it maps them to no PKCS#11 \
         mechanism (SoftHSM 2.6 has no ML-DSA)"
    ))
}

impl Kind {
    /// The kind of `alg`'s keys; [`not_offered`] for ML-DSA-65.
    pub(crate) fn of(alg: Algorithm) -> Result<Kind> {
        Ok(match alg {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 | Algorithm::EcdhP256 => {
                Kind::Ec
            }
            Algorithm::Ed25519 => Kind::Ed,
            Algorithm::Rsa2048PssSha256
            | Algorithm::Rsa2048Pkcs1Sha256
            | Algorithm::Rsa3072PssSha256
            | Algorithm::Rsa3072Pkcs1Sha256 => Kind::Rsa,
            Algorithm::Aes256Gcm => Kind::Aes,
            Algorithm::HmacSha256 => Kind::Hmac,
            Algorithm::MlDsa65 => return Err(not_offered(alg)),
        })
    }

    pub(crate) fn key_type(self) -> KeyType {
        match self {
            Kind::Ec => KeyType::EC,
            Kind::Ed => KeyType::EC_EDWARDS,
            Kind::Rsa => KeyType::RSA,
            Kind::Aes => KeyType::AES,
            Kind::Hmac => KeyType::GENERIC_SECRET,
        }
    }

    pub(crate) fn asymmetric(self) -> bool {
        matches!(self, Kind::Ec | Kind::Ed | Kind::Rsa)
    }

    pub(crate) fn primary_class(self) -> ObjectClass {
        if self.asymmetric() {
            ObjectClass::PRIVATE_KEY
        } else {
            ObjectClass::SECRET_KEY
        }
    }

    /// The mechanisms a primary object of this kind may be restricted to.
    pub(crate) fn mechanisms(self) -> &'static [MechanismType] {
        match self {
            Kind::Ec => &[MechanismType::ECDSA, MechanismType::ECDH1_DERIVE],
            Kind::Ed => &[MechanismType::EDDSA],
            Kind::Rsa => &[
                MechanismType::SHA256_RSA_PKCS_PSS,
                MechanismType::SHA256_RSA_PKCS,
            ],
            Kind::Aes => &[MechanismType::AES_GCM],
            Kind::Hmac => &[MechanismType::SHA256_HMAC],
        }
    }

    /// The kind of a key type, if this crate makes keys of it.
    pub(crate) fn of_key_type(kt: KeyType) -> Option<Kind> {
        [Kind::Ec, Kind::Ed, Kind::Rsa, Kind::Aes, Kind::Hmac]
            .into_iter()
            .find(|k| k.key_type() == kt)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ec => "EC private key",
            Kind::Ed => "EdDSA private key",
            Kind::Rsa => "RSA private key",
            Kind::Aes => "AES secret key",
            Kind::Hmac => "generic secret (HMAC) key",
        }
    }
}

/// The protection every primary object carries; the first four are also
/// required by [`primary_query`].
fn protection() -> [Attribute; 6] {
    [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
    ]
}

/// The one mechanism a key may be used with (`CKA_ALLOWED_MECHANISMS`):
/// a key serves one algorithm and, for RSA, one padding scheme.
/// [`not_offered`] for ML-DSA-65.
pub(crate) fn allowed_mechanism(alg: Algorithm) -> Result<MechanismType> {
    Ok(match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => MechanismType::ECDSA,
        Algorithm::Ed25519 => MechanismType::EDDSA,
        Algorithm::EcdhP256 => MechanismType::ECDH1_DERIVE,
        Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256 => {
            MechanismType::SHA256_RSA_PKCS_PSS
        }
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
            MechanismType::SHA256_RSA_PKCS
        }
        Algorithm::Aes256Gcm => MechanismType::AES_GCM,
        Algorithm::HmacSha256 => MechanismType::SHA256_HMAC,
        Algorithm::MlDsa65 => return Err(not_offered(alg)),
    })
}

/// Public and private templates for `C_GenerateKeyPair`. An ECDH key's
/// private object derives (`CKA_DERIVE`) and never signs; every other
/// private object signs and never derives.
pub(crate) fn keypair_templates(
    alg: Algorithm,
    id: &KeyId,
    label: &str,
) -> Result<(Vec<Attribute>, Vec<Attribute>)> {
    let kind = Kind::of(alg)?;
    let agree = alg == Algorithm::EcdhP256;
    let mut public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(kind.key_type()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Verify(!agree),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let mut private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(kind.key_type()),
        Attribute::Sign(!agree),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(agree),
        Attribute::AllowedMechanisms(vec![allowed_mechanism(alg)?]),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    private.extend(protection());
    match pubkey::ec_params(alg) {
        Some(params) => public.push(Attribute::EcParams(params.to_vec())),
        None => {
            let bits = alg.rsa_bits().unwrap_or(3072) as u64;
            public.push(Attribute::ModulusBits(Ulong::from(bits)));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            public.push(Attribute::VerifyRecover(false));
            private.push(Attribute::SignRecover(false));
        }
    }
    Ok((public, private))
}

/// Usage attributes of a secret key: exactly the operations it serves.
fn secret_usages(kind: Kind) -> [Attribute; 6] {
    let aes = kind == Kind::Aes;
    [
        Attribute::Encrypt(aes),
        Attribute::Decrypt(aes),
        Attribute::Sign(!aes),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

/// Template for `C_GenerateKey` of a 32-byte secret key.
pub(crate) fn secret_template(alg: Algorithm, id: &KeyId, label: &str) -> Result<Vec<Attribute>> {
    let kind = Kind::of(alg)?;
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(kind.key_type()),
        Attribute::ValueLen(Ulong::from(32u64)),
        Attribute::AllowedMechanisms(vec![allowed_mechanism(alg)?]),
        Attribute::Derive(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    t.extend(secret_usages(kind));
    t.extend(protection());
    Ok(t)
}

/// Template for `C_CreateObject` of an imported secret. The caller zeroizes
/// the `CKA_VALUE` copy inside it afterwards ([`zeroize_values`]).
pub(crate) fn import_template(
    alg: Algorithm,
    id: &KeyId,
    label: &str,
    value: &[u8],
) -> Result<Vec<Attribute>> {
    let kind = Kind::of(alg)?;
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(kind.key_type()),
        Attribute::AllowedMechanisms(vec![allowed_mechanism(alg)?]),
        Attribute::Derive(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(value.to_vec()),
    ];
    t.extend(secret_usages(kind));
    t.extend(protection());
    Ok(t)
}

/// Length of the ECDH P-256 shared secret `Z` (the X coordinate), in bytes.
pub(crate) const SHARED_SECRET_LEN: u64 = 32;

/// Template for the `C_DeriveKey` (`CKM_ECDH1_DERIVE`) result of one
/// agreement: the shared secret `Z` as a session object (`CKA_TOKEN=false`)
/// of [`SHARED_SECRET_LEN`] bytes, private, sensitive, non-extractable,
/// unmodifiable, with every usage off, for nothing but `C_DigestKey` with
/// `CKM_SHA256`.
///
/// `CKA_MODIFIABLE=false` comes last: SoftHSM 2.6.1 applies a
/// `C_DeriveKey` template in order and refuses every attribute after it
/// (`CKR_ATTRIBUTE_READ_ONLY`).
pub(crate) fn shared_secret_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(Ulong::from(SHARED_SECRET_LEN)),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Copyable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(vec![MechanismType::SHA256]),
        Attribute::Modifiable(false),
    ]
}

/// Overwrites every `CKA_VALUE` buffer in `template`.
pub(crate) fn zeroize_values(template: &mut [Attribute]) {
    for a in template {
        if let Attribute::Value(v) = a {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// Template for the marker of a secret key.
pub(crate) fn marker_template(id: &KeyId, label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Application(APPLICATION.to_vec()),
        Attribute::Value(id.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Finds the key's primary object, only if it carries every protection
/// attribute and the expected key type.
pub(crate) fn primary_query(kind: Kind, id: &KeyId) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(kind.primary_class()),
        Attribute::KeyType(kind.key_type()),
        Attribute::Id(id.as_bytes().to_vec()),
    ];
    // CKA_MODIFIABLE and CKA_COPYABLE are not part of the query: they
    // protect the object, but a token that ignores them would hide every key.
    t.extend(protection().into_iter().take(4));
    t
}

/// Finds the key's public object.
pub(crate) fn public_query(kind: Kind, id: &KeyId) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(kind.key_type()),
        Attribute::Token(true),
        Attribute::Id(id.as_bytes().to_vec()),
    ]
}

/// Finds the key's marker.
pub(crate) fn marker_query(id: &KeyId) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(APPLICATION.to_vec()),
        Attribute::Value(id.as_bytes().to_vec()),
    ]
}

/// Every object of any class carrying the key's `CKA_ID` (not the marker).
pub(crate) fn id_query(id: &KeyId) -> Vec<Attribute> {
    vec![Attribute::Id(id.as_bytes().to_vec())]
}

/// `C_FindObjects` with `template`.
pub(crate) fn find(s: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
    s.find_objects(template).map_err(ck("C_FindObjects"))
}

/// Reads one byte-string attribute, matched by type (never by position:
/// `get_attributes` silently omits attributes it cannot return).
pub(crate) fn bytes_attr(
    s: &Session,
    obj: ObjectHandle,
    ty: AttributeType,
) -> Result<Option<Vec<u8>>> {
    let attrs = s
        .get_attributes(obj, &[ty])
        .map_err(ck(format!("C_GetAttributeValue({ty})")))?;
    Ok(attrs.into_iter().find_map(|a| match (a, ty) {
        (Attribute::Id(v), AttributeType::Id)
        | (Attribute::Value(v), AttributeType::Value)
        | (Attribute::EcPoint(v), AttributeType::EcPoint)
        | (Attribute::EcParams(v), AttributeType::EcParams)
        | (Attribute::Modulus(v), AttributeType::Modulus)
        | (Attribute::PublicExponent(v), AttributeType::PublicExponent)
        | (Attribute::Label(v), AttributeType::Label) => Some(v),
        _ => None,
    }))
}

/// Reads `CKA_KEY_TYPE`, matched by type.
pub(crate) fn key_type_of(s: &Session, obj: ObjectHandle) -> Result<Option<KeyType>> {
    let attrs = s
        .get_attributes(obj, &[AttributeType::KeyType])
        .map_err(ck("C_GetAttributeValue(CKA_KEY_TYPE)"))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(k),
        _ => None,
    }))
}

/// Reads `CKA_CLASS`, matched by type.
pub(crate) fn class_of(s: &Session, obj: ObjectHandle) -> Result<Option<ObjectClass>> {
    let attrs = s
        .get_attributes(obj, &[AttributeType::Class])
        .map_err(ck("C_GetAttributeValue(CKA_CLASS)"))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Class(c) => Some(c),
        _ => None,
    }))
}

/// The outcome of [`check_protection`].
#[derive(Debug)]
pub(crate) enum Check {
    /// The object is the key's and carries every protection attribute.
    Intact,
    /// The object is the key's but an attribute is missing or wrong.
    Damaged(String),
    /// The object is not (or no longer) the key's.
    NotThisKey,
}

/// Re-reads a primary object's `CKA_ID` and protection attributes in one
/// call and compares them with what this crate set at creation
/// (`CKA_ALLOWED_MECHANISMS` must be exactly one of `allowed`). A token
/// object that lost attributes (SoftHSM loads an object file cut at an
/// attribute boundary as a valid object with defaults for the rest) or had
/// them changed is `Damaged`; attributes are matched by type.
pub(crate) fn check_protection(
    s: &Session,
    obj: ObjectHandle,
    id: &KeyId,
    allowed: &[MechanismType],
) -> Result<Check> {
    let types = [
        AttributeType::Id,
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::Modifiable,
        AttributeType::Copyable,
        AttributeType::AllowedMechanisms,
    ];
    let attrs = s
        .get_attributes(obj, &types)
        .map_err(ck("C_GetAttributeValue(protection attributes)"))?;
    let mut seen_id = None;
    let mut ok = [false; 7];
    let mut mechanisms = None;
    for a in attrs {
        match a {
            Attribute::Id(v) => seen_id = Some(v),
            Attribute::Token(true) => ok[0] = true,
            Attribute::Private(true) => ok[1] = true,
            Attribute::Sensitive(true) => ok[2] = true,
            Attribute::Extractable(false) => ok[3] = true,
            Attribute::Modifiable(false) => ok[4] = true,
            Attribute::Copyable(false) => ok[5] = true,
            Attribute::AllowedMechanisms(m) => {
                ok[6] = m.len() == 1 && allowed.contains(&m[0]);
                mechanisms = Some(m);
            }
            _ => {}
        }
    }
    if seen_id.as_deref() != Some(id.as_bytes()) {
        return Ok(Check::NotThisKey);
    }
    let names = [
        "CKA_TOKEN",
        "CKA_PRIVATE",
        "CKA_SENSITIVE",
        "CKA_EXTRACTABLE",
        "CKA_MODIFIABLE",
        "CKA_COPYABLE",
        "CKA_ALLOWED_MECHANISMS",
    ];
    let bad: Vec<&str> = names
        .iter()
        .zip(ok)
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    Ok(if bad.is_empty() {
        Check::Intact
    } else {
        let mut why = format!("{} missing or changed", bad.join(", "));
        if let (false, Some(m)) = (ok[6], mechanisms) {
            let names: Vec<String> = m.iter().map(|m| m.to_string()).collect();
            why.push_str(&format!(
                "; it allows [{}], this operation needs [{}]",
                names.join(", "),
                allowed
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Check::Damaged(why)
    })
}

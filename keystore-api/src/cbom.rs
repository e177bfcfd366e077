//! A store's [`Inventory`] as a CycloneDX 1.6 CBOM (cryptography bill of
//! materials), JSON.
//!
//! - `metadata.component` is the store (`bom-ref` `store`): backend, store
//!   id and description as `keystore:*` properties;
//! - each key version is a `cryptographic-asset` of asset type
//!   `related-crypto-material` (`private-key` or `secret-key`, `bom-ref`
//!   `key:NAME:vN`) with its state, dates and size; cryptoperiod, usages,
//!   origin, fingerprint and the like are `keystore:*` properties;
//! - each algorithm in use (by keys or certificates) is an `algorithm`
//!   asset (`bom-ref` `algorithm:ID`);
//! - each certificate is a `certificate` asset whose `subjectPublicKeyRef`
//!   is the store's key version with the same public-key fingerprint, or
//!   else a `public-key` asset of its own (`bom-ref` `public-key:FP`).
//!
//! Field names and enumerations follow the CycloneDX 1.6 JSON schema
//! (`cryptoProperties`); keyctl's tests validate the output against it.

use crate::algorithm::{Algorithm, EcCurve, KeyClass, Usages};
use crate::clock::rfc3339;
use crate::{Inventory, KeyAsset, PublicKeyKind, VersionAsset};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A certificate to list in the CBOM beside the store's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateAsset {
    /// What it is for: `root-ca`, `intermediate-ca`, `ocsp-signer`,
    /// `device`, ...
    pub role: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// `sha256:` digest of the DER (names the asset: `certificate:DIGEST`).
    pub digest: String,
    /// Subject distinguished name, as text.
    pub subject: String,
    /// Issuer distinguished name, as text.
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// `sha256:` fingerprint of the SubjectPublicKeyInfo (the keystore's
    /// fingerprint format): links the certificate to a key version.
    pub spki_fingerprint: String,
    /// The subject key's algorithm, when known.
    pub public_key_algorithm: Option<Algorithm>,
    /// The signature algorithm as a keystore algorithm, when it is one.
    pub signature_algorithm: Option<Algorithm>,
    /// The signature algorithm's OID (dotted), when it is not a keystore
    /// algorithm (or as well).
    pub signature_algorithm_oid: Option<String>,
    /// The file extension it is kept under (`pem`, `der`, `crt`), if a file.
    pub extension: Option<String>,
    /// Further `keystore:*` properties (device id, source, revocation, ...).
    pub properties: Vec<(String, String)>,
}

/// The CycloneDX 1.6 JSON of `inv` and `certificates`, made by `tool_version`
/// of the keystore tools. A random `serialNumber` each call.
pub fn to_cyclonedx(
    inv: &Inventory,
    certificates: &[CertificateAsset],
    tool_version: &str,
) -> Value {
    let env = Environment::of(&inv.store.backend);
    let mut algorithms: BTreeMap<Algorithm, Usages> = BTreeMap::new();
    let mut by_fingerprint: BTreeMap<&str, String> = BTreeMap::new();
    let mut components = Vec::new();
    for key in &inv.keys {
        let usages = algorithms.entry(key.algorithm).or_insert(Usages::empty());
        *usages = *usages | key.usages;
        for v in &key.versions {
            let r = key_ref(key, v);
            if let Some(fp) = v.fingerprint.as_deref() {
                by_fingerprint.entry(fp).or_insert_with(|| r.clone());
            }
            components.push(key_component(key, v, r, &env));
        }
    }
    let mut extra_algorithms: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen_certificates = std::collections::BTreeSet::new();
    for cert in certificates {
        if !seen_certificates.insert(cert.digest.as_str()) {
            continue;
        }
        let mut sig_ref = None;
        if let Some(a) = cert.signature_algorithm {
            algorithms.entry(a).or_insert(Usages::empty());
            sig_ref = Some(algorithm_ref(a));
        } else if let Some(oid) = &cert.signature_algorithm_oid {
            let r = format!("algorithm:oid:{oid}");
            extra_algorithms
                .entry(r.clone())
                .or_insert_with(|| oid_algorithm(&r, oid));
            sig_ref = Some(r);
        }
        let key_ref = match by_fingerprint.get(cert.spki_fingerprint.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r = format!("public-key:{}", cert.spki_fingerprint);
                if let Some(a) = cert.public_key_algorithm {
                    algorithms.entry(a).or_insert(Usages::empty());
                }
                components.push(public_key_component(cert, &r));
                by_fingerprint.insert(cert.spki_fingerprint.as_str(), r.clone());
                r
            }
        };
        components.push(certificate_component(cert, sig_ref, &key_ref));
    }
    for (a, usages) in &algorithms {
        components.push(algorithm_component(*a, *usages, &env));
    }
    components.extend(extra_algorithms.into_values());

    let mut store_props = vec![
        prop("keystore:backend", &inv.store.backend),
        prop("keystore:created", &rfc3339(inv.store.created_at)),
    ];
    if let Some(id) = &inv.store.store_id {
        store_props.push(prop("keystore:store-id", id));
    }
    if let Some(d) = &inv.store.description {
        store_props.push(prop("keystore:backend-description", d));
    }
    if let Some(t) = inv.store.decommissioned_at {
        store_props.push(prop("keystore:decommissioned", &rfc3339(t)));
    }
    let store_name = match &inv.store.store_id {
        Some(id) => format!("keystore {id}"),
        None => format!("keystore ({} backend)", inv.store.backend),
    };
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inv.taken_at),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "keystore",
                    "version": tool_version,
                }]
            },
            "component": {
                "type": "data",
                "bom-ref": "store",
                "name": store_name,
                "properties": store_props,
            }
        },
        "components": components,
    })
}

/// A `urn:uuid:` random (version 4) UUID.
fn serial_number() -> String {
    let mut b = [0u8; 16];
    // A failing OS RNG leaves zeros: the serial is still well-formed.
    let _ = getrandom::getrandom(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn prop(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

/// The `bom-ref` of a key version.
fn key_ref(key: &KeyAsset, v: &VersionAsset) -> String {
    format!("key:{}:v{}", key.name, v.version)
}

/// The `bom-ref` of an algorithm component.
fn algorithm_ref(a: Algorithm) -> String {
    format!("algorithm:{}", a.id())
}

/// What the backend says about where keys live and run.
struct Environment {
    execution: &'static str,
    format: &'static str,
    mechanism: &'static str,
}

impl Environment {
    fn of(backend: &str) -> Environment {
        match backend {
            "soft" => Environment {
                execution: "software-plain-ram",
                format: "soft-store sealed record (AES-256-GCM)",
                mechanism:
                    "soft backend: sealed store file, key encryption key from the unlock secret",
            },
            "pkcs11" => Environment {
                execution: "unknown",
                format: "PKCS#11 object (CKA_SENSITIVE, not extractable)",
                mechanism: "PKCS#11 token",
            },
            "tpm" => Environment {
                execution: "hardware",
                format: "TPM 2.0 key blob (TPM2B_PRIVATE under the storage key)",
                mechanism: "TPM 2.0",
            },
            _ => Environment {
                execution: "unknown",
                format: "backend object",
                mechanism: "keystore backend",
            },
        }
    }
}

/// The CycloneDX implementation platform of this build.
fn platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "x86" => "x86_32",
        "aarch64" => "armv8-a",
        "arm" => "armv7-a",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        _ => "other",
    }
}

/// Size in bits of a key of `a` (the public key's, for asymmetric keys).
fn key_bits(a: Algorithm, v: &VersionAsset) -> Option<u32> {
    if let Some(pk) = &v.public_key {
        return Some(pk.bits);
    }
    match (a.secret_len(), a.ec_curve(), a.rsa_bits()) {
        (Some(len), _, _) => Some(len as u32 * 8),
        (_, Some(c), _) => Some(c.field_len() as u32 * 8),
        (_, _, Some(bits)) => Some(bits as u32),
        _ if a == Algorithm::Ed25519 => Some(256),
        _ => None,
    }
}

fn key_component(key: &KeyAsset, v: &VersionAsset, r: String, env: &Environment) -> Value {
    let mut rcm = Map::new();
    let kind = match key.algorithm.class() {
        KeyClass::Asymmetric => "private-key",
        KeyClass::Symmetric => "secret-key",
    };
    rcm.insert("type".into(), kind.into());
    rcm.insert("id".into(), format!("{}/v{}", key.name, v.version).into());
    rcm.insert("state".into(), v.state.to_string().into());
    rcm.insert("algorithmRef".into(), algorithm_ref(key.algorithm).into());
    rcm.insert("creationDate".into(), rfc3339(v.created_at).into());
    if let Some(t) = v.activated_at {
        rcm.insert("activationDate".into(), rfc3339(t).into());
    }
    rcm.insert("updateDate".into(), rfc3339(v.state_changed_at).into());
    let expires = match (v.grace_end, v.activated_at, key.cryptoperiod) {
        (Some(end), _, _) => Some(end),
        (None, Some(at), Some(period)) if v.deactivated_at.is_none() => Some(at + period),
        _ => None,
    };
    if let Some(t) = expires.filter(|_| v.destroyed_at.is_none()) {
        rcm.insert("expirationDate".into(), rfc3339(t).into());
    }
    if let Some(bits) = key_bits(key.algorithm, v) {
        rcm.insert("size".into(), bits.into());
    }
    rcm.insert("format".into(), env.format.into());
    rcm.insert("securedBy".into(), json!({ "mechanism": env.mechanism }));

    let mut props = vec![
        prop("keystore:key", &key.name),
        prop("keystore:version", &v.version.to_string()),
        prop("keystore:algorithm", key.algorithm.id()),
        prop("keystore:usages", &key.usages.to_string()),
        prop("keystore:origin", &v.origin.to_string()),
        prop("keystore:internal", &key.internal.to_string()),
        prop("keystore:backup-eligible", &key.backup_eligible.to_string()),
    ];
    if let Some(p) = key.cryptoperiod {
        props.push(prop(
            "keystore:cryptoperiod-seconds",
            &p.whole_seconds().to_string(),
        ));
    }
    if let Some(t) = v.grace_end {
        props.push(prop("keystore:grace-end", &rfc3339(t)));
    }
    if let Some(t) = v.deactivated_at {
        props.push(prop("keystore:deactivation-date", &rfc3339(t)));
    }
    if let Some(t) = v.destroyed_at {
        props.push(prop("keystore:destruction-date", &rfc3339(t)));
    }
    if let Some(t) = key.destroyed_at {
        props.push(prop("keystore:key-destroyed", &rfc3339(t)));
    }
    if let Some(fp) = &v.fingerprint {
        props.push(prop("keystore:public-key-fingerprint", fp));
    }
    if let Some(pk) = &v.public_key {
        let (alg, curve) = match pk.kind {
            PublicKeyKind::Ec(c) => ("id-ecPublicKey", Some(curve_name(c))),
            PublicKeyKind::Rsa => ("rsaEncryption", None),
            PublicKeyKind::Ed25519 => ("Ed25519", None),
            PublicKeyKind::MlDsa65 => ("ML-DSA-65", None),
        };
        props.push(prop("keystore:public-key-algorithm", alg));
        if let Some(c) = curve {
            props.push(prop("keystore:public-key-curve", c));
        }
        props.push(prop("keystore:public-key-size", &pk.bits.to_string()));
    }
    if let Some(limit) = key.encryption_limit {
        props.push(prop("keystore:encryption-limit", &limit.to_string()));
    }
    if let Some(u) = v.encryptions {
        props.push(prop(
            "keystore:encryptions-reserved",
            &u.reserved.to_string(),
        ));
    }
    json!({
        "type": "cryptographic-asset",
        "bom-ref": r,
        "name": format!("{} v{}", key.name, v.version),
        "version": v.version.to_string(),
        "cryptoProperties": {
            "assetType": "related-crypto-material",
            "relatedCryptoMaterialProperties": rcm,
        },
        "properties": props,
    })
}

fn curve_name(c: EcCurve) -> &'static str {
    match c {
        EcCurve::P256 => "secp256r1",
        EcCurve::P384 => "secp384r1",
    }
}

/// CycloneDX facts of an algorithm: name, primitive, parameter set, curve,
/// classical and NIST quantum security levels, OID, mode, padding.
struct AlgorithmFacts {
    name: &'static str,
    primitive: &'static str,
    parameter_set: Option<&'static str>,
    curve: Option<&'static str>,
    classical: u32,
    quantum: u32,
    oid: &'static str,
    mode: Option<&'static str>,
    padding: Option<&'static str>,
}

// One row per algorithm: the table reads better than rustfmt's layout.
#[rustfmt::skip]
fn facts(a: Algorithm) -> AlgorithmFacts {
    let f = |name, primitive, parameter_set, curve, classical, quantum, oid| AlgorithmFacts {
        name, primitive, parameter_set, curve, classical, quantum, oid, mode: None, padding: None,
    };
    match a {
        Algorithm::EcdsaP256Sha256 => f("ECDSA-P256-SHA256", "signature", None, Some("secp256r1"), 128, 0, "1.2.840.10045.4.3.2"),
        Algorithm::EcdsaP384Sha384 => f("ECDSA-P384-SHA384", "signature", None, Some("secp384r1"), 192, 0, "1.2.840.10045.4.3.3"),
        Algorithm::Ed25519 => f("Ed25519", "signature", None, Some("Edwards25519"), 128, 0, "1.3.101.112"),
        Algorithm::EcdhP256 => f("ECDH-P256-SHA256-KDF", "key-agree", None, Some("secp256r1"), 128, 0, "1.3.132.1.12"),
        Algorithm::MlDsa65 => f("ML-DSA-65", "signature", Some("65"), None, 192, 3, "2.16.840.1.101.3.4.3.18"),
        Algorithm::Rsa2048PssSha256 => f("RSASSA-PSS-2048-SHA256", "signature", Some("2048"), None, 112, 0, "1.2.840.113549.1.1.10"),
        Algorithm::Rsa3072PssSha256 => f("RSASSA-PSS-3072-SHA256", "signature", Some("3072"), None, 128, 0, "1.2.840.113549.1.1.10"),
        Algorithm::Rsa2048Pkcs1Sha256 => AlgorithmFacts {
            padding: Some("pkcs1v15"),
            ..f("RSASSA-PKCS1-v1_5-2048-SHA256", "signature", Some("2048"), None, 112, 0, "1.2.840.113549.1.1.11")
        },
        Algorithm::Rsa3072Pkcs1Sha256 => AlgorithmFacts {
            padding: Some("pkcs1v15"),
            ..f("RSASSA-PKCS1-v1_5-3072-SHA256", "signature", Some("3072"), None, 128, 0, "1.2.840.113549.1.1.11")
        },
        Algorithm::Aes256Gcm => AlgorithmFacts {
            mode: Some("gcm"),
            ..f("AES-256-GCM", "ae", Some("256"), None, 256, 5, "2.16.840.1.101.3.4.1.46")
        },
        Algorithm::HmacSha256 => f("HMAC-SHA256", "mac", Some("256"), None, 256, 5, "1.2.840.113549.2.9"),
    }
}

/// CycloneDX crypto functions of keys with `usages` (and key generation).
fn functions(usages: Usages) -> Vec<&'static str> {
    let mut out = vec!["keygen"];
    for (u, f) in [
        (Usages::SIGN, "sign"),
        (Usages::VERIFY, "verify"),
        (Usages::ENCRYPT, "encrypt"),
        (Usages::DECRYPT, "decrypt"),
        (Usages::MAC, "tag"),
        (Usages::DERIVE, "keyderive"),
        (Usages::AGREE, "keyderive"),
    ] {
        if usages.contains(u) && !out.contains(&f) {
            out.push(f);
        }
    }
    if usages.contains(Usages::WRAP) {
        for f in ["encrypt", "decrypt"] {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn algorithm_component(a: Algorithm, usages: Usages, env: &Environment) -> Value {
    let f = facts(a);
    let mut p = Map::new();
    p.insert("primitive".into(), f.primitive.into());
    if let Some(s) = f.parameter_set {
        p.insert("parameterSetIdentifier".into(), s.into());
    }
    if let Some(c) = f.curve {
        p.insert("curve".into(), c.into());
    }
    p.insert("executionEnvironment".into(), env.execution.into());
    p.insert("implementationPlatform".into(), platform().into());
    if let Some(m) = f.mode {
        p.insert("mode".into(), m.into());
    }
    if let Some(pad) = f.padding {
        p.insert("padding".into(), pad.into());
    }
    p.insert("cryptoFunctions".into(), functions(usages).into());
    p.insert("classicalSecurityLevel".into(), f.classical.into());
    p.insert("nistQuantumSecurityLevel".into(), f.quantum.into());
    json!({
        "type": "cryptographic-asset",
        "bom-ref": algorithm_ref(a),
        "name": f.name,
        "cryptoProperties": {
            "assetType": "algorithm",
            "algorithmProperties": p,
            "oid": f.oid,
        },
        "properties": [prop("keystore:algorithm", a.id())],
    })
}

/// A signature algorithm the keystore does not implement, known by OID.
fn oid_algorithm(r: &str, oid: &str) -> Value {
    json!({
        "type": "cryptographic-asset",
        "bom-ref": r,
        "name": oid,
        "cryptoProperties": {
            "assetType": "algorithm",
            "algorithmProperties": { "primitive": "signature" },
            "oid": oid,
        },
    })
}

/// The subject key of a certificate whose private key is not in the store.
fn public_key_component(cert: &CertificateAsset, r: &str) -> Value {
    let mut rcm = Map::new();
    rcm.insert("type".into(), "public-key".into());
    rcm.insert("id".into(), cert.spki_fingerprint.clone().into());
    if let Some(a) = cert.public_key_algorithm {
        rcm.insert("algorithmRef".into(), algorithm_ref(a).into());
        if let Some(bits) = match (a.ec_curve(), a.rsa_bits()) {
            (Some(c), _) => Some(c.field_len() * 8),
            (_, Some(b)) => Some(b),
            _ if a == Algorithm::Ed25519 => Some(256),
            _ => None,
        } {
            rcm.insert("size".into(), bits.into());
        }
    }
    rcm.insert("format".into(), "X.509 SubjectPublicKeyInfo (DER)".into());
    json!({
        "type": "cryptographic-asset",
        "bom-ref": r,
        "name": format!("public key of {}", cert.subject),
        "cryptoProperties": {
            "assetType": "related-crypto-material",
            "relatedCryptoMaterialProperties": rcm,
        },
        "properties": [prop("keystore:public-key-fingerprint", &cert.spki_fingerprint)],
    })
}

fn certificate_component(cert: &CertificateAsset, sig_ref: Option<String>, key_ref: &str) -> Value {
    let mut c = Map::new();
    c.insert("subjectName".into(), cert.subject.clone().into());
    c.insert("issuerName".into(), cert.issuer.clone().into());
    c.insert("notValidBefore".into(), rfc3339(cert.not_before).into());
    c.insert("notValidAfter".into(), rfc3339(cert.not_after).into());
    if let Some(r) = sig_ref {
        c.insert("signatureAlgorithmRef".into(), r.into());
    }
    c.insert("subjectPublicKeyRef".into(), key_ref.into());
    c.insert("certificateFormat".into(), "X.509".into());
    if let Some(ext) = &cert.extension {
        c.insert("certificateExtension".into(), ext.clone().into());
    }
    let mut props = vec![
        prop("keystore:certificate-role", &cert.role),
        prop("keystore:serial", &cert.serial),
        prop("keystore:digest", &cert.digest),
        prop("keystore:public-key-fingerprint", &cert.spki_fingerprint),
    ];
    if let Some(oid) = &cert.signature_algorithm_oid {
        props.push(prop("keystore:signature-algorithm-oid", oid));
    }
    props.extend(cert.properties.iter().map(|(n, v)| prop(n, v)));
    json!({
        "type": "cryptographic-asset",
        "bom-ref": format!("certificate:{}", cert.digest),
        "name": cert.subject,
        "cryptoProperties": {
            "assetType": "certificate",
            "certificateProperties": c,
        },
        "properties": props,
    })
}

#[cfg(test)]
mod tests;

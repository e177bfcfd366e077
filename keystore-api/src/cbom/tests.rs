//! The CBOM serializer on a hand-made inventory: shape, states, dates,
//! references and certificate links. (keyctl's `inventory` test validates
//! real output against the CycloneDX 1.6 JSON schema.)

use super::{to_cyclonedx, CertificateAsset};
use crate::algorithm::{Algorithm, Usages};
use crate::keystore::inventory::{
    Inventory, KeyAsset, PublicKeyFacts, StoreAsset, VersionAsset, AUDIT_KEY_NAME,
};
use crate::metadata::{KeyState, Origin};
use crate::EncryptionUsage;
use serde_json::Value;
use std::collections::BTreeSet;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-01-02 03:04:05 UTC);
const FP: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn version(n: u32, state: KeyState) -> VersionAsset {
    VersionAsset {
        version: n,
        state,
        origin: Origin::Generated,
        created_at: T0,
        activated_at: Some(T0),
        deactivated_at: None,
        destroyed_at: None,
        state_changed_at: T0,
        grace_end: None,
        fingerprint: None,
        public_key: None,
        encryptions: None,
    }
}

fn key(name: &str, algorithm: Algorithm, versions: Vec<VersionAsset>) -> KeyAsset {
    KeyAsset {
        name: name.into(),
        internal: false,
        algorithm,
        usages: algorithm.default_usages(),
        backup_eligible: false,
        cryptoperiod: None,
        encryption_limit: None,
        created_at: T0,
        destroyed_at: None,
        versions,
    }
}

fn inventory() -> Inventory {
    let mut signing = version(1, KeyState::Deactivated);
    signing.fingerprint = Some(FP.into());
    signing.public_key = Some(PublicKeyFacts::of(Algorithm::EcdsaP256Sha256, b"spki"));
    signing.deactivated_at = Some(T0 + Duration::hours(1));
    signing.grace_end = Some(T0 + Duration::days(1));
    let mut current = version(2, KeyState::Active);
    current.fingerprint = Some("sha256:ff".into());
    let mut ecdsa = key("ident", Algorithm::EcdsaP256Sha256, vec![signing, current]);
    ecdsa.cryptoperiod = Some(Duration::days(90));
    let mut gone = version(1, KeyState::Destroyed);
    gone.destroyed_at = Some(T0 + Duration::hours(2));
    let mut aes_v = version(2, KeyState::Active);
    aes_v.encryptions = Some(EncryptionUsage {
        reserved: 5,
        limit: 1000,
    });
    let mut aes = key("data", Algorithm::Aes256Gcm, vec![gone, aes_v]);
    aes.encryption_limit = Some(1000);
    let mut audit = key(
        AUDIT_KEY_NAME,
        Algorithm::HmacSha256,
        vec![version(1, KeyState::Active)],
    );
    audit.internal = true;
    Inventory {
        taken_at: T0 + Duration::days(2),
        store: StoreAsset {
            backend: "soft".into(),
            store_id: None,
            description: Some("/var/lib/keystore".into()),
            created_at: T0,
            decommissioned_at: None,
        },
        keys: vec![audit, ecdsa, aes],
    }
}

fn certificate(digest: &str, fingerprint: &str) -> CertificateAsset {
    CertificateAsset {
        role: "device".into(),
        serial: "01ab".into(),
        digest: digest.into(),
        subject: "CN=dev-1".into(),
        issuer: "CN=Intermediate".into(),
        not_before: T0,
        not_after: T0 + Duration::days(30),
        spki_fingerprint: fingerprint.into(),
        public_key_algorithm: Some(Algorithm::EcdsaP256Sha256),
        signature_algorithm: Some(Algorithm::EcdsaP384Sha384),
        signature_algorithm_oid: Some("1.2.840.10045.4.3.3".into()),
        extension: Some("pem".into()),
        properties: vec![("keystore:device-id".into(), "dev-1".into())],
    }
}

fn by_ref<'a>(bom: &'a Value, r: &str) -> &'a Value {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == r)
        .unwrap_or_else(|| panic!("no component {r}"))
}

fn property<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
}

#[test]
fn the_header_names_cyclonedx_1_6_with_a_random_uuid_serial() {
    let inv = inventory();
    let a = to_cyclonedx(&inv, &[], "1.2.3");
    let b = to_cyclonedx(&inv, &[], "1.2.3");
    assert_eq!(a["bomFormat"], "CycloneDX");
    assert_eq!(a["specVersion"], "1.6");
    assert_eq!(a["version"], 1);
    let serial = a["serialNumber"].as_str().unwrap();
    let uuid = serial.strip_prefix("urn:uuid:").unwrap();
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{serial}");
    assert!(uuid
        .chars()
        .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(&uuid[14..15], "4", "version 4");
    assert_ne!(a["serialNumber"], b["serialNumber"]);
    assert_eq!(a["metadata"]["timestamp"], "2026-01-04T03:04:05Z");
    assert_eq!(a["metadata"]["tools"]["components"][0]["version"], "1.2.3");
    let store = &a["metadata"]["component"];
    assert_eq!(store["bom-ref"], "store");
    assert_eq!(property(store, "keystore:backend"), Some("soft"));
    assert_eq!(
        property(store, "keystore:backend-description"),
        Some("/var/lib/keystore")
    );
}

#[test]
fn every_version_is_related_crypto_material_with_its_state_and_dates() {
    let bom = to_cyclonedx(&inventory(), &[], "0");
    let old = by_ref(&bom, "key:ident:v1");
    assert_eq!(old["type"], "cryptographic-asset");
    let rcm = &old["cryptoProperties"]["relatedCryptoMaterialProperties"];
    assert_eq!(
        old["cryptoProperties"]["assetType"],
        "related-crypto-material"
    );
    assert_eq!(rcm["type"], "private-key");
    assert_eq!(rcm["state"], "deactivated");
    assert_eq!(rcm["algorithmRef"], "algorithm:ecdsa-p256-sha256");
    assert_eq!(rcm["creationDate"], "2026-01-02T03:04:05Z");
    assert_eq!(rcm["expirationDate"], "2026-01-03T03:04:05Z", "grace end");
    assert_eq!(rcm["size"], 256);
    assert!(rcm["securedBy"]["mechanism"]
        .as_str()
        .unwrap()
        .contains("soft"));
    assert_eq!(property(old, "keystore:public-key-fingerprint"), Some(FP));
    assert_eq!(
        property(old, "keystore:public-key-curve"),
        Some("secp256r1")
    );
    assert_eq!(
        property(old, "keystore:cryptoperiod-seconds"),
        Some("7776000")
    );
    let active = by_ref(&bom, "key:ident:v2");
    let rcm = &active["cryptoProperties"]["relatedCryptoMaterialProperties"];
    assert_eq!(rcm["state"], "active");
    assert_eq!(
        rcm["expirationDate"], "2026-04-02T03:04:05Z",
        "cryptoperiod"
    );

    let gone = by_ref(&bom, "key:data:v1");
    let rcm = &gone["cryptoProperties"]["relatedCryptoMaterialProperties"];
    assert_eq!(
        (&rcm["type"], &rcm["state"]),
        (&"secret-key".into(), &"destroyed".into())
    );
    assert!(rcm.get("expirationDate").is_none());
    assert_eq!(
        property(gone, "keystore:destruction-date"),
        Some("2026-01-02T05:04:05Z")
    );
    let aes = by_ref(&bom, "key:data:v2");
    assert_eq!(property(aes, "keystore:encryption-limit"), Some("1000"));
    assert_eq!(property(aes, "keystore:encryptions-reserved"), Some("5"));
    let audit = by_ref(&bom, &format!("key:{AUDIT_KEY_NAME}:v1"));
    assert_eq!(property(audit, "keystore:internal"), Some("true"));
}

#[test]
fn each_algorithm_in_use_is_one_algorithm_asset() {
    let bom = to_cyclonedx(&inventory(), &[], "0");
    let algorithms: Vec<&Value> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cryptoProperties"]["assetType"] == "algorithm")
        .collect();
    assert_eq!(algorithms.len(), 3, "ecdsa, aes, hmac");
    let aes = by_ref(&bom, "algorithm:aes-256-gcm");
    let p = &aes["cryptoProperties"]["algorithmProperties"];
    assert_eq!(p["primitive"], "ae");
    assert_eq!(p["mode"], "gcm");
    assert_eq!(p["parameterSetIdentifier"], "256");
    assert_eq!(p["executionEnvironment"], "software-plain-ram");
    assert_eq!(p["nistQuantumSecurityLevel"], 5);
    assert_eq!(aes["cryptoProperties"]["oid"], "2.16.840.1.101.3.4.1.46");
    let funcs = p["cryptoFunctions"].as_array().unwrap();
    assert!(funcs.contains(&"encrypt".into()) && funcs.contains(&"decrypt".into()));
    let ecdsa = by_ref(&bom, "algorithm:ecdsa-p256-sha256");
    let p = &ecdsa["cryptoProperties"]["algorithmProperties"];
    assert_eq!(
        (&p["primitive"], &p["curve"]),
        (&"signature".into(), &"secp256r1".into())
    );
    assert_eq!(p["classicalSecurityLevel"], 128);
    let hmac = by_ref(&bom, "algorithm:hmac-sha256");
    assert_eq!(
        hmac["cryptoProperties"]["algorithmProperties"]["primitive"],
        "mac"
    );
}

#[test]
fn certificates_link_to_the_key_with_their_public_key_or_to_a_public_key_asset() {
    let ours = certificate("sha256:aa", FP);
    let foreign = certificate("sha256:bb", "sha256:cc");
    let bom = to_cyclonedx(&inventory(), &[ours.clone(), foreign, ours], "0");
    let certs: Vec<&Value> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cryptoProperties"]["assetType"] == "certificate")
        .collect();
    assert_eq!(certs.len(), 2, "the duplicate is listed once");
    let c = by_ref(&bom, "certificate:sha256:aa");
    let p = &c["cryptoProperties"]["certificateProperties"];
    assert_eq!(p["subjectPublicKeyRef"], "key:ident:v1");
    assert_eq!(p["signatureAlgorithmRef"], "algorithm:ecdsa-p384-sha384");
    assert_eq!(p["certificateFormat"], "X.509");
    assert_eq!(p["certificateExtension"], "pem");
    assert_eq!(p["notValidAfter"], "2026-02-01T03:04:05Z");
    assert_eq!(property(c, "keystore:device-id"), Some("dev-1"));
    // The signature algorithm gets its own asset.
    by_ref(&bom, "algorithm:ecdsa-p384-sha384");
    let f = by_ref(&bom, "certificate:sha256:bb");
    let key = f["cryptoProperties"]["certificateProperties"]["subjectPublicKeyRef"]
        .as_str()
        .unwrap();
    assert_eq!(key, "public-key:sha256:cc");
    let pk = by_ref(&bom, key);
    let rcm = &pk["cryptoProperties"]["relatedCryptoMaterialProperties"];
    assert_eq!(rcm["type"], "public-key");
    assert_eq!(rcm["algorithmRef"], "algorithm:ecdsa-p256-sha256");
}

#[test]
fn bom_refs_are_unique_and_every_reference_resolves() {
    let certs = [
        certificate("sha256:aa", FP),
        certificate("sha256:bb", "sha256:cc"),
    ];
    let bom = to_cyclonedx(&inventory(), &certs, "0");
    let mut refs = BTreeSet::new();
    for c in bom["components"].as_array().unwrap() {
        assert!(
            refs.insert(c["bom-ref"].as_str().unwrap().to_string()),
            "{c}"
        );
    }
    let text = bom.to_string();
    for name in [
        "algorithmRef",
        "subjectPublicKeyRef",
        "signatureAlgorithmRef",
    ] {
        for part in text.split(&format!("\"{name}\":\"")).skip(1) {
            let target = &part[..part.find('"').unwrap()];
            assert!(refs.contains(target), "{name} {target} resolves to nothing");
        }
    }
}

#[test]
fn key_usages_become_crypto_functions() {
    let f = super::functions(Usages::MAC | Usages::DERIVE);
    assert_eq!(f, ["keygen", "tag", "keyderive"]);
    let f = super::functions(Usages::ENCRYPT | Usages::WRAP);
    assert_eq!(f, ["keygen", "encrypt", "decrypt"]);
}

//! `keyctl inventory`: the store's cryptographic assets as a CycloneDX 1.6
//! CBOM ([`keystore_api::to_cyclonedx`]): every key and version with its
//! state and dates, the algorithms in use, and the certificates the store
//! can see, linked to its keys by public-key fingerprint:
//!
//! - a factory store (`STORE/pki.sqlite`): the root, intermediate and OCSP
//!   signer certificates, and the device certificates its registry holds
//!   for the devices its event log names (the store's own `pki.sqlite`
//!   registry; a shared `--registry` is not read);
//! - any store with identity keys (`device.identity`, `device.ID.identity`):
//!   the certificates installed for them in `STORE/pki.sqlite`;
//! - certificate files `STORE/pki/*.pem` and `STORE/provisioned/*/cert.pem`.
//!
//! Needs the auditor or security-officer role (`--as`).

use crate::actor;
use crate::cli::{ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store::{self, Store};
use clap::{Args, ValueEnum};
use keystore_api::{Actor, CertificateAsset, Inventory};
use provisioning::{pem_decode_all, CertInfo, Device, Factory, PkiDb, DEVICE_KEY};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Largest certificate file read.
const MAX_CERT_FILE: usize = 1024 * 1024;

/// `keyctl inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: InventoryFormat,
    /// Output file (`-` for stdout); written with mode 0600.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub out: PathBuf,
}

/// The inventory's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// CycloneDX 1.6 JSON (a CBOM).
    Cyclonedx,
}

/// `keyctl inventory`: opens the local store, authenticates the actor and
/// writes the inventory in the chosen format.
pub(crate) fn run(
    root: &Path,
    unlock: &UnlockArgs,
    actor_args: &ActorArgs,
    args: &InventoryArgs,
) -> CliResult<()> {
    let ks = store::open(root, unlock)?;
    let actor = actor::authenticate(&ks, actor_args, "inventory")?;
    let text = match args.format {
        InventoryFormat::Cyclonedx => cyclonedx_bom(&ks, &actor, root)?,
    };
    files::write_secret(&args.out, text.as_bytes())?;
    if !files_is_stdout(&args.out) {
        note!("keyctl: wrote the inventory to {}", args.out.display());
    }
    Ok(())
}

fn files_is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The CycloneDX 1.6 CBOM (pretty JSON, newline-terminated) of the store
/// `ks` in directory `root`, as `actor` (auditor or security officer) sees
/// it, with the certificates found beside the store.
pub(crate) fn cyclonedx_bom(ks: &Store, actor: &Actor, root: &Path) -> CliResult<String> {
    let mut inv = ks.inventory(actor)?;
    let dir = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    inv.store.description = Some(format!(
        "{} backend, store directory {}",
        inv.store.backend,
        dir.display()
    ));
    let certificates = certificates(ks, &inv, root)?;
    let bom = keystore_api::to_cyclonedx(&inv, &certificates, env!("CARGO_PKG_VERSION"));
    let mut text = serde_json::to_string_pretty(&bom)
        .map_err(|e| CliError::invalid(format!("cannot encode the inventory: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// The certificates the store can see (see the module docs), each once.
fn certificates(ks: &Store, inv: &Inventory, root: &Path) -> CliResult<Vec<CertificateAsset>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |info: CertInfo, role: &str, extra: Vec<(String, String)>| {
        if seen.insert(info.digest.clone()) {
            out.push(asset(&info, role, inv, extra));
        }
    };
    let db_path = root.join("pki.sqlite");
    // Never create a PKI database in a store that has none.
    if db_path.is_file() {
        let db = PkiDb::open(&db_path)?;
        store::warn_permissions(db.permission_report());
        let source = || vec![("keystore:source".to_string(), "pki.sqlite".to_string())];
        let factory = Factory::new(ks, &db);
        for (role, cert) in [
            ("root-ca", factory.root()),
            ("intermediate-ca", factory.intermediate()),
            ("ocsp-signer", factory.ocsp_signer()),
        ] {
            if let Some(info) = found(cert)? {
                add(info, role, source());
            }
        }
        if db_has_events(&factory) {
            for device_id in device_ids(&factory)? {
                for issued in factory.certificates(&device_id)? {
                    let mut extra = source();
                    extra.push(("keystore:device-id".into(), issued.device_id.clone()));
                    extra.push((
                        "keystore:key-version".into(),
                        issued.key_version.to_string(),
                    ));
                    for (name, value) in [
                        ("keystore:superseded", &issued.superseded_at),
                        ("keystore:grace-end", &issued.grace_end),
                        ("keystore:revoked", &issued.revoked_at),
                    ] {
                        if let Some(v) = value {
                            extra.push((name.into(), v.clone()));
                        }
                    }
                    add(CertInfo::parse(&issued.der)?, "device", extra);
                }
            }
        }
        for key in inv.keys.iter().filter(|k| is_identity_key(&k.name)) {
            let Ok(device) = Device::new(ks, &db, &key.name) else {
                continue;
            };
            for installed in device.installed()? {
                let mut extra = source();
                extra.push(("keystore:device-id".into(), installed.device_id.clone()));
                extra.push(("keystore:key".into(), key.name.clone()));
                add(CertInfo::parse(&installed.der)?, "device-identity", extra);
            }
        }
    }
    for (path, role) in certificate_files(root) {
        let pem = files::read_input(&path, MAX_CERT_FILE, "certificate file")?;
        let Ok(ders) = pem_decode_all(&String::from_utf8_lossy(&pem), "CERTIFICATE") else {
            continue;
        };
        for der in ders {
            if let Ok(info) = CertInfo::parse(&der) {
                let file = vec![("keystore:source".to_string(), path.display().to_string())];
                add(info, role, file);
            }
        }
    }
    Ok(out)
}

/// `Ok(None)` for what is not there (`NotFound`), the error otherwise.
fn found(r: keystore_api::Result<CertInfo>) -> CliResult<Option<CertInfo>> {
    match r {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is(keystore_api::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether this store is a factory (it holds the event-log key).
fn db_has_events<B: keystore_api::Backend>(factory: &Factory<'_, B>) -> bool {
    factory.keystore().info(provisioning::EVENT_KEY).is_ok()
}

/// The devices the factory's (verified) event log names.
fn device_ids<B: keystore_api::Backend>(factory: &Factory<'_, B>) -> CliResult<Vec<String>> {
    let ids: BTreeSet<String> = factory
        .verify_events()?
        .into_iter()
        .filter_map(|e| e.device_id)
        .collect();
    Ok(ids.into_iter().collect())
}

/// `device.identity` (a device's own store) or `device.ID.identity` (a
/// production store holding its devices' keys).
fn is_identity_key(name: &str) -> bool {
    name == DEVICE_KEY
        || (name.starts_with("device.") && name.ends_with(".identity") && name.len() > 16)
}

/// `STORE/pki/*.pem` and `STORE/provisioned/*/cert.pem`, sorted.
fn certificate_files(root: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    let list = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for p in list(&root.join("pki")) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".pem") && !name.contains("crl") {
            out.push((p, "pki-file"));
        }
    }
    for dir in list(&root.join("provisioned")) {
        let cert = dir.join("cert.pem");
        if cert.is_file() {
            out.push((cert, "device"));
        }
    }
    out
}

/// A certificate as the CBOM lists it.
fn asset(
    info: &CertInfo,
    role: &str,
    inv: &Inventory,
    properties: Vec<(String, String)>,
) -> CertificateAsset {
    let from_store = inv.keys.iter().find_map(|k| {
        k.versions
            .iter()
            .any(|v| v.fingerprint.as_deref() == Some(info.spki_fingerprint.as_str()))
            .then_some(k.algorithm)
    });
    let oid = der::signature_oid(&info.der);
    CertificateAsset {
        role: role.to_string(),
        serial: info.serial.clone(),
        digest: info.digest.clone(),
        subject: info.subject.clone(),
        issuer: info.issuer.clone(),
        not_before: info.not_before,
        not_after: info.not_after,
        spki_fingerprint: info.spki_fingerprint.clone(),
        public_key_algorithm: from_store.or_else(|| der::spki_algorithm(&info.spki_der)),
        signature_algorithm: oid.as_deref().and_then(der::signature_algorithm),
        signature_algorithm_oid: oid,
        extension: properties
            .iter()
            .any(|(n, v)| n == "keystore:source" && v.ends_with(".pem"))
            .then(|| "pem".to_string()),
        properties,
    }
}

/// Just enough DER to read a certificate's signature algorithm and a
/// SubjectPublicKeyInfo's key algorithm (x509-parser is not a dependency
/// of keyctl; provisioning's `CertInfo` does the rest).
mod der {
    use keystore_api::Algorithm;

    /// `(tag, content, rest)` of the TLV at the start of `b`.
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let (len, rest) = b.split_at(n);
            b = rest;
            len.iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }

    fn oid_text(oid: &[u8]) -> Option<String> {
        let (&first, rest) = oid.split_first()?;
        let mut parts = vec![u64::from(first / 40).min(2), 0];
        parts[1] = u64::from(first) - parts[0] * 40;
        let mut acc = 0u64;
        for &b in rest {
            acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                parts.push(acc);
                acc = 0;
            }
        }
        Some(
            parts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("."),
        )
    }

    /// The OID of the AlgorithmIdentifier at the start of `b`, and its
    /// parameters' TLV.
    fn algorithm_identifier(b: &[u8]) -> Option<(String, &[u8])> {
        let (0x30, alg, _) = tlv(b)? else { return None };
        let (0x06, oid, params) = tlv(alg)? else {
            return None;
        };
        Some((oid_text(oid)?, params))
    }

    /// The certificate's signatureAlgorithm OID.
    pub(super) fn signature_oid(cert: &[u8]) -> Option<String> {
        let (0x30, cert, _) = tlv(cert)? else {
            return None;
        };
        let (0x30, _tbs, rest) = tlv(cert)? else {
            return None;
        };
        algorithm_identifier(rest).map(|(oid, _)| oid)
    }

    /// The keystore algorithm a signature OID names, where it is one (RSA
    /// OIDs do not say the key size: `None`).
    pub(super) fn signature_algorithm(oid: &str) -> Option<Algorithm> {
        Some(match oid {
            "1.2.840.10045.4.3.2" => Algorithm::EcdsaP256Sha256,
            "1.2.840.10045.4.3.3" => Algorithm::EcdsaP384Sha384,
            "1.3.101.112" => Algorithm::Ed25519,
            "2.16.840.1.101.3.4.3.18" => Algorithm::MlDsa65,
            _ => return None,
        })
    }

    /// The keystore algorithm of a SubjectPublicKeyInfo's key, where it is
    /// one (EC keys by curve; RSA keys: `None`).
    pub(super) fn spki_algorithm(spki: &[u8]) -> Option<Algorithm> {
        let (0x30, spki, _) = tlv(spki)? else {
            return None;
        };
        let (oid, params) = algorithm_identifier(spki)?;
        match oid.as_str() {
            "1.2.840.10045.2.1" => {
                let (0x06, curve, _) = tlv(params)? else {
                    return None;
                };
                match oid_text(curve)?.as_str() {
                    "1.2.840.10045.3.1.7" => Some(Algorithm::EcdsaP256Sha256),
                    "1.3.132.0.34" => Some(Algorithm::EcdsaP384Sha384),
                    _ => None,
                }
            }
            other => signature_algorithm(other),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn oids_decode() {
            // 1.2.840.10045.4.3.2 (ecdsa-with-SHA256)
            let der = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
            assert_eq!(super::oid_text(&der).unwrap(), "1.2.840.10045.4.3.2");
            // 2.16.840.1.101.3.4.3.18 (ML-DSA-65)
            let der = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12];
            assert_eq!(super::oid_text(&der).unwrap(), "2.16.840.1.101.3.4.3.18");
        }
    }
}

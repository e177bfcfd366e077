//! `keyctl evidence --out DIR`: one pack an auditor can check off the
//! device. The conformance matrix and traceability of this build, the audit
//! trail exported with a fresh checkpoint and its verification, the CBOM,
//! the key management policy, the provisioning records and event-log
//! verification of a factory store, and a `SHA256SUMS` manifest signed by
//! the audit signing key.

use crate::actor;
use crate::audit::{offline_summary, pubkeys_pem};
use crate::cli::{ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store::{self, Store};
use clap::Args;
use keystore_api::{AuditCoverage, EVIDENCE_DOMAIN};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The build's conformance results, as generated into docs/ by
/// `./scripts/test` from the run of this source.
const TRACEABILITY: &str = include_str!("../../docs/traceability.md");
const MATRIX_JSON: &str = include_str!("../../docs/conformance-matrix.json");

#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// A new (or empty) directory to write the pack into (made 0700).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The files of a pack, in the order `SHA256SUMS` lists them.
struct Pack {
    dir: PathBuf,
    written: Vec<String>,
}

impl Pack {
    fn new(dir: &Path) -> CliResult<Pack> {
        if dir.exists() {
            let empty = std::fs::read_dir(dir)
                .map_err(|e| CliError::io("read", dir, e))?
                .next()
                .is_none();
            if !empty {
                return Err(CliError::invalid(format!(
                    "{} is not empty: the evidence pack goes into a new or empty directory",
                    dir.display()
                )));
            }
        }
        keystore_api::fsperm::ensure_private_dir(dir)
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| CliError::io("create", dir, e))?;
        Ok(Pack {
            dir: dir.to_path_buf(),
            written: Vec::new(),
        })
    }

    /// Writes `name` (0600) and lists it in the manifest.
    fn put(&mut self, name: &str, bytes: &[u8]) -> CliResult<()> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            keystore_api::fsperm::ensure_private_dir(parent)
                .map_err(|e| CliError::io("create", parent, e))?;
        }
        files::write_secret(&path, bytes)?;
        self.written.push(name.to_string());
        Ok(())
    }

    /// `SHA256SUMS` of every file written, in `sha256sum -c` format.
    fn manifest(&self) -> CliResult<String> {
        let mut out = String::new();
        for name in &self.written {
            let path = self.dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| CliError::io("read", &path, e))?;
            out.push_str(&format!(
                "{}  {name}\n",
                hex::encode(Sha256::digest(&bytes))
            ));
        }
        Ok(out)
    }
}

/// `keyctl evidence`.
pub fn run(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, e: &EvidenceArgs) -> CliResult<()> {
    let ks = store::open(root, unlock)?;
    let actor = actor::authenticate(&ks, args, "evidence")?;
    let mut pack = Pack::new(&e.out)?;
    pack.put("conformance/traceability.md", TRACEABILITY.as_bytes())?;
    pack.put("conformance/matrix.json", MATRIX_JSON.as_bytes())?;

    // The trail, with a checkpoint of its head signed now.
    let export = ks.export_audit_evidence(&actor)?;
    pack.put("audit/trail.jsonl", export.to_json_lines()?.as_bytes())?;
    pack.put("audit/pubkeys.pem", pubkeys_pem(&export).as_bytes())?;
    pack.put(
        "audit/verification.txt",
        verification(&ks, &actor, &export)?.as_bytes(),
    )?;

    pack.put(
        "inventory/cbom.cdx.json",
        crate::inventory::cyclonedx_bom(&ks, &actor, root)?.as_bytes(),
    )?;
    pack.put(
        "policy/key-management-policy.md",
        crate::policy::policy_markdown(&ks, root, unlock, Some(&actor))?.as_bytes(),
    )?;

    let factory = root.join("pki.sqlite").exists();
    if factory {
        pack.put(
            "provisioning/event-log-verification.txt",
            crate::provision::event_log_report(&ks, root)?.as_bytes(),
        )?;
        copy_records(&mut pack, &root.join("provisioned"))?;
    }

    let manifest = pack.manifest()?;
    let (signature, signer) = ks.sign_evidence_manifest(&actor, manifest.as_bytes())?;
    files::write_secret(&pack.dir.join("SHA256SUMS"), manifest.as_bytes())?;
    files::write_secret(&pack.dir.join("SHA256SUMS.sig"), &signature)?;
    files::write_public(
        &pack.dir.join("SHA256SUMS.signer.pem"),
        signer.public_key_pem.as_bytes(),
    )?;
    pack_readme(&pack.dir, &signer.fingerprint, factory)?;
    outln!(
        "evidence pack written to {}: {} files listed in SHA256SUMS, signed by the audit key {}",
        pack.dir.display(),
        pack.written.len(),
        signer.fingerprint
    )?;
    Ok(())
}

/// The trail verified on the device (with its MACs) and, as an auditor
/// would off the device, from the exported file with its public keys.
fn verification(
    ks: &Store,
    actor: &keystore_api::Actor,
    export: &keystore_api::AuditExport,
) -> CliResult<String> {
    let on_device = ks.verify_audit(actor)?;
    let device = match (&on_device.first_bad, &on_device.checked) {
        (Some((seq, why)), _) => format!("FAILED: audit entry #{seq} is bad: {why}"),
        (None, AuditCoverage::ChainAndMacs) => format!(
            "intact: {} entries; hash chain, every entry's MAC and the head's MAC verify",
            on_device.entries
        ),
        (None, AuditCoverage::ChainOnly { decommissioned_at }) => format!(
            "chain only (decommissioned at {decommissioned_at}): {} entries",
            on_device.entries
        ),
    };
    let reparsed = keystore_api::AuditExport::from_json_lines(&export.to_json_lines()?)?;
    let keys: Vec<_> = export
        .signers
        .iter()
        .map(|s| s.public_key())
        .collect::<keystore_api::Result<_>>()?;
    let offline = match offline_summary(&reparsed.verify_offline(&keys)) {
        Ok(s) => s,
        Err(e) => format!("FAILED: {}", e.message()),
    };
    Ok(format!(
        "# Audit trail verification\n\n\
         On the device (chain, MACs, head): {device}\n\n\
         Off the device (trail.jsonl with pubkeys.pem, as `keyctl audit verify --offline` does): \
         {offline}\n\n\
         The keys in pubkeys.pem come from the device itself. An auditor verifies again with \
         the audit signing keys recorded independently (at commissioning: `keyctl audit \
         pubkeys`), e.g. `keyctl audit verify --offline audit/trail.jsonl --trust KEYS.pem`.\n\n\
         Rollback protection: {}\n",
        export.store.rollback_protection
    ))
}

fn copy_records(pack: &mut Pack, dir: &Path) -> CliResult<()> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut units: Vec<PathBuf> = listing.flatten().map(|e| e.path()).collect();
    units.sort();
    for unit in units {
        // Unit directories only, named in printable ASCII without spaces
        // (SHA256SUMS is line- and space-separated); links are not followed.
        let Some(id) = unit
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let is_dir = std::fs::symlink_metadata(&unit).is_ok_and(|m| m.is_dir());
        if !is_dir || !id.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        for file in ["record.yaml", "cert.pem"] {
            let path = unit.join(file);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                let bytes = files::read_input(&path, 1 << 20, "provisioning record")?;
                pack.put(&format!("provisioning/records/{id}/{file}"), &bytes)?;
            }
        }
    }
    Ok(())
}

fn pack_readme(dir: &Path, signer: &str, factory: bool) -> CliResult<()> {
    let factory_line = if factory {
        "- `provisioning/`: the factory's provisioning records and the verification of its \
         event log (hash chain and this station's MACs).\n"
    } else {
        ""
    };
    let text = format!(
        "# Evidence pack\n\n\
         - `conformance/`: the conformance matrix and traceability (requirements to tests to \
         backends) of the keyctl build that wrote this pack.\n\
         - `audit/`: the audit trail with its signed checkpoints (`trail.jsonl`), the audit \
         signing public keys, and its verification.\n\
         - `inventory/cbom.cdx.json`: the cryptographic inventory, CycloneDX 1.6.\n\
         - `policy/key-management-policy.md`: the key management policy, generated from the \
         store's configuration and state.\n\
         {factory_line}\
         - `SHA256SUMS`: every file above; `SHA256SUMS.sig`: ECDSA P-256 SHA-256 (DER) by the \
         audit signing key {signer} over the line `{EVIDENCE_DOMAIN}` and then SHA256SUMS.\n\n\
         Check it:\n\n\
         ```\n\
         sha256sum -c SHA256SUMS\n\
         (printf '{EVIDENCE_DOMAIN}\\n'; cat SHA256SUMS) | openssl dgst -sha256 -verify KEYS.pem -signature SHA256SUMS.sig\n\
         keyctl audit verify --offline audit/trail.jsonl --trust KEYS.pem\n\
         ```\n\n\
         where KEYS.pem holds the audit signing keys recorded independently of this pack.\n"
    );
    files::write_public(&dir.join("README.md"), text.as_bytes())
}

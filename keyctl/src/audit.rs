//! `keyctl audit …` and `keyctl decommission`: the trail on the device,
//! its export with signed checkpoints, verification off the device
//! (`--offline`, no store and no secret: only trusted public keys), the
//! audit signing key, and the erasure certificate.

use crate::actor;
use crate::cli::ActorArgs;
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store::Store;
use crate::target::{Caller, Target};
use clap::Subcommand;
use keystore_api::{
    public_keys_from_pem, AuditCoverage, AuditEntry, AuditExport, ErasureCertificate, Error,
    OfflineReport, PublicKey,
};
use std::path::{Path, PathBuf};

/// Largest trail, certificate or key file read (64 MiB).
const MAX_EVIDENCE_FILE: usize = 64 << 20;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify chain, MACs and head on the device; names the first bad entry
    /// (exit 9). With --offline, verify an exported trail instead, without
    /// the store: chain and checkpoint signatures by --trust keys.
    Verify {
        /// An exported trail (`keyctl audit export`) to verify off the device.
        #[arg(long, value_name = "TRAIL", requires = "trust")]
        offline: Option<PathBuf>,
        /// PEM file of trusted audit signing public keys (with --offline).
        #[arg(long, value_name = "PEM", requires = "offline")]
        trust: Option<PathBuf>,
    },
    /// Sign a checkpoint of the head now, then write every entry, the
    /// audit signing keys and the checkpoints as JSON lines.
    Export {
        /// Output file (`-` for stdout).
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: PathBuf,
        /// Also write the audit signing public keys (PEM) here.
        #[arg(long, value_name = "PEM")]
        pubkeys_out: Option<PathBuf>,
    },
    /// Sign a checkpoint of the audit head now.
    Checkpoint,
    /// Write the store's audit signing public keys (PEM), to keep as trust
    /// anchors off the device.
    Pubkeys {
        /// Output file (`-` for stdout).
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: PathBuf,
    },
    /// Rotate the audit signing key (the outgoing key signs a handover).
    RotateSigner,
    /// Verify a decommission's erasure certificate off the device.
    VerifyErasure {
        /// The certificate `keyctl decommission` wrote.
        certificate: PathBuf,
        /// PEM file of trusted audit signing public keys.
        #[arg(long, value_name = "PEM")]
        trust: PathBuf,
        /// The final trail `decommission` wrote: verified offline, checked
        /// against the certificate's final checkpoint, and its rotations
        /// extend the trusted keys.
        #[arg(long, value_name = "TRAIL")]
        trail: Option<PathBuf>,
    },
}

impl AuditCommand {
    /// True for the commands that work on files alone, without a store.
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            AuditCommand::Verify {
                offline: Some(_),
                ..
            } | AuditCommand::VerifyErasure { .. }
        )
    }
}

/// `keyctl audit …` on files only (no store is opened).
pub fn offline(cmd: &AuditCommand) -> CliResult<()> {
    match cmd {
        AuditCommand::Verify {
            offline: Some(trail),
            trust: Some(trust),
        } => {
            let report = verify_trail_file(trail, trust)?;
            print_offline(&report)
        }
        AuditCommand::VerifyErasure {
            certificate,
            trust,
            trail,
        } => verify_erasure(certificate, trust, trail.as_deref()),
        _ => Err(CliError::invalid(
            "this audit command needs the store (it is not an offline check)",
        )),
    }
}

/// Reads trusted keys from a PEM file.
pub(crate) fn trusted_keys(path: &Path) -> CliResult<Vec<PublicKey>> {
    let pem = files::read_input(path, MAX_EVIDENCE_FILE, "trusted audit keys")?;
    let pem = String::from_utf8(pem)
        .map_err(|_| CliError::invalid(format!("{} is not a PEM text file", path.display())))?;
    Ok(public_keys_from_pem(&pem)?)
}

/// Verifies an exported trail file with the keys in `trust`.
pub(crate) fn verify_trail_file(trail: &Path, trust: &Path) -> CliResult<OfflineReport> {
    let keys = trusted_keys(trust)?;
    let text = files::read_input(trail, MAX_EVIDENCE_FILE, "audit trail")?;
    let text = String::from_utf8(text)
        .map_err(|_| CliError::invalid(format!("{} is not UTF-8 JSON lines", trail.display())))?;
    Ok(AuditExport::from_json_lines(&text)?.verify_offline(&keys))
}

/// The verdict of an offline check, as `audit verify --offline` prints it.
pub(crate) fn offline_summary(r: &OfflineReport) -> CliResult<String> {
    if let Some((seq, why)) = &r.first_bad {
        return Err(Error::integrity(format!("audit entry #{seq} is bad: {why}")).into());
    }
    let counter = match &r.counter {
        Some((name, v)) => {
            format!("; the last checkpoint carries the monotonic counter {name} = {v}")
        }
        None => "; no monotonic counter (no rollback protection on that store)".to_string(),
    };
    Ok(format!(
        "audit trail verified offline: store {}, {} entries, hash chain intact, {} checkpoints \
         signed by trusted keys ({}) covering entries #1..#{}{counter}; entry MACs not checked \
         (they need the device's secret audit key)",
        r.store_id,
        r.entries,
        r.checkpoints_verified,
        r.signers_used.join(", "),
        r.covered_through
    ))
}

fn print_offline(r: &OfflineReport) -> CliResult<()> {
    outln!("{}", offline_summary(r)?)?;
    Ok(())
}

fn verify_erasure(cert: &Path, trust: &Path, trail: Option<&Path>) -> CliResult<()> {
    let keys = trusted_keys(trust)?;
    let text = files::read_input(cert, MAX_EVIDENCE_FILE, "erasure certificate")?;
    let cert: ErasureCertificate = serde_json::from_slice(&text).map_err(|e| {
        CliError::invalid(format!(
            "{} is not an erasure certificate: {e}",
            cert.display()
        ))
    })?;
    let mut keys = keys;
    let mut export = None;
    if let Some(trail) = trail {
        let report = verify_trail_file(trail, trust)?;
        offline_summary(&report)?;
        let text = files::read_input(trail, MAX_EVIDENCE_FILE, "audit trail")?;
        let e = AuditExport::from_json_lines(&String::from_utf8_lossy(&text))?;
        // Keys the trusted ones handed over to (rotations) sign too.
        for s in &e.signers {
            if report.signers_used.contains(&s.fingerprint) {
                keys.push(s.public_key()?);
            }
        }
        export = Some(e);
    }
    let st = cert.verify(&keys)?;
    if let Some(export) = export {
        if export.checkpoints.last() != Some(&st.final_checkpoint)
            || export.store.store_id != st.store_id
        {
            return Err(Error::integrity(
                "the trail's last checkpoint is not the certificate's final checkpoint: they \
                 belong to different stores or the trail is not the final one",
            )
            .into());
        }
    }
    let versions: usize = st.keys.iter().map(|k| k.versions.len()).sum();
    outln!(
        "erasure certificate verified: store {} ({} backend) decommissioned at {} by {} ({}); \
         {} key(s), {versions} version(s), {} backend object(s) destroyed, then the signing key \
         {}; method: {}; final audit checkpoint #{} over entry #{}{}",
        st.store_id,
        st.backend,
        keystore_api::rfc3339(st.at),
        st.actor,
        st.role,
        st.keys.len(),
        st.objects_destroyed,
        st.signing_key_destroyed_after_signature,
        st.method,
        st.final_checkpoint.number,
        st.final_checkpoint.seq,
        match &st.counter_removed {
            Some(c) => format!("; monotonic counter {c} removed"),
            None => String::new(),
        }
    )?;
    Ok(())
}

/// `keyctl audit …` on the store (or through keystored).
pub fn audit(ks: &Target, cmd: &AuditCommand) -> CliResult<()> {
    let caller = ks.caller("audit")?;
    match cmd {
        AuditCommand::Verify { .. } => verify_on_device(&caller),
        AuditCommand::Export { out, pubkeys_out } => {
            let lines = match &caller {
                Caller::Local(store, actor) => {
                    let export = store.export_audit_evidence(actor)?;
                    if let Some(p) = pubkeys_out {
                        files::write_public(p, pubkeys_pem(&export).as_bytes())?;
                    }
                    export.to_json_lines()?
                }
                Caller::Remote(client) => {
                    if pubkeys_out.is_some() {
                        return Err(CliError::invalid(
                            "--pubkeys-out needs the store: through keystored the export holds \
                             entries only",
                        ));
                    }
                    note!(
                        "note: through keystored the export holds entries only, without signed \
                         checkpoints; export on the device for offline verification"
                    );
                    json_lines(&client.export_audit()?)?
                }
            };
            // An export: key names, fingerprints and actors, for its owner.
            files::write_secret(out, lines.as_bytes())
        }
        AuditCommand::Checkpoint => {
            let c = local(&caller, "audit checkpoint")?;
            let cp = c.0.checkpoint(c.1)?;
            outln!(
                "checkpoint #{} signed by {} over audit entry #{} ({}){}",
                cp.number,
                cp.signer,
                cp.seq,
                cp.head_hash,
                match (&cp.counter, cp.counter_value) {
                    (Some(n), Some(v)) => format!("; counter {n} = {v}"),
                    _ => String::new(),
                }
            )?;
            Ok(())
        }
        AuditCommand::Pubkeys { out } => {
            let c = local(&caller, "audit pubkeys")?;
            let signers = c.0.audit_signers()?;
            let pem: String = signers.iter().map(|s| s.public_key_pem.clone()).collect();
            files::write_public(out, pem.as_bytes())
        }
        AuditCommand::RotateSigner => {
            let c = local(&caller, "audit rotate-signer")?;
            let s = c.0.rotate_audit_signer(c.1)?;
            outln!(
                "audit signing key rotated: version {} {} signs from now on",
                s.version,
                s.fingerprint
            )?;
            Ok(())
        }
        AuditCommand::VerifyErasure { .. } => offline(cmd),
    }
}

fn local<'a>(
    caller: &'a Caller<'a>,
    what: &str,
) -> CliResult<(&'a Store, &'a keystore_api::Actor)> {
    match caller {
        Caller::Local(store, actor) => Ok((store, actor)),
        Caller::Remote(_) => Err(CliError::invalid(format!(
            "`keyctl {what}` works on the store itself: run it on the daemon's host without --connect"
        ))),
    }
}

/// Every audit signing key of an export, PEM.
pub(crate) fn pubkeys_pem(export: &AuditExport) -> String {
    export
        .signers
        .iter()
        .map(|s| s.public_key_pem.clone())
        .collect()
}

fn verify_on_device(caller: &Caller<'_>) -> CliResult<()> {
    let report = caller.verify_audit()?;
    if let Some((seq, why)) = &report.first_bad {
        return Err(Error::integrity(format!("audit entry #{seq} is bad: {why}")).into());
    }
    match &report.checked {
        AuditCoverage::ChainAndMacs => outln!(
            "audit trail intact: {} entries, chain, MACs and head verify",
            report.entries
        )?,
        AuditCoverage::ChainOnly { decommissioned_at } => outln!(
            "audit trail chain verifies: {} entries; MACs NOT checked: the audit key was \
             destroyed at decommission ({decommissioned_at}), so edits with a recomputed \
             chain cannot be detected here; compare with the trail exported at decommission",
            report.entries
        )?,
    }
    for warning in &report.key_warnings {
        outln!("warning: {warning}")?;
    }
    Ok(())
}

fn json_lines(entries: &[AuditEntry]) -> CliResult<String> {
    let mut s = String::new();
    for e in entries {
        let line = serde_json::to_string(e)
            .map_err(|e| CliError::Internal(format!("cannot encode an audit entry: {e}")))?;
        s.push_str(&line);
        s.push('\n');
    }
    Ok(s)
}

/// Where `decommission` writes the erasure certificate by default: beside
/// the trail, `<trail>.erasure.json`.
fn default_certificate_path(audit_out: &Path) -> PathBuf {
    let mut name = audit_out.as_os_str().to_owned();
    name.push(".erasure.json");
    PathBuf::from(name)
}

/// `keyctl decommission`.
pub fn decommission(
    ks: &Store,
    args: &ActorArgs,
    audit_out: &Path,
    certificate_out: Option<&Path>,
) -> CliResult<()> {
    let actor = actor::authenticate(ks, args, "decommission")?;
    let cert_path = certificate_out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_certificate_path(audit_out));
    let done = ks.decommission(&actor)?;
    let cert = serde_json::to_string_pretty(&done.certificate)
        .map_err(|e| CliError::Internal(format!("cannot encode the certificate: {e}")))?;
    // The certificate cannot be signed again (the key is gone): written
    // first, and printed if it cannot be. Key names and fingerprints: for
    // its owner, like the trail.
    if let Err(e) = files::write_secret(&cert_path, format!("{cert}\n").as_bytes()) {
        outln!("{cert}")?;
        return Err(e);
    }
    files::write_secret(audit_out, done.trail.to_json_lines()?.as_bytes())?;
    outln!(
        "decommissioned: every key wiped; the final audit trail ({} entries, {} signed \
         checkpoints) is in {}; the signed erasure certificate is in {}",
        done.trail.entries.len(),
        done.trail.checkpoints.len(),
        audit_out.display(),
        cert_path.display()
    )?;
    Ok(())
}

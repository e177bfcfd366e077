//! Lifecycle commands: rotate, due, revoke, suspend, resume, versions,
//! backup, restore, sweep, audit, role credentials, decommission. Each one
//! authenticates its actor; the keystore checks the role and audits.

use crate::actor;
use crate::cli::{ActorArgs, AuditCommand, KeyCommand, RoleCommand};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store::Store;
use keystore_api::rfc3339;
use keystore_api::{AuditCoverage, AuditEntry, KeyInfo, Role, Usages};
use std::path::Path;

/// Largest backup file accepted.
const MAX_BACKUP: usize = 1024 * 1024;

/// Runs a lifecycle `key` subcommand (the others live in `commands`).
pub fn key(ks: &Store, args: &ActorArgs, cmd: &KeyCommand) -> CliResult<()> {
    match cmd {
        KeyCommand::Rotate { name, grace } => {
            let actor = actor::authenticate(ks, args, "key rotate")?;
            let info = ks.rotate(&actor, name, *grace)?;
            let v = info.active().map(|v| v.version).unwrap_or(0);
            outln!("rotated '{name}': version {v} is active; the old version verifies and decrypts for {} s", grace.whole_seconds())?;
        }
        KeyCommand::Due { rotate, grace } => {
            let now = time::OffsetDateTime::now_utc();
            if *rotate {
                let actor = actor::authenticate(ks, args, "key due --rotate")?;
                for name in ks.rotate_due(&actor, now, *grace)? {
                    outln!("rotated {name}")?;
                }
            } else {
                let due = ks.due(now)?;
                if due.is_empty() {
                    outln!("no key is due for rotation")?;
                }
                for d in due {
                    outln!("{} version {} due since {}", d.name, d.version, d.due_at)?;
                }
            }
        }
        KeyCommand::Revoke {
            name,
            version,
            reason,
        } => {
            let actor = actor::authenticate(ks, args, "key revoke")?;
            ks.revoke(&actor, name, *version, reason)?;
            outln!("revoked '{name}' version {version}: compromised, material destroyed")?;
        }
        KeyCommand::Suspend { name, version } => {
            let actor = actor::authenticate(ks, args, "key suspend")?;
            ks.suspend(&actor, name, *version)?;
            outln!("suspended '{name}' version {version}")?;
        }
        KeyCommand::Resume { name, version } => {
            let actor = actor::authenticate(ks, args, "key resume")?;
            ks.resume(&actor, name, *version)?;
            outln!("resumed '{name}' version {version}")?;
        }
        KeyCommand::Versions { name } => print_versions(&ks.info(name)?)?,
        KeyCommand::Backup { name, kek, out } => {
            let actor = actor::authenticate(ks, args, "key backup")?;
            let blob = ks.backup(&actor, name, kek)?;
            // Wrapped material only, but nobody else needs to read it.
            files::write_secret(out, &blob)?;
            outln!("wrote a wrapped backup of '{name}' to {}", out.display())?;
        }
        KeyCommand::Restore { input, kek, name } => {
            let actor = actor::authenticate(ks, args, "key restore")?;
            let blob = files::read_input(input, MAX_BACKUP, "backup file")?;
            let info = ks.restore(&actor, &blob, kek, name.as_deref())?;
            outln!(
                "restored '{}' with {} version(s)",
                info.name,
                info.versions.len()
            )?;
        }
        KeyCommand::Create { .. }
        | KeyCommand::Import { .. }
        | KeyCommand::List
        | KeyCommand::Show { .. }
        | KeyCommand::Destroy { .. } => {
            return Err(CliError::Internal("not a lifecycle command".into()))
        }
    }
    Ok(())
}

fn print_versions(info: &KeyInfo) -> CliResult<()> {
    outln!(
        "{:<8} {:<12} {:<10} {:<21} {:<21} FINGERPRINT / REASON",
        "VERSION",
        "STATE",
        "ORIGIN",
        "CREATED",
        "GRACE END"
    )?;
    for v in &info.versions {
        let note = v
            .reason
            .clone()
            .or_else(|| v.fingerprint.clone())
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<8} {:<12} {:<10} {:<21} {:<21} {note}",
            v.version,
            v.state.to_string(),
            v.origin.to_string(),
            rfc3339(v.created_at),
            v.grace_end.map_or_else(|| "-".to_string(), rfc3339)
        )?;
    }
    Ok(())
}

/// `keyctl sweep`.
pub fn sweep(ks: &Store, args: &ActorArgs) -> CliResult<()> {
    let actor = actor::authenticate(ks, args, "sweep")?;
    let swept = ks.sweep(&actor)?;
    if swept.is_empty() {
        outln!("nothing to sweep")?;
    }
    for (name, version) in swept {
        outln!("destroyed {name} version {version} (grace ended)")?;
    }
    Ok(())
}

/// `keyctl audit verify|export`.
pub fn audit(ks: &Store, args: &ActorArgs, cmd: &AuditCommand) -> CliResult<()> {
    let actor = actor::authenticate(ks, args, "audit")?;
    match cmd {
        AuditCommand::Verify => {
            let report = ks.verify_audit(&actor)?;
            if let Some((seq, why)) = &report.first_bad {
                return Err(keystore_api::Error::integrity(format!(
                    "audit entry #{seq} is bad: {why}"
                ))
                .into());
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
            for name in &report.keys_with_mac_and_derive {
                outln!(
                    "warning: key '{name}' holds both mac and derive usages, which new keys \
                     cannot: {}; create separate mac and derive keys and retire it",
                    Usages::MAC_AND_DERIVE_REASON
                )?;
            }
        }
        AuditCommand::Export { out } => {
            let lines = json_lines(&ks.export_audit(&actor)?)?;
            // An export: key names, fingerprints and actors, for its owner.
            files::write_secret(out, lines.as_bytes())?;
        }
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

/// `keyctl role set`.
pub fn role(ks: &Store, args: &ActorArgs, cmd: &RoleCommand) -> CliResult<()> {
    let RoleCommand::Set {
        role,
        new_secret_file,
    } = cmd;
    let role: Role = role.parse()?;
    let actor = actor::optional(ks, args)?;
    let secret = actor::new_secret(new_secret_file.as_deref(), role)?;
    ks.set_role_credential(actor.as_ref(), role, &secret)?;
    outln!("credential for role {role} set")?;
    Ok(())
}

/// `keyctl decommission`.
pub fn decommission(ks: &Store, args: &ActorArgs, audit_out: &Path) -> CliResult<()> {
    let actor = actor::authenticate(ks, args, "decommission")?;
    let exported = ks.decommission(&actor)?;
    files::write_secret(audit_out, json_lines(&exported)?.as_bytes())?;
    outln!(
        "decommissioned: every key wiped; the final audit trail ({} entries) is in {}",
        exported.len(),
        audit_out.display()
    )?;
    Ok(())
}

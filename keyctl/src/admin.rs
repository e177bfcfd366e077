//! Lifecycle commands: rotate, due, revoke, suspend, resume, versions,
//! backup, restore, sweep, role credentials. Each one establishes its caller
//! ([`Target::caller`]); the keystore checks the role and audits. Role
//! credentials work on the local store only (audit and decommission: `audit`).

use crate::actor;
use crate::cli::{ActorArgs, KeyCommand, RoleCommand};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store::Store;
use crate::target::Target;
use keystore_api::rfc3339;
use keystore_api::{DueReason, KeyInfo, Role};

/// Largest backup file accepted.
const MAX_BACKUP: usize = 1024 * 1024;

/// Runs a lifecycle `key` subcommand (the others live in `commands`).
pub fn key(ks: &Target, cmd: &KeyCommand) -> CliResult<()> {
    match cmd {
        KeyCommand::Rotate { name, grace } => {
            let info = ks.caller("key rotate")?.rotate(name, *grace)?;
            let v = info.active().map(|v| v.version).unwrap_or(0);
            outln!("rotated '{name}': version {v} is active; the old version verifies and decrypts for {} s", grace.whole_seconds())?;
        }
        KeyCommand::Due { rotate, grace } => {
            if *rotate {
                for name in ks.caller("key due --rotate")?.rotate_due(*grace)? {
                    outln!("rotated {name}")?;
                }
            } else {
                let due = ks.due()?;
                if due.is_empty() {
                    outln!("no key is due for rotation")?;
                }
                for d in due {
                    let why = match d.reason {
                        DueReason::Cryptoperiod => "cryptoperiod".to_string(),
                        DueReason::Usage(u) => {
                            format!("usage: {}/{} encryptions", u.reserved, u.limit)
                        }
                    };
                    outln!(
                        "{} version {} due since {} ({why})",
                        d.name,
                        d.version,
                        d.due_at
                    )?;
                }
            }
        }
        KeyCommand::Revoke {
            name,
            version,
            reason,
        } => {
            ks.caller("key revoke")?.revoke(name, *version, reason)?;
            outln!("revoked '{name}' version {version}: compromised, material destroyed")?;
        }
        KeyCommand::Suspend { name, version } => {
            ks.caller("key suspend")?.suspend(name, *version)?;
            outln!("suspended '{name}' version {version}")?;
        }
        KeyCommand::Resume { name, version } => {
            ks.caller("key resume")?.resume(name, *version)?;
            outln!("resumed '{name}' version {version}")?;
        }
        KeyCommand::Versions { name } => print_versions(&ks.info(name)?)?,
        KeyCommand::Backup { name, kek, out } => {
            let blob = ks.caller("key backup")?.backup(name, kek)?;
            // Wrapped material only, but nobody else needs to read it.
            files::write_secret(out, &blob)?;
            outln!("wrote a wrapped backup of '{name}' to {}", out.display())?;
        }
        KeyCommand::Restore { input, kek, name } => {
            let caller = ks.caller("key restore")?;
            let blob = files::read_input(input, MAX_BACKUP, "backup file")?;
            let info = caller.restore(&blob, kek, name.as_deref())?;
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
pub fn sweep(ks: &Target) -> CliResult<()> {
    let swept = ks.caller("sweep")?.sweep()?;
    if swept.is_empty() {
        outln!("nothing to sweep")?;
    }
    for (name, version) in swept {
        outln!("destroyed {name} version {version} (grace ended)")?;
    }
    Ok(())
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

//! Where the keystore commands run: on the store opened in this process, or
//! through `keystored` (`--connect unix:PATH`). `commands` and `admin` call
//! this one API and keep every format; only the calls underneath differ.
//!
//! Locally a lifecycle command authenticates `--as ROLE` with that role's
//! credential ([`crate::actor`]). Through the daemon it takes no credential:
//! keystored identifies the caller by its OS uid (SO_PEERCRED) and its
//! policy decides the role and the keys the caller sees, so `--as` and the
//! role secrets are not read.

use crate::cli::{ActorArgs, Command};
use crate::error::{CliError, CliResult};
use crate::store::Store;
use keystore_api::{
    Actor, AuditCoverage, AuditReport, KeyInfo, KeySpec, PublicKey, Result, RotationDue,
    SecretBytes, Signature, SignatureFormat,
};
use keystore_client::Client;
use time::{Duration, OffsetDateTime};

/// The keystore a command works on.
pub enum Target {
    /// The store opened by this process, and who acts on it.
    Local { store: Box<Store>, actor: ActorArgs },
    /// `keystored`, reached over its Unix socket.
    Remote(Client),
}

/// `$call` with `$ks` bound to the store or to the client: the read and
/// key-use calls have the same signatures on both.
macro_rules! on_either {
    ($target:expr, $ks:ident => $call:expr) => {
        match $target {
            Target::Local { store: $ks, .. } => $call,
            Target::Remote($ks) => $call,
        }
    };
}

impl Target {
    /// The store opened here, acted on by `actor` (`--as`).
    pub fn local(store: Store, actor: &ActorArgs) -> Target {
        Target::Local {
            store: Box::new(store),
            actor: actor.clone(),
        }
    }

    /// The daemon at `address` (`unix:PATH`); `Unavailable` (exit 13) when
    /// nothing answers there.
    pub fn connect(address: &str) -> CliResult<Target> {
        Ok(Target::Remote(Client::connect(address)?))
    }

    /// The caller of the lifecycle command `what`: locally the `--as` actor,
    /// authenticated now; through the daemon, the connection's own uid.
    pub fn caller(&self, what: &str) -> CliResult<Caller<'_>> {
        Ok(match self {
            Target::Local { store, actor } => {
                Caller::Local(store, crate::actor::authenticate(store, actor, what)?)
            }
            Target::Remote(client) => Caller::Remote(client),
        })
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        on_either!(self, ks => ks.list())
    }

    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        on_either!(self, ks => ks.info(name))
    }

    /// Keys whose cryptoperiod has ended (now, by the keystore's clock).
    pub fn due(&self) -> Result<Vec<RotationDue>> {
        match self {
            Target::Local { store, .. } => store.due(OffsetDateTime::now_utc()),
            Target::Remote(client) => client.due(),
        }
    }

    pub fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        on_either!(self, ks => ks.sign(name, message, format))
    }

    pub fn verify(
        &self,
        name: &str,
        message: &[u8],
        signature: &[u8],
        version: Option<u32>,
    ) -> Result<u32> {
        on_either!(self, ks => ks.verify(name, message, signature, version))
    }

    pub fn public_key(&self, name: &str) -> Result<PublicKey> {
        on_either!(self, ks => ks.public_key(name))
    }

    pub fn encrypt(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        on_either!(self, ks => ks.encrypt(name, plaintext, aad))
    }

    pub fn decrypt(&self, name: &str, envelope: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        on_either!(self, ks => ks.decrypt(name, envelope, aad))
    }

    pub fn derive_hkdf_sha256(
        &self,
        name: &str,
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        on_either!(self, ks => ks.derive_hkdf_sha256(name, salt, info, len))
    }

    pub fn agree_sha256_kdf(
        &self,
        name: &str,
        peer_public_key: &[u8],
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        on_either!(self, ks => ks.agree_sha256_kdf(name, peer_public_key, fixed_info, len))
    }
}

/// A target with its caller established ([`Target::caller`]): the lifecycle
/// calls, which the keystore checks against the caller's role and audits.
pub enum Caller<'a> {
    /// The local store and the authenticated actor.
    Local(&'a Store, Actor),
    /// The daemon, which knows the caller by its uid.
    Remote(&'a Client),
}

/// `$method($args)` on the client, or on the store with the actor first.
macro_rules! as_caller {
    ($caller:expr, $method:ident($($arg:expr),*)) => {
        match $caller {
            Caller::Local(store, actor) => store.$method(actor, $($arg),*),
            Caller::Remote(client) => client.$method($($arg),*),
        }
    };
}

impl Caller<'_> {
    pub fn create(&self, name: &str, spec: KeySpec) -> Result<KeyInfo> {
        as_caller!(self, create(name, spec))
    }

    pub fn import(&self, name: &str, spec: KeySpec, secret: &SecretBytes) -> Result<KeyInfo> {
        as_caller!(self, import(name, spec, secret))
    }

    pub fn rotate(&self, name: &str, grace: Duration) -> Result<KeyInfo> {
        as_caller!(self, rotate(name, grace))
    }

    /// Rotates every key due now; returns their names.
    pub fn rotate_due(&self, grace: Duration) -> Result<Vec<String>> {
        match self {
            Caller::Local(store, actor) => {
                store.rotate_due(actor, OffsetDateTime::now_utc(), grace)
            }
            Caller::Remote(client) => client.rotate_due(grace),
        }
    }

    pub fn revoke(&self, name: &str, version: u32, reason: &str) -> Result<()> {
        as_caller!(self, revoke(name, version, reason))
    }

    pub fn suspend(&self, name: &str, version: u32) -> Result<()> {
        as_caller!(self, suspend(name, version))
    }

    pub fn resume(&self, name: &str, version: u32) -> Result<()> {
        as_caller!(self, resume(name, version))
    }

    pub fn destroy(&self, name: &str) -> Result<()> {
        as_caller!(self, destroy(name))
    }

    pub fn backup(&self, name: &str, kek: &str) -> Result<Vec<u8>> {
        as_caller!(self, backup(name, kek))
    }

    pub fn restore(&self, blob: &[u8], kek: &str, name: Option<&str>) -> Result<KeyInfo> {
        as_caller!(self, restore(blob, kek, name))
    }

    pub fn sweep(&self) -> Result<Vec<(String, u32)>> {
        as_caller!(self, sweep())
    }

    pub fn verify_audit(&self) -> Result<AuditVerdict> {
        Ok(match self {
            Caller::Local(store, actor) => AuditVerdict::of_report(&store.verify_audit(actor)?),
            Caller::Remote(client) => AuditVerdict::of_remote(client.verify_audit()?),
        })
    }
}

/// What a verification of the audit trail found, wherever it ran.
#[derive(Debug, PartialEq, Eq)]
pub struct AuditVerdict {
    /// Entries read.
    pub entries: u64,
    /// The first bad entry, and why.
    pub first_bad: Option<(u64, String)>,
    /// Whether the MACs were checked, or only the chain (decommissioned).
    pub checked: AuditCoverage,
    /// One line per key holding both mac and derive usages
    /// ([`AuditReport::warnings`]' text).
    pub key_warnings: Vec<String>,
}

impl AuditVerdict {
    fn of_report(report: &AuditReport) -> AuditVerdict {
        AuditVerdict {
            entries: report.entries,
            first_bad: report.first_bad.clone(),
            checked: report.checked.clone(),
            key_warnings: key_warnings(report.macs_checked(), report.warnings()),
        }
    }

    /// The daemon's report: its warnings are [`AuditReport::warnings`].
    fn of_remote(report: keystore_client::AuditReport) -> AuditVerdict {
        let checked = if report.macs_checked {
            AuditCoverage::ChainAndMacs
        } else {
            AuditCoverage::ChainOnly {
                decommissioned_at: report.decommissioned_at.clone(),
            }
        };
        let failed = report.first_bad_seq != 0 || !report.first_bad_reason.is_empty();
        AuditVerdict {
            entries: report.entries,
            first_bad: failed.then_some((report.first_bad_seq, report.first_bad_reason)),
            checked,
            key_warnings: key_warnings(report.macs_checked, report.warnings),
        }
    }
}

/// [`AuditReport::warnings`] without the chain-only warning, which comes
/// first when the MACs were not checked.
fn key_warnings(macs_checked: bool, warnings: Vec<String>) -> Vec<String> {
    warnings
        .into_iter()
        .skip(usize::from(!macs_checked))
        .collect()
}

/// The name of a command that manages the store itself or the device PKI,
/// which runs on the daemon's host, never over `--connect`.
pub fn host_only(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Init(_) => "init",
        Command::Role(_) => "role",
        Command::Decommission { .. } => "decommission",
        Command::Tour => "tour",
        Command::Ca(_) => "ca",
        Command::Provision(_) => "provision",
        Command::Renew(_) => "renew",
        Command::Est(_) => "est",
        Command::Ocsp(_) => "ocsp",
        Command::Policy(_) => "policy",
        Command::Inventory(_) => "inventory",
        Command::Evidence(_) => "evidence",
        Command::Key(_)
        | Command::Sign(_)
        | Command::Verify(_)
        | Command::Pubkey(_)
        | Command::Encrypt(_)
        | Command::Decrypt(_)
        | Command::Derive(_)
        | Command::Agree(_)
        | Command::Sweep
        | Command::Audit(_) => return None,
    })
}

/// The refusal of a [`host_only`] command over `--connect` (exit 2).
pub fn host_only_error(what: &str) -> CliError {
    CliError::invalid(format!(
        "`keyctl {what}` manages the store or its PKI: run it on the daemon's host as the \
         daemon's user (with --store), not over --connect"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_report_reads_as_the_local_one() {
        let report = keystore_client::AuditReport {
            entries: 7,
            first_bad_seq: 0,
            first_bad_reason: String::new(),
            macs_checked: false,
            warnings: vec![
                "MACs NOT checked: the audit key was destroyed at decommission \
                 (2026-01-02T03:04:05Z); only the hash chain was verified"
                    .into(),
                "key 'k' holds both mac and derive usages".into(),
            ],
            decommissioned_at: "2026-01-02T03:04:05Z".into(),
            keys_with_mac_and_derive: vec!["k".into()],
        };
        assert_eq!(
            AuditVerdict::of_remote(report),
            AuditVerdict {
                entries: 7,
                first_bad: None,
                checked: AuditCoverage::ChainOnly {
                    decommissioned_at: "2026-01-02T03:04:05Z".into()
                },
                key_warnings: vec!["key 'k' holds both mac and derive usages".into()],
            }
        );
        let bad = keystore_client::AuditReport {
            entries: 3,
            first_bad_seq: 2,
            first_bad_reason: "hash mismatch".into(),
            macs_checked: true,
            warnings: vec![],
            decommissioned_at: String::new(),
            keys_with_mac_and_derive: vec![],
        };
        let verdict = AuditVerdict::of_remote(bad);
        assert_eq!(verdict.first_bad, Some((2, "hash mismatch".into())));
        assert_eq!(verdict.checked, AuditCoverage::ChainAndMacs);
    }
}

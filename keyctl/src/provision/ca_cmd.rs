//! `keyctl ca ...`: the root and intermediate CA commands.

use crate::actor;
use crate::cli::{ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store;
use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::rfc3339;
use keystore_api::{Algorithm, Error, Keystore, Role};
use provisioning::{pem_decode_all, pem_encode, PeerVerifier, PinSet, RootCa};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

use super::args::{days, CaCommand, RootArgs};
use super::stores::{
    actor_id, factory, open_db, open_registry, open_root, pki_dir, root_actor, root_secret,
    root_unlock, write_file,
};
use super::MAX_PKI_FILE;

/// `keyctl ca ...`.
pub fn ca(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, cmd: CaCommand) -> CliResult<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCommand::InitRoot {
            root: rargs,
            new_root_key_file,
            cn,
            validity_days,
            algorithm,
        } => init_root(
            &rargs,
            new_root_key_file.as_deref(),
            &cn,
            days(validity_days)?,
            algorithm,
            now,
        ),
        CaCommand::SignIntermediate {
            root: rargs,
            cn,
            validity_days,
            algorithm,
        } => {
            let validity = days(validity_days)?;
            let prod = store::open(root, unlock)?;
            let officer = actor::authenticate(&prod, args, "ca sign-intermediate")?;
            let prod_db = open_db(root)?;
            let shared = open_registry()?;
            let factory = factory(&prod, &prod_db, &shared).with_key_algorithm(algorithm);
            let (inter, root_cert, root_crl) = {
                let root_ks = open_root(&rargs)?;
                let custodian = root_actor(&root_ks, &rargs)?;
                let root_db = open_db(&rargs.root_store)?;
                let rca = RootCa::new(&root_ks, &root_db);
                let inter = provisioning::ceremony(
                    &rca, &custodian, &factory, &officer, &cn, validity, now,
                )?;
                // The root's CRL, which relying parties need to check the
                // intermediate; reissued by `ca root-crl` before it is stale.
                let root_crl =
                    rca.issue_crl(&custodian, now, provisioning::DEFAULT_ROOT_CRL_VALIDITY)?;
                let root_crl = pem_encode("X509 CRL", &root_crl);
                write_file(&rargs.root_store.join("root-crl.pem"), &root_crl)?;
                (inter, rca.certificate()?, root_crl)
            }; // The root's store is closed here, before anything else happens.
            let crl = factory.issue_crl(&officer, now, provisioning::DEFAULT_CRL_VALIDITY)?;
            let dir = pki_dir(root);
            write_file(&dir.join("root.pem"), &root_cert.pem())?;
            write_file(&dir.join("intermediate.pem"), &inter.pem())?;
            write_file(&dir.join("crl.pem"), &pem_encode("X509 CRL", &crl))?;
            write_file(&dir.join("root-crl.pem"), &root_crl)?;
            outln!(
                "intermediate '{}' (serial {}) signed by root '{}', valid until {}",
                inter.subject,
                inter.serial,
                root_cert.subject,
                rfc3339(inter.not_after)
            )?;
            outln!(
                "its key '{}' is in the production store; wrote {}/{{root,intermediate,crl,root-crl}}.pem",
                provisioning::INTERMEDIATE_KEY,
                dir.display()
            )?;
            Ok(())
        }
        CaCommand::Show => show(root, unlock),
        CaCommand::Revoke {
            serial,
            device_id,
            reason,
        } => {
            let prod = store::open(root, unlock)?;
            let officer = actor::authenticate(&prod, args, "ca revoke")?;
            let db = open_db(root)?;
            let shared = open_registry()?;
            let factory = factory(&prod, &db, &shared);
            let (serials, crl) = match (serial, device_id) {
                (Some(s), _) => {
                    let crl = factory.revoke(&officer, &s, &reason, now)?;
                    (vec![provisioning::normalise_serial(&s)?], crl)
                }
                (None, Some(d)) => factory.revoke_device(&officer, &d, &reason, now)?,
                (None, None) => return Err(CliError::invalid("give --serial or --device-id")),
            };
            let path = pki_dir(root).join("crl.pem");
            write_file(&path, &pem_encode("X509 CRL", &crl))?;
            for s in serials {
                outln!("revoked certificate {s}")?;
            }
            outln!("new CRL written to {}", path.display())?;
            Ok(())
        }
        CaCommand::Crl { next_update, out } => {
            let prod = store::open(root, unlock)?;
            let who = actor::authenticate(&prod, args, "ca crl")?;
            let db = open_db(root)?;
            let shared = open_registry()?;
            let crl = factory(&prod, &db, &shared).issue_crl(&who, now, next_update)?;
            let pem = pem_encode("X509 CRL", &crl);
            let path = pki_dir(root).join("crl.pem");
            write_file(&path, &pem)?;
            if let Some(out) = out {
                write_file(&out, &pem)?;
            }
            outln!(
                "CRL issued, next update {}; written to {}",
                rfc3339(now + next_update),
                path.display()
            )?;
            Ok(())
        }
        CaCommand::Check {
            chain,
            root: anchor,
            crl,
            root_crl,
            pin,
            at,
        } => check(root, &chain, anchor, crl, root_crl, &pin, at.as_deref()),
        CaCommand::RevokeIntermediate {
            root: rargs,
            serial,
            reason,
            next_update,
            out,
        } => {
            let serial = provisioning::normalise_serial(&serial)?;
            let root_ks = open_root(&rargs)?;
            let custodian = root_actor(&root_ks, &rargs)?;
            let root_db = open_db(&rargs.root_store)?;
            let rca = RootCa::new(&root_ks, &root_db);
            let crl = rca.revoke_intermediate(&custodian, &serial, &reason, now, next_update)?;
            let subject = rca
                .signed_intermediates()?
                .into_iter()
                .find(|i| i.serial == serial)
                .map(|i| i.subject)
                .unwrap_or_default();
            outln!("revoked intermediate '{subject}' (serial {serial})")?;
            write_root_crl(&rargs, &crl, out.as_deref(), now + next_update)
        }
        CaCommand::RootCrl {
            root: rargs,
            next_update,
            out,
        } => {
            let root_ks = open_root(&rargs)?;
            let custodian = root_actor(&root_ks, &rargs)?;
            let root_db = open_db(&rargs.root_store)?;
            let crl = RootCa::new(&root_ks, &root_db).issue_crl(&custodian, now, next_update)?;
            write_root_crl(&rargs, &crl, out.as_deref(), now + next_update)
        }
        CaCommand::OcspSigner {
            cn,
            validity_days,
            algorithm,
        } => super::ocsp_cmd::issue_signer(root, unlock, args, &cn, validity_days, algorithm),
        CaCommand::Events => {
            let prod = store::open(root, unlock)?;
            actor::authenticate(&prod, args, "ca events")?;
            outln!("{}", event_log_report(&prod, root)?.trim_end())?;
            Ok(())
        }
    }
}

/// The provisioning event log of the factory store `prod` at `root`,
/// verified: one line per event, then the verdict (`keyctl ca events`, and
/// the evidence pack). A damaged log is [`ErrorKind::Integrity`](keystore_api::ErrorKind::Integrity).
pub(crate) fn event_log_report(prod: &store::Store, root: &Path) -> CliResult<String> {
    use std::fmt::Write as _;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let f = factory(prod, &db, &shared);
    let report = f.verify_event_log()?;
    let mut out = String::new();
    for e in &report.events {
        let _ = writeln!(
            out,
            "#{} {} {} {} by {} ({}){} device={} serial={} {}",
            e.seq,
            e.at,
            e.id,
            e.event,
            e.actor,
            e.role,
            e.station
                .as_deref()
                .map(|s| format!(" station={s}"))
                .unwrap_or_default(),
            e.device_id.as_deref().unwrap_or("-"),
            e.serial.as_deref().unwrap_or("-"),
            e.detail
        );
    }
    if report.other_stations.is_empty() {
        let _ = writeln!(
            out,
            "provisioning event log intact: {} events, chain and MACs verify",
            report.events.len()
        );
    } else {
        let others: Vec<String> = report
            .other_stations
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "provisioning event log intact: {} events in {}, chain verifies; \
             {} MACs of this station ({}) verify; events of other stations \
             (their MACs verify at their station): {}",
            report.events.len(),
            f.registry_location(),
            report.macs_checked,
            provisioning::station_id(prod)?,
            others.join(", ")
        );
    }
    Ok(out)
}

fn init_root(
    rargs: &RootArgs,
    new_key_file: Option<&Path>,
    cn: &str,
    validity: Duration,
    algorithm: Algorithm,
    now: OffsetDateTime,
) -> CliResult<()> {
    let layout = store::Layout::new(&rargs.root_store);
    if layout.metadata.exists() || layout.soft.exists() {
        return Err(Error::already_exists(format!(
            "a store already exists in {}",
            rargs.root_store.display()
        ))
        .into());
    }
    let secret = root_secret(rargs)?;
    let unlock = match new_key_file {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                keystore_api::fsperm::ensure_private_dir(parent)
                    .map_err(|e| CliError::io("create directory", parent, e))?;
            }
            backend_soft::create_key_file(path)?;
            Unlock::KeyFile(path.to_path_buf())
        }
        None => root_unlock(rargs)?,
    };
    let kdf = match unlock {
        Unlock::KeyFile(_) => Kdf::KeyFile,
        _ => Kdf::default_passphrase(),
    };
    store::prepare_root(&layout.root)?;
    let backend = SoftStore::create(&layout.soft, &unlock, kdf)?;
    let ks = Keystore::open(backend, &layout.metadata)?;
    ks.set_role_credential(None, Role::SecurityOfficer, &secret)?;
    let custodian = ks.authenticate(
        &actor_id(rargs.root_actor.as_deref()),
        Role::SecurityOfficer,
        &secret,
    )?;
    let db = open_db(&rargs.root_store)?;
    let cert = RootCa::new(&ks, &db)
        .with_key_algorithm(algorithm)
        .init(&custodian, cn, validity, now)?;
    let path = rargs.root_store.join("root-ca.pem");
    write_file(&path, &cert.pem())?;
    outln!(
        "root CA '{}' created in {} (key '{}', fingerprint {})",
        cert.subject,
        rargs.root_store.display(),
        provisioning::ROOT_KEY,
        cert.spki_fingerprint
    )?;
    outln!(
        "root certificate {} ({}); keep this store offline",
        path.display(),
        cert.digest
    )?;
    Ok(())
}

/// Writes the root's CRL to ROOT/root-crl.pem and `out`, and says where.
fn write_root_crl(
    rargs: &RootArgs,
    crl: &[u8],
    out: Option<&Path>,
    next_update: OffsetDateTime,
) -> CliResult<()> {
    let pem = pem_encode("X509 CRL", crl);
    let path = rargs.root_store.join("root-crl.pem");
    write_file(&path, &pem)?;
    if let Some(out) = out {
        write_file(out, &pem)?;
    }
    outln!(
        "root CRL issued, next update {}; written to {}{}",
        rfc3339(next_update),
        path.display(),
        out.map(|o| format!(" and {}", o.display()))
            .unwrap_or_default()
    )?;
    outln!("publish it to relying parties (for `keyctl ca check`: STORE/pki/root-crl.pem)")?;
    Ok(())
}

fn show(root: &Path, unlock: &UnlockArgs) -> CliResult<()> {
    let prod = store::open(root, unlock)?;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let f = factory(&prod, &db, &shared);
    let r = f.root()?;
    let i = f.intermediate()?;
    for (what, c) in [("root", &r), ("intermediate", &i)] {
        outln!(
            "{what:<13} {} serial {} until {} cert {} key {}",
            c.subject,
            c.serial,
            rfc3339(c.not_after),
            c.digest,
            c.spki_fingerprint
        )?;
    }
    outln!("devices       {}", f.device_count()?)?;
    match f.current_crl()? {
        Some(crl) => outln!(
            "crl           {} bytes, {}",
            crl.len(),
            provisioning::sha256_tag(&crl)
        )?,
        None => outln!("crl           none issued")?,
    }
    Ok(())
}

fn read_ders(path: &Path, label: &str) -> CliResult<Vec<Vec<u8>>> {
    let what = match label {
        "X509 CRL" => "CRL file",
        _ => "certificate file",
    };
    let bytes = files::read_input(path, MAX_PKI_FILE, what)?;
    if let Ok(text) = std::str::from_utf8(&bytes) {
        if text.contains("-----BEGIN ") {
            return Ok(pem_decode_all(text, label)?);
        }
    }
    Ok(vec![bytes])
}

fn check(
    store: &Path,
    chain: &Path,
    anchor: Option<PathBuf>,
    crls: Vec<PathBuf>,
    root_crl: Option<PathBuf>,
    pins: &[String],
    at: Option<&str>,
) -> CliResult<()> {
    let anchor = anchor.unwrap_or_else(|| pki_dir(store).join("root.pem"));
    // Named files must exist; a missing default file is left out, so the CA
    // it would cover has an unknown status and the peer is rejected (exit 6).
    let defaults = crls.is_empty();
    let mut files = crls;
    if defaults {
        files.push(pki_dir(store).join("crl.pem"));
        if root_crl.is_none() {
            files.push(pki_dir(store).join("root-crl.pem"));
        }
        files.retain(|p| p.exists());
    }
    files.extend(root_crl);
    let crls = files;
    let now = match at {
        Some(s) => keystore_api::parse_rfc3339(s)
            .ok_or_else(|| CliError::invalid(format!("--at needs an RFC 3339 time, got '{s}'")))?,
        None => OffsetDateTime::now_utc(),
    };
    let chain = read_ders(chain, "CERTIFICATE")?;
    let mut roots = read_ders(&anchor, "CERTIFICATE")?.into_iter();
    let first = roots
        .next()
        .ok_or_else(|| CliError::invalid("the root file holds no certificate"))?;
    let mut v = PeerVerifier::new(&first)?;
    for r in roots {
        v = v.with_anchor(&r)?;
    }
    for c in &crls {
        for der in read_ders(c, "X509 CRL")? {
            v = v.with_crl(&der)?;
        }
    }
    if !pins.is_empty() {
        let mut set = PinSet::new();
        for p in pins {
            set.insert(p)?;
        }
        v = v.with_pins(set);
    }
    let info = v.check_peer(&chain, now).map_err(Error::from)?;
    outln!(
        "OK: '{}' serial {} valid until {}{}",
        info.common_name.as_deref().unwrap_or("?"),
        info.serial,
        rfc3339(info.not_after),
        info.matched_pin
            .map(|p| format!(", pinned ({p})"))
            .unwrap_or_default()
    )?;
    Ok(())
}

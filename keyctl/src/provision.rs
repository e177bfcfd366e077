//! Device PKI commands: `ca init-root|sign-intermediate|revoke-intermediate|root-crl|show|revoke|crl|check|events`,
//! `provision` (one device or a batch) and `renew`.
//!
//! Separation of duties (REQ-KEY-SOD-01): the root CA's key lives in its own
//! store (`--root-store`, soft, meant to be kept offline), opened only by
//! `ca init-root`, the `ca sign-intermediate` ceremony, and the custodian's
//! `ca revoke-intermediate` and `ca root-crl`, with the root custodian's own
//! credential. Every other command works on the production store (`--store`,
//! any backend) and never opens the root's store; the root's own commands
//! (other than the ceremony) never open the production store.
//!
//! Files: the production store holds `pki.sqlite` (CA certificates, the
//! provisioning registry, CRL state, the event log) and `pki/` (root.pem,
//! intermediate.pem, crl.pem, and root-crl.pem, the root's CRL as published
//! by the custodian); the root's store holds root-ca.pem and root-crl.pem;
//! provisioned devices get `provisioned/<id>/{cert.pem,chain.pem,record.yaml}`
//! unless `--out-dir`.

use crate::actor;
use crate::cli::{parse_duration, ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store;
use crate::unlock::read_passphrase_file;
use backend_soft::{Kdf, SoftStore, Unlock};
use clap::{Args, Subcommand};
use keystore_api::{Actor, Backend, Error, Keystore, Role, SecretBytes};
use provisioning::util::{pem_decode_all, pem_encode};
use provisioning::{
    shared_key_name, Device, Factory, PeerVerifier, PinSet, PkiDb, Provisioned, Provisioner,
    RootCa, DEVICE_KEY,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Environment variable holding the root custodian's credential.
pub const ROOT_SECRET_ENV: &str = "KEYCTL_ROOT_SECRET";
/// Environment variable holding the root store's passphrase.
pub const ROOT_PASSPHRASE_ENV: &str = "KEYCTL_ROOT_PASSPHRASE";

/// Largest certificate/CRL/chain/batch file read.
const MAX_PKI_FILE: usize = 1024 * 1024;
const MAX_BATCH_FILE: usize = 64 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the offline root CA: a new store in --root-store holding the
    /// root key, and a self-signed root certificate (ROOT/root-ca.pem). The
    /// root custodian's credential (--root-secret-file or KEYCTL_ROOT_SECRET)
    /// becomes that store's security-officer credential.
    InitRoot {
        #[command(flatten)]
        root: RootArgs,
        /// Generate a new 32-byte key file here that unlocks the root store
        /// (otherwise a passphrase: --root-passphrase-file or KEYCTL_ROOT_PASSPHRASE).
        #[arg(long, value_name = "PATH")]
        new_root_key_file: Option<PathBuf>,
        /// The root certificate's common name.
        #[arg(long, default_value = "Keystore Device Root CA")]
        cn: String,
        /// Root certificate validity in days.
        #[arg(long, default_value_t = 3650)]
        validity_days: u32,
    },
    /// The ceremony: the production store (--store, --as security-officer)
    /// generates the intermediate key and CSR; the root (--root-store, the
    /// custodian's credential) signs it; the production store installs it.
    SignIntermediate {
        #[command(flatten)]
        root: RootArgs,
        /// The intermediate certificate's common name.
        #[arg(long, default_value = "Keystore Production CA")]
        cn: String,
        /// Intermediate certificate validity in days (never beyond the root).
        #[arg(long, default_value_t = 1095)]
        validity_days: u32,
    },
    /// Root custodian: revoke an intermediate this root signed and issue the
    /// root's new CRL (ROOT/root-crl.pem, and --out). Opens the root's store
    /// alone, with the custodian's credential (--root-secret-file or
    /// KEYCTL_ROOT_SECRET). Publish the CRL to relying parties (for `ca
    /// check`: STORE/pki/root-crl.pem): every device under the intermediate
    /// is then rejected.
    RevokeIntermediate {
        #[command(flatten)]
        root: RootArgs,
        /// The intermediate's serial (hex; `ca show` prints it).
        #[arg(long)]
        serial: String,
        /// Why (recorded; a leading keyword such as ca-compromise,
        /// key-compromise or superseded sets the CRL reason code).
        #[arg(long)]
        reason: String,
        /// Time to the root CRL's nextUpdate, e.g. 180d (at most 366d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
        next_update: Duration,
        /// Also write the root's CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Root custodian: reissue the root's CRL (before the last one's
    /// nextUpdate) to ROOT/root-crl.pem and --out. Opens the root's store alone.
    RootCrl {
        #[command(flatten)]
        root: RootArgs,
        /// Time to the root CRL's nextUpdate, e.g. 180d (at most 366d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
        next_update: Duration,
        /// Also write the root's CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the production store's root, intermediate, CRL and device count.
    Show,
    /// Revoke a device certificate (by serial, or every certificate of a
    /// device) and issue a new CRL to STORE/pki/crl.pem. Security officer.
    Revoke {
        /// Certificate serial (hex).
        #[arg(
            long,
            conflicts_with = "device_id",
            required_unless_present = "device_id"
        )]
        serial: Option<String>,
        /// Revoke every unrevoked certificate of this device.
        #[arg(long)]
        device_id: Option<String>,
        /// Why (recorded; a leading keyword such as key-compromise,
        /// superseded or cessation-of-operation sets the CRL reason code).
        #[arg(long)]
        reason: String,
    },
    /// Issue a fresh CRL from the intermediate (before the last one's nextUpdate).
    Crl {
        /// Time to the CRL's nextUpdate, e.g. 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
        next_update: Duration,
        /// Also write the CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a peer's chain: path to the root, revocation of every
    /// certificate on it (the device against the intermediate's CRL, the
    /// intermediate against the root's CRL; nextUpdate enforced), validity
    /// and pins. Exit 0 if accepted; 6 (KeyState) if a certificate on the
    /// path is revoked, expired or not yet valid, or a CRL is missing or
    /// stale; 8 (Auth) for an unknown issuer or a pin mismatch. Needs no unlock.
    Check {
        /// PEM chain: the peer's certificate first, then intermediates.
        #[arg(long, value_name = "FILE")]
        chain: PathBuf,
        /// Trust anchor [default: STORE/pki/root.pem].
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// CRL files (PEM or DER; repeat, or several in one PEM file). With
        /// --crl, only the CRLs named here and by --root-crl are used
        /// [default: STORE/pki/crl.pem and STORE/pki/root-crl.pem; a missing
        /// default file leaves that CA's status unknown, which rejects].
        #[arg(long, value_name = "FILE")]
        crl: Vec<PathBuf>,
        /// The root's CRL (PEM or DER), which covers the intermediate
        /// [default without --crl: STORE/pki/root-crl.pem].
        #[arg(long, value_name = "FILE")]
        root_crl: Option<PathBuf>,
        /// Require one of these SPKI pins (sha256:HEX) on the path; repeat
        /// for old and new pins during a transition.
        #[arg(long, value_name = "PIN")]
        pin: Vec<String>,
        /// Check at this RFC 3339 time instead of now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Verify the provisioning event log (hash chain, MACs, head) and print
    /// it. Any authenticated role (auditors included).
    Events,
}

/// The offline root's store.
#[derive(Debug, Clone, Args)]
pub struct RootArgs {
    /// The root CA's store directory (kept offline).
    #[arg(long, value_name = "DIR")]
    pub root_store: PathBuf,
    /// Key file unlocking the root store.
    #[arg(long, value_name = "PATH")]
    pub root_key_file: Option<PathBuf>,
    /// File holding the root store's passphrase (else KEYCTL_ROOT_PASSPHRASE).
    #[arg(long, value_name = "PATH")]
    pub root_passphrase_file: Option<PathBuf>,
    /// File holding the root custodian's credential (else KEYCTL_ROOT_SECRET).
    #[arg(long, value_name = "PATH")]
    pub root_secret_file: Option<PathBuf>,
    /// The root custodian's actor id [default: $USER].
    #[arg(long, value_name = "ID")]
    pub root_actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The unit's id (CN and serialNumber of its certificate).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub device_id: Option<String>,
    /// Provision every device in FILE: one id per line, or `id,operator`.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// The production line or station, recorded in the provisioning record
    /// (for a batch: the default for lines without one).
    #[arg(long, value_name = "OP")]
    pub operator: Option<String>,
    /// Certificate validity in days.
    #[arg(long, default_value_t = 30)]
    pub validity_days: u32,
    #[command(flatten)]
    pub device: DeviceStoreArgs,
    /// Write cert.pem, chain.pem and record.yaml under DIR/<device-id>/
    /// [default: STORE/provisioned].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Where device identity keys live.
#[derive(Debug, Clone, Args)]
pub struct DeviceStoreArgs {
    /// The device's own keystore (soft; created with `keyctl --store DIR init`
    /// and the same role credential). Default: the production store, with
    /// one key `device.<id>.identity` per device.
    #[arg(long, value_name = "DIR", requires = "device_key_file")]
    pub device_store: Option<PathBuf>,
    /// Key file unlocking --device-store.
    #[arg(long, value_name = "PATH")]
    pub device_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The unit's id.
    #[arg(long)]
    pub device_id: String,
    /// Renew when the certificate expires within this time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    pub threshold: Duration,
    /// How long the old key and certificate stay valid after renewal.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    pub grace: Duration,
    /// New certificate validity in days.
    #[arg(long, default_value_t = 30)]
    pub validity_days: u32,
    #[command(flatten)]
    pub device: DeviceStoreArgs,
    /// Output directory [default: STORE/provisioned].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

fn days(n: u32) -> CliResult<Duration> {
    if n == 0 || n > 7305 {
        return Err(CliError::invalid("a validity is 1 to 7305 days"));
    }
    Ok(Duration::days(i64::from(n)))
}

fn pki_dir(store: &Path) -> PathBuf {
    store.join("pki")
}

fn open_db(dir: &Path) -> CliResult<PkiDb> {
    let db = PkiDb::open(&dir.join("pki.sqlite"))?;
    store::warn_permissions(db.permission_report());
    Ok(db)
}

/// Writes a PKI file (certificate, chain, CRL, provisioning record). They
/// hold nothing secret, but most land inside a store, where everything is
/// owner-only: new directories are 0700 and the file is 0600 (publish a copy
/// with the mode you need).
fn write_file(path: &Path, text: &str) -> CliResult<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            keystore_api::fsperm::ensure_private_dir(parent)
                .map_err(|e| CliError::io("create directory", parent, e))?;
        }
    }
    files::write_secret(path, text.as_bytes())
}

/// A keystore opened by a PKI command, with its loose paths reported.
fn warned<B: keystore_api::Backend>(ks: Keystore<B>) -> Keystore<B> {
    store::warn_permissions(ks.permission_report());
    ks
}

fn actor_id(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "keyctl".into())
}

/// A credential from a file, else an environment variable (no prompt: the
/// PKI commands run at stations and ceremonies with prepared secrets).
fn credential(file: Option<&Path>, env: &str, what: &str) -> CliResult<SecretBytes> {
    if let Some(path) = file {
        return read_passphrase_file(path);
    }
    match std::env::var_os(env) {
        Some(v) if !v.is_empty() => Ok(SecretBytes::new(v.into_encoded_bytes())),
        _ => Err(CliError::invalid(format!(
            "no {what}: give its file or set {env}"
        ))),
    }
}

fn root_unlock(root: &RootArgs) -> CliResult<Unlock> {
    if let Some(path) = &root.root_key_file {
        std::fs::metadata(path).map_err(|e| CliError::io("read key file", path, e))?;
        return Ok(Unlock::KeyFile(path.clone()));
    }
    Ok(Unlock::Passphrase(credential(
        root.root_passphrase_file.as_deref(),
        ROOT_PASSPHRASE_ENV,
        "root store unlock (--root-key-file, --root-passphrase-file)",
    )?))
}

fn root_secret(root: &RootArgs) -> CliResult<SecretBytes> {
    credential(
        root.root_secret_file.as_deref(),
        ROOT_SECRET_ENV,
        "root custodian credential (--root-secret-file)",
    )
}

fn open_root(root: &RootArgs) -> CliResult<Keystore<SoftStore>> {
    let layout = store::Layout::new(&root.root_store);
    if !layout.soft.is_dir() || !layout.metadata.is_file() {
        return Err(Error::NotFound(format!(
            "no root CA store in {} (create it with `keyctl ca init-root`)",
            root.root_store.display()
        ))
        .into());
    }
    let backend = SoftStore::open(&layout.soft, &root_unlock(root)?)?;
    Ok(warned(Keystore::open(backend, &layout.metadata)?))
}

fn root_actor(ks: &Keystore<SoftStore>, root: &RootArgs) -> CliResult<Actor> {
    let secret = root_secret(root)?;
    Ok(ks.authenticate(
        &actor_id(root.root_actor.as_deref()),
        Role::SecurityOfficer,
        &secret,
    )?)
}

/// Authenticates the `--as` role against another store (a device's own
/// keystore), with the same credential source as the production store.
fn same_actor_on<B: Backend>(ks: &Keystore<B>, args: &ActorArgs, what: &str) -> CliResult<Actor> {
    let Some(role) = actor::role(args)? else {
        return Err(CliError::invalid(format!("{what} needs --as ROLE")));
    };
    let secret = credential(
        args.role_secret_file.as_deref(),
        actor::ROLE_SECRET_ENV,
        "role credential (--role-secret-file)",
    )?;
    Ok(ks.authenticate(&actor_id(args.actor.as_deref()), role, &secret)?)
}

/// `keyctl ca ...`.
pub fn ca(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, cmd: CaCommand) -> CliResult<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCommand::InitRoot {
            root: rargs,
            new_root_key_file,
            cn,
            validity_days,
        } => init_root(
            &rargs,
            new_root_key_file.as_deref(),
            &cn,
            days(validity_days)?,
            now,
        ),
        CaCommand::SignIntermediate {
            root: rargs,
            cn,
            validity_days,
        } => {
            let validity = days(validity_days)?;
            let prod = store::open(root, unlock)?;
            let officer = actor::authenticate(&prod, args, "ca sign-intermediate")?;
            let prod_db = open_db(root)?;
            let factory = Factory::new(&prod, &prod_db);
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
                    rca.issue_crl(&custodian, now, provisioning::ca::DEFAULT_ROOT_CRL_VALIDITY)?;
                let root_crl = pem_encode("X509 CRL", &root_crl);
                write_file(&rargs.root_store.join("root-crl.pem"), &root_crl)?;
                (inter, rca.certificate()?, root_crl)
            }; // The root's store is closed here, before anything else happens.
            let crl = factory.issue_crl(&officer, now, provisioning::ca::DEFAULT_CRL_VALIDITY)?;
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
                provisioning::util::rfc3339(inter.not_after)
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
            let factory = Factory::new(&prod, &db);
            let (serials, crl) = match (serial, device_id) {
                (Some(s), _) => {
                    let crl = factory.revoke(&officer, &s, &reason, now)?;
                    (vec![provisioning::ca::normalise_serial(&s)?], crl)
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
            let crl = Factory::new(&prod, &db).issue_crl(&who, now, next_update)?;
            let pem = pem_encode("X509 CRL", &crl);
            let path = pki_dir(root).join("crl.pem");
            write_file(&path, &pem)?;
            if let Some(out) = out {
                write_file(&out, &pem)?;
            }
            outln!(
                "CRL issued, next update {}; written to {}",
                provisioning::util::rfc3339(now + next_update),
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
            let serial = provisioning::ca::normalise_serial(&serial)?;
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
        CaCommand::Events => {
            let prod = store::open(root, unlock)?;
            actor::authenticate(&prod, args, "ca events")?;
            let db = open_db(root)?;
            let events = Factory::new(&prod, &db).verify_events()?;
            for e in &events {
                outln!(
                    "#{} {} {} {} by {} ({}) device={} serial={} {}",
                    e.seq,
                    e.at,
                    e.id,
                    e.event,
                    e.actor,
                    e.role,
                    e.device_id.as_deref().unwrap_or("-"),
                    e.serial.as_deref().unwrap_or("-"),
                    e.detail
                )?;
            }
            outln!(
                "provisioning event log intact: {} events, chain and MACs verify",
                events.len()
            )?;
            Ok(())
        }
    }
}

fn init_root(
    rargs: &RootArgs,
    new_key_file: Option<&Path>,
    cn: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> CliResult<()> {
    let layout = store::Layout::new(&rargs.root_store);
    if layout.metadata.exists() || layout.soft.exists() {
        return Err(Error::AlreadyExists(format!(
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
    let cert = RootCa::new(&ks, &db).init(&custodian, cn, validity, now)?;
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
        provisioning::util::rfc3339(next_update),
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
    let f = Factory::new(&prod, &db);
    let r = f.root()?;
    let i = f.intermediate()?;
    for (what, c) in [("root", &r), ("intermediate", &i)] {
        outln!(
            "{what:<13} {} serial {} until {} cert {} key {}",
            c.subject,
            c.serial,
            provisioning::util::rfc3339(c.not_after),
            c.digest,
            c.spki_fingerprint
        )?;
    }
    outln!("devices       {}", f.device_count()?)?;
    match f.current_crl()? {
        Some(crl) => outln!(
            "crl           {} bytes, {}",
            crl.len(),
            provisioning::util::sha256_tag(&crl)
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
        Some(s) => keystore_api::clock::parse_rfc3339(s)
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
        provisioning::util::rfc3339(info.not_after),
        info.matched_pin
            .map(|p| format!(", pinned ({p})"))
            .unwrap_or_default()
    )?;
    Ok(())
}

fn write_outputs(out_dir: &Path, p: &Provisioned, with_record: bool) -> CliResult<PathBuf> {
    let dir = out_dir.join(&p.installed.device_id);
    write_file(&dir.join("cert.pem"), &p.issued.certificate.pem())?;
    write_file(&dir.join("chain.pem"), &p.issued.chain_pem())?;
    if with_record {
        write_file(&dir.join("record.yaml"), &p.issued.record.to_yaml()?)?;
    }
    Ok(dir)
}

fn open_device_store(args: &DeviceStoreArgs) -> CliResult<Option<Keystore<SoftStore>>> {
    let Some(dir) = &args.device_store else {
        return Ok(None);
    };
    let key_file = args
        .device_key_file
        .as_ref()
        .ok_or_else(|| CliError::invalid("--device-store needs --device-key-file"))?;
    let layout = store::Layout::new(dir);
    if !layout.soft.is_dir() || !layout.metadata.is_file() {
        return Err(Error::NotFound(format!(
            "no device keystore in {} (create it with `keyctl --store DIR init`)",
            dir.display()
        ))
        .into());
    }
    std::fs::metadata(key_file).map_err(|e| CliError::io("read key file", key_file, e))?;
    let backend = SoftStore::open(&layout.soft, &Unlock::KeyFile(key_file.clone()))?;
    Ok(Some(warned(Keystore::open(backend, &layout.metadata)?)))
}

/// `keyctl provision`.
pub fn provision(
    root: &Path,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    p: ProvisionArgs,
) -> CliResult<()> {
    let validity = days(p.validity_days)?;
    // Parse the whole batch before unlocking anything.
    let batch = match &p.batch {
        Some(file) => {
            let text = files::read_input(file, MAX_BATCH_FILE, "batch file")?;
            let text = String::from_utf8(text)
                .map_err(|_| CliError::invalid("the batch file is not UTF-8 text"))?;
            Some(provisioning::parse_batch(&text, p.operator.as_deref())?)
        }
        None => None,
    };
    let prod = store::open(root, unlock)?;
    let who = actor::authenticate(&prod, args, "provision")?;
    let db = open_db(root)?;
    let factory = Factory::new(&prod, &db);
    let prov = Provisioner::new(&factory, who.clone()).with_validity(validity);
    let out_dir = p
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join("provisioned"));
    let device_ks = open_device_store(&p.device)?;
    match (&device_ks, batch) {
        (Some(dks), batch) => {
            let device_actor = same_actor_on(dks, args, "provisioning into --device-store")?;
            let ddb = open_db(p.device.device_store.as_deref().unwrap_or(root))?;
            run(&prov, dks, &ddb, &device_actor, &p, batch, &out_dir)
        }
        (None, batch) => run(&prov, &prod, &db, &who, &p, batch, &out_dir),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<P: Backend, D: Backend>(
    prov: &Provisioner<'_, P>,
    dks: &Keystore<D>,
    ddb: &PkiDb,
    device_actor: &Actor,
    p: &ProvisionArgs,
    batch: Option<Vec<provisioning::BatchEntry>>,
    out_dir: &Path,
) -> CliResult<()> {
    let single_in_own_store = p.device.device_store.is_some() && batch.is_none();
    let key_for = |id: &str| -> CliResult<String> {
        Ok(if single_in_own_store {
            DEVICE_KEY.to_string()
        } else {
            shared_key_name(id)?
        })
    };
    let Some(entries) = batch else {
        let id = p.device_id.as_deref().unwrap_or_default();
        let operator = p
            .operator
            .as_deref()
            .ok_or_else(|| CliError::invalid("provision needs --operator (the line or station)"))?;
        let device = Device::new(dks, ddb, &key_for(id)?)?;
        let done = prov.provision(
            &device,
            device_actor,
            id,
            operator,
            OffsetDateTime::now_utc(),
        )?;
        let dir = write_outputs(out_dir, &done, true)?;
        let c = &done.issued.certificate;
        outln!(
            "provisioned '{id}': key '{}' v{} {} in {}, certificate {} until {}",
            device.key_name(),
            done.installed.key_version,
            c.spki_fingerprint,
            dks.backend_name(),
            c.serial,
            provisioning::util::rfc3339(c.not_after)
        )?;
        outln!(
            "record {} (event {}); files in {}",
            done.issued.record.keys.identity_cert,
            done.issued.event_id,
            dir.display()
        )?;
        return Ok(());
    };
    let total = entries.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} devices ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let mut done_count = 0u64;
    for e in &entries {
        bar.set_message(e.device_id.clone());
        let res = Device::new(dks, ddb, &key_for(&e.device_id)?).and_then(|device| {
            prov.provision(
                &device,
                device_actor,
                &e.device_id,
                &e.operator,
                OffsetDateTime::now_utc(),
            )
        });
        let done = match res {
            Ok(d) => d,
            Err(err) => {
                bar.abandon();
                note!(
                    "keyctl: stopped at batch line {} ('{}'): {} of {total} devices provisioned",
                    e.line,
                    e.device_id,
                    done_count
                );
                return Err(err.into());
            }
        };
        write_outputs(out_dir, &done, true)?;
        done_count += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    outln!(
        "provisioned {done_count} devices in {secs:.2} s ({:.1} devices/s); files in {}",
        done_count as f64 / secs.max(1e-9),
        out_dir.display()
    )?;
    Ok(())
}

/// `keyctl renew`.
pub fn renew(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, r: RenewArgs) -> CliResult<()> {
    let validity = days(r.validity_days)?;
    let prod = store::open(root, unlock)?;
    let who = actor::authenticate(&prod, args, "renew")?;
    let db = open_db(root)?;
    let factory = Factory::new(&prod, &db);
    let prov = Provisioner::new(&factory, who.clone())
        .with_validity(validity)
        .with_grace(r.grace);
    let out_dir = r
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join("provisioned"));
    let now = OffsetDateTime::now_utc();
    let renewed = match open_device_store(&r.device)? {
        Some(dks) => {
            let device_actor = same_actor_on(&dks, args, "renewing in --device-store")?;
            let ddb = open_db(r.device.device_store.as_deref().unwrap_or(root))?;
            let device = Device::new(&dks, &ddb, DEVICE_KEY)?;
            match device.current()? {
                Some(c) if c.device_id != r.device_id => {
                    return Err(CliError::invalid(format!(
                        "the device store's identity is '{}', not '{}'",
                        c.device_id, r.device_id
                    )))
                }
                _ => {}
            }
            prov.renew_if_due(&device, &device_actor, now, r.threshold)?
        }
        None => {
            let device = Device::new(&prod, &db, &shared_key_name(&r.device_id)?)?;
            prov.renew_if_due(&device, &who, now, r.threshold)?
        }
    };
    match renewed {
        None => outln!(
            "'{}': certificate not due for renewal (expires later than {} s from now)",
            r.device_id,
            r.threshold.whole_seconds()
        )?,
        Some(done) => {
            let dir = write_outputs(&out_dir, &done, false)?;
            outln!(
                "renewed '{}': key version {} certificate {} until {}; the old one stays valid for {} s; files in {}",
                r.device_id,
                done.installed.key_version,
                done.issued.certificate.serial,
                provisioning::util::rfc3339(done.issued.certificate.not_after),
                r.grace.whole_seconds(),
                dir.display()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_days_are_bounded() {
        assert!(days(0).is_err());
        assert!(days(7306).is_err());
        assert_eq!(days(30).unwrap(), Duration::days(30));
    }
}

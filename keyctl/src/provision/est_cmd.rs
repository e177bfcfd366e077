//! EST (RFC 7030): `keyctl est serve` runs the EST server on the production
//! store, and `keyctl renew --est URL` renews a device's identity over it
//! from the device's own store (the production store is not opened).

use crate::actor;
use crate::cli::{parse_duration, ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store;
use clap::Subcommand;
use keystore_api::{rfc3339, Backend, Error, Keystore};
use provisioning::{
    der_from_pem_or_der, shared_key_name, EstClient, EstRenewal, EstServer, EstServerConfig, PkiDb,
    DEVICE_KEY, EST_PATH,
};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use time::Duration;

use super::args::{days, RenewArgs};
use super::stores::{open_db, open_device_store, pki_dir, same_actor_on, write_file};
use super::MAX_PKI_FILE;

#[derive(Debug, Subcommand)]
pub enum EstCommand {
    /// Serve EST over HTTPS on the production store: /cacerts,
    /// /simplereenroll (a device's current certificate over mTLS renews it)
    /// and, with --enroll, /simpleenroll (bootstrap with an operator's
    /// credential over HTTP Basic). The server's TLS certificate is issued
    /// by the intermediate at start, for a key in the store (est.tls-server);
    /// devices trust STORE/pki/root.pem. Runs as --as operator (or
    /// security-officer) until SIGINT or SIGTERM; every issue and refusal
    /// goes to the PKI event log.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8443 (port 0: any free port;
        /// the address is printed).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Offer /simpleenroll (bootstrap enrollment, operator credential).
        #[arg(long)]
        enroll: bool,
        /// Validity of the device certificates issued, in days.
        #[arg(long, default_value_t = 30)]
        validity_days: u32,
        /// How long a renewed device's previous certificate stays valid.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
        grace: Duration,
        /// A host name or IP address the server's certificate names (repeat)
        /// [default: localhost and the listening IP].
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
    },
}

/// `keyctl est ...`.
pub fn est(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, cmd: EstCommand) -> CliResult<()> {
    match cmd {
        EstCommand::Serve {
            listen,
            enroll,
            validity_days,
            grace,
            server_names,
        } => {
            let mut config = EstServerConfig::default();
            config.validity = days(validity_days)?;
            config.grace = grace;
            config.enroll = enroll;
            config.stop_on_signals = true;
            config.registry = super::stores::open_registry()?
                .map(|r| Arc::new(r) as Arc<dyn provisioning::Registry>);
            if !server_names.is_empty() {
                config.server_names = server_names;
            } else if !listen.ip().is_unspecified() {
                config.server_names = vec!["localhost".into(), listen.ip().to_string()];
            }
            serve(root, unlock, args, listen, config)
        }
    }
}

fn serve(
    root: &Path,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    listen: SocketAddr,
    config: EstServerConfig,
) -> CliResult<()> {
    let prod = Arc::new(store::open(root, unlock)?);
    let who = actor::authenticate(&prod, args, "est serve")?;
    let db = Arc::new(open_db(root)?);
    let listener = TcpListener::bind(listen)
        .map_err(|e| CliError::io("listen on", Path::new(&listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::io("listen on", Path::new(&listen.to_string()), e))?;
    let enroll = if config.enroll { "on" } else { "off" };
    let names = config.server_names.join(",");
    let server = EstServer::start(prod, db, who, listener, config)?;
    outln!(
        "EST server listening on https://{addr}{EST_PATH} (simpleenroll {enroll}; certificate for {names}; trust anchor {})",
        pki_dir(root).join("root.pem").display()
    )?;
    server.wait()?;
    outln!("EST server stopped")?;
    Ok(())
}

/// `keyctl renew --est URL`: the device side, on --device-store or --store.
pub(super) fn renew_over_est(
    root: &Path,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    r: &RenewArgs,
    url: &str,
) -> CliResult<()> {
    let anchor_file = r
        .root
        .clone()
        .unwrap_or_else(|| pki_dir(root).join("root.pem"));
    let pem = files::read_input(&anchor_file, MAX_PKI_FILE, "trust anchor")?;
    let anchor = der_from_pem_or_der(&pem, "CERTIFICATE")?;
    let timeout = std::time::Duration::from_secs(u64::from(r.timeout));
    let client = EstClient::new(url, &anchor)?.with_timeout(timeout);
    match open_device_store(&r.device)? {
        Some(dks) => {
            let who = same_actor_on(&dks, args, "renewing over EST")?;
            let dir = r.device.device_store.as_deref().unwrap_or(root);
            renew_device(Arc::new(dks), Arc::new(open_db(dir)?), who, client, r)
        }
        None => {
            let ks = store::open(root, unlock)?;
            let who = actor::authenticate(&ks, args, "renew --est")?;
            renew_device(Arc::new(ks), Arc::new(open_db(root)?), who, client, r)
        }
    }
}

/// Renews the identity in `ks` if due: `device.<id>.identity` when
/// --device-id names a key of that name there, else `device.identity`.
fn renew_device<B: Backend + 'static>(
    ks: Arc<Keystore<B>>,
    db: Arc<PkiDb>,
    who: keystore_api::Actor,
    client: EstClient,
    r: &RenewArgs,
) -> CliResult<()> {
    let key = match &r.device_id {
        Some(id) if ks.info(&shared_key_name(id)?).is_ok() => shared_key_name(id)?,
        _ => DEVICE_KEY.to_string(),
    };
    let renewal = EstRenewal::new(ks, db, &key, who, client)?.with_grace(r.grace)?;
    let current = renewal.current()?.ok_or_else(|| {
        Error::not_found(format!(
            "identity key '{key}' has no certificate for its active version; provision it first"
        ))
    })?;
    if let Some(id) = r.device_id.as_deref().filter(|id| *id != current.device_id) {
        return Err(CliError::invalid(format!(
            "the store's identity is '{}', not '{id}'",
            current.device_id
        )));
    }
    let Some(done) = renewal.renew_if_due(r.threshold)? else {
        outln!(
            "'{}': certificate {} not due for renewal (expires {}, later than {} s from now)",
            current.device_id,
            current.serial,
            rfc3339(current.not_after),
            r.threshold.whole_seconds()
        )?;
        return Ok(());
    };
    if let Some(dir) = &r.out_dir {
        let dir = dir.join(&done.device_id);
        let leaf = provisioning::pem_encode("CERTIFICATE", &done.der);
        write_file(&dir.join("cert.pem"), &leaf)?;
        write_file(&dir.join("chain.pem"), &done.chain_pem)?;
    }
    outln!(
        "renewed '{}' over EST: key version {} certificate {} until {}; version {} verifies for {} s more",
        done.device_id,
        done.key_version,
        done.serial,
        rfc3339(done.not_after),
        current.key_version,
        r.grace.whole_seconds()
    )?;
    Ok(())
}

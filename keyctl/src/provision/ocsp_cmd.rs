//! OCSP (RFC 6960): `keyctl ca ocsp-signer` issues the delegated OCSP
//! signing certificate from the production intermediate, and `keyctl ocsp
//! serve` runs the responder on the production store.

use crate::actor;
use crate::cli::{parse_duration, ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::store;
use clap::Subcommand;
use keystore_api::{rfc3339, Algorithm};
use provisioning::{serve_ocsp, OcspResponder, OcspServerConfig, OcspShutdown, OCSP_SIGNER_KEY};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use time::{Duration, OffsetDateTime};

use super::stores::{factory, open_db, open_registry, pki_dir, write_file};

#[derive(Debug, Subcommand)]
pub enum OcspCommand {
    /// Serve OCSP (HTTP POST and GET, RFC 6960 appendix A) for the
    /// production intermediate's certificates from the registry, signed by
    /// the delegated key (`keyctl ca ocsp-signer`). Runs until SIGINT or
    /// SIGTERM. Needs no role: it reads the registry and signs responses.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port;
        /// the address is printed).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Time from a response's thisUpdate to its nextUpdate (at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
        next_update: Duration,
    },
}

/// `keyctl ocsp ...`.
pub fn ocsp(root: &Path, unlock: &UnlockArgs, cmd: OcspCommand) -> CliResult<()> {
    match cmd {
        OcspCommand::Serve {
            listen,
            next_update,
        } => serve(root, unlock, listen, next_update),
    }
}

fn serve(root: &Path, unlock: &UnlockArgs, listen: SocketAddr, next: Duration) -> CliResult<()> {
    let prod = store::open(root, unlock)?;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let factory = factory(&prod, &db, &shared);
    let issuer = factory.intermediate()?;
    let signer = factory.ocsp_signer()?;
    if signer.not_after <= OffsetDateTime::now_utc() {
        note!(
            "keyctl: warning: the OCSP signing certificate expired at {}; every answer is \
             tryLater until `keyctl ca ocsp-signer` renews it",
            rfc3339(signer.not_after)
        );
    }
    let responder = OcspResponder::new(factory).with_response_validity(next)?;
    let listener = TcpListener::bind(listen)
        .map_err(|e| CliError::io("listen on", Path::new(&listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::io("listen on", Path::new(&listen.to_string()), e))?;
    outln!(
        "OCSP responder for '{}' listening on http://{addr} (signer serial {} until {})",
        issuer.subject,
        signer.serial,
        rfc3339(signer.not_after)
    )?;
    let mut config = OcspServerConfig::default();
    config.stop_on_signals = true;
    serve_ocsp(&responder, listener, &config, &OcspShutdown::new())?;
    outln!("OCSP responder stopped")?;
    Ok(())
}

/// `keyctl ca ocsp-signer`: issues (or renews, on a fresh key version) the
/// delegated OCSP signing certificate; writes STORE/pki/ocsp-signer.pem.
pub(super) fn issue_signer(
    root: &Path,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    cn: &str,
    validity_days: u32,
    algorithm: Algorithm,
) -> CliResult<()> {
    if validity_days == 0 || validity_days > 90 {
        return Err(CliError::invalid("an OCSP signer validity is 1 to 90 days"));
    }
    let now = OffsetDateTime::now_utc();
    let prod = store::open(root, unlock)?;
    let officer = actor::authenticate(&prod, args, "ca ocsp-signer")?;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let factory = factory(&prod, &db, &shared).with_key_algorithm(algorithm);
    let cert =
        factory.issue_ocsp_signer(&officer, cn, Duration::days(i64::from(validity_days)), now)?;
    let path = pki_dir(root).join("ocsp-signer.pem");
    write_file(&path, &cert.pem())?;
    outln!(
        "OCSP signer '{}' (serial {}) issued by '{}', valid until {}",
        cert.subject,
        cert.serial,
        cert.issuer,
        rfc3339(cert.not_after)
    )?;
    outln!(
        "its key '{OCSP_SIGNER_KEY}' is in the production store; wrote {}",
        path.display()
    )?;
    Ok(())
}

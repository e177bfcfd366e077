//! `keyctl`: the keystore's operator CLI. See `keyctl --help` for the
//! commands, `--connect` (through keystored, [`target`]), the unlock sources
//! and the exit-code table ([`cli::EXIT_CODES`]).

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod actor;
mod admin;
mod audit;
mod backend;
mod cli;
mod commands;
mod error;
mod evidence;
mod files;
mod inventory;
mod policy;
mod provision;
mod store;
mod target;
mod tour;
#[cfg(feature = "tpm")]
mod tpm;
mod unlock;

use clap::Parser;
use cli::{Cli, Command};
use error::CliResult;
use std::path::Path;
use std::process::ExitCode;
use store::Store;
use target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(format_args!("keyctl: {e}\n"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> CliResult<()> {
    let Cli {
        store: root,
        unlock,
        actor,
        connect,
        registry,
        command,
    } = cli;
    provision::set_registry(registry);
    if let (Some(_), Some(what)) = (&connect, target::host_only(&command)) {
        return Err(target::host_only_error(what));
    }
    // The daemon with --connect; else the store, opened by `open`.
    let target = |open: fn(&Path, &cli::UnlockArgs) -> CliResult<Store>| match &connect {
        Some(address) => Target::connect(address),
        None => Ok(Target::local(open(&root, &unlock)?, &actor)),
    };
    match command {
        Command::Tour => tour::run(),
        Command::Init(args) => store::init(&root, &unlock, &args),
        Command::Key(cmd) => {
            commands::check_destroy_confirmed(&cmd)?;
            commands::key(&target(store::open)?, cmd)
        }
        Command::Sweep => admin::sweep(&target(store::open)?),
        Command::Audit(cmd) if cmd.is_offline() => audit::offline(&cmd),
        Command::Audit(cmd) => audit::audit(&target(store::open)?, &cmd),
        Command::Role(cmd) => admin::role(&store::open(&root, &unlock)?, &actor, &cmd),
        Command::Decommission {
            audit_out,
            certificate_out,
            yes,
        } => {
            if !yes {
                return Err(error::CliError::invalid(
                    "decommission wipes every key irreversibly; pass --yes to confirm",
                ));
            }
            audit::decommission(
                &store::open(&root, &unlock)?,
                &actor,
                &audit_out,
                certificate_out.as_deref(),
            )
        }
        Command::Sign(a) => commands::sign(&target(store::open_for_use)?, a),
        Command::Verify(a) => commands::verify(&target(store::open_for_use)?, a),
        Command::Pubkey(a) => commands::pubkey(&target(store::open_for_use)?, a),
        Command::Encrypt(a) => commands::encrypt(&target(store::open_for_use)?, a),
        Command::Decrypt(a) => commands::decrypt(&target(store::open_for_use)?, a),
        Command::Derive(a) => commands::derive(&target(store::open_for_use)?, a),
        Command::Agree(a) => commands::agree(&target(store::open_for_use)?, a),
        Command::Ca(cmd) => provision::ca(&root, &unlock, &actor, cmd),
        Command::Provision(a) => provision::provision(&root, &unlock, &actor, a),
        Command::Renew(a) => provision::renew(&root, &unlock, &actor, a),
        Command::Est(cmd) => provision::est(&root, &unlock, &actor, cmd),
        Command::Ocsp(cmd) => provision::ocsp(&root, &unlock, cmd),
        Command::Policy(args) => policy::run(&root, &unlock, &actor, &args),
        Command::Inventory(a) => inventory::run(&root, &unlock, &actor, &a),
        Command::Evidence(e) => evidence::run(&root, &unlock, &actor, &e),
    }
}

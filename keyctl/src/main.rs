//! `keyctl`: the keystore's operator CLI. See `keyctl --help` for the
//! commands, the unlock sources and the exit-code table ([`cli::EXIT_CODES`]).

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod actor;
mod admin;
mod backend;
mod cli;
mod commands;
mod error;
mod files;
mod provision;
mod store;
mod tour;
#[cfg(feature = "tpm")]
mod tpm;
mod unlock;

use clap::Parser;
use cli::{Cli, Command};
use error::CliResult;
use std::process::ExitCode;

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
        command,
    } = cli;
    match command {
        Command::Tour => tour::run(),
        Command::Init(args) => store::init(&root, &unlock, &args),
        Command::Key(cmd) => {
            commands::check_destroy_confirmed(&cmd)?;
            commands::key(&store::open(&root, &unlock)?, &actor, cmd)
        }
        Command::Sweep => admin::sweep(&store::open(&root, &unlock)?, &actor),
        Command::Audit(cmd) => admin::audit(&store::open(&root, &unlock)?, &actor, &cmd),
        Command::Role(cmd) => admin::role(&store::open(&root, &unlock)?, &actor, &cmd),
        Command::Decommission { audit_out, yes } => {
            if !yes {
                return Err(error::CliError::invalid(
                    "decommission wipes every key irreversibly; pass --yes to confirm",
                ));
            }
            admin::decommission(&store::open(&root, &unlock)?, &actor, &audit_out)
        }
        Command::Sign(a) => commands::sign(&store::open_for_use(&root, &unlock)?, a),
        Command::Verify(a) => commands::verify(&store::open_for_use(&root, &unlock)?, a),
        Command::Pubkey(a) => commands::pubkey(&store::open_for_use(&root, &unlock)?, a),
        Command::Encrypt(a) => commands::encrypt(&store::open_for_use(&root, &unlock)?, a),
        Command::Decrypt(a) => commands::decrypt(&store::open_for_use(&root, &unlock)?, a),
        Command::Derive(a) => commands::derive(&store::open_for_use(&root, &unlock)?, a),
        Command::Ca(cmd) => provision::ca(&root, &unlock, &actor, cmd),
        Command::Provision(a) => provision::provision(&root, &unlock, &actor, a),
        Command::Renew(a) => provision::renew(&root, &unlock, &actor, a),
        Command::Est(cmd) => provision::est(&root, &unlock, &actor, cmd),
        Command::Ocsp(cmd) => provision::ocsp(&root, &unlock, cmd),
    }
}

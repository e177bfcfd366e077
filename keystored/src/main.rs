//! `keystored --config PATH`: serve a keystore on a Unix socket. See the
//! `keystored` crate documentation and `docs/keystored.md`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: keystored --config PATH [--check]
  --config PATH   the daemon's configuration file (TOML)
  --check         load the configuration and the policy, print a summary, exit";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut config, mut check) = (None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--check" => check = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("keystored: unknown argument '{other}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = config else {
        eprintln!("keystored: --config is required\n{USAGE}");
        return ExitCode::from(2);
    };
    match run(&path, check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keystored: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, check: bool) -> keystore_api::Result<()> {
    let config = keystored::Config::load(path)?;
    if check {
        let policy = keystored::policy::Policy::load(&config.policy)?;
        println!(
            "keystored: configuration ok: socket {}, store {} ({:?}), policy {} ({} rules)",
            config.socket.path.display(),
            config.store.dir.display(),
            config.store.backend,
            config.policy.display(),
            policy.len()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            keystore_api::Error::backend(keystore_api::Component::Service, "start the runtime", e)
        })?;
    runtime.block_on(async {
        let daemon = keystored::Daemon::start(config, path)?;
        daemon.serve().await
    })
}

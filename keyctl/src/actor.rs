//! Who runs a lifecycle command: `--as ROLE` plus that role's credential,
//! checked by the keystore (`Keystore::authenticate`). Each role has its own
//! credential, so an operator's secret cannot rotate, revoke or back up keys.

use crate::cli::ActorArgs;
use crate::error::{CliError, CliResult};
use crate::store::Store;
use crate::unlock::read_passphrase_file;
use keystore_api::{Actor, Role, SecretBytes};
use std::io::IsTerminal;
use std::path::Path;

/// Environment variable holding the acting role's credential.
pub const ROLE_SECRET_ENV: &str = "KEYCTL_ROLE_SECRET";
/// Environment variable holding a new credential for `role set`.
pub const NEW_ROLE_SECRET_ENV: &str = "KEYCTL_NEW_ROLE_SECRET";

/// The actor id: `--actor`, else `$USER`, else `keyctl`.
fn actor_id(args: &ActorArgs) -> String {
    args.actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "keyctl".into())
}

/// The role named by `--as`, if any.
pub fn role(args: &ActorArgs) -> CliResult<Option<Role>> {
    args.role
        .as_deref()
        .map(str::parse::<Role>)
        .transpose()
        .map_err(CliError::from)
}

/// Authenticates the actor for `what`; without `--as` the command fails with
/// a message saying which roles may run it.
pub fn authenticate(ks: &Store, args: &ActorArgs, what: &str) -> CliResult<Actor> {
    let Some(role) = role(args)? else {
        return Err(CliError::invalid(format!(
            "{what} needs --as ROLE (security-officer or operator; auditor for audit) and that role's credential"
        )));
    };
    let secret = read_secret(
        args.role_secret_file.as_deref(),
        ROLE_SECRET_ENV,
        &format!("{role} credential"),
        false,
    )?;
    Ok(ks.authenticate(&actor_id(args), role, &secret)?)
}

/// The actor for `role set`: `None` when no `--as` is given (allowed only to
/// bootstrap the first security-officer credential).
pub fn optional(ks: &Store, args: &ActorArgs) -> CliResult<Option<Actor>> {
    match role(args)? {
        None => Ok(None),
        Some(_) => authenticate(ks, args, "setting a role credential").map(Some),
    }
}

/// A new role credential: `--new-secret-file`, else `KEYCTL_NEW_ROLE_SECRET`,
/// else a terminal prompt asked twice.
pub fn new_secret(file: Option<&Path>, role: Role) -> CliResult<SecretBytes> {
    read_secret(
        file,
        NEW_ROLE_SECRET_ENV,
        &format!("new {role} credential"),
        true,
    )
}

fn read_secret(file: Option<&Path>, env: &str, what: &str, twice: bool) -> CliResult<SecretBytes> {
    if let Some(path) = file {
        return read_passphrase_file(path);
    }
    if let Some(v) = std::env::var_os(env) {
        return Ok(SecretBytes::new(v.into_encoded_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::invalid(format!(
            "no {what}: stdin is not a terminal; use a secret file or set {env}"
        )));
    }
    let ask = |text: &str| -> CliResult<SecretBytes> {
        rpassword::prompt_password(text)
            .map(|s| SecretBytes::new(s.into_bytes()))
            .map_err(|e| CliError::io("read a credential from", Path::new("the terminal"), e))
    };
    let first = ask(&format!("{what}: "))?;
    if twice && ask("Repeat it: ")? != first {
        return Err(CliError::invalid("the credentials do not match"));
    }
    Ok(first)
}

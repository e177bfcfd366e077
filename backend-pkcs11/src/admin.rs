//! Token administration with the SO PIN: initialising a token (and its
//! user PIN) and re-initialising it to decommission it.
//!
//! These are the only functions that take the SO PIN; the backend itself
//! only ever logs in as the user.

use crate::config::TokenSelector;
use crate::context::Library;
use crate::error::ck;
use crate::token;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keystore_backend::{Error, Result, SecretBytes};
use std::path::Path;

/// A token [`init_token`] initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializedToken {
    /// Its label.
    pub label: String,
    /// Its serial number (stable; select it with [`TokenSelector::Serial`]).
    pub serial: String,
}

fn auth_pin(what: &str, pin: &SecretBytes) -> Result<AuthPin> {
    if pin.is_empty() {
        return Err(Error::invalid_input(format!("the {what} is empty")));
    }
    let s = std::str::from_utf8(pin.expose())
        .map_err(|_| Error::invalid_input(format!("the {what} is not UTF-8")))?;
    Ok(AuthPin::from(s))
}

fn check_label(label: &str) -> Result<()> {
    if label.trim_end().is_empty() || label.len() > 32 {
        return Err(Error::invalid_input(
            "a token label is 1 to 32 bytes (not only blanks)",
        ));
    }
    Ok(())
}

/// Initialises a free (uninitialised) token of `module` as `label` with the
/// SO PIN, then sets the user PIN. The label must be new among the module's
/// tokens ([`ErrorKind::AlreadyExists`](keystore_backend::ErrorKind::AlreadyExists) otherwise). The token is found again by
/// label afterwards: slot numbers can change when a token is initialised.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &SecretBytes,
    user_pin: &SecretBytes,
) -> Result<InitializedToken> {
    check_label(label)?;
    let so = auth_pin("SO PIN", so_pin)?;
    let user = auth_pin("user PIN", user_pin)?;
    let lib = Library::acquire(module)?;
    let present = token::present(&lib)?;
    let tokens = &present.tokens;
    if tokens
        .iter()
        .any(|t| t.initialized && t.label == label.trim_end())
    {
        return Err(Error::already_exists(format!(
            "a token labelled '{label}' already exists"
        )));
    }
    let free = tokens.iter().find(|t| !t.initialized).ok_or_else(|| {
        Error::not_found(format!(
            "{} has no uninitialised token to initialise{}",
            module.display(),
            present.unreadable_note()
        ))
    })?;
    lib.pkcs11()
        .init_token(free.slot, &so, label)
        .map_err(ck(format!("initialise token '{label}'")))?;
    let found = token::find_waiting(
        &lib,
        &TokenSelector::Label(label.to_string()),
        crate::config::DEFAULT_TOKEN_WAIT,
    )?;
    {
        let session = lib
            .pkcs11()
            .open_rw_session(found.slot)
            .map_err(ck("open a session on the new token"))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(ck("SO login"))?;
        session.init_pin(&user).map_err(ck("set the user PIN"))?;
        session.logout().map_err(ck("SO logout"))?;
        session.close().map_err(ck("close the SO session"))?;
    }
    lib.release()?;
    Ok(InitializedToken {
        label: found.label,
        serial: found.serial,
    })
}

/// Decommissions the token selected by `selector`: re-initialises it with
/// the SO PIN, which erases every object on it (every namespace) and its
/// user PIN. The label is kept. Every backend on the token must be closed
/// first (the token refuses with `CKR_SESSION_EXISTS` otherwise). A wrong
/// SO PIN is [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
pub fn reinitialize_token(
    module: &Path,
    selector: &TokenSelector,
    so_pin: &SecretBytes,
) -> Result<()> {
    let so = auth_pin("SO PIN", so_pin)?;
    let lib = Library::acquire(module)?;
    let found = token::find_waiting(&lib, selector, crate::config::DEFAULT_TOKEN_WAIT)?;
    lib.pkcs11()
        .init_token(found.slot, &so, &found.label)
        .map_err(ck(format!("re-initialise token '{}'", found.label)))?;
    lib.release()
}

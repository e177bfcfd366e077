//! Opening the configured store: the backend, then the keystore over it.
//! The store must exist (made with `keyctl init` as the daemon's user).

use crate::config::{BackendKind, StoreConfig};
use backend_soft::{SoftStore, Unlock};
use keystore_api::{Backend, Error, Keystore, OpenOptions, Result, SecretBytes, SystemClock};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The store the daemon serves.
pub type Store = Keystore<Box<dyn Backend>>;

/// Opens the store `config` describes, with `lock_timeout` for its writes.
///
/// # Errors
/// [`ErrorKind::NotFound`](keystore_api::ErrorKind::NotFound) when there is
/// no store in the directory; the backend's errors when it cannot be
/// unlocked ([`ErrorKind::Auth`](keystore_api::ErrorKind::Auth) for a wrong
/// key, passphrase or PIN); [`ErrorKind::Unsupported`](keystore_api::ErrorKind::Unsupported)
/// for a TPM backend in a build without the `tpm` feature.
pub fn open(config: &StoreConfig, lock_timeout: Duration) -> Result<Store> {
    let metadata = config.dir.join("metadata.sqlite");
    if !metadata.is_file() {
        return Err(Error::not_found(format!(
            "no keystore in {} (create one with `keyctl init` as the daemon's user)",
            config.dir.display()
        )));
    }
    let backend: Box<dyn Backend> = match config.backend {
        BackendKind::Soft => Box::new(SoftStore::open(
            &config.dir.join("soft"),
            &soft_unlock(config)?,
        )?),
        BackendKind::Pkcs11 => Box::new(open_pkcs11(config)?),
        BackendKind::Tpm | BackendKind::SoftTpmSealed => open_tpm(config)?,
    };
    Keystore::open_with(
        backend,
        &metadata,
        Arc::new(SystemClock),
        OpenOptions::new().lock_timeout(lock_timeout),
    )
}

fn soft_unlock(config: &StoreConfig) -> Result<Unlock> {
    match (&config.key_file, &config.passphrase_file) {
        (Some(k), None) => Ok(Unlock::KeyFile(k.clone())),
        (None, Some(p)) => Ok(Unlock::Passphrase(read_secret_file(p)?)),
        _ => Err(Error::invalid_input(
            "store.backend = \"soft\" needs exactly one of store.key_file and store.passphrase_file",
        )),
    }
}

/// A secret file's bytes, one trailing newline removed.
fn read_secret_file(path: &Path) -> Result<SecretBytes> {
    let bytes = SecretBytes::new(
        std::fs::read(path)
            .map_err(|e| Error::invalid_input(format!("cannot read {}: {e}", path.display())))?,
    );
    let text = bytes.expose();
    let end = text.len() - usize::from(text.ends_with(b"\n"));
    Ok(SecretBytes::from_slice(&text[..end]))
}

fn open_pkcs11(config: &StoreConfig) -> Result<backend_pkcs11::Pkcs11Backend> {
    use backend_pkcs11::{PinSource, Pkcs11Config, TokenSelector};
    let token = match (&config.token_label, &config.token_serial) {
        (Some(l), None) => TokenSelector::Label(l.clone()),
        (None, Some(s)) => TokenSelector::Serial(s.clone()),
        _ => {
            return Err(Error::invalid_input(
                "store.backend = \"pkcs11\" needs exactly one of store.token_label and store.token_serial",
            ))
        }
    };
    let Some(pin) = &config.pin_file else {
        return Err(Error::invalid_input(
            "store.backend = \"pkcs11\" needs store.pin_file",
        ));
    };
    let mut p = Pkcs11Config::new(token, PinSource::File(pin.clone()));
    if let Some(m) = &config.pkcs11_module {
        p = p.with_module(m);
    }
    if let Some(ns) = &config.pkcs11_namespace {
        p = p.with_namespace(ns);
    }
    backend_pkcs11::Pkcs11Backend::open(&p)
}

#[cfg(feature = "tpm")]
fn open_tpm(config: &StoreConfig) -> Result<Box<dyn Backend>> {
    let mut tpm = backend_tpm::TpmConfig::from_env()?;
    if let Some(t) = &config.tcti {
        tpm = tpm.with_tcti(t.clone());
    }
    if let Some(f) = &config.owner_auth_file {
        tpm = tpm.with_owner_auth(backend_tpm::read_auth_file(f)?)?;
    }
    Ok(match config.backend {
        BackendKind::Tpm => Box::new(backend_tpm::TpmBackend::open(tpm, &config.dir.join("tpm"))?),
        _ => {
            let kek = backend_tpm::TpmSealedKek::new(tpm);
            Box::new(SoftStore::open(
                &config.dir.join("soft"),
                &Unlock::Provider(Arc::new(kek)),
            )?)
        }
    })
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(_config: &StoreConfig) -> Result<Box<dyn Backend>> {
    Err(Error::unsupported(
        "this keystored was built without the `tpm` feature; rebuild with --features tpm",
    ))
}

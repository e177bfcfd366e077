//! The store directory: `DIR/metadata.sqlite` and `DIR/soft/` (with
//! `--backend pkcs11`, only `DIR/metadata.sqlite`: the keys are on the token).

use crate::backend::AnyBackend;
use crate::cli::{InitArgs, KdfChoice, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::unlock::{self, Purpose};
use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::{Error, Keystore};
use std::path::{Path, PathBuf};

/// The keystore the CLI works on.
pub type Store = Keystore<AnyBackend>;

/// Paths inside a store directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub metadata: PathBuf,
    pub soft: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            metadata: root.join("metadata.sqlite"),
            soft: root.join("soft"),
        }
    }
}

/// Opens an existing store. The store's presence is checked before any
/// passphrase is asked for.
pub fn open(root: &Path, unlock_args: &UnlockArgs) -> CliResult<Store> {
    let layout = Layout::new(root);
    if unlock_args.backend.is_pkcs11() {
        return open_pkcs11(&layout, unlock_args);
    }
    #[cfg(feature = "tpm")]
    if unlock_args.backend.is_tpm() {
        return crate::tpm::open(&layout, unlock_args);
    }
    if !layout.soft.is_dir() {
        return Err(Error::NotFound(format!(
            "no keystore in {} (create one with `keyctl init`)",
            root.display()
        ))
        .into());
    }
    if !layout.metadata.is_file() {
        return Err(Error::NotFound(format!(
            "{} is missing; the store in {} is incomplete",
            layout.metadata.display(),
            root.display()
        ))
        .into());
    }
    let unlock = unlock::resolve(unlock_args, root, Purpose::Open)?;
    let backend = SoftStore::open(&layout.soft, &unlock)?;
    Ok(Keystore::open(
        Box::new(backend) as AnyBackend,
        &layout.metadata,
    )?)
}

/// Opens an existing store whose keys are on a PKCS#11 token.
fn open_pkcs11(layout: &Layout, unlock_args: &UnlockArgs) -> CliResult<Store> {
    if !layout.metadata.is_file() {
        return Err(Error::NotFound(format!(
            "no keystore in {} (create one with `keyctl --backend pkcs11 init`)",
            layout.root.display()
        ))
        .into());
    }
    let backend = unlock_args.backend.open_pkcs11()?;
    Ok(Keystore::open(
        Box::new(backend) as AnyBackend,
        &layout.metadata,
    )?)
}

/// `keyctl --backend pkcs11 init`: the metadata database, bound to a token
/// that already has a user PIN (initialise one with the token's tools, e.g.
/// `softhsm2-util --init-token`).
fn init_pkcs11(layout: &Layout, unlock_args: &UnlockArgs) -> CliResult<()> {
    if layout.metadata.exists() || layout.soft.exists() {
        return Err(Error::AlreadyExists(format!(
            "a keystore already exists in {}",
            layout.root.display()
        ))
        .into());
    }
    let backend = unlock_args.backend.open_pkcs11()?;
    let what = format!(
        "PKCS#11 token '{}' (serial {}), namespace '{}'",
        backend.token_label(),
        backend.token_serial(),
        backend.namespace()
    );
    std::fs::create_dir_all(&layout.root)
        .map_err(|e| CliError::io("create directory", &layout.root, e))?;
    let store: Store = Keystore::open(Box::new(backend) as AnyBackend, &layout.metadata)?;
    drop(store);
    outln!(
        "initialised keystore in {} (keys on {what})",
        layout.root.display()
    )?;
    Ok(())
}

/// `keyctl init`.
pub fn init(root: &Path, unlock_args: &UnlockArgs, args: &InitArgs) -> CliResult<()> {
    let layout = Layout::new(root);
    if unlock_args.backend.is_pkcs11() {
        return init_pkcs11(&layout, unlock_args);
    }
    #[cfg(feature = "tpm")]
    if unlock_args.backend.is_tpm() {
        return crate::tpm::init(&layout, unlock_args);
    }
    if layout.metadata.exists() || !dir_is_empty_or_missing(&layout.soft)? {
        return Err(Error::AlreadyExists(format!(
            "a keystore already exists in {}",
            root.display()
        ))
        .into());
    }
    let kdf = match args.kdf {
        KdfChoice::Pbkdf2 => Kdf::default_passphrase(),
        KdfChoice::Argon2id => Kdf::argon2id_default(),
    };
    let (unlock, created_key_file) = match &args.new_key_file {
        Some(path) => {
            backend_soft::create_key_file(path)?;
            (Unlock::KeyFile(path.clone()), Some(path.clone()))
        }
        None => (unlock::resolve(unlock_args, root, Purpose::Create)?, None),
    };
    let result = create(&layout, &unlock, kdf);
    if result.is_err() {
        if let Some(path) = &created_key_file {
            // Nothing was sealed under the new key file: do not leave it behind.
            let _ = std::fs::remove_file(path);
        }
    }
    let store = result?;
    let how = match &unlock {
        Unlock::KeyFile(p) => format!("key file {}", p.display()),
        Unlock::Passphrase(_) => format!("passphrase ({})", describe_kdf(store.backend().kdf())),
        Unlock::Provider(_) => describe_kdf(store.backend().kdf()),
    };
    outln!("initialised keystore in {} (unlock: {how})", root.display())?;
    Ok(())
}

fn create(layout: &Layout, unlock: &Unlock, kdf: Kdf) -> CliResult<Keystore<SoftStore>> {
    std::fs::create_dir_all(&layout.root)
        .map_err(|e| CliError::io("create directory", &layout.root, e))?;
    let backend = SoftStore::create(&layout.soft, unlock, kdf)?;
    Ok(Keystore::open(backend, &layout.metadata)?)
}

fn dir_is_empty_or_missing(dir: &Path) -> CliResult<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(CliError::io("read directory", dir, e)),
    }
}

/// A human description of a KDF setting.
pub fn describe_kdf(kdf: Kdf) -> String {
    match kdf {
        Kdf::Pbkdf2Sha256 { iterations } => format!("PBKDF2-HMAC-SHA256, {iterations} iterations"),
        Kdf::Argon2id {
            memory_kib,
            iterations,
            parallelism,
        } => format!(
            "Argon2id, {} MiB, {iterations} passes, {parallelism} lanes",
            memory_kib / 1024
        ),
        Kdf::KeyFile => "key file".to_string(),
        Kdf::Provider => "external KEK provider (e.g. TPM-sealed)".to_string(),
    }
}

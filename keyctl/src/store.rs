//! The store directory: `DIR/metadata.sqlite` and `DIR/soft/` (with
//! `--backend pkcs11`, only `DIR/metadata.sqlite`: the keys are on the token).

use crate::backend::AnyBackend;
use crate::cli::{InitArgs, KdfChoice, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::unlock::{self, Purpose};
use backend_soft::{Kdf, SoftStore, Unlock};
use keystore_api::fsperm::{self, PermissionReport};
use keystore_api::{Error, Keystore, OpenOptions, SystemClock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
/// passphrase is asked for. Paths of the store that other local users can
/// reach are tightened to 0700/0600 and each is reported on stderr.
pub fn open(root: &Path, unlock_args: &UnlockArgs) -> CliResult<Store> {
    open_with(root, unlock_args, true)
}

/// Opens an existing store for a command that only uses keys (sign, verify,
/// encrypt, ...): recovery of interrupted operations still runs, but the
/// comparison of every version with the backend's objects does not, so
/// the cost of opening does not grow with the store.
pub fn open_for_use(root: &Path, unlock_args: &UnlockArgs) -> CliResult<Store> {
    open_with(root, unlock_args, false)
}

/// How the CLI opens a keystore: its lock timeout and material check.
pub(crate) fn options(unlock_args: &UnlockArgs, check_material: bool) -> OpenOptions {
    OpenOptions::new()
        .lock_timeout(Duration::from_secs_f64(unlock_args.lock_timeout))
        .check_material(check_material)
}

/// Opens `backend`'s keystore with the CLI's options.
pub(crate) fn open_keystore(
    backend: AnyBackend,
    metadata: &Path,
    unlock_args: &UnlockArgs,
    check_material: bool,
) -> CliResult<Store> {
    Ok(Keystore::open_with(
        backend,
        metadata,
        Arc::new(SystemClock),
        options(unlock_args, check_material),
    )?)
}

fn open_with(root: &Path, unlock_args: &UnlockArgs, check_material: bool) -> CliResult<Store> {
    let mut loose = PermissionReport::new();
    if Layout::new(root).metadata.is_file() {
        // Only a directory that holds a store: never a mistyped --store.
        loose.check_dir_tree(root);
    }
    let store = open_store(root, unlock_args, check_material)?;
    loose.extend(store.permission_report().clone());
    warn_permissions(&loose);
    Ok(store)
}

/// Prints one stderr warning per loose path a store had at open.
pub(crate) fn warn_permissions(report: &PermissionReport) {
    for loose in &report.loose {
        note!("keyctl: warning: {loose}");
    }
}

/// Creates the store directory `root` with mode 0700 (and any missing
/// parent), or tightens an existing one that other users can reach, with a
/// warning: everything keyctl keeps in a store is owner-only.
pub(crate) fn prepare_root(root: &Path) -> CliResult<()> {
    fsperm::ensure_private_dir(root).map_err(|e| CliError::io("create directory", root, e))?;
    let mut loose = PermissionReport::new();
    loose.check_dir_tree(root);
    warn_permissions(&loose);
    Ok(())
}

fn open_store(root: &Path, unlock_args: &UnlockArgs, check_material: bool) -> CliResult<Store> {
    let layout = Layout::new(root);
    if unlock_args.backend.is_pkcs11() {
        return open_pkcs11(&layout, unlock_args, check_material);
    }
    #[cfg(feature = "tpm")]
    if unlock_args.backend.is_tpm() {
        return crate::tpm::open(&layout, unlock_args, check_material);
    }
    if !layout.soft.is_dir() {
        return Err(Error::not_found(format!(
            "no keystore in {} (create one with `keyctl init`)",
            root.display()
        ))
        .into());
    }
    if !layout.metadata.is_file() {
        return Err(Error::not_found(format!(
            "{} is missing; the store in {} is incomplete",
            layout.metadata.display(),
            root.display()
        ))
        .into());
    }
    let unlock = unlock::resolve(unlock_args, root, Purpose::Open)?;
    let backend = SoftStore::open(&layout.soft, &unlock)?;
    open_keystore(
        Box::new(backend) as AnyBackend,
        &layout.metadata,
        unlock_args,
        check_material,
    )
}

/// Opens an existing store whose keys are on a PKCS#11 token.
fn open_pkcs11(
    layout: &Layout,
    unlock_args: &UnlockArgs,
    check_material: bool,
) -> CliResult<Store> {
    if !layout.metadata.is_file() {
        return Err(Error::not_found(format!(
            "no keystore in {} (create one with `keyctl --backend pkcs11 init`)",
            layout.root.display()
        ))
        .into());
    }
    let backend = unlock_args.backend.open_pkcs11()?;
    open_keystore(
        Box::new(backend) as AnyBackend,
        &layout.metadata,
        unlock_args,
        check_material,
    )
}

/// `keyctl --backend pkcs11 init`: the metadata database, bound to a token
/// that already has a user PIN (initialise one with the token's tools, e.g.
/// `softhsm2-util --init-token`).
fn init_pkcs11(layout: &Layout, unlock_args: &UnlockArgs) -> CliResult<()> {
    if layout.metadata.exists() || layout.soft.exists() {
        return Err(Error::already_exists(format!(
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
    prepare_root(&layout.root)?;
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
        return Err(Error::already_exists(format!(
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
    let (_store, kdf) = result?;
    let how = match &unlock {
        Unlock::KeyFile(p) => format!("key file {}", p.display()),
        Unlock::Passphrase(_) => format!("passphrase ({})", describe_kdf(kdf)),
        Unlock::Provider(_) => describe_kdf(kdf),
    };
    outln!("initialised keystore in {} (unlock: {how})", root.display())?;
    Ok(())
}

/// Creates the store; returns it with the KDF its header records (the one
/// `SoftStore::create` settled on for `unlock`), read before the backend moves
/// into the `Keystore`, which does not expose it.
fn create(layout: &Layout, unlock: &Unlock, kdf: Kdf) -> CliResult<(Keystore<SoftStore>, Kdf)> {
    prepare_root(&layout.root)?;
    let backend = SoftStore::create(&layout.soft, unlock, kdf)?;
    let kdf = backend.kdf();
    Ok((Keystore::open(backend, &layout.metadata)?, kdf))
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

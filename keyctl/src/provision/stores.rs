//! Opening stores and reading credentials for the PKI commands: the root's
//! store, the production PKI database, device stores, and PKI file writes.

use crate::actor;
use crate::cli::ActorArgs;
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store;
use crate::unlock::read_passphrase_file;
use backend_soft::{SoftStore, Unlock};
use keystore_api::{Actor, Backend, Error, Keystore, Role, SecretBytes};
use provisioning::{Factory, PkiDb, PostgresRegistry};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::args::{DeviceStoreArgs, RootArgs};
use super::{ROOT_PASSPHRASE_ENV, ROOT_SECRET_ENV};

pub(super) fn pki_dir(store: &Path) -> PathBuf {
    store.join("pki")
}

pub(super) fn open_db(dir: &Path) -> CliResult<PkiDb> {
    let db = PkiDb::open(&dir.join("pki.sqlite"))?;
    store::warn_permissions(db.permission_report());
    Ok(db)
}

/// The `--registry` of this run (set once, by `main`).
static REGISTRY: OnceLock<Option<String>> = OnceLock::new();

/// Records the `--registry` (or `KEYCTL_REGISTRY`) of this run.
pub fn set_registry(location: Option<String>) {
    let _ = REGISTRY.set(location);
}

/// The shared registry this run names, connected and migrated; `None` for
/// the store's own `pki.sqlite`.
pub(super) fn open_registry() -> CliResult<Option<PostgresRegistry>> {
    match REGISTRY.get().and_then(|r| r.as_deref()).map(str::trim) {
        None | Some("") | Some("sqlite") => Ok(None),
        Some(url)
            if url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.contains('=') =>
        {
            Ok(Some(PostgresRegistry::connect(url)?))
        }
        Some(_) => Err(CliError::invalid(
            "--registry takes a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/DB) \
             or 'sqlite' (the default: the store's pki.sqlite)",
        )),
    }
}

/// The factory over the production store and its database, with the shared
/// registry when there is one.
pub(super) fn factory<'a, B: Backend>(
    prod: &'a Keystore<B>,
    db: &'a PkiDb,
    shared: &'a Option<PostgresRegistry>,
) -> Factory<'a, B> {
    let f = Factory::new(prod, db);
    match shared {
        Some(r) => f.with_registry(r),
        None => f,
    }
}

/// Writes a PKI file (certificate, chain, CRL, provisioning record). They
/// hold nothing secret, but most land inside a store, where everything is
/// owner-only: new directories are 0700 and the file is 0600 (publish a copy
/// with the mode you need).
pub(super) fn write_file(path: &Path, text: &str) -> CliResult<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            keystore_api::fsperm::ensure_private_dir(parent)
                .map_err(|e| CliError::io("create directory", parent, e))?;
        }
    }
    files::write_secret(path, text.as_bytes())
}

/// A keystore opened by a PKI command, with its loose paths reported.
fn warned<B: keystore_api::Backend>(ks: Keystore<B>) -> Keystore<B> {
    store::warn_permissions(ks.permission_report());
    ks
}

pub(super) fn actor_id(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "keyctl".into())
}

/// A credential from a file, else an environment variable (no prompt: the
/// PKI commands run at stations and ceremonies with prepared secrets).
fn credential(file: Option<&Path>, env: &str, what: &str) -> CliResult<SecretBytes> {
    if let Some(path) = file {
        return read_passphrase_file(path);
    }
    match std::env::var_os(env) {
        Some(v) if !v.is_empty() => Ok(SecretBytes::new(v.into_encoded_bytes())),
        _ => Err(CliError::invalid(format!(
            "no {what}: give its file or set {env}"
        ))),
    }
}

pub(super) fn root_unlock(root: &RootArgs) -> CliResult<Unlock> {
    if let Some(path) = &root.root_key_file {
        std::fs::metadata(path).map_err(|e| CliError::io("read key file", path, e))?;
        return Ok(Unlock::KeyFile(path.clone()));
    }
    Ok(Unlock::Passphrase(credential(
        root.root_passphrase_file.as_deref(),
        ROOT_PASSPHRASE_ENV,
        "root store unlock (--root-key-file, --root-passphrase-file)",
    )?))
}

pub(super) fn root_secret(root: &RootArgs) -> CliResult<SecretBytes> {
    credential(
        root.root_secret_file.as_deref(),
        ROOT_SECRET_ENV,
        "root custodian credential (--root-secret-file)",
    )
}

pub(super) fn open_root(root: &RootArgs) -> CliResult<Keystore<SoftStore>> {
    let layout = store::Layout::new(&root.root_store);
    if !layout.soft.is_dir() || !layout.metadata.is_file() {
        return Err(Error::not_found(format!(
            "no root CA store in {} (create it with `keyctl ca init-root`)",
            root.root_store.display()
        ))
        .into());
    }
    let backend = SoftStore::open(&layout.soft, &root_unlock(root)?)?;
    Ok(warned(Keystore::open(backend, &layout.metadata)?))
}

pub(super) fn root_actor(ks: &Keystore<SoftStore>, root: &RootArgs) -> CliResult<Actor> {
    let secret = root_secret(root)?;
    Ok(ks.authenticate(
        &actor_id(root.root_actor.as_deref()),
        Role::SecurityOfficer,
        &secret,
    )?)
}

/// Authenticates the `--as` role against another store (a device's own
/// keystore), with the same credential source as the production store.
pub(super) fn same_actor_on<B: Backend>(
    ks: &Keystore<B>,
    args: &ActorArgs,
    what: &str,
) -> CliResult<Actor> {
    let Some(role) = actor::role(args)? else {
        return Err(CliError::invalid(format!("{what} needs --as ROLE")));
    };
    let secret = credential(
        args.role_secret_file.as_deref(),
        actor::ROLE_SECRET_ENV,
        "role credential (--role-secret-file)",
    )?;
    Ok(ks.authenticate(&actor_id(args.actor.as_deref()), role, &secret)?)
}

pub(super) fn open_device_store(args: &DeviceStoreArgs) -> CliResult<Option<Keystore<SoftStore>>> {
    let Some(dir) = &args.device_store else {
        return Ok(None);
    };
    let key_file = args
        .device_key_file
        .as_ref()
        .ok_or_else(|| CliError::invalid("--device-store needs --device-key-file"))?;
    let layout = store::Layout::new(dir);
    if !layout.soft.is_dir() || !layout.metadata.is_file() {
        return Err(Error::not_found(format!(
            "no device keystore in {} (create it with `keyctl --store DIR init`)",
            dir.display()
        ))
        .into());
    }
    std::fs::metadata(key_file).map_err(|e| CliError::io("read key file", key_file, e))?;
    let backend = SoftStore::open(&layout.soft, &Unlock::KeyFile(key_file.clone()))?;
    Ok(Some(warned(Keystore::open(backend, &layout.metadata)?)))
}

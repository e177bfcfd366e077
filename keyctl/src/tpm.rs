//! `--backend tpm` (cargo feature `tpm`): the keys live in a TPM 2.0; the
//! store directory holds `metadata.sqlite` and `tpm/` (the backend's
//! registry of key auth values). The TCTI and the owner hierarchy auth come
//! from `--tpm-tcti` / `--tpm-owner-auth-file` or the environment
//! (`TPM2TOOLS_TCTI`, `KEYSTORE_TPM_OWNER_AUTH[_FILE]`).

use crate::cli::UnlockArgs;
use crate::error::CliResult;
use crate::store::{Layout, Store};
use keystore_api::{Error, Keystore};
use std::path::PathBuf;

fn registry(layout: &Layout) -> PathBuf {
    layout.root.join("tpm")
}

/// Opens an existing TPM store.
pub fn open(layout: &Layout, unlock_args: &UnlockArgs, check_material: bool) -> CliResult<Store> {
    if !layout.metadata.is_file() || !registry(layout).is_dir() {
        return Err(Error::not_found(format!(
            "no TPM keystore in {} (create one with `keyctl --backend tpm init`)",
            layout.root.display()
        ))
        .into());
    }
    let backend = unlock_args.backend.open_tpm(&registry(layout))?;
    crate::store::open_keystore(
        Box::new(backend) as crate::backend::AnyBackend,
        &layout.metadata,
        unlock_args,
        check_material,
    )
}

/// `keyctl --backend tpm init`.
pub fn init(layout: &Layout, unlock_args: &UnlockArgs) -> CliResult<()> {
    if layout.metadata.exists() || layout.soft.exists() || registry(layout).exists() {
        return Err(Error::already_exists(format!(
            "a keystore already exists in {}",
            layout.root.display()
        ))
        .into());
    }
    crate::store::prepare_root(&layout.root)?;
    let backend = match unlock_args.backend.open_tpm(&registry(layout)) {
        Ok(b) => b,
        Err(e) => {
            // Nothing was made: leave no half store behind.
            let _ = std::fs::remove_dir_all(registry(layout));
            return Err(e);
        }
    };
    let tcti = backend.tcti().to_string();
    let store: Store = Keystore::open(
        Box::new(backend) as crate::backend::AnyBackend,
        &layout.metadata,
    )?;
    drop(store);
    outln!(
        "initialised keystore in {} (keys in the TPM at {tcti})",
        layout.root.display()
    )?;
    Ok(())
}

//! The store's lock file (`DIR/lock`): shared for the life of each backend,
//! exclusive only for crash cleanup when no other process has the store open
//! ([`keystore_backend::store_lock`], the same rule as the soft store's).

use crate::LOCK_FILE;
use keystore_backend::store_lock::lock_shared_for_life;
use keystore_backend::Result;
use std::fs::File;
use std::path::Path;

/// Takes the store's lock (`DIR/lock`) for the life of the backend; runs
/// `exclusive` (crash cleanup) first when no other process has the store open.
pub(crate) fn lock_dir(dir: &Path, exclusive: impl FnOnce() -> Result<()>) -> Result<File> {
    lock_shared_for_life(
        &dir.join(LOCK_FILE),
        keystore_backend::Component::Tpm,
        exclusive,
    )
}

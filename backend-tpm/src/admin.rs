//! Provisioning and decommissioning commands for the TPM's hierarchies.
//!
//! Each function opens its own short connection and closes it before
//! returning. A TPM without a resource manager (swtpm, `/dev/tpm0`) accepts
//! one connection at a time, so do not call these while a
//! [`crate::TpmBackend`] is open on such a TPM.

use crate::config::check_auth;
use crate::esys::{parameter_encryption_enabled, Esys, Tr, RH_LOCKOUT, RH_NULL, RH_OWNER};
use crate::rc::{to_error, TpmRc};
use crate::templates;
use keystore_backend::{Component, Error, Result, SecretBytes};

fn connect(tcti: &str) -> Result<Esys> {
    Esys::connect(tcti).map_err(|rc: TpmRc| {
        Error::backend(
            Component::Tpm,
            format!("cannot connect to the TPM through TCTI '{tcti}'"),
            rc,
        )
    })
}

fn change_auth(
    tcti: &str,
    hierarchy: Tr,
    which: &str,
    current: &SecretBytes,
    new: &SecretBytes,
) -> Result<()> {
    check_auth(current, which)?;
    check_auth(new, which)?;
    let mut esys = connect(tcti)?;
    if parameter_encryption_enabled() {
        start_salted_session(&mut esys)
            .map_err(|rc| to_error("start the parameter-encryption session", rc))?;
    }
    let res = esys
        .set_auth(hierarchy, current.expose())
        .and_then(|()| esys.hierarchy_change_auth(hierarchy, new.expose()))
        .map_err(|rc| to_error(&format!("change the {which} auth"), rc));
    esys.end_encryption_session();
    res
}

/// Starts the parameter-encryption session on a connection that has no
/// storage primary: salted with an ECC P-256 primary of the NULL hierarchy
/// (no auth value, so none is needed to make it), which is flushed again
/// right away (the salt key is only used by `TPM2_StartAuthSession`).
fn start_salted_session(esys: &mut Esys) -> std::result::Result<(), TpmRc> {
    let template = templates::storage_primary().map_err(|_| TpmRc::LOCAL_BAD_VALUE)?;
    let (salt_key, _) = esys.create_primary(RH_NULL, &template)?;
    let res = esys.start_encryption_session(salt_key);
    let _ = esys.flush(salt_key);
    res
}

/// Changes the owner hierarchy auth from `current` to `new`
/// (`TPM2_HierarchyChangeAuth`). A wrong `current` is [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
pub fn change_owner_auth(tcti: &str, current: &SecretBytes, new: &SecretBytes) -> Result<()> {
    change_auth(tcti, RH_OWNER, "owner", current, new)
}

/// Changes the lockout hierarchy auth from `current` to `new`. Failed
/// lockout authorisations count towards the TPM's dictionary-attack lockout.
pub fn change_lockout_auth(tcti: &str, current: &SecretBytes, new: &SecretBytes) -> Result<()> {
    change_auth(tcti, RH_LOCKOUT, "lockout", current, new)
}

/// Clears the owner hierarchy (`TPM2_Clear`, authorised by the lockout
/// auth): the owner seed is replaced, so every key blob made under the old
/// storage primary becomes unloadable (crypto-erase), and the owner and
/// endorsement auth values become empty.
pub fn clear(tcti: &str, lockout_auth: &SecretBytes) -> Result<()> {
    check_auth(lockout_auth, "lockout")?;
    let mut esys = connect(tcti)?;
    esys.set_auth(RH_LOCKOUT, lockout_auth.expose())
        .and_then(|()| esys.clear(RH_LOCKOUT))
        .map_err(|rc| to_error("clear the TPM (TPM2_Clear)", rc))
}

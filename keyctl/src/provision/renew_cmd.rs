//! `keyctl renew`: a renewed certificate for a rotated device key (with
//! `--est`, over EST from the device's side: `est_cmd`).

use crate::actor;
use crate::cli::{ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::store;
use provisioning::{shared_key_name, Device, Provisioner, DEVICE_KEY};
use std::path::Path;
use time::OffsetDateTime;

use super::args::{days, RenewArgs};
use super::provision_cmd::write_outputs;
use super::stores::{factory, open_db, open_device_store, open_registry, same_actor_on};

/// `keyctl renew`.
pub fn renew(root: &Path, unlock: &UnlockArgs, args: &ActorArgs, r: RenewArgs) -> CliResult<()> {
    if let Some(url) = r.est.as_deref() {
        return super::est_cmd::renew_over_est(root, unlock, args, &r, url);
    }
    let device_id = r
        .device_id
        .clone()
        .ok_or_else(|| CliError::invalid("renew needs --device-id (or --est)"))?;
    let validity = days(r.validity_days)?;
    let prod = store::open(root, unlock)?;
    let who = actor::authenticate(&prod, args, "renew")?;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let factory = factory(&prod, &db, &shared);
    let prov = Provisioner::new(&factory, who.clone())
        .with_validity(validity)
        .with_grace(r.grace);
    let out_dir = r
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join("provisioned"));
    let now = OffsetDateTime::now_utc();
    let renewed = match open_device_store(&r.device)? {
        Some(dks) => {
            let device_actor = same_actor_on(&dks, args, "renewing in --device-store")?;
            let ddb = open_db(r.device.device_store.as_deref().unwrap_or(root))?;
            let device = Device::new(&dks, &ddb, DEVICE_KEY)?;
            match device.current()? {
                Some(c) if c.device_id != device_id => {
                    return Err(CliError::invalid(format!(
                        "the device store's identity is '{}', not '{}'",
                        c.device_id, device_id
                    )))
                }
                _ => {}
            }
            prov.renew_if_due(&device, &device_actor, now, r.threshold)?
        }
        None => {
            let device = Device::new(&prod, &db, &shared_key_name(&device_id)?)?;
            prov.renew_if_due(&device, &who, now, r.threshold)?
        }
    };
    match renewed {
        None => outln!(
            "'{}': certificate not due for renewal (expires later than {} s from now)",
            device_id,
            r.threshold.whole_seconds()
        )?,
        Some(done) => {
            let dir = write_outputs(&out_dir, &done, false)?;
            outln!(
                "renewed '{}': key version {} certificate {} until {}; the old one stays valid for {} s; files in {}",
                device_id,
                done.installed.key_version,
                done.issued.certificate.serial,
                keystore_api::rfc3339(done.issued.certificate.not_after),
                r.grace.whole_seconds(),
                dir.display()
            )?;
        }
    }
    Ok(())
}

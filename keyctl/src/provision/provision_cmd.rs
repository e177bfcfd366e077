//! `keyctl provision`: one device or a batch.

use crate::actor;
use crate::cli::{ActorArgs, UnlockArgs};
use crate::error::{CliError, CliResult};
use crate::files;
use crate::store;
use keystore_api::{Actor, Backend, Error, ErrorKind, Keystore};
use provisioning::{
    shared_key_name, AttestationPolicy, Device, PkiDb, Provisioned, Provisioner, TpmAttester,
    DEVICE_KEY,
};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

use super::args::{days, DeviceBackend, ProvisionArgs};
use super::stores::{
    factory, open_db, open_device_store, open_registry, same_actor_on, write_file,
};
use super::MAX_BATCH_FILE;

pub(super) fn write_outputs(
    out_dir: &Path,
    p: &Provisioned,
    with_record: bool,
) -> CliResult<PathBuf> {
    let dir = out_dir.join(&p.installed.device_id);
    write_file(&dir.join("cert.pem"), &p.issued.certificate.pem())?;
    write_file(&dir.join("chain.pem"), &p.issued.chain_pem())?;
    if with_record {
        write_file(&dir.join("record.yaml"), &p.issued.record.to_yaml()?)?;
    }
    Ok(dir)
}

/// `keyctl provision`.
pub fn provision(
    root: &Path,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    p: ProvisionArgs,
) -> CliResult<()> {
    let validity = days(p.validity_days)?;
    // Parse the whole batch before unlocking anything.
    let batch = match &p.batch {
        Some(file) => {
            let text = files::read_input(file, MAX_BATCH_FILE, "batch file")?;
            let text = String::from_utf8(text)
                .map_err(|_| CliError::invalid("the batch file is not UTF-8 text"))?;
            Some(provisioning::parse_batch(&text, p.operator.as_deref())?)
        }
        None => None,
    };
    let prod = store::open(root, unlock)?;
    let who = actor::authenticate(&prod, args, "provision")?;
    let db = open_db(root)?;
    let shared = open_registry()?;
    let mut factory = factory(&prod, &db, &shared);
    if let Some(url) = &p.ocsp_url {
        factory = factory.with_ocsp_url(url)?;
    }
    let factory = factory.require_attestation(p.require_attestation);
    let prov = Provisioner::new(&factory, who.clone()).with_validity(validity);
    let out_dir = p
        .out_dir
        .clone()
        .unwrap_or_else(|| root.join("provisioned"));
    if p.device_backend == DeviceBackend::Tpm {
        if batch.is_some() {
            return Err(CliError::invalid(
                "one TPM holds one unit's identity: provision one --device-id per TPM",
            ));
        }
        return provision_tpm(&prov, unlock, args, &p, &out_dir);
    }
    if p.ek_ca.is_some() {
        return Err(CliError::invalid(
            "--ek-ca attests a key held in a TPM: it needs --device-backend tpm",
        ));
    }
    let device_ks = open_device_store(&p.device)?;
    match (&device_ks, batch) {
        (Some(dks), batch) => {
            let device_actor = same_actor_on(dks, args, "provisioning into --device-store")?;
            let ddb = open_db(p.device.device_store.as_deref().unwrap_or(root))?;
            run(&prov, dks, &ddb, &device_actor, &p, batch, &out_dir, None)
        }
        (None, batch) => run(&prov, &prod, &db, &who, &p, batch, &out_dir, None),
    }
}

/// The manufacturer CA certificates of `--ek-ca`, if given.
fn ek_policy(p: &ProvisionArgs) -> CliResult<Option<AttestationPolicy>> {
    let Some(path) = &p.ek_ca else {
        return Ok(None);
    };
    let pem = files::read_input(path, super::MAX_PKI_FILE, "EK CA file")?;
    let pem = String::from_utf8(pem)
        .map_err(|_| CliError::invalid("the --ek-ca file is not PEM text"))?;
    let roots = provisioning::pem_decode_all(&pem, "CERTIFICATE")?;
    if roots.is_empty() {
        return Err(CliError::invalid(
            "the --ek-ca file holds no CERTIFICATE block",
        ));
    }
    Ok(Some(AttestationPolicy {
        manufacturer_roots: roots,
    }))
}

/// `provision --device-backend tpm`: the unit's identity key in its TPM
/// store, attested when `--ek-ca` is given.
#[cfg(feature = "tpm")]
fn provision_tpm<P: Backend>(
    prov: &Provisioner<'_, P>,
    unlock: &UnlockArgs,
    args: &ActorArgs,
    p: &ProvisionArgs,
    out_dir: &Path,
) -> CliResult<()> {
    let dir = p
        .device
        .device_store
        .as_deref()
        .ok_or_else(|| CliError::invalid("--device-backend tpm needs --device-store DIR"))?;
    let layout = store::Layout::new(dir);
    if !layout.metadata.is_file() || !dir.join("tpm").is_dir() {
        return Err(Error::not_found(format!(
            "no TPM device keystore in {} (create it with `keyctl --backend tpm --store DIR init`)",
            dir.display()
        ))
        .into());
    }
    let backend = unlock.backend.open_tpm(&dir.join("tpm"))?;
    let dks = Keystore::open(backend, &layout.metadata)?;
    store::warn_permissions(dks.permission_report());
    let device_actor = same_actor_on(&dks, args, "provisioning into --device-store")?;
    let ddb = open_db(dir)?;
    let mut attester = provisioning::KeystoreAttester::new(&dks, DEVICE_KEY);
    match ek_policy(p)? {
        Some(policy) => {
            let prov = prov.clone().with_attestation_policy(policy);
            run(
                &prov,
                &dks,
                &ddb,
                &device_actor,
                p,
                None,
                out_dir,
                Some(&mut attester),
            )
        }
        None => run(prov, &dks, &ddb, &device_actor, p, None, out_dir, None),
    }
}

#[cfg(not(feature = "tpm"))]
fn provision_tpm<P: Backend>(
    _prov: &Provisioner<'_, P>,
    _unlock: &UnlockArgs,
    _args: &ActorArgs,
    p: &ProvisionArgs,
    _out_dir: &Path,
) -> CliResult<()> {
    ek_policy(p)?;
    Err(CliError::invalid(
        "--device-backend tpm: this keyctl was built without TPM support (cargo feature tpm)",
    ))
}

#[allow(clippy::too_many_arguments)]
fn run<P: Backend, D: Backend>(
    prov: &Provisioner<'_, P>,
    dks: &Keystore<D>,
    ddb: &PkiDb,
    device_actor: &Actor,
    p: &ProvisionArgs,
    batch: Option<Vec<provisioning::BatchEntry>>,
    out_dir: &Path,
    attest: Option<&mut dyn TpmAttester>,
) -> CliResult<()> {
    let single_in_own_store = p.device.device_store.is_some() && batch.is_none();
    let key_for = |id: &str| -> CliResult<String> {
        Ok(if single_in_own_store {
            DEVICE_KEY.to_string()
        } else {
            shared_key_name(id)?
        })
    };
    let Some(entries) = batch else {
        let id = p.device_id.as_deref().unwrap_or_default();
        let operator = p
            .operator
            .as_deref()
            .ok_or_else(|| CliError::invalid("provision needs --operator (the line or station)"))?;
        let device = Device::new(dks, ddb, &key_for(id)?)?.with_key_algorithm(p.algorithm);
        let now = OffsetDateTime::now_utc();
        let done = match attest {
            Some(attester) => {
                prov.provision_attested(&device, device_actor, attester, id, operator, now)?
            }
            None => prov.provision(&device, device_actor, id, operator, now)?,
        };
        if let Some(a) = &done.issued.record.attestation {
            outln!("identity key attested: {a}")?;
        }
        let dir = write_outputs(out_dir, &done, true)?;
        let c = &done.issued.certificate;
        outln!(
            "provisioned '{id}': key '{}' v{} {} in {}, certificate {} until {}",
            device.key_name(),
            done.installed.key_version,
            c.spki_fingerprint,
            dks.backend_name(),
            c.serial,
            keystore_api::rfc3339(c.not_after)
        )?;
        outln!(
            "record {} (event {}); files in {}",
            done.issued.record.keys.identity_cert,
            done.issued.event_id,
            dir.display()
        )?;
        return Ok(());
    };
    let total = entries.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} devices ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let mut done_count = 0u64;
    let mut skipped = 0u64;
    for e in &entries {
        bar.set_message(e.device_id.clone());
        let res = Device::new(dks, ddb, &key_for(&e.device_id)?).and_then(|device| {
            let device = device.with_key_algorithm(p.algorithm);
            prov.provision(
                &device,
                device_actor,
                &e.device_id,
                &e.operator,
                OffsetDateTime::now_utc(),
            )
        });
        let done = match res {
            Ok(d) => d,
            Err(err) if p.skip_provisioned && err.is(ErrorKind::AlreadyExists) => {
                bar.suspend(|| {
                    note!(
                        "keyctl: batch line {} ('{}') skipped: {}",
                        e.line,
                        e.device_id,
                        err.message()
                    )
                });
                skipped += 1;
                bar.inc(1);
                continue;
            }
            Err(err) => {
                bar.abandon();
                note!(
                    "keyctl: stopped at batch line {} ('{}'): {} of {total} devices provisioned",
                    e.line,
                    e.device_id,
                    done_count
                );
                return Err(err.into());
            }
        };
        write_outputs(out_dir, &done, true)?;
        done_count += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    outln!(
        "provisioned {done_count} devices in {secs:.2} s ({:.1} devices/s); files in {}",
        done_count as f64 / secs.max(1e-9),
        out_dir.display()
    )?;
    if skipped > 0 {
        return Err(Error::already_exists(format!(
            "{skipped} of {total} devices of the batch were already provisioned (listed above)"
        ))
        .into());
    }
    Ok(())
}

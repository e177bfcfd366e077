//! Manufacturing a simulator for attestation tests: EK certificates from a
//! test manufacturer CA, written into a swtpm state directory before the
//! simulator is started on it (re-exported by [`crate::swtpm`]).
//!
//! [`manufacture_with`] runs
//! `swtpm_setup --tpm2 --tpmstate DIR --create-ek-cert --config CONF
//! --pcr-banks sha256` with a `swtpm_setup.conf` of its own whose
//! `create_certs_tool` is `swtpm_localca`, configured (`swtpm-localca.conf`)
//! with `statedir = CA_DIR`. On first use `swtpm_localca` creates a root CA
//! (`swtpm-localca-rootca-cert.pem`, RSA-3072, CN `swtpm-localca-rootca`)
//! and an intermediate signing CA (`issuercert.pem`, CN `swtpm-localca`)
//! in `CA_DIR`, with their private keys; every EK certificate it issues is
//! signed by the intermediate. So each CA directory is one manufacturer,
//! and two directories are two manufacturers with the same names but
//! different keys. The configuration files are written into `CA_DIR` too.
//!
//! swtpm_setup (0.7) makes an RSA-2048 EK (persistent at `0x81010001`,
//! certificate at NV `0x01c00002`) and an ECC **P-384** EK (persistent at
//! `0x81010016`, certificate at NV `0x01c00016`, the high range); it makes
//! no P-256 EK certificate. With [`EkCerts::WithEccP256`] this module adds
//! one the way a manufacturer would: it starts the simulator on the state,
//! re-creates the ECC P-256 EK from the TCG default template, has
//! `swtpm_localca` certify its public key with the same CA, and writes the
//! DER certificate to NV `0x01c0000a` (platform-created, `AUTHREAD |
//! OWNERREAD | PPREAD | PPWRITE | NO_DA`, as swtpm_setup's own indices).
//!
//! Works as root and as any other user (the state and CA directories must
//! be writable); no network; each external program is killed after 120 s.

use crate::swtpm::Swtpm;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tss_esapi::abstraction::{ek, AsymmetricAlgorithmSelection, DefaultKey};
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::NvIndexTpmHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder, Public};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

/// The hint given when swtpm's setup tools are not installed.
pub const SETUP_INSTALL_HINT: &str =
    "swtpm_setup or swtpm_localca is not installed; install them with \
     `apt-get install swtpm-tools` (Debian/Ubuntu)";

/// Root CA certificate file that `swtpm_localca` creates in a CA directory.
pub const ROOT_CA_FILE: &str = "swtpm-localca-rootca-cert.pem";
/// Intermediate (EK-signing) CA certificate file in a CA directory.
pub const ISSUER_CA_FILE: &str = "issuercert.pem";

const TIMEOUT: Duration = Duration::from_secs(120);

/// Which EK certificates a manufactured simulator holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkCerts {
    /// What swtpm_setup writes: RSA-2048 at NV `0x01c00002` and ECC P-384
    /// at `0x01c00016` (which the backend does not read): the backend then
    /// selects the RSA-2048 EK.
    SwtpmDefault,
    /// Those plus an ECC P-256 certificate at NV `0x01c0000a` from the
    /// same CA: the backend then selects the ECC P-256 EK.
    WithEccP256,
}

/// Manufactures the TPM whose state lives in `state_dir` (created if
/// missing; it must hold no TPM state yet) with EK certificates from the
/// test manufacturer CA in `ca_dir` (created if missing; its CA is made on
/// first use): [`EkCerts::WithEccP256`]. Start the simulator afterwards
/// with [`Swtpm::start`] on the same `state_dir`. `Err` says why, with an
/// install hint when a tool is missing.
pub fn manufacture(state_dir: &Path, ca_dir: &Path) -> Result<(), String> {
    manufacture_with(state_dir, ca_dir, EkCerts::WithEccP256)
}

/// [`manufacture`] with a choice of EK certificates.
pub fn manufacture_with(state_dir: &Path, ca_dir: &Path, certs: EkCerts) -> Result<(), String> {
    let setup = find_program("swtpm_setup").ok_or(SETUP_INSTALL_HINT)?;
    let localca = find_program("swtpm_localca").ok_or(SETUP_INSTALL_HINT)?;
    for d in [state_dir, ca_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let files = CaFiles::write(ca_dir, &localca)?;
    let mut cmd = Command::new(setup);
    cmd.arg("--tpm2")
        .arg("--tpmstate")
        .arg(state_dir)
        .arg("--create-ek-cert")
        .arg("--config")
        .arg(&files.setup_conf)
        .arg("--pcr-banks")
        .arg("sha256");
    run("swtpm_setup", &mut cmd)?;
    if certs == EkCerts::WithEccP256 {
        add_p256_certificate(state_dir, &localca, &files)?;
    }
    Ok(())
}

/// The test manufacturer's CA certificates a verifier must trust, PEM:
/// the intermediate that signs EK certificates ([`ISSUER_CA_FILE`]) first,
/// then the self-signed root ([`ROOT_CA_FILE`]). Empty if `ca_dir` was
/// never used by [`manufacture`].
pub fn manufacturer_ca_pem(ca_dir: &Path) -> String {
    let mut out = manufacturer_issuer_pem(ca_dir);
    out.push_str(&manufacturer_root_pem(ca_dir));
    out
}

/// The test manufacturer's root CA certificate (PEM; empty if none yet).
pub fn manufacturer_root_pem(ca_dir: &Path) -> String {
    std::fs::read_to_string(ca_dir.join(ROOT_CA_FILE)).unwrap_or_default()
}

/// The test manufacturer's intermediate CA certificate, the issuer of the
/// EK certificates (PEM; empty if none yet).
pub fn manufacturer_issuer_pem(ca_dir: &Path) -> String {
    std::fs::read_to_string(ca_dir.join(ISSUER_CA_FILE)).unwrap_or_default()
}

/// `name` in `PATH`, else in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The configuration files of one CA directory.
struct CaFiles {
    setup_conf: PathBuf,
    localca_conf: PathBuf,
    localca_options: PathBuf,
}

impl CaFiles {
    fn write(ca_dir: &Path, localca: &Path) -> Result<CaFiles, String> {
        let ca = ca_dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", ca_dir.display()))?;
        let text = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{} is not UTF-8", p.display()))
        };
        let files = CaFiles {
            setup_conf: ca.join("swtpm_setup.conf"),
            localca_conf: ca.join("swtpm-localca.conf"),
            localca_options: ca.join("swtpm-localca.options"),
        };
        let dir = text(&ca)?;
        write_atomically(
            &files.localca_conf,
            &format!(
                "statedir = {dir}\nsigningkey = {dir}/signkey.pem\nissuercert = {dir}/{ISSUER_CA_FILE}\ncertserial = {dir}/certserial\n"
            ),
        )?;
        write_atomically(
            &files.localca_options,
            "--platform-manufacturer KeystoreTest\n--platform-version 2.1\n--platform-model swtpm\n",
        )?;
        write_atomically(
            &files.setup_conf,
            &format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                text(localca)?,
                text(&files.localca_conf)?,
                text(&files.localca_options)?
            ),
        )?;
        Ok(files)
    }
}

/// Writes `path` through a temporary file and a rename, so that a
/// concurrent manufacture on the same CA directory never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let tmp = path.with_extension(format!(
        "tmp{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `cmd` to completion (killed after [`TIMEOUT`]); `Err` carries its
/// output.
fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{what} did not finish within {} s",
                    TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for {what}: {e}")),
        }
    };
    let log = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s}): {}", log.trim())),
        Err(e) => Err(format!("{e}: {}", log.trim())),
    }
}

/// Starts the simulator on `state_dir`, certifies its ECC P-256 EK with
/// the CA of `files` and stores the certificate at NV `0x01c0000a`.
fn add_p256_certificate(state_dir: &Path, localca: &Path, files: &CaFiles) -> Result<(), String> {
    let swtpm = Swtpm::start(state_dir)?;
    let tpm = |e: tss_esapi::Error| format!("swtpm at {}: {e}", swtpm.tcti());
    let conf = TctiNameConf::from_str(&swtpm.tcti()).map_err(tpm)?;
    let mut ctx = Context::new(conf).map_err(tpm)?;
    let (x, y) = p256_ek_point(&mut ctx).map_err(tpm)?;
    let cert = certify_p256(localca, files, &x, &y)?;
    let attributes = NvIndexAttributesBuilder::new()
        .with_platform_create(true)
        .with_pp_write(true)
        .with_pp_read(true)
        .with_owner_read(true)
        .with_auth_read(true)
        .with_no_da(true)
        .build()
        .map_err(tpm)?;
    let index = NvIndexTpmHandle::new(crate::attest::EK_CERT_NV_ECC_P256).map_err(tpm)?;
    let public = NvPublicBuilder::new()
        .with_nv_index(index)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(cert.len())
        .build()
        .map_err(tpm)?;
    ctx.execute_with_nullauth_session(|ctx| {
        let handle = ctx.nv_define_space(Provision::Platform, None, public)?;
        for (i, chunk) in cert.chunks(512).enumerate() {
            ctx.nv_write(
                NvAuth::Platform,
                handle,
                MaxNvBuffer::try_from(chunk.to_vec())?,
                (i * 512) as u16,
            )?;
        }
        Ok::<(), tss_esapi::Error>(())
    })
    .map_err(tpm)?;
    // An orderly shutdown before the simulator is killed.
    ctx.execute_without_session(|ctx| ctx.shutdown(tss_esapi::constants::StartupType::Clear))
        .map_err(tpm)?;
    drop(ctx);
    drop(swtpm);
    Ok(())
}

/// The public point (x, y; 32 bytes each) of the ECC P-256 EK.
fn p256_ek_point(ctx: &mut Context) -> tss_esapi::Result<(Vec<u8>, Vec<u8>)> {
    let ek = ek::create_ek_object_2(
        ctx,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        DefaultKey,
    )?;
    let public = ctx.read_public(ek);
    ctx.flush_context(ek.into())?;
    let (public, _, _) = public?;
    let Public::Ecc { unique, .. } = public else {
        return Err(tss_esapi::Error::WrapperError(
            tss_esapi::WrapperErrorKind::WrongValueFromTpm,
        ));
    };
    let pad = |v: &[u8]| {
        let mut out = vec![0u8; 32usize.saturating_sub(v.len())];
        out.extend_from_slice(v);
        out
    };
    Ok((pad(unique.x().value()), pad(unique.y().value())))
}

/// Has `swtpm_localca` issue an EK certificate (DER) for the P-256 point.
fn certify_p256(localca: &Path, files: &CaFiles, x: &[u8], y: &[u8]) -> Result<Vec<u8>, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ca_dir = files.localca_conf.parent().unwrap_or(Path::new("."));
    let out_dir = ca_dir.join(format!(
        ".ek-p256-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut cmd = Command::new(localca);
    cmd.args(["--type", "ek", "--ek"])
        .arg(format!("x={},y={}", hex::encode(x), hex::encode(y)))
        .arg("--dir")
        .arg(&out_dir)
        // As swtpm_setup describes swtpm to swtpm_localca.
        .args([
            "--tpm-spec-family",
            "2.0",
            "--tpm-spec-level",
            "0",
            "--tpm-spec-revision",
            "164",
            "--tpm-manufacturer",
            "id:00001014",
            "--tpm-model",
            "swtpm",
            "--tpm-version",
            "id:20191023",
            "--tpm2",
        ])
        .arg("--configfile")
        .arg(&files.localca_conf)
        .arg("--optsfile")
        .arg(&files.localca_options);
    let res = run("swtpm_localca", &mut cmd).and_then(|()| {
        let p = out_dir.join("ek.cert");
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    });
    let _ = std::fs::remove_dir_all(&out_dir);
    res
}

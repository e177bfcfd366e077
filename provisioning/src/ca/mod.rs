//! The CA hierarchy (REQ-KEY-SOD-01): an offline root whose key lives in its
//! own keystore, and a production intermediate whose key lives in the
//! production keystore. The root signs the intermediate at a ceremony
//! ([`ceremony`]); everything after that ([`Factory`]: device certificates,
//! revocation, CRLs) runs on the production side and never opens the root's
//! store.

mod cert;
mod crl;
mod factory;
mod issue;
mod ocsp_signer;
mod registry;
mod root;

use crate::x509::CertInfo;
// The EST server's TLS certificate is issued under the intermediate too.
pub(crate) use cert::issuer_for;
pub use crl::normalise_serial;
pub use factory::{DeviceRequest, Factory, Issued, IssuedCert};
pub(crate) use ocsp_signer::{check_ocsp_url, RegistryStatus, OCSP_SIGNING_EKU};
pub use ocsp_signer::{DEFAULT_OCSP_SIGNER_VALIDITY, MAX_OCSP_SIGNER_VALIDITY, OCSP_SIGNER_KEY};

use keystore_api::{Actor, Backend, Error, Result};
pub use root::{RootCa, SignedIntermediate};

use time::{Duration, OffsetDateTime};

/// The root CA's key name in the root keystore.
pub const ROOT_KEY: &str = "pki.root-ca";
/// The intermediate CA's key name in the production keystore.
pub const INTERMEDIATE_KEY: &str = "pki.intermediate-ca";

/// Certificates start this much before their issuance time, for clock skew
/// between the factory and devices.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Default validity of the root certificate.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::days(3650);
/// Default validity of the intermediate certificate.
pub const DEFAULT_INTERMEDIATE_VALIDITY: Duration = Duration::days(1095);
/// Default validity of device certificates (short-lived, REQ-KEY-CERT-01).
pub const DEFAULT_DEVICE_VALIDITY: Duration = Duration::days(30);
/// Default time from a CRL's thisUpdate to its nextUpdate.
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::days(7);
/// Default time from the offline root's CRL's thisUpdate to its nextUpdate:
/// the custodian reissues it at a ceremony before then.
pub const DEFAULT_ROOT_CRL_VALIDITY: Duration = Duration::days(180);
/// Longest time from a CRL's thisUpdate to its nextUpdate.
pub const MAX_CRL_VALIDITY: Duration = Duration::days(366);
/// Longest validity accepted for any certificate.
pub const MAX_VALIDITY: Duration = Duration::days(7305);

fn check_validity(v: Duration, what: &str) -> Result<()> {
    if v <= Duration::ZERO || v > MAX_VALIDITY {
        return Err(Error::invalid_input(format!(
            "a {what} validity is more than 0 and at most {} days",
            MAX_VALIDITY.whole_days()
        )));
    }
    Ok(())
}

/// The ceremony (REQ-KEY-SOD-01): the production keystore generates the
/// intermediate key and its CSR, the root signs it, the production side
/// installs the certificate. Two actors: the root's custodian and the
/// production security officer. Returns the intermediate certificate.
pub fn ceremony<R: Backend, P: Backend>(
    root: &RootCa<'_, R>,
    root_actor: &Actor,
    factory: &Factory<'_, P>,
    production_actor: &Actor,
    common_name: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertInfo> {
    let csr = factory.request_intermediate(production_actor, common_name)?;
    let cert = root.sign_intermediate(root_actor, &csr.der, validity, now)?;
    let root_cert = root.certificate()?;
    factory.install_intermediate(production_actor, &cert.der, &root_cert.der, now)?;
    Ok(cert)
}

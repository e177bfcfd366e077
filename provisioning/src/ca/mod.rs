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
mod registry;
mod root;

use crate::x509::CertInfo;
pub use cert::verify_signed_by;
pub use crl::normalise_serial;
pub use factory::{DeviceRequest, Factory, Issued, IssuedCert};

use keystore_api::{Actor, Backend, Error, ErrorKind, Keystore, Result, Role};
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

/// Application event name under which a refused provisioning operation is
/// recorded in the keystore's audit trail.
pub const REFUSED_EVENT: &str = "pki-refused";

/// Checks that `actor` may perform `what`, which needs one of `roles`. A
/// refusal is audited in `ks`, the store whose key the operation would use,
/// and is [`ErrorKind::Policy`](keystore_api::ErrorKind::Policy) in the keystore's message shape.
///
/// The keystore's own duty check is private to it, so the refusal goes
/// through [`Keystore::record_event`] as the [`REFUSED_EVENT`] event with
/// `"<what> refused: needs <roles>"` as its detail. An actor whose role
/// may not record events at all (auditor, application) is refused there
/// too, and that refusal is the keystore's own `refused` entry (naming
/// [`REFUSED_EVENT`]). Either way the trail holds the refused actor.
fn require<B: Backend>(ks: &Keystore<B>, actor: &Actor, roles: &[Role], what: &str) -> Result<()> {
    if roles.contains(&actor.role()) {
        return Ok(());
    }
    let needs = needs(roles);
    match ks.record_event(
        actor,
        REFUSED_EVENT,
        None,
        &format!("{what} refused: needs {needs}"),
    ) {
        // Audited as an application event, or refused and audited by the
        // keystore itself.
        Ok(()) => {}
        Err(e) if e.is(ErrorKind::Policy) => {}
        // The refusal could not be audited: say so rather than refuse silently.
        Err(e) => return Err(e),
    }
    Err(Error::policy(format!(
        "{what} needs {needs}; '{}' acts as {}",
        actor.id(),
        actor.role()
    )))
}

/// `the security-officer role`, `the security-officer or operator role`:
/// the keystore's wording for the roles a duty needs.
fn needs(roles: &[Role]) -> String {
    let names: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| roles.contains(r))
        .map(|r| r.id())
        .collect();
    format!("the {} role", names.join(" or "))
}

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

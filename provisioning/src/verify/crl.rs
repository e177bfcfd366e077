//! The CRLs on a certificate path: webpki's revocation options for how a
//! check uses them ([`CrlUse`]), and naming the certificate behind a
//! revocation rejection ([`locate`]).

use super::{reject, Crl, RejectReason, Rejection};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, ExpirationPolicy, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

/// How [`PeerVerifier::check_path`](super::PeerVerifier::check_path) uses the CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrlUse {
    /// Every certificate on the path needs its issuer's CRL.
    Required,
    /// The CRLs supplied are checked; a certificate without one passes.
    IfPresent,
}

/// webpki's revocation options for `crls` as `crl_use` says: `None` when
/// they may be absent and are.
pub(super) fn revocation_options<'c>(
    crls: &'c [&'c CertRevocationList<'c>],
    crl_use: CrlUse,
) -> Result<Option<webpki::RevocationOptions<'c>>, Rejection> {
    let status = match crl_use {
        CrlUse::IfPresent if crls.is_empty() => return Ok(None),
        CrlUse::IfPresent => UnknownStatusPolicy::Allow,
        CrlUse::Required => UnknownStatusPolicy::Deny,
    };
    let options = RevocationOptionsBuilder::new(crls)
        .map_err(|_| {
            reject(
                RejectReason::RevocationUnknown,
                "no CRL was supplied: revocation status cannot be checked",
            )
        })?
        .with_depth(RevocationCheckDepth::Chain)
        .with_status_policy(status)
        .with_expiration_policy(ExpirationPolicy::Enforce)
        .build();
    Ok(Some(options))
}

/// Finds the certificate on `path` behind a revocation rejection, checking
/// top down (the CA under the anchor first, the end entity last) as webpki
/// does, with the first CRL whose issuer matches (as webpki picks it).
pub(super) fn locate(
    path: &webpki::VerifiedPath<'_>,
    crls: &[&CertRevocationList<'_>],
    meta: &[&Crl],
    reason: RejectReason,
    now: OffsetDateTime,
) -> Option<Rejection> {
    let now = now.unix_timestamp();
    let ee: &webpki::Cert<'_> = path.end_entity();
    let mut top_down: Vec<(&webpki::Cert<'_>, &str)> = path
        .intermediate_certificates()
        .rev()
        .map(|c| (c, "intermediate CA certificate"))
        .collect();
    top_down.push((ee, "end-entity certificate"));
    for (cert, role) in top_down {
        let info = crate::x509::CertInfo::parse(cert.der().as_ref()).ok();
        let subject = info.as_ref().map(|i| i.subject.clone());
        let issuer = info.as_ref().map(|i| i.issuer.clone());
        let serial = hex::encode(cert.serial());
        let name = format!(
            "{role} '{}' (serial {serial})",
            subject.as_deref().unwrap_or("?")
        );
        let issuer_name = issuer.as_deref().unwrap_or("?");
        let found = crls
            .iter()
            .position(|c| c.issuer() == cert.issuer())
            .map(|i| (crls[i], meta.get(i).copied()));
        let detail = match (reason, found) {
            (RejectReason::RevocationUnknown, None) => format!(
                "no CRL from its issuer '{issuer_name}' was supplied for the {name}: \
                 its revocation status is unknown"
            ),
            (RejectReason::Revoked, Some((crl, _))) => match crl.find_serial(cert.serial()) {
                Ok(Some(entry)) => format!(
                    "the {name} is revoked by its issuer '{issuer_name}'{}",
                    entry
                        .reason_code
                        .map(|r| format!(" (reason {r:?})"))
                        .unwrap_or_default()
                ),
                _ => continue,
            },
            (RejectReason::CrlExpired, Some((_, Some(m))))
                if m.next_update.is_some_and(|n| now >= n) =>
            {
                format!(
                    "the CRL of '{}' that covers the {name} is past its nextUpdate: \
                     revocation status is stale",
                    m.issuer.as_deref().unwrap_or(issuer_name)
                )
            }
            _ => continue,
        };
        return Some(Rejection {
            reason,
            detail,
            subject,
            serial: Some(serial),
        });
    }
    None
}

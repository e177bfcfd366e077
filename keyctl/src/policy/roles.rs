//! Section 4 of `keyctl policy`: the roles, whether each has a credential
//! (never the credential), their duties from the keystore's duty table, and
//! the separation-of-duties rules it enforces.

use crate::error::CliResult;
use crate::store::Store;
use keystore_api::{Duty, Role};
use std::fmt::Write as _;

/// The roles that hold `d`, as "a or b".
pub(super) fn holders(d: Duty) -> String {
    Role::ALL
        .into_iter()
        .filter(|r| d.allows(*r))
        .map(Role::id)
        .collect::<Vec<_>>()
        .join(" or ")
}

fn duty_text(d: Duty) -> &'static str {
    match d {
        Duty::Provision => "create and import keys",
        Duty::Administer => {
            "rotate, revoke, destroy, back up, restore, decommission, set cryptoperiods and role \
             credentials"
        }
        Duty::Maintain => "suspend, resume, sweep",
        Duty::Audit => "verify and export the audit trail",
        Duty::IssueCertificates => "issue device certificates and the production CA's CRLs",
        Duty::RevokeCertificates => "revoke device certificates",
        Duty::ManageCa => "run the CA hierarchy (root, intermediates, root CRL)",
        _ => "another duty",
    }
}

pub(super) fn roles(w: &mut String, ks: &Store) -> CliResult<()> {
    let _ = writeln!(w, "## 4. Roles and separation of duties (REQ-KEY-SOD-01)\n");
    let _ = writeln!(w, "| Role | Credential | Duties |\n|---|---|---|");
    for (role, set_at) in ks.role_credentials_set()? {
        let duties: Vec<&str> = Duty::ALL
            .iter()
            .filter(|d| d.allows(role))
            .map(|d| duty_text(*d))
            .collect();
        let duties = match (role, duties.is_empty()) {
            (Role::Application, true) => "use keys only (sign, verify, encrypt, decrypt, MAC, \
                                          derive, agree); no lifecycle operation"
                .to_string(),
            (_, true) => "none".to_string(),
            _ => duties.join("; "),
        };
        let cred = set_at.map_or("not set".into(), |at| format!("set ({at})"));
        let _ = writeln!(w, "| {role} | {cred} | {duties} |");
    }
    let _ = writeln!(
        w,
        "\nRules, as the keystore enforces them on every lifecycle call:\n"
    );
    let _ = writeln!(
        w,
        "- Each role authenticates with its own credential (PBKDF2 verifier in the metadata; \
         credentials are never shown). A role without a credential cannot act through `keyctl`."
    );
    let _ = writeln!(
        w,
        "- Key administration (rotate, revoke, destroy, backup, decommission): {}.",
        holders(Duty::Administer)
    );
    let _ = writeln!(
        w,
        "- Key creation and import: {}.",
        holders(Duty::Provision)
    );
    let _ = writeln!(
        w,
        "- Audit verification and export: {}; the auditor changes nothing.",
        holders(Duty::Audit)
    );
    let _ = writeln!(w, "- CA hierarchy and certificate revocation: {}; the root CA key lives in its own offline store.", holders(Duty::ManageCa));
    let _ = writeln!(
        w,
        "- Key use is governed by each key's usages and version state, not by role. Every refusal is \
         audited.\n"
    );
    Ok(())
}

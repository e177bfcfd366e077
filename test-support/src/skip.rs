//! The `KEYSTORE_TEST_SKIP` rule: a comma-separated list of backend names
//! (`pkcs11`, `tpm`, `soft+tpm-sealed`, …). A test whose simulator or tool is
//! missing fails with an install hint, unless the list names its backend:
//! then it prints `SKIPPED (…)` and returns early. CI never sets it.

use std::fmt::Display;

/// True if `KEYSTORE_TEST_SKIP` (comma separated) names `backend`.
pub fn skip_requested(backend: &str) -> bool {
    std::env::var("KEYSTORE_TEST_SKIP")
        .map(|v| v.split(',').any(|b| b.trim() == backend))
        .unwrap_or(false)
}

/// What a test does when `backend` cannot run for `why`: `None` after
/// printing `SKIPPED` if `KEYSTORE_TEST_SKIP` names `backend`; otherwise a
/// panic with `why` (which carries the install hint).
#[track_caller]
pub fn skip_or_fail<T>(backend: &str, why: impl Display) -> Option<T> {
    if skip_requested(backend) {
        eprintln!("SKIPPED (KEYSTORE_TEST_SKIP names {backend}): {why}");
        None
    } else {
        panic!("{why}\n(set KEYSTORE_TEST_SKIP={backend} to skip knowingly; CI never does)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test only touches KEYSTORE_TEST_SKIP, so no other test races it.
    #[test]
    fn a_named_backend_is_skipped_and_any_other_fails() {
        std::env::set_var("KEYSTORE_TEST_SKIP", "pkcs11, tpm");
        assert!(skip_requested("tpm") && skip_requested("pkcs11"));
        assert!(!skip_requested("soft+tpm-sealed"));
        assert_eq!(skip_or_fail::<()>("tpm", "swtpm is missing"), None);
        let failed = std::panic::catch_unwind(|| skip_or_fail::<()>("soft", "missing"));
        std::env::remove_var("KEYSTORE_TEST_SKIP");
        assert!(failed.is_err(), "an unnamed backend must fail, not skip");
        let failed = std::panic::catch_unwind(|| skip_or_fail::<()>("tpm", "missing"));
        assert!(
            failed.is_err(),
            "without KEYSTORE_TEST_SKIP a missing simulator fails"
        );
    }
}

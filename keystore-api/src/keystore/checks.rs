//! Input checks: key names, usages and lengths.

use super::limits;
use crate::algorithm::Usages;
use crate::error::{Error, Result};
use crate::metadata::KeyRow;

/// Checks a key name against the keystore's rule: 1..=128 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.` or `-` (so a name is safe in
/// paths, labels and logs).
///
/// # Errors
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming what is wrong.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > limits::MAX_NAME_LEN {
        return Err(Error::invalid_input(format!(
            "a key name is 1 to {} characters, got {}",
            limits::MAX_NAME_LEN,
            name.len()
        )));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(ok_char) || name.starts_with(['.', '-']) {
        return Err(Error::invalid_input(
            "a key name uses only A-Z, a-z, 0-9, '.', '_' and '-', and does not start with '.' or '-'",
        ));
    }
    Ok(())
}

pub(crate) fn check_usage(key: &KeyRow, usage: Usages, what: &str) -> Result<()> {
    if key.usages.contains(usage) {
        Ok(())
    } else {
        Err(Error::policy(format!(
            "key '{}' ({}, usages {{{}}}) may not {what}",
            key.name, key.algorithm, key.usages
        ))
        .with_key(&key.name))
    }
}

pub(crate) fn check_len(what: &str, data: &[u8], max: usize) -> Result<()> {
    if data.len() > max {
        return Err(Error::invalid_input(format!(
            "{what} is {} bytes; the limit is {max}",
            data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;
    use crate::ErrorKind;

    #[test]
    fn key_names_are_checked() {
        for ok in ["a", "device-identity", "tls.v2", "A_b-9", &"x".repeat(128)] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a b", "é", &"x".repeat(129)] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}

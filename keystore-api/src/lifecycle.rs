//! Legal state transitions of a key version (NIST SP 800-57).
//!
//! ```text
//! PreActivation ──activate──▶ Active   (rotate_staged makes it; discard or revoke ends it)
//! Active ──rotate──▶ Deactivated ──sweep/destroy──▶ Destroyed
//!   │  ▲                 │
//! suspend resume       revoke ──▶ Compromised
//!   ▼  │
//! Suspended ──revoke──▶ Compromised        any live state ──destroy──▶ Destroyed
//! ```
//! Anything else is [`ErrorKind::KeyState`](crate::ErrorKind::KeyState) and changes nothing.

use crate::error::{Error, Result};
use crate::metadata::KeyState;

/// Checks that `from → to` is a legal transition.
pub(crate) fn check_transition(from: KeyState, to: KeyState) -> Result<()> {
    use KeyState::*;
    let legal = matches!(
        (from, to),
        (PreActivation, Active)
            | (PreActivation, Compromised)
            | (PreActivation, Destroyed)
            | (Active, Suspended)
            | (Active, Deactivated)
            | (Active, Compromised)
            | (Active, Destroyed)
            | (Suspended, Active)
            | (Suspended, Deactivated)
            | (Suspended, Compromised)
            | (Suspended, Destroyed)
            | (Deactivated, Compromised)
            | (Deactivated, Destroyed)
    );
    if legal {
        Ok(())
    } else {
        Err(Error::key_state(format!(
            "a {from} key version cannot become {to}"
        )))
    }
}

/// True if a version in `state` still holds material in the backend.
pub(crate) fn has_material(state: KeyState) -> bool {
    matches!(
        state,
        KeyState::PreActivation | KeyState::Active | KeyState::Suspended | KeyState::Deactivated
    )
}

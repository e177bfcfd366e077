//! Finding a token by label or serial, and what it can do.

use crate::config::TokenSelector;
use crate::context::Library;
use crate::error::{ck, COMPONENT};
use crate::retry::{is_transient, Backoff};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::slot::Slot;
use keystore_backend::{Algorithm, Capabilities, Error, ErrorKind, Result};
use std::time::Duration;

/// A token present in a slot.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub slot: Slot,
    pub label: String,
    pub serial: String,
    pub initialized: bool,
}

/// Every slot that holds a token, with the token's label and serial, and
/// how many tokens could not be read.
///
/// A token whose `C_GetTokenInfo` fails (SoftHSM reports
/// `CKR_GENERAL_ERROR` while another process rewrites that token's files)
/// is asked again a few times, then left out and counted: a busy or broken
/// token of another application must not make ours unreachable.
///
/// Tokens that backends of this process are logged in to are taken from
/// [`Library::known_tokens`] as they are, not asked again.
pub(crate) fn present(lib: &Library) -> Result<Present> {
    let (pkcs11, known) = (lib.pkcs11(), lib.known_tokens());
    let slots = pkcs11.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
    let mut out = Present::default();
    for slot in slots {
        if let Some(k) = known.iter().find(|k| k.slot == slot) {
            out.tokens.push(k.clone());
            continue;
        }
        match token_info(pkcs11, slot) {
            Ok(info) => out.tokens.push(Found {
                slot,
                label: info.label().trim_end().to_string(),
                serial: info.serial_number().trim_end().to_string(),
                initialized: info.token_initialized(),
            }),
            Err(e) => out.unreadable.push(format!("slot {}: {e}", slot.id())),
        }
    }
    Ok(out)
}

/// The tokens [`present`] could read, and why the others could not be.
#[derive(Debug, Default)]
pub(crate) struct Present {
    pub tokens: Vec<Found>,
    pub unreadable: Vec<String>,
}

impl Present {
    /// ` (N tokens could not be read: …)`, or nothing.
    pub(crate) fn unreadable_note(&self) -> String {
        if self.unreadable.is_empty() {
            String::new()
        } else {
            format!(
                " ({} token(s) could not be read: {})",
                self.unreadable.len(),
                self.unreadable.join("; ")
            )
        }
    }
}

/// `C_GetTokenInfo`, asked up to four times over about 150 ms.
fn token_info(pkcs11: &Pkcs11, slot: Slot) -> Result<cryptoki::slot::TokenInfo> {
    let mut last = None;
    for wait_ms in [0u64, 10, 40, 100] {
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        match pkcs11.get_token_info(slot) {
            Ok(info) => return Ok(info),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(ck("C_GetTokenInfo")(e)),
        None => Err(Error::backend_msg(
            COMPONENT,
            "C_GetTokenInfo was not called",
        )),
    }
}

/// The one initialised token matching `selector`. None is `NotFound`; two
/// tokens with the same label are `InvalidInput` (select by serial).
/// Tokens that cannot be read are not candidates; when nothing matches,
/// the error says which ones they were.
/// Known tokens are taken as [`present`] says.
pub(crate) fn find(lib: &Library, selector: &TokenSelector) -> Result<Found> {
    let present = present(lib)?;
    let note = present.unreadable_note();
    let matching: Vec<Found> = present
        .tokens
        .into_iter()
        .filter(|t| t.initialized)
        .filter(|t| match selector {
            TokenSelector::Label(l) => t.label == l.trim_end(),
            TokenSelector::Serial(s) => t.serial == s.trim_end(),
        })
        .collect();
    match matching.len() {
        0 => Err(Error::not_found(format!("no initialised {selector}{note}"))),
        1 => Ok(matching
            .into_iter()
            .next()
            .ok_or_else(|| Error::backend_msg(COMPONENT, "token list changed while reading it"))?),
        n => Err(Error::invalid_input(format!(
            "{n} tokens match the {selector}; select the token by serial"
        ))),
    }
}

/// [`find`], asked again with growing sleeps for up to `wait` while the
/// token is not found or a call fails transiently (SoftHSM hides a token,
/// or shows it without its label, while another process rewrites it).
///
/// This retries within the process only. SoftHSM builds its list of
/// tokens at `C_Initialize` and never adds one later, so a token that was
/// hidden then stays hidden until the library is initialised again:
/// [`crate::Pkcs11Backend::open`] does that between its attempts when no
/// other backend of the process uses the module.
pub(crate) fn find_waiting(
    lib: &Library,
    selector: &TokenSelector,
    wait: Duration,
) -> Result<Found> {
    let mut backoff = Backoff::new(wait);
    loop {
        match find(lib, selector) {
            Err(e) if lookup_retryable(&e) => {
                if !backoff.wait() {
                    return Err(backoff.annotate(e));
                }
            }
            r => return r,
        }
    }
}

/// True if a failed token lookup may succeed when asked again.
pub(crate) fn lookup_retryable(e: &Error) -> bool {
    e.is(ErrorKind::NotFound) || is_transient(e)
}

/// The mechanisms each algorithm needs; `None` for one this crate maps to
/// no mechanism (ML-DSA-65: SoftHSM 2.6 has no ML-DSA, and a token's
/// `CKM_ML_DSA` is not used).
fn needs(alg: Algorithm) -> Option<&'static [MechanismType]> {
    Some(match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            &[MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA]
        }
        Algorithm::Ed25519 => &[
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            MechanismType::EDDSA,
        ],
        // The one-step KDF runs on the token: C_DigestKey with CKM_SHA256.
        Algorithm::EcdhP256 => &[
            MechanismType::ECC_KEY_PAIR_GEN,
            MechanismType::ECDH1_DERIVE,
            MechanismType::SHA256,
        ],
        Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256 => &[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS_PSS,
        ],
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => &[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS,
        ],
        Algorithm::Aes256Gcm => &[MechanismType::AES_KEY_GEN, MechanismType::AES_GCM],
        Algorithm::HmacSha256 => &[
            MechanismType::GENERIC_SECRET_KEY_GEN,
            MechanismType::SHA256_HMAC,
        ],
        Algorithm::MlDsa65 => return None,
    })
}

/// The key size in bits a token's `C_GetMechanismInfo` states for `alg`'s
/// key-pair generation: the modulus for RSA, the curve's field for EC.
fn key_bits(alg: Algorithm) -> Option<(MechanismType, usize)> {
    match (alg.rsa_bits(), alg.ec_curve()) {
        (Some(bits), _) => Some((MechanismType::RSA_PKCS_KEY_PAIR_GEN, bits)),
        (None, Some(curve)) => Some((MechanismType::ECC_KEY_PAIR_GEN, curve.field_len() * 8)),
        (None, None) => None,
    }
}

/// What the token in `slot` can do: an algorithm is offered when every
/// mechanism it needs is listed and its key size (RSA modulus, EC curve) is
/// in the stated range of its key-pair generation (for EC, a range of 0–0
/// states none). ML-DSA-65 never is.
pub(crate) fn capabilities(pkcs11: &Pkcs11, slot: Slot) -> Result<Capabilities> {
    let listed = pkcs11
        .get_mechanism_list(slot)
        .map_err(ck("C_GetMechanismList"))?;
    let mut caps = Capabilities::none();
    for alg in Algorithm::ALL {
        let Some(needed) = needs(alg) else { continue };
        if !needed.iter().all(|m| listed.contains(m)) {
            continue;
        }
        if let Some((mechanism, bits)) = key_bits(alg) {
            let info = pkcs11
                .get_mechanism_info(slot, mechanism)
                .map_err(ck("C_GetMechanismInfo"))?;
            let (min, max) = (info.min_key_size(), info.max_key_size());
            let unstated = max == 0 && alg.rsa_bits().is_none();
            if !unstated && (bits < min || bits > max) {
                continue;
            }
        }
        caps = caps.with_algorithm(alg);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_but_ml_dsa_needs_listed_mechanisms() {
        for alg in Algorithm::ALL {
            assert_eq!(needs(alg).is_none(), alg == Algorithm::MlDsa65, "{alg}");
        }
        assert_eq!(
            key_bits(Algorithm::EcdsaP384Sha384),
            Some((MechanismType::ECC_KEY_PAIR_GEN, 384))
        );
        assert_eq!(
            key_bits(Algorithm::EcdhP256),
            Some((MechanismType::ECC_KEY_PAIR_GEN, 256))
        );
        assert_eq!(key_bits(Algorithm::Ed25519), None);
        assert!(needs(Algorithm::EcdhP256).is_some_and(|m| m.contains(&MechanismType::SHA256)));
    }
}

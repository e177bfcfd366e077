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

/// The mechanisms each algorithm needs.
fn needs(alg: Algorithm) -> &'static [MechanismType] {
    match alg {
        Algorithm::EcdsaP256Sha256 => &[MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA],
        Algorithm::Rsa2048PssSha256 | Algorithm::Rsa3072PssSha256 => &[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS_PSS,
        ],
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa3072Pkcs1Sha256 => &[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS,
        ],
        Algorithm::Aes256Gcm => &[MechanismType::AES_KEY_GEN, MechanismType::AES_GCM],
        // Not offered yet: a mechanism no token lists.
        Algorithm::EcdsaP384Sha384
        | Algorithm::Ed25519
        | Algorithm::EcdhP256
        | Algorithm::MlDsa65 => &[MechanismType::ML_DSA_KEY_PAIR_GEN],
        Algorithm::HmacSha256 => &[
            MechanismType::GENERIC_SECRET_KEY_GEN,
            MechanismType::SHA256_HMAC,
        ],
    }
}

/// What the token in `slot` can do: an algorithm is offered when every
/// mechanism it needs is listed (and, for RSA, its key size is in range).
pub(crate) fn capabilities(pkcs11: &Pkcs11, slot: Slot) -> Result<Capabilities> {
    let listed = pkcs11
        .get_mechanism_list(slot)
        .map_err(ck("C_GetMechanismList"))?;
    let mut caps = Capabilities::none();
    for alg in Algorithm::ALL {
        if !needs(alg).iter().all(|m| listed.contains(m)) {
            continue;
        }
        if let Some(bits) = alg.rsa_bits() {
            let info = pkcs11
                .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
                .map_err(ck("C_GetMechanismInfo"))?;
            if bits < info.min_key_size() || bits > info.max_key_size() {
                continue;
            }
        }
        caps = caps.with_algorithm(alg);
    }
    Ok(caps)
}

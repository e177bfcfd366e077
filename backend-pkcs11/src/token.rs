//! Finding a token by label or serial, and what it can do.

use crate::config::TokenSelector;
use crate::error::{ck, COMPONENT};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::slot::Slot;
use keystore_api::{Algorithm, Capabilities, Error, Result};

/// A token present in a slot.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub slot: Slot,
    pub label: String,
    pub serial: String,
    pub initialized: bool,
}

/// Every slot that holds a token, with the token's label and serial.
pub(crate) fn present(pkcs11: &Pkcs11) -> Result<Vec<Found>> {
    let slots = pkcs11.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
    let mut out = Vec::new();
    for slot in slots {
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        out.push(Found {
            slot,
            label: info.label().trim_end().to_string(),
            serial: info.serial_number().trim_end().to_string(),
            initialized: info.token_initialized(),
        });
    }
    Ok(out)
}

/// The one initialised token matching `selector`. None is `NotFound`; two
/// tokens with the same label are `InvalidInput` (select by serial).
pub(crate) fn find(pkcs11: &Pkcs11, selector: &TokenSelector) -> Result<Found> {
    let matching: Vec<Found> = present(pkcs11)?
        .into_iter()
        .filter(|t| t.initialized)
        .filter(|t| match selector {
            TokenSelector::Label(l) => t.label == l.trim_end(),
            TokenSelector::Serial(s) => t.serial == s.trim_end(),
        })
        .collect();
    match matching.len() {
        0 => Err(Error::NotFound(format!("no initialised {selector}"))),
        1 => Ok(matching
            .into_iter()
            .next()
            .ok_or_else(|| Error::backend_msg(COMPONENT, "token list changed while reading it"))?),
        n => Err(Error::InvalidInput(format!(
            "{n} tokens match the {selector}; select the token by serial"
        ))),
    }
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

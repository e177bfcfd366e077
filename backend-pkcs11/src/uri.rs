//! PKCS#11 URIs (RFC 7512), for naming a token and a key in one string:
//!
//! ```text
//! pkcs11:token=Gateway%20HSM;object=device-identity?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin
//! ```
//!
//! Understood path attributes: `token`, `serial`, `object` (the key name),
//! `id` (a `CKA_ID`), plus `manufacturer`, `model`, `library-*` and
//! `slot-*`, which are accepted and ignored (tokens are selected by label
//! or serial only). Query attributes: `module-path`, `pin-source` (`file:`
//! URI or path) and `pin-value` (discouraged: the PIN ends up in process
//! listings and shell history). Values are percent-decoded; anything else
//! is [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput).

use crate::config::{PinSource, Pkcs11Config, TokenSelector};
use keystore_backend::{Error, Result, SecretBytes};
use std::path::PathBuf;

/// A parsed `pkcs11:` URI.
#[derive(Debug, Default)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `object=`: the key (object label).
    pub object: Option<String>,
    /// `id=`: an object's `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `module-path=`: the PKCS#11 module.
    pub module_path: Option<PathBuf>,
    /// `pin-source=`: a file holding the user PIN.
    pub pin_source: Option<PathBuf>,
    /// `pin-value=`: the user PIN itself (redacted in `Debug`).
    pub pin_value: Option<SecretBytes>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_input(format!("PKCS#11 URI: {}", msg.into()))
}

fn decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_str(s: &str) -> Result<String> {
    String::from_utf8(decode(s)?).map_err(|_| bad("a value is not UTF-8"))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

impl Pkcs11Uri {
    /// Parses `uri`.
    pub fn parse(uri: &str) -> Result<Pkcs11Uri> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("does not start with 'pkcs11:'"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut out = Pkcs11Uri::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not name=value")))?;
            match k {
                "token" => out.token = Some(decode_str(v)?),
                "serial" => out.serial = Some(decode_str(v)?),
                "object" => out.object = Some(decode_str(v)?),
                "id" => out.id = Some(decode(v)?),
                "manufacturer"
                | "model"
                | "type"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                k if k.starts_with("x-") => {}
                other => return Err(bad(format!("unknown path attribute '{other}'"))),
            }
        }
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not name=value")))?;
            match k {
                "module-path" => out.module_path = Some(PathBuf::from(decode_str(v)?)),
                "pin-source" => {
                    let src = decode_str(v)?;
                    let path = src
                        .strip_prefix("file://")
                        .or_else(|| src.strip_prefix("file:"))
                        .unwrap_or(&src);
                    if path.is_empty() || path.starts_with('|') {
                        return Err(bad("pin-source must name a file"));
                    }
                    out.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => out.pin_value = Some(SecretBytes::new(decode(v)?)),
                "module-name" => {}
                k if k.starts_with("x-") => {}
                other => return Err(bad(format!("unknown query attribute '{other}'"))),
            }
        }
        Ok(out)
    }

    /// The token selector: `serial` if present, else `token`.
    pub fn token_selector(&self) -> Result<TokenSelector> {
        match (&self.serial, &self.token) {
            (Some(s), _) => Ok(TokenSelector::Serial(s.clone())),
            (None, Some(t)) => Ok(TokenSelector::Label(t.clone())),
            (None, None) => Err(bad("names no token (token= or serial=)")),
        }
    }

    /// A backend configuration from this URI. The PIN comes from
    /// `pin-source`/`pin-value` if the URI has one, else from `fallback`.
    pub fn to_config(&self, fallback: Option<PinSource>) -> Result<Pkcs11Config> {
        let pin = match (&self.pin_source, &self.pin_value, fallback) {
            (Some(path), _, _) => PinSource::File(path.clone()),
            (None, Some(v), _) => PinSource::Value(SecretBytes::from_slice(v.expose())),
            (None, None, Some(f)) => f,
            (None, None, None) => return Err(bad("names no PIN source and none was given")),
        };
        let mut config = Pkcs11Config::new(self.token_selector()?, pin);
        if let Some(m) = &self.module_path {
            config = config.with_module(m.clone());
        }
        Ok(config)
    }
}

/// The URI of key `name` on the token with `label` and `serial`.
pub fn key_uri(label: &str, serial: &str, name: &str) -> String {
    format!(
        "pkcs11:token={};serial={};object={}",
        encode(label),
        encode(serial),
        encode(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_backend::ErrorKind;

    #[test]
    fn parses_the_rfc_forms() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=Gateway%20HSM;object=dev-id;manufacturer=SoftHSM%20project\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .expect("parse");
        assert_eq!(u.token.as_deref(), Some("Gateway HSM"));
        assert_eq!(u.object.as_deref(), Some("dev-id"));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            u.pin_source.as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
        assert_eq!(
            u.token_selector().expect("selector"),
            TokenSelector::Label("Gateway HSM".into())
        );
        let u = Pkcs11Uri::parse("pkcs11:serial=0a7d0f95aec84a23;token=x").expect("parse");
        assert_eq!(
            u.token_selector().expect("selector"),
            TokenSelector::Serial("0a7d0f95aec84a23".into())
        );
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        for bad in [
            "pkcs12:token=x",
            "pkcs11:token",
            "pkcs11:colour=blue",
            "pkcs11:token=%zz",
            "pkcs11:token=x?pin-source=|cat",
        ] {
            assert_eq!(
                Pkcs11Uri::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad}"
            );
        }
        assert!(Pkcs11Uri::parse("pkcs11:object=k")
            .expect("parse")
            .token_selector()
            .is_err());
    }

    #[test]
    fn key_uri_round_trips() {
        let s = key_uri("Gateway HSM", "01ab", "dev.id-1");
        assert_eq!(s, "pkcs11:token=Gateway%20HSM;serial=01ab;object=dev.id-1");
        let u = Pkcs11Uri::parse(&s).expect("parse");
        assert_eq!(u.object.as_deref(), Some("dev.id-1"));
        assert_eq!(u.token.as_deref(), Some("Gateway HSM"));
    }

    #[test]
    fn pin_value_is_redacted() {
        let u = Pkcs11Uri::parse("pkcs11:token=t?pin-value=424242").expect("parse");
        assert!(!format!("{u:?}").contains("424242"));
    }
}

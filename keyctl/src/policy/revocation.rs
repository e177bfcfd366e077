//! Section 5 of `keyctl policy`: where revocation is decided and published.
//! Key versions are revoked in the keystore; a factory store (one holding
//! the production intermediate in `STORE/pki.sqlite`) also publishes
//! certificate status: its CRL, the root's CRL, a delegated OCSP signer and
//! the URLs its certificates carry.

use crate::store::{self, Store};
use keystore_api::{rfc3339, KeyInfo, KeyState};
use provisioning::{pem_decode_all, sha256_tag, Factory, PkiDb};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Largest certificate file read from `STORE/provisioned/`.
const MAX_CERT_FILE: u64 = 1024 * 1024;

pub(super) fn revocation(w: &mut String, ks: &Store, root: &Path, keys: &[KeyInfo]) {
    let _ = writeln!(w, "## 5. Revocation (REQ-KEY-REV-03)\n");
    let _ = writeln!(
        w,
        "- Key versions: `keyctl key revoke NAME --version N --reason …` (security officer) makes \
         the version compromised at once in every process on the store and destroys its material."
    );
    let revoked: Vec<String> = keys
        .iter()
        .flat_map(|k| {
            k.versions
                .iter()
                .filter(|v| v.state == KeyState::Compromised)
                .map(move |v| format!("`{}` v{}", k.name, v.version))
        })
        .collect();
    let _ = writeln!(
        w,
        "- Compromised versions now: {}",
        if revoked.is_empty() {
            "none".to_string()
        } else {
            revoked.join(", ")
        }
    );
    let db_path = root.join("pki.sqlite");
    let factory = if db_path.is_file() {
        match PkiDb::open(&db_path) {
            Ok(db) => {
                store::warn_permissions(db.permission_report());
                factory_sources(w, ks, root, &db)
            }
            Err(e) => {
                let _ = writeln!(
                    w,
                    "- Certificate revocation: `{}` cannot be read: {e}",
                    db_path.display()
                );
                true
            }
        }
    } else {
        false
    };
    if !factory {
        if root.join("root-ca.pem").is_file() {
            let _ = writeln!(
                w,
                "- Certificate revocation: this is an offline root CA store; its CRL is `{}` \
                 ({}), reissued by the custodian with `keyctl ca root-crl` and revoked \
                 intermediates with `keyctl ca revoke-intermediate`.",
                root.join("root-crl.pem").display(),
                presence(&root.join("root-crl.pem"))
            );
        } else {
            let _ = writeln!(
                w,
                "- Certificate revocation sources: none configured (no CRL, no OCSP responder): \
                 this store holds no production CA."
            );
        }
    }
    let _ = writeln!(w);
}

fn presence(p: &Path) -> &'static str {
    if p.is_file() {
        "present"
    } else {
        "missing"
    }
}

/// Lists a factory's revocation sources; false when no intermediate is
/// installed (not a factory store).
fn factory_sources(w: &mut String, ks: &Store, root: &Path, db: &PkiDb) -> bool {
    let f = Factory::new(ks, db);
    let Ok(inter) = f.intermediate() else {
        return false;
    };
    let pki = root.join("pki");
    let _ = writeln!(w, "- Certificate revocation sources (factory store):");
    let _ = writeln!(
        w,
        "  - PKI database: `{}` (CA certificates, CRL state, OCSP signers; also the provisioning \
         registry unless the stations share a PostgreSQL registry through `--registry`)",
        root.join("pki.sqlite").display()
    );
    if let Ok(r) = f.root() {
        let _ = writeln!(
            w,
            "  - Root CA: {} (serial {}, until {}); its key is in a separate offline store",
            r.subject,
            r.serial,
            rfc3339(r.not_after)
        );
    }
    let _ = writeln!(
        w,
        "  - Production intermediate: {} (serial {}, until {})",
        inter.subject,
        inter.serial,
        rfc3339(inter.not_after)
    );
    let crl = match f.current_crl() {
        Ok(Some(der)) => format!("last issued {} bytes, {}", der.len(), sha256_tag(&der)),
        Ok(None) => "none issued yet".to_string(),
        Err(e) => format!("unreadable: {e}"),
    };
    let _ = writeln!(
        w,
        "  - Intermediate CRL: {crl}; published as `{}` ({}); reissued by `keyctl ca crl`, \
         updated by `keyctl ca revoke`",
        pki.join("crl.pem").display(),
        presence(&pki.join("crl.pem"))
    );
    let _ = writeln!(
        w,
        "  - Root CRL: `{}` ({}), issued offline by the root custodian (`keyctl ca root-crl`)",
        pki.join("root-crl.pem").display(),
        presence(&pki.join("root-crl.pem"))
    );
    match f.ocsp_signer() {
        Ok(s) => {
            let _ = writeln!(
                w,
                "  - OCSP: delegated signer serial {} until {} (key `{}`); responder: \
                 `keyctl ocsp serve --listen ADDR` answers from the registry",
                s.serial,
                rfc3339(s.not_after),
                provisioning::OCSP_SIGNER_KEY
            );
        }
        Err(_) => {
            let _ = writeln!(
                w,
                "  - OCSP: not configured (no delegated signer; `keyctl ca ocsp-signer` issues one)"
            );
        }
    }
    let (ocsp, cdp, scanned) = certificate_urls(&root.join("provisioned"));
    let _ = writeln!(
        w,
        "  - OCSP URLs in issued certificates ({scanned} under `{}`): {}",
        root.join("provisioned").display(),
        url_list(&ocsp)
    );
    let _ = writeln!(
        w,
        "  - CRL distribution points in issued certificates: {}",
        url_list(&cdp)
    );
    true
}

fn url_list(urls: &BTreeMap<String, usize>) -> String {
    if urls.is_empty() {
        return "none".into();
    }
    urls.iter()
        .map(|(u, n)| format!("`{u}` ({n} certificates)"))
        .collect::<Vec<_>>()
        .join(", ")
}

type UrlCounts = BTreeMap<String, usize>;

/// The OCSP URLs (authorityInfoAccess) and CRL distribution point URIs of
/// the certificates in `DIR/*/cert.pem`, with how many carry each, and the
/// number of certificates read.
fn certificate_urls(dir: &Path) -> (UrlCounts, UrlCounts, usize) {
    let (mut ocsp, mut cdp, mut n) = (UrlCounts::new(), UrlCounts::new(), 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (ocsp, cdp, n);
    };
    for entry in entries.flatten() {
        let path = entry.path().join("cert.pem");
        let small = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= MAX_CERT_FILE);
        let Some(text) = small.then(|| std::fs::read_to_string(&path).ok()).flatten() else {
            continue;
        };
        for der in pem_decode_all(&text, "CERTIFICATE").unwrap_or_default() {
            n += 1;
            for u in ocsp_urls(&der) {
                *ocsp.entry(u).or_default() += 1;
            }
            for u in cdp_uris(&der) {
                *cdp.entry(u).or_default() += 1;
            }
        }
    }
    (ocsp, cdp, n)
}

/// id-ad-ocsp (1.3.6.1.5.5.7.48.1), as OID content bytes.
const ID_AD_OCSP: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
/// id-ce-cRLDistributionPoints (2.5.29.31).
const ID_CE_CDP: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x1f];

/// A DER length at `b[i]`: (length, bytes of the length field).
fn der_len(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let first = *b.get(i)?;
    match first {
        0..=0x7f => Some((usize::from(first), 1)),
        0x81 => Some((usize::from(*b.get(i + 1)?), 2)),
        0x82 => Some((
            usize::from(*b.get(i + 1)?) << 8 | usize::from(*b.get(i + 2)?),
            3,
        )),
        _ => None,
    }
}

/// A uniformResourceIdentifier GeneralName (`[6]` IA5String) at `b[i]`.
fn uri_at(b: &[u8], i: usize) -> Option<(String, usize)> {
    if *b.get(i)? != 0x86 {
        return None;
    }
    let (len, l) = der_len(b, i + 1)?;
    let s = b.get(i + 1 + l..i + 1 + l + len)?;
    let ok = s.iter().all(|c| c.is_ascii_graphic()) && s.windows(3).any(|x| x == b"://");
    ok.then(|| (String::from_utf8_lossy(s).into_owned(), 1 + l + len))
}

fn positions<'a>(der: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    der.windows(needle.len())
        .enumerate()
        .filter(move |(_, win)| *win == needle)
        .map(move |(i, _)| i + needle.len())
}

/// The OCSP access locations of a certificate.
fn ocsp_urls(der: &[u8]) -> Vec<String> {
    positions(der, ID_AD_OCSP)
        .filter_map(|i| uri_at(der, i).map(|(u, _)| u))
        .collect()
}

/// The URIs inside a certificate's CRL distribution points extension.
fn cdp_uris(der: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for mut i in positions(der, ID_CE_CDP) {
        if der.get(i..i + 2) == Some(&[0x01, 0x01]) {
            i += 3; // critical BOOLEAN
        }
        if der.get(i) != Some(&0x04) {
            continue;
        }
        let Some((len, l)) = der_len(der, i + 1) else {
            continue;
        };
        let (start, end) = (i + 1 + l, (i + 1 + l + len).min(der.len()));
        let mut j = start;
        while j < end {
            match uri_at(der, j) {
                Some((u, skip)) => {
                    out.push(u);
                    j += skip;
                }
                None => j += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_found_in_their_extensions_only() {
        let url = b"http://127.0.0.1:8080/ocsp";
        let mut der = vec![0x30, 0x10];
        der.extend_from_slice(ID_AD_OCSP);
        der.push(0x86);
        der.push(url.len() as u8);
        der.extend_from_slice(url);
        assert_eq!(
            ocsp_urls(&der),
            vec![String::from_utf8_lossy(url).into_owned()]
        );
        assert!(cdp_uris(&der).is_empty());
        let crl = b"http://crl.example/ca.crl";
        let mut cdp = ID_CE_CDP.to_vec();
        cdp.extend_from_slice(&[0x04, (crl.len() + 8) as u8]);
        cdp.extend_from_slice(&[0x30, 0x00, 0x30, 0x00, 0xa0, 0x00, 0x86, crl.len() as u8]);
        cdp.extend_from_slice(crl);
        assert_eq!(
            cdp_uris(&cdp),
            vec![String::from_utf8_lossy(crl).into_owned()]
        );
        assert!(ocsp_urls(&cdp).is_empty());
    }
}

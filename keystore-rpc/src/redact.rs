//! `Debug` for the messages that carry secrets (an import's secret, derived
//! key material, plaintexts): their secret fields print as their length
//! only, so logging a request or response never leaks them.

use crate::pb;
use std::fmt;

struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[REDACTED; {} bytes]", self.0)
    }
}

impl fmt::Debug for pb::ImportRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRequest")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &Redacted(self.secret.len()))
            .field("usages", &self.usages)
            .field("encryption_limit", &self.encryption_limit)
            .finish()
    }
}

impl fmt::Debug for pb::DeriveResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeriveResponse")
            .field("okm", &Redacted(self.okm.len()))
            .finish()
    }
}

impl fmt::Debug for pb::AgreeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreeResponse")
            .field("okm", &Redacted(self.okm.len()))
            .finish()
    }
}

impl fmt::Debug for pb::EncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("name", &self.name)
            .field("plaintext", &Redacted(self.plaintext.len()))
            .field("aad", &self.aad)
            .finish()
    }
}

impl fmt::Debug for pb::DecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("plaintext", &Redacted(self.plaintext.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_never_print() {
        let secret = vec![0x5a; 32];
        let shown = [
            format!(
                "{:?}",
                pb::ImportRequest {
                    name: "k".into(),
                    algorithm: "aes-256-gcm".into(),
                    secret: secret.clone(),
                    usages: String::new(),
                    encryption_limit: None,
                }
            ),
            format!(
                "{:?}",
                pb::DeriveResponse {
                    okm: secret.clone()
                }
            ),
            format!(
                "{:?}",
                pb::AgreeResponse {
                    okm: secret.clone()
                }
            ),
            format!(
                "{:?}",
                pb::EncryptRequest {
                    name: "k".into(),
                    plaintext: secret.clone(),
                    aad: vec![],
                }
            ),
            format!("{:?}", pb::DecryptResponse { plaintext: secret }),
        ];
        for s in shown {
            assert!(s.contains("[REDACTED; 32 bytes]"), "{s}");
            assert!(!s.contains("90"), "a secret byte (0x5a = 90) printed: {s}");
        }
    }
}

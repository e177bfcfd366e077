//! The caller policy (TOML): which OS identities may call, in which role,
//! and which key names each may see.
//!
//! ```toml
//! # The gateway daemon signs with its own keys only.
//! [[caller]]
//! user = "gatewayd"          # or uid = 1001
//! role = "application"
//! keys = ["gateway-*", "telemetry-mac"]
//!
//! # Anyone in group keystore-ops runs the store (create, suspend, sweep).
//! [[caller]]
//! group = "keystore-ops"     # or gid = 1002: the caller's effective gid
//! role = "operator"
//! ```
//!
//! A caller is matched by its uid first, then by its effective gid, each
//! time by the first rule in file order; a caller matched by no rule is
//! refused everything. `keys` are globs over key names (`*` any run of
//! characters, `?` one); the application role sees no key without them,
//! other roles see every key when they are absent. Roles and their duties
//! are the keystore's own ([`keystore_api::Duty`]); key use (sign, MAC,
//! derive, encrypt, decrypt) is the application role's alone.

use crate::config::read_text;
use keystore_api::{Error, Result, Role};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    caller: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    uid: Option<u32>,
    user: Option<String>,
    gid: Option<u32>,
    group: Option<String>,
    role: String,
    keys: Option<Vec<String>>,
}

/// Who a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Uid(u32),
    Gid(u32),
}

#[derive(Debug)]
struct Rule {
    subject: Subject,
    grant: Grant,
}

/// What a caller may do: its role, and the key names it may see.
#[derive(Debug, Clone)]
pub struct Grant {
    role: Role,
    keys: Option<Arc<[String]>>,
}

impl Grant {
    /// The caller's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the caller's keys are not limited by globs.
    pub fn sees_every_key(&self) -> bool {
        self.keys.is_none()
    }

    /// Whether the caller may see the key `name`.
    pub fn may_see(&self, name: &str) -> bool {
        match &self.keys {
            None => true,
            Some(globs) => globs
                .iter()
                .any(|g| glob_match(g.as_bytes(), name.as_bytes())),
        }
    }
}

/// The loaded policy.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](keystore_api::ErrorKind::NotFound) for a
    /// missing file; [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput)
    /// for bad TOML, an unknown role or user, or a rule that names no or
    /// two subjects, naming the rule.
    pub fn load(path: &Path) -> Result<Policy> {
        Policy::parse(&read_text(path, "policy")?, &Accounts::system()).map_err(|e| {
            let m = format!("{}: {}", path.display(), e.detail());
            e.with_message(m)
        })
    }

    fn parse(text: &str, accounts: &Accounts) -> Result<Policy> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| Error::invalid_input(e.message().to_string()))?;
        let rules = file
            .caller
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                rule(r, accounts).map_err(|e| {
                    let m = format!("caller rule {}: {}", i + 1, e.detail());
                    e.with_message(m)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Policy { rules })
    }

    /// The grant of the caller with `uid` and effective `gid`, if any.
    pub fn grant(&self, uid: u32, gid: u32) -> Option<Grant> {
        let by = |s: Subject| self.rules.iter().find(|r| r.subject == s);
        by(Subject::Uid(uid))
            .or_else(|| by(Subject::Gid(gid)))
            .map(|r| r.grant.clone())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule (every caller is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn rule(r: RuleFile, accounts: &Accounts) -> Result<Rule> {
    let subject = match (r.uid, &r.user, r.gid, &r.group) {
        (Some(u), None, None, None) => Subject::Uid(u),
        (None, Some(name), None, None) => Subject::Uid(accounts.uid(name)?),
        (None, None, Some(g), None) => Subject::Gid(g),
        (None, None, None, Some(name)) => Subject::Gid(accounts.gid(name)?),
        _ => {
            return Err(Error::invalid_input(
                "names exactly one of uid, user, gid and group",
            ))
        }
    };
    let role: Role = r.role.parse()?;
    if let Some(globs) = &r.keys {
        for g in globs {
            let ok = !g.is_empty()
                && g.len() <= keystore_api::limits::MAX_NAME_LEN
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-*?".contains(&b));
            if !ok {
                return Err(Error::invalid_input(format!(
                    "key glob '{g}' may hold only A-Z a-z 0-9 . _ - and the wildcards * ?"
                )));
            }
        }
    }
    if role == Role::Application && r.keys.is_none() {
        return Err(Error::invalid_input(
            "an application rule lists the key names it may use (keys = [\"...\"])",
        ));
    }
    Ok(Rule {
        subject,
        grant: Grant {
            role,
            keys: r.keys.map(Arc::from),
        },
    })
}

/// `*` matches any run of bytes, `?` one byte.
fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if g < glob.len() && (glob[g] == b'?' || glob[g] == name[n]) {
            g += 1;
            n += 1;
        } else if g < glob.len() && glob[g] == b'*' {
            star = Some((g, n));
            g += 1;
        } else if let Some((sg, sn)) = star {
            g = sg + 1;
            n = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

/// User and group names, from `/etc/passwd` and `/etc/group`.
struct Accounts {
    passwd: String,
    group: String,
}

impl Accounts {
    fn system() -> Accounts {
        Accounts {
            passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            group: std::fs::read_to_string("/etc/group").unwrap_or_default(),
        }
    }

    fn lookup(table: &str, name: &str, what: &str) -> Result<u32> {
        table
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[0] == name)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| Error::invalid_input(format!("no {what} named '{name}'")))
    }

    fn uid(&self, name: &str) -> Result<u32> {
        Accounts::lookup(&self.passwd, name, "user")
    }

    fn gid(&self, name: &str) -> Result<u32> {
        Accounts::lookup(&self.group, name, "group")
    }
}

/// The gid of the group `name` (a name from `/etc/group`, or a number).
pub(crate) fn group_id(name: &str) -> Result<u32> {
    name.parse().or_else(|_| Accounts::system().gid(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        Accounts {
            passwd: "root:x:0:0::/root:/bin/sh\ngatewayd:x:1001:1001::/:/bin/false\n".into(),
            group: "root:x:0:\nops:x:2000:alice\n".into(),
        }
    }

    #[test]
    fn globs() {
        for (g, n, ok) in [
            ("gateway-*", "gateway-tls", true),
            ("gateway-*", "gateway-", true),
            ("gateway-*", "gatewayx", false),
            ("*", "anything", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-mac", "telemetry-mac", true),
            ("*-mac", "telemetry-mac2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(g.as_bytes(), n.as_bytes()), ok, "{g} ~ {n}");
        }
    }

    #[test]
    fn uid_before_gid_and_first_rule_wins() {
        let p = Policy::parse(
            r#"
            [[caller]]
            group = "ops"
            role = "operator"
            [[caller]]
            user = "gatewayd"
            role = "application"
            keys = ["gw-*"]
            [[caller]]
            uid = 1001
            role = "security-officer"
            "#,
            &accounts(),
        )
        .expect("policy");
        let g = p.grant(1001, 2000).expect("gatewayd");
        assert_eq!(g.role(), Role::Application);
        assert!(g.may_see("gw-sign") && !g.may_see("other"));
        let g = p.grant(1234, 2000).expect("by group");
        assert_eq!(g.role(), Role::Operator);
        assert!(g.may_see("anything"));
        assert!(p.grant(1234, 1234).is_none());
    }

    #[test]
    fn the_shipped_example_policy_loads() {
        let accounts = Accounts {
            passwd: "gatewayd:x:1001:1001::/:/bin/false\nfwupdate:x:1002:1002::/:/bin/false\n\
                     keystore-so:x:1003:1003::/:/bin/sh\nkeystore-audit:x:1004:1004::/:/bin/sh\n"
                .into(),
            group: "keystore-ops:x:2000:alice\n".into(),
        };
        let p = Policy::parse(include_str!("../deploy/policy.toml"), &accounts).expect("example");
        assert_eq!(p.len(), 5);
        let gw = p.grant(1001, 1001).expect("gatewayd");
        assert!(gw.may_see("gateway-tls") && !gw.may_see("firmware-signing"));
        assert_eq!(
            p.grant(1003, 1003).expect("so").role(),
            Role::SecurityOfficer
        );
        assert_eq!(p.grant(4242, 2000).expect("ops").role(), Role::Operator);
    }

    #[test]
    fn bad_rules_name_themselves() {
        for (text, needle) in [
            (
                "[[caller]]\nrole = \"operator\"",
                "caller rule 1: names exactly one",
            ),
            (
                "[[caller]]\nuid = 1\ngid = 2\nrole = \"operator\"",
                "exactly one",
            ),
            ("[[caller]]\nuid = 1\nrole = \"king\"", "unknown role"),
            (
                "[[caller]]\nuid = 1\nrole = \"application\"",
                "lists the key names",
            ),
            (
                "[[caller]]\nuser = \"nobody-here\"\nrole = \"auditor\"",
                "no user named",
            ),
            (
                "[[caller]]\nuid = 1\nrole = \"application\"\nkeys = [\"a/b\"]",
                "key glob",
            ),
            (
                "[[caller]]\nuid = 1\nrole = \"auditor\"\ncolour = 1",
                "unknown field",
            ),
        ] {
            let e = Policy::parse(text, &accounts()).unwrap_err();
            assert_eq!(e.kind(), keystore_api::ErrorKind::InvalidInput);
            assert!(e.detail().contains(needle), "{text}: {e}");
        }
    }
}

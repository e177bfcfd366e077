//! `keystore-api` values to and from their `keystore.v1` messages. A
//! message that does not describe a valid value (an unknown algorithm, a
//! time out of range) is [`ErrorKind::InvalidInput`](keystore_api::ErrorKind).

use crate::pb;
use keystore_api::{
    AuditEntry, DueReason, EncryptionUsage, Error, KeyInfo, KeyState, Origin, PublicKey, Result,
    RotationDue, SignatureFormat, VersionInfo,
};
use time::{Duration, OffsetDateTime};

/// A time as a protobuf timestamp.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

/// A protobuf timestamp as a time.
pub fn time_of(t: &prost_types::Timestamp) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|at| at.checked_add(Duration::nanoseconds(i64::from(t.nanos))))
        .ok_or_else(|| Error::invalid_input("a timestamp is out of range"))
}

/// A duration as a protobuf duration.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.whole_seconds(),
        nanos: d.subsec_nanoseconds(),
    }
}

/// A protobuf duration as a duration; a missing one is zero.
pub fn duration_of(d: Option<&prost_types::Duration>) -> Duration {
    d.map_or(Duration::ZERO, |d| {
        Duration::new(d.seconds, d.nanos.clamp(-999_999_999, 999_999_999))
    })
}

/// A signature format as its message enum.
pub fn format(f: SignatureFormat) -> pb::SignatureFormat {
    match f {
        SignatureFormat::Fixed => pb::SignatureFormat::Fixed,
        _ => pb::SignatureFormat::Der,
    }
}

/// The signature format a message names.
pub fn format_of(f: pb::SignatureFormat) -> SignatureFormat {
    match f {
        pb::SignatureFormat::Fixed => SignatureFormat::Fixed,
        pb::SignatureFormat::Der => SignatureFormat::Der,
    }
}

fn state(s: KeyState) -> pb::KeyState {
    match s {
        KeyState::PreActivation => pb::KeyState::PreActivation,
        KeyState::Active => pb::KeyState::Active,
        KeyState::Suspended => pb::KeyState::Suspended,
        KeyState::Deactivated => pb::KeyState::Deactivated,
        KeyState::Compromised => pb::KeyState::Compromised,
        KeyState::Destroyed => pb::KeyState::Destroyed,
    }
}

fn state_of(s: i32) -> Result<KeyState> {
    Ok(match pb::KeyState::try_from(s) {
        Ok(pb::KeyState::PreActivation) => KeyState::PreActivation,
        Ok(pb::KeyState::Active) => KeyState::Active,
        Ok(pb::KeyState::Suspended) => KeyState::Suspended,
        Ok(pb::KeyState::Deactivated) => KeyState::Deactivated,
        Ok(pb::KeyState::Compromised) => KeyState::Compromised,
        Ok(pb::KeyState::Destroyed) => KeyState::Destroyed,
        _ => return Err(Error::invalid_input(format!("unknown key state {s}"))),
    })
}

fn origin(o: Origin) -> pb::Origin {
    match o {
        Origin::Generated => pb::Origin::Generated,
        Origin::Imported => pb::Origin::Imported,
        Origin::Restored => pb::Origin::Restored,
    }
}

fn origin_of(o: i32) -> Result<Origin> {
    Ok(match pb::Origin::try_from(o) {
        Ok(pb::Origin::Generated) => Origin::Generated,
        Ok(pb::Origin::Imported) => Origin::Imported,
        Ok(pb::Origin::Restored) => Origin::Restored,
        _ => return Err(Error::invalid_input(format!("unknown key origin {o}"))),
    })
}

/// Key facts as a message.
pub fn key_info(k: &KeyInfo) -> pb::KeyInfo {
    pb::KeyInfo {
        name: k.name.clone(),
        algorithm: k.algorithm.to_string(),
        usages: k.usages.to_string(),
        backup_eligible: k.backup_eligible,
        cryptoperiod: k.cryptoperiod.map(duration),
        created_at: Some(timestamp(k.created_at)),
        versions: k
            .versions
            .iter()
            .map(|v| pb::VersionInfo {
                version: v.version,
                state: state(v.state) as i32,
                origin: origin(v.origin) as i32,
                public_key_spki: v.public_key.as_ref().map(|p| p.spki_der().to_vec()),
                fingerprint: v.fingerprint.clone(),
                created_at: Some(timestamp(v.created_at)),
                state_changed_at: Some(timestamp(v.state_changed_at)),
                grace_end: v.grace_end.map(timestamp),
                reason: v.reason.clone(),
                encryptions_reserved: v.encryptions.map(|u| u.reserved),
            })
            .collect(),
        encryption_limit: k.encryption_limit,
    }
}

fn required_time(t: Option<&prost_types::Timestamp>, what: &str) -> Result<OffsetDateTime> {
    time_of(t.ok_or_else(|| Error::invalid_input(format!("{what} is missing")))?)
}

/// The key facts a message describes.
pub fn key_info_of(k: &pb::KeyInfo) -> Result<KeyInfo> {
    let algorithm = k.algorithm.parse()?;
    let encryption_limit = k
        .encryption_limit
        .map(|l| check_limit(l, "a key's encryption limit"))
        .transpose()?;
    let versions = k
        .versions
        .iter()
        .map(|v| {
            Ok(VersionInfo {
                version: v.version,
                state: state_of(v.state)?,
                origin: origin_of(v.origin)?,
                public_key: v
                    .public_key_spki
                    .clone()
                    .map(|der| PublicKey::from_spki_der(algorithm, der))
                    .transpose()?,
                fingerprint: v.fingerprint.clone(),
                created_at: required_time(v.created_at.as_ref(), "a version's creation time")?,
                state_changed_at: required_time(
                    v.state_changed_at.as_ref(),
                    "a version's state change time",
                )?,
                grace_end: v.grace_end.as_ref().map(time_of).transpose()?,
                reason: v.reason.clone(),
                encryptions: usage_of(v.encryptions_reserved, encryption_limit)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KeyInfo {
        name: k.name.clone(),
        algorithm,
        usages: k.usages.parse()?,
        backup_eligible: k.backup_eligible,
        cryptoperiod: k.cryptoperiod.as_ref().map(|d| duration_of(Some(d))),
        encryption_limit,
        created_at: required_time(k.created_at.as_ref(), "a key's creation time")?,
        versions,
    })
}

/// An encryption limit from a message: 1 to 2^32.
fn check_limit(limit: u64, what: &str) -> Result<u64> {
    if (1..=keystore_api::MAX_ENCRYPTION_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::invalid_input(format!(
            "{what} is 1 to {}, got {limit}",
            keystore_api::MAX_ENCRYPTION_LIMIT
        )))
    }
}

/// A version's encryptions from a message's count and its key's limit:
/// both or neither, the count never above the limit.
fn usage_of(reserved: Option<u64>, limit: Option<u64>) -> Result<Option<EncryptionUsage>> {
    match (reserved, limit) {
        (Some(reserved), Some(limit)) if reserved <= limit => {
            Ok(Some(EncryptionUsage { reserved, limit }))
        }
        (None, None) => Ok(None),
        _ => Err(Error::invalid_input(
            "an encryption count needs its limit, and stays within it",
        )),
    }
}

/// A due rotation as a message.
pub fn rotation_due(d: &RotationDue) -> pb::RotationDue {
    let (reason, usage) = match d.reason {
        DueReason::Cryptoperiod => (pb::DueReason::Cryptoperiod, None),
        DueReason::Usage(u) => (pb::DueReason::Usage, Some(u)),
    };
    pb::RotationDue {
        name: d.name.clone(),
        version: d.version,
        due_at: keystore_api::parse_rfc3339(&d.due_at).map(timestamp),
        reason: reason as i32,
        encryptions_reserved: usage.map(|u| u.reserved),
        encryption_limit: usage.map(|u| u.limit),
    }
}

/// A due rotation from its message.
pub fn rotation_due_of(d: &pb::RotationDue) -> Result<RotationDue> {
    let reason = match pb::DueReason::try_from(d.reason) {
        Ok(pb::DueReason::Cryptoperiod) => DueReason::Cryptoperiod,
        Ok(pb::DueReason::Usage) => {
            let limit = d
                .encryption_limit
                .map(|l| check_limit(l, "a due rotation's encryption limit"))
                .transpose()?;
            let usage = usage_of(d.encryptions_reserved, limit)?.ok_or_else(|| {
                Error::invalid_input("a rotation due for usage carries its count and limit")
            })?;
            DueReason::Usage(usage)
        }
        Err(_) => {
            return Err(Error::invalid_input(format!(
                "unknown due reason {}",
                d.reason
            )))
        }
    };
    Ok(RotationDue {
        name: d.name.clone(),
        version: d.version,
        due_at: keystore_api::rfc3339(required_time(d.due_at.as_ref(), "a due time")?),
        reason,
    })
}

/// An audit entry as a message.
pub fn audit_entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        id: e.id.clone(),
        at: Some(timestamp(e.at)),
        actor: e.actor.clone(),
        role: e.role.clone(),
        event: e.event.as_str().to_string(),
        key_name: e.key_name.clone(),
        key_version: e.key_version,
        fingerprint: e.fingerprint.clone(),
        detail: e.detail.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
        mac: e.mac.clone(),
    }
}

/// The audit entry a message describes, through its JSON export form (the
/// stable form `keyctl audit export` writes).
pub fn audit_entry_of(e: &pb::AuditEntry) -> Result<AuditEntry> {
    let at = keystore_api::rfc3339(required_time(e.at.as_ref(), "an entry's time")?);
    let json = serde_json::json!({
        "seq": e.seq, "id": e.id, "at": at, "actor": e.actor, "role": e.role,
        "event": e.event, "key_name": e.key_name, "key_version": e.key_version,
        "fingerprint": e.fingerprint, "detail": e.detail, "prev_hash": e.prev_hash,
        "hash": e.hash, "mac": e.mac,
    });
    serde_json::from_value(json)
        .map_err(|err| Error::invalid_input(format!("audit entry #{}: {err}", e.seq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(reason: DueReason) -> RotationDue {
        RotationDue {
            name: "k".into(),
            version: 3,
            due_at: "2026-03-01T12:00:00Z".into(),
            reason,
        }
    }

    #[test]
    fn due_rotations_keep_their_reason() {
        for d in [
            due(DueReason::Cryptoperiod),
            due(DueReason::Usage(EncryptionUsage {
                reserved: 950,
                limit: 1000,
            })),
        ] {
            assert_eq!(rotation_due_of(&rotation_due(&d)).unwrap(), d);
        }
    }

    #[test]
    fn a_due_message_without_a_reason_is_a_cryptoperiod_and_bad_usage_is_refused() {
        let old = pb::RotationDue {
            name: "k".into(),
            version: 1,
            due_at: Some(timestamp(OffsetDateTime::UNIX_EPOCH)),
            ..Default::default()
        };
        assert_eq!(
            rotation_due_of(&old).unwrap().reason,
            DueReason::Cryptoperiod
        );
        for (reserved, limit) in [
            (None, None),
            (Some(5), None),
            (Some(11), Some(10)),
            (Some(1), Some(0)),
            (Some(1), Some(keystore_api::MAX_ENCRYPTION_LIMIT + 1)),
        ] {
            let bad = pb::RotationDue {
                reason: pb::DueReason::Usage as i32,
                encryptions_reserved: reserved,
                encryption_limit: limit,
                ..old.clone()
            };
            let e = rotation_due_of(&bad).unwrap_err();
            assert_eq!(e.kind(), keystore_api::ErrorKind::InvalidInput, "{bad:?}");
        }
        let unknown = pb::RotationDue {
            reason: 7,
            ..old.clone()
        };
        assert!(rotation_due_of(&unknown).is_err());
    }

    #[test]
    fn key_info_carries_the_limit_and_each_version_its_count() {
        let info = KeyInfo {
            name: "k".into(),
            algorithm: keystore_api::Algorithm::Aes256Gcm,
            usages: keystore_api::Usages::ENCRYPT | keystore_api::Usages::DECRYPT,
            backup_eligible: false,
            cryptoperiod: None,
            encryption_limit: Some(1000),
            created_at: OffsetDateTime::UNIX_EPOCH,
            versions: vec![VersionInfo {
                version: 1,
                state: KeyState::Active,
                origin: Origin::Generated,
                public_key: None,
                fingerprint: None,
                created_at: OffsetDateTime::UNIX_EPOCH,
                state_changed_at: OffsetDateTime::UNIX_EPOCH,
                grace_end: None,
                reason: None,
                encryptions: Some(EncryptionUsage {
                    reserved: 64,
                    limit: 1000,
                }),
            }],
        };
        let msg = key_info(&info);
        assert_eq!(msg.encryption_limit, Some(1000));
        assert_eq!(msg.versions[0].encryptions_reserved, Some(64));
        assert_eq!(key_info_of(&msg).unwrap(), info);
    }
}

//! The provisioning event log's format, independent of where it is stored:
//! events, their chain hash, their MACs, and the walk that verifies a log.
//!
//! The log is chained by the keystore's one chain primitive
//! ([`keystore_api::chain`]). Hashes and MACs are stored as hex text; an
//! entry's MAC is over its hash in hex, the head's over
//! `keystore-provisioning-head-v1|<seq>|<hash in hex>`, both made by
//! [`EVENT_KEY`], a keystore key of the station that wrote them.
//!
//! Two formats, one per kind of registry:
//! - a station's own `pki.sqlite` (and a root's) keeps the format every
//!   existing database was written in: domain `keystore-provisioning-event-v1`,
//!   text fields in column order, the previous hash last;
//! - a registry shared by several stations (PostgreSQL) adds the writing
//!   station (its [`station_id`]) to every event, under domain
//!   `keystore-provisioning-event-v2`, so that a verifier knows whose key
//!   MAC'd which event.

use crate::util::{random_id, rfc3339};
use keystore_api::chain::{Break, ChainHasher, ChainWalker, Fault};
use keystore_api::{
    Actor, Algorithm, Backend, Error, ErrorKind, KeySpec, Keystore, Result, Usages,
};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The keystore key (HMAC-SHA256, non-extractable) that MACs the event log.
pub const EVENT_KEY: &str = "provisioning.events";

const EVENT_DOMAIN_V1: &[u8] = b"keystore-provisioning-event-v1";
const EVENT_DOMAIN_V2: &[u8] = b"keystore-provisioning-event-v2";
const HEAD_DOMAIN: &str = "keystore-provisioning-head-v1";
const STATION_DOMAIN: &[u8] = b"keystore-provisioning-station-id-v1";

pub(crate) fn head_message(seq: u64, hash: &str) -> String {
    format!("{HEAD_DOMAIN}|{seq}|{hash}")
}

/// One entry of the provisioning event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position, from 1.
    pub seq: u64,
    /// Random 128-bit id, hex.
    pub id: String,
    /// RFC 3339 UTC time.
    pub at: String,
    /// The actor id.
    pub actor: String,
    /// The actor's role.
    pub role: String,
    /// `init-root`, `sign-intermediate`, `revoke-intermediate`,
    /// `install-intermediate`, `provision`, `renew`, `revoke`, `crl`,
    /// `ocsp-signer`, `est-server-cert`, `est-refused`.
    pub event: String,
    /// The device concerned.
    pub device_id: Option<String>,
    /// The certificate concerned (serial, hex).
    pub serial: Option<String>,
    /// The public key concerned.
    pub fingerprint: Option<String>,
    /// Free text (never secret).
    pub detail: String,
    /// In a shared registry, the station whose event key MAC'd the event
    /// ([`station_id`]); `None` in a station's own database.
    pub station: Option<String>,
}

/// What an event is about.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFields<'a> {
    pub event: &'a str,
    pub device_id: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub detail: String,
}

impl EventFields<'_> {
    /// The event these fields describe, by `actor` at `at`, with a fresh id;
    /// its sequence number and station are the log's to set.
    pub(crate) fn to_event(&self, actor: &Actor, at: OffsetDateTime) -> Result<Event> {
        Ok(Event {
            seq: 0,
            id: random_id()?,
            at: rfc3339(at),
            actor: actor.id().to_string(),
            role: actor.role().id().to_string(),
            event: self.event.to_string(),
            device_id: self.device_id.map(str::to_string),
            serial: self.serial.map(str::to_string),
            fingerprint: self.fingerprint.map(str::to_string),
            detail: self.detail.clone(),
            station: None,
        })
    }
}

/// The chain hash of `e` after the previous hash `prev` (hex, as stored).
pub(crate) fn event_hash(e: &Event, prev: &str) -> [u8; 32] {
    let domain = if e.station.is_some() {
        EVENT_DOMAIN_V2
    } else {
        EVENT_DOMAIN_V1
    };
    let mut h = ChainHasher::new(domain, e.seq);
    h.text(Some(&e.id))
        .text(Some(&e.at))
        .text(Some(&e.actor))
        .text(Some(&e.role))
        .text(Some(&e.event))
        .text(e.device_id.as_deref())
        .text(e.serial.as_deref())
        .text(e.fingerprint.as_deref())
        .text(Some(&e.detail));
    if let Some(station) = &e.station {
        h.text(Some(station));
    }
    h.text(Some(prev));
    h.finish()
}

/// A stored hash as bytes: its 32 bytes when it is 64 lowercase hex
/// digits, its text otherwise (which then never matches a hash).
fn stored_hash(text: &str) -> Vec<u8> {
    match hex::decode(text) {
        Ok(b) if b.len() == 32 && hex::encode(&b) == text => b,
        _ => text.as_bytes().to_vec(),
    }
}

/// Makes sure the event-log MAC key exists in `ks` (an HMAC key generated in
/// the backend; creating it needs the operator or security-officer role).
pub(crate) fn ensure_event_key<B: Backend>(ks: &Keystore<B>, actor: &Actor) -> Result<()> {
    match ks.info(EVENT_KEY) {
        Ok(_) => Ok(()),
        Err(ref e) if e.is(ErrorKind::NotFound) => {
            let spec = KeySpec::new(Algorithm::HmacSha256).with_usages(Usages::MAC);
            match ks.create(actor, EVENT_KEY, spec) {
                Ok(_) => Ok(()),
                Err(e) if e.is(ErrorKind::AlreadyExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A station's id in a shared registry: the first 16 hex digits of its
/// [`EVENT_KEY`]'s MAC over a fixed label. It names the key that MAC'd an
/// event without revealing anything about it, and stays the same for as long
/// as the station keeps its key.
pub fn station_id<B: Backend>(ks: &Keystore<B>) -> Result<String> {
    let tag = ks.mac(EVENT_KEY, STATION_DOMAIN)?;
    Ok(hex::encode(&tag[..8]))
}

/// A MAC under the station's event key.
type MacFn<'k> = dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'k;

/// What a log needs from the station that appends to it: the MACs of its
/// event key and, in a shared registry, its id.
pub(crate) struct EventSigner<'k> {
    mac: Box<MacFn<'k>>,
    station: Option<String>,
}

impl<'k> EventSigner<'k> {
    /// MACs with `ks`'s [`EVENT_KEY`]; `station` (its [`station_id`], in a
    /// shared registry) is added to each event.
    pub(crate) fn new<B: Backend>(ks: &'k Keystore<B>, station: Option<String>) -> Self {
        EventSigner {
            mac: Box::new(move |data| ks.mac(EVENT_KEY, data).map(|t| t.to_vec())),
            station,
        }
    }

    /// The station's id, in a shared registry.
    pub(crate) fn station(&self) -> Option<&str> {
        self.station.as_deref()
    }

    /// Numbers `e` after `(prev_seq, prev_hash)`, sets its station, and
    /// returns its hash, its MAC and the head's MAC, all hex.
    pub(crate) fn seal(&self, e: &mut Event, prev_seq: u64, prev_hash: &str) -> Result<Sealed> {
        e.seq = prev_seq + 1;
        e.station = self.station.clone();
        let hash = hex::encode(event_hash(e, prev_hash));
        let mac = hex::encode((self.mac)(hash.as_bytes())?);
        let head_mac = hex::encode((self.mac)(head_message(e.seq, &hash).as_bytes())?);
        Ok(Sealed {
            prev_hash: prev_hash.to_string(),
            hash,
            mac,
            head_mac,
        })
    }
}

/// An event's stored chain values, hex.
pub(crate) struct Sealed {
    pub prev_hash: String,
    pub hash: String,
    pub mac: String,
    pub head_mac: String,
}

/// One stored event with its chain values, as read back.
pub(crate) struct StoredEvent {
    pub event: Event,
    pub prev_hash: String,
    pub hash: String,
    pub mac: String,
}

/// A log's stored head: last sequence number, hash, MAC, and (shared
/// registry) the station that wrote it.
pub(crate) struct StoredHead {
    pub seq: u64,
    pub hash: String,
    pub mac: String,
    pub station: Option<String>,
}

/// What verifying a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogReport {
    /// Every event, oldest first.
    pub events: Vec<Event>,
    /// How many events' MACs this station checked with its own key.
    pub macs_checked: u64,
    /// In a shared registry, the events MAC'd by other stations, per station
    /// id: their hashes are checked (a change to one breaks the chain at it,
    /// or at this station's next MAC), their MACs only by their station.
    pub other_stations: BTreeMap<String, u64>,
}

/// Verifies a log ([`ChainWalker`]): every hash, every MAC made by this
/// station (all of them in a station's own database), and the head; names
/// the first bad event as `Integrity`.
pub(crate) fn verify<B: Backend>(
    ks: &Keystore<B>,
    rows: Vec<StoredEvent>,
    head: Option<StoredHead>,
    shared: bool,
) -> Result<EventLogReport> {
    let broken = |b: Break| Error::integrity(format!("provisioning event log: {b}"));
    // A tag that does not verify under the key (or no key, or a key that
    // may not verify) is a bad MAC; a failing device or database is not.
    let mac_ok = |data: &[u8], tag: &str| match hex::decode(tag) {
        Err(_) => Ok(false),
        Ok(tag) => match ks.verify_mac(EVENT_KEY, data, &tag) {
            Ok(()) => Ok(true),
            Err(e) if e.is(ErrorKind::Backend) || e.is(ErrorKind::Busy) => Err(e),
            Err(_) => Ok(false),
        },
    };
    let own = if shared { Some(station_id(ks)?) } else { None };
    let mut walker = ChainWalker::new();
    let mut report = EventLogReport {
        events: Vec::with_capacity(rows.len()),
        macs_checked: 0,
        other_stations: BTreeMap::new(),
    };
    for row in rows {
        let e = row.event;
        let seq = e.seq;
        if shared != e.station.is_some() {
            return Err(broken(Break::new(seq, Fault::Edited)));
        }
        let recomputed = walker
            .next(
                seq,
                &stored_hash(&row.prev_hash),
                &stored_hash(&row.hash),
                |prev| event_hash(&e, &hex::encode(prev)),
            )
            .map_err(broken)?;
        if e.station == own {
            if !mac_ok(hex::encode(recomputed).as_bytes(), &row.mac)? {
                return Err(broken(Break::new(seq, Fault::BadMac)));
            }
            report.macs_checked += 1;
        } else if let Some(s) = &e.station {
            *report.other_stations.entry(s.clone()).or_default() += 1;
        }
        report.events.push(e);
    }
    let Some(head) = head.filter(|h| h.seq > 0) else {
        return walker.finish(None).map(|()| report).map_err(broken);
    };
    walker
        .finish(Some((head.seq, &stored_hash(&head.hash))))
        .map_err(broken)?;
    let last = hex::encode(walker.last_hash());
    if head.station == own && !mac_ok(head_message(head.seq, &last).as_bytes(), &head.mac)? {
        return Err(broken(Break::new(head.seq, Fault::HeadBadMac)));
    }
    Ok(report)
}

//! The shared registry's PostgreSQL schema as ordered migrations, versioned
//! in the table `keystore_schema` (row `registry`). Stations migrate at
//! connect, one at a time (a transaction-scoped advisory lock); a database
//! newer than the build is refused. Later migrations must be plain,
//! forward-only changes appended to [`MIGRATIONS`].

use super::postgres::pg_err;
use keystore_api::{Error, Result};

/// Ordered migrations; index + 1 is the version after applying.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: units, their keys, issued certificates, the event log (format v2,
    // with the writing station) and its head, which every append locks.
    "
CREATE TABLE devices (
    device_id      TEXT PRIMARY KEY,
    operator       TEXT NOT NULL,
    provisioned_at TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    record_yaml    TEXT NOT NULL,
    station        TEXT NOT NULL
);
CREATE TABLE device_keys (
    fingerprint   TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices(device_id),
    key_version   BIGINT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE TABLE issued (
    serial        TEXT PRIMARY KEY,
    ord           BIGINT GENERATED ALWAYS AS IDENTITY,
    issuer_serial TEXT NOT NULL,
    device_id     TEXT NOT NULL REFERENCES devices(device_id),
    fingerprint   TEXT NOT NULL REFERENCES device_keys(fingerprint),
    key_version   BIGINT NOT NULL,
    der           BYTEA NOT NULL,
    digest        TEXT NOT NULL,
    not_before    TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    superseded_at TEXT,
    grace_end     TEXT,
    revoked_at    TEXT,
    reason        TEXT
);
CREATE INDEX issued_by_device ON issued(device_id);
CREATE INDEX issued_revoked ON issued(issuer_serial) WHERE revoked_at IS NOT NULL;
CREATE TABLE events (
    seq         BIGINT PRIMARY KEY CHECK (seq > 0),
    id          TEXT NOT NULL UNIQUE,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    event       TEXT NOT NULL,
    device_id   TEXT,
    serial      TEXT,
    fingerprint TEXT,
    detail      TEXT NOT NULL,
    station     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE TABLE events_head (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    mac     TEXT NOT NULL,
    station TEXT
);
INSERT INTO events_head (id, seq, hash, mac)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', '');
",
    // 2: each unit's TPM key attestation state and evidence digest.
    "
ALTER TABLE devices
    ADD COLUMN attestation TEXT NOT NULL DEFAULT 'unattested'
        CHECK (attestation IN ('attested-tpm', 'unattested')),
    ADD COLUMN attestation_digest TEXT;
",
];

/// The advisory lock that serialises migrations (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6b65_7973_746f_7265;

/// Brings the database to the newest schema version in one transaction.
pub(super) fn migrate(client: &mut postgres::Client) -> Result<()> {
    let mut tx = client
        .transaction()
        .map_err(pg_err("cannot start a registry transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_err("cannot lock the registry schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keystore_schema (
             component TEXT PRIMARY KEY,
             version   INTEGER NOT NULL
         )",
    )
    .map_err(pg_err("cannot create the schema version table"))?;
    let current: i32 = tx
        .query_opt(
            "SELECT version FROM keystore_schema WHERE component = 'registry'",
            &[],
        )
        .map_err(pg_err("cannot read the registry schema version"))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let target = MIGRATIONS.len() as i32;
    if current > target {
        return Err(Error::unsupported(format!(
            "registry schema version {current} is newer than this build understands \
             ({target}); upgrade the software"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(sql)
            .map_err(pg_err("cannot migrate the registry schema"))?;
        tx.execute(
            "INSERT INTO keystore_schema (component, version) VALUES ('registry', $1)
             ON CONFLICT (component) DO UPDATE SET version = $1",
            &[&(i as i32 + 1)],
        )
        .map_err(pg_err("cannot record the registry schema version"))?;
    }
    tx.commit()
        .map_err(pg_err("cannot commit the registry schema"))
}

//! The PKI database's schema as ordered migrations, versioned by SQLite's
//! `PRAGMA user_version` (as the keystore's metadata schema is).
//!
//! Migration 1 is the schema the crate created before it was versioned, word
//! for word. Such a pre-versioned database (`user_version` 0 but PKI tables
//! present) ran that same text at every open; it is adopted as version 1 by
//! running it once more (`IF NOT EXISTS`: it creates only what a crash in an
//! old build's first open left missing, and changes nothing that exists).
//! Later migrations must be plain, forward-only changes appended to
//! [`MIGRATIONS`].

use crate::db::db_err;
use keystore_api::{Error, Result};
use rusqlite::{Connection, TransactionBehavior};

/// Ordered schema migrations; index + 1 is the `user_version` after applying.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: CA certificates, the provisioning registry, CRL state, device-side
    // identity certificates, and the hash-chained event log with its head.
    "
CREATE TABLE IF NOT EXISTS ca_certs (
    serial       TEXT PRIMARY KEY,
    role         TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
    key_name     TEXT,
    key_version  INTEGER,
    der          BLOB NOT NULL,
    digest       TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    installed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signed_intermediates (
    serial     TEXT PRIMARY KEY,
    der        BLOB NOT NULL,
    subject    TEXT NOT NULL,
    signed_at  TEXT NOT NULL,
    revoked_at TEXT,
    reason     TEXT
);
CREATE TABLE IF NOT EXISTS devices (
    device_id      TEXT PRIMARY KEY,
    operator       TEXT NOT NULL,
    provisioned_at TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    record_yaml    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_keys (
    fingerprint   TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices(device_id),
    key_version   INTEGER NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS issued (
    serial        TEXT PRIMARY KEY,
    issuer_serial TEXT NOT NULL,
    device_id     TEXT NOT NULL REFERENCES devices(device_id),
    fingerprint   TEXT NOT NULL REFERENCES device_keys(fingerprint),
    key_version   INTEGER NOT NULL,
    der           BLOB NOT NULL,
    digest        TEXT NOT NULL,
    not_before    TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    superseded_at TEXT,
    grace_end     TEXT,
    revoked_at    TEXT,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS issued_by_device ON issued(device_id);
CREATE TABLE IF NOT EXISTS crl_state (
    issuer_serial TEXT PRIMARY KEY,
    number        INTEGER NOT NULL,
    der           BLOB,
    this_update   TEXT,
    next_update   TEXT
);
CREATE TABLE IF NOT EXISTS identity_certs (
    key_name     TEXT NOT NULL,
    key_version  INTEGER NOT NULL,
    serial       TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    der          BLOB NOT NULL,
    chain_pem    TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    PRIMARY KEY (key_name, key_version, serial)
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    event       TEXT NOT NULL,
    device_id   TEXT,
    serial      TEXT,
    fingerprint TEXT,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL,
    mac  TEXT NOT NULL
);
",
    // 2: delegated OCSP signing certificates (RFC 6960 section 4.2.2.2),
    // recorded as the CA certificates are, under the intermediate that issued
    // them. A table of their own: `ca_certs.role` admits CAs only.
    "
CREATE TABLE IF NOT EXISTS ocsp_signers (
    serial        TEXT PRIMARY KEY,
    issuer_serial TEXT NOT NULL,
    key_name      TEXT NOT NULL,
    key_version   INTEGER NOT NULL,
    der           BLOB NOT NULL,
    digest        TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    installed_at  TEXT NOT NULL
);
",
    // 3: each unit's TPM key attestation state and evidence digest.
    "
ALTER TABLE devices ADD COLUMN attestation TEXT NOT NULL DEFAULT 'unattested'
    CHECK (attestation IN ('attested-tpm', 'unattested'));
ALTER TABLE devices ADD COLUMN attestation_digest TEXT;
",
];

/// The tables of migration 1; any of them in an unversioned database marks a
/// database made by a pre-versioned build.
const V1_TABLES: &[&str] = &[
    "ca_certs",
    "signed_intermediates",
    "devices",
    "device_keys",
    "issued",
    "crl_state",
    "identity_certs",
    "events",
    "events_head",
];

fn user_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err("cannot read the PKI schema version"))
}

fn check_not_newer(current: i64, target: i64) -> Result<()> {
    if current > target {
        return Err(Error::unsupported(format!(
            "PKI database schema version {current} is newer than this build understands \
             ({target}); upgrade the software"
        )));
    }
    Ok(())
}

/// Whether an unversioned database already holds PKI tables.
fn pre_versioned(conn: &Connection) -> Result<bool> {
    let mut found = 0i64;
    for t in V1_TABLES {
        found += conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [t],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_err("cannot read the PKI schema"))?;
    }
    Ok(found > 0)
}

/// Brings the database to the newest schema version: a fresh database gets
/// every migration, a pre-versioned one is adopted as version 1 (see the
/// module docs), a current one is left alone and a newer one is refused.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let target = MIGRATIONS.len() as i64;
    let current = user_version(conn)?;
    check_not_newer(current, target)?;
    if current == target {
        return Ok(());
    }
    // Another process may be migrating too: decide again inside the write
    // transaction, which serialises the two.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err("cannot start a PKI database transaction"))?;
    let current = user_version(&tx)?;
    check_not_newer(current, target)?;
    if current == 0 && pre_versioned(&tx)? {
        // Adopt: migration 1 is what the old build ran at every open.
        tx.execute_batch(MIGRATIONS[0])
            .map_err(db_err("cannot adopt the unversioned PKI schema"))?;
        tx.pragma_update(None, "user_version", 1i64)
            .map_err(db_err("cannot record the PKI schema version"))?;
    }
    let current = user_version(&tx)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)
            .map_err(db_err("cannot migrate the PKI schema"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err("cannot record the PKI schema version"))?;
    }
    tx.commit().map_err(db_err("cannot commit the PKI schema"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystore_api::ErrorKind;

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut st = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn fresh_database_gets_every_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);
        let names: Vec<String> = schema(&conn).into_iter().map(|(n, _)| n).collect();
        for t in V1_TABLES {
            assert!(names.iter().any(|n| n == t), "{t} in {names:?}");
        }
        // Opening again changes nothing.
        let before = schema(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(schema(&conn), before);
    }

    #[test]
    fn pre_versioned_database_is_adopted_as_version_1_unchanged() {
        // What a pre-versioned build made: the same text, no user_version.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO crl_state (issuer_serial, number) VALUES ('ab', 7)",
            [],
        )
        .unwrap();
        let before = schema(&conn);
        assert_eq!(user_version(&conn).unwrap(), 0);
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);
        // Version 1's tables and indexes stay; later migrations only add
        // (tables, or columns, which SQLite appends to the CREATE text).
        let after = schema(&conn);
        for (name, sql) in &before {
            let (_, now) = after
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} is gone: {after:?}"));
            let head = sql.trim_end().trim_end_matches(')');
            assert!(now.starts_with(head), "{name}: {sql} became {now}");
        }
        let n: i64 = conn
            .query_row(
                "SELECT number FROM crl_state WHERE issuer_serial = 'ab'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 7);
    }

    #[test]
    fn partly_created_pre_versioned_database_is_completed() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE ca_certs (
                serial TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
                key_name TEXT, key_version INTEGER, der BLOB NOT NULL, digest TEXT NOT NULL,
                not_after TEXT NOT NULL, installed_at TEXT NOT NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);
        assert!(schema(&conn).iter().any(|(n, _)| n == "events_head"));
    }

    #[test]
    fn newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(ref e) if e.is(ErrorKind::Unsupported)));
    }
}

//! The schema: ordered migrations.

/// Ordered schema migrations; index + 1 is the `user_version` after applying.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: keys, versions with SP 800-57 states, and the store's identity.
    "CREATE TABLE store (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        backend TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        algorithm TEXT NOT NULL,
        usages TEXT NOT NULL,
        backup_eligible INTEGER NOT NULL DEFAULT 0 CHECK (backup_eligible IN (0, 1)),
        cryptoperiod_secs INTEGER,
        created_at TEXT NOT NULL,
        destroyed_at TEXT
    );
    CREATE TABLE key_versions (
        key_id INTEGER NOT NULL REFERENCES keys(id),
        version INTEGER NOT NULL CHECK (version >= 1),
        state TEXT NOT NULL CHECK (state IN
            ('active', 'suspended', 'deactivated', 'compromised', 'destroyed')),
        origin TEXT NOT NULL CHECK (origin IN ('generated', 'imported', 'restored')),
        handle BLOB,
        public_key BLOB,
        fingerprint TEXT,
        created_at TEXT NOT NULL,
        state_changed_at TEXT NOT NULL,
        grace_end TEXT,
        reason TEXT,
        PRIMARY KEY (key_id, version),
        CHECK (state = 'destroyed' OR state = 'compromised' OR handle IS NOT NULL)
    );
    CREATE UNIQUE INDEX key_versions_one_active ON key_versions(key_id) WHERE state = 'active';",
    // 2: lifecycle: audit chain, crash-safety intents, role credentials.
    "ALTER TABLE store ADD COLUMN audit_key BLOB;
    ALTER TABLE store ADD COLUMN decommissioned_at TEXT;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        event TEXT NOT NULL,
        key_name TEXT,
        key_version INTEGER,
        fingerprint TEXT,
        detail TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        mac BLOB NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        mac BLOB NOT NULL
    );
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY,
        op TEXT NOT NULL CHECK (op IN ('destroy', 'revoke')),
        key_id INTEGER NOT NULL REFERENCES keys(id),
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE role_credentials (
        role TEXT PRIMARY KEY,
        iterations INTEGER NOT NULL,
        salt BLOB NOT NULL,
        verifier BLOB NOT NULL,
        set_at TEXT NOT NULL
    );",
    // 3: creations in flight. Reconciliation destroys unreferenced backend
    // objects only while one is pending (a crash between the backend call
    // and the metadata commit); otherwise it reports them and touches nothing.
    "CREATE TABLE pending_creates (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
];

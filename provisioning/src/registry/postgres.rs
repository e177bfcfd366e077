//! The registry on PostgreSQL, shared by every station of a factory.
//!
//! Uniqueness of device id, key fingerprint and certificate serial is the
//! tables' primary keys; a violation is `AlreadyExists`. Appending to the
//! event log locks its head row (`SELECT … FOR UPDATE`) inside the writing
//! transaction, so concurrent stations append one after the other and the
//! chain stays one valid chain. Connection failures are `Unavailable`;
//! messages name the server (user, host, port, database) but never the
//! password.

use super::sealed::RegistryOps;
use super::{
    already_revoked, device_taken, key_taken, not_registered, serial_taken, unknown_serial,
    DeviceRow, IssuedRow, Registration,
};
use crate::ca::IssuedCert;
use crate::eventlog::{Event, EventSigner, StoredEvent, StoredHead};
use keystore_api::{Component, Error, Result};
use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Row, Transaction};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long a connection attempt may take unless the URL says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a transaction that lost a deadlock or serialisation race is
/// tried again before the error is returned.
const RETRIES: usize = 5;

/// Maps a driver error to the keystore's: a dead connection is
/// `Unavailable`, anything else `Backend` of the PKI database.
pub(super) fn pg_err(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
            Error::unavailable(format!(
                "{what}: the registry's server is unreachable ({e})"
            ))
            .in_component(Component::PkiDb)
        } else {
            Error::backend(Component::PkiDb, what.to_string(), e)
        }
    }
}

/// `AlreadyExists(msg)` for a unique violation, else [`pg_err`].
fn unique_or(e: postgres::Error, msg: impl FnOnce() -> String) -> Error {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Error::already_exists(msg())
    } else {
        pg_err("registry write failed")(e)
    }
}

/// Whether a transaction failed only because it raced another one.
fn retryable(e: &Error) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<postgres::Error>())
        .and_then(|p| p.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// A provisioning registry in a PostgreSQL database.
pub struct PostgresRegistry {
    config: Config,
    location: String,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRegistry")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `user@host:port/dbname` of a configuration, without its password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

impl PostgresRegistry {
    /// Connects to the database `url` names (a `postgresql://` URL or a
    /// `key=value` connection string) and brings its schema to this build's
    /// version. The connection is not encrypted: reach the server over a
    /// Unix socket, the loopback or a tunnel; a URL that asks for TLS
    /// (`sslmode=require`) is refused.
    ///
    /// # Errors
    /// `InvalidInput` for a URL that does not parse (the URL is not
    /// repeated: it may hold a password); `Unsupported` for `sslmode=require`
    /// or a schema newer than the build; `Unavailable` when the server
    /// cannot be reached.
    pub fn connect(url: &str) -> Result<PostgresRegistry> {
        let mut config = Config::from_str(url).map_err(|_| {
            Error::invalid_input(
                "the registry URL does not parse: use postgresql://USER:PASSWORD@HOST:PORT/DBNAME \
                 or host=… port=… user=… dbname=…",
            )
        })?;
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(Error::unsupported(
                "TLS to the registry's server is not built in (sslmode=require); \
                 reach it over a Unix socket, the loopback or a tunnel",
            ));
        }
        config.ssl_mode(SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let location = describe(&config);
        let registry = PostgresRegistry {
            config,
            location,
            client: Mutex::new(None),
        };
        registry.with_client(super::pg_schema::migrate)?;
        Ok(registry)
    }

    /// Where the registry is: `postgresql://USER@HOST:PORT/DB`, never the
    /// password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `f` on the connection, connecting (again) when there is none or
    /// it was closed. Off any async runtime: the driver runs its own, and a
    /// call from a runtime's thread is moved to a thread of its own.
    fn with_client<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        let run = || {
            let mut guard: MutexGuard<'_, Option<Client>> =
                self.client.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                let client = self.config.connect(NoTls).map_err(|e| {
                    Error::unavailable(format!(
                        "cannot connect to the registry at {}: {e}",
                        self.location
                    ))
                    .in_component(Component::PkiDb)
                })?;
                *guard = Some(client);
            }
            let client = guard.as_mut().ok_or_else(|| {
                Error::unavailable("no registry connection").in_component(Component::PkiDb)
            })?;
            f(client)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(run).join().unwrap_or_else(|_| {
                    Err(Error::backend_msg(
                        Component::PkiDb,
                        "the registry call panicked",
                    ))
                })
            })
        } else {
            run()
        }
    }

    /// Runs `f` in a transaction, committed when it returns `Ok`; a
    /// transaction that lost a deadlock or serialisation race is tried again
    /// (a bounded number of times).
    fn transaction<T: Send>(
        &self,
        f: impl Fn(&mut Transaction<'_>) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        self.with_client(|client| {
            let mut tries = 0;
            loop {
                let mut tx = client
                    .transaction()
                    .map_err(pg_err("cannot start a registry transaction"))?;
                let out = f(&mut tx).and_then(|v| {
                    tx.commit()
                        .map_err(pg_err("cannot commit to the registry"))?;
                    Ok(v)
                });
                match out {
                    Err(e) if retryable(&e) && tries < RETRIES => tries += 1,
                    other => return other,
                }
            }
        })
    }

    fn query<T: Send>(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        map: impl Fn(&Row) -> T + Send,
    ) -> Result<Vec<T>> {
        self.with_client(|c| {
            let rows = c
                .query(sql, params)
                .map_err(pg_err("registry query failed"))?;
            Ok(rows.iter().map(map).collect())
        })
    }
}

/// Appends `e` inside `tx`: locks the head, seals the event after it,
/// inserts it and moves the head.
fn insert_event(tx: &mut Transaction<'_>, signer: &EventSigner<'_>, e: &mut Event) -> Result<()> {
    let head = tx
        .query_one(
            "SELECT seq, hash FROM events_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(pg_err("cannot lock the registry's event log"))?;
    let (last_seq, prev): (i64, String) = (head.get(0), head.get(1));
    let sealed = signer.seal(e, last_seq.max(0) as u64, &prev)?;
    let seq = e.seq as i64;
    tx.execute(
        "INSERT INTO events (seq, id, at, actor, role, event, device_id, serial, fingerprint,
                             detail, station, prev_hash, hash, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &seq,
            &e.id,
            &e.at,
            &e.actor,
            &e.role,
            &e.event,
            &e.device_id,
            &e.serial,
            &e.fingerprint,
            &e.detail,
            &e.station.as_deref().unwrap_or_default(),
            &sealed.prev_hash,
            &sealed.hash,
            &sealed.mac,
        ],
    )
    .map_err(pg_err("cannot append to the registry's event log"))?;
    tx.execute(
        "UPDATE events_head SET seq = $1, hash = $2, mac = $3, station = $4 WHERE id = 1",
        &[&seq, &sealed.hash, &sealed.head_mac, &e.station],
    )
    .map_err(pg_err("cannot move the registry's event-log head"))?;
    Ok(())
}

impl RegistryOps for PostgresRegistry {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRow>> {
        Ok(self
            .query(
                "SELECT operator, provisioned_at, record_yaml, attestation, attestation_digest
                 FROM devices WHERE device_id = $1",
                &[&device_id],
                |r| DeviceRow {
                    operator: r.get(0),
                    provisioned_at: r.get(1),
                    record_yaml: r.get(2),
                    attestation: r.get(3),
                    attestation_digest: r.get(4),
                },
            )?
            .pop())
    }

    fn key_owner(&self, fingerprint: &str) -> Result<Option<(String, u32)>> {
        Ok(self
            .query(
                "SELECT device_id, key_version FROM device_keys WHERE fingerprint = $1",
                &[&fingerprint],
                |r| (r.get::<_, String>(0), r.get::<_, i64>(1)),
            )?
            .pop()
            .map(|(d, v)| (d, u32::try_from(v).unwrap_or(u32::MAX))))
    }

    fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCert>> {
        self.query(
            "SELECT serial, device_id, fingerprint, key_version, not_after, superseded_at,
                    grace_end, revoked_at, der
             FROM issued WHERE device_id = $1 ORDER BY ord",
            &[&device_id],
            |r| IssuedCert {
                serial: r.get(0),
                device_id: r.get(1),
                fingerprint: r.get(2),
                key_version: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
                not_after: r.get(4),
                superseded_at: r.get(5),
                grace_end: r.get(6),
                revoked_at: r.get(7),
                der: r.get(8),
            },
        )
    }

    fn issued(&self, serial: &str) -> Result<Option<IssuedRow>> {
        Ok(self
            .query(
                "SELECT device_id, issuer_serial, der, revoked_at, reason, grace_end
                 FROM issued WHERE serial = $1",
                &[&serial],
                |r| IssuedRow {
                    device_id: r.get(0),
                    issuer_serial: r.get(1),
                    der: r.get(2),
                    revoked_at: r.get(3),
                    reason: r.get(4),
                    grace_end: r.get(5),
                },
            )?
            .pop())
    }

    fn device_count(&self) -> Result<u64> {
        let n = self.query("SELECT COUNT(*) FROM devices", &[], |r| r.get::<_, i64>(0))?;
        Ok(n.first().copied().unwrap_or(0).max(0) as u64)
    }

    fn revoked_under(&self, issuer_serial: &str) -> Result<Vec<(String, String, Option<String>)>> {
        self.query(
            "SELECT serial, revoked_at, reason FROM issued
             WHERE issuer_serial = $1 AND revoked_at IS NOT NULL ORDER BY revoked_at, ord",
            &[&issuer_serial],
            |r| (r.get(0), r.get(1), r.get(2)),
        )
    }

    fn register(
        &self,
        reg: &Registration<'_>,
        event: &mut Event,
        signer: &EventSigner<'_>,
    ) -> Result<()> {
        let key_version = i64::from(reg.key_version);
        let cell = Mutex::new(event.clone());
        self.transaction(|tx| {
            match &reg.first {
                Some((record_yaml, event_id)) => {
                    tx.execute(
                        "INSERT INTO devices (device_id, operator, provisioned_at, event_id,
                                              record_yaml, station, attestation,
                                              attestation_digest)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &reg.device_id,
                            &reg.operator,
                            &reg.now,
                            event_id,
                            record_yaml,
                            &signer.station().unwrap_or_default(),
                            &reg.attestation_state(),
                            &reg.attestation,
                        ],
                    )
                    .map_err(|e| unique_or(e, || device_taken(reg.device_id)))?;
                }
                None => {
                    let known = tx
                        .query_opt(
                            "SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE",
                            &[&reg.device_id],
                        )
                        .map_err(pg_err("registry query failed"))?;
                    if known.is_none() {
                        return Err(not_registered(reg.device_id));
                    }
                }
            }
            tx.execute(
                "INSERT INTO device_keys (fingerprint, device_id, key_version, registered_at)
                 VALUES ($1, $2, $3, $4)",
                &[&reg.fingerprint, &reg.device_id, &key_version, &reg.now],
            )
            .map_err(|e| unique_or(e, || key_taken(reg.fingerprint)))?;
            if let Some(grace_end) = &reg.grace_end {
                tx.execute(
                    "UPDATE issued SET superseded_at = $2, grace_end = $3
                     WHERE device_id = $1 AND superseded_at IS NULL",
                    &[&reg.device_id, &reg.now, grace_end],
                )
                .map_err(pg_err("registry write failed"))?;
            }
            tx.execute(
                "INSERT INTO issued (serial, issuer_serial, device_id, fingerprint, key_version,
                                     der, digest, not_before, not_after, issued_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &reg.serial,
                    &reg.issuer_serial,
                    &reg.device_id,
                    &reg.fingerprint,
                    &key_version,
                    &reg.der,
                    &reg.digest,
                    &reg.not_before,
                    &reg.not_after,
                    &reg.now,
                ],
            )
            .map_err(|e| unique_or(e, || serial_taken(reg.serial)))?;
            let mut e = cell.lock().unwrap_or_else(|p| p.into_inner());
            insert_event(tx, signer, &mut e)
        })?;
        *event = cell.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(())
    }

    fn revoke(
        &self,
        serial: &str,
        at: &str,
        reason: &str,
        event_for: &(dyn Fn(&str) -> Result<Event> + Sync),
        signer: &EventSigner<'_>,
    ) -> Result<()> {
        self.transaction(|tx| {
            let row = tx
                .query_opt(
                    "SELECT device_id, revoked_at FROM issued WHERE serial = $1 FOR UPDATE",
                    &[&serial],
                )
                .map_err(pg_err("registry query failed"))?;
            let device_id: String = match row {
                None => return Err(unknown_serial(serial)),
                Some(r) => match r.get::<_, Option<String>>(1) {
                    Some(at) => return Err(already_revoked(serial, &at)),
                    None => r.get(0),
                },
            };
            tx.execute(
                "UPDATE issued SET revoked_at = $2, reason = $3 WHERE serial = $1",
                &[&serial, &at, &reason],
            )
            .map_err(pg_err("registry write failed"))?;
            insert_event(tx, signer, &mut event_for(&device_id)?)
        })
    }

    fn append(&self, event: &mut Event, signer: &EventSigner<'_>) -> Result<()> {
        let cell = Mutex::new(event.clone());
        self.transaction(|tx| {
            let mut e = cell.lock().unwrap_or_else(|p| p.into_inner());
            insert_event(tx, signer, &mut e)
        })?;
        *event = cell.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(())
    }

    fn events(&self) -> Result<(Vec<StoredEvent>, Option<StoredHead>)> {
        let rows = self.query(
            "SELECT seq, id, at, actor, role, event, device_id, serial, fingerprint, detail,
                    station, prev_hash, hash, mac FROM events ORDER BY seq",
            &[],
            |r| StoredEvent {
                event: Event {
                    seq: r.get::<_, i64>(0).max(0) as u64,
                    id: r.get(1),
                    at: r.get(2),
                    actor: r.get(3),
                    role: r.get(4),
                    event: r.get(5),
                    device_id: r.get(6),
                    serial: r.get(7),
                    fingerprint: r.get(8),
                    detail: r.get(9),
                    station: Some(r.get(10)),
                },
                prev_hash: r.get(11),
                hash: r.get(12),
                mac: r.get(13),
            },
        )?;
        let head = self
            .query(
                "SELECT seq, hash, mac, station FROM events_head WHERE id = 1",
                &[],
                |r| StoredHead {
                    seq: r.get::<_, i64>(0).max(0) as u64,
                    hash: r.get(1),
                    mac: r.get(2),
                    station: r.get(3),
                },
            )?
            .pop();
        Ok((rows, head))
    }
}

//! Opening the database: file modes, migrations, the backend binding and
//! write transactions.

use super::schema::MIGRATIONS;
use super::SqlResult;
use crate::error::{Component, Error, Result};
use crate::fsperm::PermissionReport;
use crate::generation::Generation;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The open metadata database.
pub(crate) struct Metadata {
    conn: Connection,
    /// Write transactions begun through this connection (they do not move
    /// `PRAGMA data_version`, which counts other connections' commits).
    writes: u64,
    /// The commit generation shared with other processes.
    generation: Arc<Generation>,
    /// Metadata files found accessible to other users at open (tightened).
    permissions: PermissionReport,
}

/// A write transaction (`BEGIN IMMEDIATE`): it holds the database's write
/// lock from the start, and marks the shared commit generation as in
/// progress until it commits or rolls back (on drop).
pub(crate) struct WriteTx<'a> {
    // Declared first: dropped (rolled back if not committed) before the
    // generation is marked finished.
    tx: Transaction<'a>,
    finish: FinishGeneration<'a>,
}

struct FinishGeneration<'a>(&'a Generation, u64);

impl Drop for FinishGeneration<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl WriteTx<'_> {
    /// Commits, then marks the generation finished.
    pub(crate) fn commit(self) -> Result<()> {
        let WriteTx { tx, finish } = self;
        tx.commit().sql()?;
        drop(finish);
        Ok(())
    }
}

/// Files beside the database: SQLite's (`-wal`, `-shm`, `-journal`) and
/// this crate's (`-gen`, `-lock`).
pub(crate) const SIDE_FILE_SUFFIXES: &[&str] = &["-wal", "-shm", "-journal", "-gen", "-lock"];

/// The database at `path` and the files beside it.
pub(crate) fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in SIDE_FILE_SUFFIXES {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// Before SQLite opens `path`: tightens (and reports) any of the database's
/// files that other users can reach, and creates a missing database file
/// empty with mode 0600. SQLite gives the `-wal`, `-shm` and `-journal`
/// files it creates the main file's mode, so they are 0600 too.
fn secure_files(path: &Path) -> Result<PermissionReport> {
    let mut report = PermissionReport::new();
    for file in database_files(path) {
        report.check_path(&file);
    }
    if !path.exists() {
        crate::fsperm::open_private_file(path).map_err(|e| {
            Error::backend(
                Component::Metadata,
                format!("cannot create the metadata database {}", path.display()),
                e,
            )
        })?;
    }
    Ok(report)
}

impl Metadata {
    /// Opens (creating if needed) the database at `path` for `backend`, and
    /// applies pending migrations in one transaction.
    pub(crate) fn open(path: &Path, backend: &str, now: &str) -> Result<Self> {
        let permissions = secure_files(path)?;
        let conn = Connection::open(path).sql()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).sql()?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .sql()?;
        let mut md = Metadata {
            conn,
            writes: 0,
            generation: Arc::new(Generation::open(path)?),
            permissions,
        };
        md.migrate()?;
        md.bind_backend(backend, now)?;
        Ok(md)
    }

    fn migrate(&mut self) -> Result<()> {
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .sql()?;
        let target = MIGRATIONS.len() as i64;
        if current > target {
            return Err(Error::unsupported(format!(
                "metadata schema version {current} is newer than this build understands ({target}); upgrade the software"
            )));
        }
        if current == target {
            return Ok(());
        }
        // Another process may be migrating too: decide again inside the
        // write transaction, which serialises the two.
        let tx = self.tx()?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .sql()?;
        if current > target {
            return Err(Error::unsupported(format!(
                "metadata schema version {current} is newer than this build understands ({target}); upgrade the software"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql).sql()?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .sql()?;
        }
        tx.commit()?;
        Ok(())
    }

    fn bind_backend(&self, backend: &str, now: &str) -> Result<()> {
        let existing: Option<String> = self
            .conn
            .query_row("SELECT backend FROM store WHERE id = 1", [], |r| r.get(0))
            .optional()
            .sql()?;
        match existing {
            Some(b) if b == backend => Ok(()),
            Some(b) => Err(Error::invalid_input(format!(
                "this metadata database belongs to the '{b}' backend, not '{backend}'"
            ))),
            None => {
                // Two processes may bind a new store at once: the first wins,
                // and the other checks what it wrote.
                self.conn
                    .execute(
                        "INSERT OR IGNORE INTO store (id, backend, created_at, store_id)
                         VALUES (1, ?1, ?2, lower(hex(randomblob(16))))",
                        params![backend, now],
                    )
                    .sql()?;
                let bound: String = self
                    .conn
                    .query_row("SELECT backend FROM store WHERE id = 1", [], |r| r.get(0))
                    .sql()?;
                if bound == backend {
                    Ok(())
                } else {
                    Err(Error::invalid_input(format!(
                        "this metadata database belongs to the '{bound}' backend, not '{backend}'"
                    )))
                }
            }
        }
    }

    /// Metadata files that were accessible to other users at open, now
    /// tightened (see [`crate::fsperm`]).
    pub(crate) fn permission_report(&self) -> &PermissionReport {
        &self.permissions
    }

    /// The connection, for reads.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A write transaction; see [`WriteTx`].
    pub(crate) fn tx(&mut self) -> Result<WriteTx<'_>> {
        self.writes += 1;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .sql()?;
        let finish = FinishGeneration(&self.generation, self.generation.begin());
        Ok(WriteTx { tx, finish })
    }

    /// The commit generation shared with other processes.
    pub(crate) fn generation(&self) -> Arc<Generation> {
        Arc::clone(&self.generation)
    }

    /// Changes whenever any connection (this one or another process's) may
    /// have changed the database: caches keyed on it stay coherent.
    pub(crate) fn change_stamp(&self) -> Result<(i64, u64)> {
        let v: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .sql()?
            .query_row([], |r| r.get(0))
            .sql()?;
        Ok((v, self.writes))
    }
}

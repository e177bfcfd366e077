//! The listening socket and the server's life: bind (0660, the configured
//! group), serve with limits, reload the policy on SIGHUP, and on SIGTERM or
//! SIGINT stop accepting, let calls in flight finish (bounded), and remove
//! the socket.

use crate::config::{BackendKind, Config};
use crate::connection::Acceptor;
use crate::open::Store;
use crate::policy::{self, Policy};
use crate::service::{audit::Audit, key_use::KeyUse, lifecycle::Lifecycle, Shared};
use keystore_api::{Component, Error, Result};
use keystore_rpc::pb;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

/// How long calls in flight may run on after SIGTERM before the daemon exits anyway.
const DRAIN: Duration = Duration::from_secs(10);

/// A running daemon's store and policy, ready to serve.
pub struct Daemon {
    config: Config,
    config_path: PathBuf,
    shared: Arc<Shared>,
    listener: UnixListener,
}

impl Daemon {
    /// Opens the store and the policy and binds the socket. Nothing is
    /// served until [`Daemon::serve`].
    ///
    /// # Errors
    /// The store's open errors; the policy's load errors;
    /// [`ErrorKind::AlreadyExists`](keystore_api::ErrorKind::AlreadyExists)
    /// when another daemon answers on the socket;
    /// [`ErrorKind::Backend`](keystore_api::ErrorKind::Backend) when the
    /// socket cannot be bound or given its mode and group.
    pub fn start(config: Config, config_path: &Path) -> Result<Daemon> {
        let policy = Policy::load(&config.policy)?;
        let store: Store = crate::open::open(
            &config.store,
            Duration::from_secs(config.limits.lock_timeout_seconds),
        )?;
        // Soft key operations are computation in this process: they run on
        // the async workers; a token or a TPM is waited for on the blocking
        // pool (docs/keystored.md).
        let inline_use = matches!(
            config.store.backend,
            BackendKind::Soft | BackendKind::SoftTpmSealed
        );
        let shared = Arc::new(Shared::new(
            Arc::new(store),
            policy,
            config.limits.audited_refusals_per_minute,
            inline_use,
        ));
        let listener = bind(&config)?;
        Ok(Daemon {
            config,
            config_path: config_path.to_path_buf(),
            shared,
            listener,
        })
    }

    /// The store being served.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Serves until SIGTERM or SIGINT, then drains and removes the socket.
    /// Readiness is reported once, on stdout (`keystored: ready ...`) and to
    /// systemd when `NOTIFY_SOCKET` is set.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](keystore_api::ErrorKind::Backend) when the
    /// signal handlers cannot be installed or the server fails.
    pub async fn serve(self) -> Result<()> {
        let Daemon {
            config,
            config_path,
            shared,
            listener,
        } = self;
        let sys =
            |what: &str, e: io::Error| Error::backend(Component::Service, what.to_string(), e);
        let mut term = signal(SignalKind::terminate()).map_err(|e| sys("install SIGTERM", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| sys("install SIGINT", e))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| sys("install SIGHUP", e))?;

        let reload = {
            let shared = shared.clone();
            let policy_path = config.policy.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    crate::notify::send("RELOADING=1");
                    match Policy::load(&policy_path) {
                        Ok(p) => {
                            eprintln!("keystored: policy reloaded ({} rules)", p.len());
                            shared.set_policy(p);
                        }
                        Err(e) => {
                            eprintln!("keystored: policy not reloaded, the old one stays: {e}")
                        }
                    }
                    crate::notify::send("READY=1");
                }
            })
        };

        let limits = &config.limits;
        let max = limits.max_message_bytes;
        let server = tonic::transport::Server::builder()
            .timeout(limits.request_timeout())
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(
                pb::key_use_server::KeyUseServer::new(KeyUse(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::lifecycle_server::LifecycleServer::new(Lifecycle(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::audit_server::AuditServer::new(Audit(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let direct = crate::direct::Direct::new(
            Arc::new(KeyUse(shared.clone())),
            max,
            limits.request_timeout(),
        );
        let (acceptor, incoming) = Acceptor::start(
            listener,
            limits.max_connections,
            limits.request_timeout(),
            direct,
        );
        let mut serving = tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));

        let keys = shared.store.list().map(|k| k.len()).unwrap_or(0);
        println!(
            "keystored: ready on {} ({} backend, {keys} keys, config {})",
            config.socket.path.display(),
            shared.store.backend_name(),
            config_path.display()
        );
        crate::notify::send("READY=1");

        let stopped_early = tokio::select! {
            r = &mut serving => Some(r),
            _ = term.recv() => None,
            _ = int.recv() => None,
        };
        reload.abort();
        let result = match stopped_early {
            Some(r) => r,
            None => {
                eprintln!(
                    "keystored: stopping; calls in flight finish (at most {} s)",
                    DRAIN.as_secs()
                );
                crate::notify::send("STOPPING=1");
                acceptor.stop();
                let _ = stop_tx.send(());
                let started = tokio::time::Instant::now();
                match tokio::time::timeout(DRAIN, &mut serving).await {
                    Ok(r) => {
                        // Direct connections close after their call in flight.
                        acceptor
                            .drained(DRAIN.saturating_sub(started.elapsed()))
                            .await;
                        r
                    }
                    Err(_) => {
                        eprintln!(
                            "keystored: calls still running after {} s; exiting",
                            DRAIN.as_secs()
                        );
                        serving.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&config.socket.path);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::backend(Component::Service, "the server failed", e)),
            Err(e) => Err(Error::backend(
                Component::Service,
                "the server task failed",
                e,
            )),
        }
    }
}

/// Binds the socket: a stale socket file is replaced, a live one refused;
/// then mode 0660 and the configured group.
fn bind(config: &Config) -> Result<UnixListener> {
    let path = &config.socket.path;
    let sys = |what: &str, e: io::Error| {
        Error::backend(Component::Service, format!("{what} {}", path.display()), e)
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::already_exists(format!(
                "another keystored answers on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| sys("remove the stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| sys("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| sys("set mode 0660 on", e))?;
    if let Some(group) = &config.socket.group {
        let gid = policy::group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| sys("set the group of", e))?;
    }
    Ok(listener)
}

//! `keystore.v1.Lifecycle`: each call runs as the caller's actor (OS
//! identity and role), so the keystore's duty checks and audit entries are
//! the ones an in-process caller gets. Key-scoped calls see only the
//! caller's keys.

use super::{blocking, Authorized, Shared};
use keystore_api::{Error, KeySpec, SecretBytes};
use keystore_rpc::{convert, pb};
use std::sync::Arc;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The service.
pub(crate) struct Lifecycle(pub Arc<Shared>);

impl Lifecycle {
    /// The caller of a call on the keys `names` (each must be visible to it).
    fn admit<Q>(
        &self,
        request: &Request<Q>,
        what: &str,
        names: &[&str],
    ) -> Result<Authorized, Status> {
        let who = self.0.authorize(request, what).map_err(super::status)?;
        for name in names {
            who.see(name).map_err(super::status)?;
        }
        Ok(who)
    }
}

fn spec(algorithm: &str, usages: &str) -> keystore_api::Result<KeySpec> {
    let spec = KeySpec::new(algorithm.parse()?);
    Ok(if usages.is_empty() {
        spec
    } else {
        spec.with_usages(usages.parse()?)
    })
}

#[tonic::async_trait]
impl pb::lifecycle_server::Lifecycle for Lifecycle {
    async fn create(&self, request: Request<pb::CreateRequest>) -> Reply<pb::KeyInfo> {
        let who = self.admit(&request, "create", &[&request.get_ref().name])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let info = blocking(move || {
            let mut spec = spec(&r.algorithm, &r.usages)?;
            if r.backup_eligible {
                spec = spec.backup_eligible();
            }
            if let Some(p) = &r.cryptoperiod {
                spec = spec.with_cryptoperiod(convert::duration_of(Some(p)));
            }
            if let Some(limit) = r.encryption_limit {
                spec = spec.with_encryption_limit(limit);
            }
            store.create(&who.actor, &r.name, spec)
        })
        .await?;
        Ok(Response::new(convert::key_info(&info)))
    }

    async fn import(&self, request: Request<pb::ImportRequest>) -> Reply<pb::KeyInfo> {
        let who = self.admit(&request, "import", &[&request.get_ref().name])?;
        let mut r = request.into_inner();
        // Zeroized when the call ends.
        let secret = SecretBytes::new(std::mem::take(&mut r.secret));
        let store = self.0.store.clone();
        let info = blocking(move || {
            let mut spec = spec(&r.algorithm, &r.usages)?;
            if let Some(limit) = r.encryption_limit {
                spec = spec.with_encryption_limit(limit);
            }
            store.import(&who.actor, &r.name, spec, &secret)
        })
        .await?;
        Ok(Response::new(convert::key_info(&info)))
    }

    async fn rotate(&self, request: Request<pb::RotateRequest>) -> Reply<pb::KeyInfo> {
        let who = self.admit(&request, "rotate", &[&request.get_ref().name])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let grace = convert::duration_of(r.grace.as_ref());
        let info = blocking(move || store.rotate(&who.actor, &r.name, grace)).await?;
        Ok(Response::new(convert::key_info(&info)))
    }

    async fn suspend(&self, request: Request<pb::VersionRequest>) -> Reply<pb::Done> {
        let who = self.admit(&request, "suspend", &[&request.get_ref().name])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        blocking(move || store.suspend(&who.actor, &r.name, r.version)).await?;
        Ok(Response::new(pb::Done {}))
    }

    async fn resume(&self, request: Request<pb::VersionRequest>) -> Reply<pb::Done> {
        let who = self.admit(&request, "resume", &[&request.get_ref().name])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        blocking(move || store.resume(&who.actor, &r.name, r.version)).await?;
        Ok(Response::new(pb::Done {}))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Reply<pb::Done> {
        let who = self.admit(&request, "revoke", &[&request.get_ref().name])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        blocking(move || store.revoke(&who.actor, &r.name, r.version, &r.reason)).await?;
        Ok(Response::new(pb::Done {}))
    }

    async fn destroy(&self, request: Request<pb::DestroyRequest>) -> Reply<pb::Done> {
        let who = self.admit(&request, "destroy", &[&request.get_ref().name])?;
        let name = request.into_inner().name;
        let store = self.0.store.clone();
        blocking(move || store.destroy(&who.actor, &name)).await?;
        Ok(Response::new(pb::Done {}))
    }

    async fn sweep(&self, request: Request<pb::SweepRequest>) -> Reply<pb::SweepResponse> {
        let who = self.admit(&request, "sweep", &[])?;
        let store = self.0.store.clone();
        let destroyed = blocking(move || store.sweep(&who.actor)).await?;
        Ok(Response::new(pb::SweepResponse {
            destroyed: destroyed
                .into_iter()
                .map(|(name, version)| pb::KeyVersion { name, version })
                .collect(),
        }))
    }

    async fn due(&self, request: Request<pb::DueRequest>) -> Reply<pb::DueResponse> {
        let who = self.admit(&request, "due", &[])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        blocking(move || {
            let now = time::OffsetDateTime::now_utc();
            let due: Vec<_> = store
                .due(now)?
                .into_iter()
                .filter(|d| who.grant.may_see(&d.name))
                .collect();
            let rotated = if r.rotate {
                let grace = convert::duration_of(r.grace.as_ref());
                store.rotate_due(&who.actor, now, grace)?
            } else {
                Vec::new()
            };
            Ok(pb::DueResponse {
                due: due.iter().map(convert::rotation_due).collect(),
                rotated,
            })
        })
        .await
        .map(Response::new)
    }

    async fn backup(&self, request: Request<pb::BackupRequest>) -> Reply<pb::BackupResponse> {
        let r = request.get_ref();
        let who = self.admit(&request, "backup", &[&r.name, &r.kek])?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let blob = blocking(move || store.backup(&who.actor, &r.name, &r.kek)).await?;
        Ok(Response::new(pb::BackupResponse { blob }))
    }

    async fn restore(&self, request: Request<pb::RestoreRequest>) -> Reply<pb::KeyInfo> {
        let r = request.get_ref();
        let mut names = vec![r.kek.as_str()];
        names.extend(r.name.as_deref());
        let who = self.admit(&request, "restore", &names)?;
        let r = request.into_inner();
        if r.name.is_none() && !who.grant.sees_every_key() {
            return Err(super::status(Error::invalid_input(
                "restore: a caller limited to some key names must name the restored key",
            )));
        }
        let store = self.0.store.clone();
        let info =
            blocking(move || store.restore(&who.actor, &r.blob, &r.kek, r.name.as_deref())).await?;
        Ok(Response::new(convert::key_info(&info)))
    }
}

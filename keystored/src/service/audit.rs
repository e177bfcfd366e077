//! `keystore.v1.Audit`: verify and export the trail (the keystore checks
//! the caller's role: security officer or auditor).

use super::{blocking, Shared};
use keystore_rpc::{convert, pb};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The service.
pub(crate) struct Audit(pub Arc<Shared>);

/// Entries sent per message batch in an export.
type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_server::Audit for Audit {
    async fn verify(&self, request: Request<pb::AuditVerifyRequest>) -> Reply<pb::AuditReport> {
        let who = self
            .0
            .authorize(&request, "audit verify")
            .map_err(super::status)?;
        let store = self.0.store.clone();
        let report = blocking(move || store.verify_audit(&who.actor)).await?;
        let (first_bad_seq, first_bad_reason) = report.first_bad.clone().unwrap_or_default();
        Ok(Response::new(pb::AuditReport {
            entries: report.entries,
            first_bad_seq,
            first_bad_reason,
            macs_checked: report.macs_checked(),
            warnings: report.warnings(),
            decommissioned_at: match &report.checked {
                keystore_api::AuditCoverage::ChainOnly { decommissioned_at } => {
                    decommissioned_at.clone()
                }
                _ => String::new(),
            },
            keys_with_mac_and_derive: report.keys_with_mac_and_derive.clone(),
        }))
    }

    type ExportStream = EntryStream;

    async fn export(&self, request: Request<pb::AuditExportRequest>) -> Reply<EntryStream> {
        let who = self
            .0
            .authorize(&request, "audit export")
            .map_err(super::status)?;
        let store = self.0.store.clone();
        let entries = blocking(move || store.export_audit(&who.actor)).await?;
        let stream = tokio_stream::iter(entries.into_iter().map(|e| Ok(convert::audit_entry(&e))));
        Ok(Response::new(Box::pin(stream)))
    }
}

//! # keystore-client
//!
//! The keystore's API over `keystored`'s Unix socket, for Rust callers that
//! do not own the store. Use calls have the signatures of
//! [`keystore_api::Keystore`]'s; lifecycle calls take no actor, because the
//! daemon identifies the caller by its OS identity (uid, gid, pid) and its
//! policy decides the role.
//!
//! Every error is a [`keystore_api::Error`] with the kind, component, key
//! and version the daemon had ([`keystore_rpc::error_of`]); a daemon that
//! cannot be reached is [`ErrorKind::Unavailable`](keystore_api::ErrorKind::Unavailable).
//! After a daemon restart the next call reconnects.
//!
//! ```no_run
//! use keystore_api::SignatureFormat;
//! let ks = keystore_client::Client::connect("/run/keystore/keystore.sock")?;
//! let sig = ks.sign("device-identity", b"telemetry", SignatureFormat::Der)?;
//! assert_eq!(ks.verify("device-identity", b"telemetry", &sig.bytes, None)?, sig.version);
//! # Ok::<(), keystore_api::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod direct;

use keystore_api::{
    AuditEntry, Error, KeyInfo, KeySpec, PublicKey, Result, RotationDue, SecretBytes, Signature,
    SignatureFormat,
};
use keystore_rpc::direct::Method;
use keystore_rpc::pb::audit_client::AuditClient;
use keystore_rpc::pb::key_use_client::KeyUseClient;
use keystore_rpc::pb::lifecycle_client::LifecycleClient;
use keystore_rpc::{convert, error_of, pb};
use std::future::Future;
use std::path::{Path, PathBuf};
use time::Duration;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroize;

pub use keystore_rpc::pb::AuditReport;

/// A connection to `keystored`. Calls block the calling thread; the client
/// may be shared between threads (calls through one client are served one
/// at a time: give each busy thread its own client).
pub struct Client {
    runtime: tokio::runtime::Runtime,
    direct: direct::DirectLink,
    channel: Channel,
    max_message: usize,
    socket: PathBuf,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .finish()
    }
}

/// The path of a `unix:PATH` (or `unix://PATH`) address, or a plain path.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    let path = address
        .strip_prefix("unix://")
        .or_else(|| address.strip_prefix("unix:"))
        .unwrap_or(address);
    if path.is_empty() || address.contains("://") && !address.starts_with("unix://") {
        return Err(Error::invalid_input(format!(
            "'{address}' is not a Unix socket address (unix:/run/keystore/keystore.sock)"
        )));
    }
    Ok(PathBuf::from(path))
}

pub(crate) fn unavailable(socket: &Path, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "cannot reach keystored at {}: {e}",
        socket.display()
    ))
    .in_component(keystore_api::Component::Service)
}

impl Client {
    /// Connects to the daemon listening on `socket` (a path, or
    /// `unix:PATH`).
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](keystore_api::ErrorKind::Unavailable)
    /// when nothing answers there;
    /// [`ErrorKind::InvalidInput`](keystore_api::ErrorKind::InvalidInput)
    /// for an address that is not a Unix socket.
    pub fn connect(socket: impl AsRef<str>) -> Result<Client> {
        let socket = socket_path(socket.as_ref())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable(&socket, e))?;
        let path = socket.clone();
        let channel = runtime
            .block_on(async move {
                // The URI is required by the API and unused: the connector
                // always dials the socket.
                Endpoint::from_static("http://keystored.invalid")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|e| unavailable(&socket, source_text(&e)))?;
        Ok(Client {
            direct: direct::DirectLink::new(socket.clone(), keystore_rpc::DEFAULT_MAX_MESSAGE_LEN),
            runtime,
            channel,
            max_message: keystore_rpc::DEFAULT_MAX_MESSAGE_LEN,
            socket,
        })
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call<T, F>(&self, f: impl FnOnce(Channel) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(f(self.channel.clone()))
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(&s))
    }

    /// The keystore error of a failed call: the daemon's own, or
    /// [`ErrorKind::Unavailable`](keystore_api::ErrorKind::Unavailable)
    /// when the connection failed under the call (the daemon stopped or
    /// crashed): then whether the call took effect is unknown.
    fn error(&self, status: &tonic::Status) -> Error {
        use std::error::Error as _;
        let from_daemon = status.metadata().get("keystore-error-kind").is_some();
        let broken = matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
        );
        if !from_daemon && broken && status.source().is_some() {
            return unavailable(
                &self.socket,
                format!(
                    "the connection failed during the call: {}",
                    source_text(status)
                ),
            );
        }
        error_of(status)
    }

    /// A read-only `KeyUse` call over gRPC (list, info), made again once if
    /// the connection broke under it (the daemon restarted): it changes no
    /// state, so repeating it is safe, and the second attempt reconnects.
    fn read_call<R, T, F>(&self, req: R, f: impl Fn(KeyUseClient<Channel>, R) -> F) -> Result<T>
    where
        R: Clone,
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.call(|c| f(self.key_use(c), req.clone())) {
            Err(e) if e.kind() == keystore_api::ErrorKind::Unavailable => {
                self.call(|c| f(self.key_use(c), req))
            }
            r => r,
        }
    }

    /// A key use over the direct framing, made again once if the connection
    /// broke under it (the daemon restarted): a use changes no state, so
    /// repeating it is safe, and the second attempt dials again.
    fn use_direct<Q: prost::Message, R: prost::Message + Default>(
        &self,
        method: Method,
        request: &Q,
    ) -> Result<R> {
        match self.direct.call(method, request) {
            Err(e) if e.kind() == keystore_api::ErrorKind::Unavailable => {
                self.direct.call(method, request)
            }
            r => r,
        }
    }

    fn key_use(&self, c: Channel) -> KeyUseClient<Channel> {
        KeyUseClient::new(c)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message)
    }

    fn lifecycle(&self, c: Channel) -> LifecycleClient<Channel> {
        LifecycleClient::new(c)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message)
    }

    /// Signs `message` with the active version of `name`
    /// ([`Keystore::sign`](keystore_api::Keystore::sign)).
    pub fn sign(&self, name: &str, message: &[u8], format: SignatureFormat) -> Result<Signature> {
        let req = pb::SignRequest {
            name: name.into(),
            message: message.to_vec(),
            format: convert::format(format) as i32,
        };
        let r: pb::SignResponse = self.use_direct(Method::Sign, &req)?;
        Ok(Signature {
            version: r.version,
            format: convert::format_of(r.format()),
            bytes: r.signature,
        })
    }

    /// Verifies a signature; returns the version that verified it
    /// ([`Keystore::verify`](keystore_api::Keystore::verify)).
    pub fn verify(
        &self,
        name: &str,
        message: &[u8],
        signature: &[u8],
        version: Option<u32>,
    ) -> Result<u32> {
        let req = pb::VerifyRequest {
            name: name.into(),
            message: message.to_vec(),
            signature: signature.to_vec(),
            version,
        };
        Ok(self
            .use_direct::<_, pb::VerifyResponse>(Method::Verify, &req)?
            .version)
    }

    /// HMAC-SHA256 of `data` ([`Keystore::mac`](keystore_api::Keystore::mac)).
    pub fn mac(&self, name: &str, data: &[u8]) -> Result<[u8; 32]> {
        let req = pb::MacRequest {
            name: name.into(),
            data: data.to_vec(),
        };
        let tag = self
            .use_direct::<_, pb::MacResponse>(Method::Mac, &req)?
            .tag;
        tag.try_into()
            .map_err(|_| Error::integrity("keystored returned a MAC that is not 32 bytes"))
    }

    /// Checks an HMAC-SHA256 tag ([`Keystore::verify_mac`](keystore_api::Keystore::verify_mac)).
    pub fn verify_mac(&self, name: &str, data: &[u8], tag: &[u8]) -> Result<()> {
        let req = pb::VerifyMacRequest {
            name: name.into(),
            data: data.to_vec(),
            tag: tag.to_vec(),
        };
        self.use_direct::<_, pb::VerifyMacResponse>(Method::VerifyMac, &req)
            .map(|_| ())
    }

    /// HKDF-SHA256 keyed by `name`; the output is secret and zeroized on drop
    /// ([`Keystore::derive_hkdf_sha256`](keystore_api::Keystore::derive_hkdf_sha256)).
    pub fn derive_hkdf_sha256(
        &self,
        name: &str,
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let req = pb::DeriveRequest {
            name: name.into(),
            salt: salt.to_vec(),
            info: info.to_vec(),
            length: u32::try_from(len).map_err(|_| Error::invalid_input("length is too large"))?,
        };
        let mut r: pb::DeriveResponse = self.use_direct(Method::Derive, &req)?;
        let okm = SecretBytes::from_slice(&r.okm);
        r.okm.zeroize();
        Ok(okm)
    }

    /// ECDH with the ecdh-p256 key `name` and `peer_public_key`, then the
    /// one-step KDF of SP 800-56C (SHA-256); the output is secret and zeroized
    /// on drop ([`Keystore::agree_sha256_kdf`](keystore_api::Keystore::agree_sha256_kdf)).
    pub fn agree_sha256_kdf(
        &self,
        name: &str,
        peer_public_key: &[u8],
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let req = pb::AgreeRequest {
            name: name.into(),
            peer_public_key: peer_public_key.to_vec(),
            fixed_info: fixed_info.to_vec(),
            length: u32::try_from(len).map_err(|_| Error::invalid_input("length is too large"))?,
        };
        let mut r: pb::AgreeResponse = self.use_direct(Method::Agree, &req)?;
        let okm = SecretBytes::from_slice(&r.okm);
        r.okm.zeroize();
        Ok(okm)
    }

    /// AES-256-GCM into a versioned envelope ([`Keystore::encrypt`](keystore_api::Keystore::encrypt)).
    pub fn encrypt(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let req = pb::EncryptRequest {
            name: name.into(),
            plaintext: plaintext.to_vec(),
            aad: aad.to_vec(),
        };
        let r: Result<pb::EncryptResponse> = self.use_direct(Method::Encrypt, &req);
        Ok(r?.envelope)
    }

    /// Opens an envelope; the plaintext is zeroized on drop
    /// ([`Keystore::decrypt`](keystore_api::Keystore::decrypt)).
    pub fn decrypt(&self, name: &str, envelope: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let req = pb::DecryptRequest {
            name: name.into(),
            envelope: envelope.to_vec(),
            aad: aad.to_vec(),
        };
        let mut r: pb::DecryptResponse = self.use_direct(Method::Decrypt, &req)?;
        let plaintext = SecretBytes::from_slice(&r.plaintext);
        r.plaintext.zeroize();
        Ok(plaintext)
    }

    /// The public key of the active version ([`Keystore::public_key`](keystore_api::Keystore::public_key)).
    pub fn public_key(&self, name: &str) -> Result<PublicKey> {
        let req = pb::PublicKeyRequest { name: name.into() };
        let r: pb::PublicKeyResponse = self.use_direct(Method::PublicKey, &req)?;
        PublicKey::from_spki_der(r.algorithm.parse()?, r.spki_der)
    }

    /// Live keys the caller may see ([`Keystore::list`](keystore_api::Keystore::list)).
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let r = self.read_call(
            pb::ListRequest {},
            |mut c, req| async move { c.list(req).await },
        )?;
        r.keys.iter().map(convert::key_info_of).collect()
    }

    /// One key with every version ([`Keystore::info`](keystore_api::Keystore::info)).
    pub fn info(&self, name: &str) -> Result<KeyInfo> {
        let req = pb::InfoRequest { name: name.into() };
        convert::key_info_of(&self.read_call(req, |mut c, req| async move { c.info(req).await })?)
    }

    /// Generates a key ([`Keystore::create`](keystore_api::Keystore::create)).
    pub fn create(&self, name: &str, spec: KeySpec) -> Result<KeyInfo> {
        let req = pb::CreateRequest {
            name: name.into(),
            algorithm: spec.algorithm.to_string(),
            usages: spec.usages.to_string(),
            backup_eligible: spec.backup_eligible,
            cryptoperiod: spec.cryptoperiod.map(convert::duration),
            encryption_limit: spec.encryption_limit,
        };
        convert::key_info_of(&self.call(|c| async move { self.lifecycle(c).create(req).await })?)
    }

    /// Imports a 32-byte secret ([`Keystore::import`](keystore_api::Keystore::import)).
    pub fn import(&self, name: &str, spec: KeySpec, secret: &SecretBytes) -> Result<KeyInfo> {
        let mut req = pb::ImportRequest {
            name: name.into(),
            algorithm: spec.algorithm.to_string(),
            secret: secret.expose().to_vec(),
            usages: spec.usages.to_string(),
            encryption_limit: spec.encryption_limit,
        };
        let r = self.call(|c| {
            let req = std::mem::take(&mut req);
            async move { self.lifecycle(c).import(req).await }
        });
        req.secret.zeroize();
        convert::key_info_of(&r?)
    }

    /// A new active version; the old one verifies and decrypts for `grace`
    /// ([`Keystore::rotate`](keystore_api::Keystore::rotate)).
    pub fn rotate(&self, name: &str, grace: Duration) -> Result<KeyInfo> {
        let req = pb::RotateRequest {
            name: name.into(),
            grace: Some(convert::duration(grace)),
        };
        convert::key_info_of(&self.call(|c| async move { self.lifecycle(c).rotate(req).await })?)
    }

    /// Suspends a version ([`Keystore::suspend`](keystore_api::Keystore::suspend)).
    pub fn suspend(&self, name: &str, version: u32) -> Result<()> {
        let req = pb::VersionRequest {
            name: name.into(),
            version,
        };
        self.call(|c| async move { self.lifecycle(c).suspend(req).await })
            .map(|_| ())
    }

    /// Resumes a suspended version ([`Keystore::resume`](keystore_api::Keystore::resume)).
    pub fn resume(&self, name: &str, version: u32) -> Result<()> {
        let req = pb::VersionRequest {
            name: name.into(),
            version,
        };
        self.call(|c| async move { self.lifecycle(c).resume(req).await })
            .map(|_| ())
    }

    /// Marks a version compromised ([`Keystore::revoke`](keystore_api::Keystore::revoke)).
    pub fn revoke(&self, name: &str, version: u32, reason: &str) -> Result<()> {
        let req = pb::RevokeRequest {
            name: name.into(),
            version,
            reason: reason.into(),
        };
        self.call(|c| async move { self.lifecycle(c).revoke(req).await })
            .map(|_| ())
    }

    /// Destroys every version ([`Keystore::destroy`](keystore_api::Keystore::destroy)).
    pub fn destroy(&self, name: &str) -> Result<()> {
        let req = pb::DestroyRequest { name: name.into() };
        self.call(|c| async move { self.lifecycle(c).destroy(req).await })
            .map(|_| ())
    }

    /// Destroys versions whose grace has ended ([`Keystore::sweep`](keystore_api::Keystore::sweep)).
    pub fn sweep(&self) -> Result<Vec<(String, u32)>> {
        let r = self.call(|c| async move { self.lifecycle(c).sweep(pb::SweepRequest {}).await })?;
        Ok(r.destroyed
            .into_iter()
            .map(|k| (k.name, k.version))
            .collect())
    }

    /// Keys whose cryptoperiod has ended, now ([`Keystore::due`](keystore_api::Keystore::due)).
    pub fn due(&self) -> Result<Vec<RotationDue>> {
        let req = pb::DueRequest {
            rotate: false,
            grace: None,
        };
        let r = self.call(|c| async move { self.lifecycle(c).due(req).await })?;
        r.due.iter().map(convert::rotation_due_of).collect()
    }

    /// Rotates every due key; returns their names
    /// ([`Keystore::rotate_due`](keystore_api::Keystore::rotate_due)).
    pub fn rotate_due(&self, grace: Duration) -> Result<Vec<String>> {
        let req = pb::DueRequest {
            rotate: true,
            grace: Some(convert::duration(grace)),
        };
        Ok(self
            .call(|c| async move { self.lifecycle(c).due(req).await })?
            .rotated)
    }

    /// A wrapped backup ([`Keystore::backup`](keystore_api::Keystore::backup)).
    pub fn backup(&self, name: &str, kek_name: &str) -> Result<Vec<u8>> {
        let req = pb::BackupRequest {
            name: name.into(),
            kek: kek_name.into(),
        };
        Ok(self
            .call(|c| async move { self.lifecycle(c).backup(req).await })?
            .blob)
    }

    /// Restores a wrapped backup ([`Keystore::restore`](keystore_api::Keystore::restore)).
    pub fn restore(&self, blob: &[u8], kek_name: &str, name: Option<&str>) -> Result<KeyInfo> {
        let req = pb::RestoreRequest {
            blob: blob.to_vec(),
            kek: kek_name.into(),
            name: name.map(str::to_string),
        };
        convert::key_info_of(&self.call(|c| async move { self.lifecycle(c).restore(req).await })?)
    }

    /// Verifies the audit trail ([`Keystore::verify_audit`](keystore_api::Keystore::verify_audit)).
    pub fn verify_audit(&self) -> Result<AuditReport> {
        self.call(|c| async move {
            AuditClient::new(c)
                .max_decoding_message_size(self.max_message)
                .verify(pb::AuditVerifyRequest {})
                .await
        })
    }

    /// Every audit entry, oldest first ([`Keystore::export_audit`](keystore_api::Keystore::export_audit)).
    pub fn export_audit(&self) -> Result<Vec<AuditEntry>> {
        let entries = self.runtime.block_on(async {
            let mut stream = AuditClient::new(self.channel.clone())
                .max_decoding_message_size(self.max_message)
                .export(pb::AuditExportRequest {})
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(e) = stream.message().await? {
                out.push(e);
            }
            Ok::<_, tonic::Status>(out)
        });
        entries
            .map_err(|s| self.error(&s))?
            .iter()
            .map(convert::audit_entry_of)
            .collect()
    }
}

/// An error and its sources on one line.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

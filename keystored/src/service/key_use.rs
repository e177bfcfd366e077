//! `keystore.v1.KeyUse`: key use for the application role, public facts for
//! every role; only keys the caller may see. Each use is one function of
//! the caller and the request message, served both as gRPC and over the
//! direct framing ([`crate::direct`]).

use super::{blocking, Shared};
use crate::peer::Caller;
use keystore_api::{Result, SecretBytes};
use keystore_rpc::{convert, pb, status_of};
use std::sync::Arc;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The caller of a connection, as [`Caller::of`] gives it.
pub(crate) type Peer<'a> = Option<&'a (Caller, String)>;

/// The service.
pub(crate) struct KeyUse(pub Arc<Shared>);

impl KeyUse {
    /// Admits a use of the key `name` for `what`: the application role, and
    /// a key the caller may see.
    fn admit_use(&self, peer: Peer<'_>, what: &str, name: &str) -> Result<()> {
        let who = self.0.authorize_peer(peer, what)?;
        self.0
            .require_application(&who, what, name)
            .and_then(|()| who.see(name))
    }

    /// Admits reading public facts of `name`: any role, a visible key.
    fn admit_read(&self, peer: Peer<'_>, what: &str, name: &str) -> Result<()> {
        self.0.authorize_peer(peer, what)?.see(name)
    }

    pub(crate) async fn sign(
        &self,
        peer: Peer<'_>,
        r: pb::SignRequest,
    ) -> Result<pb::SignResponse> {
        self.admit_use(peer, "sign", &r.name)?;
        let store = self.0.store.clone();
        let format = convert::format_of(r.format());
        let sig = self
            .0
            .key_use(move || store.sign(&r.name, &r.message, format))
            .await?;
        Ok(pb::SignResponse {
            version: sig.version,
            format: convert::format(sig.format) as i32,
            signature: sig.bytes,
        })
    }

    pub(crate) async fn verify(
        &self,
        peer: Peer<'_>,
        r: pb::VerifyRequest,
    ) -> Result<pb::VerifyResponse> {
        self.admit_read(peer, "verify", &r.name)?;
        let store = self.0.store.clone();
        let version = self
            .0
            .key_use(move || store.verify(&r.name, &r.message, &r.signature, r.version))
            .await?;
        Ok(pb::VerifyResponse { version })
    }

    pub(crate) async fn mac(&self, peer: Peer<'_>, r: pb::MacRequest) -> Result<pb::MacResponse> {
        self.admit_use(peer, "mac", &r.name)?;
        let store = self.0.store.clone();
        let tag = self.0.key_use(move || store.mac(&r.name, &r.data)).await?;
        Ok(pb::MacResponse { tag: tag.to_vec() })
    }

    pub(crate) async fn verify_mac(
        &self,
        peer: Peer<'_>,
        r: pb::VerifyMacRequest,
    ) -> Result<pb::VerifyMacResponse> {
        self.admit_use(peer, "verify-mac", &r.name)?;
        let store = self.0.store.clone();
        self.0
            .key_use(move || store.verify_mac(&r.name, &r.data, &r.tag))
            .await?;
        Ok(pb::VerifyMacResponse {})
    }

    pub(crate) async fn derive(
        &self,
        peer: Peer<'_>,
        r: pb::DeriveRequest,
    ) -> Result<pb::DeriveResponse> {
        self.admit_use(peer, "derive", &r.name)?;
        let store = self.0.store.clone();
        let okm = self
            .0
            .key_use(move || store.derive_hkdf_sha256(&r.name, &r.salt, &r.info, r.length as usize))
            .await?;
        Ok(pb::DeriveResponse {
            okm: okm.expose().to_vec(),
        })
    }

    pub(crate) async fn agree(
        &self,
        peer: Peer<'_>,
        r: pb::AgreeRequest,
    ) -> Result<pb::AgreeResponse> {
        self.admit_use(peer, "agree", &r.name)?;
        let store = self.0.store.clone();
        let okm = self
            .0
            .key_use(move || {
                store.agree_sha256_kdf(
                    &r.name,
                    &r.peer_public_key,
                    &r.fixed_info,
                    r.length as usize,
                )
            })
            .await?;
        Ok(pb::AgreeResponse {
            okm: okm.expose().to_vec(),
        })
    }

    pub(crate) async fn encrypt(
        &self,
        peer: Peer<'_>,
        mut r: pb::EncryptRequest,
    ) -> Result<pb::EncryptResponse> {
        self.admit_use(peer, "encrypt", &r.name)?;
        // Zeroized when the call ends.
        let plaintext = SecretBytes::new(std::mem::take(&mut r.plaintext));
        let store = self.0.store.clone();
        let envelope = self
            .0
            .key_use(move || store.encrypt(&r.name, plaintext.expose(), &r.aad))
            .await?;
        Ok(pb::EncryptResponse { envelope })
    }

    pub(crate) async fn decrypt(
        &self,
        peer: Peer<'_>,
        r: pb::DecryptRequest,
    ) -> Result<pb::DecryptResponse> {
        self.admit_use(peer, "decrypt", &r.name)?;
        let store = self.0.store.clone();
        let plaintext = self
            .0
            .key_use(move || store.decrypt(&r.name, &r.envelope, &r.aad))
            .await?;
        Ok(pb::DecryptResponse {
            plaintext: plaintext.expose().to_vec(),
        })
    }

    pub(crate) async fn public_key(
        &self,
        peer: Peer<'_>,
        r: pb::PublicKeyRequest,
    ) -> Result<pb::PublicKeyResponse> {
        self.admit_read(peer, "public-key", &r.name)?;
        let store = self.0.store.clone();
        let pk = self.0.key_use(move || store.public_key(&r.name)).await?;
        Ok(pb::PublicKeyResponse {
            algorithm: pk.algorithm().to_string(),
            spki_der: pk.spki_der().to_vec(),
        })
    }
}

/// A use's outcome as a gRPC reply.
fn reply<T>(r: Result<T>) -> Reply<T> {
    r.map(Response::new).map_err(|e| status_of(&e))
}

#[tonic::async_trait]
impl pb::key_use_server::KeyUse for KeyUse {
    async fn sign(&self, request: Request<pb::SignRequest>) -> Reply<pb::SignResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::sign(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Reply<pb::VerifyResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::verify(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn mac(&self, request: Request<pb::MacRequest>) -> Reply<pb::MacResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::mac(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn verify_mac(
        &self,
        request: Request<pb::VerifyMacRequest>,
    ) -> Reply<pb::VerifyMacResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::verify_mac(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn derive(&self, request: Request<pb::DeriveRequest>) -> Reply<pb::DeriveResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::derive(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn agree(&self, request: Request<pb::AgreeRequest>) -> Reply<pb::AgreeResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::agree(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Reply<pb::EncryptResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::encrypt(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Reply<pb::DecryptResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::decrypt(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn public_key(
        &self,
        request: Request<pb::PublicKeyRequest>,
    ) -> Reply<pb::PublicKeyResponse> {
        let peer = Caller::of(&request);
        reply(KeyUse::public_key(self, peer.as_deref(), request.into_inner()).await)
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Reply<pb::ListResponse> {
        let who = self.0.authorize(&request, "list").map_err(super::status)?;
        let store = self.0.store.clone();
        let keys = blocking(move || store.list()).await?;
        Ok(Response::new(pb::ListResponse {
            keys: keys
                .iter()
                .filter(|k| who.grant.may_see(&k.name))
                .map(convert::key_info)
                .collect(),
        }))
    }

    async fn info(&self, request: Request<pb::InfoRequest>) -> Reply<pb::KeyInfo> {
        let who = self.0.authorize(&request, "info").map_err(super::status)?;
        let name = request.into_inner().name;
        who.see(&name).map_err(super::status)?;
        let store = self.0.store.clone();
        let info = blocking(move || store.info(&name)).await?;
        Ok(Response::new(convert::key_info(&info)))
    }
}

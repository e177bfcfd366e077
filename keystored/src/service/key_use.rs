//! `keystore.v1.KeyUse`: key use for the application role, public facts for
//! every role; only keys the caller may see.

use super::{blocking, Shared};
use keystore_api::SecretBytes;
use keystore_rpc::{convert, pb};
use std::sync::Arc;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The service.
pub(crate) struct KeyUse(pub Arc<Shared>);

impl KeyUse {
    /// Admits a use of the key `name` for `what`: the application role, and
    /// a key the caller may see.
    fn admit_use<Q>(&self, request: &Request<Q>, what: &str, name: &str) -> Result<(), Status> {
        let who = self.0.authorize(request, what).map_err(super::status)?;
        self.0
            .require_application(&who, what, name)
            .and_then(|()| who.see(name))
            .map_err(super::status)
    }

    /// Admits reading public facts of `name`: any role, a visible key.
    fn admit_read<Q>(&self, request: &Request<Q>, what: &str, name: &str) -> Result<(), Status> {
        let who = self.0.authorize(request, what).map_err(super::status)?;
        who.see(name).map_err(super::status)
    }
}

#[tonic::async_trait]
impl pb::key_use_server::KeyUse for KeyUse {
    async fn sign(&self, request: Request<pb::SignRequest>) -> Reply<pb::SignResponse> {
        self.admit_use(&request, "sign", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let format = convert::format_of(r.format());
        let sig = self
            .0
            .key_use(move || store.sign(&r.name, &r.message, format))
            .await?;
        Ok(Response::new(pb::SignResponse {
            version: sig.version,
            format: convert::format(sig.format) as i32,
            signature: sig.bytes,
        }))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Reply<pb::VerifyResponse> {
        self.admit_read(&request, "verify", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let version = self
            .0
            .key_use(move || store.verify(&r.name, &r.message, &r.signature, r.version))
            .await?;
        Ok(Response::new(pb::VerifyResponse { version }))
    }

    async fn mac(&self, request: Request<pb::MacRequest>) -> Reply<pb::MacResponse> {
        self.admit_use(&request, "mac", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let tag = self.0.key_use(move || store.mac(&r.name, &r.data)).await?;
        Ok(Response::new(pb::MacResponse { tag: tag.to_vec() }))
    }

    async fn verify_mac(
        &self,
        request: Request<pb::VerifyMacRequest>,
    ) -> Reply<pb::VerifyMacResponse> {
        self.admit_use(&request, "verify-mac", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        self.0
            .key_use(move || store.verify_mac(&r.name, &r.data, &r.tag))
            .await?;
        Ok(Response::new(pb::VerifyMacResponse {}))
    }

    async fn derive(&self, request: Request<pb::DeriveRequest>) -> Reply<pb::DeriveResponse> {
        self.admit_use(&request, "derive", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let okm = self
            .0
            .key_use(move || store.derive_hkdf_sha256(&r.name, &r.salt, &r.info, r.length as usize))
            .await?;
        Ok(Response::new(pb::DeriveResponse {
            okm: okm.expose().to_vec(),
        }))
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Reply<pb::EncryptResponse> {
        self.admit_use(&request, "encrypt", &request.get_ref().name)?;
        let mut r = request.into_inner();
        // Zeroized when the call ends.
        let plaintext = SecretBytes::new(std::mem::take(&mut r.plaintext));
        let store = self.0.store.clone();
        let envelope = self
            .0
            .key_use(move || store.encrypt(&r.name, plaintext.expose(), &r.aad))
            .await?;
        Ok(Response::new(pb::EncryptResponse { envelope }))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Reply<pb::DecryptResponse> {
        self.admit_use(&request, "decrypt", &request.get_ref().name)?;
        let r = request.into_inner();
        let store = self.0.store.clone();
        let plaintext = self
            .0
            .key_use(move || store.decrypt(&r.name, &r.envelope, &r.aad))
            .await?;
        Ok(Response::new(pb::DecryptResponse {
            plaintext: plaintext.expose().to_vec(),
        }))
    }

    async fn public_key(
        &self,
        request: Request<pb::PublicKeyRequest>,
    ) -> Reply<pb::PublicKeyResponse> {
        self.admit_read(&request, "public-key", &request.get_ref().name)?;
        let name = request.into_inner().name;
        let store = self.0.store.clone();
        let pk = self.0.key_use(move || store.public_key(&name)).await?;
        Ok(Response::new(pb::PublicKeyResponse {
            algorithm: pk.algorithm().to_string(),
            spki_der: pk.spki_der().to_vec(),
        }))
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
        self.admit_read(&request, "info", &request.get_ref().name)?;
        let name = request.into_inner().name;
        let store = self.0.store.clone();
        let info = blocking(move || store.info(&name)).await?;
        Ok(Response::new(convert::key_info(&info)))
    }
}

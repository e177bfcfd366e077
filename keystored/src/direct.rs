//! Serving a direct connection ([`keystore_rpc::direct`]): one key-use call
//! at a time, by the same functions as gRPC's `KeyUse`, for the caller the
//! connection's credentials name. A frame over the message limit, a body
//! that does not arrive within the call timeout, or an unknown method closes
//! the connection (after an `InvalidInput` failure where one can be sent).

use crate::connection::Connection;
use crate::service::key_use::KeyUse;
use keystore_api::{Error, Result};
use keystore_rpc::direct::{self, failure, frame, Method, FAILED, HEADER_LEN, OK};
use keystore_rpc::pb;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// The most bytes of a refused, too long request that are read and
/// discarded (the largest `limits.max_message_bytes`).
const MAX_DISCARD: usize = 64 * 1024 * 1024;

/// What serving direct connections needs.
#[derive(Clone)]
pub(crate) struct Direct {
    key_use: Arc<KeyUse>,
    max_message: usize,
    limit: Duration,
}

impl Direct {
    pub(crate) fn new(key_use: Arc<KeyUse>, max_message: usize, limit: Duration) -> Direct {
        Direct {
            key_use,
            max_message,
            limit,
        }
    }

    /// Serves `conn` until the peer closes it, breaks the framing, or the
    /// daemon stops (`stop` turns true): a call in flight is answered first.
    pub(crate) async fn serve(
        &self,
        mut conn: Connection,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let peer = conn.peer().0.clone();
        loop {
            let mut head = [0u8; HEADER_LEN];
            tokio::select! {
                r = conn.read_exact(&mut head) => if r.is_err() { return },
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
            let (len, tag) = direct::header(head);
            if len > self.max_message {
                let e = Error::invalid_input(format!(
                    "a {len}-byte request is over the daemon's {}-byte limit",
                    self.max_message
                ));
                let _ = conn.write_all(&frame(FAILED, &failure(&e))).await;
                // A caller still sending that frame reads the failure rather
                // than a broken pipe: its bytes are discarded, up to the
                // largest limit a daemon can have and within the call timeout.
                if len <= MAX_DISCARD {
                    let mut rest = (&mut conn).take(len as u64);
                    let mut sink = tokio::io::sink();
                    let discard = tokio::io::copy(&mut rest, &mut sink);
                    let _ = tokio::time::timeout(self.limit, discard).await;
                }
                return;
            }
            // Request bodies may hold plaintexts and secrets.
            let mut body = Zeroizing::new(vec![0u8; len]);
            match tokio::time::timeout(self.limit, conn.read_exact(&mut body)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let Some(method) = Method::of(tag) else {
                let e = Error::invalid_input(format!("unknown method {tag}"));
                let _ = conn.write_all(&frame(FAILED, &failure(&e))).await;
                return;
            };
            let reply = Zeroizing::new(match self.call(peer.as_deref(), method, &body).await {
                Ok(reply) if reply.len() <= self.max_message + HEADER_LEN => reply,
                Ok(_) => frame(
                    FAILED,
                    &failure(&Error::invalid_input(
                        "the response is over the daemon's message limit",
                    )),
                ),
                Err(e) => frame(FAILED, &failure(&e)),
            });
            if conn.write_all(&reply).await.is_err() {
                return;
            }
        }
    }

    /// Decodes the request of `method`, runs it, and frames the response.
    async fn call(
        &self,
        peer: Option<&(crate::peer::Caller, String)>,
        method: Method,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        fn decode<M: Message + Default>(body: &[u8]) -> Result<M> {
            M::decode(body).map_err(|e| Error::invalid_input(format!("malformed request: {e}")))
        }
        let k = &self.key_use;
        Ok(match method {
            Method::Sign => frame(OK, &k.sign(peer, decode::<pb::SignRequest>(body)?).await?),
            Method::Verify => frame(
                OK,
                &k.verify(peer, decode::<pb::VerifyRequest>(body)?).await?,
            ),
            Method::Mac => frame(OK, &k.mac(peer, decode::<pb::MacRequest>(body)?).await?),
            Method::VerifyMac => frame(
                OK,
                &k.verify_mac(peer, decode::<pb::VerifyMacRequest>(body)?)
                    .await?,
            ),
            Method::Derive => frame(
                OK,
                &k.derive(peer, decode::<pb::DeriveRequest>(body)?).await?,
            ),
            Method::Agree => frame(OK, &k.agree(peer, decode::<pb::AgreeRequest>(body)?).await?),
            Method::Encrypt => frame(
                OK,
                &k.encrypt(peer, decode::<pb::EncryptRequest>(body)?).await?,
            ),
            Method::Decrypt => frame(
                OK,
                &k.decrypt(peer, decode::<pb::DecryptRequest>(body)?).await?,
            ),
            Method::PublicKey => frame(
                OK,
                &k.public_key(peer, decode::<pb::PublicKeyRequest>(body)?)
                    .await?,
            ),
        })
    }
}

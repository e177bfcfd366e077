//! The client's side of the direct framing ([`keystore_rpc::direct`]): the
//! key-use calls over one plain Unix-socket connection, a call being one
//! write and one read. Dialled on first use, and again after it breaks.

use keystore_api::{Component, Error, Result};
use keystore_rpc::direct::{
    error_of_failure, frame, header, Method, FAILED, HEADER_LEN, MAGIC, OK,
};
use keystore_rpc::pb;
use prost::Message;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a call may wait for its answer before the connection is given
/// up (a device-backed sign takes far less).
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// The direct connection.
pub(crate) struct DirectLink {
    socket: PathBuf,
    max_message: usize,
    stream: Mutex<Option<UnixStream>>,
}

impl DirectLink {
    pub(crate) fn new(socket: PathBuf, max_message: usize) -> DirectLink {
        DirectLink {
            socket,
            max_message,
            stream: Mutex::new(None),
        }
    }

    /// Calls `method` with `request`. A broken connection is
    /// [`ErrorKind::Unavailable`](keystore_api::ErrorKind::Unavailable) and
    /// is dialled again by the next call.
    pub(crate) fn call<Q: Message, R: Message + Default>(
        &self,
        method: Method,
        request: &Q,
    ) -> Result<R> {
        let mut guard = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.exchange(&mut guard, method, request);
        if outcome.is_err() {
            *guard = None;
        }
        let (tag, body) = outcome.map_err(|e| crate::unavailable(&self.socket, e))?;
        let malformed = |e: prost::DecodeError| {
            *guard = None;
            Error::backend(Component::Service, "keystored sent a malformed response", e)
        };
        match tag {
            OK => R::decode(&body[..]).map_err(malformed),
            FAILED => Err(error_of_failure(
                &pb::Failure::decode(&body[..]).map_err(malformed)?,
            )),
            other => {
                *guard = None;
                Err(Error::backend_msg(
                    Component::Service,
                    format!("keystored sent an unknown response tag {other}"),
                ))
            }
        }
    }

    fn exchange<Q: Message>(
        &self,
        stream: &mut Option<UnixStream>,
        method: Method,
        request: &Q,
    ) -> std::io::Result<(u8, Zeroizing<Vec<u8>>)> {
        let mut s = match stream.take() {
            Some(s) => s,
            None => {
                let mut s = UnixStream::connect(&self.socket)?;
                s.set_read_timeout(Some(ANSWER_WAIT))?;
                s.write_all(MAGIC)?;
                s
            }
        };
        // Requests and answers may hold plaintexts and secrets.
        let out = Zeroizing::new(frame(method as u8, request));
        if let Err(e) = s.write_all(&out) {
            // The daemon may have refused the request (too long) and closed
            // while it was still being sent: its answer says why.
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            if matches!(e.kind(), BrokenPipe | ConnectionReset) {
                if let Ok(answer) = self.answer(&mut s) {
                    return Ok(answer);
                }
            }
            return Err(e);
        }
        let answer = self.answer(&mut s)?;
        *stream = Some(s);
        Ok(answer)
    }

    /// Reads one answer frame.
    fn answer(&self, s: &mut UnixStream) -> std::io::Result<(u8, Zeroizing<Vec<u8>>)> {
        let mut head = [0u8; HEADER_LEN];
        s.read_exact(&mut head)?;
        let (len, tag) = header(head);
        if len > self.max_message {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a {len}-byte answer is over the {}-byte limit",
                    self.max_message
                ),
            ));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        s.read_exact(&mut body)?;
        Ok((tag, body))
    }
}

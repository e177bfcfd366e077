//! The direct framing: the key-use calls without HTTP/2, on the same socket
//! (the format is in `proto/keystore/v1/keystore.proto`). A sequential
//! caller's round trip is then one write and one read each way.

use crate::pb;
use crate::status::code_of;
use keystore_api::{Component, Error, ErrorKind};

/// What a direct connection sends first, instead of the HTTP/2 preface.
pub const MAGIC: &[u8; 8] = b"KSDIRECT";

/// Bytes before a frame's body: its length (u32 BE) and its tag.
pub const HEADER_LEN: usize = 5;

/// A key-use call over the direct framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Method {
    Sign = 1,
    Verify = 2,
    Mac = 3,
    VerifyMac = 4,
    Derive = 5,
    Encrypt = 6,
    Decrypt = 7,
    PublicKey = 8,
    Agree = 9,
}

impl Method {
    /// The method of a request's tag.
    pub fn of(tag: u8) -> Option<Method> {
        Some(match tag {
            1 => Method::Sign,
            2 => Method::Verify,
            3 => Method::Mac,
            4 => Method::VerifyMac,
            5 => Method::Derive,
            6 => Method::Encrypt,
            7 => Method::Decrypt,
            8 => Method::PublicKey,
            9 => Method::Agree,
            _ => return None,
        })
    }
}

/// The response tag of a success.
pub const OK: u8 = 0;
/// The response tag of a [`pb::Failure`].
pub const FAILED: u8 = 1;

/// A frame: header, then `body` encoded.
pub fn frame(tag: u8, body: &impl prost::Message) -> Vec<u8> {
    let len = body.encoded_len() + 1;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(tag);
    body.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// A frame header: the body's length (the tag excluded) and the tag.
pub fn header(h: [u8; HEADER_LEN]) -> (usize, u8) {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    (len.saturating_sub(1), h[4])
}

/// An error as a [`pb::Failure`].
pub fn failure(e: &Error) -> pb::Failure {
    pb::Failure {
        code: code_of(e.kind()) as i32,
        kind: e.kind().as_str().to_string(),
        component: e
            .component()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        key: e.key().map(str::to_string),
        version: e.version(),
        message: e.detail().to_string(),
    }
}

/// The error a [`pb::Failure`] stands for.
pub fn error_of_failure(f: &pb::Failure) -> Error {
    let kind = ErrorKind::from_name(&f.kind)
        .unwrap_or_else(|| crate::kind_of(tonic::Code::from_i32(f.code)));
    let mut e = Error::new(kind, f.message.clone());
    if let Some(c) = Component::from_name(&f.component) {
        e = e.in_component(c);
    }
    if let Some(k) = &f.key {
        e = e.with_key(k.clone());
    }
    if let Some(v) = f.version {
        e = e.with_version(v);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_failures_round_trip() {
        let req = pb::SignRequest {
            name: "k".into(),
            message: vec![7; 300],
            format: 0,
        };
        let f = frame(Method::Sign as u8, &req);
        let (len, tag) = header(f[..HEADER_LEN].try_into().expect("header"));
        assert_eq!(
            (len, Method::of(tag)),
            (f.len() - HEADER_LEN, Some(Method::Sign))
        );
        let back: pb::SignRequest = prost::Message::decode(&f[HEADER_LEN..]).expect("decode");
        assert_eq!(back, req);
        for kind in ErrorKind::ALL {
            let e = Error::new(kind, "m").with_key("k").with_version(2);
            let back = error_of_failure(&failure(&e));
            assert_eq!(
                (back.kind(), back.key(), back.version(), back.detail()),
                (kind, Some("k"), Some(2), "m")
            );
        }
        assert_eq!(Method::of(0), None);
        for m in 1..=9u8 {
            assert_eq!(Method::of(m).map(|m| m as u8), Some(m));
        }
        assert_eq!(Method::of(10), None);
    }
}

//! Who is calling: the peer credentials of the Unix socket (`SO_PEERCRED`,
//! taken by the kernel when the caller connected: uid, effective gid, pid)
//! and the executable of that pid, both read once per connection, when it
//! is accepted.

use std::sync::Arc;

/// A connected caller's OS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's effective gid.
    pub gid: u32,
    /// The caller's pid, when the kernel reported one.
    pub pid: Option<i32>,
    /// The caller's executable (`/proc/PID/exe`), when readable.
    pub exe: Option<String>,
}

/// The caller of a connection, as the request extensions carry it.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub(crate) Option<Arc<(Caller, String)>>);

impl Peer {
    /// The caller connected on `stream`: its credentials and executable,
    /// and its audit actor id. `None` when the kernel reported none.
    pub(crate) fn of_stream(stream: &tokio::net::UnixStream) -> Peer {
        Peer(stream.peer_cred().ok().map(|cred| {
            let pid = cred.pid();
            let exe = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
            let caller = Caller {
                uid: cred.uid(),
                gid: cred.gid(),
                pid,
                exe: exe.map(|e| e.to_string_lossy().into_owned()),
            };
            let id = caller.actor_id();
            Arc::new((caller, id))
        }))
    }
}

impl Caller {
    /// The caller of a request and its actor id, from its connection.
    /// `None` when the transport carried no credentials (never on a Unix
    /// socket).
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Option<Arc<(Caller, String)>> {
        request.extensions().get::<Peer>()?.0.clone()
    }

    /// The caller as an audit actor id: `uid=U,pid=P,exe=PATH`, at most 64
    /// printable ASCII characters (the executable shortened to its file name,
    /// then cut, when the path does not fit).
    pub fn actor_id(&self) -> String {
        let head = match self.pid {
            Some(p) => format!("uid={},pid={p}", self.uid),
            None => format!("uid={}", self.uid),
        };
        let Some(exe) = &self.exe else { return head };
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != ',' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let room = 64 - head.len() - ",exe=".len();
        let full = clean(exe);
        let short = if full.len() <= room {
            full
        } else {
            let base = clean(exe.rsplit('/').next().unwrap_or(exe));
            base.chars().take(room).collect()
        };
        format!("{head},exe={short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids_fit_the_audit_trail() {
        let mut c = Caller {
            uid: 1001,
            gid: 1001,
            pid: Some(4242),
            exe: Some("/usr/bin/gatewayd".into()),
        };
        assert_eq!(c.actor_id(), "uid=1001,pid=4242,exe=/usr/bin/gatewayd");
        c.exe = Some(format!("/{}/my gateway,d", "x".repeat(80)));
        let id = c.actor_id();
        assert!(id.len() <= 64 && id.ends_with("exe=my_gateway_d"), "{id}");
        c.exe = Some(format!("/opt/{}", "y".repeat(200)));
        let id = c.actor_id();
        assert!(id.len() <= 64, "{id}");
        assert!(keystore_api::Actor::new(&id, keystore_api::Role::Application).is_ok());
        c.exe = None;
        c.pid = None;
        assert_eq!(c.actor_id(), "uid=1001");
    }
}

//! Readiness and state for systemd (`Type=notify`): a datagram to
//! `NOTIFY_SOCKET` when it is set, nothing otherwise.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
/// Failures are reported on stderr and otherwise ignored: the daemon serves
/// whether or not systemd listens.
pub(crate) fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = result {
        eprintln!("keystored: could not notify the service manager ({state}): {e}");
    }
}

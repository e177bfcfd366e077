//! Accepted connections and what bounds them: at most `max_connections`
//! open at once (past that the daemon stops accepting and new callers wait
//! in the listen backlog), and two deadlines so that a peer cannot hold a
//! slot or the memory of a response by doing nothing:
//!
//! - the HTTP/2 client preface must arrive within the call timeout of the
//!   accept;
//! - a write the peer does not drain (it stopped reading the socket) may
//!   stall for at most the call timeout; then the connection is closed,
//!   which frees its buffers and its slot.

use crate::peer::Peer;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113, 3.4), in bytes.
const PREFACE_LEN: usize = 24;

type Slot = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

/// The stream of accepted connections served by tonic.
pub(crate) struct Incoming {
    listener: UnixListener,
    slots: Arc<Semaphore>,
    pending: Option<Slot>,
    limit: Duration,
}

impl Incoming {
    /// Accepts on `listener`, at most `max` connections open at once, each
    /// with the deadlines of `limit`.
    pub(crate) fn new(listener: UnixListener, max: usize, limit: Duration) -> Self {
        Incoming {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            pending: None,
            limit,
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let slots = this.slots.clone();
            let fut = this.pending.get_or_insert_with(|| {
                Box::pin(async move { slots.acquire_owned().await.expect("never closed") })
            });
            let permit = match fut.as_mut().poll(cx) {
                Poll::Ready(p) => p,
                Poll::Pending => return Poll::Pending,
            };
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    this.pending = None;
                    return Poll::Ready(Some(Ok(Connection::new(stream, permit, this.limit))));
                }
                Poll::Ready(Err(e)) => {
                    // Out of descriptors, or a connection reset before
                    // accept: report it, wait a little, keep serving.
                    eprintln!("keystored: accept failed: {e}");
                    this.pending = Some(Box::pin(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        permit
                    }));
                }
                Poll::Pending => {
                    // Keep the slot until a connection arrives.
                    this.pending = Some(Box::pin(std::future::ready(permit)));
                    return Poll::Pending;
                }
            }
        }
    }
}

/// An accepted connection holding one of the slots.
pub(crate) struct Connection {
    stream: UnixStream,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
    limit: Duration,
    /// Bytes of the preface still to come, and the deadline for them.
    preface_left: usize,
    preface_deadline: Option<Pin<Box<Sleep>>>,
    /// Set while a write is stalled: when the peer must have read by.
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn new(stream: UnixStream, slot: OwnedSemaphorePermit, limit: Duration) -> Self {
        Connection {
            peer: Peer::of_stream(&stream),
            stream,
            _slot: slot,
            limit,
            preface_left: PREFACE_LEN,
            preface_deadline: Some(Box::pin(tokio::time::sleep(limit))),
            write_deadline: None,
        }
    }

    /// A write that made no progress: pending until the deadline, then an
    /// error that closes the connection.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome of a write: progress clears the stall deadline.
    fn wrote<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.preface_left == 0 {
            return r;
        }
        match r {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                this.preface_left = this.preface_left.saturating_sub(read);
                if this.preface_left == 0 || read == 0 {
                    this.preface_deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.preface_deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no HTTP/2 preface within {} s", this.limit.as_secs()),
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.wrote(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

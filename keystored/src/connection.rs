//! Accepted connections and what bounds them: at most `max_connections`
//! open at once (past that the daemon stops accepting and new callers wait
//! in the listen backlog), and two deadlines so that a peer cannot hold a
//! slot or the memory of a response by doing nothing:
//!
//! - the opening bytes (the HTTP/2 client preface, or the direct framing's
//!   magic) must arrive within the call timeout of the accept;
//! - a write the peer does not drain (it stopped reading the socket) may
//!   stall for at most the call timeout; then the connection is closed,
//!   which frees its buffers and its slot.

use crate::peer::Peer;
use keystore_rpc::direct::MAGIC;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113, 3.4), in bytes.
const PREFACE_LEN: usize = 24;

/// The accepting side of the socket: a task that accepts, tells a direct
/// connection from an HTTP/2 one by its first bytes, serves the direct ones
/// itself ([`crate::direct`]) and hands the others to tonic.
pub(crate) struct Acceptor {
    task: tokio::task::JoinHandle<()>,
    slots: Arc<Semaphore>,
    max: u32,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Acceptor {
    /// Starts accepting on `listener`: at most `max` connections open at
    /// once, each with the deadlines of `limit`. Returns the acceptor and
    /// the stream of HTTP/2 connections for tonic.
    pub(crate) fn start(
        listener: UnixListener,
        max: usize,
        limit: Duration,
        direct: crate::direct::Direct,
    ) -> (Acceptor, ReceiverStream<io::Result<Connection>>) {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let slots = Arc::new(Semaphore::new(max as usize));
        let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let accepting = slots.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = accepting.clone().acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before
                        // accept: report it, wait a little, keep serving.
                        eprintln!("keystored: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (grpc_tx, direct, stop_rx) = (grpc_tx.clone(), direct.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + limit;
                    let mut conn = Connection::new(stream, slot, limit, deadline);
                    match conn.opening().await {
                        Opening::Direct => direct.serve(conn, stop_rx).await,
                        Opening::Http2 => {
                            let _ = grpc_tx.send(Ok(conn)).await;
                        }
                        Opening::Closed => {}
                    }
                });
            }
        });
        let acceptor = Acceptor {
            task,
            slots,
            max,
            stop,
        };
        (acceptor, ReceiverStream::new(grpc_rx))
    }

    /// Stops accepting, and tells direct connections to close once their
    /// call in flight is answered.
    pub(crate) fn stop(&self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }

    /// Waits, at most `within`, until every connection has closed.
    pub(crate) async fn drained(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.slots.acquire_many(self.max))
            .await
            .is_ok()
    }
}

/// How a connection opened.
enum Opening {
    /// With [`keystore_rpc::direct::MAGIC`].
    Direct,
    /// With anything else: HTTP/2 (or garbage, which tonic refuses).
    Http2,
    /// Closed, or silent past the deadline.
    Closed,
}

/// An accepted connection holding one of the slots.
pub(crate) struct Connection {
    stream: UnixStream,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
    limit: Duration,
    /// The opening bytes read to tell the protocol, served again first.
    replay: Vec<u8>,
    /// Bytes of the preface still to come, and the deadline for them.
    preface_left: usize,
    preface_deadline: Option<Pin<Box<Sleep>>>,
    /// Set while a write is stalled: when the peer must have read by.
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn new(
        stream: UnixStream,
        slot: OwnedSemaphorePermit,
        limit: Duration,
        deadline: Instant,
    ) -> Self {
        Connection {
            peer: Peer::of_stream(&stream),
            stream,
            _slot: slot,
            limit,
            replay: Vec::new(),
            preface_left: PREFACE_LEN,
            preface_deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            write_deadline: None,
        }
    }

    /// The caller on the other end.
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Reads the opening bytes (within the preface deadline) and tells the
    /// protocol; an HTTP/2 connection gets them served again.
    async fn opening(&mut self) -> Opening {
        let mut first = [0u8; MAGIC.len()];
        let mut got = 0;
        while got < first.len() {
            match self.read(&mut first[got..]).await {
                Ok(0) | Err(_) => return Opening::Closed,
                Ok(n) => got += n,
            }
            if first[..got] != MAGIC[..got] {
                break;
            }
        }
        if got == MAGIC.len() && first == *MAGIC {
            self.preface_left = 0;
            self.preface_deadline = None;
            return Opening::Direct;
        }
        self.replay = first[..got].to_vec();
        // The bytes replayed count once, when tonic reads them.
        self.preface_left = PREFACE_LEN;
        Opening::Http2
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
        let r = if this.replay.is_empty() {
            Pin::new(&mut this.stream).poll_read(cx, buf)
        } else {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.drain(..n);
            Poll::Ready(Ok(()))
        };
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

//! TURN over TCP and TLS: accept, cut frames out of the byte stream
//! (RFC 8656 §12.5), hand them to the core, write what it answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_turn::{FiveTuple, Transport, stream_frame_len};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

use super::driver::{Shared, StreamTx, unix_secs};
use super::per_ip::ConnectionsPerSource;

/// Frames queued for one stream client before new ones are dropped (and
/// `driver::STREAM_QUEUE_BYTES` bounds their bytes).
const STREAM_QUEUE: usize = 512;
/// Time for a TLS handshake (within the allocation deadline below).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer; a frame is at most 4 + 65535 + padding bytes.
const READ_BUFFER: usize = 128 * 1024;
/// A connection starts with a small buffer and grows it only for a frame
/// that needs more, so idle or unauthenticated connections stay cheap.
const FIRST_READ_BUFFER: usize = 4 * 1024;
/// At shutdown (or once its reading has ended), how long a connection may
/// take to write what is queued for it and see the client's end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a stream listener serves.
#[derive(Clone)]
pub(super) struct StreamContext {
    pub(super) shared: Arc<Shared>,
    pub(super) connections: Arc<Semaphore>,
    pub(super) per_source: Arc<ConnectionsPerSource>,
    /// A connection silent for this long is closed.
    pub(super) idle_timeout: Duration,
    /// A connection without an allocation this long after it was accepted
    /// (or after it lost its allocation) is closed, whatever it sends: an
    /// allocation's refreshes keep a real client busy, but nothing should
    /// hold a connection slot by trickling bytes.
    pub(super) allocate_within: Duration,
}

/// Accepts TCP (or, with `tls`, TLS) clients until shutdown.
pub(super) async fn accept_loop(
    ctx: StreamContext,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    let shutdown = ctx.shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "turn: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "turn: connection limit reached");
            continue;
        };
        let Some(slot) = ctx.per_source.admit(client.ip()) else {
            tracing::debug!(%client, "turn: connection limit per source reached");
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        ctx.shared.tasks.clone().spawn(async move {
            let _held = (permit, slot);
            serve(ctx, stream, client, server, tls, accepted_at).await;
        });
    }
}

/// TURN over TLS for connections that another listener accepted and
/// handshook: the one TLS port shared with HTTPS (PROTOCOL.md §8). The
/// connection counts against this service's caps from here on.
#[derive(Clone)]
pub struct TlsHandoff {
    ctx: StreamContext,
}

impl TlsHandoff {
    pub(super) fn new(ctx: StreamContext) -> Self {
        Self { ctx }
    }

    /// Serves `stream` (TLS already done, any bytes already read put back
    /// in front) as TURN over TLS until it closes. `accepted_at` is when
    /// its TCP connection was accepted: the allocation deadline counts
    /// from there, handshake included, as on TURN's own TLS listener.
    pub async fn serve<S>(
        &self,
        stream: S,
        client: SocketAddr,
        server: SocketAddr,
        accepted_at: Instant,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Ok(_permit) = self.ctx.connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "turn: connection limit reached");
            return;
        };
        let Some(_slot) = self.ctx.per_source.admit(client.ip()) else {
            tracing::debug!(%client, "turn: connection limit per source reached");
            return;
        };
        let ft = FiveTuple {
            transport: Transport::Tls,
            client,
            server,
        };
        run_connection(self.ctx.clone(), stream, ft, accepted_at).await;
    }
}

async fn serve(
    ctx: StreamContext,
    stream: TcpStream,
    client: SocketAddr,
    server: SocketAddr,
    tls: Option<TlsAcceptor>,
    accepted_at: Instant,
) {
    match tls {
        None => {
            let ft = FiveTuple {
                transport: Transport::Tcp,
                client,
                server,
            };
            run_connection(ctx, stream, ft, accepted_at).await;
        }
        Some(acceptor) => {
            // The handshake's time counts against the allocation deadline.
            let limit = HANDSHAKE_TIMEOUT.min(ctx.allocate_within);
            let handshake =
                tokio::time::timeout_at((accepted_at + limit).into(), acceptor.accept(stream));
            let stream = tokio::select! {
                () = ctx.shared.shutdown.cancelled() => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%client, error = %e, "turn: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            let ft = FiveTuple {
                transport: Transport::Tls,
                client,
                server,
            };
            run_connection(ctx, stream, ft, accepted_at).await;
        }
    }
}

async fn run_connection<S>(ctx: StreamContext, stream: S, ft: FiveTuple, accepted_at: Instant)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    ctx.shared.lock().io.streams.insert(
        ft,
        StreamTx {
            tx,
            queued: queued.clone(),
        },
    );
    let writing = write_frames(writer, rx, &queued);
    tokio::pin!(writing);
    let mut written = false;
    let shutdown = tokio::select! {
        () = ctx.shared.shutdown.cancelled() => true,
        () = read_frames(&ctx, &mut reader, ft, accepted_at) => false,
        () = &mut writing => {
            written = true;
            false
        }
    };
    {
        // Unregistered, so nothing more is queued for it: the writer ends
        // after what is already queued.
        let now = Instant::now();
        let mut core = ctx.shared.lock();
        core.io.streams.remove(&ft);
        core.server.connection_closed(ft);
        core.flush(&ctx.shared, now);
    }
    if written {
        return;
    }
    // Answers already queued go out, then our end of the stream closes
    // (FIN, and close_notify first on TLS), so the client sees an orderly
    // end after its last response rather than a reset.
    let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    if tokio::time::timeout_at(drain_until, &mut writing)
        .await
        .is_err()
    {
        return;
    }
    if shutdown {
        // Closing a socket with unread input makes the kernel send a reset
        // that can overtake the answers: read (and drop) until the client
        // closes too, within the bound.
        let _ = tokio::time::timeout_at(drain_until, discard(&mut reader)).await;
    }
}

/// Reads and drops everything until end of stream or an error.
async fn discard<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

async fn read_frames<R: AsyncRead + Unpin>(
    ctx: &StreamContext,
    reader: &mut R,
    ft: FiveTuple,
    accepted_at: Instant,
) {
    let mut buf = vec![0u8; FIRST_READ_BUFFER];
    let mut filled = 0usize;
    // Since when the connection has had no allocation; `None` while it has one.
    let mut unallocated_since = Some(accepted_at);
    loop {
        if filled == buf.len() {
            if buf.len() >= READ_BUFFER {
                return;
            }
            buf.resize((buf.len() * 2).min(READ_BUFFER), 0);
        }
        let deadline = match unallocated_since {
            Some(since) => since + ctx.allocate_within,
            None => Instant::now() + ctx.idle_timeout,
        };
        let read = tokio::time::timeout_at(deadline.into(), reader.read(&mut buf[filled..])).await;
        let n = match read {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        filled += n;
        let mut start = 0usize;
        let now = Instant::now();
        let unix = unix_secs();
        let mut core = None;
        loop {
            let len = match stream_frame_len(&buf[start..filled]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!(client = %ft.client, "turn: unframeable stream, closing");
                    return;
                }
            };
            if len > READ_BUFFER {
                return;
            }
            if filled - start < len {
                break;
            }
            let core = core.get_or_insert_with(|| ctx.shared.lock());
            core.server
                .handle_client(now, unix, ft, &buf[start..start + len]);
            core.flush(&ctx.shared, now);
            start += len;
        }
        if let Some(core) = &core {
            unallocated_since = match (core.server.has_allocation(ft), unallocated_since) {
                (true, _) => None,
                (false, Some(since)) => Some(since),
                (false, None) => Some(now),
            };
        }
        drop(core);
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

async fn write_frames<W: AsyncWrite>(
    writer: W,
    mut rx: mpsc::Receiver<Bytes>,
    queued: &AtomicUsize,
) {
    let mut writer = std::pin::pin!(writer);
    while let Some(frame) = rx.recv().await {
        queued.fetch_sub(frame.len(), Ordering::Relaxed);
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        // Coalesce what is already queued into the same flush.
        while let Ok(more) = rx.try_recv() {
            queued.fetch_sub(more.len(), Ordering::Relaxed);
            if writer.write_all(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

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

/// Frames queued for one stream client before new ones are dropped (and
/// `driver::STREAM_QUEUE_BYTES` bounds their bytes).
const STREAM_QUEUE: usize = 512;
/// Time for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer; a frame is at most 4 + 65535 + padding bytes.
const READ_BUFFER: usize = 128 * 1024;
/// A connection starts with a small buffer and grows it only for a frame
/// that needs more, so idle or unauthenticated connections stay cheap.
const FIRST_READ_BUFFER: usize = 4 * 1024;
/// How long a connection without an allocation may stay silent: an
/// allocation's refreshes keep a real client well inside the long timeout,
/// but nothing should hold a connection slot for an hour without one.
const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(30);

/// What a stream listener serves.
#[derive(Clone)]
pub(super) struct StreamContext {
    pub(super) shared: Arc<Shared>,
    pub(super) connections: Arc<Semaphore>,
    /// A connection silent for this long is closed.
    pub(super) idle_timeout: Duration,
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
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "turn: connection limit reached");
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        ctx.shared.tasks.clone().spawn(async move {
            let _permit = permit;
            serve(ctx, stream, client, server, tls).await;
        });
    }
}

async fn serve(
    ctx: StreamContext,
    stream: TcpStream,
    client: SocketAddr,
    server: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    match tls {
        None => {
            let ft = FiveTuple {
                transport: Transport::Tcp,
                client,
                server,
            };
            run_connection(ctx, stream, ft).await;
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
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
            run_connection(ctx, stream, ft).await;
        }
    }
}

async fn run_connection<S>(ctx: StreamContext, stream: S, ft: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    ctx.shared.lock().io.streams.insert(
        ft,
        StreamTx {
            tx,
            queued: queued.clone(),
        },
    );
    tokio::select! {
        () = ctx.shared.shutdown.cancelled() => {}
        () = read_frames(&ctx, reader, ft) => {}
        () = write_frames(writer, rx, &queued) => {}
    }
    let now = Instant::now();
    let mut core = ctx.shared.lock();
    core.io.streams.remove(&ft);
    core.server.connection_closed(ft);
    core.flush(&ctx.shared, now);
}

async fn read_frames<R: AsyncRead>(ctx: &StreamContext, reader: R, ft: FiveTuple) {
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; FIRST_READ_BUFFER];
    let mut filled = 0usize;
    let mut allocated = false;
    loop {
        if filled == buf.len() {
            if buf.len() >= READ_BUFFER {
                return;
            }
            buf.resize((buf.len() * 2).min(READ_BUFFER), 0);
        }
        let idle = if allocated {
            ctx.idle_timeout
        } else {
            IDLE_WITHOUT_ALLOCATION
        };
        let read = tokio::time::timeout(idle, reader.read(&mut buf[filled..])).await;
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
            allocated = core.server.has_allocation(ft);
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

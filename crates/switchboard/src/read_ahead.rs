//! A read side that takes what the kernel has in one syscall while a
//! connection is busy, and holds no buffer while it is idle.
//!
//! tungstenite reads at most its read buffer per call, and that buffer
//! stays allocated for the connection's life: 1 KiB keeps idle connections
//! cheap but costs one `recv` per three 300-byte messages under load, where
//! 16 KiB would take a whole burst at once (12 % less server CPU per
//! message in side-by-side runs, docs/benchmarks-signaling.md). This
//! wrapper gives both: it reads up to 16 KiB into a buffer borrowed from a
//! small per-thread pool, hands it out to tungstenite's small reads, and
//! returns the buffer to the pool as soon as it is drained or the socket
//! has nothing more.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read may take.
const CHUNK: usize = 16 * 1024;
/// Buffers kept for reuse per worker thread (1 MiB at most), so that a busy
/// connection does not allocate and zero one per read.
const SPARE_MAX: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; CHUNK])
}

fn give_back(buf: Vec<u8>) {
    if buf.len() != CHUNK {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_MAX {
            spare.push(buf);
        }
    });
}

/// Wraps a stream; writes pass straight through.
pub struct ReadAhead<S> {
    inner: S,
    /// Empty when nothing is buffered.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`; allocates nothing until the first read.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }

    fn release(&mut self) {
        self.pos = 0;
        self.end = 0;
        give_back(std::mem::take(&mut self.buf));
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.end {
            if dst.remaining() >= CHUNK {
                // A large read gains nothing from a copy.
                return Pin::new(&mut this.inner).poll_read(cx, dst);
            }
            if this.buf.is_empty() {
                this.buf = take_buffer();
            }
            let mut chunk = ReadBuf::new(&mut this.buf);
            let result = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let filled = chunk.filled().len();
            match result {
                Poll::Ready(Ok(())) if filled > 0 => {
                    this.pos = 0;
                    this.end = filled;
                }
                // End of stream, an error, or nothing yet: hold no buffer.
                other => {
                    this.release();
                    return other;
                }
            }
        }
        let n = (this.end - this.pos).min(dst.remaining());
        dst.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.end {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_and_idle_holds_nothing() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = ReadAhead::new(server);
        let mut writer = client;
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).await.expect("write");
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        while got.len() < data.len() {
            let n = reader.read(&mut small).await.expect("read");
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert!(reader.buf.is_empty(), "a drained reader keeps no buffer");
        // Writes pass through, and end of stream is seen.
        reader.write_all(b"pong").await.expect("write back");
        let mut back = [0u8; 4];
        writer.read_exact(&mut back).await.expect("read back");
        assert_eq!(&back, b"pong");
        drop(writer);
        assert_eq!(reader.read(&mut small).await.expect("eof"), 0);
        assert!(reader.buf.is_empty());
    }

    #[tokio::test]
    async fn large_reads_go_straight_through() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = ReadAhead::new(server);
        client.write_all(&[7u8; 20_000]).await.expect("write");
        let mut big = vec![0u8; 32 * 1024];
        let n = reader.read(&mut big).await.expect("read");
        assert!(n > 0 && big[..n].iter().all(|&b| b == 7));
        assert!(reader.buf.is_empty());
    }
}

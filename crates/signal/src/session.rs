//! Per-session state: identity, sequence numbers, the replay buffer and the
//! request-rate bucket. Kept small: an idle session allocates no frames.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::rooms::RoomId;
use crate::{ConnId, Face};

/// A session's internal key: never reused, so stale references are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sid(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) resume_token: Arc<str>,
    pub(crate) peer: Arc<str>,
    pub(crate) face: Face,
    /// `None` during the grace period.
    pub(crate) conn: Option<ConnId>,
    pub(crate) user: Option<Arc<str>>,
    /// The source IP of the session's last connection, when the shell knew it.
    pub(crate) ip: Option<std::net::IpAddr>,
    /// The token's `rooms` claim; `None` means any room.
    pub(crate) allowed_rooms: Option<Box<[Box<str>]>>,
    /// The `seq` of the last frame queued for this session.
    pub(crate) seq: u64,
    /// In a cluster, which move of the session this copy is
    /// (`cluster::SessionRecord::epoch`).
    pub(crate) epoch: u32,
    /// In a cluster, whether the store holds a `base` for this session
    /// (`cluster::SessionRecord::base`: it moved here, and no frame has
    /// reached a live connection since): the next frame that does is
    /// written with a `Persist`, which clears it, not an `Append`.
    pub(crate) store_base: bool,
    pub(crate) replay: ReplayBuffer,
    pub(crate) grace_until: Option<Instant>,
    pub(crate) bucket: TokenBucket,
    /// In join order.
    pub(crate) rooms: Vec<RoomId>,
    /// Ringing calls this session placed or was rung for.
    pub(crate) calls: Vec<u64>,
}

impl Session {
    pub(crate) fn may_join(&self, room: &str) -> bool {
        self.allowed_rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| &**r == room))
    }

    pub(crate) fn is_in(&self, room: RoomId) -> bool {
        self.rooms.contains(&room)
    }

    /// Compares in time independent of where the tokens differ.
    pub(crate) fn token_matches(&self, token: &str) -> bool {
        let a = self.resume_token.as_bytes();
        let b = token.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The last frames sent to a session, for replay on resume: at most
/// `max_frames` of them, and no more than `max_bytes` of bodies, except
/// that the newest frame is always kept. Every sequenced frame goes in, so
/// the oldest kept `seq` follows from the session's current `seq` and the
/// length.
///
/// The bodies are copied in, back to back, rather than shared with the live
/// frame: evicting the oldest is then moving an index, where dropping a
/// shared buffer sent long ago meant a cache miss on its reference count and
/// a `free` on cold memory, which cost more than the copy (perf: 10–15 % of
/// the CPU of a busy server).
#[derive(Debug, Default)]
pub(crate) struct ReplayBuffer {
    /// The kept bodies, oldest first.
    bytes: VecDeque<u8>,
    /// The length of each kept body, oldest first.
    lens: VecDeque<u32>,
    /// The most bytes kept since the last trim: what to shrink to.
    high: u32,
}

/// Capacity beyond twice the need that a trim leaves in place: shrinking
/// small buffers saves little and costs a reallocation.
const SHRINK_SLACK: usize = 4096;

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ReplayBuffer {
    /// Whether one more frame of `len` bytes goes in without evicting
    /// anything. A session in its grace period takes a frame only then:
    /// what it was promised must stay until it resumes (PROTOCOL.md §1,
    /// "An ack is a promise"). An empty buffer takes any one frame.
    pub(crate) fn fits(&self, len: usize, max_frames: usize, max_bytes: usize) -> bool {
        max_frames != 0
            && (self.lens.is_empty()
                || (self.lens.len() < max_frames && self.bytes.len() + len <= max_bytes))
    }

    /// Keeps `body` as the newest frame; returns how many old frames made
    /// room for it.
    pub(crate) fn push(&mut self, body: &[u8], max_frames: usize, max_bytes: usize) -> usize {
        if max_frames == 0 {
            return 0;
        }
        let before = self.lens.len();
        // The byte bound is what keeps a flood of large messages from
        // holding max_frames × max_message_bytes per recipient.
        while !self.lens.is_empty()
            && (self.lens.len() >= max_frames || self.bytes.len() + body.len() > max_bytes)
        {
            if let Some(old) = self.lens.pop_front() {
                self.bytes.drain(..old as usize);
            }
        }
        let Ok(len) = u32::try_from(body.len()) else {
            // Frames are bounded far below 4 GiB by the transport cap; a body
            // that is not cannot be kept, so resumes past it fail.
            let evicted = self.lens.len();
            self.bytes.clear();
            self.lens.clear();
            return evicted;
        };
        if self.lens.capacity() == 0 {
            // Most sessions are quiet: start small, not at the defaults.
            self.lens.reserve_exact(2.min(max_frames));
            self.bytes.reserve_exact(body.len());
        }
        self.bytes.extend(body);
        self.lens.push_back(len);
        self.high = self.high.max(saturating_u32(self.bytes.len()));
        before + 1 - self.lens.len()
    }

    /// Forgets the frames with `seq <= last_seq` (the client confirmed
    /// them), and gives memory back when the buffer is mostly empty. The
    /// caller has checked `last_seq <= current_seq`.
    pub(crate) fn trim(&mut self, last_seq: u64, current_seq: u64) {
        let kept = self.lens.len() as u64;
        let first = current_seq.saturating_sub(kept) + 1;
        if last_seq >= first {
            let drop = usize::try_from((last_seq - first + 1).min(kept)).unwrap_or(usize::MAX);
            let bytes: usize = self.lens.drain(..drop).map(|n| n as usize).sum();
            self.bytes.drain(..bytes);
        }
        // Shrink only below what the session used since the last trim: a
        // client that confirms every 64 frames then keeps one steady
        // allocation instead of regrowing it every time.
        let want = (self.high as usize).max(self.bytes.len());
        if self.bytes.capacity() > 2 * want + SHRINK_SLACK {
            self.bytes.shrink_to(want);
        }
        let want_lens = self.lens.len().max(16);
        if self.lens.capacity() > 2 * want_lens + 16 {
            self.lens.shrink_to(want_lens);
        }
        self.high = saturating_u32(self.bytes.len());
    }

    /// The frames with `seq > last_seq`, with their seq, when all of them
    /// are still kept; `None` when some are gone or `last_seq` is in the
    /// future.
    pub(crate) fn after(
        &self,
        last_seq: u64,
        current_seq: u64,
    ) -> Option<impl Iterator<Item = (u64, Bytes)> + '_> {
        if last_seq > current_seq {
            return None;
        }
        let missing = current_seq - last_seq;
        let kept = self.lens.len() as u64;
        if missing > kept {
            return None;
        }
        let skip = usize::try_from(kept - missing).ok()?;
        let mut start: usize = self.lens.iter().take(skip).map(|&n| n as usize).sum();
        Some(
            self.lens
                .iter()
                .skip(skip)
                .zip(last_seq + 1..)
                .map(move |(&n, seq)| {
                    let end = start + n as usize;
                    let body: Vec<u8> = self.bytes.range(start..end).copied().collect();
                    start = end;
                    (seq, Bytes::from(body))
                }),
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity() + self.lens.capacity() * 4
    }
}

/// Token bucket: `rate` tokens per second up to `burst`; a request costs one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn full(now: Instant, burst: u32) -> Self {
        TokenBucket {
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token if there is one. `rate == 0` turns the limit off.
    pub(crate) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if now > self.last {
            self.last = now;
        }
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replay_window() {
        let mut r = ReplayBuffer::default();
        for i in 0..5u8 {
            r.push(&[i], 3, usize::MAX);
        }
        // seq 1..=5 sent, 3..=5 kept
        let got: Vec<_> = r
            .after(2, 5)
            .expect("fits")
            .map(|(s, b)| (s, b[0]))
            .collect();
        assert_eq!(got, vec![(3, 2), (4, 3), (5, 4)]);
        assert_eq!(r.after(4, 5).expect("fits").count(), 1);
        assert_eq!(r.after(5, 5).expect("fits").count(), 0);
        assert!(r.after(1, 5).is_none());
        assert!(r.after(6, 5).is_none());
        let mut off = ReplayBuffer::default();
        off.push(&[], 0, usize::MAX);
        assert_eq!(off.len(), 0);
        assert!(off.after(0, 1).is_none());
        assert!(off.after(1, 1).is_some());
    }

    #[test]
    fn replay_byte_bound() {
        let mut r = ReplayBuffer::default();
        for i in 0..6u8 {
            r.push(&[i; 10], 100, 25);
        }
        // Two 10-byte frames fit 25 bytes: seq 5 and 6.
        assert_eq!((r.len(), r.bytes()), (2, 20));
        assert_eq!(r.after(4, 6).expect("fits").count(), 2);
        assert!(r.after(3, 6).is_none());
        // One larger than the bound replaces them all and is kept.
        r.push(&[9; 40], 100, 25);
        assert_eq!((r.len(), r.bytes()), (1, 40));
        r.push(&[1; 5], 100, 25);
        assert_eq!((r.len(), r.bytes()), (1, 5));
    }

    #[test]
    fn replay_fits_without_evicting() {
        let mut r = ReplayBuffer::default();
        assert!(r.fits(100, 2, 10), "an empty buffer takes any one frame");
        assert!(!r.fits(1, 0, 10), "no replay at all takes nothing");
        r.push(&[1; 6], 2, 10);
        assert!(r.fits(4, 2, 10));
        assert!(!r.fits(5, 2, 10), "bytes");
        r.push(&[2; 1], 2, 10);
        assert!(!r.fits(1, 2, 10), "frames");
    }

    #[test]
    fn trim_forgets_confirmed_frames_and_gives_memory_back() {
        let mut r = ReplayBuffer::default();
        for i in 0..10u8 {
            r.push(&[i; 1000], 1024, 1 << 20);
        }
        // seq 1..=10 kept; the client confirms 4.
        r.trim(4, 10);
        assert_eq!((r.len(), r.bytes()), (6, 6000));
        assert!(r.after(3, 10).is_none(), "confirmed frames are gone");
        let got: Vec<_> = r
            .after(4, 10)
            .expect("fits")
            .map(|(s, b)| (s, b[0]))
            .collect();
        assert_eq!(got.first(), Some(&(5, 4)));
        assert_eq!(got.len(), 6);
        // Confirming what is already gone, or nothing new, changes nothing.
        r.trim(2, 10);
        assert_eq!(r.len(), 6);
        r.trim(10, 10);
        assert_eq!((r.len(), r.bytes()), (0, 0));
        assert!(r.after(10, 10).is_some_and(|mut f| f.next().is_none()));

        // A burst grows the buffer; two trims later it is small again.
        let mut r = ReplayBuffer::default();
        for i in 0..1000u64 {
            r.push(&[7; 1000], 1024, 1 << 20);
            if i == 999 {
                assert!(r.capacity() >= 1_000_000);
            }
        }
        r.trim(1000, 1000);
        for _ in 0..5 {
            r.push(&[7; 300], 1024, 1 << 20);
        }
        r.trim(1005, 1005);
        assert!(r.capacity() < 16 * 1024, "capacity {}", r.capacity());
    }

    #[test]
    fn steady_confirming_keeps_one_allocation() {
        let mut r = ReplayBuffer::default();
        let mut seq = 0;
        let mut caps = Vec::new();
        for _ in 0..20 {
            for _ in 0..64 {
                r.push(&[1; 300], 1024, 1 << 20);
                seq += 1;
            }
            r.trim(seq, seq);
            caps.push(r.capacity());
        }
        assert!(caps[2..].windows(2).all(|w| w[0] == w[1]), "{caps:?}");
    }

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(t0, 2);
        assert!(b.take(t0, 10, 2));
        assert!(b.take(t0, 10, 2));
        assert!(!b.take(t0, 10, 2));
        assert!(b.take(t0 + Duration::from_millis(100), 10, 2));
        assert!(!b.take(t0 + Duration::from_millis(100), 10, 2));
        // never more than the burst
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later, 10, 2) && b.take(later, 10, 2) && !b.take(later, 10, 2));
        assert!(b.take(later, 0, 0));
    }
}

#[cfg(test)]
mod size {
    /// Idle sessions must stay small (target: under 1 KiB of core state with
    /// the map entries and the few short strings). The replay buffer's two
    /// deques are 64 of these bytes.
    #[test]
    fn an_idle_session_is_small() {
        assert!(std::mem::size_of::<super::Session>() <= 288);
    }
}

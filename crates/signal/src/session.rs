//! Per-session state: identity, sequence numbers, the replay buffer and the
//! request-rate bucket. Kept small: an idle session allocates no frames.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::rooms::RoomId;
use crate::{ConnId, Face};

/// A session's internal key: never reused, so stale references are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sid(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: Box<str>,
    pub(crate) resume_token: Box<str>,
    pub(crate) peer: Box<str>,
    pub(crate) face: Face,
    /// `None` during the grace period.
    pub(crate) conn: Option<ConnId>,
    pub(crate) user: Option<Box<str>>,
    /// The token's `rooms` claim; `None` means any room.
    pub(crate) allowed_rooms: Option<Box<[Box<str>]>>,
    /// The `seq` of the last frame queued for this session.
    pub(crate) seq: u64,
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
}

impl ReplayBuffer {
    pub(crate) fn push(&mut self, body: &[u8], max_frames: usize, max_bytes: usize) {
        if max_frames == 0 {
            return;
        }
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
            self.bytes.clear();
            self.lens.clear();
            return;
        };
        if self.lens.capacity() == 0 {
            // Most sessions are quiet: start small, not at the defaults.
            self.lens.reserve_exact(2.min(max_frames));
            self.bytes.reserve_exact(body.len());
        }
        self.bytes.extend(body);
        self.lens.push_back(len);
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
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

//! The backplane contract of `switchboard_signal::cluster` on Redis 7.
//!
//! A node's [`Command`](switchboard_signal::cluster::Command)s go to one Lua
//! script (`store.lua`, loaded at every connect), which applies each
//! atomically with the semantics of the in-memory reference,
//! [`Store`](switchboard_signal::cluster::store::Store); every
//! [`Push`](switchboard_signal::cluster::Push) for node `N`, answers included,
//! is `PUBLISH`ed on `{prefix}:node:{N}`, which `N`'s one subscriber
//! connection reads, so each node sees its pushes in the order the store
//! produced them. A node's commands go in order over one multiplexed
//! connection, batched: what is queued (up to 512 commands, about 1 MiB) is
//! one `EVALSHA` whose arguments carry them all, applied in order in one
//! atomic call, so that the per-call costs (the script's liveness checks,
//! Redis' per-command work) are paid once per batch. The script replies
//! with what `Store::handle` returns for each; the client hands it back, in
//! order, for the two commands whose outcome the node needs (`Persist`,
//! `Resumed`) as [`Event::Applied`], and ignores the others'. Node liveness
//! uses Redis' clock (`TIME`), so the nodes' clocks may disagree. The keys
//! name rooms and sessions, so this needs one Redis (or a primary with
//! replicas), not Redis Cluster.
//!
//! # How a shell drives it
//! ```no_run
//! # async fn shell(mut core: switchboard_signal::SignalCore) -> Result<(), switchboard_backplane::Error> {
//! use std::time::Instant;
//! use switchboard_backplane::{Event, RedisBackplane, Settings};
//! use switchboard_signal::cluster::NodeId;
//!
//! let (bp, mut events) =
//!     RedisBackplane::connect("redis://127.0.0.1/", NodeId::new("node-1"), Settings::default())
//!         .await?;
//! while let Some(ev) = events.recv().await {
//!     let now = Instant::now();
//!     match ev {
//!         // The first event is always `Up`; then `Down` and `Up` alternate.
//!         Event::Up => core.backplane_up(now),
//!         Event::Down(_) => core.backplane_down(now),
//!         Event::Push(push) => core.handle_push(now, push),
//!         Event::Applied(ok) => core.persisted(ok),
//!         _ => {}
//!     }
//!     // ...then every `Output::Backplane(cmd)` of the core: `bp.send(&cmd)`,
//!     // from this same task, after the event that led to it.
//! }
//! # Ok(()) }
//! ```
//! [`RedisBackplane::send`] drops a command sent before the caller read the
//! last link event (so that an [`Event::Applied`] never belongs to an older
//! up period than the `backplane_up` the core counts from), which is why
//! the events must be read through [`Events`] and commands sent after
//! handling the event that caused them. The client sends its own heartbeats
//! and sweeps ([`Settings::heartbeat`], [`Settings::sweep`]); a core that
//! emits `Heartbeat` too costs only one more script call per period.
//!
//! # The store's generation
//! `{prefix}:gen` holds a random `u64` (decimal text), set with `SET NX`
//! by the first `Resync` from the node's random candidate. A Redis restarted
//! without persistence has none, so the first resync after it sets a new
//! one, and a node naming the old one gets its sessions restored, seats
//! included (`Store::restore`).
//!
//! # What each command costs in Redis
//! One script call each (in a pipeline), plus the `PUBLISH`es below; `k` is
//! the number of *other* live nodes with a recipient in the room (a room's
//! event crosses once per node, naming that node's recipients, not once
//! per recipient). Routing reads each member's owner and peer: `O(members)`
//! hash reads inside the script.
//!
//! | command | publishes |
//! | --- | --- |
//! | `Heartbeat`, `Register`, `Trim` | 0 |
//! | `Persist`, `Resumed` | 0 (the reply is the answer) |
//! | `Join` | 1 answer + `k` (`other_joined`, when seated) |
//! | `Leave` | `k` (`bye`) |
//! | `Publish` | `k` (those of `to` only, with `to`) + 1 answer when it has a `req` |
//! | `Report`, `Tell`, `Adopt` | 1 |
//! | `End` | `k` per room it was in |
//! | `Take` | 1 answer + 1 `Taken` to the old owner |
//! | `Ring` | 1 per node with a session of the user + 1 answer |
//! | `Resync` | 1 answer + `k` per stale room and per room of each session it ends |
//! | `Resync` naming another generation (a restore) | 1 answer |
//! | `Rooms`, `Room` (admin views) | 1 answer |
//! | `Kick` (admin) | 1 answer + 1 per live node with a member kicked + `k` per member of a dead node |
//! | any command of a node declared dead | 1 (`Dead`, once) |
//!
//! The client adds per node, every third of `node_timeout`: one `Heartbeat`
//! and one sweep script call (the sweep publishes one `NodeDied` per live
//! node per death). So a room message from node A that reaches one peer on
//! node B, counted in an ack, costs: `Publish` (A) + `Persist` (B) +
//! `Report` (B) = 3 script calls and 3 `PUBLISH`es (`Deliver` to B,
//! `Published` to A, `Counted` to A), plus a `Trim` once the client confirms.
//!
//! # Redis memory per session
//! Measured by `tests/faults.rs` (`redis_memory_per_session`, Redis 7.0,
//! `used_memory` over 2000 sessions with 32-byte ids, 64-byte tokens and a
//! user id each): the record (a hash with token, peer, user, face, owner,
//! seq, bytes, epoch and, after a move, base; an entry in its owner's sorted set; its user's list) is
//! about 0.7 KiB; its first room seat about 0.5 KiB (its list of rooms, a
//! member entry and three hash fields: peer, meta and join time, half a room
//! of two), plus its `meta`.
//! Its unconfirmed frames are a list of `seq:body` strings: each frame's
//! bytes plus about 31, at most `session.replay_frames` frames and
//! `session.replay_bytes` bytes (1024 and 1 MiB by default), so a session
//! costs at most about 1.1 MiB, and a busy one whose client confirms (`ping`
//! with `last_seq`) every few seconds holds only the frames of those
//! seconds: at 10 frames/s of 300 bytes and a confirm every 5 s, about
//! 1.2 + 16 = 17 KiB.
//!
//! # Admin views
//! The admin API's room list reads `{prefix}:rooms`, a sorted set of the
//! rooms with a member (kept by the join and leave scripts), and each
//! room's length and creation time; a room's view reads its members'
//! hashes: `O(rooms)` and `O(members)`, off the message path. Times are
//! Redis' (`TIME`, milliseconds), sent as ages so that the nodes' clocks
//! need not agree. Rooms seated by a script older than this one are not in
//! the list until they empty (their members are in the room's own view).
//!
//! # Limits
//! - Lua numbers are doubles: `seq`, counts and the store's arithmetic are
//!   exact up to 2^53 (285 years at a million frames a second).
//! - A node declared dead stays a field of `{prefix}:dead` (about 50 bytes)
//!   so that it is told [`Push::Dead`](switchboard_signal::cluster::Push::Dead)
//!   whenever it comes back; random node ids leave one per crash.
//! - Pushes decoded but not yet taken by the caller wait in the event
//!   channel ([`Settings::events`]); past it, in redis-rs' subscriber buffer.
//!   Answers wait there too, and hold up the command connection while it is
//!   full: keep reading events.
//! - An epoch is a `u32` and wraps, like the reference's.

//! # Encoding
//! See [`codec`]: length-prefixed atoms, built in Lua by concatenation and
//! decoded here without copying bodies; a malformed payload is logged and
//! dropped.

#![warn(missing_docs)]

mod client;
pub mod codec;

pub use client::{Error, Event, Events, RedisBackplane, Settings};
pub use switchboard_signal::cluster::store::StoreConfig;

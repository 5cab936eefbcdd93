//! The wire format between the nodes and the Lua store: [`Push`]es as pub/sub
//! payloads, [`Command`]s as script arguments.
//!
//! A payload is a run of *atoms*: `<decimal length>:<bytes>`, or `-` for
//! `None`. A number is an atom holding decimal text; a list is its count,
//! then its items; an enum is a one-letter tag, then its fields. Why not
//! JSON: bodies are arbitrary bytes (JSON would need escaping or base64),
//! Redis' Lua `cjson` turns numbers into doubles printed with 14 digits, and
//! the scripts must build payloads themselves; an atom is one string
//! concatenation in Lua, and decoding here is a cursor over the payload with
//! zero-copy slices for bodies. A malformed payload is a [`DecodeError`],
//! never a panic.
//!
//! Command arguments are one script argument per field (binary-safe, so no
//! framing): options as `-` or `+value`, lists as a count then the items,
//! a [`RoomEvent`] or [`NodeMsg`] as one argument holding its atoms, which
//! the script copies into the push unread (a publish names the event's
//! subject peer apart, for routing). A [`Copy`](tyalias@Copy) is its session then its
//! epoch. The script's reply is 1 (applied) or 0 (refused), which the client
//! reads for the commands that are [`answered`].

use bytes::Bytes;
use switchboard_signal::cluster::{
    Command, Copy, MediaMsg, MemberInfo, NodeId, NodeMsg, Push, RoomEvent, RoomInfo, RoomMembers,
    SeatOutcome, SessionRecord, TakeOutcome, Text,
};
use switchboard_signal::{CallEndReason, ErrorCode, Face, MediaKind};

/// Why a payload from Redis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// It ends in the middle of a field.
    #[error("payload truncated")]
    Truncated,
    /// A length or number that is not decimal, or too large.
    #[error("bad number in payload")]
    BadNumber,
    /// Text that is not UTF-8.
    #[error("text field is not UTF-8")]
    BadUtf8,
    /// A `None` where a value is required.
    #[error("missing field")]
    Missing,
    /// An unknown tag.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// Bytes left after the push.
    #[error("trailing bytes after the push")]
    Trailing,
}

/// Appends atoms to a payload.
#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

/// `n` in decimal, without an allocation.
fn decimal(n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    let mut n = n;
    loop {
        i -= 1;
        // A digit: below 10, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let d = (n % 10) as u8;
        out[i] = b'0' + d;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &out[i..]
}

impl Writer {
    fn atom(&mut self, b: &[u8]) {
        let mut digits = [0u8; 20];
        self.0
            .extend_from_slice(decimal(b.len() as u64, &mut digits));
        self.0.push(b':');
        self.0.extend_from_slice(b);
    }
    fn text(&mut self, s: &str) {
        self.atom(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.0.push(b'-'),
        }
    }
    fn num(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.atom(decimal(n, &mut digits));
    }
    fn opt_num(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.num(n),
            None => self.0.push(b'-'),
        }
    }
    fn texts(&mut self, items: &[Text]) {
        self.num(items.len() as u64);
        for i in items {
            self.text(i);
        }
    }
}

/// Reads atoms off a payload.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn opt_bytes(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let rest = self.buf.get(self.pos..).ok_or(DecodeError::Truncated)?;
        match rest.first() {
            None => return Err(DecodeError::Truncated),
            Some(b'-') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(_) => {}
        }
        let colon = rest
            .iter()
            .take(21)
            .position(|&b| b == b':')
            .ok_or(DecodeError::BadNumber)?;
        let len = parse_u64(&rest[..colon])?;
        let start = self.pos + colon + 1;
        let len = usize::try_from(len).map_err(|_| DecodeError::BadNumber)?;
        let end = start.checked_add(len).ok_or(DecodeError::BadNumber)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok(Some(self.buf.slice(start..end)))
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        self.opt_bytes()?.ok_or(DecodeError::Missing)
    }
    fn opt_text(&mut self) -> Result<Option<Text>, DecodeError> {
        self.opt_bytes()?
            .map(|b| {
                std::str::from_utf8(&b)
                    .map(Text::from)
                    .map_err(|_| DecodeError::BadUtf8)
            })
            .transpose()
    }
    fn text(&mut self) -> Result<Text, DecodeError> {
        self.opt_text()?.ok_or(DecodeError::Missing)
    }
    fn node(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId(self.text()?))
    }
    fn num(&mut self) -> Result<u64, DecodeError> {
        parse_u64(&self.bytes()?)
    }
    fn opt_num(&mut self) -> Result<Option<u64>, DecodeError> {
        self.opt_bytes()?.map(|b| parse_u64(&b)).transpose()
    }
    fn epoch(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.num()?).map_err(|_| DecodeError::BadNumber)
    }
    fn texts(&mut self) -> Result<Vec<Text>, DecodeError> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.text()?);
        }
        Ok(v)
    }
    /// A list's length, bounded by what is left (every item takes at least
    /// one byte), so that a forged count cannot make us allocate.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.num()?;
        let left = self.buf.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(DecodeError::Truncated),
        }
    }
    fn tag(&mut self) -> Result<u8, DecodeError> {
        let b = self.bytes()?;
        match b.as_ref() {
            [t] => Ok(*t),
            other => Err(DecodeError::UnknownTag(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }
}

fn parse_u64(b: &[u8]) -> Result<u64, DecodeError> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::BadNumber);
    }
    b.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(d - b'0')))
            .ok_or(DecodeError::BadNumber)
    })
}

fn unknown(tag: u8) -> DecodeError {
    DecodeError::UnknownTag(char::from(tag).to_string())
}

fn face_tag(face: Face) -> &'static str {
    match face {
        Face::Native => "n",
        Face::Classic => "c",
    }
}

fn reason_str(r: CallEndReason) -> &'static str {
    r.as_str()
}

fn parse_reason(s: &str) -> Result<CallEndReason, DecodeError> {
    Ok(match s {
        "answered_elsewhere" => CallEndReason::AnsweredElsewhere,
        "declined" => CallEndReason::Declined,
        "cancelled" => CallEndReason::Cancelled,
        "no_answer" => CallEndReason::NoAnswer,
        "gone" => CallEndReason::Gone,
        other => return Err(DecodeError::UnknownTag(other.to_owned())),
    })
}

fn write_event(w: &mut Writer, e: &RoomEvent) {
    match e {
        RoomEvent::OtherJoined { peer, meta } => {
            w.text("J");
            w.text(peer);
            w.opt(meta.as_deref());
        }
        RoomEvent::Bye { peer } => {
            w.text("B");
            w.text(peer);
        }
        RoomEvent::Message { from, data } => {
            w.text("M");
            w.text(from);
            w.text(data);
        }
    }
}

fn read_event(r: &mut Reader) -> Result<RoomEvent, DecodeError> {
    Ok(match r.tag()? {
        b'J' => RoomEvent::OtherJoined {
            peer: r.text()?,
            meta: r.opt_text()?,
        },
        b'B' => RoomEvent::Bye { peer: r.text()? },
        b'M' => RoomEvent::Message {
            from: r.text()?,
            data: r.text()?,
        },
        t => return Err(unknown(t)),
    })
}

/// `None` for a message kind this version does not know (`NodeMsg` is
/// non-exhaustive).
fn write_msg(w: &mut Writer, m: &NodeMsg) -> Option<()> {
    match m {
        NodeMsg::Accept {
            call,
            session,
            peer,
        } => {
            w.text("A");
            w.text(call);
            w.text(session);
            w.text(peer);
        }
        NodeMsg::Decline { call, session } => {
            w.text("D");
            w.text(call);
            w.text(session);
        }
        NodeMsg::Won {
            call,
            session,
            room,
            caller,
        } => {
            w.text("W");
            w.text(call);
            w.text(session);
            w.text(room);
            w.text(caller);
        }
        NodeMsg::Lost { call, session } => {
            w.text("L");
            w.text(call);
            w.text(session);
        }
        NodeMsg::Ended {
            call,
            reason,
            except,
        } => {
            w.text("E");
            w.text(call);
            w.text(reason_str(*reason));
            w.opt(except.as_deref());
        }
        NodeMsg::RingGone { call } => {
            w.text("G");
            w.text(call);
        }
        NodeMsg::Media { room, peer, what } => {
            w.text("S");
            w.text(room);
            w.text(peer);
            match what {
                MediaMsg::Joined => w.text("J"),
                MediaMsg::Left => w.text("L"),
                MediaMsg::Signal(data) => {
                    w.text("S");
                    w.text(data);
                }
                MediaMsg::Reply(data) => {
                    w.text("R");
                    w.text(data);
                }
                MediaMsg::Error { code, message } => {
                    w.text("E");
                    w.text(code.as_str());
                    w.text(message);
                }
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}

fn read_media(r: &mut Reader) -> Result<MediaMsg, DecodeError> {
    Ok(match r.tag()? {
        b'J' => MediaMsg::Joined,
        b'L' => MediaMsg::Left,
        b'S' => MediaMsg::Signal(r.text()?),
        b'R' => MediaMsg::Reply(r.text()?),
        b'E' => {
            let code = r.text()?;
            let code = ErrorCode::ALL
                .into_iter()
                .find(|c| c.as_str() == &*code)
                .ok_or_else(|| DecodeError::UnknownTag(code.to_string()))?;
            MediaMsg::Error {
                code,
                message: r.text()?,
            }
        }
        t => return Err(unknown(t)),
    })
}

fn media_tag(m: MediaKind) -> &'static str {
    match m {
        MediaKind::Sfu => "s",
        _ => "m",
    }
}

fn parse_media(r: &mut Reader) -> Result<MediaKind, DecodeError> {
    Ok(match r.tag()? {
        b's' => MediaKind::Sfu,
        b'm' => MediaKind::Mesh,
        t => return Err(unknown(t)),
    })
}

fn read_msg(r: &mut Reader) -> Result<NodeMsg, DecodeError> {
    Ok(match r.tag()? {
        b'A' => NodeMsg::Accept {
            call: r.text()?,
            session: r.text()?,
            peer: r.text()?,
        },
        b'D' => NodeMsg::Decline {
            call: r.text()?,
            session: r.text()?,
        },
        b'W' => NodeMsg::Won {
            call: r.text()?,
            session: r.text()?,
            room: r.text()?,
            caller: r.text()?,
        },
        b'L' => NodeMsg::Lost {
            call: r.text()?,
            session: r.text()?,
        },
        b'E' => NodeMsg::Ended {
            call: r.text()?,
            reason: parse_reason(&r.text()?)?,
            except: r.opt_text()?,
        },
        b'G' => NodeMsg::RingGone { call: r.text()? },
        b'S' => NodeMsg::Media {
            room: r.text()?,
            peer: r.text()?,
            what: read_media(r)?,
        },
        t => return Err(unknown(t)),
    })
}

fn write_record(w: &mut Writer, rec: &SessionRecord) {
    w.text(&rec.session);
    w.text(&rec.token);
    w.text(&rec.peer);
    w.opt(rec.user.as_deref());
    w.text(face_tag(rec.face));
    w.num(rec.seq);
    w.num(rec.frames.len() as u64);
    for (seq, body) in &rec.frames {
        w.num(*seq);
        w.atom(body);
    }
    w.texts(&rec.rooms);
    w.num(u64::from(rec.epoch));
    w.opt_num(rec.base);
}

fn read_record(r: &mut Reader) -> Result<SessionRecord, DecodeError> {
    let session = r.text()?;
    let token = r.text()?;
    let peer = r.text()?;
    let user = r.opt_text()?;
    let face = match r.tag()? {
        b'n' => Face::Native,
        b'c' => Face::Classic,
        t => return Err(unknown(t)),
    };
    let seq = r.num()?;
    let n = r.count()?;
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        frames.push((r.num()?, r.bytes()?));
    }
    let rooms = r.texts()?;
    let epoch = r.epoch()?;
    let base = r.opt_num()?;
    Ok(SessionRecord {
        session,
        token,
        peer,
        user,
        face,
        seq,
        frames,
        rooms,
        epoch,
        base,
    })
}

/// A push as the scripts publish it. `None` for a push kind this version
/// cannot carry (`Push` is non-exhaustive). The scripts build the same
/// bytes; this one serves tests and tools.
#[must_use]
pub fn encode_push(push: &Push) -> Option<Vec<u8>> {
    let mut w = Writer::default();
    match push {
        Push::JoinAnswer { req, outcome } => {
            w.text("J");
            w.num(*req);
            match outcome {
                SeatOutcome::Seated {
                    peers,
                    media,
                    media_node,
                } => {
                    w.text("S");
                    w.num(peers.len() as u64);
                    for (peer, meta) in peers {
                        w.text(peer);
                        w.opt(meta.as_deref());
                    }
                    w.text(media_tag(*media));
                    w.opt(media_node.as_ref().map(|n| &*n.0));
                }
                SeatOutcome::Full => w.text("F"),
                SeatOutcome::Forbidden => w.text("X"),
                SeatOutcome::NoRelay => w.text("N"),
            }
        }
        Push::Published {
            req,
            counted,
            nodes,
        } => {
            w.text("P");
            w.num(*req);
            w.num(*counted);
            w.num(nodes.len() as u64);
            for n in nodes {
                w.text(&n.0);
            }
        }
        Push::Deliver {
            from,
            req,
            room,
            event,
            sessions,
        } => {
            w.text("D");
            w.text(&from.0);
            w.opt_num(*req);
            w.text(room);
            write_event(&mut w, event);
            w.texts(sessions);
        }
        Push::Counted { req, from, count } => {
            w.text("C");
            w.num(*req);
            w.text(&from.0);
            w.num(*count);
        }
        Push::Took { req, outcome } => {
            w.text("K");
            w.num(*req);
            match outcome {
                TakeOutcome::Unknown => w.text("U"),
                TakeOutcome::Taken(rec) => {
                    w.text("T");
                    write_record(&mut w, rec);
                }
                TakeOutcome::Gap(rec) => {
                    w.text("G");
                    write_record(&mut w, rec);
                }
            }
        }
        Push::Taken { session } => {
            w.text("T");
            w.text(session);
        }
        Push::Adopted { req, sessions } => {
            w.text("A");
            w.num(*req);
            w.num(sessions.len() as u64);
            for rec in sessions {
                write_record(&mut w, rec);
            }
        }
        Push::NodeDied { node } => {
            w.text("N");
            w.text(&node.0);
        }
        Push::RoomMedia { room, node } => {
            w.text("O");
            w.text(room);
            w.opt(node.as_ref().map(|n| &*n.0));
        }
        Push::MediaNode { room, node } => {
            w.text("W");
            w.text(room);
            w.opt(node.as_ref().map(|n| &*n.0));
        }
        Push::Ring {
            from,
            req,
            call,
            user,
            except,
            body,
        } => {
            w.text("R");
            w.text(&from.0);
            w.num(*req);
            w.text(call);
            w.text(user);
            w.text(except);
            w.atom(body);
        }
        Push::Told { from, msg } => {
            w.text("M");
            w.text(&from.0);
            write_msg(&mut w, msg)?;
        }
        Push::Resynced { lost, generation } => {
            w.text("Y");
            w.texts(lost);
            w.num(*generation);
        }
        Push::Dead => w.text("X"),
        Push::Rooms { req, rooms } => {
            w.text("L");
            w.num(*req);
            w.num(rooms.len() as u64);
            for r in rooms {
                w.text(&r.room);
                w.num(r.peers);
                w.num(r.age_ms);
                w.text(media_tag(r.media));
            }
        }
        Push::Room { req, room } => {
            w.text("V");
            w.num(*req);
            // The room's age, or `-` for no such room.
            w.opt_num(room.as_ref().map(|r| r.age_ms));
            if let Some(r) = room {
                w.text(media_tag(r.media));
                w.num(r.members.len() as u64);
                for m in &r.members {
                    w.text(&m.peer);
                    w.opt(m.user.as_deref());
                    w.opt(m.meta.as_deref());
                    w.text(&m.node.0);
                    w.num(m.age_ms);
                }
            }
        }
        Push::Kicked { req, kicked } => {
            w.text("Z");
            w.num(*req);
            w.opt_num(*kicked);
        }
        Push::Kick { room, sessions } => {
            w.text("Q");
            w.text(room);
            w.texts(sessions);
        }
        Push::Route { room, nodes } => {
            w.text("H");
            w.text(room);
            w.num(nodes.len() as u64);
            for (node, members) in nodes {
                w.text(&node.0);
                w.num(members.len() as u64);
                for (session, peer) in members {
                    w.text(session);
                    w.text(peer);
                }
            }
        }
        Push::Rerouted { room } => {
            w.text("I");
            w.text(room);
        }
        _ => return None,
    }
    Some(w.0)
}

/// Several pushes' payloads (from [`encode_push`]) as one: a node sends
/// the messages of one round for one node in one `PUBLISH`.
#[must_use]
pub fn encode_batch(items: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        16 + items.iter().map(|i| i.len() + 8).sum::<usize>(),
    ));
    w.text("B");
    w.num(items.len() as u64);
    for i in items {
        w.atom(i);
    }
    w.0
}

/// The pushes of a node channel's payload: one, or a batch of them (see
/// [`encode_batch`]).
///
/// # Errors
/// As [`decode_push`], for the batch or any push in it: then none of it.
pub fn decode_pushes(payload: Bytes) -> Result<Vec<Push>, DecodeError> {
    if !payload.starts_with(b"1:B") {
        return decode_push(payload).map(|p| vec![p]);
    }
    let mut r = Reader {
        buf: payload,
        pos: 3,
    };
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_push(r.bytes()?)?);
    }
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(out)
}

/// A push from a node channel's payload.
///
/// # Errors
/// Any malformed payload: truncated, an unknown tag, a non-decimal number,
/// text that is not UTF-8, or bytes left over.
pub fn decode_push(payload: Bytes) -> Result<Push, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let push = match r.tag()? {
        b'J' => {
            let req = r.num()?;
            let outcome = match r.tag()? {
                b'S' => {
                    let n = r.count()?;
                    let mut peers = Vec::with_capacity(n);
                    for _ in 0..n {
                        peers.push((r.text()?, r.opt_text()?));
                    }
                    let media = parse_media(&mut r)?;
                    let media_node = r.opt_text()?.map(NodeId);
                    SeatOutcome::Seated {
                        peers,
                        media,
                        media_node,
                    }
                }
                b'F' => SeatOutcome::Full,
                b'X' => SeatOutcome::Forbidden,
                b'N' => SeatOutcome::NoRelay,
                t => return Err(unknown(t)),
            };
            Push::JoinAnswer { req, outcome }
        }
        b'P' => {
            let req = r.num()?;
            let counted = r.num()?;
            let n = r.count()?;
            let mut nodes = Vec::with_capacity(n);
            for _ in 0..n {
                nodes.push(r.node()?);
            }
            Push::Published {
                req,
                counted,
                nodes,
            }
        }
        b'D' => Push::Deliver {
            from: r.node()?,
            req: r.opt_num()?,
            room: r.text()?,
            event: read_event(&mut r)?,
            sessions: r.texts()?,
        },
        b'C' => Push::Counted {
            req: r.num()?,
            from: r.node()?,
            count: r.num()?,
        },
        b'K' => {
            let req = r.num()?;
            let outcome = match r.tag()? {
                b'U' => TakeOutcome::Unknown,
                b'T' => TakeOutcome::Taken(read_record(&mut r)?),
                b'G' => TakeOutcome::Gap(read_record(&mut r)?),
                t => return Err(unknown(t)),
            };
            Push::Took { req, outcome }
        }
        b'T' => Push::Taken { session: r.text()? },
        b'A' => {
            let req = r.num()?;
            let n = r.count()?;
            let mut sessions = Vec::with_capacity(n);
            for _ in 0..n {
                sessions.push(read_record(&mut r)?);
            }
            Push::Adopted { req, sessions }
        }
        b'N' => Push::NodeDied { node: r.node()? },
        b'O' => Push::RoomMedia {
            room: r.text()?,
            node: r.opt_text()?.map(NodeId),
        },
        b'W' => Push::MediaNode {
            room: r.text()?,
            node: r.opt_text()?.map(NodeId),
        },
        b'R' => Push::Ring {
            from: r.node()?,
            req: r.num()?,
            call: r.text()?,
            user: r.text()?,
            except: r.text()?,
            body: r.bytes()?,
        },
        b'M' => Push::Told {
            from: r.node()?,
            msg: read_msg(&mut r)?,
        },
        b'Y' => Push::Resynced {
            lost: r.texts()?,
            generation: r.num()?,
        },
        b'X' => Push::Dead,
        b'L' => {
            let req = r.num()?;
            let n = r.count()?;
            let mut rooms = Vec::with_capacity(n);
            for _ in 0..n {
                rooms.push(RoomInfo {
                    room: r.text()?,
                    peers: r.num()?,
                    age_ms: r.num()?,
                    media: parse_media(&mut r)?,
                });
            }
            Push::Rooms { req, rooms }
        }
        b'V' => {
            let req = r.num()?;
            let room = match r.opt_num()? {
                None => None,
                Some(age_ms) => {
                    let media = parse_media(&mut r)?;
                    let n = r.count()?;
                    let mut members = Vec::with_capacity(n);
                    for _ in 0..n {
                        members.push(MemberInfo {
                            peer: r.text()?,
                            user: r.opt_text()?,
                            meta: r.opt_text()?,
                            node: r.node()?,
                            age_ms: r.num()?,
                        });
                    }
                    Some(RoomMembers {
                        age_ms,
                        media,
                        members,
                    })
                }
            };
            Push::Room { req, room }
        }
        b'Z' => Push::Kicked {
            req: r.num()?,
            kicked: r.opt_num()?,
        },
        b'Q' => Push::Kick {
            room: r.text()?,
            sessions: r.texts()?,
        },
        b'H' => {
            let room = r.text()?;
            let n = r.count()?;
            let mut nodes = Vec::with_capacity(n);
            for _ in 0..n {
                let node = r.node()?;
                let m = r.count()?;
                let mut members = Vec::with_capacity(m);
                for _ in 0..m {
                    members.push((r.text()?, r.text()?));
                }
                nodes.push((node, members));
            }
            Push::Route { room, nodes }
        }
        b'I' => Push::Rerouted { room: r.text()? },
        t => return Err(unknown(t)),
    };
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(push)
}

/// A command this version cannot carry (`Command` is non-exhaustive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported backplane command")]
pub struct Unsupported;

/// Receives script arguments (a `redis::Cmd`, or a list in tests).
pub(crate) trait Args {
    fn arg(&mut self, a: &[u8]);
    /// One argument holding the atoms `build` writes.
    fn atoms(&mut self, build: impl FnOnce(&mut Writer)) {
        let mut w = Writer::default();
        build(&mut w);
        self.arg(&w.0);
    }
    fn text(&mut self, s: &str) {
        self.arg(s.as_bytes());
    }
    fn num(&mut self, n: u64) {
        self.text(&n.to_string());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(&format!("+{s}")),
            None => self.arg(b"-"),
        }
    }
    fn opt_num(&mut self, n: Option<u64>) {
        self.opt(n.map(|n| n.to_string()).as_deref());
    }
    fn list(&mut self, items: &[Text]) {
        self.num(items.len() as u64);
        for i in items {
            self.text(i);
        }
    }
    fn copies(&mut self, items: &[Copy]) {
        self.num(items.len() as u64);
        for (session, epoch) in items {
            self.text(session);
            self.num(u64::from(*epoch));
        }
    }
    fn record(&mut self, rec: &SessionRecord) {
        self.text(&rec.session);
        self.text(&rec.token);
        self.text(&rec.peer);
        self.opt(rec.user.as_deref());
        self.text(face_tag(rec.face));
        self.num(rec.seq);
        self.num(rec.frames.len() as u64);
        for (seq, body) in &rec.frames {
            self.num(*seq);
            self.arg(body);
        }
        self.list(&rec.rooms);
        self.num(u64::from(rec.epoch));
        self.opt_num(rec.base);
    }
}

impl Args for redis::Cmd {
    fn arg(&mut self, a: &[u8]) {
        redis::Cmd::arg(self, a);
    }
}

/// One command's script arguments, flat in one buffer (two allocations a
/// command, numbers written in place), until the writer copies them into
/// its batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoded {
    buf: Vec<u8>,
    /// Where each argument ends in `buf`.
    ends: Vec<usize>,
}

impl Encoded {
    /// Empty, with room for most commands' arguments: grown once at most.
    pub(crate) fn for_command(cmd: &Command) -> Self {
        let big = match cmd {
            Command::Persist { body, .. } => body.len(),
            Command::Publish {
                event: RoomEvent::Message { data, .. },
                ..
            } => data.len(),
            _ => 0,
        };
        Encoded {
            buf: Vec::with_capacity(192 + big),
            ends: Vec::with_capacity(16),
        }
    }

    /// The arguments, in order.
    pub(crate) fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let a = self.buf.get(start..end).unwrap_or_default();
            start = end;
            a
        })
    }
    pub(crate) fn count(&self) -> usize {
        self.ends.len()
    }
    /// Its arguments' bytes.
    pub(crate) fn data_len(&self) -> usize {
        self.buf.len()
    }
    /// Its size on the wire, about.
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len() + 16 * self.ends.len()
    }
}

impl Args for Encoded {
    fn arg(&mut self, a: &[u8]) {
        self.buf.extend_from_slice(a);
        self.ends.push(self.buf.len());
    }
    fn atoms(&mut self, build: impl FnOnce(&mut Writer)) {
        // Written in place rather than into a buffer of its own.
        let mut w = Writer(std::mem::take(&mut self.buf));
        build(&mut w);
        self.buf = w.0;
        self.ends.push(self.buf.len());
    }
    fn num(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.arg(decimal(n, &mut digits));
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.buf.push(b'+');
                self.buf.extend_from_slice(s.as_bytes());
                self.ends.push(self.buf.len());
            }
            None => self.arg(b"-"),
        }
    }
    fn opt_num(&mut self, n: Option<u64>) {
        match n {
            Some(n) => {
                let mut digits = [0u8; 20];
                self.buf.push(b'+');
                self.buf.extend_from_slice(decimal(n, &mut digits));
                self.ends.push(self.buf.len());
            }
            None => self.arg(b"-"),
        }
    }
}

impl Args for Vec<Vec<u8>> {
    fn arg(&mut self, a: &[u8]) {
        self.push(a.to_vec());
    }
}

/// The peer a room event is about: the store never sends it its own.
fn subject(e: &RoomEvent) -> &str {
    match e {
        RoomEvent::OtherJoined { peer, .. } | RoomEvent::Bye { peer } => peer,
        RoomEvent::Message { from, .. } => from,
    }
}

/// A random `u64` from the standard library's per-process random keys
/// (seeded by the OS) and the clock: no dependency for one number.
fn new_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

/// Whether the store answers `cmd` with whether it applied it, and the
/// node needs that answer ([`Command::Persist`], [`Command::Resumed`]).
#[must_use]
pub fn answered(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Persist { .. } | Command::Append { .. } | Command::Resumed { .. }
    )
}

/// The key of the list that keeps a session's frames for one epoch (see
/// `kfe` in store.lua): a [`Command::Append`] is a plain `RPUSH` to it.
#[must_use]
pub fn frames_key(prefix: &str, session: &str, epoch: u32) -> String {
    format!("{prefix}:f:{session}:{epoch}")
}

/// A kept frame as the store holds it: `seq:body`.
#[must_use]
pub fn frame_entry(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut digits = [0u8; 20];
    let seq = decimal(seq, &mut digits);
    let mut e = Vec::with_capacity(seq.len() + 1 + body.len());
    e.extend_from_slice(seq);
    e.push(b':');
    e.extend_from_slice(body);
    e
}

/// Writes the op name and arguments of `cmd` (after the fixed ones).
pub(crate) fn command_args(cmd: &Command, out: &mut impl Args) -> Result<(), Unsupported> {
    match cmd {
        Command::Heartbeat => out.text("heartbeat"),
        Command::Register(rec) => {
            out.text("register");
            out.record(rec);
        }
        Command::Join {
            req,
            session,
            room,
            meta,
            limits,
            private,
            media,
            relay,
        } => {
            out.text("join");
            out.num(*req);
            out.text(session);
            out.text(room);
            out.opt(meta.as_deref());
            out.num(limits.max_peers as u64);
            out.num(limits.max_listed as u64);
            match private {
                Some([a, b]) => {
                    out.num(2);
                    out.text(a);
                    out.text(b);
                }
                None => out.num(0),
            }
            out.text(media_tag(*media));
            out.text(if *relay { "1" } else { "0" });
        }
        Command::Leave { session, room } => {
            out.text("leave");
            out.text(session);
            out.text(room);
        }
        Command::Publish {
            req,
            room,
            to,
            event,
            local,
            classic,
        } => {
            out.text("publish");
            out.opt_num(*req);
            out.text(room);
            out.opt(to.as_deref());
            // The store routes around the event's subject: named apart so
            // that the script need not parse the event it copies.
            out.text(subject(event));
            out.atoms(|w| write_event(w, event));
            out.copies(local);
            out.num(*classic);
        }
        Command::Persist {
            session,
            epoch,
            seq,
            body,
            sent,
        } => {
            out.text("persist");
            out.text(session);
            out.num(u64::from(*epoch));
            out.num(*seq);
            out.arg(body);
            out.text(if *sent { "1" } else { "0" });
        }
        Command::Trim { session, last_seq } => {
            out.text("trim");
            out.text(session);
            out.num(*last_seq);
        }
        Command::Report {
            to,
            req,
            sessions,
            classic,
        } => {
            out.text("report");
            out.text(&to.0);
            out.num(*req);
            out.copies(sessions);
            out.num(*classic);
        }
        Command::End { session } => {
            out.text("end");
            out.text(session);
        }
        Command::Take {
            req,
            session,
            token,
            last_seq,
        } => {
            out.text("take");
            out.num(*req);
            out.text(session);
            out.text(token);
            out.num(*last_seq);
        }
        Command::Resumed {
            session,
            epoch,
            last_seq,
            seq,
        } => {
            out.text("resumed");
            out.text(session);
            out.num(u64::from(*epoch));
            out.num(*last_seq);
            out.num(*seq);
        }
        Command::Adopt { req, dead } => {
            out.text("adopt");
            out.num(*req);
            out.text(&dead.0);
        }
        Command::Ring {
            req,
            call,
            user,
            except,
            body,
        } => {
            out.text("ring");
            out.num(*req);
            out.text(call);
            out.text(user);
            out.text(except);
            out.arg(body);
        }
        Command::Tell { to, msg } => {
            let mut w = Writer::default();
            write_msg(&mut w, msg).ok_or(Unsupported)?;
            out.text("tell");
            out.text(&to.0);
            out.arg(&w.0);
        }
        Command::Resync {
            sessions,
            generation,
        } => {
            out.text("resync");
            out.opt_num(*generation);
            // The generation Redis takes if it has none yet (it started
            // empty): new on every call, so that a restarted Redis never
            // says what the one before said.
            out.num(new_generation());
            out.num(sessions.len() as u64);
            for rec in sessions {
                out.record(rec);
            }
        }
        Command::Rooms { req } => {
            out.text("rooms");
            out.num(*req);
        }
        Command::Room { req, room } => {
            out.text("room");
            out.num(*req);
            out.text(room);
        }
        Command::MediaAway => out.text("media_away"),
        Command::Route { room } => {
            out.text("route");
            out.text(room);
        }
        Command::Drop { session, epoch } => {
            out.text("drop");
            out.text(session);
            out.num(u64::from(*epoch));
        }
        Command::Kick { req, room, peer } => {
            out.text("kick");
            out.num(*req);
            out.text(room);
            out.opt(peer.as_deref());
        }
        _ => return Err(Unsupported),
    }
    Ok(())
}

#[cfg(test)]
mod tests;

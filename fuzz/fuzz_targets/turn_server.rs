//! A stateful `switchboard_turn::TurnServer` driven by a script of datagrams from a few
//! clients (UDP, TCP, IPv6) and peers, with virtual time and a fake shell that binds relay
//! sockets (at once, late, out of order, or not at all).
//!
//! Most requests are built with the stun crate's builders and signed with a static user's
//! key (the nonce is learned from the server's 401 as a real client does), so the fuzzer
//! gets past authentication: the input picks methods, attributes and their values, may add
//! one arbitrary attribute before the signature, or flip bytes after it. Raw datagrams
//! cover the rest.
//!
//! Checked after every step:
//! - no panic;
//! - every transmit to a client is a whole, well-formed STUN message with FINGERPRINT, or a
//!   ChannelData frame (padded, one frame, on TCP); it goes to the client of its 5-tuple;
//! - a success response to an authenticated request carries integrity under a known key;
//! - relayed datagrams leave from a relay socket the shell has bound and not released, to
//!   an address the peer policy allows or the exact address of a live relay;
//! - a relay socket is never released twice, nor one the shell did not bind;
//! - the allocation gauge matches the live allocations, within `max_allocations`; no
//!   permission or channel is counted without an allocation.
//!
//! At the end (streams closed, held binds failed, hours passed): no allocation is left and
//! every relay socket has been released.
#![no_main]

#[path = "../common/input.rs"]
mod input;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use input::Input;
use libfuzzer_sys::fuzz_target;
use switchboard_stun::attr::{Nonce, Realm};
use switchboard_stun::{
    AttrType, ChannelData, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
    long_term_key_md5, long_term_key_sha256, stream_frame_len,
};
use switchboard_turn::{
    Cidr, Event, Family, FiveTuple, PeerPolicy, RelayAddress, RelayRequestId, ServerConfig, Source,
    Transport, TurnServer,
};

const REALM: &str = "fuzz.realm";
const USER: &str = "fuzz";
const PASSWORD: &str = "fuzz-pw";
const REST_SECRET: &str = "rest-secret";
const UNIX_START: u64 = 1_700_000_000;
const MAX_OPS: usize = 200;
const MAX_ALLOCATIONS: usize = 3;

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("a literal address"))
}

/// A client's credentials and what it learned from the server.
struct Client {
    ft: FiveTuple,
    username: String,
    password: String,
    nonce: Vec<u8>,
    realm: String,
    next_tid: u32,
}

/// Which ready-made request to build.
#[derive(Clone, Copy)]
enum Kind {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Send,
    Binding,
}

struct Harness {
    server: TurnServer,
    now: Instant,
    unix: u64,
    clients: Vec<Client>,
    /// Peers the script may name: public, denied, and (appended when bound) relay addresses.
    peers: Vec<SocketAddr>,
    /// Relay sockets bound and not yet released, by local address, with their public one.
    bound: HashMap<SocketAddr, SocketAddr>,
    released: HashSet<SocketAddr>,
    /// The server's peer policy, for the relay check.
    policy: PeerPolicy,
    next_port: u16,
    /// BindRelay requests the shell holds back, answered later by a script step.
    waiting: Vec<(RelayRequestId, Family, Option<SocketAddr>)>,
    /// How the shell answers BindRelay now: 0 at once, 1 fail, 2 hold back.
    bind_mode: u8,
    tokens: Vec<[u8; 8]>,
    channels: Vec<u16>,
    /// Every key a legitimate answer may be sealed with.
    keys: Vec<Vec<u8>>,
}

impl Harness {
    fn new(inp: &mut Input<'_>) -> Self {
        let now = Instant::now();
        let flags = inp.u8();
        let mut config = ServerConfig::new(REALM, b"fuzz-nonce-secret".to_vec());
        config.credentials.add_user(USER, PASSWORD);
        config.credentials.add_rest_secret(REST_SECRET);
        // Small quotas so that a short script reaches them.
        config.max_allocations = MAX_ALLOCATIONS;
        config.max_allocations_per_user = 2;
        config.nonce_lifetime = Duration::from_secs(60);
        config.allow_rfc5766_channels = flags & 1 != 0;
        config.relay_ipv6 = flags & 2 != 0;
        config.relay_ipv4 = flags & 4 == 0;
        if flags & 8 != 0 {
            config
                .policy
                .allow(Cidr::new(addr("10.0.0.0:0").ip(), 8).expect("a CIDR"));
        }
        if flags & 16 != 0 {
            config.software = None;
        }
        let (rest_user, rest_pw) = switchboard_turn::auth::mint_rest_credential(
            REST_SECRET.as_bytes(),
            UNIX_START + 120,
            "peer-1",
        );
        let server_addr = addr("192.0.2.10:3478");
        let server_v6 = addr("[2001:db8::10]:3478");
        let client = |transport, client: &str, server, username: &str, password: &str| Client {
            ft: FiveTuple {
                transport,
                client: addr(client),
                server,
            },
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: Vec::new(),
            realm: REALM.to_owned(),
            next_tid: 0,
        };
        let clients = vec![
            client(
                Transport::Udp,
                "198.51.100.1:40000",
                server_addr,
                USER,
                PASSWORD,
            ),
            client(
                Transport::Udp,
                "198.51.100.2:40000",
                server_addr,
                USER,
                PASSWORD,
            ),
            client(
                Transport::Tcp,
                "198.51.100.1:40001",
                server_addr,
                USER,
                PASSWORD,
            ),
            client(
                Transport::Udp,
                "[2001:db8::1]:40000",
                server_v6,
                &rest_user,
                &rest_pw,
            ),
        ];
        let mut keys = Vec::new();
        for (u, p) in [(USER, PASSWORD), (rest_user.as_str(), rest_pw.as_str())] {
            keys.push(long_term_key_md5(u, REALM, p).to_vec());
            keys.push(long_term_key_sha256(u, REALM, p).to_vec());
        }
        let peers = [
            "8.8.8.8:5000",
            "1.1.1.1:6000",
            "[2606:4700::1111]:7000",
            "10.0.0.7:5000",
            "127.0.0.1:3478",
            "192.0.2.10:3478",
            "[::ffff:127.0.0.1]:9",
        ]
        .map(addr)
        .to_vec();
        Harness {
            policy: config.policy.clone(),
            server: TurnServer::new(config, now),
            now,
            unix: UNIX_START,
            clients,
            peers,
            bound: HashMap::new(),
            released: HashSet::new(),
            next_port: 49152,
            waiting: Vec::new(),
            bind_mode: 0,
            tokens: Vec::new(),
            channels: Vec::new(),
            keys,
        }
    }

    fn peer(&self, inp: &mut Input<'_>) -> SocketAddr {
        let b = inp.u8();
        if b == 255 {
            // Anything at all: the peer policy decides.
            let port = inp.u16();
            let ip = std::net::Ipv4Addr::from(inp.u32());
            SocketAddr::new(ip.into(), port)
        } else {
            self.peers[usize::from(b) % self.peers.len()]
        }
    }

    fn channel(&self, inp: &mut Input<'_>) -> u16 {
        match inp.u8() % 4 {
            0 => inp.u16(),
            1 if !self.channels.is_empty() => {
                self.channels[usize::from(inp.u8()) % self.channels.len()]
            }
            _ => 0x4000 + u16::from(inp.u8() % 4),
        }
    }

    fn build(&mut self, inp: &mut Input<'_>, c: usize, kind: Kind) -> Vec<u8> {
        let signed = !inp.u8().is_multiple_of(8);
        let sha256 = inp.u8().is_multiple_of(4);
        let extra = inp.u8().is_multiple_of(6);
        let peer = self.peer(inp);
        let peer2 = self.peer(inp);
        let channel = self.channel(inp);
        let token = match inp.u8() % 3 {
            0 if !self.tokens.is_empty() => {
                Some(self.tokens[usize::from(inp.u8()) % self.tokens.len()])
            }
            1 => Some(
                inp.u32()
                    .to_be_bytes()
                    .repeat(2)
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
            _ => None,
        };
        let opts = inp.u8();
        let lifetime = match inp.u8() % 4 {
            0 => Some(0),
            1 => Some(inp.u32()),
            2 => Some(u32::from(inp.u8()) * 10),
            _ => None,
        };
        let data = inp.long_bytes(1500);
        let (extra_type, extra_value) = if extra {
            (inp.u16(), inp.bytes(64))
        } else {
            (0, &[][..])
        };

        let client = &mut self.clients[c];
        client.next_tid += 1;
        let mut id = [0x5a; 12];
        id[..4].copy_from_slice(&(c as u32).to_be_bytes());
        id[8..].copy_from_slice(&client.next_tid.to_be_bytes());
        let tid = TransactionId::new(id);
        let ty = match kind {
            Kind::Allocate => MessageType::new(Method::ALLOCATE, Class::Request),
            Kind::Refresh => MessageType::new(Method::REFRESH, Class::Request),
            Kind::CreatePermission => MessageType::new(Method::CREATE_PERMISSION, Class::Request),
            Kind::ChannelBind => MessageType::new(Method::CHANNEL_BIND, Class::Request),
            Kind::Send => MessageType::SEND_INDICATION,
            Kind::Binding => MessageType::BINDING_REQUEST,
        };
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, ty, tid);
        match kind {
            Kind::Allocate => {
                let proto = if opts & 1 != 0 { 6 } else { 17 };
                b.add_raw(AttrType::REQUESTED_TRANSPORT, &[proto, 0, 0, 0]);
                if opts & 2 != 0 {
                    b.add_raw(AttrType::EVEN_PORT, &[if opts & 4 != 0 { 0x80 } else { 0 }]);
                }
                if opts & 8 != 0 {
                    let family = if opts & 16 != 0 { 2 } else { 1 };
                    b.add_raw(AttrType::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0]);
                }
                if opts & 32 != 0 {
                    b.add_raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                }
                if let Some(token) = token.filter(|_| opts & 64 != 0) {
                    b.add_raw(AttrType::RESERVATION_TOKEN, &token);
                }
                if opts & 128 != 0 {
                    b.add_raw(AttrType::DONT_FRAGMENT, &[]);
                }
                if let Some(secs) = lifetime {
                    b.add_lifetime(secs);
                }
            }
            Kind::Refresh => {
                if let Some(secs) = lifetime {
                    b.add_lifetime(secs);
                }
                if opts & 8 != 0 {
                    let family = if opts & 16 != 0 { 2 } else { 1 };
                    b.add_raw(AttrType::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0]);
                }
            }
            Kind::CreatePermission => {
                b.add_xor_peer_address(peer);
                if opts & 1 != 0 {
                    b.add_xor_peer_address(peer2);
                }
            }
            Kind::ChannelBind => {
                if self.channels.len() < 8 && !self.channels.contains(&channel) {
                    self.channels.push(channel);
                }
                b.add_channel_number(channel);
                if opts & 1 == 0 {
                    b.add_xor_peer_address(peer);
                }
            }
            Kind::Send => {
                b.add_xor_peer_address(peer);
                if opts & 1 == 0 {
                    b.add_data(data);
                }
                if opts & 2 != 0 {
                    b.add_raw(AttrType::DONT_FRAGMENT, &[]);
                }
            }
            Kind::Binding => {}
        }
        if extra {
            b.add_raw(AttrType(extra_type), extra_value);
        }
        let authenticated = !matches!(kind, Kind::Send | Kind::Binding);
        if signed && authenticated {
            b.add_username(&client.username)
                .add_realm(&client.realm)
                .add_nonce(&client.nonce);
            if sha256 {
                b.add_raw(AttrType::PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0]);
                b.add_raw(AttrType::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
                let key = long_term_key_sha256(&client.username, &client.realm, &client.password);
                b.add_message_integrity_sha256(&key);
            } else {
                let key = long_term_key_md5(&client.username, &client.realm, &client.password);
                b.add_message_integrity(&key);
            }
        }
        if opts & 4 == 0 || !authenticated {
            b.add_fingerprint();
        }
        match b.finish() {
            Ok(bytes) => bytes.to_vec(),
            // Too big for a message (a long DATA plus extras): send the header-only remains.
            Err(_) => Vec::new(),
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let c = inp.pick(self.clients.len());
        match inp.u8() % 16 {
            0 | 1 => {
                let bytes = self.build(inp, c, Kind::Allocate);
                self.client_sends(c, &bytes);
            }
            2 => {
                let bytes = self.build(inp, c, Kind::Refresh);
                self.client_sends(c, &bytes);
            }
            3 => {
                let bytes = self.build(inp, c, Kind::CreatePermission);
                self.client_sends(c, &bytes);
            }
            4 => {
                let bytes = self.build(inp, c, Kind::ChannelBind);
                self.client_sends(c, &bytes);
            }
            5 => {
                let bytes = self.build(inp, c, Kind::Send);
                self.client_sends(c, &bytes);
            }
            6 => {
                let bytes = self.build(inp, c, Kind::Binding);
                self.client_sends(c, &bytes);
            }
            7 => {
                // A well-formed message, then damaged: a few bytes overwritten.
                let kind =
                    [Kind::Allocate, Kind::Refresh, Kind::ChannelBind, Kind::Send][inp.pick(4)];
                let mut bytes = self.build(inp, c, kind);
                for _ in 0..inp.u8() % 4 {
                    let at = usize::from(inp.u16());
                    let v = inp.u8();
                    if !bytes.is_empty() {
                        let len = bytes.len();
                        bytes[at % len] = v;
                    }
                }
                if inp.bool() {
                    bytes.truncate(usize::from(inp.u16()));
                }
                self.client_sends(c, &bytes);
            }
            8 => {
                let channel = self.channel(inp);
                let data = inp.long_bytes(1500);
                let mut bytes = Vec::new();
                let stream = self.clients[c].ft.transport.is_stream();
                if let Ok(cd) = ChannelData::new(channel, data) {
                    cd.encode(&mut bytes, stream);
                } else {
                    bytes.extend_from_slice(&channel.to_be_bytes());
                    bytes.extend_from_slice(data);
                }
                self.client_sends(c, &bytes);
            }
            9 => {
                let bytes = inp.long_bytes(1500);
                self.client_sends(c, bytes);
            }
            10 | 11 => {
                // A peer writes to a relay socket (bound, released, or never bound).
                let relay = match self.bound.keys().nth(inp.pick(4)) {
                    Some(&r) if !inp.u8().is_multiple_of(8) => r,
                    _ => SocketAddr::new(addr("10.0.0.2:0").ip(), 49152 + u16::from(inp.u8() % 8)),
                };
                let peer = self.peer(inp);
                let data = inp.long_bytes(1500);
                self.server.handle_peer(self.now, relay, peer, data);
                self.drain();
            }
            12 => {
                let by = match inp.u8() % 4 {
                    0 => Duration::from_secs(u64::from(inp.u16())),
                    1 => Duration::from_millis(u64::from(inp.u16())),
                    _ => Duration::from_secs(u64::from(inp.u8())),
                };
                self.advance(by);
            }
            13 => {
                self.server.connection_closed(self.clients[c].ft);
                self.drain();
            }
            14 => {
                self.bind_mode = inp.u8() % 3;
                if !self.waiting.is_empty() {
                    let i = inp.pick(self.waiting.len());
                    let (id, family, exact) = self.waiting.swap_remove(i);
                    let ok = !inp.u8().is_multiple_of(4);
                    self.answer_bind(id, family, exact, ok);
                    if inp.u8().is_multiple_of(8) {
                        // Answered twice: the server must release what it did not ask for.
                        self.answer_bind(id, family, None, true);
                    }
                    self.drain();
                }
            }
            _ => {
                // A client whose nonce or realm is wrong or stale.
                let client = &mut self.clients[c];
                match inp.u8() % 3 {
                    0 => client.nonce = inp.bytes(40).to_vec(),
                    1 => client.realm = String::from_utf8_lossy(inp.bytes(20)).into_owned(),
                    _ => client.realm = REALM.to_owned(),
                }
            }
        }
    }

    /// Gauges and quotas hold after every step.
    fn check_counts(&self) {
        let m = self.server.metrics();
        let live = self.server.allocation_count();
        assert_eq!(
            m.allocations, live as u64,
            "allocation gauge drifted: {m:?}"
        );
        assert!(live <= MAX_ALLOCATIONS, "over max_allocations: {live}");
        if live == 0 {
            assert_eq!(
                (m.permissions, m.channels),
                (0, 0),
                "gauges without allocations: {m:?}"
            );
        }
    }

    fn client_sends(&mut self, c: usize, bytes: &[u8]) {
        let ft = self.clients[c].ft;
        self.server.handle_client(self.now, self.unix, ft, bytes);
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        // Each round fires the earliest timer; the bound is a backstop, not a limit.
        for _ in 0..1000 {
            match self.server.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = target;
        self.unix += by.as_secs();
        self.server.handle_timeout(self.now);
        self.drain();
    }

    fn answer_bind(
        &mut self,
        id: RelayRequestId,
        family: Family,
        exact: Option<SocketAddr>,
        ok: bool,
    ) {
        let local = match exact {
            Some(local) => local,
            None => {
                self.next_port = self.next_port.wrapping_add(2).max(49152);
                let ip = match family {
                    Family::V4 => addr("10.0.0.2:0").ip(),
                    Family::V6 => addr("[fd00::2]:0").ip(),
                };
                SocketAddr::new(ip, self.next_port)
            }
        };
        // A real shell cannot bind an address that is in use.
        let ok = ok && !self.bound.contains_key(&local);
        let result = ok.then(|| {
            let public = match family {
                Family::V4 => SocketAddr::new(addr("203.0.113.2:0").ip(), local.port()),
                Family::V6 => SocketAddr::new(addr("[2001:db8::2]:0").ip(), local.port()),
            };
            self.bound.insert(local, public);
            self.released.remove(&local);
            if self.peers.len() < 16 {
                self.peers.push(public);
            }
            RelayAddress { local, public }
        });
        self.server.relay_bound(self.now, id, result);
    }

    fn drain(&mut self) {
        // Binding a relay sends the Allocate's answer, which can ask for more: rounds.
        for _ in 0..16 {
            while let Some(t) = self.server.poll_transmit() {
                let (source, to, bytes) = (t.source, t.to, t.bytes.to_vec());
                self.check_transmit(source, to, &bytes);
            }
            let mut more = false;
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::BindRelay {
                        id, family, exact, ..
                    } => match self.bind_mode {
                        2 => self.waiting.push((id, family, exact)),
                        mode => {
                            self.answer_bind(id, family, exact, mode == 0);
                            more = true;
                        }
                    },
                    Event::ReleaseRelay { local } => {
                        assert!(
                            self.bound.remove(&local).is_some(),
                            "released {local}, which is not bound (released before: {})",
                            self.released.contains(&local)
                        );
                        self.released.insert(local);
                    }
                    other => panic!("an event this harness does not know: {other:?}"),
                }
            }
            if !more {
                return;
            }
        }
    }

    fn check_transmit(&mut self, source: Source, to: SocketAddr, bytes: &[u8]) {
        match source {
            Source::Relay(local) => {
                assert!(
                    self.bound.contains_key(&local),
                    "sent from relay {local}, which is not bound"
                );
                // The policy, or the exact address of a live relay (RFC 8656 §9 permissions
                // are per IP; the exception for the server's own relays is per address).
                let own_relay =
                    self.bound.contains_key(&to) || self.bound.values().any(|p| *p == to);
                assert!(
                    self.policy.permits(to.ip()) || own_relay,
                    "relayed to {to}, which the peer policy refuses and is no live relay"
                );
            }
            Source::Client(ft) => {
                let Some(c) = self.clients.iter().position(|c| c.ft == ft) else {
                    panic!("sent on a 5-tuple no client has: {ft:?}");
                };
                assert_eq!(to, ft.client, "sent to another address than the client's");
                if ft.transport.is_stream() {
                    assert_eq!(
                        stream_frame_len(bytes),
                        Ok(Some(bytes.len())),
                        "a stream transmit is not exactly one frame: {bytes:02x?}"
                    );
                }
                if bytes.first().is_some_and(|b| b >> 6 == 1) {
                    let cd = ChannelData::parse(bytes)
                        .unwrap_or_else(|e| panic!("bad ChannelData ({e:?}): {bytes:02x?}"));
                    assert!((0x4000..=0x7fff).contains(&cd.channel()));
                    return;
                }
                let msg = Message::parse(bytes)
                    .unwrap_or_else(|e| panic!("bad STUN message ({e:?}): {bytes:02x?}"));
                self.check_message(c, &msg);
            }
        }
    }

    fn check_message(&mut self, c: usize, msg: &Message<'_>) {
        if msg.message_type() == MessageType::DATA_INDICATION {
            return;
        }
        assert!(
            matches!(msg.class(), Class::SuccessResponse | Class::ErrorResponse),
            "the server sent a {:?} to a client",
            msg.message_type()
        );
        msg.verify_fingerprint()
            .expect("a response carries a valid FINGERPRINT");
        if let Ok(Some(Nonce(n))) = msg.get::<Nonce>() {
            self.clients[c].nonce = n.to_vec();
        }
        if let Ok(Some(Realm(r))) = msg.get::<Realm>() {
            self.clients[c].realm = r.to_owned();
        }
        if let Some(token) = msg.get_raw(AttrType::RESERVATION_TOKEN)
            && let Ok(token) = <[u8; 8]>::try_from(token)
            && self.tokens.len() < 8
        {
            self.tokens.push(token);
        }
        if msg.class() == Class::SuccessResponse && msg.method() != Method::BINDING {
            assert!(
                self.keys.iter().any(|k| msg.verify_integrity(k).is_ok()),
                "a success response to {:?} without integrity under a known key",
                msg.method()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut h = Harness::new(&mut inp);
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
        h.check_counts();
    }
    // Streams close, the shell answers what it held, and every lifetime runs out: nothing
    // may be left allocated, and every relay socket must have been released.
    for c in 0..h.clients.len() {
        if h.clients[c].ft.transport.is_stream() {
            h.server.connection_closed(h.clients[c].ft);
        }
    }
    h.bind_mode = 1;
    for (id, family, exact) in std::mem::take(&mut h.waiting) {
        h.answer_bind(id, family, exact, false);
    }
    h.drain();
    h.advance(Duration::from_secs(4 * 3600));
    assert_eq!(
        h.server.allocation_count(),
        0,
        "allocations outlive their lifetime"
    );
    assert!(
        h.bound.is_empty(),
        "relay sockets never released: {:?}",
        h.bound.keys().collect::<Vec<_>>()
    );
});

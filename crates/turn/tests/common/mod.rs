//! A virtual-clock harness: a scripted TURN client and a fake shell that
//! binds relay "sockets" instantly, so a test drives hours of protocol time
//! in microseconds.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_stun::attr::{
    ErrorCode, Lifetime, Nonce, Realm, XorMappedAddress, XorRelayedAddress,
};
use switchboard_stun::{
    Class, Message, MessageBuilder, MessageType, Method, TransactionId, long_term_key_md5,
};
use switchboard_turn::{
    Event, Family, FiveTuple, RelayAddress, ServerConfig, Source, Transport, TurnServer,
};

pub const REALM: &str = "test.realm";
pub const UNIX_NOW: u64 = 1_700_000_000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// What came out of the server, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub source: Source,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Harness {
    pub server: TurnServer,
    pub start: Instant,
    pub now: Instant,
    pub unix: u64,
    next_port: u16,
    /// When false, BindRelay is answered with a failure.
    pub bind_ok: bool,
    /// When false, binding a reserved port fails.
    pub reserve_ok: bool,
    /// Answer BindRelay at once; when false, requests wait in `pending_binds`.
    pub auto_bind: bool,
    pub pending_binds: Vec<(switchboard_turn::RelayRequestId, Family)>,
    pub released: Vec<SocketAddr>,
    pub bind_requests: Vec<Event>,
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new(REALM, b"nonce-secret".to_vec());
    c.credentials.add_user("alice", "alice-pw");
    c.credentials.add_user("bob", "bob-pw");
    c.credentials.add_rest_secret("rest-secret");
    c
}

impl Harness {
    pub fn new(config: ServerConfig) -> Self {
        let start = Instant::now();
        Self {
            server: TurnServer::new(config, start),
            start,
            now: start,
            unix: UNIX_NOW,
            next_port: 50_000,
            bind_ok: true,
            reserve_ok: true,
            auto_bind: true,
            pending_binds: Vec::new(),
            released: Vec::new(),
            bind_requests: Vec::new(),
        }
    }

    /// Moves the virtual clock, firing every timer on the way.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.server.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drain_events();
        }
        self.now = target;
        self.unix += by.as_secs();
        self.server.handle_timeout(self.now);
        self.drain_events();
    }

    pub fn client_sends(&mut self, ft: FiveTuple, bytes: &[u8]) -> Vec<Sent> {
        self.server.handle_client(self.now, self.unix, ft, bytes);
        self.drain()
    }

    pub fn peer_sends(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) -> Vec<Sent> {
        self.server.handle_peer(self.now, relay, peer, bytes);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        loop {
            while let Some(t) = self.server.poll_transmit() {
                out.push(Sent {
                    source: t.source,
                    to: t.to,
                    bytes: t.bytes.to_vec(),
                });
            }
            if !self.drain_events() {
                return out;
            }
        }
    }

    /// Handles events; true when a relay was bound (more output may follow).
    fn drain_events(&mut self) -> bool {
        let mut bound = false;
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::BindRelay {
                    id, family, exact, ..
                } => {
                    self.bind_requests.push(event.clone());
                    if let Some(local) = exact {
                        let public =
                            SocketAddr::new("203.0.113.2".parse().expect("ip"), local.port());
                        let ok = self.bind_ok && self.reserve_ok;
                        self.server.relay_bound(
                            self.now,
                            id,
                            ok.then_some(RelayAddress { local, public }),
                        );
                        bound = true;
                    } else if self.auto_bind {
                        self.answer_bind(id, family, self.bind_ok);
                        bound = true;
                    } else {
                        self.pending_binds.push((id, family));
                    }
                }
                Event::ReleaseRelay { local } => self.released.push(local),
                _ => {}
            }
        }
        bound
    }

    pub fn answer_bind(&mut self, id: switchboard_turn::RelayRequestId, family: Family, ok: bool) {
        let result = ok.then(|| {
            self.next_port += 1;
            let local = match family {
                Family::V4 => SocketAddr::new("10.0.0.2".parse().expect("ip"), self.next_port),
                Family::V6 => SocketAddr::new("fd00::2".parse().expect("ip"), self.next_port),
            };
            let public = match family {
                Family::V4 => SocketAddr::new("203.0.113.2".parse().expect("ip"), self.next_port),
                Family::V6 => SocketAddr::new("2001:db8::2".parse().expect("ip"), self.next_port),
            };
            RelayAddress { local, public }
        });
        self.server.relay_bound(self.now, id, result);
    }
}

/// A scripted TURN client with long-term credentials.
pub struct Client {
    pub ft: FiveTuple,
    pub username: String,
    pub password: String,
    pub nonce: Option<Vec<u8>>,
    pub realm: String,
    next_tid: u32,
}

impl Client {
    pub fn new(transport: Transport, client: &str, username: &str, password: &str) -> Self {
        Self {
            ft: FiveTuple {
                transport,
                client: addr(client),
                server: addr("192.0.2.10:3478"),
            },
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: None,
            realm: REALM.to_owned(),
            next_tid: 0,
        }
    }

    pub fn udp(client: &str, username: &str, password: &str) -> Self {
        Self::new(Transport::Udp, client, username, password)
    }

    pub fn key(&self) -> [u8; 16] {
        long_term_key_md5(&self.username, &self.realm, &self.password)
    }

    pub fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut id = [7u8; 12];
        id[8..].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId::new(id)
    }

    /// A request without credentials.
    pub fn plain(&mut self, method: Method, fill: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(method, Class::Request),
            self.tid(),
        );
        fill(&mut b);
        b.add_fingerprint();
        b.finish().expect("encode").to_vec()
    }

    /// A request with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
    pub fn signed(
        &mut self,
        method: Method,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        self.signed_with(MessageType::new(method, Class::Request), fill)
    }

    pub fn signed_with(
        &mut self,
        ty: MessageType,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let key = self.key();
        let nonce = self.nonce.clone().unwrap_or_default();
        let tid = self.tid();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, ty, tid);
        fill(&mut b);
        b.add_username(&self.username)
            .add_realm(&self.realm)
            .add_nonce(&nonce)
            .add_message_integrity(&key)
            .add_fingerprint();
        b.finish().expect("encode").to_vec()
    }

    /// Learns REALM and NONCE from a 401/438 answer.
    pub fn learn(&mut self, answer: &[u8]) {
        let msg = Message::parse(answer).expect("parse");
        if let Ok(Some(Nonce(n))) = msg.get::<Nonce>() {
            self.nonce = Some(n.to_vec());
        }
        if let Ok(Some(Realm(r))) = msg.get::<Realm>() {
            self.realm = r.to_owned();
        }
    }

    /// The 401 dance, then an Allocate; returns the relayed address.
    pub fn allocate(&mut self, h: &mut Harness) -> SocketAddr {
        let out = h.client_sends(self.ft, &self.plain(Method::ALLOCATE, udp_transport));
        assert_eq!(error_code(&out[0].bytes), Some(401));
        self.learn(&out[0].bytes);
        let out = h.client_sends(self.ft, &self.signed(Method::ALLOCATE, udp_transport));
        assert_eq!(out.len(), 1, "{out:?}");
        let msg = Message::parse(&out[0].bytes).expect("parse");
        assert_eq!(
            msg.class(),
            Class::SuccessResponse,
            "{:?}",
            error_code(&out[0].bytes)
        );
        msg.verify_message_integrity(&self.key())
            .expect("response integrity");
        msg.verify_fingerprint().expect("fingerprint");
        msg.get::<XorRelayedAddress>()
            .expect("attr")
            .expect("relayed")
            .0
    }

    /// Sends a signed request and returns the single answer.
    pub fn ask(
        &mut self,
        h: &mut Harness,
        method: Method,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let req = self.signed(method, fill);
        let out = h.client_sends(self.ft, &req);
        assert_eq!(out.len(), 1, "one answer expected: {out:?}");
        assert_eq!(out[0].to, self.ft.client);
        assert_eq!(out[0].source, Source::Client(self.ft));
        out[0].bytes.clone()
    }
}

pub fn udp_transport(b: &mut MessageBuilder<'_>) {
    b.add(&switchboard_stun::attr::RequestedTransport::UDP);
}

pub fn error_code(bytes: &[u8]) -> Option<u16> {
    let msg = Message::parse(bytes).ok()?;
    msg.get::<ErrorCode>().ok()?.map(|e| e.code)
}

pub fn is_success(bytes: &[u8]) -> bool {
    Message::parse(bytes).is_ok_and(|m| m.class() == Class::SuccessResponse)
}

pub fn lifetime(bytes: &[u8]) -> Option<u32> {
    Message::parse(bytes)
        .ok()?
        .get::<Lifetime>()
        .ok()?
        .map(|l| l.0)
}

pub fn mapped(bytes: &[u8]) -> Option<SocketAddr> {
    Message::parse(bytes)
        .ok()?
        .get::<XorMappedAddress>()
        .ok()?
        .map(|a| a.0)
}

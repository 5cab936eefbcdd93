//! The TURN control plane of `--turn`: Allocate with the long-term
//! credential mechanism, ChannelBind to the echo peer, and Refresh with
//! LIFETIME 0 at the end. Blocking, one transaction at a time, with
//! retransmissions, on the same connected socket the load then uses.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_stun::attr::{ErrorCode, Nonce, Realm, RequestedTransport, XorRelayedAddress};
use switchboard_stun::{
    Class, HEADER_LEN, Message, MessageBuilder, MessageType, Method, TransactionId, is_stun,
    long_term_key_md5,
};

use crate::LoadError;

const TRIES: usize = 4;
const RTO: Duration = Duration::from_millis(500);
/// How many 438 (Stale Nonce) answers in a row one request accepts.
const NONCE_RETRIES: usize = 3;

/// Long-term credentials and the server's current realm and nonce.
pub(crate) struct Auth {
    user: String,
    pass: String,
    realm: String,
    nonce: Vec<u8>,
    key: [u8; 16],
}

impl Auth {
    /// Takes REALM and NONCE from a 401 or 438 answer.
    fn update(
        &mut self,
        msg: &Message<'_>,
        sock: usize,
        what: &'static str,
    ) -> Result<(), LoadError> {
        let protocol = |detail: &str| LoadError::Protocol {
            sock,
            what,
            detail: detail.into(),
        };
        let realm = msg
            .get::<Realm>()
            .ok()
            .flatten()
            .ok_or_else(|| protocol("error answer without REALM"))?;
        let nonce = msg
            .get::<Nonce>()
            .ok()
            .flatten()
            .ok_or_else(|| protocol("error answer without NONCE"))?;
        if realm.0 != self.realm {
            self.realm = realm.0.to_owned();
            self.key = long_term_key_md5(&self.user, &self.realm, &self.pass);
        }
        self.nonce = nonce.0.to_vec();
        Ok(())
    }
}

fn new_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&(std::process::id() ^ nanos).to_be_bytes());
    id[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    TransactionId::new(id)
}

/// Sends `req` until a STUN answer with its transaction id comes back
/// (other datagrams, e.g. late ChannelData, are skipped).
fn transact(
    sock: &UdpSocket,
    idx: usize,
    what: &'static str,
    req: &[u8],
    tid: TransactionId,
) -> Result<Vec<u8>, LoadError> {
    let mut buf = [0u8; 2048];
    let io_err = |e: io::Error| LoadError::Transaction {
        sock: idx,
        what,
        source: e,
    };
    for _ in 0..TRIES {
        sock.send(req).map_err(io_err)?;
        let deadline = Instant::now() + RTO;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(io_err)?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let b = &buf[..n];
                    if is_stun(b) && b[8..HEADER_LEN] == tid.as_bytes()[..] {
                        return Ok(b.to_vec());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    Err(LoadError::Timeout {
        sock: idx,
        what,
        tries: TRIES,
        rto_ms: RTO.as_millis() as u64,
    })
}

fn error_code(
    msg: &Message<'_>,
    sock: usize,
    what: &'static str,
) -> Result<(u16, String), LoadError> {
    match msg.get::<ErrorCode>() {
        Ok(Some(ec)) => Ok((ec.code, ec.reason.to_owned())),
        _ => Err(LoadError::Protocol {
            sock,
            what,
            detail: "error answer without a valid ERROR-CODE".into(),
        }),
    }
}

/// An authenticated request of `method` with the attributes `extra` adds,
/// retried with the new nonce on 438. Returns the success answer.
fn authed(
    sock: &UdpSocket,
    idx: usize,
    what: &'static str,
    method: Method,
    auth: &mut Auth,
    extra: impl Fn(&mut MessageBuilder<'_>),
) -> Result<Vec<u8>, LoadError> {
    for _ in 0..=NONCE_RETRIES {
        let tid = new_tid();
        let mut out = Vec::with_capacity(256);
        let mut b = MessageBuilder::new(&mut out, MessageType::new(method, Class::Request), tid);
        extra(&mut b);
        b.add_username(&auth.user)
            .add_realm(&auth.realm)
            .add_nonce(&auth.nonce)
            .add_message_integrity(&auth.key)
            .add_fingerprint();
        let req = b.finish()?;
        let resp = transact(sock, idx, what, req, tid)?;
        let msg = Message::parse(&resp).map_err(|e| LoadError::Protocol {
            sock: idx,
            what,
            detail: e.to_string(),
        })?;
        match msg.class() {
            Class::SuccessResponse => return Ok(resp),
            Class::ErrorResponse => {
                let (code, reason) = error_code(&msg, idx, what)?;
                if code != ErrorCode::STALE_NONCE {
                    return Err(LoadError::Rejected {
                        sock: idx,
                        what,
                        code,
                        reason,
                    });
                }
                auth.update(&msg, idx, what)?;
            }
            _ => {
                return Err(LoadError::Protocol {
                    sock: idx,
                    what,
                    detail: "answer is not a response".into(),
                });
            }
        }
    }
    Err(LoadError::Protocol {
        sock: idx,
        what,
        detail: format!("{} stale nonces in a row", NONCE_RETRIES + 1),
    })
}

/// Allocates a UDP relay for `sock`: first without credentials, expecting
/// 401 with REALM and NONCE, then with them. Returns the credentials state
/// (for later requests) and the relayed address.
pub(crate) fn allocate(
    sock: &UdpSocket,
    idx: usize,
    user: &str,
    pass: &str,
) -> Result<(Auth, SocketAddr), LoadError> {
    let what = "Allocate";
    let tid = new_tid();
    let mut out = Vec::with_capacity(64);
    let mut b = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::ALLOCATE, Class::Request),
        tid,
    );
    b.add(&RequestedTransport::UDP).add_fingerprint();
    let resp = transact(sock, idx, what, b.finish()?, tid)?;
    let msg = Message::parse(&resp).map_err(|e| LoadError::Protocol {
        sock: idx,
        what,
        detail: e.to_string(),
    })?;
    if msg.class() != Class::ErrorResponse {
        return Err(LoadError::Protocol {
            sock: idx,
            what,
            detail: "allocation granted without credentials: expected 401 (is lt-cred-mech on?)"
                .into(),
        });
    }
    let (code, reason) = error_code(&msg, idx, what)?;
    if code != ErrorCode::UNAUTHENTICATED {
        return Err(LoadError::Rejected {
            sock: idx,
            what,
            code,
            reason,
        });
    }
    let mut auth = Auth {
        user: user.to_owned(),
        pass: pass.to_owned(),
        realm: String::new(),
        nonce: Vec::new(),
        key: [0; 16],
    };
    auth.update(&msg, idx, what)?;
    let resp = authed(sock, idx, what, Method::ALLOCATE, &mut auth, |b| {
        b.add(&RequestedTransport::UDP);
    })?;
    let msg = Message::parse(&resp).map_err(|e| LoadError::Protocol {
        sock: idx,
        what,
        detail: e.to_string(),
    })?;
    match msg.get::<XorRelayedAddress>() {
        Ok(Some(a)) => Ok((auth, a.0)),
        _ => Err(LoadError::Protocol {
            sock: idx,
            what,
            detail: "success without XOR-RELAYED-ADDRESS".into(),
        }),
    }
}

/// Binds `channel` to `peer` on the allocation of `sock`.
pub(crate) fn channel_bind(
    sock: &UdpSocket,
    idx: usize,
    auth: &mut Auth,
    channel: u16,
    peer: SocketAddr,
) -> Result<(), LoadError> {
    authed(sock, idx, "ChannelBind", Method::CHANNEL_BIND, auth, |b| {
        b.add_channel_number(channel).add_xor_peer_address(peer);
    })
    .map(drop)
}

/// Deletes the allocation of `sock` (Refresh with LIFETIME 0). An allocation
/// already gone (437) counts as deleted.
pub(crate) fn release(sock: &UdpSocket, idx: usize, auth: &mut Auth) -> Result<(), LoadError> {
    match authed(sock, idx, "Refresh", Method::REFRESH, auth, |b| {
        b.add_lifetime(0);
    }) {
        Ok(_) => Ok(()),
        Err(LoadError::Rejected {
            code: ErrorCode::ALLOCATION_MISMATCH,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

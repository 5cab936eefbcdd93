//! What the server asks its IO shell to do.

use std::net::SocketAddr;

/// The client-facing transport a message came in on, or must go out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams; one message per datagram.
    Udp,
    /// A byte stream; ChannelData is padded to a multiple of 4 (RFC 8656 §12.5).
    Tcp,
    /// TLS over TCP; framed like TCP.
    Tls,
}

impl Transport {
    /// Whether messages are framed within a byte stream.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The 5-tuple of a client, as seen by the server (RFC 8656 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Transport of the client connection.
    pub transport: Transport,
    /// The client's address.
    pub client: SocketAddr,
    /// The server address the client talks to (the listener's concrete
    /// local address; for a wildcard UDP listener, the packet's destination).
    pub server: SocketAddr,
}

/// Which server socket a [`Transmit`] leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The listener (UDP socket or TCP/TLS connection) of this 5-tuple; `to`
    /// is its client.
    Client(FiveTuple),
    /// The relay socket bound at this local address; `to` is a peer.
    Relay(SocketAddr),
}

/// One datagram or stream chunk to send. Borrowed from the server's reusable
/// buffers: send it (or copy it) before calling into the server again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The socket to send from.
    pub source: Source,
    /// The destination.
    pub to: SocketAddr,
    /// The bytes: a whole datagram, or a whole framed message on a stream.
    pub bytes: &'a [u8],
}

/// Address family of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Identifies one relay socket the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayRequestId(pub u64);

/// The addresses of a relay socket the shell bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayAddress {
    /// The socket's local address: what peers' packets arrive on, and what
    /// [`Source::Relay`] names.
    pub local: SocketAddr,
    /// The address to advertise in XOR-RELAYED-ADDRESS (differs from `local`
    /// behind a 1:1 NAT, `turn.external_ip`).
    pub public: SocketAddr,
}

/// Something the shell must act on besides sending bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Bind a UDP relay socket of `family` from the relay port range and
    /// answer with [`crate::TurnServer::relay_bound`]. `near` is the server
    /// IP the client reached, a good local address to bind when it has the
    /// right family. `even_port` asks for an even port (EVEN-PORT, RFC 8656 §14.6).
    BindRelay {
        /// Echo this in `relay_bound`.
        id: RelayRequestId,
        /// IPv4 or IPv6.
        family: Family,
        /// The server address of the client's 5-tuple.
        near: SocketAddr,
        /// Whether the port must be even.
        even_port: bool,
        /// Bind exactly this local address instead (the port after an even
        /// one, for an EVEN-PORT reservation, RFC 8656 §7.2); `family`,
        /// `near` and `even_port` do not matter then.
        exact: Option<SocketAddr>,
    },
    /// The relay socket at this local address is no longer used: close it.
    ReleaseRelay {
        /// The socket's local address.
        local: SocketAddr,
    },
}

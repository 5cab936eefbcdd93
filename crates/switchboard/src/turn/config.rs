//! The `[turn]` configuration section.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[turn]`: STUN and TURN. Every key has a default that works on a laptop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// Run STUN/TURN at all.
    pub enabled: bool,
    /// STUN/TURN over UDP and TCP (the same port for both).
    pub listen: SocketAddr,
    /// STUN/TURN over TLS; served only when a certificate is configured.
    pub tls_listen: SocketAddr,
    /// Host name put in the `ice_servers` URLs; without it, the host the
    /// HTTP client used.
    pub public_host: Option<String>,
    /// More STUN/TURN URLs for `ice_servers`, e.g. the other nodes of a
    /// fleet (`turn:turn2.example.com:3478?transport=udp`): they take the
    /// same credential, so they must share `rest_secret` (or be coturn with
    /// `use-auth-secret` and that secret).
    pub servers: Vec<String>,
    /// The public address of a host behind a 1:1 NAT (cloud VMs): advertised
    /// in XOR-RELAYED-ADDRESS instead of the local address.
    pub external_ip: Option<IpAddr>,
    /// Local IPv4 or IPv6 address to bind relay sockets on; by default the
    /// address the client reached the server on.
    pub relay_ip: Option<IpAddr>,
    /// Local IPv6 address for IPv6 relays when the listener is IPv4; setting
    /// it enables IPv6 and dual-stack allocations (ADDITIONAL-ADDRESS-FAMILY).
    pub relay_ipv6: Option<Ipv6Addr>,
    /// REALM of the long-term credentials.
    pub realm: String,
    /// Static users: `name = "password"`.
    pub users: BTreeMap<String, String>,
    /// Secret of time-limited credentials (TURN REST API / coturn's
    /// `use-auth-secret`). Without any secret a random one is made at start.
    pub rest_secret: Option<String>,
    /// More REST secrets, all accepted (for rotation); the first of
    /// `rest_secret` + `rest_secrets` mints the credentials we hand out.
    pub rest_secrets: Vec<String>,
    /// Lifetime of the credentials put in `ice_servers`.
    pub credential_ttl_secs: u64,
    /// Peer ranges (CIDR) opened although the default policy refuses them
    /// (loopback, private, link-local...). See docs/security.md: opening
    /// private ranges lets any user reach your LAN.
    pub allowed_peer_ranges: Vec<String>,
    /// Peer ranges refused on top of the built-in list.
    pub denied_peer_ranges: Vec<String>,
    /// Accept ChannelBind for channels 0x5000–0x7FFE as well (RFC 5766's
    /// range, which coturn's and other older clients use); RFC 8656 alone
    /// allows 0x4000–0x4FFF.
    pub allow_rfc5766_channels: bool,
    /// Ports for relay sockets, `"49152-65535"` or `{ min = .., max = .. }`.
    pub relay_ports: PortRange,
    /// Allocations on this server; 486 beyond.
    pub max_allocations: usize,
    /// Allocations per user: a static user's name, or what follows the
    /// expiry in a REST username (the peer id or token `sub`); EVEN-PORT
    /// reservations count too. 486 beyond.
    pub max_allocations_per_user: usize,
    /// Allocations per client IPv4 address or IPv6 /64, over all users;
    /// 486 beyond; 0 = no cap.
    pub max_allocations_per_ip: usize,
    /// Largest TURN request other than a Send indication; bigger ones get
    /// 400 before any HMAC is computed.
    pub max_request_bytes: usize,
    /// 401 and 438 answers per second to one client IPv4 address or IPv6
    /// /64 (bursts of twice that); beyond, requests are dropped. 0 = no limit.
    pub challenges_per_ip_per_sec: u32,
    /// Simultaneous TCP and TLS client connections.
    pub max_connections: usize,
    /// UDP listener sockets sharing the port with SO_REUSEPORT; 0 = one per CPU.
    pub udp_sockets: usize,
    /// Longest allocation lifetime a client may ask for.
    pub max_lifetime_secs: u64,
    /// How long a nonce stays valid.
    pub nonce_lifetime_secs: u64,
    /// Simultaneous TCP and TLS client connections from one source address
    /// (an IPv6 /64 counts as one); 0 = no cap beyond `max_connections`.
    pub max_connections_per_ip: usize,
    /// A TCP/TLS connection that has no allocation this many seconds after
    /// it was accepted (TLS handshake included) is closed.
    pub allocate_within_secs: u64,
    /// TURN credentials minted (`ice_servers` in `welcome`, GET
    /// /api/ice-servers) per source address and minute, with a burst of as
    /// many; beyond, `welcome` carries STUN only and the API answers 429.
    /// 0 = no limit.
    pub mint_per_ip_per_minute: u32,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([0, 0, 0, 0], 3478).into(),
            tls_listen: ([0, 0, 0, 0], 5349).into(),
            public_host: None,
            servers: Vec::new(),
            external_ip: None,
            relay_ip: None,
            relay_ipv6: None,
            realm: "switchboard".into(),
            users: BTreeMap::new(),
            rest_secret: None,
            rest_secrets: Vec::new(),
            credential_ttl_secs: 86_400,
            allowed_peer_ranges: Vec::new(),
            denied_peer_ranges: Vec::new(),
            allow_rfc5766_channels: true,
            relay_ports: PortRange::default(),
            max_allocations: 10_000,
            max_allocations_per_user: 100,
            max_allocations_per_ip: 32,
            max_request_bytes: 2048,
            challenges_per_ip_per_sec: 32,
            max_connections: 10_000,
            udp_sockets: 0,
            max_lifetime_secs: 3600,
            nonce_lifetime_secs: 600,
            max_connections_per_ip: 64,
            allocate_within_secs: 30,
            mint_per_ip_per_minute: 60,
        }
    }
}

/// An inclusive port range for relay sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub min: u16,
    /// Highest port.
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            min: 49152,
            max: 65535,
        }
    }
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    /// Whether the range holds no port (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.max < self.min
    }
}

/// A `relay_ports` value that is not `MIN-MAX` with `1 <= MIN <= MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid turn.relay_ports {0:?}: expected MIN-MAX such as 49152-65535")]
pub struct PortRangeError(String);

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError(s.to_owned());
        let (min, max) = s.trim().split_once('-').ok_or_else(err)?;
        let min: u16 = min.trim().parse().map_err(|_| err())?;
        let max: u16 = max.trim().parse().map_err(|_| err())?;
        if min == 0 || min > max {
            return Err(err());
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Bounds { min: u16, max: u16 },
        }
        let range = match Repr::deserialize(d)? {
            Repr::Text(text) => text.parse().map_err(serde::de::Error::custom)?,
            Repr::Bounds { min, max } => format!("{min}-{max}")
                .parse()
                .map_err(serde::de::Error::custom)?,
        };
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!("49152-65535".parse::<PortRange>(), Ok(PortRange::default()));
        assert_eq!("1000 - 1000".parse::<PortRange>().map(|r| r.len()), Ok(1));
        for bad in ["", "5", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let text = r#"
            listen = "127.0.0.1:0"
            relay_ports = { min = 40000, max = 40100 }
            allowed_peer_ranges = ["127.0.0.0/8"]
            [users]
            alice = "secret"
        "#;
        let s: TurnSettings = toml::from_str(text).unwrap();
        assert_eq!(
            s.relay_ports,
            PortRange {
                min: 40000,
                max: 40100
            }
        );
        assert_eq!(s.users["alice"], "secret");
        assert_eq!(s.realm, "switchboard");
        let back: TurnSettings = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(toml::from_str::<TurnSettings>("relay_ports = \"9-1\"").is_err());
    }
}

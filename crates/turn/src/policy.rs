//! Which peer addresses a client may relay to (see docs/security.md).
//!
//! A TURN server sits inside someone's network and relays for strangers;
//! without a policy it is an open proxy into loopback services, the cloud
//! metadata endpoint and the private LAN. Special-purpose ranges are refused
//! in every spelling (IPv4-mapped, -compatible and NAT64/6to4 embeddings
//! included) unless an operator opens them explicitly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation, e.g. `10.0.0.0/8` or `fc00::/7`. A bare
/// address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR range {text:?}: expected ADDRESS/PREFIX such as 10.0.0.0/8")]
pub struct CidrParseError {
    text: String,
}

impl Cidr {
    /// A network; host bits of `addr` are ignored. `None` when `prefix` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` lies in this network. Families never match each other;
    /// callers normalise embedded IPv4 first.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    net & mask == ip & mask
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| err())?;
                let prefix: u8 = prefix.parse().map_err(|_| err())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = trimmed.parse().map_err(|_| err())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Self::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Ranges refused by default. The list follows the IANA special-purpose
/// registries (RFC 6890 and successors).
const DENIED_V4: &[Cidr] = &[
    Cidr::v4(0, 0, 0, 0, 8),       // "this network", incl. unspecified
    Cidr::v4(10, 0, 0, 0, 8),      // private
    Cidr::v4(100, 64, 0, 0, 10),   // CGNAT shared space
    Cidr::v4(127, 0, 0, 0, 8),     // loopback
    Cidr::v4(169, 254, 0, 0, 16),  // link-local, cloud metadata
    Cidr::v4(172, 16, 0, 0, 12),   // private
    Cidr::v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    Cidr::v4(192, 0, 2, 0, 24),    // documentation
    Cidr::v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    Cidr::v4(192, 168, 0, 0, 16),  // private
    Cidr::v4(198, 18, 0, 0, 15),   // benchmarking
    Cidr::v4(198, 51, 100, 0, 24), // documentation
    Cidr::v4(203, 0, 113, 0, 24),  // documentation
    Cidr::v4(224, 0, 0, 0, 4),     // multicast
    Cidr::v4(240, 0, 0, 0, 4),     // reserved, incl. broadcast
];

const DENIED_V6: &[Cidr] = &[
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),  // ::0.0.x.y, IPv4-compatible leftovers
    // NAT64 local-use: where the IPv4 address sits depends on the prefix
    // length the operator chose (RFC 6052), so it cannot be unwrapped safely.
    Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, ORCHID...)
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // deprecated site-local
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// The decision for one peer address.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
}

impl PeerPolicy {
    /// The default policy: special-purpose ranges refused, all else allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a range that the default policy refuses (e.g. `127.0.0.0/8` for
    /// tests, or the LAN of a deployment that relays into it on purpose).
    /// An IPv4 range also opens its IPv6 spellings.
    pub fn allow(&mut self, range: Cidr) {
        self.allowed.push(range);
    }

    /// Refuses an extra range on top of the defaults; an explicit allow wins.
    pub fn deny(&mut self, range: Cidr) {
        self.denied.push(range);
    }

    /// Whether relaying to `ip` is permitted by the ranges alone. The
    /// server decides its own addresses before asking: it refuses every
    /// port on them but the exact relay addresses of live allocations.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return true;
        }
        let builtin = match ip {
            IpAddr::V4(_) => DENIED_V4,
            IpAddr::V6(_) => DENIED_V6,
        };
        !builtin
            .iter()
            .chain(self.denied.iter())
            .any(|r| r.contains(ip))
    }
}

/// Unwraps IPv4 addresses embedded in IPv6 so that `::ffff:127.0.0.1` and
/// friends meet the IPv4 rules.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated)
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => IpAddr::V4(tail),
        // ::a.b.c.d (deprecated compatible); :: and ::1 keep their v6 meaning
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 => IpAddr::V4(tail),
        // NAT64 well-known prefix 64:ff9b::/96 (local-use 64:ff9b:1::/48 is
        // refused whole, see DENIED_V6)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(tail),
        // 6to4: 2002:AABB:CCDD::/48 carries the IPv4 address in the prefix
        [0x2002, hi, lo, ..] => IpAddr::V4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_refuses_special_ranges_in_every_spelling() {
        let p = PeerPolicy::new();
        for denied in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0:192.168.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(!p.permits(ip(denied)), "{denied} must be denied");
        }
    }

    #[test]
    fn nat64_local_use_and_v4_compatible_leftovers_are_refused() {
        let p = PeerPolicy::new();
        // Under a /48 NAT64 prefix this one reaches 169.254.169.254.
        assert!(!p.permits(ip("64:ff9b:1:a9fe:a9:fe00:808:808")));
        assert!(!p.permits(ip("::0.0.1.2")));
    }

    #[test]
    fn default_policy_allows_public_addresses() {
        let p = PeerPolicy::new();
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.permits(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allowed_ranges_open_denied_ones_in_all_spellings() {
        let mut p = PeerPolicy::new();
        p.allow("127.0.0.0/8".parse().unwrap());
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("::1")));
        assert!(!p.permits(ip("10.0.0.1")));
    }

    #[test]
    fn extra_denied_ranges() {
        let mut p = PeerPolicy::new();
        p.deny("8.8.8.0/24".parse().unwrap());
        assert!(!p.permits(ip("8.8.8.8")));
        assert!(p.permits(ip("8.8.4.4")));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!(" 192.168.0.0/16 ".parse::<Cidr>().is_ok());
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));
    }
}

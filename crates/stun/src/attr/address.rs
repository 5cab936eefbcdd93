//! The address attributes (RFC 8489 §14.1, §14.2; RFC 8656 §18.3, §18.5) and their shared codec.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{AttrError, AttrType, Attribute, Context};
use crate::header::MAGIC_COOKIE;

/// An address family as carried in address attributes and REQUESTED-ADDRESS-FAMILY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4 (0x01).
    V4,
    /// IPv6 (0x02).
    V6,
}

impl AddressFamily {
    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::V4 => 0x01,
            Self::V6 => 0x02,
        }
    }

    /// From the wire byte.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x01 => Some(Self::V4),
            0x02 => Some(Self::V6),
            _ => None,
        }
    }

    /// The family of a socket address.
    pub const fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => Self::V4,
            SocketAddr::V6(_) => Self::V6,
        }
    }
}

fn xor_mask(ctx: Context<'_>) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(ctx.transaction_id.as_bytes());
    mask
}

fn read_address(
    attr: AttrType,
    value: &[u8],
    xor: Option<Context<'_>>,
) -> Result<SocketAddr, AttrError> {
    let invalid_len = || AttrError::InvalidLength {
        attr,
        len: value.len(),
    };
    let (&[_, family, p0, p1], rest) = value.split_first_chunk::<4>().ok_or_else(invalid_len)?;
    let family = AddressFamily::from_u8(family).ok_or(AttrError::UnknownFamily { attr, family })?;
    let mask = xor.map(xor_mask).unwrap_or([0; 16]);
    let port = u16::from_be_bytes([p0 ^ mask[0], p1 ^ mask[1]]);
    let ip = match family {
        AddressFamily::V4 => {
            let b: [u8; 4] = rest.try_into().map_err(|_| invalid_len())?;
            IpAddr::V4(Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|i| {
                b[i] ^ mask[i]
            })))
        }
        AddressFamily::V6 => {
            let b: [u8; 16] = rest.try_into().map_err(|_| invalid_len())?;
            IpAddr::V6(Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| {
                b[i] ^ mask[i]
            })))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// The value of an address attribute in a fixed buffer: no allocation, for the relay path.
pub(crate) fn address_value(addr: &SocketAddr, xor: Option<Context<'_>>) -> ([u8; 20], usize) {
    let mask = xor.map(xor_mask).unwrap_or([0; 16]);
    let mut v = [0u8; 20];
    let port = addr.port().to_be_bytes();
    v[1] = AddressFamily::of(addr).to_u8();
    v[2] = port[0] ^ mask[0];
    v[3] = port[1] ^ mask[1];
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            for (i, b) in ip.octets().into_iter().enumerate() {
                v[4 + i] = b ^ mask[i];
            }
            8
        }
        IpAddr::V6(ip) => {
            for (i, b) in ip.octets().into_iter().enumerate() {
                v[4 + i] = b ^ mask[i];
            }
            20
        }
    };
    (v, len)
}

fn encode_address(addr: &SocketAddr, xor: Option<Context<'_>>, out: &mut Vec<u8>) {
    let (v, len) = address_value(addr, xor);
    out.extend_from_slice(&v[..len]);
}

macro_rules! address_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:ident, xor = $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attribute<'a> for $name {
            const TYPE: AttrType = AttrType::$ty;

            fn read(value: &'a [u8], ctx: Context<'_>) -> Result<Self, AttrError> {
                read_address(Self::TYPE, value, $xor.then_some(ctx)).map(Self)
            }

            fn encode(&self, ctx: Context<'_>, out: &mut Vec<u8>) {
                encode_address(&self.0, $xor.then_some(ctx), out)
            }
        }
    };
}

address_attribute!(
    /// MAPPED-ADDRESS: the reflexive address in the clear (kept for RFC 3489 clients).
    MappedAddress, MAPPED_ADDRESS, xor = false
);
address_attribute!(
    /// XOR-MAPPED-ADDRESS: the reflexive transport address of the client.
    XorMappedAddress, XOR_MAPPED_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-PEER-ADDRESS: a peer address; may repeat in CreatePermission.
    XorPeerAddress, XOR_PEER_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-RELAYED-ADDRESS: an allocated relay address; one per family in an Allocate response.
    XorRelayedAddress, XOR_RELAYED_ADDRESS, xor = true
);
address_attribute!(
    /// ALTERNATE-SERVER: where a 300 (Try Alternate) sends the client.
    AlternateServer, ALTERNATE_SERVER, xor = false
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransactionId;

    #[test]
    fn rejects_bad_family_and_lengths() {
        let tid = TransactionId::default();
        let ctx = Context {
            transaction_id: &tid,
        };
        assert!(matches!(
            XorMappedAddress::read(&[0, 3, 0, 0, 1, 2, 3, 4], ctx),
            Err(AttrError::UnknownFamily { family: 3, .. })
        ));
        assert!(matches!(
            XorMappedAddress::read(&[0, 1, 0, 0, 1, 2, 3], ctx),
            Err(AttrError::InvalidLength { len: 7, .. })
        ));
        assert!(matches!(
            XorMappedAddress::read(&[0, 2, 0, 0, 1, 2, 3, 4], ctx),
            Err(AttrError::InvalidLength { len: 8, .. })
        ));
        assert!(XorMappedAddress::read(&[], ctx).is_err());
    }
}

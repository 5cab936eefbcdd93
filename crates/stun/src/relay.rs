//! The relay's zero-copy framing: the bytes that go in front of (and after) a payload that
//! already sits in a buffer, so that relaying a peer's datagram to a client copies nothing.

use std::net::SocketAddr;

use crate::attr::address::address_value;
use crate::attr::{AttrType, Context};
use crate::builder::EncodeError;
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId};

/// The longest Data indication prefix: header, XOR-PEER-ADDRESS for IPv6, DATA header.
pub const DATA_INDICATION_MAX_PREFIX: usize = HEADER_LEN + 4 + 20 + 4;

/// Everything of a Data indication (RFC 8656 §11.6) that precedes the payload: header,
/// XOR-PEER-ADDRESS, and the DATA attribute header. Write [`DataIndicationPrefix::as_bytes`],
/// then the payload, then [`DataIndicationPrefix::padding`] zero bytes; the result is what
/// [`MessageBuilder`](crate::MessageBuilder) would produce with `add_xor_peer_address` and `add_data`.
#[derive(Clone, Copy)]
pub struct DataIndicationPrefix {
    bytes: [u8; DATA_INDICATION_MAX_PREFIX],
    len: usize,
    padding: usize,
}

impl DataIndicationPrefix {
    /// The prefix for a payload of `data_len` bytes from `peer`. Fails when the message would
    /// exceed the 16-bit STUN length.
    pub fn new(
        transaction_id: TransactionId,
        peer: SocketAddr,
        data_len: usize,
    ) -> Result<Self, EncodeError> {
        let (addr, addr_len) = address_value(
            &peer,
            Some(Context {
                transaction_id: &transaction_id,
            }),
        );
        let len = HEADER_LEN + 4 + addr_len + 4;
        let padding = data_len.next_multiple_of(4) - data_len;
        let body = len - HEADER_LEN + data_len + padding;
        let body16 = u16::try_from(body).map_err(|_| EncodeError::MessageTooLong { len: body })?;
        let data16 = u16::try_from(data_len).map_err(|_| EncodeError::AttributeTooLong {
            attr: AttrType::DATA,
            len: data_len,
        })?;

        let mut bytes = [0u8; DATA_INDICATION_MAX_PREFIX];
        bytes[0..2].copy_from_slice(&MessageType::DATA_INDICATION.to_u16().to_be_bytes());
        bytes[2..4].copy_from_slice(&body16.to_be_bytes());
        bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes[8..20].copy_from_slice(transaction_id.as_bytes());
        bytes[20..22].copy_from_slice(&AttrType::XOR_PEER_ADDRESS.0.to_be_bytes());
        bytes[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
        bytes[24..24 + addr_len].copy_from_slice(&addr[..addr_len]);
        let d = 24 + addr_len;
        bytes[d..d + 2].copy_from_slice(&AttrType::DATA.0.to_be_bytes());
        bytes[d + 2..d + 4].copy_from_slice(&data16.to_be_bytes());
        Ok(Self {
            bytes,
            len,
            padding,
        })
    }

    /// The bytes to write before the payload (32 for an IPv4 peer, 48 for IPv6).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// How many zero bytes must follow the payload (0..=3).
    pub fn padding(&self) -> usize {
        self.padding
    }
}

impl std::fmt::Debug for DataIndicationPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataIndicationPrefix")
            .field("bytes", &self.as_bytes())
            .field("padding", &self.padding)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageBuilder;

    #[test]
    fn prefix_matches_the_builder() {
        let tid = TransactionId::new([0x5A; 12]);
        for peer in ["192.0.2.1:5000", "[2001:db8::1]:6000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            for len in [0usize, 1, 2, 3, 4, 5, 1200] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut expected = Vec::new();
                let mut b = MessageBuilder::new(&mut expected, MessageType::DATA_INDICATION, tid);
                b.add_xor_peer_address(peer).add_data(&payload);
                let expected = b.finish().unwrap().to_vec();

                let p = DataIndicationPrefix::new(tid, peer, len).unwrap();
                let mut ours = p.as_bytes().to_vec();
                ours.extend_from_slice(&payload);
                ours.resize(ours.len() + p.padding(), 0);
                assert_eq!(ours, expected, "{peer} {len}");
            }
        }
        let peer: SocketAddr = "[2001:db8::1]:6000".parse().unwrap();
        assert!(DataIndicationPrefix::new(tid, peer, 65_532 - 28).is_ok());
        assert!(DataIndicationPrefix::new(tid, peer, 65_532 - 27).is_err());
    }
}

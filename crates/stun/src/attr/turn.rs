//! The TURN attributes of RFC 8656 §18 other than the XOR addresses.

use super::stun::{encode_error_code, read_error_code};
use super::{AddressFamily, AttrError, AttrType, Attribute, Context, check_len};
use crate::channel_data::{is_channel_data_number, is_valid_channel};

/// CHANNEL-NUMBER. Decoding keeps any value; [`ChannelNumber::is_valid`] tells whether it lies in
/// the 0x4000–0x4FFF range RFC 8656 allows a ChannelBind (a server answers 400 otherwise), and
/// [`ChannelNumber::is_valid_rfc5766`] whether it lies in the older 0x4000–0x7FFF range that
/// coturn's clients still pick from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl ChannelNumber {
    /// Whether the number is one a client may bind.
    pub const fn is_valid(self) -> bool {
        is_valid_channel(self.0)
    }

    /// Whether the number is one RFC 5766 let a client bind (0x4000–0x7FFF).
    pub const fn is_valid_rfc5766(self) -> bool {
        is_channel_data_number(self.0)
    }
}

/// LIFETIME in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lifetime(pub u32);

/// DATA: the application payload of a Send or Data indication, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Data<'a>(pub &'a [u8]);

/// REQUESTED-ADDRESS-FAMILY. An unknown family decodes to [`AttrError::UnknownFamily`], which a
/// server answers with 440.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestedAddressFamily(pub AddressFamily);

/// ADDITIONAL-ADDRESS-FAMILY (only IPv6 is meaningful; the server checks that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdditionalAddressFamily(pub AddressFamily);

/// EVEN-PORT, with its R bit: reserve the next-higher port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvenPort {
    /// The R bit.
    pub reserve: bool,
}

/// REQUESTED-TRANSPORT: an IP protocol number; 17 (UDP) is the one RFC 8656 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// UDP, protocol 17.
    pub const UDP: Self = Self(17);
    /// TCP, protocol 6 (RFC 6062).
    pub const TCP: Self = Self(6);
}

/// DONT-FRAGMENT, empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DontFragment;

/// RESERVATION-TOKEN: 8 opaque bytes naming a reserved relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

/// ADDRESS-ERROR-CODE: why the allocation of one address family failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressErrorCode<'a> {
    /// The family that failed.
    pub family: AddressFamily,
    /// The error code, as in ERROR-CODE.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// ICMP: an ICMP error the relay received from a peer.
///
/// The field widths follow the figure of RFC 8656 §18.13 literally: 7 bits of type (ICMP error
/// types are all below 128) and 9 bits of code, as stun-rs reads them; some implementations
/// use a byte each instead. Values are masked to those widths on encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP type (7 bits).
    pub icmp_type: u8,
    /// ICMP code (9 bits).
    pub icmp_code: u16,
    /// The type-specific error data (e.g. the MTU of a "fragmentation needed").
    pub error_data: u32,
}

fn exact<const N: usize>(attr: AttrType, value: &[u8]) -> Result<[u8; N], AttrError> {
    value.try_into().map_err(|_| AttrError::InvalidLength {
        attr,
        len: value.len(),
    })
}

fn family(attr: AttrType, byte: u8) -> Result<AddressFamily, AttrError> {
    AddressFamily::from_u8(byte).ok_or(AttrError::UnknownFamily { attr, family: byte })
}

impl<'a> Attribute<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [a, b, _, _] = exact::<4>(Self::TYPE, value)?;
        Ok(Self(u16::from_be_bytes([a, b])))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
}

impl<'a> Attribute<'a> for Lifetime {
    const TYPE: AttrType = AttrType::LIFETIME;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        Ok(Self(u32::from_be_bytes(exact::<4>(Self::TYPE, value)?)))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

impl<'a> Attribute<'a> for Data<'a> {
    const TYPE: AttrType = AttrType::DATA;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        Ok(Self(value))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

impl<'a> Attribute<'a> for RequestedAddressFamily {
    const TYPE: AttrType = AttrType::REQUESTED_ADDRESS_FAMILY;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [f, _, _, _] = exact::<4>(Self::TYPE, value)?;
        family(Self::TYPE, f).map(Self)
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.0.to_u8(), 0, 0, 0]);
    }
}

impl<'a> Attribute<'a> for AdditionalAddressFamily {
    const TYPE: AttrType = AttrType::ADDITIONAL_ADDRESS_FAMILY;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [f, _, _, _] = exact::<4>(Self::TYPE, value)?;
        family(Self::TYPE, f).map(Self)
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.0.to_u8(), 0, 0, 0]);
    }
}

impl<'a> Attribute<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [flags] = exact::<1>(Self::TYPE, value)?;
        Ok(Self {
            reserve: flags & 0x80 != 0,
        })
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.push(if self.reserve { 0x80 } else { 0 });
    }
}

impl<'a> Attribute<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [p, _, _, _] = exact::<4>(Self::TYPE, value)?;
        Ok(Self(p))
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.0, 0, 0, 0]);
    }
}

impl<'a> Attribute<'a> for DontFragment {
    const TYPE: AttrType = AttrType::DONT_FRAGMENT;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        exact::<0>(Self::TYPE, value).map(|_| Self)
    }

    fn encode(&self, _: Context<'_>, _: &mut Vec<u8>) {}
}

impl<'a> Attribute<'a> for ReservationToken {
    const TYPE: AttrType = AttrType::RESERVATION_TOKEN;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        exact::<8>(Self::TYPE, value).map(Self)
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl<'a> Attribute<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        check_len(Self::TYPE, value, |l| l >= 4)?;
        let family = family(Self::TYPE, value[0])?;
        let mut head = [0u8; 4];
        head[2..].copy_from_slice(&value[2..4]);
        // The code occupies the same bits as in ERROR-CODE; only the first byte differs.
        let (code, _) = read_error_code(Self::TYPE, &head)?;
        let reason = super::read_utf8(Self::TYPE, &value[4..], super::stun::MAX_TEXT_LEN)?;
        Ok(Self {
            family,
            code,
            reason,
        })
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        let start = out.len();
        encode_error_code(self.code, self.reason, out);
        out[start] = self.family.to_u8();
    }
}

impl<'a> Attribute<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;

    fn read(value: &'a [u8], _: Context<'_>) -> Result<Self, AttrError> {
        let [_, _, t0, t1, d0, d1, d2, d3] = exact::<8>(Self::TYPE, value)?;
        let field = u16::from_be_bytes([t0, t1]);
        Ok(Self {
            icmp_type: (field >> 9) as u8,
            icmp_code: field & 0x01FF,
            error_data: u32::from_be_bytes([d0, d1, d2, d3]),
        })
    }

    fn encode(&self, _: Context<'_>, out: &mut Vec<u8>) {
        let field = (u16::from(self.icmp_type & 0x7F) << 9) | (self.icmp_code & 0x01FF);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&field.to_be_bytes());
        out.extend_from_slice(&self.error_data.to_be_bytes());
    }
}

//! ChannelData messages (RFC 8656 §12.4): a 4-byte header, then application data.

/// Lowest channel number a client may bind.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number RFC 8656 lets a client bind (it reserves 0x5000–0xFFFF).
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Highest channel number RFC 5766 allowed. coturn, client (turnutils_uclient) and server,
/// still uses the whole 0x4000–0x7FFF range, so ChannelData framing accepts it; which numbers a
/// ChannelBind may take is the TURN server's policy.
pub const CHANNEL_MAX_RFC5766: u16 = 0x7FFF;
/// Size of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

pub(crate) const fn is_valid_channel(channel: u16) -> bool {
    channel >= CHANNEL_MIN && channel <= CHANNEL_MAX
}

/// Whether `channel` can frame ChannelData at all: its first two bits are 01.
pub(crate) const fn is_channel_data_number(channel: u16) -> bool {
    channel >= CHANNEL_MIN && channel <= CHANNEL_MAX_RFC5766
}

/// Why bytes are not a valid ChannelData message; a server drops such packets silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelDataError {
    /// Fewer than the 4 header bytes.
    #[error("{len} bytes is shorter than a ChannelData header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// A channel number outside 0x4000–0x7FFF.
    #[error("channel number {0:#06x} is outside 0x4000-0x7FFF")]
    InvalidChannel(u16),
    /// The length field claims more data than present.
    #[error("ChannelData says {declared} bytes, {available} present")]
    Truncated {
        /// The length field.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// More bytes follow the data than padding to a multiple of 4 explains.
    #[error("ChannelData of {declared} bytes followed by {extra} trailing bytes")]
    TrailingBytes {
        /// The length field.
        declared: usize,
        /// Bytes after the data.
        extra: usize,
    },
    /// Data longer than 65535 bytes cannot be framed.
    #[error("{0} bytes of data do not fit a ChannelData message")]
    DataTooLong(usize),
}

/// A ChannelData message borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// A message to encode. Fails for a channel outside 0x4000–0x7FFF or data over 65535 bytes.
    pub fn new(channel: u16, data: &'a [u8]) -> Result<Self, ChannelDataError> {
        if !is_channel_data_number(channel) {
            return Err(ChannelDataError::InvalidChannel(channel));
        }
        if data.len() > usize::from(u16::MAX) {
            return Err(ChannelDataError::DataTooLong(data.len()));
        }
        Ok(Self { channel, data })
    }

    /// Parses one ChannelData message. Padding to a multiple of 4 may be present (it must be,
    /// over TCP/TLS) or not (UDP); any byte beyond that padding is an error. Channel numbers
    /// 0x4000–0x7FFF are accepted (see [`CHANNEL_MAX_RFC5766`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ChannelDataError> {
        let (&[c0, c1, l0, l1], rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(ChannelDataError::TooShort { len: bytes.len() })?;
        let channel = u16::from_be_bytes([c0, c1]);
        if !is_channel_data_number(channel) {
            return Err(ChannelDataError::InvalidChannel(channel));
        }
        let declared = usize::from(u16::from_be_bytes([l0, l1]));
        let data = rest.get(..declared).ok_or(ChannelDataError::Truncated {
            declared,
            available: rest.len(),
        })?;
        if rest.len() > declared.next_multiple_of(4) {
            return Err(ChannelDataError::TrailingBytes {
                declared,
                extra: rest.len() - declared,
            });
        }
        Ok(Self { channel, data })
    }

    /// The channel number.
    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// The application data.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The 4-byte header for `channel` and `data_len` bytes of data: for writing a header in
    /// place in front of data already in a buffer (the relay's zero-copy path).
    /// `data_len` is clamped to 65535; callers check the length with [`ChannelData::new`] first.
    pub fn header(channel: u16, data_len: usize) -> [u8; CHANNEL_DATA_HEADER_LEN] {
        let c = channel.to_be_bytes();
        let l = u16::try_from(data_len).unwrap_or(u16::MAX).to_be_bytes();
        [c[0], c[1], l[0], l[1]]
    }

    /// Bytes [`ChannelData::encode`] writes.
    pub fn encoded_len(&self, pad: bool) -> usize {
        let n = CHANNEL_DATA_HEADER_LEN + self.data.len();
        if pad { n.next_multiple_of(4) } else { n }
    }

    /// Appends the message to `out`; `pad` adds zero padding to a multiple of 4, which stream
    /// transports (TCP, TLS) require and UDP does not.
    pub fn encode(&self, out: &mut Vec<u8>, pad: bool) {
        out.extend_from_slice(&Self::header(self.channel, self.data.len()));
        out.extend_from_slice(self.data);
        if pad {
            let padded = self.data.len().next_multiple_of(4);
            out.resize(out.len() + padded - self.data.len(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let cd = ChannelData::new(0x4001, b"hello").unwrap();
        let mut out = Vec::new();
        cd.encode(&mut out, false);
        assert_eq!(out, b"\x40\x01\x00\x05hello");
        assert_eq!(ChannelData::parse(&out).unwrap(), cd);
        out.clear();
        cd.encode(&mut out, true);
        assert_eq!(out.len(), 12);
        assert_eq!(cd.encoded_len(true), 12);
        assert_eq!(ChannelData::parse(&out).unwrap(), cd);
        out.push(0);
        assert!(matches!(
            ChannelData::parse(&out),
            Err(ChannelDataError::TrailingBytes { .. })
        ));
        assert!(matches!(
            ChannelData::parse(&out[..6]),
            Err(ChannelDataError::Truncated { .. })
        ));
        assert!(matches!(
            ChannelData::parse(b"\x80\x00\x00\x00"),
            Err(ChannelDataError::InvalidChannel(0x8000))
        ));
        assert_eq!(
            ChannelData::parse(b"\x7f\xff\x00\x01x").unwrap().channel(),
            0x7fff
        );
        assert!(matches!(
            ChannelData::parse(b"\x40"),
            Err(ChannelDataError::TooShort { len: 1 })
        ));
        assert_eq!(ChannelData::parse(b"\x4f\xff\x00\x00").unwrap().data(), b"");
    }
}

//! The fixed 20-byte STUN header (RFC 8489 §5): type, length, cookie, transaction id.

use std::fmt;

/// The magic cookie every RFC 5389/8489 message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Size of the STUN header in bytes.
pub const HEADER_LEN: usize = 20;

/// The class of a message: the two C bits of the message type (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: no response is sent.
    Indication,
    /// A success response.
    SuccessResponse,
    /// An error response (carries ERROR-CODE).
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Self::Request => 0b00,
            Self::Indication => 0b01,
            Self::SuccessResponse => 0b10,
            Self::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Self::Request,
            0b01 => Self::Indication,
            0b10 => Self::SuccessResponse,
            _ => Self::ErrorResponse,
        }
    }
}

/// A 12-bit STUN method. The constants are the methods of RFC 8489 and RFC 8656.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Self = Self(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Self = Self(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Self = Self(0x004);
    /// Send (RFC 8656), indication only.
    pub const SEND: Self = Self(0x006);
    /// Data (RFC 8656), indication only.
    pub const DATA: Self = Self(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Self = Self(0x009);

    /// A method from its 12-bit number; `None` when it does not fit in 12 bits.
    pub const fn new(method: u16) -> Option<Self> {
        if method <= 0x0FFF {
            Some(Self(method))
        } else {
            None
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::BINDING => "Binding",
            Self::ALLOCATE => "Allocate",
            Self::REFRESH => "Refresh",
            Self::SEND => "Send",
            Self::DATA => "Data",
            Self::CREATE_PERMISSION => "CreatePermission",
            Self::CHANNEL_BIND => "ChannelBind",
            _ => return write!(f, "Method({:#05x})", self.0),
        };
        f.write_str(name)
    }
}

/// The message type: a method and a class, interleaved on the wire (RFC 8489 §5, figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// Binding request.
    pub const BINDING_REQUEST: Self = Self::new(Method::BINDING, Class::Request);
    /// Binding success response.
    pub const BINDING_RESPONSE: Self = Self::new(Method::BINDING, Class::SuccessResponse);
    /// Binding error response.
    pub const BINDING_ERROR: Self = Self::new(Method::BINDING, Class::ErrorResponse);
    /// Send indication (TURN client to server).
    pub const SEND_INDICATION: Self = Self::new(Method::SEND, Class::Indication);
    /// Data indication (TURN server to client).
    pub const DATA_INDICATION: Self = Self::new(Method::DATA, Class::Indication);

    /// A message type from its parts.
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// The 14-bit wire value (the top two bits of the first header byte stay zero).
    pub fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F)
            | ((c & 0b01) << 4)
            | ((m & 0x0070) << 1)
            | ((c & 0b10) << 7)
            | ((m & 0x0F80) << 2)
    }

    /// Decodes the 16-bit type field; the two most significant bits are ignored.
    pub fn from_u16(value: u16) -> Self {
        let method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80);
        let class = ((value >> 4) & 0b01) | ((value >> 7) & 0b10);
        Self {
            method: Method(method),
            class: Class::from_bits(class),
        }
    }

    /// The success response type for this request type.
    pub const fn success(self) -> Self {
        Self::new(self.method, Class::SuccessResponse)
    }

    /// The error response type for this request type.
    pub const fn error(self) -> Self {
        Self::new(self.method, Class::ErrorResponse)
    }
}

/// The 96-bit transaction id. The caller chooses it (this crate has no random source).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// Wraps 12 bytes.
    pub const fn new(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    /// The 12 bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_every_value() {
        for v in 0..=0x3FFFu16 {
            assert_eq!(MessageType::from_u16(v).to_u16(), v);
        }
    }

    #[test]
    fn well_known_types() {
        assert_eq!(MessageType::BINDING_REQUEST.to_u16(), 0x0001);
        assert_eq!(MessageType::BINDING_RESPONSE.to_u16(), 0x0101);
        assert_eq!(MessageType::BINDING_ERROR.to_u16(), 0x0111);
        assert_eq!(MessageType::SEND_INDICATION.to_u16(), 0x0016);
        assert_eq!(MessageType::DATA_INDICATION.to_u16(), 0x0017);
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Request).to_u16(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::ErrorResponse).to_u16(),
            0x0113
        );
    }
}

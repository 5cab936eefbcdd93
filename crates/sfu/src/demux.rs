//! Telling the datagrams of the one media port apart (RFC 7983 §7) and finding the peer a
//! STUN binding request is for, without asking every peer's `Rtc`.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const USERNAME: u16 = 0x0006;
const STUN_HEADER: usize = 20;

/// What a datagram is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stun,
    Dtls,
    /// RTP or RTCP (SRTP, SRTCP).
    Rtp,
    Garbage,
}

pub(crate) fn classify(bytes: &[u8]) -> Kind {
    match bytes.first() {
        Some(0..=3) if bytes.len() >= STUN_HEADER => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        // 12 bytes: the shortest RTP header (and longer than any RTCP header).
        Some(128..=191) if bytes.len() >= 12 => Kind::Rtp,
        _ => Kind::Garbage,
    }
}

/// The local (server's) ufrag of a STUN message's USERNAME (`local:remote`, RFC 8445 §7.2.2),
/// or `None` when the message is malformed or has no USERNAME. Only the framing is checked
/// here; integrity is str0m's job once the peer is known.
pub(crate) fn stun_local_ufrag(bytes: &[u8]) -> Option<&str> {
    let header = bytes.get(..STUN_HEADER)?;
    if header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = bytes.get(STUN_HEADER..STUN_HEADER.checked_add(body_len)?)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        let padded = (4 + len + 3) & !3;
        attrs = attrs.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attr = Vec::new();
        // A PRIORITY first, so that the USERNAME is not the first attribute.
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attr.extend_from_slice(&USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn first_byte_classifies() {
        assert_eq!(classify(&binding_request(b"a:b")), Kind::Stun);
        assert_eq!(classify(&[22, 254, 253]), Kind::Dtls);
        assert_eq!(classify(&[0x80; 12]), Kind::Rtp);
        assert_eq!(classify(&[0x80; 11]), Kind::Garbage);
        assert_eq!(classify(&[]), Kind::Garbage);
        assert_eq!(classify(&[64; 40]), Kind::Garbage);
        assert_eq!(classify(&[255; 40]), Kind::Garbage);
        assert_eq!(classify(&[1; 19]), Kind::Garbage);
    }

    #[test]
    fn username_gives_the_local_ufrag() {
        assert_eq!(
            stun_local_ufrag(&binding_request(b"srv1:cli")),
            Some("srv1")
        );
        assert_eq!(stun_local_ufrag(&binding_request(b"srv")), Some("srv"));
        assert_eq!(stun_local_ufrag(&binding_request(b":cli")), None);
        assert_eq!(
            stun_local_ufrag(&binding_request(&[0xff, b':', b'x'])),
            None
        );
    }

    #[test]
    fn malformed_stun_gives_nothing() {
        let m = binding_request(b"srv:cli");
        for cut in 0..m.len() {
            // Every truncation is either refused or still inside the declared length.
            let _ = stun_local_ufrag(&m[..cut]);
        }
        let mut bad_cookie = m.clone();
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
        let mut long_attr = m.clone();
        long_attr[STUN_HEADER + 10] = 0xff;
        assert_eq!(stun_local_ufrag(&long_attr), None);
        let mut long_body = m;
        long_body[2] = 0xff;
        assert_eq!(stun_local_ufrag(&long_body), None);
    }
}

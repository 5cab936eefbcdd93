//! A TCP/TLS byte stream split into STUN and ChannelData frames, as the server's stream
//! reader does it: frame lengths must never point backwards or past what is parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::{ChannelData, Message, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Each frame is at least 4 bytes, so this loop is bounded by the input length.
    while let Ok(Some(len)) = stream_frame_len(rest) {
        assert!(len >= 4);
        let Some(frame) = rest.get(..len) else {
            return;
        };
        if frame[0] >> 6 == 0 {
            let _ = Message::parse(frame).map(|m| m.verify_fingerprint());
        } else {
            let cd = ChannelData::parse(frame).expect("a framed ChannelData parses");
            assert!(cd.data().len() <= len - 4);
        }
        rest = &rest[len..];
    }
});

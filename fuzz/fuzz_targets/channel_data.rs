//! ChannelData parsing, and encode-then-parse of whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::ChannelData;

fuzz_target!(|data: &[u8]| {
    let Ok(cd) = ChannelData::parse(data) else {
        return;
    };
    for pad in [false, true] {
        let mut out = Vec::with_capacity(cd.encoded_len(pad));
        cd.encode(&mut out, pad);
        assert_eq!(out.len(), cd.encoded_len(pad));
        assert_eq!(ChannelData::parse(&out), Ok(cd));
    }
});

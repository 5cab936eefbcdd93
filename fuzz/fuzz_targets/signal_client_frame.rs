//! A signaling text frame from a client (PROTOCOL.md §1): whatever deserializes serializes
//! and deserializes again to an equal frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_signal_proto::ClientFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = serde_json::from_slice::<ClientFrame>(data) else {
        return;
    };
    let text = serde_json::to_string(&frame).expect("a parsed frame serializes");
    let again: ClientFrame = serde_json::from_str(&text).expect("a serialized frame parses");
    assert_eq!(again, frame);
});

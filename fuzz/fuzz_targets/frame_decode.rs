//! Any bytes a peer sends as one WebSocket message: decoding never panics, and whatever decodes
//! encodes back to the same bytes.
#![no_main]
use ism_tunnel_proto::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(bytes::Bytes::copy_from_slice(data)) {
        assert_eq!(frame.encode().as_ref(), data);
    }
});

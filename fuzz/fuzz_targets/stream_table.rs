//! Any sequence of frames from a peer, interleaved with local events: the stream table never
//! panics and its books stay balanced.
#![no_main]
use bytes::Bytes;
use ism_tunnel_proto::{Frame, Role, StreamId, StreamTable, TargetAddr, Windows};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let role =
        if data.first().is_some_and(|b| b & 1 == 1) { Role::Endpoint } else { Role::Gateway };
    let mut table = StreamTable::<()>::new(role, Windows { alone: 1000, shared: 62 }, 8);
    // Each step: a length-prefixed chunk, decoded as a frame, or a local event.
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize % 64).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let id = StreamId(u32::from(chunk.first().copied().unwrap_or(1) % 16));
        match len % 8 {
            0 => {
                let _ = table.open(TargetAddr::Domain("fuzz".into(), 1), None, None, |_| ());
            }
            1 => {
                let _ = table.accepted(id);
            }
            2 => {
                let _ = table.consumed(id, chunk.len() * 31);
            }
            3 => {
                table.local_finished(id);
            }
            4 => {
                table.remove(id);
            }
            _ => {
                if let Ok(frame) = Frame::decode(Bytes::copy_from_slice(chunk)) {
                    let _ = table.on_frame(frame);
                }
            }
        }
        assert!(table.is_consistent());
    }
});

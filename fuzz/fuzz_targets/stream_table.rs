//! Any sequence of frames from a peer, interleaved with local events: the stream table never
//! panics, its books stay balanced and it holds no more than its shared windows and what it
//! reserved from its budget.
#![no_main]
use bytes::Bytes;
use ism_tunnel_proto::{CreditBudget, Frame, Role, StreamId, StreamTable, TargetAddr, Windows};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let role =
        if data.first().is_some_and(|b| b & 1 == 1) { Role::Endpoint } else { Role::Gateway };
    // Room for one lone stream's extra at most, by the input's second byte: spent or not.
    let budget = CreditBudget::new(u64::from(data.get(1).copied().unwrap_or(0)) * 4);
    let windows = Windows { alone: 1000, shared: 62 };
    let mut table = StreamTable::<()>::new(role, windows, budget.clone(), 8);
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
        assert!(table.buffered_bytes() <= 62 * 8 + budget.reserved());
    }
});

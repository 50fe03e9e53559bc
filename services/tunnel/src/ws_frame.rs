//! WebSocket frames as the session writes them (RFC 6455, section 5.2), sans-IO.
//!
//! tungstenite reads the tunnel's WebSocket, but the session writes it itself: tungstenite copies
//! every frame it sends into its write buffer, and rustls then copies it again into a TLS record.
//! A pump instead reads its socket into a buffer with room for the WebSocket header in front
//! ([`HEADER_ROOM`]), and [`seal`] writes the header there, so rustls' copy is the only one.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ism_tunnel_proto::Frame;

/// Room a buffer keeps in front of a frame's payload for its header: the longest header, that of
/// a masked frame of 64 KiB or more (2 bytes, an 8-byte length, a 4-byte key).
pub(crate) const HEADER_ROOM: usize = 14;

const FIN: u8 = 0x80;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const MASKED: u8 = 0x80;

/// Whether this side masks what it sends: a WebSocket client must, a server must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Masking {
    /// The server side of the WebSocket.
    Unmasked,
    /// The client side: every frame under a fresh random key.
    Masked,
}

impl Masking {
    /// The key for the next frame, if this side masks.
    fn next_key(self) -> Option<[u8; 4]> {
        match self {
            Masking::Unmasked => None,
            Masking::Masked => Some(rand::random()),
        }
    }
}

/// The header of a final frame of `opcode` carrying `len` bytes, and its length.
fn header(opcode: u8, len: usize, key: Option<[u8; 4]>) -> ([u8; HEADER_ROOM], usize) {
    let mut head = [0; HEADER_ROOM];
    head[0] = FIN | opcode;
    let mask_bit = if key.is_some() { MASKED } else { 0 };
    let mut at = match len {
        0..=125 => {
            head[1] = mask_bit | len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = mask_bit | 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = mask_bit | 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(key) = key {
        head[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    (head, at)
}

/// XORs `payload` with `key` repeated (RFC 6455, section 5.3), eight bytes at a time.
fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let masked = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // A multiple of 8 bytes came before: the key starts over at the tail.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Makes `buf` a frame of `opcode`: `buf` holds [`HEADER_ROOM`] bytes of room, then the payload.
/// The header goes at the end of the room, the payload is masked in place under `key`, and `buf`
/// then starts at the header.
fn seal_with(buf: &mut BytesMut, opcode: u8, key: Option<[u8; 4]>) {
    let len = buf.len() - HEADER_ROOM;
    let (head, head_len) = header(opcode, len, key);
    let start = HEADER_ROOM - head_len;
    buf[start..HEADER_ROOM].copy_from_slice(&head[..head_len]);
    if let Some(key) = key {
        apply_mask(&mut buf[HEADER_ROOM..], key);
    }
    buf.advance(start);
}

/// Makes `buf` (room, then payload) a binary frame as `masking` sends it; see [`seal_with`].
pub(crate) fn seal(buf: &mut BytesMut, masking: Masking) {
    seal_with(buf, OP_BINARY, masking.next_key());
}

/// The head of a binary frame whose payload is `prefix` then `rest`, for a payload that does not
/// sit behind room of its own (the second and later frames of one read, [`crate::stream`]): the
/// WebSocket header and `prefix`, masked as `masking` sends them, with `rest` masked in place
/// where the key has reached after `prefix`. Written as two slices, head then `rest`.
pub(crate) fn seal_apart(prefix: &[u8], rest: &mut [u8], masking: Masking) -> Bytes {
    let key = masking.next_key();
    let (head, head_len) = header(OP_BINARY, prefix.len() + rest.len(), key);
    let mut buf = BytesMut::with_capacity(head_len + prefix.len());
    buf.put_slice(&head[..head_len]);
    buf.put_slice(prefix);
    if let Some(key) = key {
        apply_mask(&mut buf[head_len..], key);
        let turned = prefix.len() % 4;
        apply_mask(rest, [0, 1, 2, 3].map(|i| key[(i + turned) % 4]));
    }
    buf.freeze()
}

/// `frame` as one binary WebSocket frame, copied into it: small frames (credit, opens, resets,
/// Fin), whose copy costs nothing worth avoiding, and data a caller hands over whole
/// (`StreamWriter::send`: relayed and diagnostic streams; the pumps build theirs in place).
pub(crate) fn wrap(frame: &Frame, masking: Masking) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_ROOM + frame.encoded_len_hint());
    buf.put_bytes(0, HEADER_ROOM);
    frame.encode_into(&mut buf);
    seal(&mut buf, masking);
    buf.freeze()
}

/// A Close frame with status 1000 (normal closure).
pub(crate) fn close(masking: Masking) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_ROOM + 2);
    buf.put_bytes(0, HEADER_ROOM);
    buf.put_u16(1000);
    seal_with(&mut buf, OP_CLOSE, masking.next_key());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_tunnel_proto::StreamId;
    use std::io::Cursor;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Control;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    /// Parses `bytes` as tungstenite does and returns the header and the unmasked payload.
    fn parsed(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let start = cursor.position() as usize;
        assert_eq!(bytes.len() - start, len as usize, "the frame is exactly its header's length");
        let mut payload = bytes[start..].to_vec();
        if let Some(key) = header.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        (header, payload)
    }

    fn sealed(payload: &[u8], key: Option<[u8; 4]>) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_bytes(0, HEADER_ROOM);
        buf.put_slice(payload);
        seal_with(&mut buf, OP_BINARY, key);
        buf
    }

    #[test]
    fn a_frame_sealed_apart_reads_back_as_the_same_frame_sealed_in_place() {
        let prefix = [9u8, 0, 0, 0, 7];
        for len in [0, 1, 3, 125, 0xFFFF, 256 * 1024] {
            let rest: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            for masking in [Masking::Unmasked, Masking::Masked] {
                let mut masked = rest.clone();
                let head = seal_apart(&prefix, &mut masked, masking);
                let (header, back) = parsed(&[&head[..], &masked].concat());
                assert!(header.is_final);
                assert_eq!(header.opcode, OpCode::Data(Data::Binary));
                assert_eq!(header.mask.is_some(), masking == Masking::Masked);
                assert_eq!(back, [&prefix[..], &rest].concat(), "len {len}, {masking:?}");
            }
        }
    }

    #[test]
    fn sealed_frames_read_back_as_tungstenite_parses_them_at_every_length_class() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 256 * 1024 + 5] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for key in [None, Some([0x6d, 0xb6, 0xb2, 0x80])] {
                let (header, back) = parsed(&sealed(&payload, key));
                assert!(header.is_final);
                assert_eq!(header.opcode, OpCode::Data(Data::Binary));
                assert_eq!(header.mask, key);
                assert_eq!(back, payload, "len {len}, key {key:?}");
            }
        }
    }

    #[test]
    fn masking_matches_the_rfc_byte_by_byte_at_every_tail_length() {
        let key = [1, 2, 4, 8];
        for len in 0..40 {
            let mut payload: Vec<u8> = (0..len as u8).collect();
            apply_mask(&mut payload, key);
            let expected: Vec<u8> = (0..len as u8).map(|b| b ^ key[b as usize % 4]).collect();
            assert_eq!(payload, expected);
        }
    }

    #[test]
    fn a_masked_side_draws_a_new_key_for_each_frame() {
        let frame = Frame::Fin { stream: StreamId(9) };
        let keys: Vec<_> = (0..4).map(|_| parsed(&wrap(&frame, Masking::Masked)).0.mask).collect();
        assert!(keys.iter().all(Option::is_some));
        assert!(keys.windows(2).any(|w| w[0] != w[1]), "four frames, one key: {keys:?}");
        assert_eq!(parsed(&wrap(&frame, Masking::Unmasked)).0.mask, None);
    }

    #[test]
    fn a_wrapped_frame_carries_the_tunnel_frames_encoding() {
        let frame = Frame::Window { stream: StreamId(3), increment: 65536 };
        for masking in [Masking::Unmasked, Masking::Masked] {
            let (_, payload) = parsed(&wrap(&frame, masking));
            assert_eq!(Frame::decode(Bytes::from(payload)).unwrap(), frame);
        }
    }

    #[test]
    fn a_close_frame_says_normal_closure() {
        for masking in [Masking::Unmasked, Masking::Masked] {
            let (header, payload) = parsed(&close(masking));
            assert_eq!(header.opcode, OpCode::Control(Control::Close));
            assert_eq!(payload, 1000u16.to_be_bytes());
        }
    }
}

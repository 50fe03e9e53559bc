//! The W3C trace context an opener passes with a stream, so that the spans of one scanner
//! request on the ingress node, the node holding the endpoint and the endpoint form one trace.
//!
//! On the wire it is the binary form of a `traceparent` (version 00): 16 bytes of trace id,
//! 8 bytes of parent span id and 1 byte of flags, carried as an optional tail of the `Open` and
//! `RelayOpen` frames. In events and HTTP headers it is the text form,
//! `00-<32 hex>-<16 hex>-<2 hex>`.

use std::fmt;

/// The trace an operation belongs to and the span that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// W3C trace flags; bit 0 says the caller sampled (records) the trace.
    pub flags: u8,
}

impl TraceParent {
    /// Bytes of the binary form.
    pub const LEN: usize = 16 + 8 + 1;

    /// The binary form, as carried in frames.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// Reads the binary form; `None` for an all-zero (invalid) trace or span id, which W3C says
    /// to ignore rather than continue.
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Option<Self> {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..24]);
        Self { trace_id, span_id, flags: bytes[24] }.valid()
    }

    /// Parses a `traceparent` header value of version 00 (or a later version, reading the
    /// fields version 00 defines, as W3C asks). `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        hex_into(version, &mut [0u8; 1])?;
        hex_into(trace, &mut trace_id)?;
        hex_into(span, &mut span_id)?;
        hex_into(flags, &mut flag)?;
        Self { trace_id, span_id, flags: flag[0] }.valid()
    }

    /// The trace id as 32 lowercase hex digits (how logs and trace viewers show it).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    fn valid(self) -> Option<Self> {
        (self.trace_id != [0; 16] && self.span_id != [0; 8]).then_some(self)
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits.
fn hex_into(text: &str, out: &mut [u8]) -> Option<()> {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_roundtrips_in_both_forms() {
        let parent = TraceParent::parse(HEADER).unwrap();
        assert_eq!(parent.to_string(), HEADER);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.flags, 1);
        assert_eq!(TraceParent::from_bytes(&parent.to_bytes()), Some(parent));
    }

    #[test]
    fn malformed_or_invalid_values_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert_eq!(TraceParent::from_bytes(&[0; TraceParent::LEN]), None);
    }

    #[test]
    fn a_later_version_is_read_for_the_fields_it_shares() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(TraceParent::parse(later).is_some());
    }
}

//! A forwarded request's body: how its length is known (RFC 9112 section 6.3, refusing every
//! ambiguity) and where it ends. The proxy passes the body through unchanged, a chunked one still
//! chunked, and stops at its end: whatever the client sends after it (a pipelined request with
//! its `Proxy-Authorization`, say) never reaches the target.

use super::{HttpError, RequestHead};

/// How the end of a request's body is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body (RFC 9112 section 6.3, rule 7).
    None,
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`: the body ends with its last chunk and trailers.
    Chunked,
}

/// Longest `Content-Length` accepted, in digits (any more could overflow a `u64`).
const MAX_LENGTH_DIGITS: usize = 19;
/// Most hexadecimal digits in a chunk size (`u64`).
const MAX_SIZE_DIGITS: u8 = 16;

/// The framing of `head`'s body. Two parsers that could disagree on where a body ends are how
/// requests are smuggled, so anything that leaves room for doubt is refused (RFC 9112 sections
/// 6.1 and 6.3): both `Content-Length` and `Transfer-Encoding`; more than one `Content-Length`
/// value (even equal ones) or one that is not a plain decimal number; a transfer coding list
/// that does not end in `chunked` exactly once; `Transfer-Encoding` in an HTTP/1.0 request.
pub fn framing(head: &RequestHead) -> Result<Framing, HttpError> {
    let values = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim_matches([' ', '\t']))
            .collect()
    };
    let (lengths, codings) = (values("content-length"), values("transfer-encoding"));
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Framing::None),
        ([_, ..], [_, ..]) => Err(HttpError::BothLengths),
        ([length], []) => {
            if length.is_empty()
                || length.len() > MAX_LENGTH_DIGITS
                || !length.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HttpError::ContentLength);
            }
            length.parse().map(Framing::Length).map_err(|_| HttpError::ContentLength)
        }
        (_, []) => Err(HttpError::ContentLength),
        ([], codings) => {
            if head.version == "HTTP/1.0" {
                return Err(HttpError::TransferEncoding);
            }
            // Empty list elements are allowed and ignored (RFC 9110 section 5.6.1).
            let names: Vec<String> = codings
                .iter()
                .filter(|c| !c.is_empty())
                .map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
                .collect();
            let chunked = names.iter().filter(|n| *n == "chunked").count();
            if names.last().map(String::as_str) != Some("chunked")
                || chunked != 1
                || !names.iter().all(|n| super::is_token(n))
            {
                return Err(HttpError::TransferEncoding);
            }
            Ok(Framing::Chunked)
        }
    }
}

/// A malformed chunked body, found while passing it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked request body: {0}")]
pub struct BodyError(&'static str);

/// Where a body ends, fed the bytes that follow the head as they arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(State);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    /// Reading a chunk size: its digits so far and their value.
    Size {
        digits: u8,
        size: u64,
    },
    /// A chunk extension, up to its CR (`size` is the chunk's).
    Extension {
        size: u64,
    },
    /// The LF that ends a chunk-size line.
    SizeLf {
        size: u64,
    },
    /// Bytes of a chunk's data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// The trailer section: at the start of a line, or inside a field line.
    Trailer {
        line_start: bool,
    },
    /// The LF after a trailer line's CR; `last` when the line was empty (the body's end).
    TrailerLf {
        last: bool,
    },
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Self {
        Body(match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size { digits: 0, size: 0 },
        })
    }

    /// Whether the whole body went through.
    pub fn is_done(&self) -> bool {
        self.0 == State::Done
    }

    /// How many of `bytes` (the next ones from the client) belong to the body: all of them until
    /// its end, then none.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, BodyError> {
        let mut used = 0;
        while used < bytes.len() {
            match &mut self.0 {
                State::Done => break,
                State::Length(left) | State::Data(left) => {
                    let take = (*left).min((bytes.len() - used) as u64);
                    *left -= take;
                    used += take as usize;
                    if *left == 0 {
                        self.0 = if matches!(self.0, State::Length(_)) {
                            State::Done
                        } else {
                            State::DataCr
                        };
                    }
                }
                _ => {
                    self.0 = step(self.0, bytes[used])?;
                    used += 1;
                }
            }
        }
        Ok(used)
    }
}

/// One byte of the chunked framing (RFC 9112 section 7.1); lines end with CRLF only.
fn step(state: State, b: u8) -> Result<State, BodyError> {
    let bad = |why| Err(BodyError(why));
    // Characters a chunk extension or a trailer line may hold: visible ASCII, space, tab and
    // obs-text; never a control character or a bare CR or LF.
    let text = |b: u8| b == b'\t' || (b >= b' ' && b != 0x7f);
    match state {
        State::Size { digits, size } => match (b as char).to_digit(16) {
            Some(_) if digits == MAX_SIZE_DIGITS => bad("chunk size too large"),
            Some(d) => Ok(State::Size { digits: digits + 1, size: size << 4 | u64::from(d) }),
            None if digits == 0 => bad("chunk size is not hexadecimal"),
            None if b == b'\r' => Ok(State::SizeLf { size }),
            None if b == b'\n' => bad("bare LF after a chunk size"),
            None if matches!(b, b';' | b' ' | b'\t') => Ok(State::Extension { size }),
            None => bad("chunk size is not hexadecimal"),
        },
        State::Extension { size } if b == b'\r' => Ok(State::SizeLf { size }),
        State::Extension { size } if text(b) => Ok(State::Extension { size }),
        State::Extension { .. } => bad("control character in a chunk extension"),
        State::SizeLf { size: 0 } if b == b'\n' => Ok(State::Trailer { line_start: true }),
        State::SizeLf { size } if b == b'\n' => Ok(State::Data(size)),
        State::SizeLf { .. } => bad("chunk-size line not ended by CRLF"),
        State::DataCr if b == b'\r' => Ok(State::DataLf),
        State::DataLf if b == b'\n' => Ok(State::Size { digits: 0, size: 0 }),
        State::DataCr | State::DataLf => bad("chunk data not followed by CRLF"),
        State::Trailer { line_start } if b == b'\r' => Ok(State::TrailerLf { last: line_start }),
        State::Trailer { line_start: true } if matches!(b, b' ' | b'\t') => {
            bad("obs-fold in the trailer section")
        }
        State::Trailer { .. } if text(b) => Ok(State::Trailer { line_start: false }),
        State::Trailer { .. } => bad("control character or bare LF in the trailer section"),
        State::TrailerLf { last: true } if b == b'\n' => Ok(State::Done),
        State::TrailerLf { last: false } if b == b'\n' => Ok(State::Trailer { line_start: true }),
        State::TrailerLf { .. } => bad("trailer line not ended by CRLF"),
        // `feed` passes these states' bytes without stepping.
        State::Length(_) | State::Data(_) | State::Done => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_proxy::{parse_head, Parse};
    use proptest::prelude::*;

    fn framing_of(headers: &str) -> Result<Framing, HttpError> {
        framing_in("HTTP/1.1", headers)
    }

    fn framing_in(version: &str, headers: &str) -> Result<Framing, HttpError> {
        let raw = format!("POST http://app/ {version}\r\n{headers}\r\n");
        let Ok(Parse::Done(head, _)) = parse_head(raw.as_bytes()) else { panic!("{raw}") };
        framing(&head)
    }

    #[test]
    fn one_unambiguous_length_or_none() {
        assert_eq!(framing_of(""), Ok(Framing::None));
        assert_eq!(framing_of("Content-Length: 42\r\n"), Ok(Framing::Length(42)));
        assert_eq!(framing_of("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(framing_of("Transfer-Encoding: gzip, Chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            framing_of("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        for h in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        ] {
            assert_eq!(framing_of(h), Err(HttpError::BothLengths), "{h}");
        }
    }

    #[test]
    fn repeated_conflicting_or_odd_content_lengths_are_refused() {
        for h in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5,6\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 5 5\r\n",
            "Content-Length:\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert_eq!(framing_of(h), Err(HttpError::ContentLength), "{h}");
        }
    }

    #[test]
    fn transfer_encoding_other_than_final_chunked_is_refused() {
        for h in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding:\r\n",
        ] {
            assert_eq!(framing_of(h), Err(HttpError::TransferEncoding), "{h}");
        }
        let old = framing_in("HTTP/1.0", "Transfer-Encoding: chunked\r\n");
        assert_eq!(old, Err(HttpError::TransferEncoding), "HTTP/1.0 has no transfer codings");
    }

    /// Feeds `bytes` in pieces of `piece`; how many belonged to the body, and whether it ended.
    fn fed(framing: Framing, bytes: &[u8], piece: usize) -> Result<(usize, bool), BodyError> {
        let mut body = Body::new(framing);
        let mut used = 0;
        for chunk in bytes.chunks(piece.max(1)) {
            let n = body.feed(chunk)?;
            used += n;
            if n < chunk.len() {
                break;
            }
        }
        Ok((used, body.is_done()))
    }

    const CHUNKED: &[u8] = b"4;name=\"v\"\r\nWiki\r\n5 ; x\r\npedia\r\n0\r\nExpires: never\r\n\r\n";

    #[test]
    fn a_body_ends_where_its_framing_says_and_no_further() {
        let next = b"GET http://app/two HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n";
        for piece in [1, 3, 1000] {
            let mut sent = b"hello".to_vec();
            sent.extend_from_slice(next);
            assert_eq!(fed(Framing::Length(5), &sent, piece), Ok((5, true)));
            let mut sent = CHUNKED.to_vec();
            sent.extend_from_slice(next);
            assert_eq!(fed(Framing::Chunked, &sent, piece), Ok((CHUNKED.len(), true)));
            assert_eq!(fed(Framing::None, next, piece), Ok((0, true)));
        }
        assert_eq!(fed(Framing::Chunked, &CHUNKED[..20], 7), Ok((20, false)));
        assert_eq!(fed(Framing::Length(10), b"12345", 2), Ok((5, false)));
        assert_eq!(fed(Framing::Chunked, b"0\r\n\r\n", 1), Ok((5, true)));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"4;a\x1bb\r\nWiki\r\n",
            b"4;a\nb\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: y\nZ: w\r\n\r\n",
            b"0\r\nX: y\r\n folded\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            assert!(fed(Framing::Chunked, bad, 1).is_err(), "{}", bad.escape_ascii());
        }
    }

    proptest! {
        #[test]
        fn pieces_do_not_change_where_a_body_ends(bytes in proptest::collection::vec(any::<u8>(), 0..200), piece in 1usize..20) {
            for framing in [Framing::Chunked, Framing::Length(17)] {
                prop_assert_eq!(fed(framing, &bytes, piece), fed(framing, &bytes, bytes.len()));
            }
        }

        #[test]
        fn a_chunked_body_is_found_whole(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..5), after in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let len = body.len();
            body.extend_from_slice(&after);
            prop_assert_eq!(fed(Framing::Chunked, &body, 1), Ok((len, true)));
        }
    }
}

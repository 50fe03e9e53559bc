//! The tunnel's frames and their binary codec.
//!
//! One frame travels in one binary WebSocket message, so the codec needs no length prefix of its
//! own: the WebSocket layer already delimits messages (and caps their size). Every frame starts
//! with a 1-byte type and a 4-byte big-endian stream id (0 for frames that concern the whole
//! session). Decoding takes `Bytes` so that a `Data` payload is a zero-copy slice of the message.

use crate::trace::TraceParent;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Version of the wire protocol this build speaks, exchanged in the handshake so that an endpoint
/// and a gateway of different builds agree on what each may send, and a peer too old or too new
/// gets a clear refusal rather than undecodable frames.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest version this build still speaks with: a session runs at the lower of the two
/// sides' versions.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// From this version on, `Open` and `RelayOpen` may carry the opener's trace context; a peer at
/// an older version is never sent one (its decoder refuses the extra bytes).
pub const TRACE_CONTEXT_SINCE: u16 = 2;

/// Bytes in front of every frame: type (1) + stream id (4).
pub const HEADER_LEN: usize = 5;

/// From this version on, a `Data` payload may be up to [`MAX_DATA_LEN`]; a peer at an older
/// version is sent at most [`V2_MAX_DATA_LEN`] (its decoder refuses more).
pub const LARGE_DATA_SINCE: u16 = 3;

/// Largest `Data` payload a sender may put in one frame for a peer of protocol 1 or 2.
pub const V2_MAX_DATA_LEN: usize = 64 * 1024;

/// Largest `Data` payload of any frame. Readers reject larger ones; the WebSocket layer is
/// configured with [`MAX_FRAME_LEN`] so it refuses them before buffering. A bulk stream alone
/// on its session sends frames this large (its pump reads several frames' worth at once,
/// `ism_tunnel`'s `READ_FRAMES`): every frame costs a write, a wake-up of the target's reader and
/// a share of a credit round trip; 1 MiB frames cost eight streams side by side more than they
/// saved a lone one (ARCHITECTURE.md, Measured, 2026-12-05, eleventh session). Measured against
/// 64 KiB frames: the gateway's reads and the agent's writes fell to a third, CPU per MiB a
/// little (see "Measured" in ARCHITECTURE.md).
pub const MAX_DATA_LEN: usize = 256 * 1024;

/// Largest encoded frame of any type (a Data frame at [`MAX_DATA_LEN`] plus its header).
pub const MAX_FRAME_LEN: usize = MAX_DATA_LEN + HEADER_LEN;

/// The largest `Data` payload to send in a session of protocol `version`.
pub fn max_data_len(version: u16) -> usize {
    match version >= LARGE_DATA_SINCE {
        true => MAX_DATA_LEN,
        false => V2_MAX_DATA_LEN,
    }
}

/// Longest string field (names, messages, keys). Keeps hostile peers from making us allocate.
pub const MAX_STRING_LEN: usize = 1024;

/// Identifies one stream within a session. Gateway-opened streams are odd, endpoint-opened even,
/// so both sides can allocate without coordination; 0 is the session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where the endpoint should connect. Names are resolved by the endpoint, inside the private
/// network, never by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    Ipv4(Ipv4Addr, u16),
    Ipv6(Ipv6Addr, u16),
    Domain(String, u16),
}

impl TargetAddr {
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ipv4(_, p) | TargetAddr::Ipv6(_, p) | TargetAddr::Domain(_, p) => *p,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ipv4(ip, p) => write!(f, "{ip}:{p}"),
            TargetAddr::Ipv6(ip, p) => write!(f, "[{ip}]:{p}"),
            TargetAddr::Domain(d, p) => write!(f, "{d}:{p}"),
        }
    }
}

/// Why the endpoint could not open a stream. Each maps onto a SOCKS5 reply code at the gateway,
/// so a scanner sees the same distinction it would see with a local SOCKS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpenFailure {
    /// Anything not covered below.
    General = 1,
    /// The endpoint's target allowlist refuses this host or port (SOCKS 0x02).
    NotAllowed = 2,
    /// No route to the network (SOCKS 0x03).
    NetworkUnreachable = 3,
    /// The name did not resolve or the host did not answer (SOCKS 0x04).
    HostUnreachable = 4,
    /// The target actively refused the connection (SOCKS 0x05).
    ConnectionRefused = 5,
    /// The connection attempt timed out (SOCKS 0x06, "TTL expired", the closest code).
    TimedOut = 6,
    /// The endpoint has reached its stream capacity.
    Busy = 7,
    /// On a relay link between gateway nodes: the node asked does not hold the endpoint's
    /// session (it just moved to another node), so the asking node looks up the owner again.
    NotHeld = 8,
}

impl OpenFailure {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::General,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TimedOut,
            7 => Self::Busy,
            8 => Self::NotHeld,
            other => return Err(DecodeError::UnknownCode(other)),
        })
    }

    /// A short name, for metric labels and span fields.
    pub fn label(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::NotAllowed => "not_allowed",
            Self::NetworkUnreachable => "network_unreachable",
            Self::HostUnreachable => "host_unreachable",
            Self::ConnectionRefused => "connection_refused",
            Self::TimedOut => "timed_out",
            Self::Busy => "busy",
            Self::NotHeld => "not_held",
        }
    }
}

/// Why a stream was torn down before both sides finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResetReason {
    /// The local application (scanner or target socket) failed or went away.
    Aborted = 1,
    /// The peer broke the protocol on this stream (e.g. sent more than its credit).
    ProtocolViolation = 2,
    /// Access was revoked or the session is being replaced; the stream must not continue.
    Revoked = 3,
    /// The session carrying the stream ended.
    SessionClosed = 4,
}

impl ResetReason {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::Aborted,
            2 => Self::ProtocolViolation,
            3 => Self::Revoked,
            4 => Self::SessionClosed,
            other => return Err(DecodeError::UnknownCode(other)),
        })
    }
}

/// Why the gateway refused an endpoint's handshake. The endpoint prints the seed's message for
/// each, and exits rather than retrying for the ones that retrying cannot fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectCode {
    /// The key is unknown, malformed or rotated.
    InvalidKey = 1,
    /// The key is bound to another machine: "Token already registered".
    TokenAlreadyRegistered = 2,
    /// The endpoint speaks a protocol version this gateway does not.
    UnsupportedVersion = 3,
    /// The handshake itself was malformed (bad signature, missing fields).
    BadHandshake = 4,
    /// A transient gateway-side failure (event log unavailable): retry later.
    Unavailable = 5,
    /// The key was right, but its endpoint has been deleted: it will never work again.
    EndpointDeleted = 6,
    /// Another live agent with the same machine identity holds the endpoint's session: the
    /// machine key was copied to another host (or a second agent runs on this one).
    MachineKeyCopied = 7,
}

impl RejectCode {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::InvalidKey,
            2 => Self::TokenAlreadyRegistered,
            3 => Self::UnsupportedVersion,
            4 => Self::BadHandshake,
            5 => Self::Unavailable,
            6 => Self::EndpointDeleted,
            7 => Self::MachineKeyCopied,
            other => return Err(DecodeError::UnknownCode(other)),
        })
    }

    /// Whether an endpoint should keep retrying after this refusal.
    pub fn is_retryable(self) -> bool {
        matches!(self, RejectCode::Unavailable)
    }

    /// A short name, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidKey => "invalid_key",
            Self::TokenAlreadyRegistered => "token_already_registered",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadHandshake => "bad_handshake",
            Self::Unavailable => "unavailable",
            Self::EndpointDeleted => "endpoint_deleted",
            Self::MachineKeyCopied => "machine_key_copied",
        }
    }
}

/// Everything that crosses the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    // --- handshake (stream 0), in this order: Challenge, Hello, then Welcome or Rejected ---
    /// Gateway -> endpoint: proves freshness; the endpoint signs `nonce` with its machine key.
    Challenge {
        version: u16,
        nonce: [u8; 32],
        node: String,
    },
    /// Endpoint -> gateway: the key, the machine identity and a signature over the challenge.
    /// Boxed: the largest frame, sent once per session, would otherwise set the size of every
    /// frame the data path moves.
    Hello(Box<Hello>),
    /// Gateway -> endpoint: the session is live.
    Welcome {
        session: [u8; 16],
        node: String,
        endpoint_name: String,
    },
    /// Gateway -> endpoint: the handshake was refused; the session ends after this frame.
    Rejected {
        code: RejectCode,
        message: String,
    },

    // --- streams ---
    /// Opener -> acceptor: connect to `target`; `window` is the opener's receive window.
    Open {
        stream: StreamId,
        target: TargetAddr,
        window: u32,
        /// The opener's span, so that the acceptor's work joins the opener's trace.
        trace: Option<TraceParent>,
    },
    /// Between gateway nodes only: open a stream to `target` through the endpoint the acceptor
    /// holds, for `relay`'s scanner (the one-hop relay of a cluster). Answered like `Open`.
    RelayOpen {
        stream: StreamId,
        target: TargetAddr,
        window: u32,
        relay: Box<Relay>,
        trace: Option<TraceParent>,
    },
    /// Acceptor -> opener: connected; `window` is the acceptor's receive window.
    OpenOk {
        stream: StreamId,
        window: u32,
    },
    /// Acceptor -> opener: could not connect; the stream is gone.
    OpenFailed {
        stream: StreamId,
        reason: OpenFailure,
        message: String,
    },
    /// Payload bytes, never more than the receiver has granted.
    Data {
        stream: StreamId,
        payload: Bytes,
    },
    /// The receiver grants `increment` more bytes of credit.
    Window {
        stream: StreamId,
        increment: u32,
    },
    /// The sender will send no more data on this stream (half-close).
    Fin {
        stream: StreamId,
    },
    /// The stream is torn down in both directions.
    Reset {
        stream: StreamId,
        reason: ResetReason,
    },

    // --- session liveness (stream 0) ---
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Gateway -> endpoint: this node is draining; open a session to another node, then this one
    /// closes (make before break). Streams already running finish first.
    Move {
        reason: String,
    },
}

/// Whom a stream relayed between gateway nodes is for: the endpoint whose network the target is
/// in, the scanner, and the node the scanner came to (for the owner node's records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub endpoint: [u8; 16],
    pub scanner: String,
    pub ingress_node: String,
}

/// What an endpoint opens a session for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// The endpoint's working session: it serves scanners, and replaces any older one.
    Serve = 0,
    /// A short session for the diagnostic tool or the installer's key check, beside the working
    /// session (which it must not replace): it may only echo diagnostic data.
    Diagnostics = 1,
}

impl Purpose {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Purpose::Serve),
            1 => Ok(Purpose::Diagnostics),
            other => Err(DecodeError::UnknownCode(other)),
        }
    }
}

/// The stream target an endpoint opens to measure the tunnel: the gateway echoes what it gets.
pub const DIAGNOSTIC_ECHO_HOST: &str = "diagnostics.echo.ism";

/// The endpoint's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub purpose: Purpose,
    /// The endpoint key as issued by the management API.
    pub key: String,
    /// Ed25519 public key of the machine's locally generated identity.
    pub machine_key: [u8; 32],
    /// Ed25519 signature of the challenge nonce by the machine key.
    pub signature: [u8; 64],
    pub agent_version: String,
    pub platform: String,
    pub hostname: String,
    /// A random id of the agent process, so that the gateway can tell two live agents sharing
    /// one machine identity from one agent reconnecting. Added after the first release: the last
    /// field, absent (`None`) from older endpoints' frames, and not sent when `None`.
    pub instance: Option<[u8; 16]>,
}

mod tag {
    pub const CHALLENGE: u8 = 0x10;
    pub const HELLO: u8 = 0x11;
    pub const WELCOME: u8 = 0x12;
    pub const REJECTED: u8 = 0x13;
    pub const OPEN: u8 = 0x01;
    pub const OPEN_OK: u8 = 0x02;
    pub const OPEN_FAILED: u8 = 0x03;
    pub const DATA: u8 = 0x04;
    pub const WINDOW: u8 = 0x05;
    pub const FIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const PING: u8 = 0x08;
    pub const PONG: u8 = 0x09;
    pub const RELAY_OPEN: u8 = 0x0a;
    pub const MOVE: u8 = 0x14;
}

/// Why bytes could not be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("unknown code {0}")]
    UnknownCode(u8),
    #[error("unknown address type {0}")]
    UnknownAddressType(u8),
    #[error("string field is not UTF-8")]
    InvalidUtf8,
    #[error("field too long: {len} bytes (limit {limit})")]
    TooLong { len: usize, limit: usize },
    #[error("{0} bytes left over after the frame")]
    TrailingBytes(usize),
    #[error("frame type 0x{tag:02x} must use stream {expected_zero}", expected_zero = if *.session_level { "0" } else { "> 0" })]
    WrongStreamId { tag: u8, session_level: bool },
    #[error("empty domain name")]
    EmptyDomain,
    #[error("trace context with an all-zero trace or span id")]
    InvalidTraceContext,
}

impl Frame {
    /// The stream this frame concerns, or `None` for session-level frames.
    pub fn stream(&self) -> Option<StreamId> {
        match self {
            Frame::Open { stream, .. }
            | Frame::RelayOpen { stream, .. }
            | Frame::OpenOk { stream, .. }
            | Frame::OpenFailed { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::Window { stream, .. }
            | Frame::Fin { stream }
            | Frame::Reset { stream, .. } => Some(*stream),
            _ => None,
        }
    }

    /// Encodes the frame into a fresh buffer, ready to be one WebSocket message.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// About how long the encoding is (exact for `Data`): room to reserve for it.
    pub fn encoded_len_hint(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => HEADER_LEN + payload.len(),
            Frame::Hello(h) => {
                HEADER_LEN
                    + 2
                    + 32
                    + 64
                    + 8
                    + h.key.len()
                    + h.agent_version.len()
                    + h.platform.len()
                    + h.hostname.len()
                    + 16
            }
            _ => 64,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let (tag, stream) = match self {
            Frame::Challenge { .. } => (tag::CHALLENGE, 0),
            Frame::Hello(_) => (tag::HELLO, 0),
            Frame::Welcome { .. } => (tag::WELCOME, 0),
            Frame::Rejected { .. } => (tag::REJECTED, 0),
            Frame::Open { stream, .. } => (tag::OPEN, stream.0),
            Frame::RelayOpen { stream, .. } => (tag::RELAY_OPEN, stream.0),
            Frame::Move { .. } => (tag::MOVE, 0),
            Frame::OpenOk { stream, .. } => (tag::OPEN_OK, stream.0),
            Frame::OpenFailed { stream, .. } => (tag::OPEN_FAILED, stream.0),
            Frame::Data { stream, .. } => (tag::DATA, stream.0),
            Frame::Window { stream, .. } => (tag::WINDOW, stream.0),
            Frame::Fin { stream } => (tag::FIN, stream.0),
            Frame::Reset { stream, .. } => (tag::RESET, stream.0),
            Frame::Ping { .. } => (tag::PING, 0),
            Frame::Pong { .. } => (tag::PONG, 0),
        };
        out.put_u8(tag);
        out.put_u32(stream);
        match self {
            Frame::Challenge { version, nonce, node } => {
                out.put_u16(*version);
                out.put_slice(nonce);
                put_str(out, node);
            }
            Frame::Hello(h) => {
                out.put_u16(h.version);
                out.put_u8(h.purpose as u8);
                put_str(out, &h.key);
                out.put_slice(&h.machine_key);
                out.put_slice(&h.signature);
                put_str(out, &h.agent_version);
                put_str(out, &h.platform);
                put_str(out, &h.hostname);
                if let Some(instance) = &h.instance {
                    out.put_slice(instance);
                }
            }
            Frame::Welcome { session, node, endpoint_name } => {
                out.put_slice(session);
                put_str(out, node);
                put_str(out, endpoint_name);
            }
            Frame::Rejected { code, message } => {
                out.put_u8(*code as u8);
                put_str(out, message);
            }
            Frame::Open { target, window, trace, .. } => {
                put_target(out, target);
                out.put_u32(*window);
                put_trace(out, trace);
            }
            Frame::RelayOpen { target, window, relay, trace, .. } => {
                put_target(out, target);
                out.put_u32(*window);
                out.put_slice(&relay.endpoint);
                put_str(out, &relay.scanner);
                put_str(out, &relay.ingress_node);
                put_trace(out, trace);
            }
            Frame::Move { reason } => put_str(out, reason),
            Frame::OpenOk { window, .. } => out.put_u32(*window),
            Frame::OpenFailed { reason, message, .. } => {
                out.put_u8(*reason as u8);
                put_str(out, message);
            }
            Frame::Data { payload, .. } => out.put_slice(payload),
            Frame::Window { increment, .. } => out.put_u32(*increment),
            Frame::Fin { .. } => {}
            Frame::Reset { reason, .. } => out.put_u8(*reason as u8),
            Frame::Ping { nonce } | Frame::Pong { nonce } => out.put_u64(*nonce),
        }
    }

    /// Decodes one whole frame (one WebSocket message). Never panics, whatever the input.
    pub fn decode(mut buf: Bytes) -> Result<Frame, DecodeError> {
        need(&buf, HEADER_LEN)?;
        let tag = buf.get_u8();
        let raw_stream = buf.get_u32();
        let session_level = matches!(
            tag,
            tag::CHALLENGE
                | tag::HELLO
                | tag::WELCOME
                | tag::REJECTED
                | tag::PING
                | tag::PONG
                | tag::MOVE
        );
        let known = session_level
            || matches!(
                tag,
                tag::OPEN
                    | tag::RELAY_OPEN
                    | tag::OPEN_OK
                    | tag::OPEN_FAILED
                    | tag::DATA
                    | tag::WINDOW
                    | tag::FIN
                    | tag::RESET
            );
        if !known {
            return Err(DecodeError::UnknownType(tag));
        }
        if session_level != (raw_stream == 0) {
            return Err(DecodeError::WrongStreamId { tag, session_level });
        }
        let stream = StreamId(raw_stream);
        let frame = match tag {
            tag::CHALLENGE => {
                let version = get_u16(&mut buf)?;
                let nonce = get_array::<32>(&mut buf)?;
                let node = get_str(&mut buf)?;
                Frame::Challenge { version, nonce, node }
            }
            tag::HELLO => Frame::Hello(Box::new(Hello {
                version: get_u16(&mut buf)?,
                purpose: Purpose::from_u8(get_u8(&mut buf)?)?,
                key: get_str(&mut buf)?,
                machine_key: get_array::<32>(&mut buf)?,
                signature: get_array::<64>(&mut buf)?,
                agent_version: get_str(&mut buf)?,
                platform: get_str(&mut buf)?,
                hostname: get_str(&mut buf)?,
                instance: if buf.is_empty() { None } else { Some(get_array::<16>(&mut buf)?) },
            })),
            tag::WELCOME => Frame::Welcome {
                session: get_array::<16>(&mut buf)?,
                node: get_str(&mut buf)?,
                endpoint_name: get_str(&mut buf)?,
            },
            tag::REJECTED => Frame::Rejected {
                code: RejectCode::from_u8(get_u8(&mut buf)?)?,
                message: get_str(&mut buf)?,
            },
            tag::OPEN => {
                let (target, window) = (get_target(&mut buf)?, get_u32(&mut buf)?);
                Frame::Open { stream, target, window, trace: get_trace(&mut buf)? }
            }
            tag::RELAY_OPEN => Frame::RelayOpen {
                stream,
                target: get_target(&mut buf)?,
                window: get_u32(&mut buf)?,
                relay: Box::new(Relay {
                    endpoint: get_array::<16>(&mut buf)?,
                    scanner: get_str(&mut buf)?,
                    ingress_node: get_str(&mut buf)?,
                }),
                trace: get_trace(&mut buf)?,
            },
            tag::OPEN_OK => Frame::OpenOk { stream, window: get_u32(&mut buf)? },
            tag::OPEN_FAILED => Frame::OpenFailed {
                stream,
                reason: OpenFailure::from_u8(get_u8(&mut buf)?)?,
                message: get_str(&mut buf)?,
            },
            tag::DATA => {
                if buf.len() > MAX_DATA_LEN {
                    return Err(DecodeError::TooLong { len: buf.len(), limit: MAX_DATA_LEN });
                }
                let payload = buf.split_to(buf.len());
                Frame::Data { stream, payload }
            }
            tag::WINDOW => Frame::Window { stream, increment: get_u32(&mut buf)? },
            tag::FIN => Frame::Fin { stream },
            tag::RESET => Frame::Reset { stream, reason: ResetReason::from_u8(get_u8(&mut buf)?)? },
            tag::PING => Frame::Ping { nonce: get_u64(&mut buf)? },
            tag::PONG => Frame::Pong { nonce: get_u64(&mut buf)? },
            tag::MOVE => Frame::Move { reason: get_str(&mut buf)? },
            _ => unreachable!("tag checked above"),
        };
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes(buf.len()));
        }
        Ok(frame)
    }
}

/// Writes a Data frame header into the first [`HEADER_LEN`] bytes of `buf`, whose remaining bytes
/// are the payload. This lets the data path read a socket straight into a buffer with headroom
/// and send it without copying the payload again.
pub fn write_data_header(buf: &mut [u8], stream: StreamId) {
    buf[0] = tag::DATA;
    buf[1..HEADER_LEN].copy_from_slice(&stream.0.to_be_bytes());
}

fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::Truncated { needed: n - buf.len() })
    } else {
        Ok(())
    }
}

fn get_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    need(buf, 2)?;
    Ok(buf.get_u16())
}

fn get_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    need(buf, 4)?;
    Ok(buf.get_u32())
}

fn get_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    need(buf, 8)?;
    Ok(buf.get_u64())
}

fn get_array<const N: usize>(buf: &mut Bytes) -> Result<[u8; N], DecodeError> {
    need(buf, N)?;
    let mut a = [0u8; N];
    buf.copy_to_slice(&mut a);
    Ok(a)
}

/// The optional trace context at the end of an open: absent when nothing is left. An all-zero id
/// is refused (no encoder makes one), so that every frame decoded encodes to the same bytes.
fn get_trace(buf: &mut Bytes) -> Result<Option<TraceParent>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    TraceParent::from_bytes(&get_array::<{ TraceParent::LEN }>(buf)?)
        .map(Some)
        .ok_or(DecodeError::InvalidTraceContext)
}

fn put_trace(out: &mut BytesMut, trace: &Option<TraceParent>) {
    if let Some(trace) = trace {
        out.put_slice(&trace.to_bytes());
    }
}

fn get_str(buf: &mut Bytes) -> Result<String, DecodeError> {
    let len = get_u16(buf)? as usize;
    if len > MAX_STRING_LEN {
        return Err(DecodeError::TooLong { len, limit: MAX_STRING_LEN });
    }
    need(buf, len)?;
    let raw = buf.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Callers pass our own strings; clamp rather than panic if one is ever too long, at a char
    // boundary so the peer can still decode it.
    let mut end = s.len().min(MAX_STRING_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

fn put_target(out: &mut BytesMut, t: &TargetAddr) {
    match t {
        TargetAddr::Ipv4(ip, port) => {
            out.put_u8(ATYP_IPV4);
            out.put_slice(&ip.octets());
            out.put_u16(*port);
        }
        TargetAddr::Ipv6(ip, port) => {
            out.put_u8(ATYP_IPV6);
            out.put_slice(&ip.octets());
            out.put_u16(*port);
        }
        TargetAddr::Domain(name, port) => {
            out.put_u8(ATYP_DOMAIN);
            put_str(out, name);
            out.put_u16(*port);
        }
    }
}

fn get_target(buf: &mut Bytes) -> Result<TargetAddr, DecodeError> {
    Ok(match get_u8(buf)? {
        ATYP_IPV4 => {
            let ip = Ipv4Addr::from(get_array::<4>(buf)?);
            TargetAddr::Ipv4(ip, get_u16(buf)?)
        }
        ATYP_IPV6 => {
            let ip = Ipv6Addr::from(get_array::<16>(buf)?);
            TargetAddr::Ipv6(ip, get_u16(buf)?)
        }
        ATYP_DOMAIN => {
            let name = get_str(buf)?;
            if name.is_empty() {
                return Err(DecodeError::EmptyDomain);
            }
            if name.len() > 255 {
                return Err(DecodeError::TooLong { len: name.len(), limit: 255 });
            }
            TargetAddr::Domain(name, get_u16(buf)?)
        }
        other => return Err(DecodeError::UnknownAddressType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(f: Frame) {
        let bytes = f.encode();
        assert_eq!(Frame::decode(bytes).unwrap(), f);
    }

    #[test]
    fn every_frame_type_roundtrips() {
        roundtrip(Frame::Challenge { version: 1, nonce: [7; 32], node: "node-a".into() });
        roundtrip(Frame::Hello(Box::new(Hello {
            version: 1,
            purpose: Purpose::Diagnostics,
            key: "k".repeat(80),
            machine_key: [1; 32],
            signature: [2; 64],
            agent_version: "0.1.0".into(),
            platform: "linux".into(),
            hostname: "scanner-box".into(),
            instance: Some([4; 16]),
        })));
        roundtrip(Frame::Welcome {
            session: [3; 16],
            node: "n".into(),
            endpoint_name: "dc1".into(),
        });
        roundtrip(Frame::Rejected {
            code: RejectCode::TokenAlreadyRegistered,
            message: "Token already registered".into(),
        });
        roundtrip(Frame::RelayOpen {
            stream: StreamId(9),
            target: TargetAddr::Domain("intranet.local".into(), 443),
            window: 1 << 16,
            relay: Box::new(Relay {
                endpoint: [7; 16],
                scanner: "credential:abc".into(),
                ingress_node: "node-b".into(),
            }),
            trace: None,
        });
        roundtrip(Frame::RelayOpen {
            stream: StreamId(11),
            target: TargetAddr::Domain("intranet.local".into(), 443),
            window: 1 << 16,
            relay: Box::new(Relay {
                endpoint: [7; 16],
                scanner: "credential:abc".into(),
                ingress_node: "node-b".into(),
            }),
            trace: Some(TraceParent { trace_id: [5; 16], span_id: [6; 8], flags: 1 }),
        });
        roundtrip(Frame::Move { reason: "node-a is draining".into() });
        roundtrip(Frame::Open {
            stream: StreamId(1),
            target: TargetAddr::Domain("intranet.local".into(), 443),
            window: 1 << 18,
            trace: None,
        });
        roundtrip(Frame::Open {
            stream: StreamId(5),
            target: TargetAddr::Domain("intranet.local".into(), 443),
            window: 1 << 18,
            trace: Some(TraceParent { trace_id: [1; 16], span_id: [2; 8], flags: 0 }),
        });
        roundtrip(Frame::Open {
            stream: StreamId(3),
            target: TargetAddr::Ipv4(Ipv4Addr::new(10, 1, 2, 3), 80),
            window: 9,
            trace: None,
        });
        roundtrip(Frame::Open {
            stream: StreamId(5),
            target: TargetAddr::Ipv6(Ipv6Addr::LOCALHOST, 8080),
            window: 9,
            trace: None,
        });
        roundtrip(Frame::OpenOk { stream: StreamId(1), window: 65536 });
        roundtrip(Frame::OpenFailed {
            stream: StreamId(1),
            reason: OpenFailure::NotAllowed,
            message: "not in allowlist".into(),
        });
        roundtrip(Frame::Data { stream: StreamId(9), payload: Bytes::from_static(b"hello") });
        roundtrip(Frame::Data { stream: StreamId(9), payload: Bytes::new() });
        roundtrip(Frame::Window { stream: StreamId(9), increment: 4096 });
        roundtrip(Frame::Fin { stream: StreamId(9) });
        roundtrip(Frame::Reset { stream: StreamId(9), reason: ResetReason::Revoked });
        roundtrip(Frame::Ping { nonce: u64::MAX });
        roundtrip(Frame::Pong { nonce: 0 });
    }

    /// An endpoint of the first release sends no instance: its `Hello` still decodes, and one
    /// without an instance encodes as that endpoint's did.
    #[test]
    fn a_hello_without_an_instance_is_an_older_endpoints() {
        let hello = |instance| Hello {
            version: 1,
            purpose: Purpose::Serve,
            key: "k".into(),
            machine_key: [1; 32],
            signature: [2; 64],
            agent_version: "0.1.0".into(),
            platform: "linux".into(),
            hostname: "h".into(),
            instance,
        };
        let old = Frame::Hello(Box::new(hello(None))).encode();
        let new = Frame::Hello(Box::new(hello(Some([9; 16])))).encode();
        assert_eq!(&new[..old.len()], &old[..], "the instance is appended, nothing else moves");
        assert_eq!(new.len(), old.len() + 16);
        assert_eq!(Frame::decode(old).unwrap(), Frame::Hello(Box::new(hello(None))));
        let cut = new.slice(..new.len() - 1);
        assert!(matches!(Frame::decode(cut), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn data_header_written_in_place_decodes_as_data() {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(b"payload");
        write_data_header(&mut buf, StreamId(42));
        assert_eq!(
            Frame::decode(Bytes::from(buf)).unwrap(),
            Frame::Data { stream: StreamId(42), payload: Bytes::from_static(b"payload") }
        );
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0x04, 0, 0])),
            Err(DecodeError::Truncated { needed: 2 })
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0xee, 0, 0, 0, 1])),
            Err(DecodeError::UnknownType(0xee))
        );
        // Data on stream 0 and Ping on a stream are both rejected.
        assert!(matches!(
            Frame::decode(Bytes::from_static(&[0x04, 0, 0, 0, 0])),
            Err(DecodeError::WrongStreamId { .. })
        ));
        assert!(matches!(
            Frame::decode(Bytes::from_static(&[0x08, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(DecodeError::WrongStreamId { .. })
        ));
        // An open whose trace context has an all-zero trace id.
        let mut zero_trace = Frame::Open {
            stream: StreamId(1),
            target: TargetAddr::Domain("intranet.local".into(), 443),
            window: 9,
            trace: None,
        }
        .encode()
        .to_vec();
        zero_trace.extend_from_slice(&[0; 16]);
        zero_trace.extend_from_slice(&[1; 9]);
        assert_eq!(
            Frame::decode(Bytes::from(zero_trace.clone())),
            Err(DecodeError::InvalidTraceContext)
        );
        // ...or only part of one.
        zero_trace.truncate(zero_trace.len() - 3);
        assert!(matches!(
            Frame::decode(Bytes::from(zero_trace)),
            Err(DecodeError::Truncated { .. })
        ));
        // Fin with trailing garbage.
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0x06, 0, 0, 0, 1, 9])),
            Err(DecodeError::TrailingBytes(1))
        );
        // Open with an unknown address type.
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0x01, 0, 0, 0, 1, 9])),
            Err(DecodeError::UnknownAddressType(9))
        );
        // A string whose declared length exceeds the limit.
        let mut b = BytesMut::new();
        b.put_u8(0x13);
        b.put_u32(0);
        b.put_u8(1);
        b.put_u16(60000);
        assert_eq!(
            Frame::decode(b.freeze()),
            Err(DecodeError::TooLong { len: 60000, limit: MAX_STRING_LEN })
        );
        // Oversized data.
        let mut big = vec![0u8; HEADER_LEN + MAX_DATA_LEN + 1];
        write_data_header(&mut big, StreamId(1));
        assert!(matches!(Frame::decode(Bytes::from(big)), Err(DecodeError::TooLong { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn decoded_frames_reencode_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(frame) = Frame::decode(Bytes::from(bytes.clone())) {
                let encoded = frame.encode();
                prop_assert_eq!(encoded.as_ref(), &bytes[..]);
            }
        }
    }
}

//! The tunnel driver: carries the sans-IO protocol of `ism-tunnel-proto` over a real WebSocket.
//!
//! - [`session`]: one live tunnel, its driver and writer tasks, opening streams, closing (the
//!   protocol state it drives is `ism_tunnel_proto::SessionState`);
//! - `outbox`: the WebSocket every sender shares, written directly when free; [`socket`]: the
//!   transport under it, read by tungstenite and written by the session; `ws_frame`: the
//!   session's WebSocket frames, built in place; `inbox`: what the driver delivers to a stream,
//!   written through to its socket when it takes it (a burst's large payloads held and written
//!   together); `lanes`: how stream tasks reach the driver;
//! - [`error`]: why sessions end and opens fail;
//! - [`fd_limit`]: raising the open-file limit of a process that carries tunnels;
//! - [`stream`]: one stream and the pumps that splice it to a TCP socket; `exchange`: a stream
//!   whose bytes its caller moves itself, under a splice's limits ([`Exchanged`]);
//! - [`credit`]: the per-stream send credit the pumps wait on;
//! - [`ws`]: WebSocket limits and the frame-at-a-time I/O used by the handshake.
//!
//! Both the gateway node and the endpoint agent use this crate; they differ only in who opens
//! streams (the gateway, for scanners) and who dials targets (the endpoint).
#![forbid(unsafe_code)]

pub mod credit;
pub mod error;
mod exchange;
pub mod fd_limit;
mod inbox;
mod lanes;
pub mod moved;
mod outbox;
pub mod session;
pub mod socket;
pub mod stream;
pub mod ws;
mod ws_frame;

pub use error::{CloseReason, OpenStreamError};
pub use exchange::Exchanged;
pub use ism_tunnel_proto::Timing;
pub use session::{Incoming, Session, SessionConfig, DEFAULT_WINDOW_BUDGET};
pub use socket::TunnelSocket;
pub use stream::{
    Expiry, IncomingStream, SpliceOptions, SpliceReport, StreamEnd, StreamReader, StreamWriter,
    TunnelStream,
};

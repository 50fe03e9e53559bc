//! The tunnel protocol, without I/O.
//!
//! An endpoint keeps one WebSocket open to a gateway node; this crate says what travels on it and
//! what each message means, and nothing about sockets, tasks or time, so that every rule is
//! unit-tested and fuzzed on its own (the shape of `quinn-proto`):
//!
//! - [`frame`]: the frames and their binary codec (one frame per binary WebSocket message);
//! - [`credit_budget`]: the process-wide budget streams reserve credit above the shared window
//!   from (a stream alone, busy streams side by side), which bounds what slow readers can make a
//!   node hold;
//! - [`window`]: per-stream receive credit, the flow control that keeps one slow target from
//!   stalling the other streams of the same tunnel;
//! - [`table`]: the stream table, which turns each frame from the peer into an [`table::Action`]
//!   and catches protocol violations;
//! - [`session`]: one session's state with time passed in: the table, opens waiting for an
//!   answer, pings and the dead-peer rule;
//! - [`handshake`]: what each side accepts or refuses while the session is being set up;
//! - [`trace`]: the W3C trace context an opener passes with a stream.
//!
//! The driver that carries all this over a real WebSocket is `ism-tunnel`.
#![forbid(unsafe_code)]

pub mod credit_budget;
pub mod frame;
pub mod handshake;
pub mod session;
pub mod table;
pub mod trace;
pub mod window;

pub use credit_budget::{CreditBudget, Reservation};
pub use frame::{
    max_data_len, DecodeError, Frame, Hello, OpenFailure, Purpose, RejectCode, Relay, ResetReason,
    StreamId, TargetAddr, DIAGNOSTIC_ECHO_HOST, HEADER_LEN, LARGE_DATA_SINCE, MAX_DATA_LEN,
    MAX_FRAME_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, TRACE_CONTEXT_SINCE, V2_MAX_DATA_LEN,
};
pub use session::{Due, GivenUp, SessionEnd, SessionState, Timing};
pub use table::{Action, LocalReset, OpenError, Role, SessionViolation, StreamTable, Windows};
pub use trace::TraceParent;
pub use window::{FlowViolation, RecvWindow};

//! One session's protocol state with time passed in: the stream table, the opens waiting for an
//! answer, heartbeats and the dead-peer rule.
//!
//! In the manner of `quinn-proto`: the driver feeds it what happens with the time it happened
//! ([`handle_frame`](SessionState::handle_frame), [`heard`](SessionState::heard),
//! [`open`](SessionState::open)), asks when it next needs to be woken
//! ([`poll_timeout`](SessionState::poll_timeout)) and tells it when that time has come
//! ([`handle_timeout`](SessionState::handle_timeout)). Nothing here reads a clock or sleeps, so
//! "a silent peer is declared dead after 7 s" is a test that moves `now`, not one that waits.

use crate::credit_budget::CreditBudget;
use crate::frame::{Frame, Relay, StreamId, TargetAddr};
use crate::table::{Action, OpenError, Role, StreamTable, Windows};
use crate::trace::TraceParent;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The session's clocks. Both ends use the same defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often to ping the peer: a healthy peer is heard at least this often.
    pub ping_interval: Duration,
    /// Silence after which the peer is declared dead.
    pub idle_timeout: Duration,
    /// How long an open waits for `OpenOk` / `OpenFailed` before it is given up.
    pub open_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            // A dead peer is declared within 7 s of its last word (the goal is 10 s, with room
            // for a busy machine's timers); a healthy one speaks at least every 2 s.
            ping_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(7),
            open_timeout: Duration::from_secs(20),
        }
    }
}

/// Why the protocol ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Nothing arrived from the peer within the idle timeout.
    IdleTimeout,
    /// The peer broke the protocol.
    Violation(String),
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::IdleTimeout => write!(f, "peer silent beyond the idle timeout"),
            SessionEnd::Violation(m) => write!(f, "protocol violation: {m}"),
        }
    }
}

/// What came due at a [`handle_timeout`](SessionState::handle_timeout).
#[derive(Debug, PartialEq, Eq)]
pub struct Due<H> {
    /// A `Ping` to send.
    pub ping: Option<Frame>,
    /// Opens given up on (no answer in time, or nobody waits for it any more), gone from the
    /// table: the driver tells each opener and sends the peer `Reset(Aborted)`.
    pub given_up: Vec<GivenUp<H>>,
}

/// An open this side stopped waiting for.
#[derive(Debug, PartialEq, Eq)]
pub struct GivenUp<H> {
    pub stream: StreamId,
    pub handle: Option<H>,
    /// No answer within the open timeout (otherwise: the opener had already gone).
    pub timed_out: bool,
}

/// The protocol state of one live session. `H` is the driver's per-stream handle, kept in the
/// stream table beside each stream's state, so there is one map of streams, not two.
#[derive(Debug)]
pub struct SessionState<H> {
    table: StreamTable<H>,
    timing: Timing,
    last_heard: Instant,
    next_ping: Instant,
    pings: u64,
    /// Deadlines of this side's opens, in the order they were made (so in deadline order).
    /// Entries whose stream was answered meanwhile are skipped when they come due.
    open_deadlines: VecDeque<(Instant, StreamId)>,
}

impl<H> SessionState<H> {
    /// A session that starts at `now` (the peer counts as heard at that moment).
    pub fn new(
        role: Role,
        windows: Windows,
        budget: CreditBudget,
        max_streams: usize,
        timing: Timing,
        now: Instant,
    ) -> Self {
        Self {
            table: StreamTable::new(role, windows, budget, max_streams),
            timing,
            last_heard: now,
            next_ping: now + timing.ping_interval,
            pings: 0,
            open_deadlines: VecDeque::new(),
        }
    }

    /// The streams and their states.
    pub fn table(&self) -> &StreamTable<H> {
        &self.table
    }

    /// The streams, for the local events the table handles (accepted, consumed, finished, reset).
    pub fn table_mut(&mut self) -> &mut StreamTable<H> {
        &mut self.table
    }

    /// Opens a stream towards the peer at `now` (see [`StreamTable::open`]); it is given up if
    /// unanswered by `now + open_timeout`.
    pub fn open(
        &mut self,
        target: TargetAddr,
        relay: Option<Relay>,
        trace: Option<TraceParent>,
        make: impl FnOnce(StreamId) -> H,
        now: Instant,
    ) -> Result<(StreamId, Frame), OpenError> {
        let (stream, frame) = self.table.open(target, relay, trace, make)?;
        self.open_deadlines.push_back((now + self.timing.open_timeout, stream));
        Ok((stream, frame))
    }

    /// Something arrived from the peer at `now` that is not a tunnel frame (a WebSocket ping):
    /// it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// A frame from the peer, received at `now`.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<Action<H>, SessionEnd> {
        self.heard(now);
        match frame {
            Frame::Ping { nonce } => Ok(Action::Reply(Frame::Pong { nonce })),
            Frame::Pong { .. } => Ok(Action::None),
            Frame::Move { reason } => Ok(Action::MoveRequested { reason }),
            Frame::Challenge { .. }
            | Frame::Hello(_)
            | Frame::Welcome { .. }
            | Frame::Rejected { .. } => {
                Err(SessionEnd::Violation("handshake frame after the handshake".into()))
            }
            stream_frame => {
                self.table.on_frame(stream_frame).map_err(|v| SessionEnd::Violation(v.to_string()))
            }
        }
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_ping.min(self.last_heard + self.timing.idle_timeout);
        if let Some((deadline, _)) = self.open_deadlines.front() {
            at = at.min(*deadline);
        }
        at
    }

    /// Whatever is due at `now`: the end of a silent session, a ping, opens to give up.
    /// `abandoned` says whether an opener stopped waiting; such opens are given up at the next
    /// ping rather than at their deadline, so a scanner that left frees its slot within a ping.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        abandoned: impl Fn(&H) -> bool,
    ) -> Result<Due<H>, SessionEnd> {
        if now >= self.last_heard + self.timing.idle_timeout {
            return Err(SessionEnd::IdleTimeout);
        }
        let mut due = Due { ping: None, given_up: Vec::new() };
        while let Some(&(deadline, stream)) = self.open_deadlines.front() {
            if deadline > now {
                break;
            }
            self.open_deadlines.pop_front();
            if self.table.is_opening(stream) {
                let handle = self.table.remove(stream);
                due.given_up.push(GivenUp { stream, handle, timed_out: true });
            }
        }
        if now >= self.next_ping {
            self.pings += 1;
            due.ping = Some(Frame::Ping { nonce: self.pings });
            self.next_ping = now + self.timing.ping_interval;
            for stream in self.table.opening() {
                if self.table.handle(stream).is_some_and(&abandoned) {
                    let handle = self.table.remove(stream);
                    due.given_up.push(GivenUp { stream, handle, timed_out: false });
                }
            }
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{OpenFailure, ResetReason};
    use std::net::Ipv4Addr;

    const S: Duration = Duration::from_secs(1);

    fn target() -> TargetAddr {
        TargetAddr::Ipv4(Ipv4Addr::LOCALHOST, 80)
    }

    fn session(now: Instant) -> SessionState<&'static str> {
        let timing = Timing { ping_interval: 2 * S, idle_timeout: 7 * S, open_timeout: 20 * S };
        let windows = Windows { alone: 1000, shared: 62 };
        SessionState::new(Role::Gateway, windows, CreditBudget::new(0), 8, timing, now)
    }

    #[test]
    fn a_silent_peer_is_declared_dead_at_the_idle_timeout_and_not_before() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // Pings go out every 2 s while the peer says nothing.
        for at in [2, 4, 6] {
            assert_eq!(s.poll_timeout(), t0 + at * S);
            let due = s.handle_timeout(t0 + at * S, |_| false).unwrap();
            assert!(matches!(due.ping, Some(Frame::Ping { .. })), "a ping at {at} s");
        }
        assert_eq!(s.poll_timeout(), t0 + 7 * S, "woken at the idle deadline");
        assert!(s.handle_timeout(t0 + 7 * S - Duration::from_millis(1), |_| false).is_ok());
        assert_eq!(s.handle_timeout(t0 + 7 * S, |_| false), Err(SessionEnd::IdleTimeout));
    }

    #[test]
    fn anything_heard_from_the_peer_keeps_the_session_alive() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.handle_frame(Frame::Pong { nonce: 1 }, t0 + 5 * S), Ok(Action::None));
        assert!(s.handle_timeout(t0 + 11 * S, |_| false).is_ok(), "heard at 5 s: alive at 11 s");
        s.heard(t0 + 11 * S);
        assert!(s.handle_timeout(t0 + 17 * S, |_| false).is_ok());
        assert_eq!(s.handle_timeout(t0 + 18 * S, |_| false), Err(SessionEnd::IdleTimeout));
    }

    #[test]
    fn a_ping_is_answered_with_its_nonce() {
        let mut s = session(Instant::now());
        let answer = s.handle_frame(Frame::Ping { nonce: 42 }, Instant::now()).unwrap();
        assert_eq!(answer, Action::Reply(Frame::Pong { nonce: 42 }));
    }

    #[test]
    fn handshake_frames_after_the_handshake_end_the_session() {
        let mut s = session(Instant::now());
        let late = Frame::Welcome { session: [0; 16], node: "n".into(), endpoint_name: "e".into() };
        assert!(matches!(s.handle_frame(late, Instant::now()), Err(SessionEnd::Violation(_))));
    }

    #[test]
    fn an_unanswered_open_is_given_up_at_its_deadline_with_its_handle() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (late, _) = s.open(target(), None, None, |_| "late", t0).unwrap();
        let (answered, _) = s.open(target(), None, None, |_| "answered", t0 + S).unwrap();
        s.handle_frame(Frame::OpenOk { stream: answered, window: 10 }, t0 + 2 * S).unwrap();
        // Keep the peer alive meanwhile.
        s.heard(t0 + 18 * S);
        let due = s.handle_timeout(t0 + 20 * S, |_| false).unwrap();
        assert_eq!(
            due.given_up,
            vec![GivenUp { stream: late, handle: Some("late"), timed_out: true }]
        );
        assert!(!s.table().contains(late));
        assert!(s.table().contains(answered), "an answered open stays");
        let due = s.handle_timeout(t0 + 21 * S, |_| false).unwrap();
        assert!(due.given_up.is_empty(), "the answered open's deadline passes without effect");
    }

    #[test]
    fn an_open_whose_opener_left_is_given_up_at_the_next_ping() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (left, _) = s.open(target(), None, None, |_| "gone", t0).unwrap();
        let (waiting, _) = s.open(target(), None, None, |_| "waiting", t0).unwrap();
        let due = s.handle_timeout(t0 + 2 * S, |h| *h == "gone").unwrap();
        assert_eq!(
            due.given_up,
            vec![GivenUp { stream: left, handle: Some("gone"), timed_out: false }]
        );
        assert!(s.table().is_opening(waiting));
    }

    #[test]
    fn a_refused_open_returns_its_handle_to_the_driver() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (stream, _) = s.open(target(), None, None, |_| "opener", t0).unwrap();
        let refused =
            Frame::OpenFailed { stream, reason: OpenFailure::NotAllowed, message: "no".into() };
        assert_eq!(
            s.handle_frame(refused, t0).unwrap(),
            Action::OpenFailed {
                stream,
                reason: OpenFailure::NotAllowed,
                message: "no".into(),
                handle: Some("opener")
            }
        );
        let reset = Frame::Reset { stream, reason: ResetReason::Aborted };
        assert_eq!(s.handle_frame(reset, t0).unwrap(), Action::None, "already gone");
    }
}

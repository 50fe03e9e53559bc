//! The stream table: which streams exist in a session, what state each is in, and what an incoming
//! frame means for them.
//!
//! The table is pure: the session driver feeds it frames from the peer and local events (a stream
//! was accepted, bytes were consumed, the local side finished) and carries out the [`Action`]s it
//! returns. Every way a peer can misbehave on a stream (data beyond credit, data after its `Fin`,
//! an `Open` for an id it may not use) is decided here, so it is tested here without sockets.

use crate::credit_budget::{CreditBudget, Reservation};
use crate::frame::{Frame, OpenFailure, Relay, ResetReason, StreamId, TargetAddr};
use crate::trace::TraceParent;
use crate::window::RecvWindow;
use bytes::Bytes;
use std::collections::HashMap;

/// Which side of the tunnel this table belongs to. It decides the parity of stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids (scanner connections towards targets).
    Gateway,
    /// Opens even stream ids (diagnostics towards the gateway).
    Endpoint,
}

impl Role {
    fn owns(self, id: StreamId) -> bool {
        match self {
            Role::Gateway => !id.0.is_multiple_of(2),
            Role::Endpoint => id.0.is_multiple_of(2) && id.0 != 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// We sent `Open` and wait for `OpenOk` / `OpenFailed`.
    Opening,
    /// The peer sent `Open`; we are connecting to the target.
    Accepting,
    /// Data may flow.
    Open,
}

#[derive(Debug)]
struct Entry<H> {
    phase: Phase,
    recv: RecvWindow,
    remote_fin: bool,
    local_fin: bool,
    /// The credit above the shared window this stream may hold, reserved from the node's budget
    /// before it is granted; trimmed to what its allowance needs at each batch, and returned
    /// when it ends.
    extra: Option<Reservation>,
    /// The session's numbers of this stream's last two batches of credit (older first; 0:
    /// none), which tell whether it is busy (see [`StreamTable::consumed`]).
    recent_batches: [u64; 2],
    /// The driver's half of the stream (its channels, its opener). `None` only between an
    /// [`Action::Accept`] and the driver's [`StreamTable::attach`].
    handle: Option<H>,
}

/// What the driver must do after the table processed a frame from the peer. A stream the frame
/// ended is already gone from the table: its handle travels in the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<H> {
    /// Nothing (e.g. a late frame for a stream that is already gone).
    None,
    /// The peer asks us to connect to `target` (for `relay`'s scanner, between gateway nodes),
    /// as part of its `trace`; `send_window` is our initial send credit. The driver
    /// [`attach`](StreamTable::attach)es its handle to the new stream.
    Accept {
        stream: StreamId,
        target: TargetAddr,
        send_window: u32,
        relay: Option<Box<Relay>>,
        trace: Option<TraceParent>,
    },
    /// Our `Open` succeeded; `send_window` is our initial send credit.
    Opened { stream: StreamId, send_window: u32 },
    /// Our `Open` failed.
    OpenFailed { stream: StreamId, reason: OpenFailure, message: String, handle: Option<H> },
    /// Bytes for the local application.
    Deliver { stream: StreamId, payload: Bytes },
    /// More send credit for the local application.
    Credit { stream: StreamId, increment: u32 },
    /// The peer will send nothing more on this stream. `ended` holds the handle when the local
    /// side had finished too, so the stream is gone.
    RemoteFin { stream: StreamId, ended: Option<H> },
    /// The peer tore the stream down.
    RemoteReset { stream: StreamId, reason: ResetReason, handle: Option<H> },
    /// Send `reply` to the peer and tear the local stream down (`local_reset` is the reason the
    /// local application is given).
    Refuse { reply: Frame, local_reset: Option<LocalReset<H>> },
    /// Send `reply` to the peer; nothing changes locally (a `Pong` for a `Ping`).
    Reply(Frame),
    /// The peer (a draining gateway node) asks this side to move to another node.
    MoveRequested { reason: String },
}

/// A stream the table tore down, with the reason its local application is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReset<H> {
    pub stream: StreamId,
    pub reason: ResetReason,
    pub handle: Option<H>,
}

/// The peer broke the protocol in a way that taints the whole session, which must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionViolation {
    #[error("peer opened stream {0}, an id it may not use")]
    ForeignStreamId(StreamId),
    #[error("peer opened stream {0}, an id it already used")]
    DuplicateStream(StreamId),
    #[error("session-level frame handed to the stream table")]
    NotAStreamFrame,
    #[error("peer sent data on stream {0}, which was never opened")]
    NeverOpened(StreamId),
}

/// Local requests the table refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("stream ids exhausted for this session; reconnect")]
    IdsExhausted,
    #[error("stream limit of {0} reached")]
    LimitReached(usize),
}

/// The credit this side grants a stream (see [`StreamTable::consumed`]).
///
/// Two figures, not one: every byte of credit a stream holds can sit in the shared link ahead of
/// another stream's request, so a stream beside others gets little, while a stream alone gets
/// enough to keep a fast link busy across the credit round trip, and busy streams side by side
/// share it (see [`StreamTable::consumed`]). Every stream starts with the shared window and grows
/// only at a batch of credit, as far as the extra can be reserved from the node's
/// [`CreditBudget`], so only streams that carry data hold any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Credit of a stream that is alone in its session (budget allowing), and what busy streams
    /// share: what a lone bulk transfer can have in flight across the credit round trip, and the
    /// most it can make this side buffer when its local reader is slow.
    pub alone: u32,
    /// Credit of a stream that shares its session with others (at most `alone`), and of every
    /// stream at its open: every byte of it can sit in the link ahead of another stream's small
    /// request.
    pub shared: u32,
}

impl Windows {
    /// `shared` kept within `1..=alone`, so that a configuration cannot stall a stream.
    fn normalised(self) -> Self {
        let alone = self.alone.max(1);
        Self { alone, shared: self.shared.clamp(1, alone) }
    }
}

/// Most streams of a session that share the whole window between them when all are busy (see
/// [`StreamTable::consumed`]): beyond it a share is little more than the shared window, and
/// telling whether every stream is busy would scan a large table at each batch.
const MAX_BUSY_STREAMS: usize = 16;

/// A stream is busy while its last two batches came within this many batches of its session per
/// stream (see [`StreamTable::consumed`]).
const BUSY_SPAN_PER_STREAM: u64 = 4;

/// All streams of one session.
#[derive(Debug)]
pub struct StreamTable<H> {
    role: Role,
    next_id: u32,
    /// Highest id the peer has opened: ids only grow, so a peer cannot recycle one.
    peer_high: u32,
    windows: Windows,
    /// Where a stream reserves its credit above the shared window.
    budget: CreditBudget,
    /// Batches of credit the session's streams have had (see [`StreamTable::consumed`]).
    batches: u64,
    max_streams: usize,
    streams: HashMap<StreamId, Entry<H>>,
}

impl<H> StreamTable<H> {
    /// `windows` is the credit this side grants per stream, any part above the shared window
    /// reserved from `budget` (see [`consumed`](Self::consumed)); `max_streams` caps how many streams may exist at
    /// once (either direction), so memory stays bounded under a flood.
    pub fn new(role: Role, windows: Windows, budget: CreditBudget, max_streams: usize) -> Self {
        let next_id = match role {
            Role::Gateway => 1,
            Role::Endpoint => 2,
        };
        let windows = windows.normalised();
        let streams = HashMap::new();
        Self { role, next_id, peer_high: 0, windows, budget, batches: 0, max_streams, streams }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn contains(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Allocates a stream with the handle `make` builds for it, and returns the `Open` frame to
    /// send (a `RelayOpen` with `relay`), carrying the opener's `trace`.
    pub fn open(
        &mut self,
        target: TargetAddr,
        relay: Option<Relay>,
        trace: Option<TraceParent>,
        make: impl FnOnce(StreamId) -> H,
    ) -> Result<(StreamId, Frame), OpenError> {
        if self.streams.len() >= self.max_streams {
            return Err(OpenError::LimitReached(self.max_streams));
        }
        let id = StreamId(self.next_id);
        self.next_id = self.next_id.checked_add(2).ok_or(OpenError::IdsExhausted)?;
        let handle = Some(make(id));
        let window = self.windows.shared;
        self.streams.insert(id, Entry::new(Phase::Opening, self.windows, handle));
        let frame = match relay {
            None => Frame::Open { stream: id, target, window, trace },
            Some(relay) => {
                Frame::RelayOpen { stream: id, target, window, relay: Box::new(relay), trace }
            }
        };
        Ok((id, frame))
    }

    /// Gives a stream the peer opened its handle (after [`Action::Accept`]).
    pub fn attach(&mut self, stream: StreamId, handle: H) {
        if let Some(e) = self.streams.get_mut(&stream) {
            e.handle = Some(handle);
        }
    }

    /// The driver's handle of a live stream.
    pub fn handle(&self, stream: StreamId) -> Option<&H> {
        self.streams.get(&stream).and_then(|e| e.handle.as_ref())
    }

    /// As [`handle`](Self::handle), mutably.
    pub fn handle_mut(&mut self, stream: StreamId) -> Option<&mut H> {
        self.streams.get_mut(&stream).and_then(|e| e.handle.as_mut())
    }

    /// Whether this side opened `stream` and the peer has not answered yet.
    pub fn is_opening(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_some_and(|e| e.phase == Phase::Opening)
    }

    /// We connected the target of a stream the peer opened: returns the `OpenOk` to send.
    pub fn accepted(&mut self, stream: StreamId) -> Option<Frame> {
        let e = self.streams.get_mut(&stream)?;
        (e.phase == Phase::Accepting).then(|| {
            e.phase = Phase::Open;
            // Nothing was received before the OpenOk: the peer's credit is the whole allowance.
            let window = u32::try_from(e.recv.allowance()).unwrap_or(u32::MAX);
            Frame::OpenOk { stream, window }
        })
    }

    /// The local application consumed `len` bytes: returns a `Window` frame when credit is due.
    ///
    /// Every byte of credit a stream holds can sit in the shared link ahead of another stream's
    /// request (measured in loadtest: small-request p99 beside a bulk upload 4-6x its value alone
    /// with 256 KiB shared, about 2x with 64 KiB). So at each batch a stream is steered to the
    /// whole window when it is alone, to an equal share of it when every stream of the session is
    /// busy (bulk transfers side by side: none of them is a small request that would wait behind
    /// the others' credit), and to the shared window otherwise. A stream is busy while its last
    /// two batches came within `BUSY_SPAN_PER_STREAM` batches of the session per stream: bulk
    /// streams take turns, while a stream of small requests batches once in many of a bulk
    /// stream's batches, and a new stream has none (a stream whose peer finished sending has
    /// nothing left to wait behind the others' credit, so it does not count). Credit above the
    /// shared window is granted only as far as the node's budget lets the stream reserve it.
    pub fn consumed(&mut self, stream: StreamId, len: usize) -> Option<Frame> {
        let e = self.streams.get_mut(&stream)?;
        if e.remote_fin {
            // The peer sends nothing more: granting credit would be noise.
            return None;
        }
        if !e.recv.on_consumed(len) {
            return None;
        }
        self.batches += 1;
        e.recent_batches = [e.recent_batches[1], self.batches];
        let desired = self.window_at_batch();
        let (shared, budget) = (self.windows.shared, &self.budget);
        let e = self.streams.get_mut(&stream)?;
        let target = e.reserve_up_to(desired, shared, budget);
        let grant = e.recv.grant(target);
        e.release_beyond_allowance(shared);
        grant.map(|increment| Frame::Window { stream, increment })
    }

    /// The window a stream that batches now is steered to (see [`consumed`](Self::consumed)).
    fn window_at_batch(&self) -> u32 {
        let n = self.streams.len();
        let since = self.batches.saturating_sub(BUSY_SPAN_PER_STREAM * n as u64);
        let all_busy = n == 1
            || (n <= MAX_BUSY_STREAMS
                && self.streams.values().all(|e| e.remote_fin || e.recent_batches[0] > since));
        match all_busy {
            true => (self.windows.alone / n as u32).max(self.windows.shared),
            false => self.windows.shared,
        }
    }

    /// The local side finished sending (its `Fin` went out). The stream is forgotten once both
    /// sides have finished: then its handle is returned.
    pub fn local_finished(&mut self, stream: StreamId) -> Option<H> {
        let e = self.streams.get_mut(&stream)?;
        e.local_fin = true;
        if e.remote_fin {
            return self.streams.remove(&stream).and_then(|e| e.handle);
        }
        None
    }

    /// The local side tore the stream down (and sent, or will send, a `Reset`), or gave up on an
    /// `Open`. Forgets it at once and returns its handle.
    pub fn remove(&mut self, stream: StreamId) -> Option<H> {
        self.streams.remove(&stream).and_then(|e| e.handle)
    }

    /// Streams this side opened that the peer has not answered yet.
    pub fn opening(&self) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, e)| e.phase == Phase::Opening)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Every live stream with its handle, for tearing the session down.
    pub fn drain(&mut self) -> Vec<(StreamId, Option<H>)> {
        self.streams.drain().map(|(id, e)| (id, e.handle)).collect()
    }

    /// Bytes held in receive buffers across all streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.streams.values().map(|e| e.recv.buffered()).sum()
    }

    /// Processes one stream frame from the peer.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Action<H>, SessionViolation> {
        let Some(stream) = frame.stream() else {
            return Err(SessionViolation::NotAStreamFrame);
        };
        match frame {
            Frame::Open { target, window, trace, .. } => {
                self.on_open(stream, target, window, None, trace)
            }
            Frame::RelayOpen { target, window, relay, trace, .. } => {
                self.on_open(stream, target, window, Some(relay), trace)
            }
            Frame::OpenOk { window, .. } => match self.streams.get_mut(&stream) {
                Some(e) if e.phase == Phase::Opening => {
                    e.phase = Phase::Open;
                    Ok(Action::Opened { stream, send_window: window })
                }
                Some(_) => Ok(self.violation(stream)),
                // We gave up on this open already: tell the peer to drop its side.
                None => Ok(Action::Refuse {
                    reply: Frame::Reset { stream, reason: ResetReason::Aborted },
                    local_reset: None,
                }),
            },
            Frame::OpenFailed { reason, message, .. } => match self.streams.get(&stream) {
                Some(e) if e.phase == Phase::Opening => {
                    let handle = self.remove(stream);
                    Ok(Action::OpenFailed { stream, reason, message, handle })
                }
                Some(_) => Ok(self.violation(stream)),
                None => Ok(Action::None),
            },
            // An empty Data frame uses no credit but costs the receiver a queue entry: refused, so
            // credit bounds what a peer can make us hold.
            Frame::Data { .. } if self.never_opened(stream) => {
                Err(SessionViolation::NeverOpened(stream))
            }
            Frame::Data { payload, .. } if payload.is_empty() => {
                Ok(match self.streams.contains_key(&stream) {
                    true => self.violation(stream),
                    false => Action::None,
                })
            }
            Frame::Data { payload, .. } => match self.streams.get_mut(&stream) {
                Some(e) if e.phase == Phase::Open && !e.remote_fin => {
                    if e.recv.on_data(payload.len()).is_err() {
                        return Ok(self.violation(stream));
                    }
                    Ok(Action::Deliver { stream, payload })
                }
                Some(_) => Ok(self.violation(stream)),
                // It ended: data that crossed its end in flight.
                None => Ok(Action::None),
            },
            Frame::Window { increment, .. } => match self.streams.get(&stream) {
                Some(e) if e.phase == Phase::Open => Ok(Action::Credit { stream, increment }),
                Some(_) => Ok(self.violation(stream)),
                None => Ok(Action::None),
            },
            Frame::Fin { .. } => match self.streams.get_mut(&stream) {
                Some(e) if e.phase == Phase::Open && !e.remote_fin => {
                    e.remote_fin = true;
                    let ended = if e.local_fin { self.remove(stream) } else { None };
                    Ok(Action::RemoteFin { stream, ended })
                }
                Some(_) => Ok(self.violation(stream)),
                None => Ok(Action::None),
            },
            Frame::Reset { reason, .. } => Ok(match self.streams.remove(&stream) {
                Some(e) => Action::RemoteReset { stream, reason, handle: e.handle },
                None => Action::None,
            }),
            _ => Err(SessionViolation::NotAStreamFrame),
        }
    }

    /// The peer opens `stream`: a new stream to accept, or a refusal at the stream limit.
    fn on_open(
        &mut self,
        stream: StreamId,
        target: TargetAddr,
        window: u32,
        relay: Option<Box<Relay>>,
        trace: Option<TraceParent>,
    ) -> Result<Action<H>, SessionViolation> {
        if self.role.owns(stream) {
            return Err(SessionViolation::ForeignStreamId(stream));
        }
        if stream.0 <= self.peer_high {
            return Err(SessionViolation::DuplicateStream(stream));
        }
        self.peer_high = stream.0;
        if self.streams.len() >= self.max_streams {
            return Ok(Action::Refuse {
                reply: Frame::OpenFailed {
                    stream,
                    reason: OpenFailure::Busy,
                    message: format!("stream limit of {} reached", self.max_streams),
                },
                local_reset: None,
            });
        }
        self.streams.insert(stream, Entry::new(Phase::Accepting, self.windows, None));
        Ok(Action::Accept { stream, target, send_window: window, relay, trace })
    }

    /// Whether `stream` was never opened on this session: one of our ids not handed out yet, or
    /// one of the peer's above the highest it opened. Data for a stream that ended is passed over
    /// (it crossed the end in flight); data for one that never was would cost the peer no credit
    /// while each payload held our read buffer, so it ends the session.
    fn never_opened(&self, stream: StreamId) -> bool {
        if self.role.owns(stream) {
            stream.0 >= self.next_id
        } else {
            stream.0 > self.peer_high
        }
    }

    fn violation(&mut self, stream: StreamId) -> Action<H> {
        let reason = ResetReason::ProtocolViolation;
        let handle = self.remove(stream);
        Action::Refuse {
            reply: Frame::Reset { stream, reason },
            local_reset: Some(LocalReset { stream, reason, handle }),
        }
    }

    /// Checks internal invariants; for property tests.
    pub fn is_consistent(&self) -> bool {
        self.streams.len() <= self.max_streams
            && self
                .streams
                .values()
                .all(|e| e.recv.is_consistent() && !(e.local_fin && e.remote_fin))
            && self.streams.values().all(|e| e.phase == Phase::Open || !e.remote_fin)
            && self.streams.values().all(|e| e.phase != Phase::Opening || e.handle.is_some())
            && self
                .streams
                .values()
                .all(|e| e.recv.allowance() <= u64::from(self.windows.shared) + e.extra_bytes())
    }
}

impl<H> Entry<H> {
    /// A stream that may grow to `windows.alone` and starts with `windows.shared`.
    fn new(phase: Phase, windows: Windows, handle: Option<H>) -> Self {
        let recv = RecvWindow::starting_with(windows.alone, windows.shared);
        Self {
            phase,
            recv,
            remote_fin: false,
            local_fin: false,
            extra: None,
            recent_batches: [0; 2],
            handle,
        }
    }

    /// The window this stream can be steered to towards `desired`: above the shared window only
    /// as far as its reservation from `budget` reaches, grown to `desired` if the budget allows.
    fn reserve_up_to(&mut self, desired: u32, shared: u32, budget: &CreditBudget) -> u32 {
        let want = u64::from(desired.saturating_sub(shared));
        let held = self.extra_bytes();
        if want > held {
            match &mut self.extra {
                Some(extra) => {
                    extra.try_grow(want - held);
                }
                None => self.extra = budget.try_reserve(want),
            }
        }
        shared + u32::try_from(want.min(self.extra_bytes())).unwrap_or(u32::MAX)
    }

    /// Credit above the shared window this stream has reserved.
    fn extra_bytes(&self) -> u64 {
        self.extra.as_ref().map_or(0, Reservation::bytes)
    }

    /// Gives back the part of the reservation the allowance no longer needs (after a batch that
    /// shrank it).
    fn release_beyond_allowance(&mut self, shared: u32) {
        let needed = self.recv.allowance().saturating_sub(u64::from(shared));
        if needed == 0 {
            self.extra = None;
        } else if let Some(extra) = &mut self.extra {
            extra.shrink_to(needed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// One window alone and shared: for tests of the streams' lifecycle, not of credit growth.
    fn windows(window: u32) -> Windows {
        Windows { alone: window, shared: window }
    }

    /// A budget no test spends.
    fn ample() -> CreditBudget {
        CreditBudget::new(u64::MAX)
    }

    /// Opens a stream from `gw` that `ep` accepts; returns it with `ep`'s `OpenOk`.
    fn open(gw: &mut StreamTable<()>, ep: &mut StreamTable<()>) -> (StreamId, Frame) {
        let (id, open) = gw.open(target(), None, None, |_| ()).unwrap();
        ep.on_frame(open).unwrap();
        (id, ep.accepted(id).unwrap())
    }

    fn data(stream: StreamId, n: usize) -> Frame {
        Frame::Data { stream, payload: Bytes::from(vec![0; n]) }
    }

    /// `n` bytes from the peer on `stream`, consumed at once: the credit granted back, if any.
    fn carry(ep: &mut StreamTable<()>, stream: StreamId, n: usize) -> Option<u32> {
        ep.on_frame(data(stream, n)).unwrap();
        match ep.consumed(stream, n)? {
            Frame::Window { stream: granted, increment } if granted == stream => Some(increment),
            other => panic!("not a grant for {stream}: {other:?}"),
        }
    }

    fn target() -> TargetAddr {
        TargetAddr::Ipv4(Ipv4Addr::LOCALHOST, 80)
    }

    /// Data on a stream that ended is passed over (it crossed the end in flight); data on one that
    /// was never opened, by either side, ends the session: it would cost the peer no credit.
    #[test]
    fn data_on_a_stream_never_opened_ends_the_session() {
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows(100), ample(), 10);
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(100), ample(), 10);
        let (id, _) = open(&mut gw, &mut ep);
        ep.on_frame(Frame::Reset { stream: id, reason: ResetReason::Aborted }).unwrap();
        assert_eq!(ep.on_frame(data(id, 8)).unwrap(), Action::None, "ended: passed over");
        for never in [StreamId(3), StreamId(2), StreamId(1001)] {
            assert_eq!(
                ep.on_frame(data(never, 8)),
                Err(SessionViolation::NeverOpened(never)),
                "{never}"
            );
        }
        assert_eq!(
            gw.on_frame(data(StreamId(3), 8)),
            Err(SessionViolation::NeverOpened(StreamId(3)))
        );
    }

    #[test]
    fn open_accept_data_fin_lifecycle() {
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows(100), ample(), 10);
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(100), ample(), 10);
        let (id, open) = gw.open(target(), None, None, |_| ()).unwrap();
        assert_eq!(id, StreamId(1));
        assert_eq!(
            ep.on_frame(open).unwrap(),
            Action::Accept {
                stream: id,
                target: target(),
                send_window: 100,
                relay: None,
                trace: None
            }
        );
        ep.attach(id, ());
        let ok = ep.accepted(id).unwrap();
        assert_eq!(gw.on_frame(ok).unwrap(), Action::Opened { stream: id, send_window: 100 });

        let data = Frame::Data { stream: id, payload: Bytes::from_static(&[0; 60]) };
        assert!(matches!(ep.on_frame(data).unwrap(), Action::Deliver { .. }));
        assert_eq!(ep.consumed(id, 60), Some(Frame::Window { stream: id, increment: 60 }));

        assert_eq!(
            ep.on_frame(Frame::Fin { stream: id }).unwrap(),
            Action::RemoteFin { stream: id, ended: None }
        );
        assert_eq!(ep.len(), 1, "half-closed stream stays until the local side finishes");
        assert_eq!(ep.local_finished(id), Some(()), "both sides finished: the stream is gone");
        assert!(ep.is_empty());
    }

    #[test]
    fn a_stream_alone_grows_to_the_whole_window_and_shrinks_back_beside_others() {
        let windows = Windows { alone: 1600, shared: 100 };
        let budget = CreditBudget::new(1500);
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows, budget.clone(), 10);
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows, budget.clone(), 10);
        let (bulk, ok) = open(&mut gw, &mut ep);
        assert_eq!(ok, Frame::OpenOk { stream: bulk, window: 100 }, "every stream starts shared");
        assert_eq!(carry(&mut ep, bulk, 100), Some(1600), "alone: the whole window at once");
        assert_eq!(budget.reserved(), 1500, "the extra is reserved before it is granted");
        assert_eq!(carry(&mut ep, bulk, 1600), Some(1600), "alone: the whole window again");
        let (small, ok) = open(&mut gw, &mut ep);
        assert_eq!(ok, Frame::OpenOk { stream: small, window: 100 }, "opened beside: shared");
        assert_eq!(carry(&mut ep, bulk, 1600), Some(100), "beside another: the shared window");
        assert_eq!(budget.reserved(), 0, "back to the shared window: the extra is returned");
    }

    #[test]
    fn busy_streams_share_the_whole_window_until_a_quiet_one_opens_beside_them() {
        let windows = Windows { alone: 1600, shared: 100 };
        let budget = CreditBudget::new(u64::MAX);
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows, budget.clone(), 10);
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows, budget.clone(), 10);
        let (a, _) = open(&mut gw, &mut ep);
        let (b, _) = open(&mut gw, &mut ep);
        let batch = |ep: &mut StreamTable<()>, stream, n| carry(ep, stream, n).unwrap();
        // Each stream's first batch: neither has batched twice yet, so neither is busy.
        assert_eq!((batch(&mut ep, a, 100), batch(&mut ep, b, 100)), (100, 100));
        // Their second batches: a's is not yet busy beside b, b's finds both busy.
        assert_eq!(batch(&mut ep, a, 100), 100);
        assert_eq!(batch(&mut ep, b, 100), 800, "both busy: half the whole window each");
        assert_eq!(batch(&mut ep, a, 100), 800);
        assert_eq!(budget.reserved(), 2 * 700, "the part above the shared window is reserved");
        // A third stream opens, quiet: the busy ones are held to the shared window again.
        let (_c, _) = open(&mut gw, &mut ep);
        assert_eq!(batch(&mut ep, a, 800), 100, "beside a quiet stream: shared");
        assert_eq!(budget.reserved(), 700, "a's share above the shared window is returned");
        assert!(ep.is_consistent());
    }

    #[test]
    fn a_stream_of_small_requests_is_never_busy_beside_a_bulk_one() {
        let windows = Windows { alone: 1600, shared: 100 };
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows, ample(), 10);
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows, ample(), 10);
        let (bulk, _) = open(&mut gw, &mut ep);
        let (small, _) = open(&mut gw, &mut ep);
        for i in 1..=40 {
            assert_eq!(carry(&mut ep, bulk, 100), Some(100), "batch {i}");
            if i % 10 == 0 {
                // Its requests add up to a batch once in ten of the bulk stream's.
                assert_eq!(carry(&mut ep, small, 50), Some(50));
            }
        }
    }

    #[test]
    fn a_lone_stream_keeps_the_shared_window_while_the_budget_is_spent() {
        let windows = Windows { alone: 1600, shared: 100 };
        // Room for one lone stream's extra, shared by two sessions.
        let budget = CreditBudget::new(1500);
        let table = |role| StreamTable::<()>::new(role, windows, budget.clone(), 10);
        let (mut gw1, mut ep1) = (table(Role::Gateway), table(Role::Endpoint));
        let (mut gw2, mut ep2) = (table(Role::Gateway), table(Role::Endpoint));
        let (first, _) = open(&mut gw1, &mut ep1);
        let (second, _) = open(&mut gw2, &mut ep2);
        assert_eq!(carry(&mut ep1, first, 100), Some(1600));
        let kept = carry(&mut ep2, second, 100);
        assert_eq!(kept, Some(100), "budget spent: the shared window, not a refusal");
        ep1.remove(first);
        assert_eq!(budget.reserved(), 0, "an ended stream returns its extra");
        let grown = carry(&mut ep2, second, 100);
        assert_eq!(grown, Some(1600), "the budget is back: the whole window");
        assert!(ep2.is_consistent() && budget.reserved() == 1500);
    }

    #[test]
    fn a_shared_window_is_held_between_one_byte_and_the_whole() {
        let zero_shared = Windows { alone: 10, shared: 0 };
        let mut gw = StreamTable::<()>::new(Role::Gateway, zero_shared, ample(), 10);
        let above = Windows { alone: 10, shared: 99 };
        let mut ep = StreamTable::<()>::new(Role::Endpoint, above, ample(), 10);
        let (first, open) = gw.open(target(), None, None, |_| ()).unwrap();
        assert!(
            matches!(open, Frame::Open { window: 1, .. }),
            "zero shared: one byte, not a stall"
        );
        ep.on_frame(open).unwrap();
        assert_eq!(
            ep.accepted(first),
            Some(Frame::OpenOk { stream: first, window: 10 }),
            "shared above the whole window: the whole window"
        );
    }

    #[test]
    fn data_beyond_credit_resets_only_that_stream() {
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(10), ample(), 10);
        for id in [1, 3] {
            ep.on_frame(Frame::Open {
                stream: StreamId(id),
                target: target(),
                window: 10,
                trace: None,
            })
            .unwrap();
            ep.accepted(StreamId(id)).unwrap();
        }
        let flood = Frame::Data { stream: StreamId(1), payload: Bytes::from_static(&[0; 11]) };
        assert_eq!(
            ep.on_frame(flood).unwrap(),
            Action::Refuse {
                reply: Frame::Reset { stream: StreamId(1), reason: ResetReason::ProtocolViolation },
                local_reset: Some(LocalReset {
                    stream: StreamId(1),
                    reason: ResetReason::ProtocolViolation,
                    handle: None
                }),
            }
        );
        assert_eq!(ep.len(), 1);
    }

    #[test]
    fn empty_data_is_a_violation() {
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(10), ample(), 10);
        ep.on_frame(Frame::Open { stream: StreamId(1), target: target(), window: 10, trace: None })
            .unwrap();
        ep.accepted(StreamId(1)).unwrap();
        assert!(matches!(
            ep.on_frame(Frame::Data { stream: StreamId(1), payload: Bytes::new() }).unwrap(),
            Action::Refuse { .. }
        ));
        assert!(ep.is_empty());
    }

    /// Opens the peer has not answered yet, for abandoning the ones nobody waits for.
    #[test]
    fn opening_streams_are_listed() {
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows(10), ample(), 10);
        let (a, _) = gw.open(target(), None, None, |_| ()).unwrap();
        let (b, _) = gw.open(target(), None, None, |_| ()).unwrap();
        gw.on_frame(Frame::OpenOk { stream: a, window: 1 }).unwrap();
        assert_eq!(gw.opening(), vec![b]);
    }

    #[test]
    fn data_after_fin_is_a_violation() {
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(10), ample(), 10);
        ep.on_frame(Frame::Open { stream: StreamId(1), target: target(), window: 10, trace: None })
            .unwrap();
        ep.accepted(StreamId(1)).unwrap();
        ep.on_frame(Frame::Fin { stream: StreamId(1) }).unwrap();
        let late = Frame::Data { stream: StreamId(1), payload: Bytes::from_static(b"x") };
        assert!(matches!(ep.on_frame(late).unwrap(), Action::Refuse { .. }));
    }

    #[test]
    fn foreign_and_duplicate_ids_taint_the_session() {
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(10), ample(), 10);
        assert_eq!(
            ep.on_frame(Frame::Open {
                stream: StreamId(2),
                target: target(),
                window: 1,
                trace: None
            }),
            Err(SessionViolation::ForeignStreamId(StreamId(2)))
        );
        ep.on_frame(Frame::Open { stream: StreamId(3), target: target(), window: 1, trace: None })
            .unwrap();
        assert_eq!(
            ep.on_frame(Frame::Open {
                stream: StreamId(3),
                target: target(),
                window: 1,
                trace: None
            }),
            Err(SessionViolation::DuplicateStream(StreamId(3)))
        );
        // Nor may an id be reused after its stream is gone, or a lower one opened later.
        ep.on_frame(Frame::Reset { stream: StreamId(3), reason: ResetReason::Aborted }).unwrap();
        assert_eq!(
            ep.on_frame(Frame::Open {
                stream: StreamId(3),
                target: target(),
                window: 1,
                trace: None
            }),
            Err(SessionViolation::DuplicateStream(StreamId(3)))
        );
        assert_eq!(
            ep.on_frame(Frame::Open {
                stream: StreamId(1),
                target: target(),
                window: 1,
                trace: None
            }),
            Err(SessionViolation::DuplicateStream(StreamId(1)))
        );
    }

    #[test]
    fn opens_beyond_the_limit_are_refused_busy() {
        let mut ep = StreamTable::<()>::new(Role::Endpoint, windows(10), ample(), 1);
        ep.on_frame(Frame::Open { stream: StreamId(1), target: target(), window: 1, trace: None })
            .unwrap();
        let refused = ep
            .on_frame(Frame::Open { stream: StreamId(3), target: target(), window: 1, trace: None })
            .unwrap();
        assert!(matches!(
            refused,
            Action::Refuse { reply: Frame::OpenFailed { reason: OpenFailure::Busy, .. }, .. }
        ));
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows(10), ample(), 1);
        gw.open(target(), None, None, |_| ()).unwrap();
        assert_eq!(gw.open(target(), None, None, |_| ()), Err(OpenError::LimitReached(1)));
    }

    #[test]
    fn late_frames_for_forgotten_streams_are_ignored() {
        let mut gw = StreamTable::<()>::new(Role::Gateway, windows(10), ample(), 10);
        for _ in 0..4 {
            gw.open(target(), None, None, |_| ()).unwrap();
        }
        // Stream 7 ends: what the peer sent before it heard so arrives after.
        gw.on_frame(Frame::Reset { stream: StreamId(7), reason: ResetReason::Aborted }).unwrap();
        let data = Frame::Data { stream: StreamId(7), payload: Bytes::from_static(b"late") };
        assert_eq!(gw.on_frame(data).unwrap(), Action::None);
        assert_eq!(
            gw.on_frame(Frame::Reset { stream: StreamId(7), reason: ResetReason::Aborted })
                .unwrap(),
            Action::None
        );
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let id = (1u32..8).prop_map(StreamId);
        prop_oneof![
            (id.clone(), 0u32..200).prop_map(|(stream, window)| Frame::Open {
                stream,
                target: target(),
                window,
                trace: None
            }),
            (id.clone(), 0u32..200).prop_map(|(stream, window)| Frame::OpenOk { stream, window }),
            id.clone().prop_map(|stream| Frame::OpenFailed {
                stream,
                reason: OpenFailure::General,
                message: String::new()
            }),
            (id.clone(), 0usize..150)
                .prop_map(|(stream, n)| Frame::Data { stream, payload: Bytes::from(vec![0; n]) }),
            (id.clone(), 0u32..1000)
                .prop_map(|(stream, increment)| Frame::Window { stream, increment }),
            id.clone().prop_map(|stream| Frame::Fin { stream }),
            id.prop_map(|stream| Frame::Reset { stream, reason: ResetReason::Aborted }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Peer(Frame),
        Open,
        Accept(u32),
        Consume(u32, usize),
        LocalFin(u32),
        Remove(u32),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => arb_frame().prop_map(Step::Peer),
            1 => Just(Step::Open),
            1 => (1u32..8).prop_map(Step::Accept),
            1 => (1u32..8, 0usize..150).prop_map(|(s, n)| Step::Consume(s, n)),
            1 => (1u32..8).prop_map(Step::LocalFin),
            1 => (1u32..8).prop_map(Step::Remove),
        ]
    }

    proptest! {
        /// Whatever the peer sends and whatever the local side does, in any order, the table never
        /// panics, never exceeds its limits, keeps every window's books balanced and holds no
        /// credit above the shared window that it has not reserved.
        #[test]
        fn any_sequence_leaves_the_table_consistent(steps in proptest::collection::vec(arb_step(), 0..300), endpoint in any::<bool>(), budget in 0u64..200) {
            let role = if endpoint { Role::Endpoint } else { Role::Gateway };
            let budget = CreditBudget::new(budget);
            let mut t = StreamTable::<()>::new(role, Windows { alone: 100, shared: 6 }, budget.clone(), 4);
            for step in steps {
                match step {
                    Step::Peer(f) => { let _ = t.on_frame(f); }
                    Step::Open => { let _ = t.open(target(), None, None, |_| ()); }
                    Step::Accept(s) => { let _ = t.accepted(StreamId(s)); }
                    Step::Consume(s, n) => { let _ = t.consumed(StreamId(s), n); }
                    Step::LocalFin(s) => { t.local_finished(StreamId(s)); }
                    Step::Remove(s) => { t.remove(StreamId(s)); }
                }
                prop_assert!(t.is_consistent());
                // What the peer can make this side hold: every stream's shared window and what
                // the streams reserved above it.
                prop_assert!(t.buffered_bytes() <= 6 * 4 + budget.reserved());
            }
        }
    }
}

//! A stream whose bytes its caller moves itself, rather than a socket spliced to it (the
//! gateway's forwarded HTTP request, the scan engine's connections), under a splice's limits: it
//! ends when access is withdrawn or when it stays quiet past [`SpliceOptions::idle_timeout`],
//! and a stream given up is reset, as a splice's is. One difference: the half-closed timeout
//! ([`SpliceOptions::half_closed_timeout`]) starts when the caller says its side finished
//! ([`Exchanged::half_closed`]), not when the peer's does, which a splice also counts.

use crate::stream::{
    Expiry, QuietLimits, SpliceOptions, SpliceReport, StreamEnd, StreamReader, StreamWriter,
    TunnelStream,
};
use ism_tunnel_proto::ResetReason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What an exchange has moved and when a byte last moved, counted by the caller as it goes, so
/// that one stopped half-way still reports its bytes and its time limits see them.
#[derive(Debug)]
pub struct Exchanged {
    started: Instant,
    /// To the peer.
    sent: AtomicU64,
    /// From the peer.
    received: AtomicU64,
    /// When a byte last moved, in ms since `started`.
    last_ms: AtomicU64,
    /// The caller's side has finished.
    half_closed: AtomicBool,
    /// Wakes the watch on the limits when the half-closed one starts to apply.
    finished: Notify,
}

impl Exchanged {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            half_closed: AtomicBool::new(false),
            finished: Notify::new(),
        }
    }

    /// Counts `n` bytes sent to the peer.
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.moved_now();
    }

    /// Counts `n` bytes received from the peer.
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        self.moved_now();
    }

    /// The caller's side has finished: from now on the peer has the half-closed timeout to
    /// finish its own (counted from now, however long the stream was quiet before: a pooled
    /// connection the caller closes after a long wait is not given up at once).
    pub fn half_closed(&self) {
        self.moved_now();
        self.half_closed.store(true, Ordering::Relaxed);
        self.finished.notify_one();
    }

    fn moved_now(&self) {
        let ms = self.started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        // Both directions write it: the later of the two stands.
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the stream expires, as its bytes stand now.
    fn deadline(&self, limits: &QuietLimits) -> Option<(Instant, Expiry)> {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        limits.deadline(last, self.half_closed.load(Ordering::Relaxed))
    }

    /// Waits until the stream has been quiet past its limits, and says which ran out. It sleeps
    /// to the deadline and looks again (bytes may have moved meanwhile), and wakes early when the
    /// caller's side finishes, which can bring the deadline closer.
    async fn silence(&self, limits: &QuietLimits) -> Expiry {
        loop {
            match self.deadline(limits) {
                Some((at, expiry)) if at <= Instant::now() => return expiry,
                Some((at, _)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.finished.notified() => {}
                },
                None => self.finished.notified().await,
            }
        }
    }
}

impl TunnelStream {
    /// Runs `exchange` on the stream's two halves, after sending `options.initial`, until it
    /// says how the stream ended (having finished its side when it ended well), `options.stop`
    /// is cancelled, or the stream stays quiet past the options' limits (the exchange counts
    /// what it moves in [`Exchanged`]). A stream given up is reset: `Revoked` when stopped,
    /// `Aborted` when it expired or the caller's side failed.
    pub async fn exchange(
        self,
        options: SpliceOptions,
        exchange: impl AsyncFnOnce(&mut StreamReader, &mut StreamWriter, &Exchanged) -> StreamEnd,
    ) -> SpliceReport {
        let (mut reader, mut writer) = self.split();
        let exchanged = Exchanged::new();
        let limits = options.limits();
        let run = async {
            if !options.initial.is_empty() {
                exchanged.sent(options.initial.len());
                if let Err(end) = writer.send(options.initial.clone()).await {
                    return end;
                }
            }
            exchange(&mut reader, &mut writer, &exchanged).await
        };
        let end = tokio::select! {
            end = run => end,
            () = options.stop.cancelled() => StreamEnd::Cancelled,
            expiry = exchanged.silence(&limits) => StreamEnd::Expired(expiry),
        };
        match end {
            StreamEnd::SocketError(_) | StreamEnd::Expired(_) => writer.reset(ResetReason::Aborted),
            StreamEnd::Cancelled => writer.reset(ResetReason::Revoked),
            StreamEnd::Finished | StreamEnd::Reset(_) => {}
        }
        SpliceReport {
            sent: exchanged.sent.load(Ordering::Relaxed),
            received: exchanged.received.load(Ordering::Relaxed),
            end,
        }
    }
}

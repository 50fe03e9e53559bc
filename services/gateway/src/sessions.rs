//! The endpoint sessions this node holds: which endpoint's tunnel is here, and which tunnel is
//! its current one.
//!
//! A reconnect by the same endpoint identity replaces its old session at once (the old one is
//! closed and its streams reset): users of other tunnels hit "already connected" and leaked
//! sessions after network changes; here the newest session wins. The exception is a second live
//! agent with the same machine identity, which would otherwise win back and forth for ever
//! ([`crate::copied_identity`]).

use crate::copied_identity::{Instance, Replacements, WINDOW};
use crate::start_rate::StartRate;
use crate::stream_queue::Waiting;
use ism_tunnel::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

/// One endpoint's live tunnel on this node.
#[derive(Clone)]
pub struct LiveSession {
    pub tunnel: Uuid,
    pub endpoint: Uuid,
    pub gateway: Uuid,
    /// Generation of the key the session was admitted with: a rotation ends the session.
    pub key_generation: u32,
    /// The machine identity the key was bound to when the session was admitted: releasing the
    /// binding ends the session.
    pub machine: String,
    /// The agent process holding the session (`None` for agents too old to say).
    pub instance: Option<Instance>,
    /// The host name the agent gave (untrusted text).
    pub hostname: String,
    /// The agent reads trace contexts in its opens (it speaks protocol
    /// [`TRACE_CONTEXT_SINCE`](ism_tunnel_proto::TRACE_CONTEXT_SINCE) or later).
    pub traced: bool,
    pub session: Session,
    /// Scanner streams waiting for one of the session's stream slots.
    pub waiting: Waiting,
}

pub struct Sessions {
    by_endpoint: Mutex<HashMap<Uuid, LiveSession>>,
    /// How many sessions there are, for those who wait for a change (a stopping node, tests).
    count: watch::Sender<usize>,
    replacements: Mutex<Replacements>,
    /// Side sessions (the diagnostic tool, the installer's key check) each endpoint holds here.
    side: Mutex<HashMap<Uuid, usize>>,
    /// How often each endpoint started a working session here.
    starts: Mutex<StartRate>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            by_endpoint: Mutex::default(),
            count: watch::channel(0).0,
            replacements: Mutex::new(Replacements::new(WINDOW)),
            side: Mutex::default(),
            starts: Mutex::default(),
        }
    }
}

/// Side sessions one endpoint may hold at once on a node. They replace nothing and are not
/// recorded, so without a bound one key could open any number, each holding its echo streams'
/// buffers; the diagnostic tool and the key check need one at a time.
pub const MAX_SIDE_SESSIONS: usize = 4;

/// One side session's place among its endpoint's ([`Sessions::side_session`]); freed when
/// dropped.
pub struct SidePlace {
    sessions: Arc<Sessions>,
    endpoint: Uuid,
}

impl Drop for SidePlace {
    fn drop(&mut self) {
        let mut side = self.sessions.side();
        if let Some(n) = side.get_mut(&self.endpoint) {
            *n -= 1;
            if *n == 0 {
                side.remove(&self.endpoint);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LiveSession>> {
        self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn side(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.side.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more side session of `endpoint`, or `None` when it holds
    /// [`MAX_SIDE_SESSIONS`] already.
    pub fn side_session(self: &Arc<Self>, endpoint: Uuid) -> Option<SidePlace> {
        let mut side = self.side();
        let held = side.entry(endpoint).or_default();
        if *held >= MAX_SIDE_SESSIONS {
            return None;
        }
        *held += 1;
        Some(SidePlace { sessions: self.clone(), endpoint })
    }

    /// Counts a working session `endpoint` is about to start at `now_ms`, or says how long it
    /// must wait for one ([`crate::start_rate`]).
    pub fn may_start(&self, endpoint: Uuid, now_ms: i64) -> Result<(), std::time::Duration> {
        self.starts.lock().unwrap_or_else(|p| p.into_inner()).start(endpoint, now_ms)
    }

    fn replacements(&self) -> std::sync::MutexGuard<'_, Replacements> {
        self.replacements.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session held by another live agent of the same machine identity, when `instance` of
    /// that identity must be refused rather than replace it at `now_ms`
    /// ([`crate::copied_identity`]).
    pub fn held_by_a_copy(
        &self,
        endpoint: Uuid,
        instance: Option<Instance>,
        now_ms: i64,
    ) -> Option<LiveSession> {
        let holder = self.get(endpoint)?;
        self.replacements().refuses(endpoint, instance, holder.instance, now_ms).then_some(holder)
    }

    /// Makes `live` the endpoint's session at `now_ms`; returns the one it replaces, if any, for
    /// the caller to close once the new session has claimed the endpoint in the cluster
    /// (closed first, the old session would let its claim go, and the node's owner feed would
    /// take that for another node fencing the new session out).
    pub fn install(&self, live: LiveSession, now_ms: i64) -> Option<LiveSession> {
        let (endpoint, instance) = (live.endpoint, live.instance);
        let old = {
            let mut map = self.lock();
            let old = map.insert(live.endpoint, live);
            self.count.send_replace(map.len());
            old
        };
        if let Some(old) = &old {
            self.replacements().replaced(endpoint, old.instance, instance, now_ms);
        }
        old
    }

    /// The endpoint's current session on this node.
    pub fn get(&self, endpoint: Uuid) -> Option<LiveSession> {
        self.lock().get(&endpoint).cloned()
    }

    /// Forgets the endpoint's session if `tunnel` is still its current one.
    pub fn remove(&self, endpoint: Uuid, tunnel: Uuid) -> bool {
        let mut map = self.lock();
        if map.get(&endpoint).is_some_and(|s| s.tunnel == tunnel) {
            map.remove(&endpoint);
            self.count.send_replace(map.len());
            true
        } else {
            false
        }
    }

    /// Closes every session (node shutdown).
    pub fn close_all(&self, reason: &str) {
        for s in self.lock().values() {
            s.session.close(reason);
        }
    }

    /// Endpoints with a session on this node.
    pub fn endpoints(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits until the number of sessions satisfies `done`.
    pub async fn wait_for(&self, done: impl Fn(usize) -> bool) {
        let _ = self.count.subscribe().wait_for(|n| done(*n)).await;
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Streams open across all sessions.
    pub fn open_streams(&self) -> usize {
        self.lock().values().map(|s| s.session.open_streams()).sum()
    }

    /// Streams waiting for a slot of `endpoint`'s session here.
    pub fn waiting(&self, endpoint: Uuid) -> usize {
        self.lock().get(&endpoint).map_or(0, |s| s.waiting.len())
    }

    /// Streams waiting for a slot, across the sessions.
    pub fn queued_streams(&self) -> usize {
        self.lock().values().map(|s| s.waiting.len()).sum()
    }
}

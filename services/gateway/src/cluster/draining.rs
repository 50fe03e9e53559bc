//! Draining: a node about to stop (`ism node drain`, SIGTERM in a cluster) hands its endpoints to
//! the other nodes without cutting a stream. Make before break:
//!
//! 1. it takes no new endpoint sessions (the tunnel acceptor refuses them as retryable, so an
//!    agent tries its next address at once) and `/ready` answers 503, so a load balancer sends
//!    new scanners elsewhere; scanners that still arrive are served, relayed to the endpoint's
//!    new node as soon as it has one;
//! 2. it asks every connected agent to move (a `Move` frame naming the reason);
//! 3. an agent's new session on another node claims the endpoint, and this node closes the old
//!    session once the streams running on it have finished ([`super::membership::fence_replaced`]);
//! 4. whatever is still open at the drain deadline is closed;
//! 5. a node drained before it stops (SIGTERM) waits until scanners stopped coming ([`QUIET`]),
//!    so the load balancer has moved them elsewhere before the node's ports close.

use crate::state::NodeState;
use ism_tunnel::Session;
use std::sync::Arc;
use std::time::Duration;

/// How often a winding-down session is looked at for running streams.
const STREAMS_POLL: Duration = Duration::from_millis(100);

/// How long no scanner stream may have started through a drained node before it stops: by then a
/// load balancer checking `/ready` has taken it out of rotation, so stopping refuses no one.
pub const QUIET: Duration = Duration::from_secs(1);

/// Waits until this node is asked to drain, then hands its endpoints over, within `deadline`.
pub async fn drain_when_asked(state: Arc<NodeState>, deadline: Duration) {
    state.cluster.draining().await;
    let reason = format!("gateway node {} is draining", state.node_id);
    // A scan cannot move with its endpoint: it fails now, rather than holding the drain until
    // its deadline, and is started again elsewhere.
    crate::scans::fail_running(&state, &reason).await;
    let endpoints = state.sessions.endpoints();
    tracing::info!(
        sessions = endpoints.len(),
        deadline_s = deadline.as_secs(),
        "draining: asking every endpoint to move to another node"
    );
    for endpoint in endpoints {
        if let Some(live) = state.sessions.get(endpoint) {
            // An agent too old to know the request stays until the deadline.
            let _ = live.session.request_move(reason.clone());
        }
    }
    let handed_over = state.sessions.wait_for(|n| n == 0);
    if tokio::time::timeout(deadline, handed_over).await.is_err() {
        tracing::warn!(
            sessions = state.sessions.len(),
            "drain deadline reached: closing the sessions still here"
        );
        state.sessions.close_all("gateway node drain deadline reached");
    } else {
        tracing::info!("drained: every endpoint moved to another node");
    }
}

/// Waits until scanners stopped coming: no stream runs through this node and none started for
/// [`QUIET`].
pub async fn scanners_gone(state: &NodeState) {
    loop {
        let started = state.streams.started();
        state.streams.wait_for(|n| n == 0).await;
        tokio::time::sleep(QUIET).await;
        if state.streams.started() == started && state.streams.is_empty() {
            return;
        }
    }
}

/// Waits until no stream runs on `session`, or `deadline` passes.
pub async fn streams_finish(session: &Session, deadline: Duration) {
    let finished = async {
        while session.open_streams() > 0 && !session.is_closed() {
            tokio::time::sleep(STREAMS_POLL).await;
        }
    };
    let _ = tokio::time::timeout(deadline, finished).await;
}

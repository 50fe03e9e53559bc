//! Scan events: each scan's row, its findings (in their own tree, in the order recorded), and
//! the gateway's last activity (a scan's start and end are activity, as its streams are).

use super::{activity_advances, encode, get, update, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::ScanEvent;

/// Applies `event`, the scan's event at log `position`.
pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, position: u64, event: &ScanEvent) -> TxResult<()> {
    let t = at.time_ms;
    let mut s = match event {
        ScanEvent::ScanQueued { endpoint, gateway, settings, again_of } => ScanView {
            id: at.id,
            version: at.seq,
            endpoint: *endpoint,
            gateway: *gateway,
            settings: settings.clone(),
            again_of: *again_of,
            status: ScanStatus::Queued,
            queued_position: position,
            queued_ms: t,
            queued_by: at.envelope.actor_shown(),
            started_ms: None,
            node: None,
            ended_ms: None,
            pages: 0,
            requests: 0,
            reason: None,
            cancelled_by: None,
            finding_counts: FindingCounts::default(),
        },
        _ => match get::<ScanView>(tx.scans, at.key)? {
            Some(s) => s,
            None => return Ok(()),
        },
    };
    match event {
        ScanEvent::ScanQueued { .. } => {}
        ScanEvent::ScanStarted { node } => {
            (s.status, s.started_ms, s.node) = (ScanStatus::Running, Some(t), Some(node.clone()))
        }
        ScanEvent::ScanProgressed { pages, requests, findings }
        | ScanEvent::ScanFinished { pages, requests, findings } => {
            (s.pages, s.requests) = (*pages, *requests);
            for f in findings {
                let key = [at.key, &s.finding_counts.total().to_be_bytes()].concat();
                tx.scan_findings.insert(key, encode(f))?;
                s.finding_counts.add(&f.severity);
            }
            if matches!(event, ScanEvent::ScanFinished { .. }) {
                (s.status, s.ended_ms) = (ScanStatus::Finished, Some(t));
            }
        }
        ScanEvent::ScanFailed { reason } => {
            (s.status, s.ended_ms, s.reason) = (ScanStatus::Failed, Some(t), Some(reason.clone()))
        }
        ScanEvent::ScanCancelled { by, reason } => {
            (s.status, s.ended_ms) = (ScanStatus::Cancelled, Some(t));
            (s.reason, s.cancelled_by) = (Some(reason.clone()), Some(by.clone()));
        }
    }
    s.version = at.seq;
    // The endpoint's scans in the order queued, and the scans still to run or running (what the
    // queue is made of), kept by their queue position.
    let place = [s.endpoint.as_bytes().as_slice(), &s.queued_position.to_be_bytes()].concat();
    if matches!(event, ScanEvent::ScanQueued { .. }) {
        tx.scans_by_endpoint.insert(place, at.key)?;
        tx.active_scans.insert(&s.queued_position.to_be_bytes(), at.key)?;
    } else if !s.status.is_active() {
        tx.active_scans.remove(&s.queued_position.to_be_bytes())?;
    }
    if matches!(event, ScanEvent::ScanStarted { .. } | ScanEvent::ScanFinished { .. }) {
        update(tx.gateways, s.gateway.as_bytes(), |g: &mut GatewayView| {
            if activity_advances(g.last_activity_ms, t) {
                g.last_activity_ms = t;
            }
        })?;
    }
    tx.scans.insert(at.key, encode(&s))?;
    Ok(())
}

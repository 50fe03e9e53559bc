//! The notification and retention rules, as pure functions of what the log says and the time.
//!
//! The rows ([`EndpointWatch`], [`GatewayWatch`]) hold only facts taken from events; the `due`
//! rules (`EndpointWatch::due`, `GatewayWatch::due`) turn them and `now` into [`Notice`]s. A
//! notice's id is derived from the event that caused it, so every node, and every rebuild,
//! derives the same id, and the notification aggregate under that id is claimed once.

use ism_events::NoticeKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of notice ids (UUID v5 of what the notice is about).
const NOTICE_NAMESPACE: Uuid = Uuid::from_u128(0x6973_6d2d_6e6f_7469_6365_2d69_6473_0001);

/// Outages kept per endpoint: enough to judge instability; an endpoint flapping faster loses its
/// oldest (already reported or suppressed) outages first.
const MAX_OUTAGES: usize = 16;
/// Pauses kept per endpoint.
const MAX_PAUSES: usize = 4;
/// Finished retention notices remembered per gateway (each countdown has three at most).
const MAX_HANDLED: usize = 64;

/// The rules' settings. Every node of a cluster must run the same ones: they decide which
/// notices exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long an endpoint must stay offline before it is reported (a reconnect after a node
    /// loss or within it sends nothing).
    pub offline_grace_ms: i64,
    /// Outages within `unstable_window_ms` that make an endpoint unstable.
    pub unstable_count: usize,
    pub unstable_window_ms: i64,
    /// How long an endpoint's notifications pause after it was reported unstable.
    pub pause_ms: i64,
    /// A notice that fell due longer ago than this (the whole cluster was down) is not sent late.
    pub horizon_ms: i64,
    /// Calendar months without scan activity after which a gateway is deleted.
    pub retention_months: u32,
    /// How long before the deletion each warning goes out.
    pub retention_warnings_ms: [i64; 2],
}

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

impl Default for Settings {
    fn default() -> Self {
        Self {
            offline_grace_ms: 2 * MINUTE_MS,
            unstable_count: 3,
            unstable_window_ms: 30 * MINUTE_MS,
            pause_ms: DAY_MS,
            horizon_ms: 6 * 60 * MINUTE_MS,
            retention_months: 4,
            retention_warnings_ms: [14 * DAY_MS, DAY_MS],
        }
    }
}

/// What to do about a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Tell the recipients (for [`NoticeKind::GatewayRetired`]: delete the gateway first).
    Send(NoticeKind),
    /// Record that a pause is over.
    EndPause,
}

/// One thing the rules say should happen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The notification aggregate's id.
    pub id: Uuid,
    pub action: Action,
    /// The endpoint (or gateway) it is about.
    pub subject: Uuid,
    pub gateway: Uuid,
    /// When it fell due.
    pub due_ms: i64,
    /// When what it reports happened (the session ended, the last activity).
    pub since_ms: i64,
    /// Why it must not be sent (the endpoint's notifications are paused).
    pub suppressed: Option<String>,
    /// For an unstable endpoint: until when its notifications pause.
    pub pause_until_ms: Option<i64>,
    /// For retention: when the gateway is (or was) deleted.
    pub deadline_ms: Option<i64>,
}

fn notice_id(what: &str, cause: Uuid) -> Uuid {
    let mut name = what.as_bytes().to_vec();
    name.push(b'/');
    name.extend_from_slice(cause.as_bytes());
    Uuid::new_v5(&NOTICE_NAMESPACE, &name)
}

/// A time without service: an endpoint without any session (from the end of its last one), or
/// a gateway no node served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub from_ms: i64,
    /// The event that began it (closed the last session, recorded the gateway offline).
    pub from_event: Uuid,
    /// When and by which event service came back.
    pub until: Option<(i64, Uuid)>,
    /// It began while the endpoint's gateway was offline: the gateway's outage, not the
    /// endpoint's own trouble (it counts for no instability).
    #[serde(default)]
    pub excused: bool,
    /// Notices about it already finished (its offline and online reports).
    #[serde(default)]
    pub done: Vec<Uuid>,
}

impl Outage {
    fn began(from_ms: i64, event: Uuid, excused: bool) -> Self {
        Self { from_ms, from_event: event, until: None, excused, done: Vec::new() }
    }

    fn end_ms(&self) -> i64 {
        self.until.map_or(i64::MAX, |(t, _)| t)
    }

    /// When the outage is reported offline, if it is (`report_from`: from when it may be, the
    /// end of the grace unless something else says later): only if it is still going then.
    fn reported_at(&self, report_from: Option<i64>, now: i64) -> Option<i64> {
        let at = report_from?;
        let lasted = match self.until {
            Some((back, _)) => back >= at,
            None => now >= at,
        };
        lasted.then_some(at)
    }

    /// Its offline report and, once service is back, its online report.
    fn reports(
        &self,
        report_from: Option<i64>,
        now: i64,
        offline: NoticeKind,
        online: NoticeKind,
    ) -> Vec<(NoticeKind, Uuid, i64)> {
        let Some(at) = self.reported_at(report_from, now) else { return Vec::new() };
        let mut out = vec![(offline, notice_id(offline.as_str(), self.from_event), at)];
        if let Some((back, event)) = self.until {
            out.push((online, notice_id(online.as_str(), event), back));
        }
        out
    }
}

/// Opens an outage in `outages` (kept to the last [`MAX_OUTAGES`]).
fn outage_began(outages: &mut Vec<Outage>, outage: Outage) {
    outages.push(outage);
    if outages.len() > MAX_OUTAGES {
        outages.remove(0);
    }
}

/// Closes the open outage of `outages`, if there is one.
fn outage_ended(outages: &mut [Outage], at_ms: i64, event: Uuid) {
    if let Some(o) = outages.last_mut().filter(|o| o.until.is_none()) {
        o.until = Some((at_ms, event));
    }
}

/// Marks `notice` finished on whichever outage it is about.
fn outage_done(outages: &mut [Outage], notice: Uuid, kinds: [NoticeKind; 2]) {
    for o in outages {
        let mut ids = vec![notice_id(kinds[0].as_str(), o.from_event)];
        ids.extend(o.until.map(|(_, e)| notice_id(kinds[1].as_str(), e)));
        if ids.contains(&notice) && !o.done.contains(&notice) {
            o.done.push(notice);
        }
    }
}

/// Notifications about an endpoint held back after it was reported unstable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub from_ms: i64,
    pub until_ms: i64,
    /// The event that closed the session which made the endpoint unstable.
    pub cause: Uuid,
    /// Its unstable report and its end, once finished.
    #[serde(default)]
    pub done: Vec<Uuid>,
}

impl Pause {
    fn unstable_id(&self) -> Uuid {
        notice_id(NoticeKind::EndpointUnstable.as_str(), self.cause)
    }

    fn end_id(&self) -> Uuid {
        notice_id("notifications-resumed", self.cause)
    }
}

/// What the rules know of one endpoint. Finished notices are marked on the outage or pause they
/// are about, so what is remembered is bounded with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointWatch {
    pub endpoint: Uuid,
    pub gateway: Uuid,
    /// Open sessions (two during a make-before-break handover).
    pub sessions: Vec<Uuid>,
    pub outages: Vec<Outage>,
    pub pauses: Vec<Pause>,
    pub deleted: bool,
}

const ENDPOINT_REPORTS: [NoticeKind; 2] = [NoticeKind::EndpointOffline, NoticeKind::EndpointOnline];
const GATEWAY_REPORTS: [NoticeKind; 2] = [NoticeKind::GatewayOffline, NoticeKind::GatewayOnline];

impl EndpointWatch {
    pub fn new(endpoint: Uuid, gateway: Uuid) -> Self {
        Self {
            endpoint,
            gateway,
            sessions: Vec::new(),
            outages: Vec::new(),
            pauses: Vec::new(),
            deleted: false,
        }
    }

    /// A session opened (event `event` at `at_ms`).
    pub fn opened(&mut self, tunnel: Uuid, at_ms: i64, event: Uuid) {
        if self.sessions.is_empty() {
            outage_ended(&mut self.outages, at_ms, event);
        }
        if !self.sessions.contains(&tunnel) {
            self.sessions.push(tunnel);
        }
    }

    /// A session closed; the last one closing starts an outage (`excused` when the gateway is
    /// offline), and enough outages of its own within the window make the endpoint unstable
    /// (unless it is paused already).
    pub fn closed(&mut self, tunnel: Uuid, at_ms: i64, event: Uuid, excused: bool, s: &Settings) {
        let before = self.sessions.len();
        self.sessions.retain(|t| *t != tunnel);
        if before == 0 || !self.sessions.is_empty() {
            return;
        }
        outage_began(&mut self.outages, Outage::began(at_ms, event, excused));
        if excused {
            return;
        }
        let recent = self
            .outages
            .iter()
            .filter(|o| !o.excused && o.from_ms > at_ms - s.unstable_window_ms)
            .count();
        if recent >= s.unstable_count && self.paused_at(at_ms).is_none() {
            let pause = Pause {
                from_ms: at_ms,
                until_ms: at_ms + s.pause_ms,
                cause: event,
                done: Vec::new(),
            };
            self.pauses.push(pause);
            if self.pauses.len() > MAX_PAUSES {
                self.pauses.remove(0);
            }
        }
    }

    /// `notice` is finished.
    pub fn handled(&mut self, notice: Uuid) {
        outage_done(&mut self.outages, notice, ENDPOINT_REPORTS);
        for p in &mut self.pauses {
            if (p.unstable_id() == notice || p.end_id() == notice) && !p.done.contains(&notice) {
                p.done.push(notice);
            }
        }
    }

    fn paused_at(&self, t: i64) -> Option<&Pause> {
        self.pauses.iter().find(|p| p.from_ms <= t && t < p.until_ms)
    }

    fn suppression(&self, t: i64) -> Option<String> {
        self.paused_at(t).map(|p| {
            format!(
                "notifications about this endpoint are paused until {} (it was reported unstable)",
                crate::audit::format_time(p.until_ms)
            )
        })
    }

    fn notice(&self, id: Uuid, action: Action, due_ms: i64, since_ms: i64) -> Notice {
        Notice {
            id,
            action,
            subject: self.endpoint,
            gateway: self.gateway,
            due_ms,
            since_ms,
            suppressed: self.suppression(due_ms),
            pause_until_ms: None,
            deadline_ms: None,
        }
    }

    /// The notices due at `now` and not yet finished. An outage that began while its gateway
    /// was offline (`gateway_outages`) is the gateway's to report: the endpoint is reported only
    /// if it is still offline a grace after the gateway came back.
    pub fn due(&self, s: &Settings, now: i64, gateway_outages: &[Outage]) -> Vec<Notice> {
        if self.deleted {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in &self.pauses {
            let unstable = Action::Send(NoticeKind::EndpointUnstable);
            let mut n = self.notice(p.unstable_id(), unstable, p.from_ms, p.from_ms);
            (n.suppressed, n.pause_until_ms) = (None, Some(p.until_ms));
            let end = self.notice(p.end_id(), Action::EndPause, p.until_ms, p.from_ms);
            out.extend([n, end].into_iter().filter(|n| !p.done.contains(&n.id)));
        }
        for o in &self.outages {
            let covering = gateway_outages
                .iter()
                .find(|g| g.from_ms - s.offline_grace_ms <= o.from_ms && o.from_ms <= g.end_ms());
            let report_from = match covering {
                Some(g) => g.until.map(|(back, _)| back + s.offline_grace_ms),
                None => Some(o.from_ms + s.offline_grace_ms),
            };
            for (kind, id, due) in
                o.reports(report_from, now, ENDPOINT_REPORTS[0], ENDPOINT_REPORTS[1])
            {
                if !o.done.contains(&id) {
                    out.push(self.notice(id, Action::Send(kind), due, o.from_ms));
                }
            }
        }
        // A pause's end is recorded however late; reports are not sent hours late.
        out.retain(|n| {
            n.due_ms <= now && (n.action == Action::EndPause || n.due_ms >= now - s.horizon_ms)
        });
        out
    }
}

/// What the gateway rules know of one gateway: its outages and its activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayWatch {
    pub gateway: Uuid,
    /// Its creation, or the last stream opened through one of its endpoints.
    pub last_activity_ms: i64,
    /// When it was deleted (by anyone).
    pub deleted_ms: Option<i64>,
    /// Times no node served it (recorded by the nodes).
    #[serde(default)]
    pub outages: Vec<Outage>,
    /// Retention notices finished.
    pub handled: Vec<Uuid>,
}

impl GatewayWatch {
    pub fn new(gateway: Uuid, created_ms: i64) -> Self {
        Self {
            gateway,
            last_activity_ms: created_ms,
            deleted_ms: None,
            outages: Vec::new(),
            handled: Vec::new(),
        }
    }

    pub fn went_offline(&mut self, since_ms: i64, event: Uuid) {
        outage_began(&mut self.outages, Outage::began(since_ms, event, false));
    }

    pub fn came_online(&mut self, at_ms: i64, event: Uuid) {
        outage_ended(&mut self.outages, at_ms, event);
    }

    /// Whether no node serves it now, as recorded.
    pub fn is_offline(&self) -> bool {
        self.outages.last().is_some_and(|o| o.until.is_none())
    }

    /// Whether activity at `at_ms` moves the row (by the resolution or more).
    pub fn moved_by(&self, at_ms: i64) -> bool {
        crate::directory::activity_advances(self.last_activity_ms, at_ms)
    }

    pub fn active(&mut self, at_ms: i64) {
        self.last_activity_ms = self.last_activity_ms.max(at_ms);
    }

    /// `notice` is finished.
    pub fn handled(&mut self, notice: Uuid) {
        outage_done(&mut self.outages, notice, GATEWAY_REPORTS);
        let ours = self.outages.iter().any(|o| o.done.contains(&notice));
        if !ours && !self.handled.contains(&notice) {
            self.handled.push(notice);
            if self.handled.len() > MAX_HANDLED {
                self.handled.remove(0);
            }
        }
    }

    /// When the gateway is deleted if nothing happens before.
    pub fn deadline_ms(&self, s: &Settings) -> i64 {
        ism_time::add_months(self.last_activity_ms, s.retention_months)
    }

    /// Offline after the grace, back online after an offline report, while it exists.
    fn service_notices(&self, s: &Settings, now: i64) -> Vec<Notice> {
        if self.deleted_ms.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for o in &self.outages {
            let report_from = Some(o.from_ms + s.offline_grace_ms);
            for (kind, id, due_ms) in
                o.reports(report_from, now, GATEWAY_REPORTS[0], GATEWAY_REPORTS[1])
            {
                if o.done.contains(&id) || due_ms < now - s.horizon_ms {
                    continue;
                }
                out.push(Notice {
                    id,
                    action: Action::Send(kind),
                    subject: self.gateway,
                    gateway: self.gateway,
                    due_ms,
                    since_ms: o.from_ms,
                    suppressed: None,
                    pause_until_ms: None,
                    deadline_ms: None,
                });
            }
        }
        out
    }

    /// Its outage reports; the retention warnings due at `now` (each until the deadline:
    /// activity moves the deadline, so a warning for an old deadline is never sent); the
    /// deletion once the deadline passed, due after the gateway is gone until it is finished
    /// (its notification sent), unless someone deleted the gateway before its deadline.
    pub fn due(&self, s: &Settings, now: i64) -> Vec<Notice> {
        let deadline = self.deadline_ms(s);
        if self.deleted_ms.is_some_and(|d| d < deadline) {
            return Vec::new();
        }
        // One countdown per deadline: activity moves the deadline and starts a new one.
        let notice = |what: &str, kind, due_ms| Notice {
            id: notice_id(&format!("{what}/{deadline}"), self.gateway),
            action: Action::Send(kind),
            subject: self.gateway,
            gateway: self.gateway,
            due_ms,
            since_ms: self.last_activity_ms,
            suppressed: None,
            pause_until_ms: None,
            deadline_ms: Some(deadline),
        };
        let mut retention = Vec::new();
        if now >= deadline {
            retention.push(notice("gateway-retired", NoticeKind::GatewayRetired, deadline));
        } else {
            // Only the latest warning due: a node down across both sends one, not two.
            let mut warnings: Vec<Notice> = Vec::new();
            for before in s.retention_warnings_ms {
                let what = format!("retention-warning-{}d", before / DAY_MS);
                warnings.push(notice(&what, NoticeKind::RetentionWarning, deadline - before));
            }
            warnings.retain(|n| n.due_ms <= now);
            retention.extend(warnings.into_iter().max_by_key(|n| n.due_ms));
        }
        retention.retain(|n| !self.handled.contains(&n.id));
        let mut out = self.service_notices(s, now);
        out.extend(retention);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = MINUTE_MS;

    struct Endpoint {
        w: EndpointWatch,
        s: Settings,
        next: u128,
    }

    impl Endpoint {
        fn new() -> Self {
            Self {
                w: EndpointWatch::new(Uuid::from_u128(1), Uuid::from_u128(2)),
                s: Settings::default(),
                next: 100,
            }
        }
        fn event(&mut self) -> Uuid {
            self.next += 1;
            Uuid::from_u128(self.next)
        }
        fn up(&mut self, at: i64) {
            let e = self.event();
            self.w.opened(Uuid::from_u128(7), at, e);
        }
        fn down(&mut self, at: i64) {
            let e = self.event();
            self.w.closed(Uuid::from_u128(7), at, e, false, &self.s);
        }
        fn kinds_due(&self, now: i64) -> Vec<(NoticeKind, bool)> {
            self.kinds_due_under(now, &[])
        }
        fn kinds_due_under(&self, now: i64, gateway: &[Outage]) -> Vec<(NoticeKind, bool)> {
            self.w
                .due(&self.s, now, gateway)
                .into_iter()
                .filter_map(|n| match n.action {
                    Action::Send(k) => Some((k, n.suppressed.is_some())),
                    Action::EndPause => None,
                })
                .collect()
        }
        fn finish_all(&mut self, now: i64) {
            for n in self.w.due(&self.s, now, &[]) {
                self.w.handled(n.id);
            }
        }
    }

    #[test]
    fn offline_only_after_the_grace_and_online_only_after_an_offline_report() {
        let mut e = Endpoint::new();
        e.up(T0);
        e.down(T0 + MIN);
        assert!(e.kinds_due(T0 + 2 * MIN).is_empty(), "within the grace");
        assert_eq!(e.kinds_due(T0 + 3 * MIN), vec![(NoticeKind::EndpointOffline, false)]);
        e.finish_all(T0 + 3 * MIN);
        assert!(e.kinds_due(T0 + 4 * MIN).is_empty(), "once");
        e.up(T0 + 10 * MIN);
        assert_eq!(e.kinds_due(T0 + 10 * MIN), vec![(NoticeKind::EndpointOnline, false)]);
    }

    #[test]
    fn a_reconnect_within_the_grace_sends_nothing() {
        let mut e = Endpoint::new();
        e.up(T0);
        e.down(T0 + MIN);
        e.up(T0 + MIN + 10_000);
        assert!(e.kinds_due(T0 + 60 * MIN).is_empty());
    }

    #[test]
    fn a_handover_with_two_sessions_is_no_outage() {
        let mut e = Endpoint::new();
        e.w.opened(Uuid::from_u128(7), T0, Uuid::from_u128(50));
        e.w.opened(Uuid::from_u128(8), T0 + 1, Uuid::from_u128(51));
        e.w.closed(Uuid::from_u128(7), T0 + 2, Uuid::from_u128(52), false, &e.s);
        assert!(e.w.outages.is_empty());
        assert!(e.kinds_due(T0 + 60 * MIN).is_empty());
    }

    #[test]
    fn three_outages_in_half_an_hour_report_unstable_once_then_pause_for_a_day() {
        let mut e = Endpoint::new();
        e.up(T0);
        for i in 0..3 {
            e.down(T0 + i * 5 * MIN + MIN);
            e.up(T0 + i * 5 * MIN + 4 * MIN); // offline 3 minutes each: past the grace
        }
        let now = T0 + 15 * MIN;
        assert_eq!(
            e.kinds_due(now),
            vec![
                (NoticeKind::EndpointUnstable, false),
                (NoticeKind::EndpointOffline, false),
                (NoticeKind::EndpointOnline, false),
                (NoticeKind::EndpointOffline, false),
                (NoticeKind::EndpointOnline, false),
                (NoticeKind::EndpointOffline, true),
                (NoticeKind::EndpointOnline, true),
            ],
            "the third outage is reported unstable; its own offline and online are held back"
        );
        let unstable = &e.w.due(&e.s, now, &[])[0];
        assert_eq!(unstable.pause_until_ms, Some(T0 + 11 * MIN + DAY_MS));
        e.finish_all(now);
        // Hours later, still paused: another outage is held back, not reported unstable again.
        e.down(T0 + 5 * 60 * MIN);
        e.up(T0 + 5 * 60 * MIN + 5 * MIN);
        assert_eq!(
            e.kinds_due(T0 + 6 * 60 * MIN),
            vec![(NoticeKind::EndpointOffline, true), (NoticeKind::EndpointOnline, true)]
        );
        e.finish_all(T0 + 6 * 60 * MIN);
        // The pause's end is recorded once it is over, and then reports go out again.
        let end = T0 + 11 * MIN + DAY_MS;
        assert!(e.w.due(&e.s, end - 1, &[]).is_empty());
        let resumed = e.w.due(&e.s, end, &[]);
        assert_eq!(resumed.len(), 1);
        assert_eq!((resumed[0].action, resumed[0].due_ms), (Action::EndPause, end));
        e.finish_all(end);
        e.down(end + MIN);
        assert_eq!(e.kinds_due(end + 4 * MIN), vec![(NoticeKind::EndpointOffline, false)]);
    }

    #[test]
    fn outages_spread_wider_than_the_window_are_not_instability() {
        let mut e = Endpoint::new();
        e.up(T0);
        for i in 0..6 {
            e.down(T0 + i * 20 * MIN + MIN);
            e.up(T0 + i * 20 * MIN + MIN + 1000);
        }
        assert!(e.w.pauses.is_empty());
    }

    #[test]
    fn notices_too_old_are_not_sent_late_and_deleted_endpoints_get_none() {
        let mut e = Endpoint::new();
        e.up(T0);
        e.down(T0 + MIN);
        assert!(e.kinds_due(T0 + 7 * 60 * MIN).is_empty(), "fell due 6 hours and more ago");
        e.w.deleted = true;
        assert!(e.kinds_due(T0 + 5 * MIN).is_empty());
    }

    #[test]
    fn ids_are_the_same_for_every_node_and_differ_per_cause() {
        let mut a = Endpoint::new();
        let mut b = Endpoint::new();
        for e in [&mut a, &mut b] {
            e.up(T0);
            e.down(T0 + MIN);
        }
        let (da, db) = (a.w.due(&a.s, T0 + 5 * MIN, &[]), b.w.due(&b.s, T0 + 5 * MIN, &[]));
        assert_eq!(da, db);
        a.up(T0 + 6 * MIN);
        let ids: Vec<_> = a.w.due(&a.s, T0 + 6 * MIN, &[]).iter().map(|n| n.id).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn a_gateway_outage_is_reported_for_the_gateway_and_covers_its_endpoints() {
        let (mut g, s) = gateway();
        g.went_offline(T0 + MIN, Uuid::from_u128(60));
        assert!(kinds(&g.due(&s, T0 + 2 * MIN)).is_empty(), "within the grace");
        assert_eq!(kinds(&g.due(&s, T0 + 3 * MIN)), vec![NoticeKind::GatewayOffline]);
        g.came_online(T0 + 10 * MIN, Uuid::from_u128(61));
        let reports = g.due(&s, T0 + 10 * MIN);
        assert_eq!(kinds(&reports), vec![NoticeKind::GatewayOffline, NoticeKind::GatewayOnline]);
        for n in &reports {
            g.handled(n.id);
        }
        assert!(g.due(&s, T0 + 11 * MIN).is_empty(), "each once");
        assert!(g.handled.is_empty(), "outage reports are marked on their outage");

        // Its endpoint lost its session in the outage and came back within a grace after it.
        let mut e = Endpoint::new();
        e.up(T0);
        e.w.closed(Uuid::from_u128(7), T0 + MIN + 5, Uuid::from_u128(70), true, &e.s);
        e.up(T0 + 11 * MIN);
        assert!(
            e.kinds_due_under(T0 + 20 * MIN, &g.outages).is_empty(),
            "the gateway's reports cover it"
        );
        // Another one is still offline a grace after the gateway came back: reported then.
        let mut late = Endpoint::new();
        late.up(T0);
        late.w.closed(Uuid::from_u128(7), T0 + MIN + 5, Uuid::from_u128(71), true, &late.s);
        assert!(late.kinds_due_under(T0 + 11 * MIN, &g.outages).is_empty());
        assert_eq!(
            late.kinds_due_under(T0 + 12 * MIN, &g.outages),
            vec![(NoticeKind::EndpointOffline, false)]
        );

        // A short gateway outage (a restart within the grace) is not reported.
        let (mut quick, _) = gateway();
        quick.went_offline(T0, Uuid::from_u128(62));
        quick.came_online(T0 + 30_000, Uuid::from_u128(63));
        assert!(quick.due(&s, T0 + 60 * MIN).is_empty());
    }

    #[test]
    fn outages_of_the_gateway_make_no_endpoint_unstable() {
        let mut e = Endpoint::new();
        e.up(T0);
        for i in 0..5 {
            let event = Uuid::from_u128(80 + i as u128);
            e.w.closed(Uuid::from_u128(7), T0 + i * MIN + 1, event, true, &e.s);
            e.up(T0 + i * MIN + 30_000);
        }
        assert!(e.w.pauses.is_empty());
    }

    #[test]
    fn a_pause_end_long_past_is_still_recorded_once_and_then_never_again() {
        let mut e = Endpoint::new();
        e.up(T0);
        for i in 0..3 {
            e.down(T0 + i * MIN + 1);
            e.up(T0 + i * MIN + 1000);
        }
        let later = T0 + 40 * DAY_MS;
        let due = e.w.due(&e.s, later, &[]);
        assert_eq!(due.iter().filter(|n| n.action == Action::EndPause).count(), 1);
        e.finish_all(later);
        // Many outages later (each reported), the pause's end is still known to be done.
        for i in 0..40 {
            e.down(later + i * DAY_MS);
            e.up(later + i * DAY_MS + 10 * MIN);
            e.finish_all(later + i * DAY_MS + 10 * MIN);
        }
        assert!(e.w.due(&e.s, later + 41 * DAY_MS, &[]).is_empty());
    }

    fn gateway() -> (GatewayWatch, Settings) {
        (GatewayWatch::new(Uuid::from_u128(3), T0), Settings::default())
    }

    fn kinds(n: &[Notice]) -> Vec<NoticeKind> {
        n.iter()
            .filter_map(|n| if let Action::Send(k) = n.action { Some(k) } else { None })
            .collect()
    }

    #[test]
    fn an_idle_gateway_is_warned_14_days_and_1_day_before_and_retired_after_four_months() {
        let (mut g, s) = gateway();
        let deadline = ism_time::add_months(T0, 4);
        assert_eq!(g.deadline_ms(&s), deadline);
        assert!(g.due(&s, deadline - 15 * DAY_MS).is_empty());
        let first = g.due(&s, deadline - 14 * DAY_MS);
        assert_eq!(kinds(&first), vec![NoticeKind::RetentionWarning]);
        g.handled(first[0].id);
        assert!(g.due(&s, deadline - 2 * DAY_MS).is_empty());
        let second = g.due(&s, deadline - DAY_MS);
        assert_eq!(kinds(&second), vec![NoticeKind::RetentionWarning]);
        assert_ne!(first[0].id, second[0].id);
        g.handled(second[0].id);
        let retire = g.due(&s, deadline);
        assert_eq!(kinds(&retire), vec![NoticeKind::GatewayRetired]);
        assert_eq!(retire[0].deadline_ms, Some(deadline));
        g.deleted_ms = Some(deadline + 10);
        assert_eq!(g.due(&s, deadline + DAY_MS), retire, "due until its notification is sent");
        g.handled(retire[0].id);
        assert!(g.due(&s, deadline + DAY_MS).is_empty());
        let (mut deleted_by_hand, _) = gateway();
        deleted_by_hand.deleted_ms = Some(deadline - DAY_MS);
        assert!(deleted_by_hand.due(&s, deadline).is_empty());
    }

    #[test]
    fn activity_after_a_warning_cancels_the_countdown() {
        let (mut g, s) = gateway();
        let deadline = ism_time::add_months(T0, 4);
        let warned = g.due(&s, deadline - 14 * DAY_MS);
        g.handled(warned[0].id);
        assert!(!g.moved_by(T0 + 1000), "activity within a minute of the last is not written");
        assert!(g.moved_by(deadline - 10 * DAY_MS));
        g.active(deadline - 10 * DAY_MS);
        assert!(g.due(&s, deadline).is_empty(), "the old deadline means nothing now");
        let new_deadline = g.deadline_ms(&s);
        assert_eq!(new_deadline, ism_time::add_months(deadline - 10 * DAY_MS, 4));
        let rewarned = g.due(&s, new_deadline - 14 * DAY_MS);
        assert_eq!(kinds(&rewarned), vec![NoticeKind::RetentionWarning]);
        assert_ne!(rewarned[0].id, warned[0].id, "a new countdown warns again");
    }

    #[test]
    fn a_node_down_across_both_warnings_sends_only_the_last() {
        let (g, s) = gateway();
        let deadline = ism_time::add_months(T0, 4);
        let due = g.due(&s, deadline - DAY_MS / 2);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].due_ms, deadline - DAY_MS);
    }
}

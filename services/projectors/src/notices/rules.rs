//! The notification and retention rules, as pure functions of what the log says and the time.
//!
//! The rows ([`EndpointWatch`], [`GatewayWatch`]) hold only facts taken from events; [`due`]
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
/// Finished notices remembered per endpoint or gateway.
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

/// An endpoint without any session, from the end of its last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub from_ms: i64,
    /// The event that closed the last session.
    pub from_event: Uuid,
    /// When and by which event a session opened again.
    pub until: Option<(i64, Uuid)>,
}

impl Outage {
    /// Whether it lasted (or, still going, has lasted at `now`) long enough to be reported, and
    /// when it was reported: at the end of the grace.
    fn reported_at(&self, s: &Settings, now: i64) -> Option<i64> {
        let at = self.from_ms + s.offline_grace_ms;
        let lasted = match self.until {
            Some((back, _)) => back >= at,
            None => now >= at,
        };
        lasted.then_some(at)
    }

    /// Whether it and `other` overlap in time.
    fn overlaps(&self, other: &Outage) -> bool {
        let end = |o: &Outage| o.until.map_or(i64::MAX, |(t, _)| t);
        self.from_ms <= end(other) && other.from_ms <= end(self)
    }
}

/// Opens an outage at `from_ms` in `outages` (kept to the last [`MAX_OUTAGES`]).
fn outage_began(outages: &mut Vec<Outage>, from_ms: i64, event: Uuid) {
    outages.push(Outage { from_ms, from_event: event, until: None });
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

/// Notifications about an endpoint held back after it was reported unstable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub from_ms: i64,
    pub until_ms: i64,
    /// The event that closed the session which made the endpoint unstable.
    pub cause: Uuid,
}

/// What the rules know of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointWatch {
    pub endpoint: Uuid,
    pub gateway: Uuid,
    /// Open sessions (two during a make-before-break handover).
    pub sessions: Vec<Uuid>,
    pub outages: Vec<Outage>,
    pub pauses: Vec<Pause>,
    pub deleted: bool,
    /// Notices already finished (delivered, suppressed, recorded).
    pub handled: Vec<Uuid>,
}

fn remember(list: &mut Vec<Uuid>, id: Uuid) {
    if !list.contains(&id) {
        list.push(id);
        if list.len() > MAX_HANDLED {
            list.remove(0);
        }
    }
}

impl EndpointWatch {
    pub fn new(endpoint: Uuid, gateway: Uuid) -> Self {
        Self {
            endpoint,
            gateway,
            sessions: Vec::new(),
            outages: Vec::new(),
            pauses: Vec::new(),
            deleted: false,
            handled: Vec::new(),
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

    /// A session closed; the last one closing starts an outage, and enough outages within the
    /// window make the endpoint unstable (unless it is paused already).
    pub fn closed(&mut self, tunnel: Uuid, at_ms: i64, event: Uuid, s: &Settings) {
        let before = self.sessions.len();
        self.sessions.retain(|t| *t != tunnel);
        if before == 0 || !self.sessions.is_empty() {
            return;
        }
        outage_began(&mut self.outages, at_ms, event);
        let recent =
            self.outages.iter().filter(|o| o.from_ms > at_ms - s.unstable_window_ms).count();
        if recent >= s.unstable_count && self.paused_at(at_ms).is_none() {
            self.pauses.push(Pause { from_ms: at_ms, until_ms: at_ms + s.pause_ms, cause: event });
            if self.pauses.len() > MAX_PAUSES {
                self.pauses.remove(0);
            }
        }
    }

    pub fn handled(&mut self, notice: Uuid) {
        remember(&mut self.handled, notice);
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

    fn notice(&self, what: NoticeKind, cause: Uuid, due_ms: i64, since_ms: i64) -> Notice {
        Notice {
            id: notice_id(what.as_str(), cause),
            action: Action::Send(what),
            subject: self.endpoint,
            gateway: self.gateway,
            due_ms,
            since_ms,
            suppressed: self.suppression(due_ms),
            pause_until_ms: None,
            deadline_ms: None,
        }
    }

    /// The notices due at `now` and not yet finished. An outage during one of its gateway's
    /// (`gateway_outages`) is held back: the gateway's notification covers its endpoints.
    pub fn due(&self, s: &Settings, now: i64, gateway_outages: &[Outage]) -> Vec<Notice> {
        if self.deleted {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in &self.pauses {
            let mut unstable =
                self.notice(NoticeKind::EndpointUnstable, p.cause, p.from_ms, p.from_ms);
            (unstable.suppressed, unstable.pause_until_ms) = (None, Some(p.until_ms));
            out.push(unstable);
            out.push(Notice {
                id: notice_id("notifications-resumed", p.cause),
                action: Action::EndPause,
                ..self.notice(NoticeKind::EndpointUnstable, p.cause, p.until_ms, p.from_ms)
            });
        }
        for o in &self.outages {
            let Some(reported_at) = o.reported_at(s, now) else { continue };
            let gateway_down = gateway_outages.iter().find(|g| g.overlaps(o)).map(|g| {
                format!(
                    "its gateway was offline from {} (the gateway's notification covers its endpoints)",
                    crate::audit::format_time(g.from_ms)
                )
            });
            let mut notices = vec![self.notice(
                NoticeKind::EndpointOffline,
                o.from_event,
                reported_at,
                o.from_ms,
            )];
            if let Some((back, event)) = o.until {
                notices.push(self.notice(NoticeKind::EndpointOnline, event, back, o.from_ms));
            }
            for mut n in notices {
                n.suppressed = n.suppressed.or_else(|| gateway_down.clone());
                out.push(n);
            }
        }
        out.retain(|n| {
            n.due_ms <= now
                && !self.handled.contains(&n.id)
                && (n.action == Action::EndPause || n.due_ms >= now - s.horizon_ms)
        });
        out
    }
}

/// What the retention rule knows of one gateway.
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
        outage_began(&mut self.outages, since_ms, event);
    }

    pub fn came_online(&mut self, at_ms: i64, event: Uuid) {
        outage_ended(&mut self.outages, at_ms, event);
    }

    /// Whether activity at `at_ms` moves the row (by the resolution or more).
    pub fn moved_by(&self, at_ms: i64) -> bool {
        crate::directory::activity_advances(self.last_activity_ms, at_ms)
    }

    pub fn active(&mut self, at_ms: i64) {
        self.last_activity_ms = self.last_activity_ms.max(at_ms);
    }

    pub fn handled(&mut self, notice: Uuid) {
        remember(&mut self.handled, notice);
    }

    /// Offline after the grace, back online after an offline report, while it exists.
    fn service_notices(&self, s: &Settings, now: i64) -> Vec<Notice> {
        if self.deleted_ms.is_some() {
            return Vec::new();
        }
        let notice = |kind: NoticeKind, cause, due_ms, since_ms| Notice {
            id: notice_id(kind.as_str(), cause),
            action: Action::Send(kind),
            subject: self.gateway,
            gateway: self.gateway,
            due_ms,
            since_ms,
            suppressed: None,
            pause_until_ms: None,
            deadline_ms: None,
        };
        let mut out = Vec::new();
        for o in &self.outages {
            let Some(reported_at) = o.reported_at(s, now) else { continue };
            out.push(notice(NoticeKind::GatewayOffline, o.from_event, reported_at, o.from_ms));
            if let Some((back, event)) = o.until {
                out.push(notice(NoticeKind::GatewayOnline, event, back, o.from_ms));
            }
        }
        out.retain(|n| n.due_ms <= now && n.due_ms >= now - s.horizon_ms);
        out
    }

    /// When the gateway is deleted if nothing happens before.
    pub fn deadline_ms(&self, s: &Settings) -> i64 {
        ism_time::add_months(self.last_activity_ms, s.retention_months)
    }

    /// The warnings due at `now` (each until the deadline: activity moves the deadline, so a
    /// warning for an old deadline is never sent), and the deletion once the deadline passed.
    /// The deletion stays due after the gateway is gone until it is finished (its notification
    /// sent), unless someone deleted the gateway before its deadline.
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
        let mut out = self.service_notices(s, now);
        if now >= deadline {
            out.push(notice("gateway-retired", NoticeKind::GatewayRetired, deadline));
        } else {
            // Only the latest warning due: a node down across both sends one, not two.
            let mut warnings: Vec<Notice> = Vec::new();
            for before in s.retention_warnings_ms {
                let what = format!("retention-warning-{}d", before / DAY_MS);
                warnings.push(notice(&what, NoticeKind::RetentionWarning, deadline - before));
            }
            warnings.retain(|n| n.due_ms <= now);
            out.extend(warnings.into_iter().max_by_key(|n| n.due_ms));
        }
        out.retain(|n| !self.handled.contains(&n.id));
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
            self.w.closed(Uuid::from_u128(7), at, e, &self.s);
        }
        fn kinds_due(&self, now: i64) -> Vec<(NoticeKind, bool)> {
            self.w
                .due(&self.s, now, &[])
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
        e.w.closed(Uuid::from_u128(7), T0 + 2, Uuid::from_u128(52), &e.s);
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
        assert_eq!(
            kinds(&g.due(&s, T0 + 10 * MIN)),
            vec![NoticeKind::GatewayOffline, NoticeKind::GatewayOnline]
        );
        // Its endpoint lost its session a moment before and came back after: held back.
        let mut e = Endpoint::new();
        e.up(T0);
        e.down(T0 + MIN - 5);
        e.up(T0 + 10 * MIN + 500);
        let due = e.w.due(&e.s, T0 + 11 * MIN, &g.outages);
        assert_eq!(due.len(), 2);
        assert!(
            due.iter().all(|n| n
                .suppressed
                .as_deref()
                .is_some_and(|w| w.contains("gateway was offline"))),
            "{due:?}"
        );
        // A short gateway outage (a restart within the grace) is not reported.
        let (mut quick, _) = gateway();
        quick.went_offline(T0, Uuid::from_u128(62));
        quick.came_online(T0 + 30_000, Uuid::from_u128(63));
        assert!(quick.due(&s, T0 + 60 * MIN).is_empty());
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

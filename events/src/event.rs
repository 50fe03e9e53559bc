//! The facts the system records, in the past tense.
//!
//! Events are encoded with `rmp_serde::to_vec_named` (MessagePack maps keyed by field name), so a
//! field can be added with `#[serde(default)]`, and fields reordered, without breaking old logs.
//! A change that cannot be expressed that way bumps [`SCHEMA_VERSION`] and gets an upcaster in
//! [`crate::codec`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Newest version of the event catalogue this build reads and writes. Each envelope carries the
/// version that introduced its event ([`Event::schema`]), so a node of an older build refuses
/// only the events it cannot read, with "upgrade this node", and keeps reading the rest.
///
/// 1: the first catalogue. 2: `StreamRefusalsRepeated`. 3: `EndpointUnbound`,
/// `EndpointRegistrationRefusalsRepeated`, `ScannerRefused`, `ScannerRefusalsRepeated`.
/// 4: users' email and notification settings, webhooks, notifications. 5: scans.
pub const SCHEMA_VERSION: u16 = 5;

/// Operating system of the machine an endpoint runs on, as chosen in the configure wizard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Windows,
    Other,
}

impl Platform {
    pub fn parse(s: &str) -> Option<Platform> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Some(Platform::Linux),
            "windows" => Some(Platform::Windows),
            "other" => Some(Platform::Other),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Windows => "windows",
            Platform::Other => "other",
        }
    }
}

/// What a user may do. As in the seed, only Administrators and Security Leads manage gateways
/// and endpoints; Reviewers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum UserRole {
    Administrator,
    SecurityLead,
    Reviewer,
}

impl UserRole {
    pub fn parse(s: &str) -> Option<UserRole> {
        match s.to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
            "administrator" | "admin" => Some(UserRole::Administrator),
            "security-lead" => Some(UserRole::SecurityLead),
            "reviewer" | "read-only" => Some(UserRole::Reviewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Administrator => "administrator",
            UserRole::SecurityLead => "security-lead",
            UserRole::Reviewer => "reviewer",
        }
    }

    /// May create, change and delete gateways, endpoints, keys, credentials and access.
    pub fn may_manage(self) -> bool {
        matches!(self, UserRole::Administrator | UserRole::SecurityLead)
    }
}

/// Which endpoint access a scanner credential relies on: scans need *scan access*, support
/// engineers need *support-engineer access* (see the seed's "Manage endpoint access").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    #[default]
    Scan,
    Support,
}

impl CredentialKind {
    pub fn parse(s: &str) -> Option<CredentialKind> {
        match s.to_ascii_lowercase().as_str() {
            "scan" => Some(CredentialKind::Scan),
            "support" => Some(CredentialKind::Support),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Scan => "scan",
            CredentialKind::Support => "support",
        }
    }
}

/// The kinds of aggregate whose state changes are events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregateKind {
    Gateway,
    Endpoint,
    Tunnel,
    User,
    Webhook,
    Notification,
    Scan,
}

impl AggregateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Gateway => "gateway",
            AggregateKind::Endpoint => "endpoint",
            AggregateKind::Tunnel => "tunnel",
            AggregateKind::User => "user",
            AggregateKind::Webhook => "webhook",
            AggregateKind::Notification => "notification",
            AggregateKind::Scan => "scan",
        }
    }
}

/// What a notification is about: the reference product's emails, plus the retention warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// An endpoint's session ended and it did not come back within the grace period.
    EndpointOffline,
    /// An endpoint reconnected after it was reported offline.
    EndpointOnline,
    /// An endpoint went offline and online too often: one notice, then a 24-hour pause.
    EndpointUnstable,
    /// No live node served the gateway for longer than the grace period.
    GatewayOffline,
    /// A node serves the gateway again after it was reported offline.
    GatewayOnline,
    /// The gateway will be deleted for inactivity (14 days and 1 day before).
    RetentionWarning,
    /// The gateway was deleted after four months without scan activity.
    GatewayRetired,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 7] = [
        NoticeKind::EndpointOffline,
        NoticeKind::EndpointOnline,
        NoticeKind::EndpointUnstable,
        NoticeKind::GatewayOffline,
        NoticeKind::GatewayOnline,
        NoticeKind::RetentionWarning,
        NoticeKind::GatewayRetired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::EndpointOffline => "endpoint-offline",
            NoticeKind::EndpointOnline => "endpoint-online",
            NoticeKind::EndpointUnstable => "endpoint-unstable",
            NoticeKind::GatewayOffline => "gateway-offline",
            NoticeKind::GatewayOnline => "gateway-online",
            NoticeKind::RetentionWarning => "retention-warning",
            NoticeKind::GatewayRetired => "gateway-retired",
        }
    }

    pub fn parse(s: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Declares the catalogue once and derives from it:
/// - [`Event`], every event of every aggregate: the stored form (one flat enum, encoded with
///   its variant name, so the bytes in existing logs never change);
/// - one enum per aggregate ([`GatewayEvent`], [`EndpointEvent`], [`TunnelEvent`],
///   [`UserEvent`]) with the same variants, which the aggregates and projections match
///   exhaustively: an event added to an aggregate is a compile error wherever it is not handled;
/// - the conversions between them (at the log boundary), [`AggregateEvent`] (an event as its
///   aggregate's type), [`Event::kind`] and [`Event::name`].
///
/// A tuple variant names its binding (`Variant(binding: Type)`) for the conversions.
macro_rules! catalogue {
    ($(
        $(#[$agg_meta:meta])*
        $kind:ident => $agg:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident
                $( { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? } )?
                $( ( $bind:ident : $inner:ty ) )?
            ),* $(,)?
        }
    )*) => {
        /// Every event of every aggregate, as stored. The aggregate an event belongs to is in
        /// its envelope ([`Event::kind`] says which kind it must be).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Event {
            $($(
                $(#[$vmeta])*
                $variant $( { $( $(#[$fmeta])* $field : $fty ),* } )? $( ( $inner ) )?,
            )*)*
        }

        $(
            $(#[$agg_meta])*
            #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
            pub enum $agg {
                $(
                    $(#[$vmeta])*
                    $variant $( { $( $(#[$fmeta])* $field : $fty ),* } )? $( ( $inner ) )?,
                )*
            }

            impl From<$agg> for Event {
                fn from(e: $agg) -> Event {
                    match e {
                        $( $agg::$variant $( { $($field),* } )? $( ($bind) )?
                            => Event::$variant $( { $($field),* } )? $( ($bind) )?, )*
                    }
                }
            }

            impl TryFrom<Event> for $agg {
                /// The event, given back: it belongs to another kind of aggregate.
                type Error = Event;

                fn try_from(e: Event) -> Result<$agg, Event> {
                    match e {
                        $( Event::$variant $( { $($field),* } )? $( ($bind) )?
                            => Ok($agg::$variant $( { $($field),* } )? $( ($bind) )?), )*
                        #[allow(unreachable_patterns)]
                        other => Err(other),
                    }
                }
            }
        )*

        /// An event as the type of the aggregate it belongs to, for code that handles every kind
        /// (a projection): match on this, then exhaustively on the aggregate's own type.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AggregateEvent {
            $( $kind($agg), )*
        }

        impl From<Event> for AggregateEvent {
            fn from(e: Event) -> AggregateEvent {
                match e {
                    $($( Event::$variant $( { $($field),* } )? $( ($bind) )?
                        => AggregateEvent::$kind($agg::$variant $( { $($field),* } )? $( ($bind) )?), )*)*
                }
            }
        }

        impl Event {
            /// The kind of aggregate this event belongs to.
            #[allow(unused_variables)]
            pub fn kind(&self) -> AggregateKind {
                match self {
                    $($( Event::$variant $( { $($field: _),* } )? $( ($bind) )?
                        => AggregateKind::$kind, )*)*
                }
            }

            /// A short stable name, for logs, audit output and metrics.
            #[allow(unused_variables)]
            pub fn name(&self) -> &'static str {
                match self {
                    $($( Event::$variant $( { $($field: _),* } )? $( ($bind) )?
                        => stringify!($variant), )*)*
                }
            }
        }
    };
}

catalogue! {
    /// What happens to a gateway: its life, its scanner credentials, the roster of its
    /// endpoints' names.
    Gateway => GatewayEvent {
        /// A gateway was created; it is `Initializing` until a node serves it.
        GatewayCreated { name: String, description: String },
        /// A gateway node started serving the gateway: it is online.
        GatewayActivated { node: String },
        /// A credential for scanners (SOCKS5 password) was issued; only its hash is kept.
        ScannerCredentialIssued {
            credential: Uuid,
            label: String,
            secret_hash: String,
            #[serde(default)]
            kind: CredentialKind,
        },
        /// A scanner credential stopped working.
        ScannerCredentialRevoked { credential: Uuid },
        /// An endpoint took a name in this gateway (names are unique per gateway,
        /// case-insensitive).
        EndpointAssigned { endpoint: Uuid, name: String },
        /// An endpoint of this gateway changed its name.
        EndpointAssignmentRenamed { endpoint: Uuid, name: String },
        /// An endpoint left this gateway (it was deleted).
        EndpointReleased { endpoint: Uuid },
        /// The gateway was deleted; its name stays visible among deleted gateways.
        GatewayDeleted { reason: String },
        /// A scanner was turned away before any stream was opened (a wrong secret, a revoked
        /// credential, an unknown endpoint, access off, the endpoint offline, its quota).
        ScannerRefused { scanner: String, endpoint: String, reason: String },
        /// More refusals like a `ScannerRefused` just recorded, counted over a short window
        /// (the endpoints the scanner named are the `targets`).
        ScannerRefusalsRepeated(refusals: RepeatedRefusals),
        /// No live node served the gateway from `since_ms` (every node stopped, drained or was
        /// lost): its endpoints cannot be reached.
        GatewayWentOffline { since_ms: i64, why: String },
        /// A node serves the gateway again.
        GatewayCameOnline { node: String },
    }

    /// What happens to an endpoint: its identity, key, machine binding and access.
    Endpoint => EndpointEvent {
        /// An endpoint was added to a gateway, with the hash of its first key.
        EndpointAdded {
            gateway: Uuid,
            name: String,
            description: String,
            platform: Platform,
            key_generation: u32,
            key_hash: String,
        },
        /// The endpoint's key was used for the first time, binding it to this machine identity.
        EndpointRegistered { machine: String, hostname: String, platform: String, agent_version: String },
        /// A machine other than the bound one presented the key ("Token already registered").
        EndpointRegistrationRefused { machine: String, hostname: String, reason: String },
        /// More refusals like an `EndpointRegistrationRefused` just recorded, of the same
        /// machine, counted over a window instead of recorded one by one, so that an agent
        /// restarted in a loop on that machine cannot fill the log.
        EndpointRegistrationRefusalsRepeated(refusals: RepeatedRegistrationRefusals),
        /// A manager released the key's binding to `machine`: the next machine that presents the
        /// key binds it, and the bound machine's running session ends. Who released it is the
        /// envelope's actor.
        EndpointUnbound { machine: String },
        /// The endpoint's name or description changed.
        EndpointEdited { name: String, description: String },
        /// A new key replaced the old one, which stops working at once.
        EndpointKeyRotated { key_generation: u32, key_hash: String },
        /// Scan access was turned on or off (off terminates the scans and streams in progress).
        ScanAccessChanged { enabled: bool },
        /// How many scans of the built-in engine the endpoint runs at once (`None`: the
        /// gateway's default, `--scan-capacity`).
        ScanCapacitySet { capacity: Option<u32> },
        /// Support-engineer access was granted until `until_ms` (`None`: indefinitely).
        SupportAccessGranted { until_ms: Option<i64> },
        /// Support-engineer access was withdrawn.
        SupportAccessRevoked,
        /// A support-engineer access window ran out.
        SupportAccessExpired,
        /// The endpoint was deleted: its tunnel is closed and its key stops working.
        EndpointDeleted,
    }

    /// What happens to a user of the management API.
    User => UserEvent {
        /// A user of the management API.
        UserCreated { name: String, role: UserRole },
        UserRoleChanged { role: UserRole },
        /// An API token for the user; only its hash is kept.
        ApiTokenIssued { token: Uuid, label: String, token_hash: String },
        ApiTokenRevoked { token: Uuid },
        /// The address notifications are sent to (`None`: no email for this user).
        UserEmailChanged { email: Option<String> },
        /// The user opted in to (or out of) notifications; without this event Security Leads
        /// receive them and Administrators do not.
        UserNotificationsChanged { enabled: bool },
    }

    /// A subscription to notifications by HTTP POST, signed with its secret.
    Webhook => WebhookEvent {
        /// `secret_sealed` is the signing secret encrypted under the cluster's key secret, so
        /// the log never holds it in the clear; `events` are notice kinds (empty: all).
        WebhookAdded { url: String, secret_sealed: String, events: Vec<NoticeKind> },
        WebhookRemoved,
    }

    /// One notification, under an id derived from what it is about, so that every node that
    /// derives it names the same aggregate and exactly one claim wins.
    Notification => NotificationEvent {
        /// A node took the notification on; it is the sender until `lease_until_ms`, after which
        /// another node may claim it again (the first died before it finished).
        NotificationClaimed {
            kind: NoticeKind,
            /// The endpoint or gateway it is about.
            subject: Uuid,
            node: String,
            lease_until_ms: i64,
            /// Where it is to be delivered (`email`, `webhook:<id>`): it is done once each has
            /// a `NotificationSent`.
            #[serde(default)]
            channels: Vec<String>,
        },
        /// Delivered on one channel (`email`, `webhook:<id>`); `message_id` is the same for every
        /// attempt, so a receiver can drop a duplicate.
        NotificationSent {
            channel: String,
            recipients: Vec<String>,
            kind: NoticeKind,
            subject: String,
            message_id: String,
        },
        /// One delivery attempt failed; it is retried with backoff, unless `gave_up` (the
        /// channel counts as done, undelivered).
        NotificationFailed {
            channel: String,
            error: String,
            attempt: u32,
            #[serde(default)]
            gave_up: bool,
        },
        /// Not sent, and why (the endpoint's notifications are paused, nobody to tell).
        NotificationSuppressed {
            kind: NoticeKind,
            why: String,
            /// The endpoint or gateway it is about (a suppression may be the first event).
            #[serde(default)]
            subject: Uuid,
        },
        /// Every notification about `endpoint` is held back until `until_ms` (it was unstable).
        NotificationsPaused { endpoint: Uuid, until_ms: i64 },
        /// The pause recorded in this notification is over.
        NotificationsResumed { endpoint: Uuid },
    }

    /// One scan of an endpoint's internal targets by the built-in engine, run by the node
    /// holding the endpoint's session, at most the endpoint's scan capacity at once.
    Scan => ScanEvent {
        /// A scan was asked for; it waits in its endpoint's queue (first in, first out) until
        /// a slot is free. `again_of`: the scan it repeats (`ism scan start --again`).
        ScanQueued {
            endpoint: Uuid,
            gateway: Uuid,
            settings: ScanSettings,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            again_of: Option<Uuid>,
        },
        /// `node` began running the scan.
        ScanStarted { node: String },
        /// How far the scan got: totals so far, and the findings new since the last progress
        /// (the report is every progress's findings together).
        ScanProgressed { pages: u32, requests: u32, findings: Vec<ScanFinding> },
        /// The scan ran to its end (totals, and the findings not yet recorded).
        ScanFinished { pages: u32, requests: u32, findings: Vec<ScanFinding> },
        /// The scan could not go on (its endpoint or gateway went offline, its node stopped):
        /// it must be started again.
        ScanFailed { reason: String },
        /// The scan was stopped before its end, by `by` (a user, or the scan access turned off).
        ScanCancelled { by: String, reason: String },
    }

    /// What happens in one endpoint session on one gateway node.
    Tunnel => TunnelEvent {
        /// An endpoint's WebSocket session was established on a gateway node.
        TunnelOpened {
            endpoint: Uuid,
            gateway: Uuid,
            node: String,
            machine: String,
            remote_addr: String,
            agent_version: String,
        },
        /// A scanner stream went through the tunnel to `target`.
        StreamOpened {
            stream: u32,
            target: String,
            scanner: String,
            /// The gateway node the scanner came to, when it is not the one holding the
            /// endpoint (the stream was relayed from it).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            via: Option<String>,
        },
        /// A scanner stream was refused (by the endpoint's allowlist, a failed dial, capacity).
        StreamRefused { target: String, scanner: String, reason: String },
        /// More refusals like a `StreamRefused` just recorded, counted over a short window
        /// instead of recorded one by one, so that a scanner opening in a loop cannot fill the
        /// log.
        StreamRefusalsRepeated(refusals: RepeatedRefusals),
        /// A scanner stream ended.
        StreamClosed { stream: u32, sent: u64, received: u64, end: String },
        /// The session ended.
        TunnelClosed { reason: String },
    }
}

/// What a scan fetches and how gently: the settings it was queued with, kept for a restart
/// (`ism scan start --again`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSettings {
    /// The URLs the crawl starts from; it stays within their origins.
    pub targets: Vec<String>,
    pub max_pages: u32,
    pub max_depth: u32,
    /// At most this many requests a second.
    pub rate: u32,
}

/// One problem a scan found in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFinding {
    /// The rule's stable id (`missing-csp`, `tls-self-signed`, ...).
    pub rule: String,
    /// `info`, `low`, `medium` or `high`.
    pub severity: String,
    pub url: String,
    /// A short excerpt of what was seen (escaped wherever it is shown).
    pub evidence: String,
}

/// Refusals of one kind (same scanner, same `reason` class) counted over one window. Encoded
/// like the fields of a struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatedRefusals {
    pub scanner: String,
    pub reason: String,
    pub count: u64,
    /// The first distinct targets, at most a few dozen.
    pub targets: Vec<String>,
    /// Refusals to targets not listed in `targets`.
    pub other_targets: u64,
    /// When the first and the last of them happened.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Refused registrations of one machine for one endpoint, counted over one window. Encoded like
/// the fields of a struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatedRegistrationRefusals {
    pub machine: String,
    pub reason: String,
    pub count: u64,
    /// The first distinct host names the machine gave, at most a few dozen (one, unless its
    /// identity was copied to other hosts).
    pub hostnames: Vec<String>,
    /// Refusals under host names not listed in `hostnames`.
    pub other_hostnames: u64,
    /// When the first and the last of them happened.
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Event {
    /// The catalogue version that introduced this event: what its envelope is written with.
    pub fn schema(&self) -> u16 {
        match self {
            Event::StreamRefusalsRepeated(_) => 2,
            Event::EndpointRegistrationRefusalsRepeated(_)
            | Event::EndpointUnbound { .. }
            | Event::ScannerRefused { .. }
            | Event::ScannerRefusalsRepeated(_) => 3,
            Event::UserEmailChanged { .. }
            | Event::GatewayWentOffline { .. }
            | Event::GatewayCameOnline { .. }
            | Event::UserNotificationsChanged { .. }
            | Event::WebhookAdded { .. }
            | Event::WebhookRemoved
            | Event::NotificationClaimed { .. }
            | Event::NotificationSent { .. }
            | Event::NotificationFailed { .. }
            | Event::NotificationSuppressed { .. }
            | Event::NotificationsPaused { .. }
            | Event::NotificationsResumed { .. } => 4,
            Event::ScanCapacitySet { .. }
            | Event::ScanQueued { .. }
            | Event::ScanStarted { .. }
            | Event::ScanProgressed { .. }
            | Event::ScanFinished { .. }
            | Event::ScanFailed { .. }
            | Event::ScanCancelled { .. } => 5,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Event> {
        let id = Uuid::from_u128(7);
        vec![
            Event::GatewayCreated { name: "g".into(), description: String::new() },
            Event::ScannerCredentialRevoked { credential: id },
            Event::EndpointDeleted,
            Event::SupportAccessGranted { until_ms: Some(5) },
            Event::UserRoleChanged { role: UserRole::Reviewer },
            Event::StreamRefusalsRepeated(RepeatedRefusals {
                scanner: "s".into(),
                reason: "r".into(),
                count: 2,
                targets: vec!["t".into()],
                other_targets: 0,
                first_ms: 1,
                last_ms: 2,
            }),
            Event::TunnelClosed { reason: "r".into() },
            Event::EndpointRegistrationRefusalsRepeated(RepeatedRegistrationRefusals {
                machine: "m".into(),
                reason: "r".into(),
                count: 3,
                hostnames: vec!["h".into()],
                other_hostnames: 0,
                first_ms: 1,
                last_ms: 2,
            }),
            Event::EndpointUnbound { machine: "m".into() },
            Event::UserEmailChanged { email: Some("a@example.test".into()) },
            Event::WebhookRemoved,
            Event::NotificationsResumed { endpoint: id },
            Event::ScanFailed { reason: "r".into() },
        ]
    }

    #[test]
    fn each_event_converts_to_its_own_aggregate_type_only_and_back() {
        for e in one_of_each() {
            let as_gateway = GatewayEvent::try_from(e.clone()).ok().map(Event::from);
            let as_endpoint = EndpointEvent::try_from(e.clone()).ok().map(Event::from);
            let as_tunnel = TunnelEvent::try_from(e.clone()).ok().map(Event::from);
            let as_user = UserEvent::try_from(e.clone()).ok().map(Event::from);
            let as_webhook = WebhookEvent::try_from(e.clone()).ok().map(Event::from);
            let as_notification = NotificationEvent::try_from(e.clone()).ok().map(Event::from);
            let as_scan = ScanEvent::try_from(e.clone()).ok().map(Event::from);
            let back = match e.kind() {
                AggregateKind::Gateway => &as_gateway,
                AggregateKind::Endpoint => &as_endpoint,
                AggregateKind::Tunnel => &as_tunnel,
                AggregateKind::User => &as_user,
                AggregateKind::Webhook => &as_webhook,
                AggregateKind::Notification => &as_notification,
                AggregateKind::Scan => &as_scan,
            };
            assert_eq!(back.as_ref(), Some(&e), "{e:?} round-trips through its aggregate type");
            let converted = [
                &as_gateway,
                &as_endpoint,
                &as_tunnel,
                &as_user,
                &as_webhook,
                &as_notification,
                &as_scan,
            ];
            assert_eq!(converted.iter().filter(|c| c.is_some()).count(), 1, "{e:?}");
        }
    }

    #[test]
    fn an_event_encodes_alike_in_either_form_under_its_name() {
        for e in one_of_each() {
            let stored = rmp_serde::to_vec_named(&e).unwrap();
            let typed = match e.kind() {
                AggregateKind::Gateway => {
                    rmp_serde::to_vec_named(&GatewayEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::Endpoint => {
                    rmp_serde::to_vec_named(&EndpointEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::Tunnel => {
                    rmp_serde::to_vec_named(&TunnelEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::User => {
                    rmp_serde::to_vec_named(&UserEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::Webhook => {
                    rmp_serde::to_vec_named(&WebhookEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::Notification => {
                    rmp_serde::to_vec_named(&NotificationEvent::try_from(e.clone()).unwrap())
                }
                AggregateKind::Scan => {
                    rmp_serde::to_vec_named(&ScanEvent::try_from(e.clone()).unwrap())
                }
            };
            assert_eq!(typed.unwrap(), stored, "{e:?}");
            assert!(String::from_utf8_lossy(&stored).contains(e.name()), "stored as {}", e.name());
        }
    }
}

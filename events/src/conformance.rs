//! The behaviour every event-log backend must have. Each check takes a fresh, empty log and
//! panics with a message on any deviation; `tests/tests/event_log_conformance.rs` runs all of
//! them against the embedded log and against JetStream on a real `nats-server`.
//!
//! A test suite: a failed check panics (hence `unwrap` is allowed here).
#![allow(clippy::unwrap_used)]

use crate::envelope::{AggregateId, Cause, Envelope};
use crate::event::Event;
use crate::log::{AppendError, EventLog};
use futures_util::StreamExt;
use std::time::Duration;
use uuid::Uuid;

/// The checks, by name, for generating one test per check and backend.
pub const CHECKS: &[&str] = &[
    "append_and_read_back_in_order",
    "stale_expected_version_conflicts",
    "first_event_must_be_version_one",
    "concurrent_appends_one_wins",
    "aggregates_are_isolated",
    "subscribe_replays_then_tails",
    "subscribe_from_position_skips_earlier",
    "envelope_fields_survive",
    "version_is_the_aggregate_head",
    "batches_append_in_order_or_not_at_all",
    "many_appends_in_flight_all_complete",
];

/// Runs the check called `name`.
pub async fn run(name: &str, log: &dyn EventLog) {
    match name {
        "append_and_read_back_in_order" => append_and_read_back_in_order(log).await,
        "stale_expected_version_conflicts" => stale_expected_version_conflicts(log).await,
        "first_event_must_be_version_one" => first_event_must_be_version_one(log).await,
        "concurrent_appends_one_wins" => concurrent_appends_one_wins(log).await,
        "aggregates_are_isolated" => aggregates_are_isolated(log).await,
        "subscribe_replays_then_tails" => subscribe_replays_then_tails(log).await,
        "subscribe_from_position_skips_earlier" => subscribe_from_position_skips_earlier(log).await,
        "envelope_fields_survive" => envelope_fields_survive(log).await,
        "version_is_the_aggregate_head" => version_is_the_aggregate_head(log).await,
        "batches_append_in_order_or_not_at_all" => batches_append_in_order_or_not_at_all(log).await,
        "many_appends_in_flight_all_complete" => many_appends_in_flight_all_complete(log).await,
        other => panic!("no conformance check named {other}"),
    }
}

fn node_event(i: u64) -> Event {
    Event::GatewayActivated { node: format!("node-{i}") }
}

fn env(agg: AggregateId, seq: u64) -> Envelope {
    Envelope::new(agg, seq, 1_000 + seq as i64, Cause::default(), node_event(seq))
}

async fn append_and_read_back_in_order(log: &dyn EventLog) {
    let agg = AggregateId::gateway(Uuid::new_v4());
    let mut positions = Vec::new();
    for seq in 1..=5 {
        positions.push(log.append(&env(agg, seq)).await.expect("append"));
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions must increase: {positions:?}");
    let read = log.read_aggregate(&agg).await.unwrap();
    assert_eq!(read.iter().map(|r| r.envelope.sequence).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(read.iter().map(|r| r.position).collect::<Vec<_>>(), positions);
    assert_eq!(read[2].envelope.event, node_event(3));
    assert_eq!(log.head().await.unwrap(), *positions.last().unwrap());
}

async fn stale_expected_version_conflicts(log: &dyn EventLog) {
    let agg = AggregateId::endpoint(Uuid::new_v4());
    log.append(&env(agg, 1)).await.unwrap();
    log.append(&env(agg, 2)).await.unwrap();
    match log.append(&env(agg, 2)).await {
        Err(AppendError::Conflict { expected: 1, actual: 2, .. }) => {}
        other => panic!("expected a conflict at version 2, got {other:?}"),
    }
    match log.append(&env(agg, 5)).await {
        Err(AppendError::Conflict { expected: 4, actual: 2, .. }) => {}
        other => panic!("expected a conflict for a version from the future, got {other:?}"),
    }
    // The retry with the right version succeeds, and nothing was half-applied.
    log.append(&env(agg, 3)).await.unwrap();
    assert_eq!(log.read_aggregate(&agg).await.unwrap().len(), 3);
}

async fn first_event_must_be_version_one(log: &dyn EventLog) {
    let agg = AggregateId::tunnel(Uuid::new_v4());
    assert!(matches!(log.append(&env(agg, 2)).await, Err(AppendError::Conflict { actual: 0, .. })));
    assert!(log.read_aggregate(&agg).await.unwrap().is_empty());
    assert_eq!(log.head().await.unwrap(), 0, "a refused append must not move the head");
}

async fn concurrent_appends_one_wins(log: &dyn EventLog) {
    let agg = AggregateId::gateway(Uuid::new_v4());
    // Two writers both believe the aggregate is new.
    let (e1, e2) = (env(agg, 1), env(agg, 1));
    let (a, b) = tokio::join!(log.append(&e1), log.append(&e2));
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(wins, 1, "exactly one of two racing creates may win: {a:?} / {b:?}");
    // Same race on an existing aggregate.
    let (e1, e2) = (env(agg, 2), env(agg, 2));
    let (a, b) = tokio::join!(log.append(&e1), log.append(&e2));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|x| **x).count(), 1, "{a:?} / {b:?}");
    assert_eq!(log.read_aggregate(&agg).await.unwrap().len(), 2);
}

async fn aggregates_are_isolated(log: &dyn EventLog) {
    let a = AggregateId::gateway(Uuid::new_v4());
    let b = AggregateId::endpoint(Uuid::new_v4());
    log.append(&env(a, 1)).await.unwrap();
    log.append(&env(b, 1)).await.unwrap();
    log.append(&env(a, 2)).await.unwrap();
    let read = log.read_aggregate(&a).await.unwrap();
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|r| r.envelope.aggregate == a));
    assert!(log.read_aggregate(&AggregateId::tunnel(Uuid::new_v4())).await.unwrap().is_empty());
}

async fn subscribe_replays_then_tails(log: &dyn EventLog) {
    let agg = AggregateId::gateway(Uuid::new_v4());
    for seq in 1..=3 {
        log.append(&env(agg, seq)).await.unwrap();
    }
    let mut sub = log.subscribe(0).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let rec = next(&mut sub).await;
        seen.push(rec.envelope.sequence);
    }
    assert_eq!(seen, vec![1, 2, 3]);
    // Live: an append after subscribing arrives too.
    let pos = log.append(&env(agg, 4)).await.unwrap();
    let rec = next(&mut sub).await;
    assert_eq!((rec.position, rec.envelope.sequence), (pos, 4));
}

async fn subscribe_from_position_skips_earlier(log: &dyn EventLog) {
    let agg = AggregateId::endpoint(Uuid::new_v4());
    let p1 = log.append(&env(agg, 1)).await.unwrap();
    let p2 = log.append(&env(agg, 2)).await.unwrap();
    let mut sub = log.subscribe(p1).await.unwrap();
    let rec = next(&mut sub).await;
    assert_eq!(rec.position, p2, "subscribing after p1 must start at p2");
}

async fn envelope_fields_survive(log: &dyn EventLog) {
    let agg = AggregateId::endpoint(Uuid::new_v4());
    let cause = Cause {
        causation: Some(Uuid::new_v4()),
        trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        principal: Some(crate::Principal::user("alice")),
    };
    let e = Envelope::new(
        agg,
        1,
        1_763_900_000_123,
        cause,
        Event::EndpointRegistrationRefused {
            machine: "ab12".into(),
            hostname: "h\u{e9}te".into(),
            reason: "Token already registered".into(),
        },
    );
    let pos = log.append(&e).await.unwrap();
    let read = log.read_aggregate(&agg).await.unwrap();
    assert_eq!(read[0].position, pos);
    assert_eq!(read[0].envelope, e);
}

async fn version_is_the_aggregate_head(log: &dyn EventLog) {
    let (a, b) = (AggregateId::gateway(Uuid::new_v4()), AggregateId::endpoint(Uuid::new_v4()));
    assert_eq!(log.version(&a).await.unwrap(), 0);
    log.append(&env(a, 1)).await.unwrap();
    log.append(&env(b, 1)).await.unwrap();
    log.append(&env(a, 2)).await.unwrap();
    assert_eq!((log.version(&a).await.unwrap(), log.version(&b).await.unwrap()), (2, 1));
}

async fn batches_append_in_order_or_not_at_all(log: &dyn EventLog) {
    let agg = AggregateId::tunnel(Uuid::new_v4());
    log.append(&env(agg, 1)).await.unwrap();
    let batch: Vec<Envelope> = (2..=6).map(|s| env(agg, s)).collect();
    let positions = log.append_batch(&batch).await.unwrap();
    assert_eq!(positions.len(), 5);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let read = log.read_aggregate(&agg).await.unwrap();
    assert_eq!(
        read.iter().map(|r| r.envelope.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    // A batch based on an outdated version is refused whole.
    let stale: Vec<Envelope> = (6..=8).map(|s| env(agg, s)).collect();
    assert!(matches!(
        log.append_batch(&stale).await,
        Err(AppendError::Conflict { expected: 5, actual: 6, .. })
    ));
    assert_eq!(log.version(&agg).await.unwrap(), 6);
    assert!(log.append_batch(&[]).await.unwrap().is_empty());
}

/// Hundreds of appends in flight at once (a fleet of endpoints reconnecting after a gateway
/// restart) all complete, each exactly once, with reads answered in between. sled 0.34 deadlocks
/// here when each append runs its own `flush_async` (spacejam/sled#1308).
async fn many_appends_in_flight_all_complete(log: &dyn EventLog) {
    let aggregates: Vec<AggregateId> =
        (0..300).map(|_| AggregateId::endpoint(Uuid::new_v4())).collect();
    let appends = aggregates.iter().map(|agg| async move {
        for seq in 1..=4 {
            log.append(&env(*agg, seq)).await.unwrap();
            assert_eq!(log.version(agg).await.unwrap(), seq);
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(appends))
        .await
        .expect("appends in flight stalled for 60 s");
    for agg in &aggregates {
        assert_eq!(log.read_aggregate(agg).await.unwrap().len(), 4);
    }
}

async fn next(sub: &mut crate::log::EventStream) -> crate::envelope::Recorded {
    tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("no event within 60 s")
        .expect("subscription ended")
        .expect("subscription error")
}

//! The one event-log conformance suite, run against both backends: the embedded sled log and
//! NATS JetStream on a real `nats-server` started for the test.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::conformance;
use ism_events::embedded::EmbeddedLog;
use ism_events::jetstream::JetStreamLog;
use ism_tests::nats::NatsServer;

async fn embedded(check: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path()).unwrap();
    conformance::run(check, &log).await;
}

async fn jetstream(check: &str) {
    let server = NatsServer::start();
    let log = JetStreamLog::connect(server.url()).await.unwrap();
    conformance::run(check, &log).await;
}

macro_rules! both_backends {
    ($($check:ident),* $(,)?) => {
        mod embedded_log { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $check() { super::embedded(stringify!($check)).await } )* }
        mod jetstream_log { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $check() { super::jetstream(stringify!($check)).await } )* }
        #[test]
        fn every_conformance_check_is_run() {
            let listed: Vec<&str> = vec![$(stringify!($check)),*];
            assert_eq!(listed, conformance::CHECKS);
        }
    };
}

both_backends!(
    append_and_read_back_in_order,
    stale_expected_version_conflicts,
    first_event_must_be_version_one,
    concurrent_appends_one_wins,
    aggregates_are_isolated,
    subscribe_replays_then_tails,
    subscribe_from_position_skips_earlier,
    envelope_fields_survive,
    version_is_the_aggregate_head,
    batches_append_in_order_or_not_at_all,
    many_appends_in_flight_all_complete,
);

/// Events written by one JetStreamLog survive a server restart (same store dir), as a cluster's
/// audit log must.
#[tokio::test]
async fn jetstream_events_survive_a_server_restart() {
    use ism_events::{AggregateId, Cause, Envelope, Event, EventLog};
    let server = NatsServer::start();
    let agg = AggregateId::gateway(uuid::Uuid::new_v4());
    {
        let log = JetStreamLog::connect(server.url()).await.unwrap();
        log.append(&Envelope::new(
            agg,
            1,
            0,
            Cause::default(),
            Event::GatewayActivated { node: "a".into() },
        ))
        .await
        .unwrap();
    }
    let restarted = server.restart();
    let log = JetStreamLog::connect(restarted.url()).await.unwrap();
    assert_eq!(log.read_aggregate(&agg).await.unwrap().len(), 1);
}

/// The embedded log keeps its events across a reopen of the same directory.
#[tokio::test]
async fn embedded_events_survive_a_reopen() {
    use ism_events::{AggregateId, Cause, Envelope, Event, EventLog};
    let dir = tempfile::tempdir().unwrap();
    let agg = AggregateId::gateway(uuid::Uuid::new_v4());
    {
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.append(&Envelope::new(
            agg,
            1,
            0,
            Cause::default(),
            Event::GatewayActivated { node: "a".into() },
        ))
        .await
        .unwrap();
    }
    let log = EmbeddedLog::open(dir.path()).unwrap();
    assert_eq!(log.read_aggregate(&agg).await.unwrap().len(), 1);
    assert_eq!(log.head().await.unwrap(), 1);
}

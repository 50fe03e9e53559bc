//! NATS servers that ask clients for credentials: the event log and the cluster's coordination
//! connect with the user and password their URLs carry, and never show the password.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::jetstream::JetStreamLog;
use ism_events::{AggregateId, Cause, Envelope, Event, EventLog};
use ism_tests::nats::NatsServer;

#[tokio::test]
async fn the_event_log_connects_with_the_credentials_its_url_carries_and_never_shows_them() {
    let server = NatsServer::start_requiring("ism", "s3cret-0123456789");
    let url = server.url().replacen("nats://", "nats://ism:s3cret-0123456789@", 1);
    let log = JetStreamLog::connect(&url).await.unwrap();
    let gateway = AggregateId::gateway(uuid::Uuid::new_v4());
    let activated = Event::GatewayActivated { node: "a".into() };
    log.append(&Envelope::new(gateway, 1, 0, Cause::default(), activated)).await.unwrap();
    assert_eq!(log.read_aggregate(&gateway).await.unwrap().len(), 1);
    let shown = log.describe();
    assert!(shown.contains("***@127.0.0.1") && !shown.contains("s3cret"), "{shown}");
    let coordination =
        ism_cluster::nats::NatsCoordination::connect(&url, 1, std::time::Duration::from_secs(30))
            .await
            .expect("the cluster's buckets too");
    let shown = ism_cluster::Coordination::describe(&coordination);
    assert!(shown.contains("***@127.0.0.1") && !shown.contains("s3cret"), "{shown}");
}

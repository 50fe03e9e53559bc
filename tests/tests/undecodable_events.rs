//! A record of the JetStream log that does not decode (garbage published on an event subject, an
//! event of a newer build during a rolling upgrade) is passed over by projections, which go on
//! with the events after it; the stream keeps it, and the audit shows it.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::jetstream::JetStreamLog;
use ism_events::projection::testing::Positions;
use ism_events::{spawn_projection, AggregateId, Cause, Envelope, Event, EventLog};
use ism_tests::cluster::{eventually, PATIENCE};
use ism_tests::nats::NatsServer;
use std::sync::Arc;

async fn append_one(log: &JetStreamLog) -> u64 {
    let gateway = AggregateId::gateway(uuid::Uuid::new_v4());
    let activated = Event::GatewayActivated { node: "a".into() };
    log.append(&Envelope::new(gateway, 1, 0, Cause::default(), activated)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_passes_over_garbage_published_on_the_event_stream() {
    let server = NatsServer::start();
    let log = Arc::new(JetStreamLog::connect(server.url()).await.unwrap());
    assert_eq!(append_one(&log).await, 1);
    let client = server.client().await;
    let subject = format!("ism.ev.{}", AggregateId::gateway(uuid::Uuid::new_v4()));
    client.publish(subject, b"\xc1 not an event".to_vec().into()).await.unwrap();
    client.flush().await.unwrap();
    eventually("the garbage stored at position 2", || async {
        (log.head().await.ok()? >= 2).then_some(())
    })
    .await;
    assert_eq!(append_one(&log).await, 3);

    let projection = Arc::new(Positions::default());
    let progress = spawn_projection(log.clone(), projection.clone()).unwrap();
    let reached = progress.wait_for(3, PATIENCE).await;
    assert!(reached.is_ok(), "{reached:?}");
    assert_eq!(projection.applied(), [1, 3]);
    assert_eq!(progress.undecodable(), 1);
    // Events appended later reach it as well: the feed went on past the garbage.
    let later = append_one(&log).await;
    assert!(progress.wait_for(later, PATIENCE).await.is_ok());
    assert_eq!(projection.applied(), [1, 3, later]);

    // The audit of the history shows the record it could not read, and goes on after it.
    let page = ism_projectors::audit::Page::default();
    let (_, entries) =
        ism_projectors::audit::entries(log.clone(), Default::default(), page).await.unwrap();
    let shown: Vec<(u64, &str)> = futures_util::StreamExt::collect::<Vec<_>>(entries)
        .await
        .into_iter()
        .map(|e| e.map(|e| (e.position, e.event)).unwrap())
        .collect();
    assert_eq!(
        shown,
        [
            (1, "GatewayActivated"),
            (2, "Undecodable"),
            (3, "GatewayActivated"),
            (4, "GatewayActivated")
        ]
    );
}

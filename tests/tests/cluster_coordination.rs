//! The one coordination conformance suite (membership and endpoint ownership), run against both
//! backends: in process (a single node) and NATS KV on a real `nats-server` started for the test.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use futures_util::StreamExt;
use ism_cluster::conformance;
use ism_cluster::in_process::InProcess;
use ism_cluster::nats::NatsCoordination;
use ism_cluster::Coordination;
use ism_tests::nats::NatsServer;
use std::time::Duration;

async fn in_process(check: &str) {
    conformance::run(check, &InProcess::default()).await;
}

async fn nats_kv(check: &str) {
    let server = NatsServer::start();
    let c = NatsCoordination::connect(server.url(), 1, Duration::from_secs(30)).await.unwrap();
    conformance::run(check, &c).await;
}

macro_rules! both_backends {
    ($($check:ident),* $(,)?) => {
        mod in_process_coordination { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $check() { super::in_process(stringify!($check)).await } )* }
        mod nats_coordination { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $check() { super::nats_kv(stringify!($check)).await } )* }
        #[test]
        fn every_conformance_check_is_run() {
            let listed: Vec<&str> = vec![$(stringify!($check)),*];
            assert_eq!(listed, conformance::CHECKS);
        }
    };
}

both_backends!(
    nodes_announce_and_withdraw,
    a_node_heartbeating_is_always_listed,
    the_newest_claim_wins_and_names_what_it_replaced,
    a_release_lets_go_only_of_the_releasers_own_claim,
    racing_claims_leave_exactly_one_owner,
    owner_changes_are_watched,
    drain_requests_stand_until_withdrawn,
);

/// An owner's record this version cannot read (another version's, or damaged) names no owner to
/// its readers (one, the whole list, the feed), which would otherwise stop at it (a lost node's
/// sessions never recorded; the feed followed again and again from the same record), and it is
/// claimed over: a claim that failed on it would end the endpoint's every session (the gateway
/// ends a session whose claim fails), so the endpoint could never connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_record_that_cannot_be_read_names_no_owner_and_is_claimed_over() {
    let server = NatsServer::start();
    let c = NatsCoordination::connect(server.url(), 1, Duration::from_secs(30)).await.unwrap();
    let (endpoint, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let other_owner = ism_cluster::Owner { node: "node-b".into(), tunnel: uuid::Uuid::new_v4() };
    c.claim(other, &other_owner).await.unwrap();
    let js = async_nats::jetstream::new(server.client().await);
    let owners = js.get_key_value(ism_cluster::nats::OWNERS_BUCKET).await.unwrap();
    owners.put(endpoint.simple().to_string(), "not an owner".into()).await.unwrap();
    assert_eq!(c.owner(endpoint).await.unwrap(), None, "an unreadable record names no owner");

    assert_eq!(c.owners().await.unwrap(), vec![(other, other_owner.clone())]);
    let mut feed = c.watch_owners().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let change = tokio::time::timeout(ism_tests::cluster::PATIENCE, feed.next()).await;
        let change = change.expect("the feed goes on").expect("the feed is open").unwrap();
        seen.push((change.endpoint, change.owner));
    }
    seen.sort_by_key(|(endpoint, _)| *endpoint != other);
    assert_eq!(seen, vec![(other, Some(other_owner)), (endpoint, None)]);

    let owner = ism_cluster::Owner { node: "node-a".into(), tunnel: uuid::Uuid::new_v4() };
    let claimed = c.claim(endpoint, &owner).await.unwrap();
    assert_eq!(claimed.previous, None, "an unreadable record names no session");
    assert_eq!(c.owner(endpoint).await.unwrap(), Some(owner));
}

//! The behaviour every coordination backend must have. Each check takes a fresh backend and
//! panics on any deviation; `tests/tests/cluster_coordination.rs` runs them in process and on a
//! real `nats-server`.
//!
//! A test suite: a failed check panics (hence `unwrap` is allowed here).
#![allow(clippy::unwrap_used)]

use crate::coordination::{Coordination, NodeAnnouncement, NodeRole, Owner, OwnerChange};
use futures_util::StreamExt;
use std::time::Duration;
use uuid::Uuid;

/// The checks, by name, for generating one test per check and backend.
pub const CHECKS: &[&str] = &[
    "nodes_announce_and_withdraw",
    "a_node_heartbeating_is_always_listed",
    "the_newest_claim_wins_and_names_what_it_replaced",
    "a_release_lets_go_only_of_the_releasers_own_claim",
    "racing_claims_leave_exactly_one_owner",
    "owner_changes_are_watched",
    "drain_requests_stand_until_withdrawn",
];

/// Runs the check called `name` against `c`.
pub async fn run(name: &str, c: &dyn Coordination) {
    match name {
        "nodes_announce_and_withdraw" => nodes_announce_and_withdraw(c).await,
        "a_node_heartbeating_is_always_listed" => heartbeating_nodes_are_listed(c).await,
        "the_newest_claim_wins_and_names_what_it_replaced" => newest_claim_wins(c).await,
        "a_release_lets_go_only_of_the_releasers_own_claim" => release_is_conditional(c).await,
        "racing_claims_leave_exactly_one_owner" => racing_claims(c).await,
        "owner_changes_are_watched" => owner_changes_are_watched(c).await,
        "drain_requests_stand_until_withdrawn" => drain_requests(c).await,
        other => panic!("no such check: {other}"),
    }
}

fn announcement(node: &str, beat: u64) -> NodeAnnouncement {
    NodeAnnouncement {
        node: node.into(),
        relay: "127.0.0.1:9".parse().unwrap(),
        role: NodeRole::Serving,
        beat,
        sessions: 0,
        streams: 0,
        emails: false,
        protocol: 2,
    }
}

fn owner(node: &str) -> Owner {
    Owner { node: node.into(), tunnel: Uuid::new_v4() }
}

async fn nodes_announce_and_withdraw(c: &dyn Coordination) {
    c.announce(&announcement("node-a", 1)).await.unwrap();
    c.announce(&announcement("node-b", 1)).await.unwrap();
    c.announce(&announcement("node-a", 2)).await.unwrap();
    let mut nodes = c.nodes().await.unwrap();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(nodes, vec![announcement("node-a", 2), announcement("node-b", 1)]);
    c.withdraw("node-a").await.unwrap();
    assert_eq!(c.nodes().await.unwrap(), vec![announcement("node-b", 1)]);
}

/// Listing the nodes while they announce themselves (every node does, four times a second in the
/// tests' clusters) leaves none out: a list missing a live node made a draining node believe no
/// other could take its endpoints.
async fn heartbeating_nodes_are_listed(c: &dyn Coordination) {
    c.announce(&announcement("node-a", 1)).await.unwrap();
    c.announce(&announcement("node-b", 1)).await.unwrap();
    let beating = async {
        for beat in 2..400 {
            c.announce(&announcement("node-b", beat)).await.unwrap();
        }
    };
    let listing = async {
        for _ in 0..100 {
            let mut names: Vec<String> =
                c.nodes().await.unwrap().into_iter().map(|n| n.node).collect();
            names.sort();
            assert_eq!(names, ["node-a", "node-b"], "a node left out of the list");
            tokio::task::yield_now().await;
        }
    };
    futures_util::future::join(beating, listing).await;
}

async fn newest_claim_wins(c: &dyn Coordination) {
    let endpoint = Uuid::new_v4();
    let (first, second) = (owner("node-a"), owner("node-b"));
    assert_eq!(c.claim(endpoint, &first).await.unwrap().previous, None);
    assert_eq!(c.claim(endpoint, &second).await.unwrap().previous, Some(first));
    assert_eq!(c.owner(endpoint).await.unwrap(), Some(second.clone()));
    assert_eq!(c.owners().await.unwrap(), vec![(endpoint, second)]);
}

async fn release_is_conditional(c: &dyn Coordination) {
    let endpoint = Uuid::new_v4();
    let (old, new) = (owner("node-a"), owner("node-b"));
    c.claim(endpoint, &old).await.unwrap();
    c.claim(endpoint, &new).await.unwrap();
    assert!(
        !c.release(endpoint, old.tunnel).await.unwrap(),
        "a replaced session lets go of nothing"
    );
    assert_eq!(c.owner(endpoint).await.unwrap(), Some(new.clone()));
    assert!(c.release(endpoint, new.tunnel).await.unwrap());
    assert_eq!(c.owner(endpoint).await.unwrap(), None);
    assert!(!c.release(endpoint, new.tunnel).await.unwrap(), "twice: nothing more");
    // A released endpoint can be claimed afresh.
    assert_eq!(c.claim(endpoint, &old).await.unwrap().previous, None);
}

async fn racing_claims(c: &dyn Coordination) {
    let endpoint = Uuid::new_v4();
    let claimants: Vec<Owner> = (0..8).map(|i| owner(&format!("node-{i}"))).collect();
    let claims = claimants.iter().map(|o| c.claim(endpoint, o));
    let results = futures_util::future::join_all(claims).await;
    // Every claim went through, each replacing the one before it in some order: the previous
    // owners named are all distinct, exactly one claim found none, and the last one holds.
    let previous: Vec<Option<Owner>> = results.into_iter().map(|r| r.unwrap().previous).collect();
    assert_eq!(previous.iter().filter(|p| p.is_none()).count(), 1, "{previous:?}");
    let mut named: Vec<Uuid> = previous.iter().flatten().map(|o| o.tunnel).collect();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), claimants.len() - 1, "no claim was lost: {previous:?}");
    let holder = c.owner(endpoint).await.unwrap().unwrap();
    assert!(!named.contains(&holder.tunnel), "the holder was replaced by nobody");
}

async fn owner_changes_are_watched(c: &dyn Coordination) {
    let (before, endpoint) = (Uuid::new_v4(), Uuid::new_v4());
    let existing = owner("node-a");
    c.claim(before, &existing).await.unwrap();
    let mut feed = c.watch_owners().await.unwrap();
    assert_eq!(next(&mut feed).await, OwnerChange { endpoint: before, owner: Some(existing) });
    let new = owner("node-b");
    c.claim(endpoint, &new).await.unwrap();
    assert_eq!(next(&mut feed).await, OwnerChange { endpoint, owner: Some(new.clone()) });
    c.release(endpoint, new.tunnel).await.unwrap();
    assert_eq!(next(&mut feed).await, OwnerChange { endpoint, owner: None });
}

async fn next(feed: &mut crate::coordination::OwnerFeed) -> OwnerChange {
    tokio::time::timeout(Duration::from_secs(60), feed.next())
        .await
        .expect("an owner change within 60 s")
        .expect("the feed goes on")
        .unwrap()
}

async fn drain_requests(c: &dyn Coordination) {
    assert!(!c.drain_requested("node-a").await.unwrap());
    c.request_drain("node-a").await.unwrap();
    c.request_drain("node-a").await.unwrap(); // asking twice is asking once
    assert!(c.drain_requested("node-a").await.unwrap());
    assert!(!c.drain_requested("node-b").await.unwrap(), "only the node named");
    c.clear_drain("node-a").await.unwrap();
    assert!(!c.drain_requested("node-a").await.unwrap());
    c.clear_drain("node-b").await.unwrap(); // nothing to withdraw is no error
}

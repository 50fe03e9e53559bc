//! The `ism` binary's manners, command by command: text for people unless `--json` is given,
//! JSON with it; arguments that mean what they say; a reader that stops early (`| head`) is not a
//! crash; whatever an event holds, the audit prints it escaped, one line per event.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

mod support;

use ism_events::escape::needs_escape;
use ism_events::{AggregateId, Cause, Envelope, Event, EventLog, Platform};
use ism_tests::cluster::{connected, eventually, provision, Backend, TestMachine, TestNode};
use serde_json::Value;
use std::process::Stdio;
use support::Ism;
use uuid::Uuid;

fn admin(node: &TestNode) -> Ism {
    Ism { api: format!("http://{}", node.addresses.api), token: node.admin_token.clone() }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

/// Runs `args` without `--json`: text that is not JSON, holding every one of `expected`.
async fn says(ism: &Ism, args: &[&str], expected: &[&str]) -> String {
    let text = ism.ok(args).await;
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "ism {args:?} printed JSON without --json:\n{text}"
    );
    for e in expected {
        assert!(text.contains(e), "ism {args:?} does not say {e:?}:\n{text}");
    }
    text
}

#[actix::test]
async fn every_command_prints_text_and_json_only_with_json() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);

    says(&admin, &["status"], &["node node-a", "endpoints connect to", "socks5://"]).await;
    assert_eq!(admin.json(&["status"]).await["node"], "node-a");
    says(&admin, &["whoami"], &["admin: administrator"]).await;
    assert_eq!(admin.json(&["whoami"]).await["role"], "administrator");

    says(&admin, &["gateway", "create", "--name", "corp"], &["gateway \"corp\"", "Online"]).await;
    let gw = admin.json(&["gateway", "create", "--name", "lab", "--description", "lab net"]).await;
    let gw_id = s(&gw["id"]);
    says(&admin, &["gateway", "show", &gw_id], &["gateway \"lab\"", "lab net", "/wsendpoint"])
        .await;
    assert_eq!(admin.json(&["gateway", "show", &gw_id]).await["name"], "lab");
    says(&admin, &["gateway", "list"], &["corp", "lab"]).await;
    assert_eq!(admin.json(&["gateway", "list"]).await.as_array().unwrap().len(), 2);

    says(
        &admin,
        &["endpoint", "add", "--gateway", &gw_id, "--name", "dc1"],
        &["endpoint \"dc1\"", "Pending", "ismk_"],
    )
    .await;
    let added = admin.json(&["endpoint", "add", "--gateway", &gw_id, "--name", "dc2"]).await;
    let (ep, key) = (s(&added["endpoint"]["id"]), s(&added["key"]));
    assert!(key.starts_with("ismk_"), "{added}");
    says(&admin, &["endpoint", "show", &ep], &["endpoint \"dc2\"", "scan access", "on"]).await;
    assert_eq!(admin.json(&["endpoint", "show", &ep]).await["name"], "dc2");
    says(&admin, &["endpoint", "list", "--gateway", &gw_id], &["dc1", "dc2"]).await;
    assert_eq!(
        admin.json(&["endpoint", "list", "--gateway", &gw_id]).await.as_array().unwrap().len(),
        2
    );
    says(&admin, &["endpoint", "edit", &ep, "--description", "east"], &["east"]).await;
    let edited = admin.json(&["endpoint", "edit", &ep, "--description", "west"]).await;
    assert_eq!(edited["description"], "west");
    says(&admin, &["endpoint", "access", &ep, "--support", "7"], &["support access", "on until"])
        .await;
    let access = admin.json(&["endpoint", "access", &ep, "--scan", "off"]).await;
    assert_eq!(access["scan_access"], false);
    assert_eq!(says(&admin, &["endpoint", "key", &ep], &[]).await.trim(), key);
    assert_eq!(admin.json(&["endpoint", "key", &ep]).await["key"], key.as_str());
    let rotated = says(&admin, &["endpoint", "rotate-key", &ep], &["generation 2", "ismk_"]).await;
    assert!(!rotated.contains(&key), "{rotated}");
    assert_eq!(admin.json(&["endpoint", "rotate-key", &ep]).await["key_generation"], 3);

    says(
        &admin,
        &["credential", "issue", "--gateway", &gw_id, "--label", "zap"],
        &["scanner credential", "isms_", "shown only now"],
    )
    .await;
    let issue = ["credential", "issue", "--gateway", &gw_id];
    let (first, second) = (s(&admin.json(&issue).await["id"]), s(&admin.json(&issue).await["id"]));
    says(
        &admin,
        &["credential", "revoke", "--gateway", &gw_id, &first],
        &["gateway \"lab\"", "revoked"],
    )
    .await;
    let revoked = admin.json(&["credential", "revoke", "--gateway", &gw_id, &second]).await;
    assert_eq!(revoked["id"], gw_id.as_str());

    says(&admin, &["user", "create", "--name", "alice", "--role", "reviewer"], &["alice"]).await;
    assert_eq!(
        admin.json(&["user", "create", "--name", "bob", "--role", "reviewer"]).await["name"],
        "bob"
    );
    says(&admin, &["user", "role", "alice", "security-lead"], &["alice", "security-lead"]).await;
    assert_eq!(
        admin.json(&["user", "role", "bob", "administrator"]).await["role"],
        "administrator"
    );
    says(&admin, &["user", "token", "alice"], &["API token", "ismt_", "shown only now"]).await;
    assert!(s(&admin.json(&["user", "token", "bob"]).await["token"]).starts_with("ismt_"));
    says(&admin, &["user", "list"], &["alice", "bob"]).await;
    assert_eq!(admin.json(&["user", "list"]).await.as_array().unwrap().len(), 2);

    says(&admin, &["endpoint", "delete", &ep], &["deleted endpoint \"dc2\""]).await;
    let dc1 = admin.json(&["endpoint", "list", "--gateway", &gw_id]).await[0]["id"].clone();
    assert_eq!(admin.json(&["endpoint", "delete", &s(&dc1)]).await["name"], "dc1");
    says(&admin, &["gateway", "delete", &gw_id], &["gateway \"lab\"", "Deleted"]).await;
    says(&admin, &["gateway", "deleted"], &["lab", "deleted by admin"]).await;
    assert_eq!(admin.json(&["gateway", "deleted"]).await[0]["name"], "lab");
    says(&admin, &["audit"], &["created gateway \"lab\""]).await;
    assert!(!admin.json(&["audit"]).await["entries"].as_array().unwrap().is_empty());
    says(&admin, &["projections", "verify"], &["matches the replay"]).await;
    assert_eq!(admin.json(&["projections", "verify"]).await["all_match"], true);
}

#[actix::test]
async fn revoke_token_takes_the_token_id_and_revokes_it() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    admin.json(&["user", "create", "--name", "rita", "--role", "reviewer"]).await;
    let issued = admin.json(&["user", "token", "rita", "--label", "laptop"]).await;
    let rita = Ism { api: admin.api.clone(), token: s(&issued["token"]) };
    assert_eq!(rita.json(&["whoami"]).await["name"], "rita");

    // The token id is an argument of its own; --token stays the caller's.
    let revoked = admin.json(&["user", "revoke-token", "rita", &s(&issued["id"])]).await;
    assert_eq!(revoked["tokens"][0]["revoked"], true, "{revoked}");
    assert!(rita.fails(&["whoami"]).await.contains("invalid bearer token"));
}

/// A user's name is one path segment however it is spelled: `bob?x` is not `bob` with a query.
#[actix::test]
async fn a_user_name_holding_url_syntax_names_that_user_and_no_other() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    for name in ["bob", "bob?x"] {
        admin.json(&["user", "create", "--name", name, "--role", "reviewer"]).await;
    }
    let changed = admin.json(&["user", "role", "bob?x", "administrator"]).await;
    assert_eq!((&changed["name"], &changed["role"]), (&"bob?x".into(), &"administrator".into()));
    assert_eq!(admin.json(&["user", "token", "bob?x"]).await["user"], "bob?x");
    let users = admin.json(&["user", "list"]).await;
    let bob = users.as_array().unwrap().iter().find(|u| u["name"] == "bob").unwrap();
    assert_eq!((&bob["role"], &bob["tokens"]), (&"reviewer".into(), &serde_json::json!([])));
}

#[actix::test]
async fn a_reader_that_stops_early_is_not_a_crash() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    admin.json(&["gateway", "create", "--name", "corp"]).await;
    for json in [false, true] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ism"))
            .args(["--api", &admin.api, "--token", &admin.token, "gateway", "list"])
            .args(json.then_some("--json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written, as `| head -c 0` would be.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);
    }
}

/// The names of the events the audit shows for `endpoint` (its tunnels' included), oldest first.
async fn history(ism: &Ism, endpoint: &str) -> Vec<(String, String)> {
    let audit = ism.json(&["audit", "--endpoint", endpoint]).await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    entries.iter().map(|e| (s(&e["event"]), s(&e["summary"]))).collect()
}

#[actix::test]
async fn unbind_releases_the_machine_binding_for_the_next_machine_that_presents_the_key() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    let p = provision(&node.api(), "dc1").await;
    let first = TestMachine::new();
    let agent = first.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;
    let first_machine = s(&admin.json(&["endpoint", "show", &p.endpoint]).await["machine"]);

    // The bound machine's session ends, as it does when the key is rotated; its agent comes
    // back and, being the next machine to present the key, binds it again.
    says(
        &admin,
        &["endpoint", "unbind", &p.endpoint],
        &["endpoint \"dc1\"", "bound to no machine"],
    )
    .await;
    eventually("the session ended and the key bound again", || async {
        let events = history(&admin, &p.endpoint).await;
        let after: Vec<_> = events.iter().skip_while(|(e, _)| e != "EndpointUnbound").collect();
        let closed = after.iter().any(|(e, summary)| {
            e == "TunnelClosed" && summary.contains("machine binding released")
        });
        let bound = after.iter().any(|(e, _)| e == "EndpointRegistered");
        (closed && bound).then_some(())
    })
    .await;
    agent.stop();
    agent.join().await.unwrap();

    // Another machine is refused while the key is bound...
    let second = TestMachine::new();
    let refused = second.start_endpoint(&node, &p.key, "127.0.0.1");
    let diagnosis = refused.join().await.expect_err("the key is bound to the first machine");
    assert!(diagnosis.message.contains("Token already registered"), "{diagnosis}");
    // ...and binds it once a manager released it; a reviewer may not.
    admin.json(&["user", "create", "--name", "rita", "--role", "reviewer"]).await;
    let rita = Ism {
        api: admin.api.clone(),
        token: s(&admin.json(&["user", "token", "rita"]).await["token"]),
    };
    assert!(rita
        .fails(&["endpoint", "unbind", &p.endpoint])
        .await
        .contains("only Administrators and Security Leads"));
    let released = admin.json(&["endpoint", "unbind", &p.endpoint]).await;
    assert_eq!(released["machine"], Value::Null, "{released}");
    let again = second.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&again).await;
    let second_machine = s(&admin.json(&["endpoint", "show", &p.endpoint]).await["machine"]);
    assert_ne!(second_machine, first_machine);
    again.stop();
    again.join().await.unwrap();
}

/// What would print as a line of its own if a field's line break reached the terminal.
const FORGED: &str =
    "FORGED 2026-11-23 16:40:01.123Z  #202    EndpointDeleted  deleted endpoint \"dc1\" (by admin)";

/// `ism audit` of a log written before targets and names were checked, whose text fields carry
/// line breaks, escape sequences, Unicode line separators and bidirectional overrides.
#[actix::test]
async fn the_audit_of_a_log_holding_control_characters_prints_one_escaped_line_per_event() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let ism =
        Ism { api: format!("http://{}", node.addresses.api), token: node.admin_token.clone() };
    let data = node.stop();
    let events_dir = data.path().join("events");

    // Old events, appended as a log of an earlier version could hold them.
    let (gw, ep, tun) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let crafted = [
        (
            AggregateId::gateway(gw),
            Event::GatewayCreated {
                name: format!("corp\n{FORGED}"),
                description: format!("lab\u{2028}{FORGED}"),
            },
            "alice\u{202e}nimda",
        ),
        (
            AggregateId::endpoint(ep),
            Event::EndpointAdded {
                gateway: gw,
                name: "dc1\u{1b}[2J\u{1b}[H".into(),
                description: String::new(),
                platform: Platform::Linux,
                key_generation: 1,
                key_hash: "h".into(),
            },
            "alice",
        ),
        (
            AggregateId::endpoint(ep),
            Event::EndpointRegistered {
                machine: "ab".repeat(32),
                hostname: format!("host\r\n{FORGED}"),
                platform: "linux".into(),
                agent_version: "1.0\u{9b}31m".into(),
            },
            "machine:abababab",
        ),
        (
            AggregateId::tunnel(tun),
            Event::TunnelOpened {
                endpoint: ep,
                gateway: gw,
                node: "node-a".into(),
                machine: "ab".repeat(32),
                remote_addr: format!("10.0.0.9:5\u{85}{FORGED}"),
                agent_version: "0.1\u{7}".into(),
            },
            "endpoint:dc1",
        ),
        (
            AggregateId::tunnel(tun),
            Event::StreamRefused {
                target: format!("evil\n{FORGED}:80"),
                scanner: "credential:x".into(),
                reason: format!("refused\u{2029}{FORGED}"),
            },
            "credential:x\u{1b}]0;pwned\u{7}",
        ),
        (
            AggregateId::tunnel(tun),
            Event::TunnelClosed { reason: format!("bye\u{b}\u{c}{FORGED}\u{1b}[0m") },
            "endpoint:dc1",
        ),
    ];
    {
        let log = ism_events::embedded::EmbeddedLog::open(&events_dir).unwrap();
        let mut sequences = std::collections::HashMap::new();
        for (aggregate, event, actor) in crafted {
            let sequence = sequences.entry(aggregate).and_modify(|s| *s += 1).or_insert(1);
            // Written as a build before typed principals did: the actor is plain text.
            let mut envelope =
                Envelope::new(aggregate, *sequence, 1_764_000_000_000, Cause::default(), event);
            envelope.actor = Some(actor.to_string());
            log.append(&envelope).await.unwrap();
        }
    }

    let text = ism.ok(&["audit", "--event-log", events_dir.to_str().unwrap()]).await;
    let lines: Vec<&str> = text.lines().collect();
    let ours: Vec<&&str> =
        lines.iter().filter(|l| l.starts_with("2025-11-24 16:00:00.000Z")).collect();
    assert_eq!(ours.len(), 6, "one line per event:\n{text}");
    for line in &lines {
        assert!(!line.chars().any(needs_escape), "unescaped: {line:?}");
        assert!(!line.starts_with("FORGED"), "a forged line: {line:?}");
    }
    for expected in [
        "created gateway \"corp\\nFORGED",
        "(by alice\\u{202e}nimda)",
        "added endpoint \"dc1\\u{1b}[2J\\u{1b}[H\"",
        "host host\\r\\nFORGED",
        "version 1.0\\u{9b}31m",
        "from 10.0.0.9:5\\u{85}FORGED",
        "stream to evil\\nFORGED",
        "refused\\u{2029}FORGED",
        "(by credential:x\\u{1b}]0;pwned\\u{7})",
        "disconnected: bye\\u{b}\\u{c}FORGED",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // The JSON keeps the exact values: escaping is for people, not a loss.
    let json = ism.json(&["audit", "--event-log", events_dir.to_str().unwrap()]).await;
    let actors: Vec<&str> =
        json["entries"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert!(actors.contains(&"credential:x\u{1b}]0;pwned\u{7}"), "{actors:?}");
}

#[actix::test]
async fn node_list_shows_each_node_and_drain_names_the_node_it_drains() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    // The cluster lists a node from its first heartbeat, which runs beside its start (a list
    // asked at once found nobody 1 round in 4 with both cores loaded).
    let announced = || async { node.state.cluster.is_ready().then_some(()) };
    eventually("the node's first heartbeat", announced).await;
    says(&admin, &["node", "list"], &["NODE", "node-a", "serving", "(answered this)"]).await;
    let listed = admin.json(&["node", "list"]).await;
    assert_eq!(listed[0]["node"], "node-a", "{listed}");
    assert_eq!(listed[0]["state"], "serving", "{listed}");

    // A node the cluster does not know is named with the ones it does; nothing drains.
    let unknown = admin.fails(&["node", "drain", "node-z"]).await;
    assert!(unknown.contains("no node node-z in the cluster (nodes: node-a)"), "{unknown}");
    assert_eq!(admin.json(&["node", "list"]).await[0]["state"], "serving");

    // Only an administrator drains.
    let gw = s(&admin.json(&["gateway", "create", "--name", "corp"]).await["id"]);
    let reviewer = admin.json(&["user", "create", "--name", "rita", "--role", "reviewer"]).await;
    assert_eq!(reviewer["name"], "rita");
    let token = s(&admin.json(&["user", "token", "rita"]).await["token"]);
    let rita = Ism { api: admin.api.clone(), token };
    assert!(rita.fails(&["node", "drain", "node-a"]).await.contains("403"));
    assert_eq!(admin.json(&["node", "list"]).await[0]["state"], "serving");

    says(&admin, &["node", "drain", "node-a"], &["node node-a is draining"]).await;
    says(&admin, &["node", "list"], &["node-a", "draining"]).await;
    // A draining node takes no new scanners or endpoints, but still answers the API.
    assert_eq!(admin.json(&["gateway", "show", &gw]).await["name"], "corp");
}

#[actix::test]
async fn notification_settings_and_webhooks_are_managed_with_reasons_for_every_refusal() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    let bad = admin
        .fails(&["user", "create", "--name", "x", "--role", "reviewer", "--email", "x@"])
        .await;
    assert!(bad.contains("not an email address"), "{bad}");
    says(
        &admin,
        &[
            "user",
            "create",
            "--name",
            "lead",
            "--role",
            "security-lead",
            "--email",
            "lead@corp.example",
        ],
        &["lead@corp.example", "sent to this user"],
    )
    .await;
    says(&admin, &["user", "edit", "lead", "--notifications", "off"], &["off (opted out)"]).await;
    says(&admin, &["user", "list"], &["NOTIFIED", "lead"]).await;
    admin.json(&["user", "create", "--name", "rita", "--role", "reviewer"]).await;
    let token = |name: &str| {
        let admin = &admin;
        let name = name.to_string();
        async move { s(&admin.json(&["user", "token", &name]).await["token"]) }
    };
    let lead = Ism { api: admin.api.clone(), token: token("lead").await };
    let rita = Ism { api: admin.api.clone(), token: token("rita").await };
    // A user changes their own address and choice, not someone else's, nor their own role.
    let own = lead
        .json(&["user", "edit", "lead", "--email", "l@corp.example", "--notifications", "on"])
        .await;
    assert_eq!(
        (own["email"].as_str(), own["notified"].as_bool()),
        (Some("l@corp.example"), Some(true))
    );
    assert!(lead
        .fails(&["user", "edit", "rita", "--email", "r@corp.example"])
        .await
        .contains("only Administrators may do this"));
    assert!(lead
        .fails(&["user", "edit", "lead", "--role", "administrator"])
        .await
        .contains("only Administrators may do this"));
    assert!(admin.fails(&["user", "edit", "lead"]).await.contains("say what to change"));

    // Webhooks: managers only, http(s) only, the secret shown once.
    let hook =
        ["webhook", "add", "--url", "http://127.0.0.1:9/hook", "--events", "endpoint-offline"];
    assert!(rita.fails(&hook).await.contains("only Administrators and Security Leads"));
    let added = says(&lead, &hook, &["signing secret, shown only now", "whsec_"]).await;
    let secret = added.lines().find(|l| l.starts_with("whsec_")).unwrap().to_string();
    let listed =
        says(&lead, &["webhook", "list"], &["http://127.0.0.1:9/hook", "endpoint-offline"]).await;
    assert!(!listed.contains(&secret));
    assert!(!lead.ok(&["--json", "webhook", "list"]).await.contains(&secret));
    assert!(lead.fails(&["webhook", "add", "--url", "ftp://x/"]).await.contains("http and https"));
    let metadata = lead.fails(&["webhook", "add", "--url", "http://169.254.169.254/latest"]).await;
    assert!(metadata.contains("link-local, cloud metadata"), "{metadata}");
    let unknown = lead
        .fails(&["webhook", "add", "--url", "https://x.example/", "--events", "everything"])
        .await;
    assert!(
        unknown.contains("unknown notification kind") && unknown.contains("endpoint-unstable"),
        "{unknown}"
    );
    let id = s(&lead.json(&["webhook", "list"]).await[0]["id"]);
    says(&lead, &["webhook", "remove", &id], &["removed"]).await;
    lead.ok(&["webhook", "remove", &id]).await; // again: nothing left to do, not an error
    let never = Uuid::new_v4().to_string();
    assert!(lead.fails(&["webhook", "remove", &never]).await.contains("does not exist"));

    says(&rita, &["notifications", "list"], &["KIND", "STATE"]).await;
    let gw = admin.json(&["gateway", "create", "--name", "corp"]).await;
    says(&admin, &["gateway", "show", &s(&gw["id"])], &["unless a scan uses it before"]).await;
}

/// Appends `n` stream facts to one tunnel aggregate of `log`, in batches as the data path does.
async fn stream_facts(log: &dyn EventLog, n: u64) {
    let tunnel = AggregateId::tunnel(Uuid::new_v4());
    for first in (1..=n).step_by(500) {
        let batch: Vec<Envelope> = (first..(first + 500).min(n + 1))
            .map(|seq| {
                let event = Event::StreamClosed {
                    stream: seq as u32,
                    sent: 1,
                    received: 2,
                    end: "fin".into(),
                };
                Envelope::new(tunnel, seq, 1_800_000_000_000, Cause::default(), event)
            })
            .collect();
        log.append_batch(&batch).await.unwrap();
    }
}

fn positions(jsonl: &str) -> Vec<u64> {
    jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))["position"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[actix::test]
async fn the_audit_streams_as_json_lines_and_pages_after_or_before_a_position_from_a_node_or_a_log()
{
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    admin.json(&["gateway", "create", "--name", "corp"]).await;
    stream_facts(&*node.state.log, 20_000).await;
    let head = node.state.log.head().await.unwrap();

    let all = admin.ok(&["audit", "--format", "jsonl"]).await;
    assert_eq!(positions(&all), (1..=head).collect::<Vec<_>>(), "every entry, oldest first, once");
    let first = admin.ok(&["audit", "--format", "jsonl", "--limit", "3"]).await;
    assert_eq!(positions(&first), [1, 2, 3]);
    let page = admin.json(&["audit", "--after", "3", "--limit", "4"]).await;
    let page: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(page, [4, 5, 6, 7], "the next page starts after the last position seen");
    assert_eq!(admin.json(&["audit", "--after", "3", "--limit", "4"]).await["truncated"], true);
    let last = admin.json(&["audit", "--after", &(head - 1).to_string(), "--limit", "5"]).await;
    assert_eq!(
        (last["truncated"].as_bool(), last["entries"].as_array().unwrap().len()),
        (Some(false), 1)
    );
    // Paging back: the most recent before a position.
    let before = admin.json(&["audit", "--before", "8", "--limit", "3"]).await;
    let before: Vec<u64> = before["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(before, [5, 6, 7], "the page before one that starts at #8");
    assert!(admin.fails(&["audit", "--limit", "0"]).await.contains("0 is not in 1.."));
    let filtered = admin.ok(&["audit", "--format", "jsonl", "--actor", "admin"]).await;
    assert_eq!(
        filtered.lines().count(),
        1,
        "only the gateway's creation was by admin:\n{filtered}"
    );

    // A reader that takes one line and goes is not a failure.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ism"))
        .args(["--api", &admin.api, "--token", &admin.token, "audit", "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = [0u8; 64];
    use tokio::io::AsyncReadExt;
    assert!(stdout.read(&mut line).await.unwrap() > 0);
    drop(stdout);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);

    // Straight from the log, the same.
    let data = node.stop();
    let events = data.path().join("events").display().to_string();
    let offline = Ism { api: "http://127.0.0.1:9".into(), token: String::new() };
    let tail = offline
        .ok(&[
            "audit",
            "--event-log",
            &events,
            "--format",
            "jsonl",
            "--after",
            &(head - 2).to_string(),
        ])
        .await;
    // (The stop recorded the gateway offline: the log grew by what the stop recorded.)
    let tail = positions(&tail);
    let last = *tail.last().unwrap();
    assert_eq!(tail, (head - 1..=last).collect::<Vec<_>>());
    let back =
        offline.ok(&["audit", "--event-log", &events, "--format", "jsonl", "--before", "4"]).await;
    assert_eq!(positions(&back), [1, 2, 3], "before a position, from the log too");
    let text = offline.ok(&["audit", "--event-log", &events, "--limit", "2"]).await;
    assert_eq!(text.lines().count(), 2, "the most recent two:\n{text}");
    assert!(text.contains(&format!("#{last}")), "{text}");
}

#[actix::test]
async fn a_scan_is_started_followed_and_reported_from_the_command_line() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let admin = admin(&node);
    let app = ism_scan_engine::testing::InsecureApp::start().await.unwrap();
    let p = provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &app.http.to_string());
    connected(&agent).await;
    let target = format!("http://{}/", app.http);

    let started = says(
        &admin,
        &["scan", "start", "--endpoint", "dc1", "--target", &target, "--max-pages", "5"],
        &["scan ", "limits", "5 pages"],
    )
    .await;
    let id = started.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    let admin = &admin;
    let id = id.as_str();
    let done = eventually("the scan finished", || async move {
        let scan = admin.json(&["scan", "show", id]).await;
        (scan["state"] == "finished").then_some(scan)
    })
    .await;
    assert_eq!(done["pages"], 5, "the page limit: {done}");
    says(admin, &["scan", "list", "--state", "finished"], &[id, "finished", "dc1"]).await;
    says(admin, &["scan", "show", id], &["password-over-http", "finished"]).await;
    says(admin, &["endpoint", "list", "--gateway", &p.gateway], &["SCANS", "0/30"]).await;

    let report = admin.json(&["scan", "report", id]).await;
    assert_eq!(report["schema"], "ism-scan-report/1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scan.sarif");
    says(
        admin,
        &["scan", "report", id, "--format", "sarif", "-o", file.to_str().unwrap()],
        &["sarif report written to"],
    )
    .await;
    let sarif: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");

    let again = admin.json(&["scan", "start", "--again", id]).await;
    assert_eq!(again["again_of"], id);
    let cancelled = admin.json(&["scan", "cancel", &s(&again["id"])]).await;
    assert_eq!(cancelled["state"], "cancelled");
    let usage = admin.fails(&["scan", "start", "--endpoint", "dc1"]).await;
    assert!(usage.contains("--target"), "{usage}");
    let unknown = admin.fails(&["scan", "list", "--state", "asleep"]).await;
    assert!(unknown.contains("unknown scan state"), "{unknown}");
    agent.stop();
}

/// The event log over TLS: with `ISM_NATS_CA_FILE` naming the CA that signed the NATS server's
/// certificate, `ism audit` reads a log whose server speaks only TLS (here it creates the empty
/// stream, then reads it); a CA file that is not there or holds no certificate is said so at
/// once, and a server whose certificate this machine does not trust is not read, the CLI saying
/// why at once.
#[tokio::test]
async fn the_audit_reads_a_log_over_tls_trusting_the_ca_it_is_given() {
    let tls = tempfile::tempdir().unwrap();
    let generated =
        ism_gateway::tls::TlsSource::Generated { dir: tls.path().to_path_buf(), sans: Vec::new() };
    ism_gateway::tls::load(&generated).unwrap();
    let file = |name: &str| tls.path().join(name).display().to_string();
    let (cert, key) = (file("cert.pem"), file("key.pem"));
    let server =
        ism_tests::nats::NatsServer::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let url = format!("tls://127.0.0.1:{port}");
    let audit = |ca: String| {
        let url = url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ism"))
                .args(["audit", "--event-log", &url, "--format", "jsonl"])
                .env(ism_events::jetstream::CA_FILE_ENV, ca)
                .env("SSL_CERT_FILE", "/dev/null")
                .output()
                .await
                .unwrap()
        }
    };
    let out = audit(file("ca.pem")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "a new log holds nothing");

    // A CA file that cannot be read, or holds no certificate (a key only), is refused at once.
    for (ca, why) in [
        (file("missing.pem"), "cannot read a PEM certificate"),
        (key.clone(), "holds no PEM certificate"),
    ] {
        let out = audit(ca).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("ISM_NATS_CA_FILE="), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }

    // No CA named: the system's roots (none here) do not vouch for the server, which the
    // first attempt's error says (rather than a wait of OPEN_PATIENCE and a guess).
    let out = audit(String::new()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains("embedded log"), "{stderr}");
    assert!(stderr.contains(&format!("no NATS server of {url} answered")), "{stderr}");
}

//! The engine against real servers on 127.0.0.1: the insecure app (http and https) and a few
//! small misbehaving servers, reached through a plain-TCP connector that sends every host to
//! 127.0.0.1 and records what it was asked to connect to.
//!
//! The SARIF schema in `tests/data/sarif-schema-2.1.0.json` (`testing::OFFICIAL_SARIF_SCHEMA`)
//! is the OASIS SARIF TC's `Schemata/sarif-schema-2.1.0.json` (JSON Schema draft-07, `$id`
//! https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json),
//! taken unchanged from the crates.io package `serde-sarif` 0.8.0, file `src/schema.json`
//! (sha256 af47e7b67f24efe74076621fd3a5fbe7398add9e84fe820c971219a385895cea), which generates its
//! types from it.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_scan_engine::checks::{self, Exchange};
use ism_scan_engine::html::Page;
use ism_scan_engine::report::{self, ScanSummary};
use ism_scan_engine::testing::{self, InsecureApp, Site, DEEP, EXTERNAL, MANY};
use ism_scan_engine::{
    run, ConnectError, Connector, End, Finding, Outcome, ScanPlan, Severity, Update,
};
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Plain TCP to 127.0.0.1, whatever host the URL names; remembers every (host, port) asked for.
#[derive(Default)]
struct Loopback {
    asked: Mutex<Vec<(String, u16)>>,
}

impl Connector for Loopback {
    type Io = TcpStream;

    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        self.asked.lock().unwrap().push((host.to_string(), port));
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| ConnectError::Target(e.to_string()))
    }
}

impl Loopback {
    fn ports(&self) -> Vec<u16> {
        self.asked.lock().unwrap().iter().map(|(_, port)| *port).collect()
    }
}

/// A connector that cannot reach anything: every target refused, or the endpoint gone.
struct Nowhere {
    fatal: bool,
}

impl Connector for Nowhere {
    type Io = TcpStream;

    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        if self.fatal {
            Err(ConnectError::Fatal("endpoint dc1 went offline".into()))
        } else {
            Err(ConnectError::Target(format!("{host}:{port} is not in the endpoint's allowlist")))
        }
    }
}

/// The future of `run` must be Send: a gateway node spawns it.
fn send<F: Future + Send>(f: F) -> F {
    f
}

async fn scan(plan: &ScanPlan, connector: &impl Connector) -> (Outcome, Vec<Update>) {
    let mut updates = Vec::new();
    let mut on_update = |u: Update| updates.push(u);
    let outcome = send(run(plan, connector, &CancellationToken::new(), &mut on_update)).await;
    (outcome, updates)
}

fn plan(targets: Vec<Url>) -> ScanPlan {
    ScanPlan { targets, rate_per_second: 100.0, ..ScanPlan::default() }
}

/// The paths fetched, in order (redirects included).
fn fetched(updates: &[Update]) -> Vec<String> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::Fetched { url, .. } => Some(Url::parse(url).unwrap().path().to_string()),
            _ => None,
        })
        .collect()
}

/// (rule, path) of each finding.
fn found(findings: &[Finding]) -> BTreeSet<(String, String)> {
    findings
        .iter()
        .map(|f| (f.rule.clone(), Url::parse(&f.url).unwrap().path().to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter().map(|(r, p)| (r.to_string(), p.to_string())).collect()
}

#[tokio::test]
async fn the_crawl_finds_the_apps_pages_within_its_limits() {
    let app = InsecureApp::start().await.unwrap();
    let loopback = Loopback::default();
    let (outcome, updates) = scan(&plan(vec![app.http_url("/").unwrap()]), &loopback).await;
    assert_eq!(outcome.end, End::Finished);

    let paths = fetched(&updates);
    let unique: HashSet<&String> = paths.iter().collect();
    assert_eq!(unique.len(), paths.len(), "a URL fetched twice: {paths:?}");
    for expected in [
        "/",
        "/login",
        "/about",
        "/files/",
        "/files/readme.txt",
        "/files/backup.sql",
        "/error",
        "/redirect",
        "/search",
        "/many/",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not fetched: {paths:?}");
    }
    // The default depth limit (5): /deep/5 is five links from /, /deep/6 six.
    let deep: Vec<&String> = paths.iter().filter(|p| p.starts_with("/deep/")).collect();
    assert_eq!(deep, ["/deep/1", "/deep/2", "/deep/3", "/deep/4", "/deep/5"]);
    assert_eq!(paths.iter().filter(|p| p.starts_with("/many/")).count(), MANY as usize + 1);
    assert!(updates.iter().all(|u| !matches!(u, Update::Unreachable { .. })), "{updates:?}");

    // Never another origin, never mailto: every connection went to the app's http port, and
    // one keep-alive connection carried every request.
    assert_eq!(loopback.ports(), [app.http.port()]);
    assert!(loopback.asked.lock().unwrap().iter().all(|(host, _)| host == "127.0.0.1"));
    let home = Site { https: false, http_port: app.http.port() }.reply("/").body;
    assert!(home.contains(EXTERNAL) && home.contains("mailto:"), "the links not to follow");

    // 10 pages at depth <= 1 (/redirect is a request, not a page), 3 + 40 at depth 2, 3 deeper.
    assert_eq!(outcome.pages, 1 + 7 + 43 + 3);
    assert_eq!(outcome.requests, outcome.pages + 1);
}

#[tokio::test]
async fn the_depth_limit_is_exact() {
    let app = InsecureApp::start().await.unwrap();
    let plan = ScanPlan { max_depth: 3, ..plan(vec![app.http_url("/deep/1").unwrap()]) };
    let (outcome, updates) = scan(&plan, &Loopback::default()).await;
    assert_eq!(fetched(&updates), ["/deep/1", "/deep/2", "/deep/3", "/deep/4"]);
    assert_eq!((outcome.pages, outcome.end), (4, End::Finished));
    const { assert!(DEEP > 4) };

    let none = ScanPlan { max_depth: 0, ..plan };
    let (outcome, updates) = scan(&none, &Loopback::default()).await;
    assert_eq!((fetched(&updates).len(), outcome.pages), (1, 1));
}

#[tokio::test]
async fn the_page_limit_is_exact() {
    let app = InsecureApp::start().await.unwrap();
    let plan = ScanPlan { max_pages: 10, ..plan(vec![app.http_url("/many/").unwrap()]) };
    let (outcome, updates) = scan(&plan, &Loopback::default()).await;
    assert_eq!(fetched(&updates).len(), 10);
    assert_eq!((outcome.pages, outcome.requests, outcome.end), (10, 10, End::Finished));
}

#[tokio::test]
async fn the_checks_fire_on_the_http_app_where_they_should() {
    let app = InsecureApp::start().await.unwrap();
    let (outcome, updates) =
        scan(&plan(vec![app.http_url("/").unwrap()]), &Loopback::default()).await;
    let expected = pairs(&[
        ("missing-csp", "/"),
        ("missing-nosniff", "/"),
        ("missing-clickjacking-protection", "/"),
        ("missing-referrer-policy", "/"),
        ("cookie-without-secure", "/login"),
        ("cookie-without-httponly", "/login"),
        ("cookie-without-samesite", "/login"),
        ("version-disclosure", "/login"),
        ("password-over-http", "/login"),
        ("directory-listing", "/files/"),
        ("verbose-error", "/error"),
    ]);
    assert_eq!(found(&outcome.findings), expected);
    // Once per origin and header: Server and X-Powered-By.
    let disclosures: Vec<&str> = outcome
        .findings
        .iter()
        .filter(|f| f.rule == "version-disclosure")
        .map(|f| f.evidence.as_str())
        .collect();
    assert_eq!(disclosures, ["Server: Apache/2.4.41 (Ubuntu)", "X-Powered-By: PHP/7.4.3"]);
    let secure = outcome.findings.iter().find(|f| f.rule == "cookie-without-secure").unwrap();
    assert_eq!(secure.severity, Severity::Low, "over plain http");
    assert!(!secure.evidence.contains("4f9a2c61d0b3"), "the session value stays out of reports");
    assert!(outcome.findings.iter().all(|f| f.evidence.chars().count() <= 200));
    // Each finding was also reported as it was found, in the same order.
    let streamed: Vec<&Finding> = updates
        .iter()
        .filter_map(|u| if let Update::Found(f) = u { Some(f) } else { None })
        .collect();
    assert_eq!(streamed, outcome.findings.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_secure_page_alone_yields_no_header_or_cookie_finding() {
    // The check of the one response, as the app serves it.
    for https in [false, true] {
        let reply = Site { https, http_port: 8080 }.reply("/about");
        let mut headers = hyper::HeaderMap::new();
        for (k, v) in &reply.headers {
            headers.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let url = Url::parse(if https { "https://app/about" } else { "http://app/about" }).unwrap();
        let page = Page::parse(&reply.body, &url);
        let exchange = Exchange {
            url: &url,
            status: reply.status,
            headers: &headers,
            body: reply.body.as_bytes(),
            page: Some(&page),
        };
        assert_eq!(checks::check(&exchange), []);
    }
    // And through the network: a scan of /about alone finds nothing over http, and only the
    // certificate over https.
    let app = InsecureApp::start().await.unwrap();
    let about = |url: Url| ScanPlan { max_depth: 0, ..plan(vec![url]) };
    let (outcome, _) = scan(&about(app.http_url("/about").unwrap()), &Loopback::default()).await;
    assert_eq!((outcome.pages, outcome.findings), (1, vec![]));
    let (outcome, _) = scan(&about(app.https_url("/about").unwrap()), &Loopback::default()).await;
    assert_eq!(found(&outcome.findings), pairs(&[("tls-self-signed", "/about")]));
}

#[tokio::test]
async fn the_https_app_has_a_self_signed_certificate_and_mixed_content() {
    let app = InsecureApp::start().await.unwrap();
    let loopback = Loopback::default();
    let (outcome, updates) = scan(&plan(vec![app.https_url("/").unwrap()]), &loopback).await;
    assert_eq!(outcome.end, End::Finished);
    let found = found(&outcome.findings);
    for expected in [
        ("tls-self-signed", "/"),
        ("mixed-content", "/"),
        ("missing-hsts", "/"),
        ("password-over-http", "/login"),
        ("cookie-without-secure", "/login"),
    ] {
        assert!(found.contains(&(expected.0.into(), expected.1.into())), "{expected:?}: {found:?}");
    }
    assert!(!found.iter().any(|(rule, _)| rule == "tls-wrong-name" || rule == "tls-expired"));
    let tls: Vec<&Finding> =
        outcome.findings.iter().filter(|f| f.rule.starts_with("tls-")).collect();
    assert_eq!(tls.len(), 1, "once per origin, however many connections: {tls:?}");
    let mixed = outcome.findings.iter().find(|f| f.rule == "mixed-content").unwrap();
    assert_eq!(
        mixed.evidence,
        format!("loads script http://127.0.0.1:{}/app.js over http", app.http.port())
    );
    let secure = outcome.findings.iter().find(|f| f.rule == "cookie-without-secure").unwrap();
    assert_eq!(secure.severity, Severity::Medium, "over https");
    // The crawl went on behind the certificate, and never to the http port the pages point at.
    assert!(fetched(&updates).len() > 50);
    assert!(loopback.ports().iter().all(|p| *p == app.https.port()));
}

#[tokio::test]
async fn a_certificate_for_another_name() {
    let app = InsecureApp::start().await.unwrap();
    let url = Url::parse(&format!("https://intranet.test:{}/", app.https.port())).unwrap();
    let plan = ScanPlan { max_pages: 1, ..plan(vec![url]) };
    let loopback = Loopback::default();
    let (outcome, _) = scan(&plan, &loopback).await;
    let tls: BTreeSet<&str> = outcome
        .findings
        .iter()
        .filter(|f| f.rule.starts_with("tls-"))
        .map(|f| f.rule.as_str())
        .collect();
    assert_eq!(tls, BTreeSet::from(["tls-self-signed", "tls-wrong-name"]));
    let wrong = outcome.findings.iter().find(|f| f.rule == "tls-wrong-name").unwrap();
    assert_eq!(wrong.severity, Severity::High);
    assert_eq!(loopback.asked.lock().unwrap()[0].0, "intranet.test", "the connector resolves");
}

/// A server that answers every ClientHello with a TLS 1.0 ServerHello.
async fn tls_1_0_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; 512];
                let _ = stream.read(&mut hello).await;
                // ServerHello: version 3.1 (TLS 1.0), 32 bytes of random, no session id,
                // TLS_RSA_WITH_AES_128_CBC_SHA, no compression.
                let mut body = vec![0x03, 0x01];
                body.extend([7u8; 32]);
                body.extend([0x00, 0x00, 0x2f, 0x00]);
                let mut handshake = vec![0x02, 0x00, 0x00, body.len() as u8];
                handshake.extend(body);
                let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
                record.extend(handshake);
                let _ = stream.write_all(&record).await;
                let _ = stream.read(&mut hello).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_server_below_tls_1_2_is_a_finding_and_unreachable() {
    let addr = tls_1_0_server().await;
    let url = Url::parse(&format!("https://{addr}/")).unwrap();
    let (outcome, updates) = scan(&plan(vec![url.clone()]), &Loopback::default()).await;
    assert_eq!(outcome.end, End::Finished);
    assert_eq!(found(&outcome.findings), pairs(&[("tls-below-1.2", "/")]));
    assert_eq!(outcome.findings[0].severity, Severity::High);
    let unreachable: Vec<&Update> =
        updates.iter().filter(|u| matches!(u, Update::Unreachable { .. })).collect();
    assert_eq!(unreachable.len(), 1);
    assert_eq!((outcome.pages, outcome.requests), (0, 1));
}

#[tokio::test]
async fn a_fatal_connect_error_fails_the_scan_and_a_target_error_does_not() {
    let targets = vec![
        Url::parse("http://app1.corp/").unwrap(),
        Url::parse("https://app2.corp:8443/").unwrap(),
    ];
    let (outcome, _) = scan(&plan(targets.clone()), &Nowhere { fatal: true }).await;
    assert_eq!(outcome.end, End::Failed("endpoint dc1 went offline".into()));
    assert_eq!(outcome.requests, 1);

    let (outcome, updates) = scan(&plan(targets), &Nowhere { fatal: false }).await;
    assert_eq!(outcome.end, End::Finished);
    assert_eq!(outcome.requests, 2, "the scan went on to the second target");
    assert_eq!(
        updates,
        [
            Update::Unreachable {
                url: "http://app1.corp/".into(),
                error: "cannot connect to app1.corp: app1.corp:80 is not in the endpoint's allowlist"
                    .into()
            },
            Update::Unreachable {
                url: "https://app2.corp:8443/".into(),
                error:
                    "cannot connect to app2.corp:8443: app2.corp:8443 is not in the endpoint's allowlist"
                        .into()
            },
        ]
    );
}

#[tokio::test]
async fn an_invalid_plan_fails_at_once() {
    let (outcome, updates) = scan(&ScanPlan::default(), &Nowhere { fatal: true }).await;
    assert_eq!(outcome.end, End::Failed("a scan needs at least one target URL".into()));
    assert!(updates.is_empty());
}

/// A server that accepts connections and reads requests but never answers.
async fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn cancel_lets_go_of_a_hanging_request_at_once() {
    let addr = silent_server().await;
    let plan = plan(vec![Url::parse(&format!("http://{addr}/")).unwrap()]);
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel();
    });
    let mut updates = Vec::new();
    let mut on_update = |u: Update| updates.push(u);
    let started = std::time::Instant::now();
    let outcome = run(&plan, &Loopback::default(), &cancel, &mut on_update).await;
    let took = started.elapsed();
    assert_eq!(outcome.end, End::Cancelled);
    // Within a second of the cancel in practice; the bound is loose for a loaded machine but far
    // below the 20 s request time limit.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(updates.is_empty(), "{updates:?}");
    assert_eq!(outcome.requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_costs_the_request_time_limit_and_no_more() {
    let addr = silent_server().await;
    let plan = plan(vec![Url::parse(&format!("http://{addr}/")).unwrap()]);
    let started = tokio::time::Instant::now();
    let (outcome, updates) = scan(&plan, &Loopback::default()).await;
    assert_eq!(outcome.end, End::Finished);
    assert!(started.elapsed() >= Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(21), "{:?}", started.elapsed());
    assert_eq!(
        updates,
        [Update::Unreachable {
            url: format!("http://{addr}/"),
            error: "no complete response within 20 s".into()
        }]
    );
}

#[tokio::test]
async fn requests_are_spaced_by_the_rate() {
    let app = InsecureApp::start().await.unwrap();
    // 6 requests at 5 a second: the last starts at least 5 intervals (1 s) after the first. Only
    // a lower bound: a loaded machine makes the scan slower, never faster.
    let plan = ScanPlan {
        max_pages: 6,
        rate_per_second: 5.0,
        ..plan(vec![app.http_url("/many/").unwrap()])
    };
    let started = std::time::Instant::now();
    let (outcome, _) = scan(&plan, &Loopback::default()).await;
    assert_eq!(outcome.requests, 6);
    assert!(started.elapsed() >= Duration::from_millis(1000), "{:?}", started.elapsed());
}

/// A server with a few hostile answers: `/huge` is a 5 MiB page, `/garbage` is not HTTP,
/// `/` links to them and to `/after`, which is fine.
async fn hostile_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if !matches!(stream.read(&mut byte).await, Ok(1)) {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let page = |body: String| {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body.into_bytes());
                        r
                    };
                    let reply = match path.as_str() {
                        "/" => page(
                            "<a href=/huge>h</a><a href=/garbage>g</a><a href=/after>a</a>".into(),
                        ),
                        "/huge" => page(format!("<a href=/never>n</a>{}", "x".repeat(5 << 20))),
                        "/garbage" => b"SSH-2.0-OpenSSH_8.9\r\n\r\n".to_vec(),
                        _ => page("<p>fine</p>".into()),
                    };
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn hostile_answers_are_recorded_and_the_scan_goes_on() {
    let addr = hostile_server().await;
    let loopback = Loopback::default();
    let plan = plan(vec![Url::parse(&format!("http://{addr}/")).unwrap()]);
    let (outcome, updates) = scan(&plan, &loopback).await;
    assert_eq!(outcome.end, End::Finished);
    assert_eq!(fetched(&updates), ["/", "/huge", "/after", "/never"]);
    let garbage = updates
        .iter()
        .find_map(|u| match u {
            Update::Unreachable { url, error } if url.ends_with("/garbage") => Some(error),
            _ => None,
        })
        .unwrap();
    assert!(!garbage.is_empty());
    // The huge body was cut (its connection not reused), the garbage connection dropped.
    assert_eq!(loopback.ports().len(), 3);
}

fn summary(outcome: &Outcome, targets: &[Url]) -> ScanSummary {
    ScanSummary {
        id: "0b7e8f52-3f2c-4d44-9b1a-2f0c6c1d9e10".into(),
        endpoint: "dc1".into(),
        gateway: "eu-west".into(),
        targets: targets.iter().map(Url::to_string).collect(),
        state: "finished".into(),
        queued_ms: 1_767_225_600_000,
        started_ms: Some(1_767_225_601_000),
        ended_ms: Some(1_767_225_655_250),
        pages: outcome.pages,
        requests: outcome.requests,
        reason: None,
    }
}

#[tokio::test]
async fn the_reports_of_a_real_scan() {
    let app = InsecureApp::start().await.unwrap();
    let old_tls = tls_1_0_server().await;
    let targets = vec![
        app.http_url("/").unwrap(),
        app.https_url("/").unwrap(),
        Url::parse(&format!("https://intranet.test:{}/about", app.https.port())).unwrap(),
        Url::parse(&format!("https://{old_tls}/")).unwrap(),
    ];
    let plan = ScanPlan { max_pages: 300, ..plan(targets.clone()) };
    let (outcome, _) = scan(&plan, &Loopback::default()).await;
    assert_eq!(outcome.end, End::Finished);
    // Every family: headers, cookies, disclosure, content, certificate, protocol.
    let rules: BTreeSet<&str> = outcome.findings.iter().map(|f| f.rule.as_str()).collect();
    for rule in [
        "missing-csp",
        "missing-hsts",
        "cookie-without-httponly",
        "version-disclosure",
        "password-over-http",
        "mixed-content",
        "directory-listing",
        "verbose-error",
        "tls-self-signed",
        "tls-wrong-name",
        "tls-below-1.2",
    ] {
        assert!(rules.contains(rule), "{rule} missing from {rules:?}");
    }
    let summary = summary(&outcome, &targets);

    // The published schema fails its own meta-validation (a stray `]` in two patterns, twice
    // in the file): `testing::sarif_schema` mends those two patterns and nothing else.
    let published: serde_json::Value =
        serde_json::from_str(testing::OFFICIAL_SARIF_SCHEMA).unwrap();
    assert!(jsonschema::draft7::new(&published).is_err());
    assert_eq!(testing::OFFICIAL_SARIF_SCHEMA.matches(testing::SARIF_SCHEMA_DEFECT).count(), 2);
    let mended = testing::sarif_schema().unwrap();
    assert!(!mended.to_string().contains(testing::SARIF_SCHEMA_DEFECT));
    // SARIF against the official schema, formats checked (uri, uri-reference, date-time).
    let validator =
        jsonschema::draft7::options().should_validate_formats(true).build(&mended).unwrap();
    let sarif = report::sarif(&summary, &outcome.findings);
    let errors: Vec<String> = validator.iter_errors(&sarif).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), outcome.findings.len());
    assert_eq!(sarif["runs"][0]["invocations"][0]["executionSuccessful"], true);
    assert_eq!(sarif["runs"][0]["invocations"][0]["endTimeUtc"], "2026-01-01T00:00:55.250Z");
    // The validation is real: a broken log fails it.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = "severe".into();
    assert!(!validator.is_valid(&broken));
    let mut bad_time = sarif.clone();
    bad_time["runs"][0]["invocations"][0]["endTimeUtc"] = "yesterday".into();
    assert!(!validator.is_valid(&bad_time), "formats are checked too");
    let mut no_version = sarif.clone();
    no_version.as_object_mut().unwrap().remove("version");
    assert!(!validator.is_valid(&no_version));

    // The JSON report's shape.
    let json = report::json(&summary, &outcome.findings);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&json), ["counts", "findings", "scan", "schema"]);
    assert_eq!(json["schema"], "ism-scan-report/1");
    assert_eq!(
        keys(&json["scan"]),
        [
            "ended_ms",
            "endpoint",
            "gateway",
            "id",
            "pages",
            "queued_ms",
            "reason",
            "requests",
            "started_ms",
            "state",
            "targets"
        ]
    );
    assert_eq!(keys(&json["counts"]), ["high", "info", "low", "medium"]);
    let rows = json["findings"].as_array().unwrap();
    assert_eq!(rows.len(), outcome.findings.len());
    for row in rows {
        assert_eq!(keys(row), ["evidence", "name", "remediation", "rule", "severity", "url"]);
    }
    let total: u64 =
        ["high", "medium", "low", "info"].iter().map(|s| json["counts"][s].as_u64().unwrap()).sum();
    assert_eq!(total as usize, rows.len());
    assert_eq!(rows[0]["severity"], "high", "most severe first");
    assert_eq!(rows.last().unwrap()["severity"], "info");
}

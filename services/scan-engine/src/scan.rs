//! The scan loop: ask the frontier for the next URL, wait the politeness delay, fetch it within
//! the time limit, run the checks, feed the links back. Every wait also watches the
//! cancellation token, so a cancelled scan lets go of its request at once.

use crate::checks::{self, Exchange, Observation, Reported};
use crate::crawl::Frontier;
use crate::fetch::{Client, FetchError};
use crate::html::Page;
use crate::pace::Pacer;
use crate::tls::{TlsClient, TlsError};
use crate::{Connector, End, Finding, Outcome, ScanPlan, Update};
use hyper::header;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Longest wait for one complete response (connection, TLS, head and body): a slow target costs
/// the scan this much, never more.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one scan to its end: the plan's limits reached or the frontier empty (`Finished`), the
/// token cancelled (`Cancelled`, within a moment: the request in flight is dropped), or the
/// connector's way to the targets gone or the plan invalid (`Failed`). Each response, failure
/// and new finding is passed to `on_update` as it happens. Never panics on what a target sends.
pub async fn run<C: Connector>(
    plan: &ScanPlan,
    connector: &C,
    cancel: &CancellationToken,
    on_update: &mut (dyn FnMut(Update) + Send),
) -> Outcome {
    let mut scan = Scan {
        frontier: Frontier::new(&plan.targets, plan.max_pages, plan.max_depth),
        reported: Reported::default(),
        findings: Vec::new(),
        requests: 0,
        on_update,
    };
    if let Err(e) = plan.validate() {
        return scan.end(End::Failed(e.to_string()));
    }
    let tls = match TlsClient::new() {
        Ok(tls) => tls,
        Err(e) => return scan.end(End::Failed(e.to_string())),
    };
    let mut client = Client::new(connector, tls);
    let mut pacer = Pacer::new(plan.rate_per_second);
    while let Some(visit) = scan.frontier.next_visit() {
        let wait = pacer.delay(Instant::now());
        if cancel.run_until_cancelled(tokio::time::sleep(wait)).await.is_none() {
            return scan.end(End::Cancelled);
        }
        let url = visit.url.clone();
        scan.requests += 1;
        let result = cancel
            .run_until_cancelled(tokio::time::timeout(REQUEST_TIMEOUT, client.get(&url)))
            .await;
        for (opened_for, facts) in client.take_handshakes() {
            scan.observe(checks::tls(&opened_for, &facts));
        }
        let response = match result {
            None => return scan.end(End::Cancelled),
            Some(Err(_elapsed)) => {
                let error = format!("no complete response within {} s", REQUEST_TIMEOUT.as_secs());
                scan.unreachable(&url, error);
                continue;
            }
            Some(Ok(Err(FetchError::Fatal(reason)))) => return scan.end(End::Failed(reason)),
            Some(Ok(Err(e))) => {
                if let FetchError::Tls(TlsError::BelowTls12(detail)) = &e {
                    scan.observe(vec![checks::tls_below_1_2(&url, detail)]);
                }
                scan.unreachable(&url, e.to_string());
                continue;
            }
            Some(Ok(Ok(response))) => response,
        };
        (scan.on_update)(Update::Fetched { url: url.to_string(), status: response.status });
        let redirect = (300..400)
            .contains(&response.status)
            .then(|| response.headers.get(header::LOCATION))
            .flatten()
            .and_then(|location| location.to_str().ok())
            .and_then(|location| url.join(location.trim()).ok());
        // Owned facts only: the parsed document (not Send) is gone before the next await.
        let page = (redirect.is_none() && checks::is_html(&response.headers, &response.body))
            .then(|| Page::parse(&String::from_utf8_lossy(&response.body), &url));
        scan.observe(checks::check(&Exchange {
            url: &url,
            status: response.status,
            headers: &response.headers,
            body: &response.body,
            page: page.as_ref(),
        }));
        match redirect {
            Some(to) => {
                let outcome = scan.frontier.redirected(&visit, to);
                tracing::debug!(%url, ?outcome, "scan redirect");
            }
            None => {
                let links: Vec<Url> = page.iter().flat_map(Page::followable).collect();
                scan.frontier.page_fetched(&visit, links);
            }
        }
    }
    scan.end(End::Finished)
}

/// One running scan's state beside the client: what it found and whom it tells.
struct Scan<'u> {
    frontier: Frontier,
    reported: Reported,
    findings: Vec<Finding>,
    /// Requests sent (the frontier also counts the ones handed out, for its backstop).
    requests: u32,
    on_update: &'u mut (dyn FnMut(Update) + Send),
}

impl Scan<'_> {
    /// Keeps and reports the observations not reported before.
    fn observe(&mut self, observations: Vec<Observation>) {
        for observation in observations {
            if let Some(finding) = self.reported.first(observation) {
                (self.on_update)(Update::Found(finding.clone()));
                self.findings.push(finding);
            }
        }
    }

    fn unreachable(&mut self, url: &Url, error: String) {
        tracing::debug!(%url, %error, "scan request failed");
        (self.on_update)(Update::Unreachable { url: url.to_string(), error });
    }

    fn end(self, end: End) -> Outcome {
        Outcome {
            pages: self.frontier.pages(),
            requests: self.requests,
            findings: self.findings,
            end,
        }
    }
}

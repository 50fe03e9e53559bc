//! The built-in DAST scan: a bounded crawl of an endpoint's internal web apps with passive checks
//! of every response, run by a gateway node.
//!
//! Every request reaches its target through a [`Connector`] (the tunnel to the endpoint in
//! production, plain TCP in tests), so the engine knows nothing of tunnels. What the scan does
//! is split the way the tunnel protocol is: the decisions are pure and tested without sockets,
//! the I/O is thin around them.
//!
//! - [`plan`]: what a scan is asked to do and the bounds it must respect;
//! - [`crawl`]: the frontier (scope, depth, page limit, what was seen), no I/O;
//! - [`html`]: what a page links to and contains, read with `scraper` (html5ever);
//! - [`checks`]: the passive checks, pure functions of one response;
//! - [`rules`]: every rule a finding can come from, with its remediation;
//! - `pace`: the politeness delay between requests;
//! - `tls`: the TLS client that records certificate problems instead of refusing;
//! - `fetch`: one HTTP/1.1 keep-alive connection per origin, bounded bodies;
//! - `scan`: the loop that ties them together ([`run`]);
//! - [`report`]: the JSON report and SARIF 2.1.0;
//! - `testing` (feature `testing`): a deliberately insecure app to scan.
#![forbid(unsafe_code)]

pub mod checks;
pub mod crawl;
mod fetch;
mod finding;
pub mod html;
mod pace;
pub mod plan;
pub mod report;
pub mod rules;
mod scan;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use finding::{Finding, Severity, MAX_EVIDENCE};
pub use plan::{PlanError, ScanPlan};
pub use scan::run;

/// How the engine reaches a target host: through the tunnel in production, plain TCP in tests.
///
/// `host` is a DNS name or an IP address without brackets, as the target URL names it: the
/// connector resolves it where the target lives (the endpoint, inside the network).
pub trait Connector: Send + Sync {
    /// One byte stream to the target; TLS, when the URL asks for it, runs inside it.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl std::future::Future<Output = Result<Self::Io, ConnectError>> + Send;
}

/// Why a connector could not open a stream: it decides whether the scan can go on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// This host:port cannot be reached (refused, not allowed by the endpoint's allowlist, no
    /// such host): the crawl records it and goes on.
    #[error("{0}")]
    Target(String),
    /// The way to every target is gone (the endpoint went offline, access withdrawn): the scan
    /// ends as failed with this reason.
    #[error("{0}")]
    Fatal(String),
}

/// What the scan tells its caller as it goes, in order: progress to record and show while the
/// scan still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A response arrived (redirects included).
    Fetched { url: String, status: u16 },
    /// No response: connection refused, TLS handshake failed, malformed HTTP, timed out.
    Unreachable { url: String, error: String },
    /// A new finding (each is reported once: per origin, per cookie, or per URL, by its rule).
    Found(Finding),
}

/// What a scan did, when it ended and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Responses other than redirects: what the page limit counts.
    pub pages: u32,
    /// Requests sent, redirects and failures included.
    pub requests: u32,
    /// Every finding, in the order found.
    pub findings: Vec<Finding>,
    pub end: End,
}

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The frontier ran dry or a limit was reached.
    Finished,
    /// The cancellation token fired: the request in flight was abandoned.
    Cancelled,
    /// The scan could not go on: an invalid plan, or the connector lost the way to every target.
    Failed(String),
}

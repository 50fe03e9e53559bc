//! One GET at a time over HTTP/1.1, keeping one keep-alive connection per origin while the
//! server allows it (each new connection is a new stream through the tunnel: reuse spares the
//! endpoint and the target). Bodies are read up to [`MAX_BODY`]; the time limit and cancellation
//! are the caller's, who drops the request's future.

use crate::checks::TlsFacts;
use crate::tls::{TlsClient, TlsError};
use crate::{ConnectError, Connector};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::AbortOnDropHandle;
use url::{Host, Position, Url};

/// Most bytes of a body read: more than any page needs for the checks, little enough that a
/// hostile server cannot exhaust the gateway's memory.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// What the scan calls itself in every request.
pub const USER_AGENT: &str = concat!("ism-scan/", env!("CARGO_PKG_VERSION"));

/// One response, its body cut at [`MAX_BODY`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The connector lost the way to every target: the scan ends.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot connect to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Malformed HTTP, a connection closed early, a URL that makes no valid request.
    #[error("{0}")]
    Http(String),
}

/// The connections of one scan, by origin, and what their TLS handshakes showed.
pub struct Client<'c, C> {
    connector: &'c C,
    tls: TlsClient,
    /// Connections idle after a complete response, ready for the origin's next request.
    idle: HashMap<String, Conn>,
    /// What each new TLS connection's handshake showed, until the scan takes it.
    handshakes: Vec<(Url, TlsFacts)>,
}

/// One HTTP/1.1 connection: the handle to send on, and the task driving it (ended when dropped).
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    _driver: AbortOnDropHandle<()>,
}

impl<'c, C: Connector> Client<'c, C> {
    pub fn new(connector: &'c C, tls: TlsClient) -> Client<'c, C> {
        Client { connector, tls, idle: HashMap::new(), handshakes: Vec::new() }
    }

    /// GET `url` (an http(s) URL with a host). A connection is kept for reuse only once its
    /// response was read to the end; one dropped mid-way (time limit, cancel) is closed.
    pub async fn get(&mut self, url: &Url) -> Result<Response, FetchError> {
        let origin = url.origin().ascii_serialization();
        let mut reused = self.idle.remove(&origin);
        if let Some(conn) = &mut reused {
            if conn.sender.ready().await.is_err() {
                reused = None; // The server closed it while it was idle.
            }
        }
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(conn) => conn,
            None => self.open(url).await?,
        };
        let response = match conn.sender.send_request(request(url)?).await {
            Ok(response) => response,
            // The server closed the idle connection as the request went out: GET is safe to
            // send again, once, on a new connection.
            Err(e)
                if was_reused
                    && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
            {
                conn = self.open(url).await?;
                conn.sender.send_request(request(url)?).await.map_err(http_error)?
            }
            Err(e) => return Err(http_error(e)),
        };
        let (parts, mut body) = response.into_parts();
        let (body, complete) = read_body(&mut body).await.map_err(http_error)?;
        if complete && !conn.sender.is_closed() {
            self.idle.insert(origin, conn);
        }
        Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// What the TLS handshakes since the last call showed, with the URL each was opened for.
    pub fn take_handshakes(&mut self) -> Vec<(Url, TlsFacts)> {
        std::mem::take(&mut self.handshakes)
    }

    async fn open(&mut self, url: &Url) -> Result<Conn, FetchError> {
        let authority = url[Position::BeforeHost..Position::AfterPort].to_string();
        let (host, port) = match (url.host(), url.port_or_known_default()) {
            (Some(host), Some(port)) => (host, port),
            _ => return Err(FetchError::Http(format!("{url}: no host to connect to"))),
        };
        let host_text = match &host {
            Host::Domain(d) => d.to_string(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => a.to_string(),
        };
        let io = self.connector.connect(&host_text, port).await.map_err(|e| match e {
            ConnectError::Fatal(reason) => FetchError::Fatal(reason),
            ConnectError::Target(reason) => FetchError::Connect { authority, reason },
        })?;
        if url.scheme() != "https" {
            return start(io).await;
        }
        let name = match host {
            Host::Domain(d) => ServerName::try_from(d.to_string())
                .map_err(|e| FetchError::Http(format!("{url}: {e}")))?,
            Host::Ipv4(a) => ServerName::from(std::net::IpAddr::V4(a)),
            Host::Ipv6(a) => ServerName::from(std::net::IpAddr::V6(a)),
        };
        let (stream, facts) = self.tls.connect(io, name).await?;
        self.handshakes.push((url.clone(), facts));
        start(stream).await
    }
}

/// The HTTP/1.1 handshake over `io`, its connection driven by a task of its own.
async fn start<T>(io: T) -> Result<Conn, FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(http_error)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "scan connection ended");
        }
    });
    Ok(Conn { sender, _driver: AbortOnDropHandle::new(driver) })
}

/// A plain GET of the URL's path and query: no body, no cookies, no credentials.
fn request(url: &Url) -> Result<Request<Empty<Bytes>>, FetchError> {
    let target = &url[Position::BeforePath..Position::AfterQuery];
    let host = &url[Position::BeforeHost..Position::AfterPort];
    Request::get(target)
        .header(header::HOST, host)
        .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
        .header(header::ACCEPT, HeaderValue::from_static("*/*"))
        .body(Empty::new())
        .map_err(|e| FetchError::Http(format!("cannot request {url}: {e}")))
}

/// The body up to [`MAX_BODY`], and whether it was read to its end.
async fn read_body(body: &mut Incoming) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        let room = MAX_BODY - out.len();
        if data.len() > room {
            out.extend_from_slice(&data[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&data);
    }
    Ok((out, true))
}

/// A hyper error with its causes ("connection error: Connection reset by peer").
fn http_error(e: hyper::Error) -> FetchError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Http(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_origin_form_and_our_name() {
        let url = Url::parse("http://user:pw@app.corp:8080/a%20b/c?q=1&r#frag").unwrap();
        let req = request(&url).unwrap();
        assert_eq!(req.uri(), "/a%20b/c?q=1&r");
        assert_eq!(req.headers()[header::HOST], "app.corp:8080");
        assert_eq!(
            req.headers()[header::USER_AGENT],
            concat!("ism-scan/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(req.headers()[header::ACCEPT], "*/*");
        assert!(!req.headers().contains_key(header::AUTHORIZATION));
        let v6 = request(&Url::parse("https://[::1]/").unwrap()).unwrap();
        assert_eq!(v6.headers()[header::HOST], "[::1]");
    }
}

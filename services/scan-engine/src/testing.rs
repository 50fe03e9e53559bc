//! A deliberately insecure intranet app for tests and the demo: every passive check has a page
//! that trips it, one page does everything right, and the link graph exercises the crawl's
//! limits. It listens on 127.0.0.1 only, on ports the OS picks, over http and over https with
//! a self-signed certificate.
//!
//! Pages (the same on both ports unless said):
//! - `/`: links to everything below, an external link (another origin, never to be fetched),
//!   a `mailto:` link, fragment links, a GET search form and a POST feedback form; over https
//!   it also loads `http://127.0.0.1:<http>/app.js` (mixed content).
//! - `/login`: a password form (over http; over https it posts to the http port), a session
//!   cookie without flags, `Server: Apache/2.4.41 (Ubuntu)`, `X-Powered-By: PHP/7.4.3`.
//! - `/about`: every security header set right and a cookie with Secure, HttpOnly and SameSite.
//! - `/files/`: an Apache-style directory listing of two files.
//! - `/error`: a 500 with a Python traceback.
//! - `/redirect`: 302 to `/about`.
//! - `/deep/1` -> `/deep/2` -> ... -> `/deep/`[`DEEP`]: a chain for the depth limit.
//! - `/many/`: links to `/many/1` ... `/many/`[`MANY`], for the page limit.
//! - `/search`, `/app.js`; anything else is a 404.
//!
//! Written by hand over tokio (HTTP/1.1 with keep-alive, Content-Length bodies): the engine's
//! client is the thing under test, so the server is kept simple and visible.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The official SARIF 2.1.0 JSON schema (draft-07), as the OASIS SARIF TC published it: see
/// `tests/scan.rs` for where it came from.
pub const OFFICIAL_SARIF_SCHEMA: &str = include_str!("../tests/data/sarif-schema-2.1.0.json");

/// The pattern of `run.language` and `toolComponent.language` in [`OFFICIAL_SARIF_SCHEMA`]:
/// its stray `]` is not valid ECMA-262 regex syntax, which the draft-07 meta-schema's
/// `format: regex` asks for, so a validator that checks the schema first refuses the schema.
pub const SARIF_SCHEMA_DEFECT: &str = "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$";

/// [`OFFICIAL_SARIF_SCHEMA`] parsed, with that one pattern mended to what its text means (`en`
/// or `en-US`), ready for `jsonschema`: what a test validates SARIF reports against. Our reports
/// have no `language`, so the mend changes nothing they are judged by.
pub fn sarif_schema() -> serde_json::Result<serde_json::Value> {
    let mut schema: serde_json::Value = serde_json::from_str(OFFICIAL_SARIF_SCHEMA)?;
    for definition in ["run", "toolComponent"] {
        let pattern = &mut schema["definitions"][definition]["properties"]["language"]["pattern"];
        if *pattern == SARIF_SCHEMA_DEFECT {
            *pattern = "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$".into();
        }
    }
    Ok(schema)
}

/// Length of the `/deep/N` chain.
pub const DEEP: u32 = 60;
/// Number of `/many/N` pages.
pub const MANY: u32 = 40;
/// The external link on `/`: a scan must never fetch it.
pub const EXTERNAL: &str = "http://www.example.com/";

/// The running app. It serves until dropped: keep it alive for as long as it is scanned.
pub struct InsecureApp {
    /// Plain http.
    pub http: SocketAddr,
    /// https with a self-signed certificate for `localhost` and `127.0.0.1`.
    pub https: SocketAddr,
    /// The accept loops (and, through their `JoinSet`s, every connection): aborted on drop.
    _servers: [Aborting; 2],
}

struct Aborting(JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl InsecureApp {
    /// Binds both ports on 127.0.0.1 and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<InsecureApp> {
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let https_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (http, https) = (http_listener.local_addr()?, https_listener.local_addr()?);
        let acceptor = tls_acceptor()?;
        let plain = Site { https: false, http_port: http.port() };
        let secure = Site { https: true, http_port: http.port() };
        let http_server = tokio::spawn(accept(http_listener, plain, None));
        let https_server = tokio::spawn(accept(https_listener, secure, Some(acceptor)));
        Ok(InsecureApp { http, https, _servers: [Aborting(http_server), Aborting(https_server)] })
    }

    /// `http://127.0.0.1:<http><path>` (`path` starts with `/`).
    pub fn http_url(&self, path: &str) -> Result<url::Url, url::ParseError> {
        url::Url::parse(&format!("http://{}{path}", self.http))
    }

    /// `https://127.0.0.1:<https><path>` (`path` starts with `/`).
    pub fn https_url(&self, path: &str) -> Result<url::Url, url::ParseError> {
        url::Url::parse(&format!("https://{}{path}", self.https))
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made afresh for each app.
fn tls_acceptor() -> std::io::Result<TlsAcceptor> {
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| other(&e))?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| other(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until aborted; each is served on a task of the set, aborted with it.
async fn accept(listener: TcpListener, site: Site, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait for connections to end instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
        let tls = tls.clone();
        connections.spawn(async move {
            let served = match tls {
                None => serve(stream, site).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve(stream, site).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "insecure app connection ended");
            }
        });
    }
}

/// Longest request head read: the scanner's are a few hundred bytes.
const MAX_HEAD: u64 = 16 * 1024;

/// Serves requests on one connection until the client closes it or asks to.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, site: Site) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = String::new();
        let mut limited = (&mut stream).take(MAX_HEAD);
        loop {
            let before = head.len();
            if limited.read_line(&mut head).await? == 0 {
                return Ok(());
            }
            let line = &head[before..];
            if line == "\r\n" || line == "\n" {
                break;
            }
            if !line.ends_with('\n') {
                return Ok(()); // The head is too long or the client went away mid-line.
            }
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let close = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        });
        let reply = site.reply(&path);
        let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        out.push_str(&reply.body);
        stream.get_mut().write_all(out.as_bytes()).await?;
        stream.get_mut().flush().await?;
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        _ => "Internal Server Error",
    }
}

/// One response of the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// In the order sent (Content-Length is added when sending).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The app's pages, over http or https.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// Served over TLS: `/` loads a script over http and `/login` posts to http.
    pub https: bool,
    /// The http port, which the https pages' insecure URLs point at.
    pub http_port: u16,
}

const HTML: (&str, &str) = ("Content-Type", "text/html; charset=utf-8");

impl Site {
    /// The response to a GET of `target` (path and query).
    pub fn reply(&self, target: &str) -> Reply {
        let path = target.split('?').next().unwrap_or("/");
        let insecure = format!("http://127.0.0.1:{}", self.http_port);
        let page = |title: &str, body: &str| {
            format!(
                "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n\
                 <body>\n{body}\n</body></html>\n"
            )
        };
        let html = |body: String| Reply { status: 200, headers: own(&[HTML]), body };
        match path {
            "/" => {
                let script = if self.https {
                    format!("<script src=\"{insecure}/app.js\"></script>")
                } else {
                    "<script src=\"/app.js\"></script>".to_string()
                };
                html(page(
                    "Intranet",
                    &format!(
                        r##"{script}
<h1 id="top">Intranet</h1>
<ul>
<li><a href="/login">Log in</a></li>
<li><a href="/about">About</a> (<a href="/about#team">the team</a>)</li>
<li><a href="/files/">Files</a></li>
<li><a href="/error">Status</a></li>
<li><a href="/redirect">Old page</a></li>
<li><a href="/deep/1">Archive</a></li>
<li><a href="/many/">Directory</a></li>
<li><a href="{EXTERNAL}">Our public site</a></li>
<li><a href="mailto:it@intranet.example">Write to IT</a></li>
<li><a href="javascript:void(0)">Menu</a> <a href="#top">Top</a></li>
</ul>
<form method="get" action="/search"><input name="q"><button>Search</button></form>
<form method="post" action="/feedback"><textarea name="text"></textarea><button>Send</button></form>"##
                    ),
                ))
            }
            "/login" => {
                let action = if self.https { format!("{insecure}/login") } else { "/login".into() };
                let body = page(
                    "Log in",
                    &format!(
                        r#"<form method="post" action="{action}">
<input name="user"> <input type="password" name="password"> <button>Log in</button>
</form>"#
                    ),
                );
                Reply {
                    status: 200,
                    headers: own(&[
                        HTML,
                        ("Set-Cookie", "session=4f9a2c61d0b3; Path=/"),
                        ("Server", "Apache/2.4.41 (Ubuntu)"),
                        ("X-Powered-By", "PHP/7.4.3"),
                    ]),
                    body,
                }
            }
            "/about" => Reply {
                status: 200,
                headers: own(&[
                    HTML,
                    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
                    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "strict-origin-when-cross-origin"),
                    ("Set-Cookie", "prefs=compact; Path=/; Secure; HttpOnly; SameSite=Lax"),
                ]),
                body: page("About", "<h1>About us</h1><p id=\"team\">The IT team.</p>"),
            },
            "/files/" => html(page(
                "Index of /files",
                r#"<h1>Index of /files</h1>
<table><tr><th>Name</th><th>Last modified</th><th>Size</th></tr>
<tr><td><a href="/">Parent Directory</a></td></tr>
<tr><td><a href="readme.txt">readme.txt</a></td><td>2024-01-02 10:00</td><td>1.2K</td></tr>
<tr><td><a href="backup.sql">backup.sql</a></td><td>2024-01-02 10:00</td><td>48M</td></tr>
</table><address>Apache/2.4.41 (Ubuntu) Server at 127.0.0.1</address>"#,
            )),
            "/files/readme.txt" => text(200, "Shared files of the IT team.\n"),
            "/files/backup.sql" => text(200, "-- MySQL dump 10.13\nCREATE TABLE users (id int);\n"),
            "/error" => Reply {
                status: 500,
                headers: own(&[HTML]),
                body: page(
                    "500 Internal Server Error",
                    r#"<pre>Traceback (most recent call last):
  File "/srv/intranet/app.py", line 42, in status
    return render(db.query("SELECT * FROM status"))
sqlite3.OperationalError: no such table: status</pre>"#,
                ),
            },
            "/redirect" => Reply {
                status: 302,
                headers: own(&[("Location", "/about"), HTML]),
                body: "<a href=\"/about\">moved</a>".into(),
            },
            "/many/" => html(page(
                "Directory",
                &(1..=MANY)
                    .map(|n| format!("<a href=\"/many/{n}\">person {n}</a>\n"))
                    .collect::<String>(),
            )),
            "/search" => html(page("Search", "<p>No results.</p>")),
            "/app.js" => Reply {
                status: 200,
                headers: own(&[("Content-Type", "text/javascript")]),
                body: "console.log('intranet');\n".into(),
            },
            _ => {
                let number = |prefix: &str, max: u32| {
                    path.strip_prefix(prefix)
                        .and_then(|n| n.parse::<u32>().ok())
                        .filter(|n| (1..=max).contains(n))
                };
                if let Some(n) = number("/deep/", DEEP) {
                    let next = if n < DEEP {
                        format!("<a href=\"/deep/{}\">older</a>", n + 1)
                    } else {
                        String::new()
                    };
                    html(page(&format!("Archive {n}"), &next))
                } else if let Some(n) = number("/many/", MANY) {
                    html(page(&format!("Person {n}"), "<p>Works here.</p>"))
                } else {
                    text(404, "not found\n")
                }
            }
        }
    }
}

fn text(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: own(&[("Content-Type", "text/plain; charset=utf-8")]),
        body: body.into(),
    }
}

fn own(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

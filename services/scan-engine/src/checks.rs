//! The passive checks: pure functions of one response (URL, status, headers, body, the parsed
//! page) or of what the TLS handshake showed. They never send anything.
//!
//! Each check returns every [`Observation`] it can make of the one response; [`Reported`] keeps
//! the first of each: header findings once per origin, cookie findings once per cookie name and
//! origin, disclosures once per header and origin, TLS findings once per origin, and content
//! findings (password fields, mixed content, listings, stack traces) once per URL.

use crate::finding::Finding;
use crate::html::Page;
use crate::rules::{self, Rule};
use crate::Severity;
use hyper::header::{self, HeaderMap, HeaderName};
use std::collections::HashSet;
use url::Url;

/// One response as the checks see it.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    pub url: &'a Url,
    pub status: u16,
    pub headers: &'a HeaderMap,
    /// At most the first 2 MiB.
    pub body: &'a [u8],
    /// The body parsed as HTML, when it is HTML.
    pub page: Option<&'a Page>,
}

/// A finding, and what it is reported once for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub finding: Finding,
    /// Findings of one rule with the same key are the same problem: only the first is kept.
    pub once_per: String,
}

/// What the TLS handshake with an origin showed (the connection went on regardless).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// The certificate's problems, each with the verifier's words; empty when it verified.
    pub problems: Vec<CertProblem>,
}

/// Why the server's certificate would have been refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertProblem {
    Expired(String),
    NotYetValid(String),
    /// Signed by its own key.
    SelfSigned(String),
    /// Its issuer chains to no trusted root.
    UntrustedIssuer(String),
    /// It does not name the host asked for.
    WrongName(String),
    /// Any other defect (bad signature, revoked, malformed).
    Invalid(String),
}

/// The findings kept so far: the first observation of each (rule, key).
#[derive(Debug, Default)]
pub struct Reported {
    seen: HashSet<(String, String)>,
}

impl Reported {
    /// The observation's finding, unless the same problem was already reported.
    pub fn first(&mut self, observation: Observation) -> Option<Finding> {
        let key = (observation.finding.rule.clone(), observation.once_per);
        self.seen.insert(key).then_some(observation.finding)
    }
}

/// Whether the response is an HTML page: its Content-Type says so, or, without one, the body
/// starts like a document.
pub fn is_html(headers: &HeaderMap, body: &[u8]) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(ct) => {
            let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
            ct.contains("text/html") || ct.contains("application/xhtml+xml")
        }
        None => {
            let start = String::from_utf8_lossy(&body[..body.len().min(64)]).to_ascii_lowercase();
            let start = start.trim_start();
            start.starts_with("<!doctype html") || start.starts_with("<html")
        }
    }
}

/// Every observation one response allows.
pub fn check(exchange: &Exchange<'_>) -> Vec<Observation> {
    let mut out = Vec::new();
    security_headers(exchange, &mut out);
    cookies(exchange, &mut out);
    disclosure(exchange, &mut out);
    if let Some(page) = exchange.page {
        password_over_http(exchange.url, page, &mut out);
        mixed_content(exchange.url, page, &mut out);
        directory_listing(exchange, page, &mut out);
    }
    verbose_error(exchange, &mut out);
    out
}

/// The certificate findings of one TLS connection to `url`'s origin.
pub fn tls(url: &Url, facts: &TlsFacts) -> Vec<Observation> {
    let at = authority(url);
    facts
        .problems
        .iter()
        .map(|problem| {
            let (rule, what, detail) = match problem {
                CertProblem::Expired(d) => (&rules::TLS_EXPIRED, "has expired", d),
                CertProblem::NotYetValid(d) => (&rules::TLS_EXPIRED, "is not valid yet", d),
                CertProblem::SelfSigned(d) => (&rules::TLS_SELF_SIGNED, "is self-signed", d),
                CertProblem::UntrustedIssuer(d) => {
                    (&rules::TLS_UNTRUSTED, "has an untrusted issuer", d)
                }
                CertProblem::WrongName(d) => (&rules::TLS_WRONG_NAME, "does not name the host", d),
                CertProblem::Invalid(d) => (&rules::TLS_UNTRUSTED, "is invalid", d),
            };
            per_origin(rule, url, "", &format!("the certificate of {at} {what} ({detail})"))
        })
        .collect()
}

/// The finding for a server that answered the TLS handshake with a protocol older than 1.2.
pub fn tls_below_1_2(url: &Url, detail: &str) -> Observation {
    let evidence = format!("{} refused TLS 1.2 and 1.3 ({detail})", authority(url));
    per_origin(&rules::TLS_BELOW_1_2, url, "", &evidence)
}

fn security_headers(x: &Exchange<'_>, out: &mut Vec<Observation>) {
    if x.page.is_none() || (300..400).contains(&x.status) {
        return;
    }
    let h = x.headers;
    let csp = values(h, &header::CONTENT_SECURITY_POLICY);
    if csp.iter().all(|v| v.trim().is_empty()) {
        let evidence = "no Content-Security-Policy header on an HTML page";
        out.push(per_origin(&rules::MISSING_CSP, x.url, "", evidence));
    }
    if x.url.scheme() == "https" {
        let hsts = values(h, &header::STRICT_TRANSPORT_SECURITY);
        let max_age_zero = |v: &String| {
            v.split(';').any(|d| d.trim().to_ascii_lowercase().replace(' ', "") == "max-age=0")
        };
        match hsts.first() {
            None => {
                let evidence = "no Strict-Transport-Security header on an https page";
                out.push(per_origin(&rules::MISSING_HSTS, x.url, "", evidence));
            }
            Some(v) if max_age_zero(v) => {
                let evidence = format!("Strict-Transport-Security: {v}");
                out.push(per_origin(&rules::MISSING_HSTS, x.url, "", &evidence));
            }
            Some(_) => {}
        }
    }
    match values(h, &header::X_CONTENT_TYPE_OPTIONS).first() {
        Some(v) if v.trim().eq_ignore_ascii_case("nosniff") => {}
        Some(v) => {
            let evidence = format!("X-Content-Type-Options: {v}");
            out.push(per_origin(&rules::MISSING_NOSNIFF, x.url, "", &evidence));
        }
        None => {
            let evidence = "no X-Content-Type-Options header";
            out.push(per_origin(&rules::MISSING_NOSNIFF, x.url, "", evidence));
        }
    }
    let frame_options = values(h, &header::X_FRAME_OPTIONS).iter().any(|v| {
        let v = v.trim();
        v.eq_ignore_ascii_case("deny") || v.eq_ignore_ascii_case("sameorigin")
    });
    let frame_ancestors = csp.iter().flat_map(|v| v.split(';')).any(|directive| {
        directive
            .split_ascii_whitespace()
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("frame-ancestors"))
    });
    if !frame_options && !frame_ancestors {
        let evidence = "neither X-Frame-Options nor a CSP frame-ancestors directive";
        out.push(per_origin(&rules::MISSING_CLICKJACKING_PROTECTION, x.url, "", evidence));
    }
    if values(h, &header::REFERRER_POLICY).iter().all(|v| v.trim().is_empty()) {
        let evidence = "no Referrer-Policy header on an HTML page";
        out.push(per_origin(&rules::MISSING_REFERRER_POLICY, x.url, "", evidence));
    }
}

fn cookies(x: &Exchange<'_>, out: &mut Vec<Observation>) {
    let https = x.url.scheme() == "https";
    for cookie in values(x.headers, &header::SET_COOKIE) {
        let mut parts = cookie.split(';');
        let Some((name, _value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            continue;
        };
        let name = name.trim();
        let attributes: Vec<(String, String)> = parts
            .map(|a| {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let has = |k: &str| attributes.iter().any(|(a, _)| a == k);
        let deleted = attributes
            .iter()
            .any(|(a, v)| a == "max-age" && v.parse::<i64>().is_ok_and(|age| age <= 0));
        if name.is_empty() || deleted {
            continue;
        }
        // The value may be a live session: the evidence shows the name and the attributes only.
        let shown: Vec<&str> =
            cookie.split(';').skip(1).map(str::trim).filter(|a| !a.is_empty()).collect();
        let evidence = if shown.is_empty() {
            format!("Set-Cookie: {name}=…")
        } else {
            format!("Set-Cookie: {name}=…; {}", shown.join("; "))
        };
        if !has("secure") {
            let severity = if https { Severity::Medium } else { Severity::Low };
            let mut o = per_origin(&rules::COOKIE_WITHOUT_SECURE, x.url, name, &evidence);
            o.finding = o.finding.at(severity);
            out.push(o);
        }
        if !has("httponly") {
            out.push(per_origin(&rules::COOKIE_WITHOUT_HTTPONLY, x.url, name, &evidence));
        }
        if !has("samesite") {
            out.push(per_origin(&rules::COOKIE_WITHOUT_SAMESITE, x.url, name, &evidence));
        }
    }
}

/// Headers that name the server's software; a digit in the value means a version is shown.
const DISCLOSING: [(&str, &str); 4] = [
    ("server", "Server"),
    ("x-powered-by", "X-Powered-By"),
    ("x-aspnet-version", "X-AspNet-Version"),
    ("x-aspnetmvc-version", "X-AspNetMvc-Version"),
];

fn disclosure(x: &Exchange<'_>, out: &mut Vec<Observation>) {
    for (name, shown) in DISCLOSING {
        for value in values(x.headers, &HeaderName::from_static(name)) {
            if value.chars().any(|c| c.is_ascii_digit()) {
                let evidence = format!("{shown}: {value}");
                out.push(per_origin(&rules::VERSION_DISCLOSURE, x.url, name, &evidence));
            }
        }
    }
}

fn password_over_http(url: &Url, page: &Page, out: &mut Vec<Observation>) {
    let evidence = if url.scheme() == "http" && page.password_fields > 0 {
        Some("a password field on a page served over plain http".to_string())
    } else {
        page.forms
            .iter()
            .filter(|f| f.password)
            .filter_map(|f| f.action.as_ref())
            .find(|action| action.scheme() == "http")
            .map(|action| format!("a form with a password field submits to {action}"))
    };
    if let Some(evidence) = evidence {
        out.push(per_url(&rules::PASSWORD_OVER_HTTP, url, &evidence));
    }
}

fn mixed_content(url: &Url, page: &Page, out: &mut Vec<Observation>) {
    if url.scheme() != "https" {
        return;
    }
    let insecure: Vec<_> = page.resources.iter().filter(|r| r.url.scheme() == "http").collect();
    if let Some(first) = insecure.first() {
        let more = match insecure.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        let evidence = format!("loads {} {}{more} over http", first.kind.element(), first.url);
        out.push(per_url(&rules::MIXED_CONTENT, url, &evidence));
    }
}

fn directory_listing(x: &Exchange<'_>, page: &Page, out: &mut Vec<Observation>) {
    let listing_title =
        |t: &String| t.starts_with("Index of /") || t.starts_with("Directory listing for /");
    let evidence = page
        .title
        .iter()
        .chain(&page.headings)
        .find(|t| listing_title(t))
        .map(|t| format!("page titled \"{t}\""))
        .or_else(|| {
            // IIS lists a directory under "[To Parent Directory]".
            let body = String::from_utf8_lossy(x.body);
            body.contains("[To Parent Directory]").then(|| "[To Parent Directory]".to_string())
        });
    if let Some(evidence) = evidence {
        out.push(per_url(&rules::DIRECTORY_LISTING, x.url, &evidence));
    }
}

fn verbose_error(x: &Exchange<'_>, out: &mut Vec<Observation>) {
    let textual = match x.headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(ct) => {
            let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
            ct.starts_with("text/") || ct.contains("json") || ct.contains("xml")
        }
    };
    if !textual {
        return;
    }
    let body = String::from_utf8_lossy(x.body);
    if let Some(evidence) = stack_trace(&body) {
        out.push(per_url(&rules::VERBOSE_ERROR, x.url, &evidence));
    }
}

/// The lines of a stack trace or framework debug page in `body`, when it shows one.
pub fn stack_trace(body: &str) -> Option<String> {
    let lines: Vec<&str> = body.lines().collect();
    let marked = |i: usize| -> Option<String> {
        let line = lines[i];
        // PHP wraps its labels in <b>: "<b>Fatal error</b>:  Uncaught ... on line <b>3</b>".
        let plain = line.replace("<b>", "").replace("</b>", "");
        let markers = [
            plain.contains("Traceback (most recent call last)"),
            java_frame(&plain),
            plain.contains("Server Error in '") && plain.contains("' Application"),
            ["Fatal error:", "Parse error:", "Warning:", "Notice:"]
                .iter()
                .any(|m| plain.contains(m))
                && plain.contains(" on line "),
            plain.contains("Action Controller: Exception caught"),
            plain.contains("DEBUG = True</code> in your Django settings"),
        ];
        markers.iter().any(|m| *m).then(|| {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty()).unwrap_or(&"");
            format!("{} {}", plain.trim(), next.trim())
        })
    };
    (0..lines.len()).find_map(marked)
}

/// A Java stack frame (`at com.acme.Foo.bar(Foo.java:12)`) or exception line
/// (`java.lang.NullPointerException`).
fn java_frame(line: &str) -> bool {
    let t = line.trim_start();
    let frame = t.strip_prefix("at ").is_some_and(|rest| {
        ["com.", "org.", "java.", "javax.", "jdk.", "sun.", "net.", "io."]
            .iter()
            .any(|p| rest.starts_with(p))
            && rest.contains('(')
            && rest.trim_end().ends_with(')')
    });
    let exception = t.find("java.lang.").is_some_and(|at| {
        let name: String = t[at + "java.lang.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '$')
            .collect();
        name.ends_with("Exception") || name.ends_with("Error")
    });
    frame || exception
}

fn per_origin(rule: &Rule, url: &Url, key: &str, evidence: &str) -> Observation {
    Observation {
        finding: Finding::new(rule, url.as_str(), evidence),
        once_per: format!("{} {key}", url.origin().ascii_serialization()),
    }
}

fn per_url(rule: &Rule, url: &Url, evidence: &str) -> Observation {
    Observation { finding: Finding::new(rule, url.as_str(), evidence), once_per: url.to_string() }
}

fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// `host:port` of the URL, as the evidence names an origin.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    struct Response {
        url: Url,
        status: u16,
        headers: HeaderMap,
        body: String,
    }

    fn response(url: &str, status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Response { url: Url::parse(url).unwrap(), status, headers: map, body: body.to_string() }
    }

    fn observe(r: &Response) -> Vec<Observation> {
        let page = is_html(&r.headers, r.body.as_bytes()).then(|| Page::parse(&r.body, &r.url));
        check(&Exchange {
            url: &r.url,
            status: r.status,
            headers: &r.headers,
            body: r.body.as_bytes(),
            page: page.as_ref(),
        })
    }

    fn rules_of(obs: &[Observation]) -> Vec<&str> {
        obs.iter().map(|o| o.finding.rule.as_str()).collect()
    }

    const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");
    const SECURE: [(&str, &str); 6] = [
        HTML,
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ];

    #[test]
    fn a_bare_html_page_misses_every_security_header() {
        let r = response("https://app/", 200, &[HTML], "<p>hi</p>");
        assert_eq!(
            rules_of(&observe(&r)),
            [
                "missing-csp",
                "missing-hsts",
                "missing-nosniff",
                "missing-clickjacking-protection",
                "missing-referrer-policy"
            ]
        );
        let plain = response("http://app/", 200, &[HTML], "<p>hi</p>");
        assert!(!rules_of(&observe(&plain)).contains(&"missing-hsts"), "no HSTS on plain http");
    }

    #[test]
    fn header_checks_are_for_html_pages_only() {
        let js = response("https://app/app.js", 200, &[("content-type", "text/javascript")], "1");
        assert!(observe(&js).is_empty());
        let redirect = response("https://app/r", 302, &[HTML, ("location", "/")], "<a href=/>");
        assert!(observe(&redirect).is_empty());
        let sniffed = response("http://app/", 200, &[], "  <!DOCTYPE html><p>x");
        assert!(rules_of(&observe(&sniffed)).contains(&"missing-csp"));
    }

    #[test]
    fn correct_headers_and_a_well_flagged_cookie_yield_nothing() {
        let mut headers = SECURE.to_vec();
        headers.push(("set-cookie", "prefs=dark; Path=/; Secure; HttpOnly; SameSite=Lax"));
        for url in ["https://app/about", "http://app/about"] {
            assert_eq!(observe(&response(url, 200, &headers, "<h1>About</h1>")), []);
        }
    }

    #[test]
    fn weak_header_values_count_as_missing() {
        let r = response(
            "https://app/",
            200,
            &[
                HTML,
                ("content-security-policy", "default-src *"),
                ("strict-transport-security", "max-age=0"),
                ("x-content-type-options", "sniff"),
                ("x-frame-options", "ALLOW-FROM https://x"),
                ("referrer-policy", "origin"),
            ],
            "",
        );
        let obs = observe(&r);
        assert_eq!(
            rules_of(&obs),
            ["missing-hsts", "missing-nosniff", "missing-clickjacking-protection"]
        );
        assert_eq!(obs[1].finding.evidence, "X-Content-Type-Options: sniff");
        let framed_by_csp_only = response(
            "http://app/",
            200,
            &[HTML, ("content-security-policy", "frame-ancestors 'self'")],
            "",
        );
        assert!(
            !rules_of(&observe(&framed_by_csp_only)).contains(&"missing-clickjacking-protection")
        );
    }

    #[test]
    fn cookie_flags_weigh_by_scheme_and_hide_the_value() {
        let flags = [("set-cookie", "session=s3cr3t; Path=/"), ("set-cookie", "gone=; Max-Age=0")];
        let obs = observe(&response("http://app/login", 200, &flags, ""));
        assert_eq!(
            rules_of(&obs),
            ["cookie-without-secure", "cookie-without-httponly", "cookie-without-samesite"]
        );
        assert_eq!(obs[0].finding.severity, Severity::Low);
        assert_eq!(obs[1].finding.severity, Severity::Medium);
        assert_eq!(obs[0].finding.evidence, "Set-Cookie: session=…; Path=/");
        assert!(obs.iter().all(|o| !o.finding.evidence.contains("s3cr3t")));
        let https =
            observe(&response("https://app/", 200, &[("set-cookie", "id=1; HttpOnly")], ""));
        assert_eq!(https[0].finding.severity, Severity::Medium);
        assert_eq!(rules_of(&https), ["cookie-without-secure", "cookie-without-samesite"]);
    }

    #[test]
    fn versions_in_server_headers_are_disclosures() {
        let r = response(
            "http://app/",
            404,
            &[
                ("server", "Apache/2.4.41 (Ubuntu)"),
                ("x-powered-by", "PHP/7.4.3"),
                ("x-aspnet-version", "4.0.30319"),
            ],
            "",
        );
        let obs = observe(&r);
        assert_eq!(rules_of(&obs), ["version-disclosure"; 3]);
        assert_eq!(obs[0].finding.evidence, "Server: Apache/2.4.41 (Ubuntu)");
        assert_ne!(obs[0].once_per, obs[1].once_per, "once per header");
        assert!(observe(&response("http://app/", 200, &[("server", "nginx")], "")).is_empty());
    }

    #[test]
    fn passwords_over_http() {
        let form = "<form method=post action=/login><input type=password name=p></form>";
        let plain = observe(&response("http://app/login", 200, &[HTML], form));
        assert!(rules_of(&plain).contains(&"password-over-http"));
        let https = observe(&response("https://app/login", 200, &[HTML], form));
        assert!(!rules_of(&https).contains(&"password-over-http"));
        let to_http = "<form method=post action=http://app/login><input type=password></form>";
        let posting = observe(&response("https://app/login", 200, &[HTML], to_http));
        let found = posting.iter().find(|o| o.finding.rule == "password-over-http").unwrap();
        assert_eq!(found.finding.severity, Severity::High);
        assert_eq!(
            found.finding.evidence,
            "a form with a password field submits to http://app/login"
        );
        let no_password =
            observe(&response("http://app/", 200, &[HTML], "<form><input name=q></form>"));
        assert!(!rules_of(&no_password).contains(&"password-over-http"));
    }

    #[test]
    fn mixed_content_on_https_pages_only() {
        let body = concat!(
            r#"<script src="http://cdn/x.js"></script><img src="http://cdn/i.png">"#,
            r#"<script src="/ok.js"></script>"#
        );
        let obs = observe(&response("https://app/", 200, &[HTML], body));
        let found = obs.iter().find(|o| o.finding.rule == "mixed-content").unwrap();
        assert_eq!(found.finding.evidence, "loads script http://cdn/x.js and 1 more over http");
        assert_eq!(found.once_per, "https://app/");
        let plain = observe(&response("http://app/", 200, &[HTML], body));
        assert!(!rules_of(&plain).contains(&"mixed-content"));
    }

    #[test]
    fn directory_listings_of_common_servers() {
        for body in [
            "<html><head><title>Index of /files</title></head><body><h1>Index of /files</h1>",
            "<title>Directory listing for /</title><h1>Directory listing for /</h1>",
            "<html><body><h1>Index of /pub/</h1><hr><pre><a href=\"../\">../</a>",
            "<title>app - /</title><pre><A HREF=\"/\">[To Parent Directory]</A>",
        ] {
            let obs = observe(&response("http://app/files/", 200, &[HTML], body));
            assert!(rules_of(&obs).contains(&"directory-listing"), "{body}");
        }
        let about =
            observe(&response("http://app/", 200, &[HTML], "<title>Index of tools</title>"));
        assert!(!rules_of(&about).contains(&"directory-listing"));
    }

    #[test]
    fn stack_traces_of_common_frameworks() {
        let cases = [
            "<pre>Traceback (most recent call last):\n  File \"app.py\", line 3, in view\n",
            "java.lang.NullPointerException: boom\n\tat com.acme.Orders.get(Orders.java:42)",
            "<h1>Server Error in '/' Application.</h1>",
            "<br />\n<b>Fatal error</b>:  Uncaught Error in /var/www/x.php on line <b>3</b>",
            "<b>Warning</b>:  include(x.php): failed in /var/www/y.php on line <b>7</b>",
            "<title>Action Controller: Exception caught</title>",
            "<p>You're seeing this error because you have <code>DEBUG = True</code> in your Django \
             settings file.",
        ];
        for body in cases {
            let obs = observe(&response("http://app/error", 500, &[HTML], body));
            let found = obs.iter().find(|o| o.finding.rule == "verbose-error");
            assert!(found.is_some(), "{body}");
        }
        let python = stack_trace(cases[0]).unwrap();
        assert_eq!(
            python,
            "<pre>Traceback (most recent call last): File \"app.py\", line 3, in view"
        );
        assert_eq!(
            stack_trace("all is well: at company.com (see map)\nWarning: slippery floor"),
            None
        );
        let image = response("http://app/x.png", 200, &[("content-type", "image/png")], cases[0]);
        assert!(observe(&image).is_empty());
    }

    #[test]
    fn evidence_is_short_even_for_huge_lines() {
        let body = format!("Traceback (most recent call last): {}", "x".repeat(100_000));
        let obs = observe(&response("http://app/", 500, &[("content-type", "text/plain")], &body));
        assert!(obs[0].finding.evidence.chars().count() <= crate::finding::MAX_EVIDENCE);
    }

    #[test]
    fn tls_problems_are_findings_once_per_origin() {
        let url = Url::parse("https://app:8443/x").unwrap();
        let facts = TlsFacts {
            problems: vec![
                CertProblem::SelfSigned("UnknownIssuer".into()),
                CertProblem::WrongName("NotValidForName".into()),
                CertProblem::Expired("expired".into()),
            ],
        };
        let obs = tls(&url, &facts);
        assert_eq!(rules_of(&obs), ["tls-self-signed", "tls-wrong-name", "tls-expired"]);
        assert_eq!(
            obs[0].finding.evidence,
            "the certificate of app:8443 is self-signed (UnknownIssuer)"
        );
        let mut reported = Reported::default();
        let other_page = Url::parse("https://app:8443/y").unwrap();
        let again = tls(&other_page, &facts);
        let kept: Vec<_> = obs.into_iter().chain(again).filter_map(|o| reported.first(o)).collect();
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|f| f.url == "https://app:8443/x"));
        let old = tls_below_1_2(&url, "protocol version");
        assert_eq!(old.finding.severity, Severity::High);
    }

    #[test]
    fn reported_keeps_per_origin_findings_once_and_per_url_findings_per_url() {
        let mut reported = Reported::default();
        let mut kept = Vec::new();
        for url in ["http://app/", "http://app/other", "http://other/"] {
            for o in observe(&response(url, 500, &[HTML], "Traceback (most recent call last)")) {
                kept.extend(reported.first(o));
            }
        }
        let csp: Vec<&str> =
            kept.iter().filter(|f| f.rule == "missing-csp").map(|f| f.url.as_str()).collect();
        assert_eq!(csp, ["http://app/", "http://other/"]);
        let errors = kept.iter().filter(|f| f.rule == "verbose-error").count();
        assert_eq!(errors, 3);
    }
}

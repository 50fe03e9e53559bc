//! Passive checks on one response: what a DAST scanner reports without sending anything hostile.
//! A first slice of the built-in scan engine, enough for the demo to show results.

use ism_cli::scanner::HttpResponse;

/// One finding.
pub struct Finding {
    pub severity: &'static str,
    pub title: String,
}

pub fn passive_checks(resp: &HttpResponse) -> Vec<Finding> {
    let mut out = Vec::new();
    for header in
        ["Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"]
    {
        if resp.header(header).is_none() {
            out.push(Finding {
                severity: "low",
                title: format!("missing security header {header}"),
            });
        }
    }
    if let Some(server) = resp.header("Server").filter(|s| s.chars().any(|c| c.is_ascii_digit())) {
        out.push(Finding {
            severity: "info",
            title: format!("server banner discloses a version: {server:?}"),
        });
    }
    for (name, value) in resp.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")) {
        let flags = value.to_ascii_lowercase();
        if !flags.contains("httponly") {
            out.push(Finding {
                severity: "medium",
                title: format!("cookie set without HttpOnly ({name}: {value})"),
            });
        }
    }
    if resp.body.to_ascii_lowercase().contains("type=\"password\"") {
        out.push(Finding {
            severity: "medium",
            title: "password form served over plain HTTP".into(),
        });
    }
    out
}

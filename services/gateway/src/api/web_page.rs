//! The Internal Scanning Management page, served by every node at `/` from assets embedded in
//! the binary (no CDN, no build step): same origin as the API, so its roles and tokens apply.
//! The page signs in with a user's API token, kept in the browser tab only.
//!
//! Served with a strict content security policy (scripts and styles from this origin only, no
//! framing): the page is what a security team opens, and our own scanner checks others for the
//! same headers.

use actix_web::http::header;
use actix_web::HttpResponse;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub(super) async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub(super) async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

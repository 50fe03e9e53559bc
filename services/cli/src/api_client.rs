//! A client of the management REST API (used by the `ism` CLI, the demo and the tests).
//!
//! It runs on an actix runtime (awc is single-threaded by design); every call returns the JSON
//! the server sent, or an error carrying the server's own message.

use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("cannot reach the API at {base}: {reason}")]
    Transport { base: String, reason: String },
    #[error("unreadable response: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct ApiClient {
    base: String,
    token: String,
    http: awc::Client,
}

impl ApiClient {
    /// `base` is like `http://127.0.0.1:7070`.
    pub fn new(base: &str, token: &str) -> Self {
        let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Self { base: base.trim_end_matches('/').to_string(), token: token.to_string(), http }
    }

    /// Sends one request; `body` as JSON when given.
    pub async fn call(&self, method: awc::http::Method, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| ApiError::Transport { base: self.base.clone(), reason: e.to_string() })?;
        let status = resp.status();
        let bytes = resp.body().limit(16 * 1024 * 1024).await.map_err(|e| ApiError::Decode(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            Ok(value)
        } else {
            let message = value.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| value.to_string());
            Err(ApiError::Http { status: status.as_u16(), message })
        }
    }

    pub async fn status(&self) -> Result<Value, ApiError> {
        self.call(awc::http::Method::GET, "/api/v1/status", None).await
    }

    pub async fn create_gateway(&self, name: &str, description: &str) -> Result<Value, ApiError> {
        self.call(awc::http::Method::POST, "/api/v1/gateways", Some(&json!({ "name": name, "description": description }))).await
    }

    pub async fn gateways(&self) -> Result<Value, ApiError> {
        self.call(awc::http::Method::GET, "/api/v1/gateways", None).await
    }

    pub async fn gateway(&self, id: &str) -> Result<Value, ApiError> {
        self.call(awc::http::Method::GET, &format!("/api/v1/gateways/{id}"), None).await
    }

    /// Returns `{"endpoint": {...}, "key": "..."}`.
    pub async fn add_endpoint(&self, gateway: &str, name: &str, description: &str, platform: &str) -> Result<Value, ApiError> {
        let body = json!({ "name": name, "description": description, "platform": platform });
        self.call(awc::http::Method::POST, &format!("/api/v1/gateways/{gateway}/endpoints"), Some(&body)).await
    }

    pub async fn endpoints(&self, gateway: &str) -> Result<Value, ApiError> {
        self.call(awc::http::Method::GET, &format!("/api/v1/gateways/{gateway}/endpoints"), None).await
    }

    pub async fn endpoint(&self, id: &str) -> Result<Value, ApiError> {
        self.call(awc::http::Method::GET, &format!("/api/v1/endpoints/{id}"), None).await
    }

    pub async fn endpoint_key(&self, id: &str) -> Result<String, ApiError> {
        let v = self.call(awc::http::Method::GET, &format!("/api/v1/endpoints/{id}/key"), None).await?;
        v["key"].as_str().map(str::to_string).ok_or_else(|| ApiError::Decode("no key in the response".into()))
    }

    /// Returns `{"id", "secret", "socks_address", ...}`; the secret is shown only here.
    pub async fn issue_scanner_credential(&self, gateway: &str, label: &str) -> Result<Value, ApiError> {
        self.call(awc::http::Method::POST, &format!("/api/v1/gateways/{gateway}/scanner-credentials"), Some(&json!({ "label": label }))).await
    }
}

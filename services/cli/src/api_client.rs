//! A client of the management REST API (used by the `ism` CLI, the demo and the tests).
//!
//! It runs on an actix runtime (awc is single-threaded by design); every call returns the JSON
//! the server sent, or an error carrying the server's own message.

use awc::http::Method;
use serde_json::{json, Value};
use std::rc::Rc;
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

/// How long an idle connection is kept for the next request: less than the 5 s after which the
/// gateway's API server (actix-web's default keep-alive) closes it. With awc's default (15 s) a
/// request could go out on a connection the server was closing at that moment and fail with
/// "connector has been disconnected" (seen once in CI, a browser test that paused about 5 s
/// between two API calls).
const KEEP_IDLE_CONNECTION: Duration = Duration::from_secs(2);

/// Called with every response: method, path, status and body.
pub type ResponseObserver = Rc<dyn Fn(&Method, &str, u16, &Value)>;

pub struct ApiClient {
    base: String,
    token: String,
    http: awc::Client,
    observer: Option<ResponseObserver>,
}

impl ApiClient {
    /// `base` is like `http://127.0.0.1:7070`.
    pub fn new(base: &str, token: &str) -> Self {
        let connector = awc::Connector::new().conn_keep_alive(KEEP_IDLE_CONNECTION);
        let http =
            awc::Client::builder().connector(connector).timeout(Duration::from_secs(30)).finish();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
            observer: None,
        }
    }

    /// Shows every response to `observer` (tests check each one against the OpenAPI document).
    pub fn observed(mut self, observer: ResponseObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sends one request; `body` as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let method_name = method.clone();
        let req =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut resp = sent
            .map_err(|e| ApiError::Transport { base: self.base.clone(), reason: e.to_string() })?;
        let status = resp.status();
        let bytes = resp
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if let Some(observe) = &self.observer {
            observe(&method_name, path, status.as_u16(), &value);
        }
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            Err(ApiError::Http { status: status.as_u16(), message })
        }
    }

    pub async fn status(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/status", None).await
    }

    pub async fn create_gateway(&self, name: &str, description: &str) -> Result<Value, ApiError> {
        self.call(
            Method::POST,
            "/api/v1/gateways",
            Some(&json!({ "name": name, "description": description })),
        )
        .await
    }

    pub async fn gateways(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/gateways", None).await
    }

    pub async fn gateway(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, &format!("/api/v1/gateways/{}", percent_encode(id)), None).await
    }

    /// Returns `{"endpoint": {...}, "key": "..."}`.
    pub async fn add_endpoint(
        &self,
        gateway: &str,
        name: &str,
        description: &str,
        platform: &str,
    ) -> Result<Value, ApiError> {
        let body = json!({ "name": name, "description": description, "platform": platform });
        self.call(
            Method::POST,
            &format!("/api/v1/gateways/{}/endpoints", percent_encode(gateway)),
            Some(&body),
        )
        .await
    }

    pub async fn endpoints(&self, gateway: &str) -> Result<Value, ApiError> {
        self.call(
            Method::GET,
            &format!("/api/v1/gateways/{}/endpoints", percent_encode(gateway)),
            None,
        )
        .await
    }

    pub async fn endpoint(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, &format!("/api/v1/endpoints/{}", percent_encode(id)), None).await
    }

    pub async fn endpoint_key(&self, id: &str) -> Result<String, ApiError> {
        let v = self
            .call(Method::GET, &format!("/api/v1/endpoints/{}/key", percent_encode(id)), None)
            .await?;
        v["key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Decode("no key in the response".into()))
    }

    /// Returns `{"id", "secret", "socks_address", ...}`; the secret is shown only here.
    pub async fn issue_scanner_credential(
        &self,
        gateway: &str,
        label: &str,
    ) -> Result<Value, ApiError> {
        self.issue_credential(gateway, label, "scan").await
    }

    /// As [`issue_scanner_credential`](Self::issue_scanner_credential), of kind `scan` or `support`.
    pub async fn issue_credential(
        &self,
        gateway: &str,
        label: &str,
        kind: &str,
    ) -> Result<Value, ApiError> {
        self.call(
            Method::POST,
            &format!("/api/v1/gateways/{}/scanner-credentials", percent_encode(gateway)),
            Some(&json!({ "label": label, "kind": kind })),
        )
        .await
    }

    pub async fn revoke_credential(
        &self,
        gateway: &str,
        credential: &str,
    ) -> Result<Value, ApiError> {
        self.call(
            Method::DELETE,
            &format!(
                "/api/v1/gateways/{}/scanner-credentials/{}",
                percent_encode(gateway),
                percent_encode(credential)
            ),
            None,
        )
        .await
    }

    pub async fn delete_gateway(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, &format!("/api/v1/gateways/{}", percent_encode(id)), None).await
    }

    pub async fn deleted_gateways(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/deleted-gateways", None).await
    }

    /// Edits name and/or description, refused (409) unless the endpoint is still at `version`.
    pub async fn edit_endpoint(
        &self,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
        version: u64,
    ) -> Result<Value, ApiError> {
        let mut body = json!({ "version": version });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        self.call(Method::PATCH, &format!("/api/v1/endpoints/{}", percent_encode(id)), Some(&body))
            .await
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, &format!("/api/v1/endpoints/{}", percent_encode(id)), None).await
    }

    /// Returns `{"key", "key_generation", ...}`: the new key; the old one stops working.
    pub async fn rotate_key(&self, id: &str) -> Result<Value, ApiError> {
        self.call(
            Method::POST,
            &format!("/api/v1/endpoints/{}/key/rotate", percent_encode(id)),
            None,
        )
        .await
    }

    /// Releases the key's binding to its machine; returns the endpoint.
    pub async fn unbind_endpoint(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::POST, &format!("/api/v1/endpoints/{}/unbind", percent_encode(id)), None)
            .await
    }

    /// `support`: `"off"`, `"indefinite"` or a number of days.
    pub async fn set_access(
        &self,
        id: &str,
        scan: Option<bool>,
        support: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut body = json!({});
        if let Some(s) = scan {
            body["scan_access"] = json!(s);
        }
        if let Some(s) = support {
            body["support_access"] = s;
        }
        self.call(
            Method::PUT,
            &format!("/api/v1/endpoints/{}/access", percent_encode(id)),
            Some(&body),
        )
        .await
    }

    /// How many scans the endpoint runs at once: a number, or `"default"` (the gateway's).
    pub async fn set_scan_capacity(&self, id: &str, capacity: Value) -> Result<Value, ApiError> {
        let body = json!({ "scan_capacity": capacity });
        self.call(
            Method::PUT,
            &format!("/api/v1/endpoints/{}/access", percent_encode(id)),
            Some(&body),
        )
        .await
    }

    pub async fn me(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/me", None).await
    }

    pub async fn nodes(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/nodes", None).await
    }

    pub async fn drain_node(&self, node: &str) -> Result<Value, ApiError> {
        let path = format!("/api/v1/nodes/{}/drain", percent_encode(node));
        self.call(Method::POST, &path, None).await
    }

    pub async fn users(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/users", None).await
    }

    pub async fn create_user(
        &self,
        name: &str,
        role: &str,
        email: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut body = json!({ "name": name, "role": role });
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        self.call(Method::POST, "/api/v1/users", Some(&body)).await
    }

    pub async fn change_role(&self, name: &str, role: &str) -> Result<Value, ApiError> {
        self.edit_user(name, &json!({ "role": role })).await
    }

    /// `change` holds any of `role`, `email` (`""` removes it), `notifications` (bool).
    pub async fn edit_user(&self, name: &str, change: &Value) -> Result<Value, ApiError> {
        self.call(Method::PATCH, &format!("/api/v1/users/{}", percent_encode(name)), Some(change))
            .await
    }

    /// Returns `{"webhook", "secret"}`; the secret is shown only here.
    pub async fn add_webhook(
        &self,
        url: &str,
        secret: Option<&str>,
        events: &[String],
    ) -> Result<Value, ApiError> {
        let mut body = json!({ "url": url, "events": events });
        if let Some(s) = secret {
            body["secret"] = json!(s);
        }
        self.call(Method::POST, "/api/v1/webhooks", Some(&body)).await
    }

    /// Queues a scan (`{"endpoint", "targets", ...}` or `{"again": id}`).
    pub async fn start_scan(&self, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, "/api/v1/scans", Some(body)).await
    }

    pub async fn scans(
        &self,
        endpoint: Option<&str>,
        state: Option<&str>,
    ) -> Result<Value, ApiError> {
        let query: Vec<String> = [("endpoint", endpoint), ("state", state)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v))))
            .collect();
        let path = match query.is_empty() {
            true => "/api/v1/scans".to_string(),
            false => format!("/api/v1/scans?{}", query.join("&")),
        };
        self.call(Method::GET, &path, None).await
    }

    pub async fn scan(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, &format!("/api/v1/scans/{}", percent_encode(id)), None).await
    }

    pub async fn cancel_scan(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::POST, &format!("/api/v1/scans/{}/cancel", percent_encode(id)), None).await
    }

    /// The scan's report, `format` `json` or `sarif`.
    pub async fn scan_report(&self, id: &str, format: &str) -> Result<Value, ApiError> {
        let path = format!(
            "/api/v1/scans/{}/report?format={}",
            percent_encode(id),
            percent_encode(format)
        );
        self.call(Method::GET, &path, None).await
    }

    pub async fn webhooks(&self) -> Result<Value, ApiError> {
        self.call(Method::GET, "/api/v1/webhooks", None).await
    }

    pub async fn remove_webhook(&self, id: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, &format!("/api/v1/webhooks/{}", percent_encode(id)), None).await
    }

    pub async fn notifications(&self, limit: usize) -> Result<Value, ApiError> {
        self.call(Method::GET, &format!("/api/v1/notifications?limit={limit}"), None).await
    }

    /// Returns `{"id", "token", ...}`; the token is shown only here.
    pub async fn issue_token(&self, name: &str, label: &str) -> Result<Value, ApiError> {
        self.call(
            Method::POST,
            &format!("/api/v1/users/{}/tokens", percent_encode(name)),
            Some(&json!({ "label": label })),
        )
        .await
    }

    pub async fn revoke_token(&self, name: &str, token: &str) -> Result<Value, ApiError> {
        self.call(
            Method::DELETE,
            &format!("/api/v1/users/{}/tokens/{}", percent_encode(name), percent_encode(token)),
            None,
        )
        .await
    }

    /// The audit timeline; `query` holds `gateway`, `endpoint`, `actor`, `since`, `until`, `limit`.
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<Value, ApiError> {
        let qs: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        let path = if qs.is_empty() {
            "/api/v1/audit".to_string()
        } else {
            format!("/api/v1/audit?{}", qs.join("&"))
        };
        self.call(Method::GET, &path, None).await
    }

    /// `GET /audit/stream`: hands each line to `each` as it arrives; stops (and returns what
    /// `each` said) when `each` fails, say because the reader went away.
    pub async fn audit_stream(
        &self,
        query: &[(&str, String)],
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>, ApiError> {
        use futures_util::StreamExt;
        let qs: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        let url = format!("{}/api/v1/audit/stream?{}", self.base, qs.join("&"));
        let transport = |e: String| ApiError::Transport { base: self.base.clone(), reason: e };
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| transport(e.to_string()))?;
        // The answer began in time; the whole history may take long.
        let mut resp = resp.timeout(Duration::from_secs(24 * 3600));
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.body().await.map_err(|e| ApiError::Decode(e.to_string()))?;
            let value: Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = value["error"].as_str().unwrap_or("the audit stream failed").to_string();
            return Err(ApiError::Http { status, message });
        }
        let mut pending = Vec::new();
        while let Some(chunk) = resp.next().await {
            pending.extend_from_slice(&chunk.map_err(|e| transport(e.to_string()))?);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                if let Err(e) = each(&pending[start..start + end]) {
                    return Ok(Err(e));
                }
                start += end + 1;
            }
            pending.drain(..start);
        }
        Ok(Ok(()))
    }

    pub async fn verify_projections(&self) -> Result<Value, ApiError> {
        self.call(Method::POST, "/api/v1/projections/verify", None).await
    }
}

/// Encoding of a query-string value or of one path segment (everything but unreserved
/// characters): a user's name like `bob?x` or `a/b` stays one segment instead of ending the path.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

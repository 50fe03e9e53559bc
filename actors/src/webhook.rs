//! The webhook aggregate: a subscription that receives notifications as signed JSON POSTs.
//!
//! The signing secret arrives sealed (`credentials::KeySecret::seal`): this aggregate, and so
//! the event log, never sees it in the clear.

use crate::aggregate::Aggregate;
use ism_events::{AggregateKind, NoticeKind, WebhookEvent};
use uuid::Uuid;

/// Longest URL accepted.
const MAX_URL: usize = 2048;

#[derive(Debug, Default)]
pub struct Webhook {
    pub id: Uuid,
    pub added: bool,
    pub removed: bool,
}

pub enum WebhookCommand {
    Add { url: String, secret_sealed: String, events: Vec<NoticeKind> },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {0} does not exist")]
    NotFound(Uuid),
    #[error("webhook {0} already exists")]
    AlreadyExists(Uuid),
    #[error("the webhook URL must be http://host[:port]/path or https://...; {0}")]
    BadUrl(&'static str),
}

/// Checks a webhook URL: http or https, printable ASCII without spaces, a host, at most 2 KiB.
/// Where it may point is the operator's decision (a receiver on the same host is normal).
pub fn checked_url(raw: &str) -> Result<String, WebhookError> {
    let url = raw.trim();
    if url.len() > MAX_URL {
        return Err(WebhookError::BadUrl("it is longer than 2048 characters"));
    }
    if !url.chars().all(|c| c.is_ascii_graphic()) {
        return Err(WebhookError::BadUrl("it holds a space, a control or a non-ASCII character"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(WebhookError::BadUrl("only http and https are supported"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(WebhookError::BadUrl("it needs a host, and no user name or password"));
    }
    Ok(url.to_string())
}

impl Aggregate for Webhook {
    type Command = WebhookCommand;
    type Error = WebhookError;
    type Event = WebhookEvent;
    const KIND: AggregateKind = AggregateKind::Webhook;

    fn new(id: Uuid) -> Self {
        Self { id, ..Default::default() }
    }

    fn apply(&mut self, event: &WebhookEvent) {
        match event {
            WebhookEvent::WebhookAdded { .. } => self.added = true,
            WebhookEvent::WebhookRemoved => self.removed = true,
        }
    }

    fn handle(
        &self,
        command: &WebhookCommand,
        _now_ms: i64,
    ) -> Result<Option<WebhookEvent>, WebhookError> {
        match command {
            WebhookCommand::Add { url, secret_sealed, events } => {
                if self.added {
                    return Err(WebhookError::AlreadyExists(self.id));
                }
                let mut events = events.clone();
                events.sort();
                events.dedup();
                Ok(Some(WebhookEvent::WebhookAdded {
                    url: checked_url(url)?,
                    secret_sealed: secret_sealed.clone(),
                    events,
                }))
            }
            WebhookCommand::Remove if !self.added => Err(WebhookError::NotFound(self.id)),
            WebhookCommand::Remove => Ok((!self.removed).then_some(WebhookEvent::WebhookRemoved)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(
            checked_url(" https://hooks.corp.example/ism ").unwrap(),
            "https://hooks.corp.example/ism"
        );
        assert!(checked_url("http://127.0.0.1:9000").is_ok());
        for bad in [
            "ftp://x/",
            "https://",
            "https:///path",
            "http://user:pw@host/",
            "http://a b/",
            "http://h\u{e9}/",
        ] {
            assert!(checked_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn added_once_removed_once() {
        let add = WebhookCommand::Add {
            url: "http://127.0.0.1:9/hook".into(),
            secret_sealed: "sealed".into(),
            events: vec![
                NoticeKind::EndpointOnline,
                NoticeKind::EndpointOffline,
                NoticeKind::EndpointOnline,
            ],
        };
        Scenario::<Webhook>::given(&[]).when(&add).then(WebhookEvent::WebhookAdded {
            url: "http://127.0.0.1:9/hook".into(),
            secret_sealed: "sealed".into(),
            events: vec![NoticeKind::EndpointOffline, NoticeKind::EndpointOnline],
        });
        Scenario::<Webhook>::given(&[])
            .when(&WebhookCommand::Remove)
            .then_error(WebhookError::NotFound(Uuid::nil()));
        let added = WebhookEvent::WebhookAdded {
            url: "u".into(),
            secret_sealed: "s".into(),
            events: vec![],
        };
        Scenario::<Webhook>::given(std::slice::from_ref(&added))
            .when(&WebhookCommand::Remove)
            .then(WebhookEvent::WebhookRemoved);
        Scenario::<Webhook>::given(&[added, WebhookEvent::WebhookRemoved])
            .when(&WebhookCommand::Remove)
            .then_nothing();
    }
}

//! Webhook events: the subscriptions notifications are posted to.

use super::{encode, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::WebhookEvent;

pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, event: &WebhookEvent) -> TxResult<()> {
    match event {
        WebhookEvent::WebhookAdded { url, secret_sealed, events } => {
            let w = WebhookView {
                id: at.id,
                url: url.clone(),
                secret_sealed: secret_sealed.clone(),
                events: events.clone(),
                created_ms: at.time_ms,
                created_by: at.envelope.actor_shown(),
            };
            tx.webhooks.insert(at.key, encode(&w))?;
        }
        WebhookEvent::WebhookRemoved => {
            tx.webhooks.remove(at.key)?;
        }
    }
    Ok(())
}

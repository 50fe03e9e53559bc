//! Sending a notification by email through an SMTP relay (lettre, rustls with ring).
//!
//! `--smtp-url` takes lettre's connection URLs: `smtp://host:25` (plain, a local relay),
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465` (implicit
//! TLS). Each message carries the notification's id as its `Message-ID`, so a message sent twice
//! (a node died between sending and recording it) is one message to a mail system that
//! de-duplicates, and recognisable as the same one to a person.

use super::message::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;
use uuid::Uuid;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("--smtp-url is not a usable SMTP URL (smtp://host:port, smtp://user:pass@host:587?tls=required, smtps://...): {0}")]
    Url(String),
    #[error("--mail-from is not an email address: {0}")]
    From(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Where it sends, for logs (the URL without its credentials).
    relay: String,
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, MailerError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| MailerError::Url(e.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| MailerError::From(e.to_string()))?;
        let relay = ism_events::escape::without_credentials(smtp_url);
        Ok(Self { transport, from, relay })
    }

    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Sends `message` to every address in `to`, as one message; the error is for the record.
    pub async fn send(&self, id: Uuid, to: &[String], message: &Message) -> Result<(), String> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(&message.subject)
            .message_id(Some(format!("<{}@ism-notifications>", id.simple())));
        for address in to {
            let mailbox =
                address.parse::<Mailbox>().map_err(|e| format!("recipient {address:?}: {e}"))?;
            builder = builder.to(mailbox);
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP {}: {e}", self.relay))
    }
}

//! A webhook receiver for tests: a loopback HTTP server that checks each POST's signature the
//! way a subscriber would (HMAC-SHA256 over `"<t>.<body>"` with its secret, compared in constant
//! time) and answers 500 to the first `fail_first` requests, then 200.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub notification_id: String,
    pub signature_valid: bool,
    pub body: serde_json::Value,
    /// The status the receiver answered.
    pub answered: u16,
}

#[derive(Clone)]
pub struct WebhookReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    pub async fn start(secret: &str, fail_first: usize) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/ism", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let (store, secret) = (received.clone(), secret.to_string());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (store, secret) = (store.clone(), secret.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_string();
                            let length: usize =
                                header(&head, "content-length").parse().unwrap_or(0);
                            while buf.len() < i + 4 + length {
                                let n = s.read(&mut chunk).await.unwrap_or(0);
                                if n == 0 {
                                    return;
                                }
                                buf.extend_from_slice(&chunk[..n]);
                            }
                            break (head, buf[i + 4..i + 4 + length].to_vec());
                        }
                    };
                    let signature_valid = verify(&secret, &header(&head, "ism-signature"), &body);
                    let answered = {
                        let mut all = store.lock().unwrap();
                        let answered = if all.len() < fail_first { 500 } else { 200 };
                        all.push(Delivery {
                            notification_id: header(&head, "ism-notification-id"),
                            signature_valid,
                            body: serde_json::from_slice(&body).unwrap_or_default(),
                            answered,
                        });
                        answered
                    };
                    let reply = format!(
                        "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        WebhookReceiver { url, received }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// `t=<unix>,v1=<hex>`: recomputed with ring, compared in constant time.
fn verify(secret: &str, signature: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let Some(tag) = (0..v1.len())
        .step_by(2)
        .map(|i| v1.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

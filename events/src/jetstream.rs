//! The clustered event log: one NATS JetStream stream, one subject per aggregate.
//!
//! Subjects are `ism.ev.<kind>.<uuid>`. The global position is the stream sequence. Optimistic
//! concurrency uses JetStream's per-subject expected-last-sequence check: the append looks up the
//! aggregate's last message, checks its version, then publishes with that message's stream
//! sequence as the expectation, so a concurrent append on any node makes exactly one of them fail.
//! The envelope id is the message id, so a retried publish within the duplicate window is stored
//! once.

use crate::codec;
use crate::envelope::{AggregateId, Envelope, Recorded};
use crate::log::{recorded, AppendError, EventLog, EventStream, LogError};
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, LastRawMessageErrorKind, StorageType, Stream};
use ism_escape::without_credentials;
use reader::Reader;
use std::time::Duration;

mod reader;

/// The stream holding every event.
pub const STREAM_NAME: &str = "ISM_EVENTS";
const SUBJECT_ROOT: &str = "ism.ev";

pub struct JetStreamLog {
    js: Context,
    stream: Stream,
    /// The servers, as they may be shown ([`shown`]).
    url: String,
}

/// How long a node starting keeps asking NATS for its stream and buckets: after NATS servers
/// restart together, they answer a moment before their streams have leaders again.
pub const SETUP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `setup` (creating or finding a stream or bucket) until it succeeds or `SETUP_PATIENCE`
/// has passed, a second between attempts; what failed is logged as `what`.
pub async fn set_up<T, E: std::fmt::Display, F, Fut>(what: &str, mut setup: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match setup().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what} not ready yet; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The servers of a NATS URL list, `nats://a:4222,nats://b:4222,...` (the servers of one NATS
/// cluster): the client starts with whichever answers and fails over to the others. A URL may
/// carry the credentials the servers ask for (`nats://user:password@a:4222`, or a token as
/// `nats://token@a:4222`; URL-safe characters, as `openssl rand -hex 32` makes).
pub fn nats_servers(spec: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| format!("bad NATS server address {}: {e}", without_credentials(s)))
        })
        .collect()
}

/// `spec` as it may be shown (logs, `/status`, errors): the credentials in its URLs replaced by
/// `***`, so that the event log's password never leaves the node's configuration.
pub fn shown(spec: &str) -> String {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(without_credentials)
        .collect::<Vec<_>>()
        .join(",")
}

/// The environment variable naming a PEM file of the CA that signed the NATS servers'
/// certificates. Set, every connection must be TLS (whatever its URL's scheme) and the servers
/// are trusted on that CA alone; unset, `tls://` URLs are checked against the system's roots.
/// Read where every NATS client is made, as `ISM_JETSTREAM_REPLICAS` is where the log opens, so
/// the gateway, `ism audit` and the benchmark take it alike.
pub const CA_FILE_ENV: &str = "ISM_NATS_CA_FILE";

/// What a client does when no NATS server answers its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Logs why and goes on trying in the background (async-nats hands the client back at
    /// once; whatever uses it first waits), so that nodes may start before their servers.
    WaitForServers,
    /// Fails with the attempt's error: a person at a terminal is told what is wrong at once.
    FirstAttempt,
}

/// A NATS client for the servers of `spec` ([`nats_servers`]), named `name` in the servers'
/// connection lists. Over TLS with [`CA_FILE_ENV`]'s CA when it is set. When no server answers
/// the first attempt, it says why (a server down, a certificate not trusted: async-nats keeps
/// its attempts' errors to its debug lines) and then does what `patience` says.
pub async fn connect_client(
    spec: &str,
    name: &str,
    patience: Patience,
) -> Result<async_nats::Client, String> {
    let servers = nats_servers(spec)?;
    let ca = match std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()) {
        Some(ca) => Some(trusted_ca(std::path::PathBuf::from(ca))?),
        None => None,
    };
    let options = || {
        let options =
            async_nats::ConnectOptions::new().name(name).connection_timeout(Duration::from_secs(5));
        let options = match &ca {
            Some(ca) => options.add_root_certificates(ca.clone()).require_tls(true),
            None => options,
        };
        with_credentials(options, &servers)
    };
    match options().connect(servers.clone()).await {
        Ok(client) => return Ok(client),
        Err(e) if patience == Patience::FirstAttempt => {
            return Err(format!(
                "no NATS server of {} answered: {}",
                shown(spec),
                crate::escaped(&e)
            ));
        }
        Err(e) => tracing::warn!(
            servers = %shown(spec),
            error = %crate::escaped(&e),
            "no NATS server answered; waiting for one"
        ),
    }
    options().retry_on_initial_connect().connect(servers.clone()).await.map_err(|e| e.to_string())
}

/// `path` once it is known to hold at least one PEM certificate: async-nats reads it at every
/// attempt and would only log (at debug) why an unreadable or empty file fails them all.
fn trusted_ca(path: std::path::PathBuf) -> Result<std::path::PathBuf, String> {
    use async_nats::rustls::pki_types::{pem::PemObject, CertificateDer};
    let refused = |why: String| format!("{CA_FILE_ENV}={}: {why}", crate::escaped(&path.display()));
    let certificates = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| refused(format!("cannot read a PEM certificate from it: {e}")))?;
    if certificates.is_empty() {
        return Err(refused("it holds no PEM certificate".to_string()));
    }
    Ok(path)
}

/// Who the servers are told connects: async-nats does not use a URL's credentials itself (its
/// `ServerAddr` only reports them), so the first URL that carries them gives them, a user and
/// password, or a lone token.
fn with_credentials(
    options: async_nats::ConnectOptions,
    servers: &[async_nats::ServerAddr],
) -> async_nats::ConnectOptions {
    match servers.iter().find_map(|s| s.username().map(|user| (user, s.password()))) {
        Some((user, Some(password))) => options.user_and_password(user.into(), password.into()),
        Some((token, None)) => options.token(token.into()),
        None => options,
    }
}

impl JetStreamLog {
    /// Connects to NATS at `url` (one server or a comma-separated list) and creates the event stream (one replica) if it does not exist.
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        Self::connect_with(url, 1, Patience::WaitForServers).await
    }

    /// As [`connect`](Self::connect), creating the stream with `replicas` copies (use 3 on a
    /// three-server NATS cluster so the audit log survives losing a server), and doing what
    /// `patience` says when no server answers the first attempt. An existing stream keeps its
    /// configuration; a different replica count is reported.
    pub async fn connect_with(
        url: &str,
        replicas: usize,
        patience: Patience,
    ) -> Result<Self, LogError> {
        let client =
            connect_client(url, "ism-event-log", patience).await.map_err(LogError::Unavailable)?;
        let js = async_nats::jetstream::new(client);
        let config = Config {
            name: STREAM_NAME.to_string(),
            subjects: vec![format!("{SUBJECT_ROOT}.>")],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        };
        let mut stream = set_up("the event stream", || js.get_or_create_stream(config.clone()))
            .await
            .map_err(unavailable)?;
        let existing = stream.info().await.map_err(unavailable)?.config.num_replicas;
        if existing != replicas {
            tracing::warn!(
                existing,
                wanted = replicas,
                "stream {STREAM_NAME} exists with another replica count; keeping it"
            );
        }
        Ok(Self { js, stream, url: shown(url) })
    }

    fn subject(aggregate: &AggregateId) -> String {
        format!("{SUBJECT_ROOT}.{aggregate}")
    }

    /// The aggregate's current version and the stream sequence of its last event (0, 0 if none).
    async fn aggregate_head(&self, subject: &str) -> Result<(u64, u64), LogError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(msg) => Ok((codec::decode(&msg.payload)?.sequence, msg.sequence)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Whether a publish was refused because its subject moved on since it was read (or could not
/// be checked yet): the writer reads it again and decides again. Servers since 2.12 answer a
/// changed subject with code 10164, which the client reports as an unnamed kind, beside 10071;
/// 10163 comes while a new stream leader is still loading what it checks against. KV writes with
/// an expected revision are such publishes too (`ism-cluster` asks this of them).
pub fn lost_the_race(e: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    let code = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .map(|s| s.error_code());
    e.kind() == PublishErrorKind::WrongLastSequence
        || code == Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
        || code == Some(ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY)
}

/// Aggregates with at most this many events are read one message request per event; longer ones
/// through a consumer. Creating a consumer is a proposal to the whole NATS cluster's metadata
/// group, many times the cost of a request: when a node is lost, the survivors load each of its
/// sessions (a handful of events each) to record its end, thousands at once.
const FETCHED_ONE_BY_ONE: u64 = 32;

impl JetStreamLog {
    /// The subject's events up to stream position `last`, one request each.
    async fn fetch_each(&self, subject: &str, last: u64) -> Result<Vec<Recorded>, LogError> {
        let (mut out, mut from) = (Vec::new(), 1);
        while from <= last {
            let message = self
                .stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject)
                .send()
                .await
                .map_err(unavailable)?;
            out.push(recorded(message.sequence, &message.payload)?);
            from = message.sequence + 1;
        }
        Ok(out)
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl EventLog for JetStreamLog {
    async fn append(&self, envelope: &Envelope) -> Result<u64, AppendError> {
        Ok(self.append_batch(std::slice::from_ref(envelope)).await?[0])
    }

    /// Each event is published expecting the previous one's stream sequence, so a concurrent
    /// writer makes the batch stop where it interfered (the events before stay: each is a
    /// complete fact).
    async fn append_batch(&self, batch: &[Envelope]) -> Result<Vec<u64>, AppendError> {
        let Some(first) = batch.first() else { return Ok(Vec::new()) };
        let subject = Self::subject(&first.aggregate);
        let expected = first.sequence.saturating_sub(1);
        let (actual, mut last_stream_seq) = self.aggregate_head(&subject).await?;
        if actual != expected || first.sequence == 0 {
            return Err(AppendError::Conflict { aggregate: first.aggregate, expected, actual });
        }
        let mut positions = Vec::with_capacity(batch.len());
        for envelope in batch {
            let payload = codec::encode(envelope).map_err(LogError::from)?;
            let publish = PublishMessage::build()
                .payload(payload.into())
                .message_id(envelope.id.to_string())
                .expected_last_subject_sequence(last_stream_seq);
            let ack = async { self.js.send_publish(subject.clone(), publish).await?.await }.await;
            match ack {
                Ok(ack) => {
                    last_stream_seq = ack.sequence;
                    positions.push(ack.sequence);
                }
                Err(e) if lost_the_race(&e) => {
                    let (actual, _) = self.aggregate_head(&subject).await?;
                    return Err(AppendError::Conflict {
                        aggregate: envelope.aggregate,
                        expected: envelope.sequence - 1,
                        actual,
                    });
                }
                Err(e) => return Err(unavailable(e).into()),
            }
        }
        Ok(positions)
    }

    async fn version(&self, aggregate: &AggregateId) -> Result<u64, LogError> {
        Ok(self.aggregate_head(&Self::subject(aggregate)).await?.0)
    }

    async fn read_aggregate(&self, aggregate: &AggregateId) -> Result<Vec<Recorded>, LogError> {
        let subject = Self::subject(aggregate);
        let (version, last) = self.aggregate_head(&subject).await?;
        if last == 0 {
            return Ok(Vec::new());
        }
        if version <= FETCHED_ONE_BY_ONE {
            return self.fetch_each(&subject, last).await;
        }
        let mut reader = Reader::subject(self.stream.clone(), subject);
        let mut out = Vec::new();
        loop {
            let recorded = reader.next().await?;
            let position = recorded.position;
            out.push(recorded);
            if position >= last {
                break;
            }
        }
        reader.finish();
        Ok(out)
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, LogError> {
        // The stream ends after its first error (the caller reads on from its position), but
        // for a record that does not decode: the reader has passed it and goes on.
        let reader = Reader::all_after(self.stream.clone(), after);
        Ok(Box::pin(futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(recorded) => Some((Ok(recorded), Some(reader))),
                Err(e @ LogError::Undecodable { .. }) => Some((Err(e), Some(reader))),
                Err(e) => Some((Err(e), None)),
            }
        })))
    }

    async fn head(&self) -> Result<u64, LogError> {
        let info = self.stream.get_info().await.map_err(unavailable)?;
        Ok(info.state.last_sequence)
    }

    fn describe(&self) -> String {
        format!("NATS JetStream stream {STREAM_NAME} at {}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::{nats_servers, shown};

    #[test]
    fn a_nats_url_list_names_every_server_of_the_cluster() {
        let servers = nats_servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].port(), 4223);
        let err = nats_servers("nats://127.0.0.1:4222,nats://[bad").unwrap_err();
        assert!(err.contains("nats://[bad"), "{err}");
    }

    #[test]
    fn credentials_in_the_urls_are_never_shown() {
        let spec = "nats://ism:s3cret@nats-1:4222, nats://tok3n@nats-2:4222/x,nats://nats-3:4222";
        assert_eq!(
            shown(spec),
            "nats://***@nats-1:4222,nats://***@nats-2:4222/x,nats://nats-3:4222"
        );
        let err = nats_servers("nats://ism:s3cret@[bad").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}

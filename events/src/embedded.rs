//! The embedded event log: sled in this process, the single-node default (no server to run).
//!
//! Trees: `log` maps position -> envelope; `agg` maps (aggregate, sequence) -> position; `heads`
//! maps aggregate -> current version; `meta` holds the last position. An append updates all four
//! in one sled transaction, which is where optimistic concurrency is decided.

use crate::codec;
use crate::envelope::{AggregateId, Envelope, Recorded};
use crate::log::{recorded, AppendError, EventLog, EventStream, LogError};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

const HEAD_KEY: &[u8] = b"head";
/// Events handed to a subscriber per read of the log, so a replay of a long log streams.
const REPLAY_BATCH: usize = 512;

pub struct EmbeddedLog {
    db: sled::Db,
    log: sled::Tree,
    agg: sled::Tree,
    heads: sled::Tree,
    meta: sled::Tree,
    head_tx: watch::Sender<u64>,
    durability: Durability,
    path: String,
}

/// Makes appends durable, one flush at a time, at most one every [`FLUSH_SPACING`].
///
/// sled 0.34's `flush_async` deadlocks when several run at once (spacejam/sled#1308, fixed on
/// sled's main branch but never released): each flush holds sled's concurrency lock on a thread
/// of sled's own I/O pool while waiting for buffer writes that queue behind it, and a
/// transaction waiting for that lock then stops every reader. A fleet of endpoints reconnecting
/// at once froze a node this way. Here a single `flush` runs at a time, on tokio's blocking pool,
/// and every append that finished writing while it ran shares the next one (group commit).
///
/// Flushes are also spaced: each one wakes every idle thread of sled's I/O pool, and with a
/// flush per stream fact a node busy opening streams spent half a core on those wake-ups alone.
/// An append waits at most [`FLUSH_SPACING`] longer for its flush; after a quiet spell it is
/// flushed at once.
#[derive(Default)]
struct Durability {
    /// Appends written to sled's memory so far.
    written: AtomicU64,
    flushed: tokio::sync::Mutex<Flushed>,
}

#[derive(Default)]
struct Flushed {
    /// How many appends the last completed flush covered.
    covers: u64,
    /// When it finished.
    at: Option<tokio::time::Instant>,
}

/// Least time between two flushes.
const FLUSH_SPACING: std::time::Duration = std::time::Duration::from_millis(5);

impl Durability {
    /// Returns once everything this caller wrote before calling is on disk.
    async fn sync(&self, db: &sled::Db) -> Result<(), LogError> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if flushed.covers >= ticket {
            // A flush that began after our write has finished.
            return Ok(());
        }
        if let Some(at) = flushed.at {
            // Appends arriving meanwhile queue on the lock and ride on this flush.
            tokio::time::sleep_until(at + FLUSH_SPACING).await;
        }
        let covers = self.written.load(Ordering::SeqCst);
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.flush()).await.map_err(storage)?.map_err(storage)?;
        *flushed = Flushed { covers, at: Some(tokio::time::Instant::now()) };
        Ok(())
    }
}

/// How long opening a sled store waits for a previous owner in this process (a restarted node,
/// a log reopened after use) to let go of its lock: sled releases it from a background thread a
/// little after the last handle is dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// sled's page cache per store. Its default, 1 GiB, lets a busy node's memory grow with the
/// log it has written; the recent tail that appends, version checks and projections touch fits
/// in far less, and older pages are read back from disk on a replay.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Opens (or creates) a sled store, waiting up to `LOCK_WAIT` for its lock.
pub fn open_sled(path: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open() {
            // sled reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log in directory `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let db = open_sled(path).map_err(storage)?;
        let tree = |name: &str| db.open_tree(name).map_err(storage);
        let (log, agg, heads, meta) = (tree("log")?, tree("agg")?, tree("heads")?, tree("meta")?);
        let head = meta.get(HEAD_KEY).map_err(storage)?.map(|v| be_u64(&v)).unwrap_or(0);
        let (head_tx, _) = watch::channel(head);
        Ok(Self {
            db,
            log,
            agg,
            heads,
            meta,
            head_tx,
            durability: Durability::default(),
            path: path.display().to_string(),
        })
    }
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

fn be_u64(v: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = v.len().min(8);
    a[8 - n..].copy_from_slice(&v[v.len() - n..]);
    u64::from_be_bytes(a)
}

fn agg_key(aggregate: &AggregateId) -> Vec<u8> {
    aggregate.to_string().into_bytes()
}

fn agg_seq_key(aggregate: &AggregateId, sequence: u64) -> Vec<u8> {
    let mut k = agg_key(aggregate);
    k.push(0);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

#[async_trait::async_trait]
impl EventLog for EmbeddedLog {
    async fn append(&self, envelope: &Envelope) -> Result<u64, AppendError> {
        Ok(self.append_batch(std::slice::from_ref(envelope)).await?[0])
    }

    async fn append_batch(&self, batch: &[Envelope]) -> Result<Vec<u64>, AppendError> {
        let Some(first) = batch.first() else { return Ok(Vec::new()) };
        let aggregate = first.aggregate;
        if batch
            .iter()
            .enumerate()
            .any(|(i, e)| e.aggregate != aggregate || e.sequence != first.sequence + i as u64)
        {
            return Err(LogError::Storage(
                "a batch must hold one aggregate's consecutive events".into(),
            )
            .into());
        }
        let encoded = batch
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(LogError::from)?;
        let key = agg_key(&aggregate);
        let expected = first.sequence.saturating_sub(1);
        let result = (&self.log, &self.agg, &self.heads, &self.meta).transaction(
            |(log, agg, heads, meta)| {
                let actual = heads.get(&key)?.map(|v| be_u64(&v)).unwrap_or(0);
                if actual != expected || first.sequence == 0 {
                    return Err(ConflictableTransactionError::Abort(actual));
                }
                let head = meta.get(HEAD_KEY)?.map(|v| be_u64(&v)).unwrap_or(0);
                let mut positions = Vec::with_capacity(batch.len());
                for (i, (envelope, bytes)) in batch.iter().zip(&encoded).enumerate() {
                    let position = head + 1 + i as u64;
                    log.insert(&position.to_be_bytes(), bytes.as_slice())?;
                    agg.insert(
                        agg_seq_key(&aggregate, envelope.sequence),
                        &position.to_be_bytes(),
                    )?;
                    positions.push(position);
                }
                let last = *positions.last().expect("non-empty batch");
                heads.insert(key.as_slice(), &(expected + batch.len() as u64).to_be_bytes())?;
                meta.insert(HEAD_KEY, &last.to_be_bytes())?;
                Ok(positions)
            },
        );
        let positions = match result {
            Ok(p) => p,
            Err(TransactionError::Abort(actual)) => {
                return Err(AppendError::Conflict { aggregate, expected, actual })
            }
            Err(TransactionError::Storage(e)) => return Err(storage(e).into()),
        };
        // An audit log must survive a crash: make the append durable before confirming it.
        self.durability.sync(&self.db).await?;
        let last = *positions.last().expect("non-empty batch");
        self.head_tx.send_modify(|h| *h = (*h).max(last));
        Ok(positions)
    }

    async fn version(&self, aggregate: &AggregateId) -> Result<u64, LogError> {
        Ok(self.heads.get(agg_key(aggregate)).map_err(storage)?.map(|v| be_u64(&v)).unwrap_or(0))
    }

    async fn read_aggregate(&self, aggregate: &AggregateId) -> Result<Vec<Recorded>, LogError> {
        let mut prefix = agg_key(aggregate);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.agg.scan_prefix(&prefix) {
            let (_, pos) = item.map_err(storage)?;
            let position = be_u64(&pos);
            let bytes =
                self.log.get(&pos).map_err(storage)?.ok_or_else(|| {
                    storage(format!("index points at missing position {position}"))
                })?;
            out.push(recorded(position, &bytes)?);
        }
        Ok(out)
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, LogError> {
        let (tx, rx) = mpsc::channel::<Result<Recorded, LogError>>(REPLAY_BATCH);
        let log = self.log.clone();
        let mut head = self.head_tx.subscribe();
        tokio::spawn(async move {
            let mut next = after + 1;
            loop {
                // Only what appends have confirmed (flushed): a row still being made durable, or
                // whose flush failed, must not reach a projection.
                let confirmed = *head.borrow_and_update();
                let batch: Vec<_> = if next <= confirmed {
                    log.range(next.to_be_bytes()..=confirmed.to_be_bytes())
                        .take(REPLAY_BATCH)
                        .collect()
                } else {
                    Vec::new()
                };
                let caught_up = batch.len() < REPLAY_BATCH;
                for item in batch {
                    let rec = item.map_err(storage).and_then(|(k, v)| recorded(be_u64(&k), &v));
                    // A record that does not decode is handed on like an event, and the feed
                    // goes on after it; a storage failure ends the feed.
                    let read = match &rec {
                        Ok(r) => Some(r.position),
                        Err(LogError::Undecodable { position, .. }) => Some(*position),
                        Err(_) => None,
                    };
                    if let Some(position) = read {
                        next = position + 1;
                    }
                    if tx.send(rec).await.is_err() || read.is_none() {
                        return;
                    }
                }
                if caught_up {
                    // Wait for an append past what we have sent (or for the log to be dropped).
                    while *head.borrow_and_update() < next {
                        if head.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        })))
    }

    async fn head(&self) -> Result<u64, LogError> {
        Ok(*self.head_tx.borrow())
    }

    fn describe(&self) -> String {
        format!("embedded event log at {}", self.path)
    }
}

/// What no append can write, for tests of readers: a record of the log as whatever bytes another
/// writer (or a newer build) might have left there.
#[cfg(test)]
impl EmbeddedLog {
    /// Stores `bytes` at the next position, belonging to no aggregate, and returns the position.
    pub(crate) async fn append_raw(&self, bytes: &[u8]) -> u64 {
        let position = *self.head_tx.borrow() + 1;
        self.log.insert(position.to_be_bytes(), bytes).expect("log row");
        self.meta.insert(HEAD_KEY, &position.to_be_bytes()).expect("log head");
        self.durability.sync(&self.db).await.expect("flush");
        self.head_tx.send_replace(position);
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_reopened_as_soon_as_its_previous_owner_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_sled(dir.path()).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        // Opened while the first handle is still held: waits instead of failing.
        let second = open_sled(dir.path());
        holder.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }
}

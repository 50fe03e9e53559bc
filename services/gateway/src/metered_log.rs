//! The event log as the node uses it: every append (and batch) counted by outcome and timed for
//! the node's metrics, whichever backend is behind it.

use crate::metrics::NodeMetrics;
use ism_events::{AggregateId, AppendError, Envelope, EventLog, EventStream, LogError, Recorded};
use std::sync::Arc;
use std::time::Instant;

pub struct MeteredLog {
    inner: Arc<dyn EventLog>,
    metrics: Arc<NodeMetrics>,
}

impl MeteredLog {
    pub fn new(inner: Arc<dyn EventLog>, metrics: Arc<NodeMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn measured<T>(
        &self,
        started: Instant,
        result: Result<T, AppendError>,
    ) -> Result<T, AppendError> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AppendError::Conflict { .. }) => "conflict",
            Err(AppendError::Log(_)) => "error",
        };
        self.metrics.appended(outcome, started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait::async_trait]
impl EventLog for MeteredLog {
    async fn append(&self, envelope: &Envelope) -> Result<u64, AppendError> {
        let started = Instant::now();
        let result = self.inner.append(envelope).await;
        self.measured(started, result)
    }

    async fn append_batch(&self, batch: &[Envelope]) -> Result<Vec<u64>, AppendError> {
        let started = Instant::now();
        let result = self.inner.append_batch(batch).await;
        self.measured(started, result)
    }

    async fn version(&self, aggregate: &AggregateId) -> Result<u64, LogError> {
        self.inner.version(aggregate).await
    }

    async fn read_aggregate(&self, aggregate: &AggregateId) -> Result<Vec<Recorded>, LogError> {
        self.inner.read_aggregate(aggregate).await
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, LogError> {
        self.inner.subscribe(after).await
    }

    async fn head(&self) -> Result<u64, LogError> {
        self.inner.head().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

//! The tunnel actor: one endpoint session on one gateway node, and the scanner streams it
//! carried. It records facts; the bytes themselves flow on tokio tasks (`ism-tunnel`).

use crate::aggregate::Aggregate;
use ism_events::{AggregateKind, RepeatedRefusals, TunnelEvent};
use std::collections::BTreeSet;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct Tunnel {
    pub id: Uuid,
    pub opened: Option<OpenedTunnel>,
}

#[derive(Debug)]
pub struct OpenedTunnel {
    pub endpoint: Uuid,
    pub node: String,
    pub closed: bool,
    /// Streams recorded as opened and not (yet) as closed: what a node that died carried.
    pub open_streams: BTreeSet<u32>,
}

pub enum TunnelCommand {
    Open {
        endpoint: Uuid,
        gateway: Uuid,
        node: String,
        machine: String,
        remote_addr: String,
        agent_version: String,
    },
    RecordStreamOpened {
        stream: u32,
        target: String,
        scanner: String,
        /// The node the scanner came to, for a stream relayed from it.
        via: Option<String>,
    },
    RecordStreamRefused {
        target: String,
        scanner: String,
        reason: String,
    },
    /// Refusals counted after a recorded `StreamRefused` of the same kind (see
    /// `TunnelEvent::StreamRefusalsRepeated`).
    RecordStreamRefusalsRepeated(RepeatedRefusals),
    RecordStreamClosed {
        stream: u32,
        sent: u64,
        received: u64,
        end: String,
    },
    Close {
        reason: String,
    },
    /// Record the end of a stream whose node died before it could: `reason` says so, and the
    /// bytes it moved are unknown (recorded as 0). Nothing if the stream's end is recorded.
    CutStream {
        stream: u32,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("tunnel {0} was already opened")]
    AlreadyOpened(Uuid),
    #[error("tunnel {0} is not open")]
    NotOpen(Uuid),
}

impl Aggregate for Tunnel {
    type Command = TunnelCommand;
    type Error = TunnelError;
    type Event = TunnelEvent;
    const KIND: AggregateKind = AggregateKind::Tunnel;

    fn new(id: Uuid) -> Self {
        Self { id, opened: None }
    }

    fn apply(&mut self, event: &TunnelEvent) {
        use TunnelEvent::*;
        match event {
            TunnelOpened { endpoint, node, .. } => {
                self.opened = Some(OpenedTunnel {
                    endpoint: *endpoint,
                    node: node.clone(),
                    closed: false,
                    open_streams: BTreeSet::new(),
                })
            }
            StreamOpened { stream, .. } => {
                if let Some(t) = &mut self.opened {
                    t.open_streams.insert(*stream);
                }
            }
            StreamClosed { stream, .. } => {
                if let Some(t) = &mut self.opened {
                    t.open_streams.remove(stream);
                }
            }
            // Refusals are history; the session's state does not depend on them.
            StreamRefused { .. } | StreamRefusalsRepeated(_) => {}
            TunnelClosed { .. } => {
                if let Some(t) = &mut self.opened {
                    t.closed = true;
                }
            }
        }
    }

    fn handle(
        &self,
        command: &TunnelCommand,
        _now_ms: i64,
    ) -> Result<Option<TunnelEvent>, TunnelError> {
        // Streams race their session's end: what they did is recorded even after the close
        // (the session existed; the facts are true), but never for a session that never was.
        let existed = || match &self.opened {
            Some(_) => Ok(()),
            None => Err(TunnelError::NotOpen(self.id)),
        };
        Ok(Some(match command {
            TunnelCommand::Open {
                endpoint,
                gateway,
                node,
                machine,
                remote_addr,
                agent_version,
            } => {
                if self.opened.is_some() {
                    return Err(TunnelError::AlreadyOpened(self.id));
                }
                TunnelEvent::TunnelOpened {
                    endpoint: *endpoint,
                    gateway: *gateway,
                    node: node.clone(),
                    machine: machine.clone(),
                    remote_addr: remote_addr.clone(),
                    agent_version: agent_version.clone(),
                }
            }
            TunnelCommand::RecordStreamOpened { stream, target, scanner, via } => {
                existed()?;
                TunnelEvent::StreamOpened {
                    stream: *stream,
                    target: target.clone(),
                    scanner: scanner.clone(),
                    via: via.clone(),
                }
            }
            TunnelCommand::RecordStreamRefused { target, scanner, reason } => {
                existed()?;
                TunnelEvent::StreamRefused {
                    target: target.clone(),
                    scanner: scanner.clone(),
                    reason: reason.clone(),
                }
            }
            TunnelCommand::RecordStreamRefusalsRepeated(r) => {
                existed()?;
                if r.count == 0 {
                    return Ok(None);
                }
                TunnelEvent::StreamRefusalsRepeated(r.clone())
            }
            TunnelCommand::RecordStreamClosed { stream, sent, received, end } => {
                existed()?;
                TunnelEvent::StreamClosed {
                    stream: *stream,
                    sent: *sent,
                    received: *received,
                    end: end.clone(),
                }
            }
            TunnelCommand::CutStream { stream, reason } => match &self.opened {
                Some(t) if t.open_streams.contains(stream) => TunnelEvent::StreamClosed {
                    stream: *stream,
                    sent: 0,
                    received: 0,
                    end: reason.clone(),
                },
                _ => return Ok(None),
            },
            TunnelCommand::Close { reason } => match &self.opened {
                Some(t) if !t.closed => TunnelEvent::TunnelClosed { reason: reason.clone() },
                _ => return Ok(None),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;
    use TunnelEvent::*;

    fn opened() -> TunnelEvent {
        TunnelOpened {
            endpoint: Uuid::nil(),
            gateway: Uuid::nil(),
            node: "n1".into(),
            machine: "m".into(),
            remote_addr: "127.0.0.1:5".into(),
            agent_version: "0.1.0".into(),
        }
    }

    fn closed() -> TunnelEvent {
        TunnelClosed { reason: "peer closed".into() }
    }

    #[test]
    fn closing_twice_records_once() {
        let close = TunnelCommand::Close { reason: "peer closed".into() };
        Scenario::<Tunnel>::given(&[opened()]).when(&close).then(closed());
        Scenario::<Tunnel>::given(&[opened(), closed()]).when(&close).then_nothing();
    }

    #[test]
    fn stream_facts_need_a_session_that_existed_even_if_it_closed_since() {
        let open = TunnelCommand::RecordStreamOpened {
            stream: 1,
            target: "a:80".into(),
            scanner: "s".into(),
            via: None,
        };
        let opened_stream =
            StreamOpened { stream: 1, target: "a:80".into(), scanner: "s".into(), via: None };
        Scenario::<Tunnel>::given(&[]).when(&open).then_error(TunnelError::NotOpen(Uuid::nil()));
        Scenario::<Tunnel>::given(&[opened()]).when(&open).then(opened_stream.clone());
        Scenario::<Tunnel>::given(&[opened(), closed()]).when(&open).then(opened_stream);
        let end = TunnelCommand::RecordStreamClosed {
            stream: 1,
            sent: 1,
            received: 2,
            end: "reset".into(),
        };
        Scenario::<Tunnel>::given(&[opened(), closed()]).when(&end).then(StreamClosed {
            stream: 1,
            sent: 1,
            received: 2,
            end: "reset".into(),
        });
    }

    #[test]
    fn the_streams_a_dead_node_carried_are_cut_once_each() {
        let opened_stream =
            |stream| StreamOpened { stream, target: "a:80".into(), scanner: "s".into(), via: None };
        let ended = StreamClosed { stream: 1, sent: 5, received: 6, end: "finished".into() };
        let carried = [opened(), opened_stream(1), opened_stream(3), ended];
        let cut = |stream| TunnelCommand::CutStream { stream, reason: "node-a died".into() };
        let t = Scenario::<Tunnel>::given(&carried);
        assert_eq!(t.state().opened.as_ref().unwrap().open_streams, BTreeSet::from([3]));
        t.when(&cut(3)).then(StreamClosed {
            stream: 3,
            sent: 0,
            received: 0,
            end: "node-a died".into(),
        });
        t.when(&cut(1)).then_nothing(); // its end is recorded
        t.when(&cut(7)).then_nothing(); // never opened
    }

    #[test]
    fn counted_refusals_are_recorded_once_and_an_empty_count_not_at_all() {
        let counted = |count| RepeatedRefusals {
            scanner: "credential:zap".into(),
            reason: "stream limit reached".into(),
            count,
            targets: vec!["10.0.0.1:80".into()],
            other_targets: 0,
            first_ms: 5,
            last_ms: 9,
        };
        let record = |count| TunnelCommand::RecordStreamRefusalsRepeated(counted(count));
        Scenario::<Tunnel>::given(&[opened()])
            .when(&record(41))
            .then(StreamRefusalsRepeated(counted(41)));
        Scenario::<Tunnel>::given(&[opened()]).when(&record(0)).then_nothing();
        Scenario::<Tunnel>::given(&[])
            .when(&record(1))
            .then_error(TunnelError::NotOpen(Uuid::nil()));
    }
}

#[cfg(test)]
mod partial_batches {
    use super::{Tunnel, TunnelCommand};
    use crate::aggregate::execute_batch;
    use ism_events::embedded::EmbeddedLog;
    use ism_events::{
        AggregateId, AggregateKind, AppendError, Cause, Envelope, Event, EventLog, LogError,
        Recorded,
    };
    use ism_events::{EventStream, SystemClock};
    use std::sync::atomic::{AtomicBool, Ordering};
    use uuid::Uuid;

    /// A log whose first batch records only its first event and then reports a conflict, as a
    /// JetStream publish stopped half-way does.
    struct StopsHalfWay {
        inner: EmbeddedLog,
        stopped: AtomicBool,
    }

    #[async_trait::async_trait]
    impl EventLog for StopsHalfWay {
        async fn append(&self, envelope: &Envelope) -> Result<u64, AppendError> {
            self.inner.append(envelope).await
        }

        async fn append_batch(&self, batch: &[Envelope]) -> Result<Vec<u64>, AppendError> {
            if batch.len() < 2 || self.stopped.swap(true, Ordering::SeqCst) {
                return self.inner.append_batch(batch).await;
            }
            self.inner.append(&batch[0]).await?;
            let (aggregate, actual) = (batch[0].aggregate, batch[0].sequence);
            Err(AppendError::Conflict { aggregate, expected: actual, actual })
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

    #[tokio::test]
    async fn a_batch_recorded_in_part_is_finished_not_recorded_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log = StopsHalfWay {
            inner: EmbeddedLog::open(dir.path()).unwrap(),
            stopped: AtomicBool::new(false),
        };
        let id = Uuid::new_v4();
        let open = TunnelCommand::Open {
            endpoint: Uuid::new_v4(),
            gateway: Uuid::new_v4(),
            node: "node-a".into(),
            machine: "m".into(),
            remote_addr: "127.0.0.1:1".into(),
            agent_version: "1".into(),
        };
        let open = [(open, Cause::default())];
        assert!(execute_batch::<Tunnel>(&log, &SystemClock, id, None, &open).await.1.is_ok());
        let stream = |s: u32| TunnelCommand::RecordStreamOpened {
            stream: s,
            target: "t:80".into(),
            scanner: "c".into(),
            via: None,
        };
        let closed = TunnelCommand::RecordStreamClosed {
            stream: 1,
            sent: 1,
            received: 2,
            end: "finished".into(),
        };
        let batch = [stream(1), closed, stream(3)].map(|c| (c, Cause::default()));
        let (_, result) = execute_batch::<Tunnel>(&log, &SystemClock, id, None, &batch).await;
        assert!(result.unwrap().iter().all(Option::is_none));
        let events: Vec<String> = log
            .read_aggregate(&AggregateId { kind: AggregateKind::Tunnel, id })
            .await
            .unwrap()
            .into_iter()
            .map(|r| match r.envelope.event {
                Event::StreamOpened { stream, .. } => format!("opened {stream}"),
                Event::StreamClosed { stream, .. } => format!("closed {stream}"),
                other => other.name().to_string(),
            })
            .collect();
        assert_eq!(events, ["TunnelOpened", "opened 1", "closed 1", "opened 3"]);
    }
}

//! How the engine reaches a scan's targets: each connection is a stream through the endpoint,
//! opened exactly as an external scanner's (access checked, registered for enforcement, the
//! endpoint's allowlist deciding, the open and its end recorded on the tunnel), and handed to
//! the engine as an in-memory pipe whose far end a task joins to the stream.

use crate::scanner_auth::AuthorisedScanner;
use crate::scanner_stream::{self, NotOpened};
use crate::state::NodeState;
use bytes::Bytes;
use ism_events::escaped;
use ism_ingress_proto::host;
use ism_scan_engine::{ConnectError, Connector};
use ism_tunnel::{Exchanged, OpenStreamError, StreamEnd, StreamReader, StreamWriter};
use ism_tunnel_proto::TargetAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

/// Bytes the pipe between the engine and a stream buffers each way.
const PIPE: usize = 64 * 1024;

/// Opens streams for one scan, as the scanner `scanner` (the scan itself).
pub struct TunnelConnector {
    pub state: Arc<NodeState>,
    pub scanner: Arc<AuthorisedScanner>,
    /// The scan's engine stops: a stream still opening is given up, an open one reset, at once
    /// (the task joining it outlives the engine's end of the pipe).
    pub stop: CancellationToken,
}

/// What a stream not opened means for the scan: the way to every target gone (it fails), or
/// only this target out of reach (the crawl goes on).
fn classify(not_opened: NotOpened) -> ConnectError {
    match not_opened {
        NotOpened::EndpointOffline(name) => {
            ConnectError::Fatal(format!("endpoint {name:?} went offline"))
        }
        NotOpened::Access(_) | NotOpened::OwnerUnreachable(_) => {
            ConnectError::Fatal(not_opened.to_string())
        }
        NotOpened::Open { error: OpenStreamError::SessionClosed, .. } => {
            ConnectError::Fatal("the endpoint went offline (its session closed)".into())
        }
        NotOpened::Open { .. } | NotOpened::CredentialQuota(_) | NotOpened::LogBehind(_) => {
            ConnectError::Target(not_opened.to_string())
        }
    }
}

/// The target as the tunnel names it, by the rules a scanner's target is read with (an IPv6
/// address, an IPv4 address, or a host name the endpoint resolves).
fn target(host: &str, port: u16) -> Result<TargetAddr, ConnectError> {
    host::ipv6(host.as_bytes(), port)
        .or_else(|_| host::name_or_ipv4(host.as_bytes(), port))
        .map_err(|e| ConnectError::Target(format!("target {}: {e}", escaped(host))))
}

impl Connector for TunnelConnector {
    type Io = DuplexStream;

    async fn connect(&self, host: &str, port: u16) -> Result<DuplexStream, ConnectError> {
        let (engine_end, stream_end) = tokio::io::duplex(PIPE);
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let (state, scanner, target) =
            (self.state.clone(), self.scanner.clone(), target(host, port)?);
        let stop = self.stop.clone();
        let span = tracing::info_span!("scan.connection", scan = %scanner.credential_id, target = %escaped(&target));
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let path = state.scanner_path();
                let opened = tokio::select! {
                    opened = scanner_stream::open(&path, &scanner, target) => opened,
                    _ = stop.cancelled() => return,
                };
                match opened {
                    Err(not_opened) => {
                        let _ = opened_tx.send(Err(classify(not_opened)));
                    }
                    Ok(stream) => {
                        let _ = opened_tx.send(Ok(()));
                        stream
                            .exchange(async |r, w, exchanged| {
                                tokio::select! {
                                    end = pipe(stream_end, r, w, exchanged) => end,
                                    _ = stop.cancelled() => StreamEnd::Cancelled,
                                }
                            })
                            .await;
                    }
                }
            },
            span,
        ));
        match opened_rx.await {
            Ok(Ok(())) => Ok(engine_end),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Fatal("the gateway node is stopping".into())),
        }
    }
}

/// Moves bytes between the engine's pipe and the stream until both sides have finished.
async fn pipe(
    pipe: DuplexStream,
    reader: &mut StreamReader,
    writer: &mut StreamWriter,
    exchanged: &Exchanged,
) -> StreamEnd {
    let (mut from_engine, mut to_engine) = tokio::io::split(pipe);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from_engine
                .read(&mut buf)
                .await
                .map_err(|e| StreamEnd::SocketError(e.to_string()))?;
            if n == 0 {
                return writer.finish().await;
            }
            exchanged.sent(n);
            writer.send(Bytes::copy_from_slice(&buf[..n])).await?;
        }
    };
    let down = async {
        while let Some(chunk) = reader.recv().await {
            let chunk = chunk?;
            exchanged.received(chunk.len());
            to_engine.write_all(&chunk).await.map_err(|e| StreamEnd::SocketError(e.to_string()))?;
        }
        to_engine.shutdown().await.map_err(|e| StreamEnd::SocketError(e.to_string()))
    };
    tokio::pin!(up, down);
    tokio::select! {
        done = &mut down => match done.and(up.await) {
            Ok(()) => StreamEnd::Finished,
            Err(end) => end,
        },
        done = &mut up => match done {
            Err(end) => end,
            // The engine is done with the connection: the target has the node's half-closed
            // timeout to finish its side, as a scanner's target has, else the exchange resets
            // the stream rather than leave it open.
            Ok(()) => {
                exchanged.half_closed();
                match down.await {
                    Ok(()) => StreamEnd::Finished,
                    Err(end) => end,
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_tunnel_targets_by_the_ingress_rules() {
        let t = |h| target(h, 80).ok();
        assert_eq!(t("10.1.2.3"), Some(TargetAddr::Ipv4([10, 1, 2, 3].into(), 80)));
        assert_eq!(t("::1"), Some(TargetAddr::Ipv6(std::net::Ipv6Addr::LOCALHOST, 80)));
        assert_eq!(t("intranet.corp"), Some(TargetAddr::Domain("intranet.corp".into(), 80)));
        assert!(t("bad name\u{7}").is_none(), "a name a scanner could not name either");
    }
}

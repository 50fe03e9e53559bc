//! One forwarded request (absolute-URI form), the only one of its connection: the rewritten head,
//! then the body exactly as far as its framing goes, while the response flows back. The exchange
//! ends when the origin, told `Connection: close`, has answered and closed its side. Whatever the
//! client sends after the body (a pipelined request, with its own `Proxy-Authorization`) is read
//! and dropped, never forwarded: nothing reaches the target that was not parsed and rewritten.
//!
//! Serving one request per connection is what keeps this simple and correct: the next request
//! may be for another host or endpoint, and a client that pipelines must be ready for the
//! connection to close after a response anyway (RFC 9112 section 9.3.2).

use bytes::{Bytes, BytesMut};
use ism_ingress_proto::http_proxy::body::Body;
use ism_tunnel::{Exchanged, StreamEnd, StreamReader, StreamWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request to forward: the rewritten head, the bytes already read after it, and where its
/// body ends.
pub struct Forward {
    pub request: Vec<u8>,
    pub buffered: BytesMut,
    pub body: Body,
}

/// How much is read from the client at a time.
const READ_SIZE: usize = 16 * 1024;

fn socket_error(e: std::io::Error) -> StreamEnd {
    StreamEnd::SocketError(e.to_string())
}

/// Runs the exchange over `tcp` and the stream's halves; finishes the stream's side when the
/// client has closed or the response is complete. Counts what it moves in `exchanged`.
pub async fn exchange(
    tcp: &mut TcpStream,
    Forward { request, mut buffered, mut body }: Forward,
    reader: &mut StreamReader,
    writer: &mut StreamWriter,
    exchanged: &Exchanged,
) -> StreamEnd {
    let (mut from_client, mut to_client) = tcp.split();
    let up = async {
        exchanged.sent(request.len());
        writer.send(Bytes::from(request)).await?;
        loop {
            let n = body.feed(&buffered).map_err(|e| StreamEnd::SocketError(e.to_string()))?;
            if n > 0 {
                exchanged.sent(n);
                writer.send(buffered.split_to(n).freeze()).await?;
            }
            if body.is_done() {
                break;
            }
            buffered.reserve(READ_SIZE);
            if from_client.read_buf(&mut buffered).await.map_err(socket_error)? == 0 {
                return Err(StreamEnd::SocketError(
                    "the client closed before its request body was complete".into(),
                ));
            }
        }
        // The body is through. What else the client sends is dropped, until it closes; then the
        // origin is told so (an end, not bytes), as a plain TCP relay would, in case it ignored
        // `Connection: close` and waits.
        loop {
            buffered.clear();
            if from_client.read_buf(&mut buffered).await.map_err(socket_error)? == 0 {
                exchanged.half_closed();
                return writer.finish().await;
            }
        }
    };
    let down = async {
        while let Some(chunk) = reader.recv().await {
            let chunk = chunk?;
            to_client.write_all(&chunk).await.map_err(socket_error)?;
            exchanged.received(chunk.len());
        }
        Ok::<(), StreamEnd>(())
    };
    let mut up_done = false;
    let end = {
        tokio::pin!(up, down);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(end) => break end,
                },
                // The origin finished: the response is complete (or it answered early, before the
                // whole body, and that answer is final).
                r = &mut down => break r.err().unwrap_or(StreamEnd::Finished),
            }
        }
    };
    if end == StreamEnd::Finished && !up_done {
        if let Err(end) = writer.finish().await {
            return end;
        }
    }
    end
}

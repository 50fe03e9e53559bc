//! Running a socket's work on another runtime: the socket is taken off this runtime's reactor and
//! registered with that one's, so its readiness wakes only that runtime's thread.

use std::future::Future;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::task::AbortOnDropHandle;

/// Runs `work` on `runtime` with `tcp` moved there, and returns its output. Dropping the
/// returned future stops the work.
pub async fn run_moved<F, Fut>(
    runtime: &Handle,
    tcp: TcpStream,
    work: F,
) -> std::io::Result<Fut::Output>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let tcp = tcp.into_std()?;
    let task = runtime.spawn(async move { Ok(work(TcpStream::from_std(tcp)?).await) });
    AbortOnDropHandle::new(task).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

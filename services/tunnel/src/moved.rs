//! Running a socket's work on another runtime: the socket is taken off this runtime's reactor and
//! registered with that one's, so its readiness wakes only that runtime's thread.

use std::future::Future;
use std::thread::ThreadId;
use tokio::net::TcpStream;
use tokio::runtime::{Handle, RuntimeFlavor};
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

/// Where a session's tasks run: its runtime, and the thread that runtime runs on when it has
/// only one (a gateway's tunnel thread). Work for the session's streams goes there so that its
/// sockets' readiness and the session's wake-ups stay on one thread.
#[derive(Clone)]
pub struct Home {
    runtime: Handle,
    thread: Option<ThreadId>,
}

impl Home {
    /// The runtime (and thread) this is called on.
    pub(crate) fn current() -> Self {
        let runtime = Handle::current();
        let single = runtime.runtime_flavor() == RuntimeFlavor::CurrentThread;
        Self { runtime, thread: single.then(|| std::thread::current().id()) }
    }

    /// Runs `work` here with `tcp` moved here, as [`run_moved`] does; called from this home's
    /// own thread, it runs `work` in place, since a move would only add a task and a wake-up.
    pub async fn run<F, Fut>(&self, tcp: TcpStream, work: F) -> std::io::Result<Fut::Output>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        if self.thread == Some(std::thread::current().id()) {
            return Ok(work(tcp).await);
        }
        run_moved(&self.runtime, tcp, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A home on a single-threaded runtime of its own thread, as a gateway's tunnel thread is.
    fn home_thread() -> (Home, std::thread::ThreadId, tokio::sync::oneshot::Sender<()>) {
        let (home_tx, home_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.unwrap().block_on(async move {
                home_tx.send((Home::current(), std::thread::current().id())).unwrap();
                let _ = stopped.await;
            })
        });
        let (home, thread) = home_rx.recv().unwrap();
        (home, thread, stop)
    }

    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    /// Work sent home from another runtime runs on the home thread with its socket working
    /// there; work sent home from the home thread itself runs in place, in the sender's task.
    #[tokio::test]
    async fn work_runs_on_the_home_thread_and_in_place_once_there() {
        let (home, home_thread, _stop) = home_thread();
        let (mut client, server) = connected().await;
        let (nested_client, nested_server) = connected().await;
        let inner_home = home.clone();
        let ran = home.run(server, move |mut tcp| async move {
            let outer = (std::thread::current().id(), tokio::task::id());
            tcp.write_all(b"x").await.unwrap();
            let inner = inner_home
                .run(nested_server, |_tcp| async {
                    (std::thread::current().id(), tokio::task::id())
                })
                .await
                .unwrap();
            (outer, inner)
        });
        let ((outer_thread, outer_task), inner) = ran.await.unwrap();
        assert_eq!(outer_thread, home_thread);
        assert_ne!(outer_thread, std::thread::current().id());
        assert_eq!(inner, (home_thread, outer_task), "not moved again: same thread, same task");
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        drop(nested_client);
    }
}

//! Running a socket's work on another runtime: the socket is taken off this runtime's reactor and
//! registered with that one's, so its readiness wakes only that runtime's thread.

use futures_util::future::Either;
use futures_util::FutureExt;
use std::future::Future;
use std::thread::ThreadId;
use tokio::net::TcpStream;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::task::AbortOnDropHandle;

/// `tcp` taken off this runtime's reactor and registered with `runtime`'s. The registration is
/// made from here (it needs no task there), so a failure to move is the caller's to report.
fn moved_to(runtime: &Handle, tcp: TcpStream) -> std::io::Result<TcpStream> {
    let tcp = tcp.into_std()?;
    let _there = runtime.enter();
    TcpStream::from_std(tcp)
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
    /// A single-threaded `runtime`, which `thread` runs.
    pub fn single_thread(runtime: Handle, thread: ThreadId) -> Self {
        Self { runtime, thread: Some(thread) }
    }

    /// The runtime (and thread) this is called on.
    pub(crate) fn current() -> Self {
        let runtime = Handle::current();
        let single = runtime.runtime_flavor() == RuntimeFlavor::CurrentThread;
        Self { runtime, thread: single.then(|| std::thread::current().id()) }
    }

    /// Starts `work` here with `tcp` moved here, without waiting for it.
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, work: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work(moved_to(&self.runtime, tcp)?));
        Ok(())
    }

    /// Runs `work` here with `tcp` moved here, and returns its output; called from this home's
    /// own thread, it runs `work` in place, since a move would only add a task and a wake-up.
    /// Dropping the returned future stops the work.
    ///
    /// Either way the work's future is on the heap (a moved one is spawned before this returns),
    /// so the returned future is small: a caller that awaits it while a connection is held does
    /// not keep a copy of the work's future.
    pub fn run<F, Fut>(
        &self,
        tcp: TcpStream,
        work: F,
    ) -> impl Future<Output = std::io::Result<Fut::Output>>
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        if self.thread == Some(std::thread::current().id()) {
            Either::Left(Box::pin(work(tcp)).map(Ok))
        } else {
            let runtime = &self.runtime;
            let task =
                moved_to(runtime, tcp).map(|tcp| AbortOnDropHandle::new(runtime.spawn(work(tcp))));
            Either::Right(async move { task?.await.map_err(std::io::Error::other) })
        }
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

    /// Work started at home from elsewhere runs there, its socket working, without the starter
    /// waiting for it.
    #[tokio::test]
    async fn started_work_runs_on_the_home_thread() {
        let (home, home_thread, _stop) = home_thread();
        let (mut client, server) = connected().await;
        let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
        home.spawn(server, move |mut tcp| async move {
            tcp.write_all(b"y").await.unwrap();
            let _ = ran_tx.send(std::thread::current().id());
        })
        .unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"y");
        assert_eq!(ran_rx.await.unwrap(), home_thread);
    }
}

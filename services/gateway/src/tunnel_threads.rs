//! The threads endpoint sessions live on: each runs a single-threaded runtime, and an endpoint's
//! connection is moved onto the least busy one when it is accepted. Its session's tasks and the
//! splices of its scanners' streams ([`ism_tunnel::TunnelStream::splice_beside_session`]) then all
//! run on that one thread.
//!
//! Why: on the node's work-stealing runtime a stream's bytes crossed threads several times per
//! frame (the pump on one worker, the session's driver on the other, each socket's readiness
//! waking whichever worker sat in `epoll_wait`), and on a two-core machine those wake-ups cost
//! more than the copies and the encryption. Measured with `ism-bench --only single` on this
//! project's 2-core VM: see "Measured" in ARCHITECTURE.md. Sessions are spread over the threads,
//! so a node still uses every core once it carries several endpoints.

use ism_tunnel::moved::Home;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The node's tunnel threads; none means sessions run on the node's own runtime.
pub struct TunnelThreads {
    threads: Vec<TunnelThread>,
}

struct TunnelThread {
    home: Home,
    /// Connections running on this thread.
    live: Arc<AtomicUsize>,
    /// Dropped to stop the thread: its runtime, and whatever still runs on it, is dropped.
    _stop: oneshot::Sender<()>,
}

/// Counts a connection on its thread for as long as it runs there.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TunnelThreads {
    /// Starts `count` threads (`ism-tunnels-<n>`).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(count);
        for n in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let handle = runtime.handle().clone();
            let thread =
                std::thread::Builder::new().name(format!("ism-tunnels-{n}")).spawn(move || {
                    // The runtime runs its tasks while the thread waits here; when the node lets
                    // the thread go, the runtime is dropped with whatever still runs on it.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let home = Home::single_thread(handle, thread.thread().id());
            threads.push(TunnelThread { home, live: Arc::default(), _stop: stop });
        }
        Ok(Self { threads })
    }

    /// Runs `work` on the thread with the fewest connections, with `tcp` moved onto it (its
    /// readiness then wakes that thread and no other); with no threads, right here. Dropping the
    /// returned future stops the work.
    pub async fn run<F, Fut>(&self, tcp: TcpStream, work: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self.threads.iter().min_by_key(|t| t.live.load(Ordering::Relaxed))
        else {
            // Boxed: inline, the work's future (a whole session's) would size this one, which
            // waits on every endpoint connection's task on the node's runtime.
            Box::pin(work(tcp)).await;
            return Ok(());
        };
        thread.live.fetch_add(1, Ordering::Relaxed);
        let live = Live(thread.live.clone());
        thread
            .home
            .run(tcp, move |tcp| async move {
                let _live = live;
                work(tcp).await;
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go to the least busy thread, each runs there, and a thread's count falls
    /// when its connection ends.
    #[tokio::test]
    async fn connections_spread_over_the_threads_and_run_on_them() {
        let threads = Arc::new(TunnelThreads::start(2).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut names = Vec::new();
        for _ in 0..2 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (name_tx, name_rx) = oneshot::channel();
            let (end_tx, end_rx) = oneshot::channel::<()>();
            let running = tokio::spawn({
                let threads = threads.clone();
                async move {
                    threads
                        .run(server, move |tcp| async move {
                            let name = std::thread::current().name().map(str::to_string);
                            let _ = name_tx.send((name, tcp.peer_addr().is_ok()));
                            let _ = end_rx.await;
                        })
                        .await
                }
            });
            names.push(name_rx.await.unwrap());
            held.push((client, end_tx, running));
        }
        let mut names: Vec<_> =
            names.into_iter().map(|(n, connected)| (n.unwrap(), connected)).collect();
        names.sort();
        assert_eq!(
            names,
            [("ism-tunnels-0".to_string(), true), ("ism-tunnels-1".to_string(), true)]
        );
        let (_, end, running) = held.remove(0);
        end.send(()).unwrap();
        running.await.unwrap().unwrap();
        let live: Vec<usize> =
            threads.threads.iter().map(|t| t.live.load(Ordering::Relaxed)).collect();
        assert_eq!(live.iter().sum::<usize>(), 1, "{live:?}");
    }
}

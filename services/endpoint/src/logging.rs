//! The endpoint's log, as the seed's: lines like `2020-03-06 20:07:21,985 INFO - message`, on
//! the console and in `logs/smartendpoint.log`, which rotates by size so a long-running service
//! cannot fill the disk.

use ism_telemetry::Tracing;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The endpoint's log file name, as in the seed.
pub const LOG_FILE: &str = "smartendpoint.log";
/// Rotate when the file would exceed this size.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`smartendpoint.log.1` is the newest).
pub const KEEP_LOGS: usize = 5;

/// `2020-03-06 20:07:21,985` (UTC) for `ms` since the epoch.
pub fn timestamp(ms: i64) -> String {
    ism_time::format_utc(ms, ',')
}

/// How often a write checks that the log's name still names the open file: a stat every few
/// seconds, not one a line.
const RECHECK: Duration = Duration::from_secs(10);

/// A file that rotates itself by size, and reopens its name when an operator deleted or moved
/// the file it has open (else the lines would go to a file no one can see until a restart).
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    recheck: Duration,
    checked: Instant,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            size,
            recheck: RECHECK,
            checked: Instant::now(),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// A current file an operator deleted has nothing to keep: the next one is started anyway.
    fn rotate(&mut self) -> io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        match std::fs::rename(&self.path, self.rotated(1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    /// Whether the name still names the open file. Only a name that is gone or names another
    /// file says no: a stat that fails otherwise is no reason to stop writing.
    fn is_current(&self) -> bool {
        let Ok(open) = self.file.metadata() else { return true };
        match std::fs::metadata(&self.path) {
            Ok(named) => named.dev() == open.dev() && named.ino() == open.ino(),
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    fn reopen_if_moved(&mut self) -> io::Result<()> {
        if self.checked.elapsed() < self.recheck {
            return Ok(());
        }
        self.checked = Instant::now();
        if self.is_current() {
            return Ok(());
        }
        self.reopen()
    }
}

/// Opens `path` for appending, creating it and its directory if they are missing.
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_moved()?;
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Every log line goes to the console (unless it is kept for other output) and, when there is
/// one, to the rotating file.
#[derive(Clone)]
struct Tee {
    console: bool,
    file: Option<Arc<Mutex<RotatingFile>>>,
}

struct TeeWriter {
    console: bool,
    file: Option<Arc<Mutex<RotatingFile>>>,
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.console {
            let _ = io::stdout().write_all(buf);
        }
        if let Some(f) = &self.file {
            f.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stdout().flush();
        if let Some(f) = &self.file {
            f.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
        }
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter { console: self.console, file: self.file.clone() }
    }
}

/// `2020-03-06 20:07:21,985 INFO - message key=value`, and ` trace_id=<32 hex>` for a line
/// written while serving a scanner's stream: the id of the trace the gateway's lines and spans of
/// that request carry too.
struct SeedFormat;

impl<S, N> FormatEvent<S, N> for SeedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "{} {} - ", timestamp(ism_time::now_ms()), event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        // The innermost span that recorded a trace id (the last field recorded, so the last
        // `trace_id=` of its fields).
        let trace = ctx.lookup_current().and_then(|leaf| {
            leaf.scope().find_map(|span| {
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<N>>()?;
                let id = fields.fields.rsplit(' ').find_map(|kv| kv.strip_prefix("trace_id="))?;
                Some(id.to_string())
            })
        });
        if let Some(id) = trace {
            write!(writer, " trace_id={id}")?;
        }
        writeln!(writer)
    }
}

/// Sends the process's log to the console (when `console`) and to `<log_dir>/smartendpoint.log`
/// (when given), and its spans to `tracer`'s exporter. `RUST_LOG` chooses the log level (default
/// `info`); the spans are exported whatever it is.
pub fn init(console: bool, log_dir: Option<&Path>, tracer: &Tracing) -> io::Result<()> {
    let file = match log_dir {
        Some(dir) => Some(Arc::new(Mutex::new(RotatingFile::open(
            &dir.join(LOG_FILE),
            MAX_LOG_BYTES,
            KEEP_LOGS,
        )?))),
        None => None,
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(SeedFormat)
        .with_writer(Tee { console, file })
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(tracer.layer()).with(lines).try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_inside_a_traced_span_names_its_trace() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(SeedFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("Launching endpoint");
            let span = tracing::info_span!(
                "endpoint.dial",
                target = "app:80",
                trace_id = tracing::field::Empty
            );
            span.record("trace_id", tracing::field::display("4bf92f3577b34da6a3ce929d0e0e4736"));
            span.in_scope(|| tracing::info!("Refused a scanner stream"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<&str> = text.lines().collect();
        assert!(logged[0].ends_with("INFO - Launching endpoint"), "{text}");
        assert!(
            logged[1].ends_with(
                "INFO - Refused a scanner stream trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
            ),
            "{text}"
        );
    }

    #[test]
    fn timestamps_look_like_the_seed() {
        assert_eq!(timestamp(1_583_525_241_985), "2020-03-06 20:07:21,985");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join(LOG_FILE);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            writeln!(f, "line {i:03} {}", "x".repeat(40)).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("line 009"), "{newest}");
        let older = std::fs::read_to_string(dir.path().join("logs/smartendpoint.log.1")).unwrap();
        assert!(older.contains("line 007"), "{older}");
    }

    #[test]
    fn a_deleted_file_is_started_again_at_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        writeln!(f, "line 000 {}", "x".repeat(40)).unwrap();
        std::fs::remove_file(&path).unwrap();
        writeln!(f, "line 001 {}", "x".repeat(40)).unwrap();
        writeln!(f, "line 002 {}", "x".repeat(40)).unwrap();
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("line 002"), "{newest}");
    }

    #[test]
    fn a_deleted_file_is_started_again_at_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut f = RotatingFile::open(&path, 1000, 2).unwrap();
        f.recheck = Duration::ZERO;
        writeln!(f, "line 000").unwrap();
        std::fs::remove_file(&path).unwrap();
        writeln!(f, "line 001").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 001\n");
    }
}

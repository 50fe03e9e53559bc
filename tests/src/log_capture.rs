//! A test process's log lines, as a node's operator would read them (no colours), captured for
//! the test to read. One subscriber per process: a test binary that captures holds one test
//! (nextest runs each in a process of its own, `cargo test` runs a binary's tests in one), so no
//! other test's lines mix in.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The captured log, shared with the subscriber that writes it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures the process's log, at `info` and above, from here on.
    pub fn install() -> Captured {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_env_filter("info")
            .init();
        captured
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

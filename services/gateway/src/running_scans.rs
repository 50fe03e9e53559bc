//! The scans of the built-in engine this node is running, each with the token that stops its
//! engine: a cancel made through this node reaches the engine at once (`crate::scans`).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The scans this node is running, each with the token that stops its engine.
#[derive(Default)]
pub struct RunningScans {
    running: Mutex<HashMap<Uuid, CancellationToken>>,
}

impl RunningScans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CancellationToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers scan `id` as run here; `None` if it already is.
    pub fn begin(&self, id: Uuid) -> Option<CancellationToken> {
        let mut running = self.lock();
        if running.contains_key(&id) {
            return None;
        }
        let token = CancellationToken::new();
        running.insert(id, token.clone());
        Some(token)
    }

    pub fn end(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// Stops scan `id`'s engine, if it runs here. Its end is recorded by whoever stops it.
    pub fn stop(&self, id: Uuid) -> bool {
        self.lock().get(&id).map(|t| t.cancel()).is_some()
    }

    pub fn ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    pub fn runs(&self, id: Uuid) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

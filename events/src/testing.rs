//! Helpers for tests of projections, here and in other crates (feature `testing`).

use crate::envelope::Recorded;
use crate::projection::{Projection, ProjectionError, Row};
use std::sync::Mutex;

/// A projection that keeps the positions of the events it applied, in memory: what a test of
/// the projection driver needs to see which events reached a projection, and in what order.
#[derive(Default)]
pub struct Positions(Mutex<Vec<u64>>);

impl Positions {
    /// The positions applied, in order.
    pub fn applied(&self) -> Vec<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Projection for Positions {
    fn name(&self) -> &'static str {
        "positions"
    }

    fn checkpoint(&self) -> Result<u64, ProjectionError> {
        Ok(self.applied().last().copied().unwrap_or(0))
    }

    fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(rec.position);
        Ok(())
    }

    fn reset(&self) -> Result<(), ProjectionError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    fn dump(&self) -> Result<Vec<Row>, ProjectionError> {
        Ok(self.applied().iter().map(|p| (p.to_be_bytes().to_vec(), Vec::new())).collect())
    }
}

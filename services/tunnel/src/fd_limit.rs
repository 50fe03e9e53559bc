//! Open-file limits: every process that carries tunnels holds a descriptor per stream (and the
//! gateway one per waiting connection), far beyond the usual soft limit of 1024.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit on open descriptors to the hard limit; returns the limit now in force
/// (`None` when unlimited or unknown).
pub fn raise() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit { current: Some(maximum), maximum: Some(maximum) };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return Some(maximum);
            }
        }
    }
    limit.current
}

//! What the processes that carry tunnel bytes (the gateway and the agent) set in glibc at
//! start-up, each measured on this project's machines (ARCHITECTURE.md, "Measured"):
//!
//! - [`copies`]: glibc's large copies, slow at some offsets on AMD CPUs with FSRM, and the
//!   restart with its vector loop that avoids them;
//! - [`heap`]: malloc's trim and mapping thresholds, fixed so that bulk transfers do not hand the
//!   heap back to the kernel and fault it in again.
//!
//! [`set_up`] does both, in the order they need. Each leaves a setting of the operator's alone
//! (read from `GLIBC_TUNABLES` by `find_tunable`) and has its own `off` switch. The heap's
//! thresholds are set by a call into the C library (`mallopt`): the workspace's one `unsafe`
//! outside tests, which this crate denies everywhere else.

use std::ffi::OsStr;

pub mod copies;
pub mod heap;

/// What [`set_up`] did, for the process to log once its logging is up.
#[must_use = "log it once logging is up"]
#[derive(Debug)]
pub struct SetUp {
    pub copies: copies::VectorCopies,
    pub heap: heap::HeapThresholds,
}

impl SetUp {
    /// Says in the log what was done (nothing for what there was nothing to do).
    pub fn log(&self) {
        self.copies.log();
        self.heap.log();
    }
}

/// Sets glibc up for a process that carries tunnel bytes: first the vector copies, which may
/// start the process again (so nothing set before would last), then the heap's thresholds.
/// Call it before any other thread starts.
pub fn set_up() -> SetUp {
    let copies = copies::use_vector_copies();
    SetUp { copies, heap: heap::set_thresholds() }
}

/// The `name=value` pair of `tunables` (`GLIBC_TUNABLES`: pairs separated by colons) that sets
/// `name`, if any.
fn find_tunable<'a>(tunables: &'a str, name: &str) -> Option<&'a str> {
    tunables.split(':').find(|tunable| tunable.split('=').next() == Some(name))
}

/// Whether an operator's switch (`ISM_VECTOR_COPIES`, `ISM_HEAP_THRESHOLDS`) says `off`.
fn switched_off(switch: Option<&OsStr>) -> bool {
    switch == Some(OsStr::new("off"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunable_is_found_by_its_whole_name() {
        let tunables = "glibc.malloc.trim_threshold=1:glibc.cpu.x86_rep_movsb_threshold=4194304";
        assert_eq!(
            find_tunable(tunables, "glibc.cpu.x86_rep_movsb_threshold"),
            Some("glibc.cpu.x86_rep_movsb_threshold=4194304")
        );
        assert_eq!(find_tunable(tunables, "glibc.malloc.trim"), None, "not a prefix");
        assert_eq!(find_tunable("", "glibc.malloc.trim_threshold"), None);
        assert!(switched_off(Some(OsStr::new("off"))));
        assert!(!switched_off(Some(OsStr::new("on"))) && !switched_off(None));
    }
}

//! malloc's heap thresholds, fixed for the processes that carry tunnel bytes.
//!
//! A pump reads its socket into a buffer of up to 4 MiB (up to 16 Data frames of 256 KiB) that
//! lives until its frames are written out, and rustls allocates and frees a buffer of up to 16
//! KiB for every record. glibc's defaults adapt to that badly. Its thresholds move: a block above the mapping threshold
//! (128 KiB at first) is mapped on its own, and freeing one raises that threshold to its size (up
//! to 32 MiB) and the trim threshold to twice that; beyond the trim threshold a heap's free top
//! goes back to the kernel. With 256 KiB frames that is about half a
//! MiB, so a thread whose frames in flight come and go hands the top of its heap back (`madvise`)
//! and faults it in again at its next reads. With eight bulk streams through one endpoint, 25-30%
//! of the gateway's tunnel thread went to those page faults, and that thread was what
//! bounded them ("Measured, 2026-12-04 (seventh session)" in ARCHITECTURE.md).
//!
//! Fixed thresholds stop that ([`set_thresholds`]): a heap keeps up to [`TRIM_THRESHOLD`] free at
//! its top (plus glibc's pad of 128 KiB) before handing any back, and only blocks of
//! [`MMAP_THRESHOLD`] or more are mapped on their own, so blocks of 128 KiB to 8 MiB now always
//! come from a heap. The price: after a burst each heap may keep that much free at its top (glibc
//! makes up to eight arenas per core, so 128 MiB at most on two cores), and free memory below
//! blocks still in use stays, as it always did. An operator who sets either threshold (in
//! `GLIBC_TUNABLES`, or the older `MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_`) keeps
//! their values, and `ISM_HEAP_THRESHOLDS=off` keeps glibc's.

use crate::{find_tunable, switched_off};
use ism_escape::escaped;
use std::ffi::OsString;

/// Free memory a heap keeps at its top rather than giving it back: room for a pump's largest
/// read (4 MiB) freed at the top beside the frames of other streams in flight. At 4 MiB, reads
/// of 3.5 MiB, under the mapping threshold, bought nothing in A/B pairs; by our reading, not
/// profiled, a freed read buffer next to the top was handed back and faulted in again.
pub const TRIM_THRESHOLD: i32 = 8 << 20;

/// Blocks at least this large are mapped on their own: above anything the tunnel allocates (a
/// pump's read buffer, at most 4 MiB and its headers; rustls' buffers hold at most a few frames).
pub const MMAP_THRESHOLD: i32 = 8 << 20;

/// The operator's switch: `off` keeps glibc's thresholds.
const SWITCH: &str = "ISM_HEAP_THRESHOLDS";

/// The tunables and the older variables by which an operator sets either threshold.
const TUNABLES: [&str; 2] = ["glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold"];
const VARIABLES: [&str; 2] = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"];

/// What [`set_thresholds`] did, for the process to log once its logging is up.
#[must_use = "log it once logging is up"]
#[derive(Debug, PartialEq, Eq)]
pub enum HeapThresholds {
    /// Both thresholds are this crate's.
    Set,
    /// The environment sets a threshold (shown) or `ISM_HEAP_THRESHOLDS=off`: glibc's or the
    /// operator's thresholds stay.
    OperatorsChoice(String),
    /// Not glibc on Linux: its allocator has no such thresholds.
    NotGlibc,
    /// glibc refused the named threshold; the ones before it are set.
    Refused(&'static str),
}

impl HeapThresholds {
    /// Says in the log what was done: nothing when there was nothing to do.
    pub fn log(&self) {
        match self {
            HeapThresholds::Set => tracing::info!(
                "heap thresholds fixed: up to {} MiB kept free at the top of each heap, blocks of \
                 {} MiB and more mapped apart",
                TRIM_THRESHOLD >> 20,
                MMAP_THRESHOLD >> 20
            ),
            HeapThresholds::OperatorsChoice(choice) => tracing::info!(
                choice = %escaped(choice),
                "heap thresholds left as the environment sets them"
            ),
            HeapThresholds::NotGlibc => {}
            HeapThresholds::Refused(name) => tracing::warn!(
                "glibc refused the heap's {name} threshold: freed memory may be given back and \
                 faulted in again under bulk transfers"
            ),
        }
    }
}

/// Fixes glibc's heap thresholds for this process, unless its environment sets them. Call it
/// before any other thread starts (see `apply`).
pub fn set_thresholds() -> HeapThresholds {
    match operators_choice(&|name| std::env::var_os(name)) {
        Some(choice) => HeapThresholds::OperatorsChoice(choice),
        None => apply(),
    }
}

/// Whether [`set_thresholds`] would set them in a process started with this process's
/// environment (the benchmark records it beside its figures).
pub fn thresholds_planned() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        && operators_choice(&|name| std::env::var_os(name)).is_none()
}

/// The setting in the environment `env` that makes this leave the thresholds alone, shown as
/// `NAME=value`; none when they are this crate's to set.
fn operators_choice(env: &dyn Fn(&str) -> Option<OsString>) -> Option<String> {
    if switched_off(env(SWITCH).as_deref()) {
        return Some(format!("{SWITCH}=off"));
    }
    if let Some(tunables) = env("GLIBC_TUNABLES") {
        let tunables = tunables.to_string_lossy();
        if TUNABLES.iter().any(|name| find_tunable(&tunables, name).is_some()) {
            return Some(format!("GLIBC_TUNABLES={tunables}"));
        }
    }
    VARIABLES.iter().find_map(|name| env(name).map(|v| format!("{name}={}", v.to_string_lossy())))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> HeapThresholds {
    let thresholds = [
        (libc::M_TRIM_THRESHOLD, "trim", TRIM_THRESHOLD),
        (libc::M_MMAP_THRESHOLD, "mmap", MMAP_THRESHOLD),
    ];
    for (param, name, value) in thresholds {
        // SAFETY: `mallopt` takes no pointer and refuses a value it does not accept (returns 0).
        // It sets the parameter under the main arena's lock only, while other arenas read the
        // parameters without one: both `main`s and the bench's roles call this before any other
        // thread starts.
        #[allow(unsafe_code)]
        let accepted = unsafe { libc::mallopt(param, value) } == 1;
        if !accepted {
            return HeapThresholds::Refused(name);
        }
    }
    HeapThresholds::Set
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> HeapThresholds {
    HeapThresholds::NotGlibc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_thresholds_are_ours_to_set_unless_the_environment_sets_one() {
        assert_eq!(operators_choice(&env(&[])), None);
        let other = [("GLIBC_TUNABLES", "glibc.cpu.x86_rep_movsb_threshold=4194304")];
        assert_eq!(operators_choice(&env(&other)), None, "another tunable is not a threshold");
        assert_eq!(operators_choice(&env(&[(SWITCH, "on")])), None);
        let tunable = [("GLIBC_TUNABLES", "glibc.cpu.x=1:glibc.malloc.mmap_threshold=65536")];
        assert_eq!(
            operators_choice(&env(&tunable)).as_deref(),
            Some("GLIBC_TUNABLES=glibc.cpu.x=1:glibc.malloc.mmap_threshold=65536")
        );
        let variable = [("MALLOC_TRIM_THRESHOLD_", "131072")];
        assert_eq!(
            operators_choice(&env(&variable)).as_deref(),
            Some("MALLOC_TRIM_THRESHOLD_=131072")
        );
        let variable = [("MALLOC_MMAP_THRESHOLD_", "65536")];
        assert_eq!(
            operators_choice(&env(&variable)).as_deref(),
            Some("MALLOC_MMAP_THRESHOLD_=65536")
        );
        assert_eq!(
            operators_choice(&env(&[(SWITCH, "off")])).as_deref(),
            Some("ISM_HEAP_THRESHOLDS=off")
        );
    }

    /// After [`apply`], a 1 MiB block comes from a heap (glibc's default maps anything above
    /// 128 KiB apart), and a block above [`MMAP_THRESHOLD`] is still mapped apart, as malloc's own
    /// count of mapped blocks shows. Skipped when the environment sets the thresholds.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn blocks_below_the_mapping_threshold_come_from_a_heap() {
        let environment = |name: &str| std::env::var_os(name);
        let mapping_limited = environment("MALLOC_MMAP_MAX_").is_some()
            || environment("GLIBC_TUNABLES").is_some_and(|t| {
                find_tunable(&t.to_string_lossy(), "glibc.malloc.mmap_max").is_some()
            });
        if operators_choice(&environment).is_some() || mapping_limited {
            return;
        }
        let mapped = || {
            // SAFETY: `mallinfo2` takes nothing and returns malloc's statistics by value.
            #[allow(unsafe_code)]
            let info = unsafe { libc::mallinfo2() };
            info.hblks
        };
        assert_eq!(apply(), HeapThresholds::Set);
        let before = mapped();
        // Through `black_box`, so that an optimised build keeps the allocations.
        let from_a_heap = std::hint::black_box(Vec::<u8>::with_capacity(1 << 20));
        assert_eq!(mapped(), before, "a 1 MiB block comes from a heap");
        let large =
            std::hint::black_box(Vec::<u8>::with_capacity(MMAP_THRESHOLD as usize + (1 << 20)));
        assert_eq!(mapped(), before + 1, "a block above the threshold is mapped apart");
        drop((from_a_heap, large));
    }
}

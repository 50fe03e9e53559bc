//! Large memory copies on AMD CPUs that report fast short `rep movsb` (FSRM: Zen 3 and later),
//! under glibc.
//!
//! glibc 2.36 (Debian 12) copies anything above about 2 KiB with `rep movsb` on such a CPU. On the
//! AMD EPYC this project is measured on, that instruction copies 16 or 64 KiB at 3.5 GB/s instead
//! of 50-100 GB/s whenever the destination lies 1 to 15 bytes past the source, counted modulo 64
//! (and at about 42 GB/s at 16 to 31 bytes); glibc's vector loop copies at 80-100 GB/s at every
//! offset (Measured, 2026-12-04, sixth session, in ARCHITECTURE.md). The tunnel's copies land on
//! such offsets by chance: rustls writes each record 5 bytes into its buffer, tungstenite each
//! frame 2 to 14 bytes into its own, and the allocator places buffers at 16-byte steps, so which
//! copies are slow changes from buffer to buffer and from run to run. In three pairs of runs of
//! one build, the vector loop took a lone stream's CPU per MiB from 2 030-2 510 µs to
//! 1 340-1 430 µs.
//!
//! glibc's tunable `glibc.cpu.x86_rep_movsb_threshold` above the largest copy (4 MiB) makes it
//! use the vector loop instead. glibc reads tunables only when a program starts, so a process
//! that carries tunnel bytes starts itself again with the tunable added ([`use_vector_copies`]).
//! An operator who sets the threshold in `GLIBC_TUNABLES` keeps their value. The kernel's copies
//! into and out of sockets use `rep movsb` too, and no setting of ours reaches them.

use std::ffi::OsString;

/// glibc's tunable: copies at least this long use `rep movsb`.
const THRESHOLD_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Above every copy the tunnel makes (its frames are at most 256 KiB; rustls' buffers hold at
/// most a few of them).
const THRESHOLD: &str = "4194304";

/// Set in the restarted process, so that a glibc which drops the tunable (as it may for a
/// set-user-ID program) cannot make it restart forever.
const RESTARTED: &str = "ISM_VECTOR_COPIES_RESTARTED";

/// What [`use_vector_copies`] found, for the process to log once its logging is up.
#[derive(Debug, PartialEq, Eq)]
pub enum VectorCopies {
    /// Not an AMD CPU with FSRM, or not glibc on x86-64 Linux: nothing to change.
    NotNeeded,
    /// The threshold is set, by this process's restart or by the operator; the value is
    /// `GLIBC_TUNABLES`.
    InPlace(String),
    /// The CPU is affected, but the process could not start itself again; large copies stay
    /// as glibc chose them.
    Unavailable(String),
}

impl VectorCopies {
    /// Says in the log what was found: nothing when there was nothing to change.
    pub fn log(&self) {
        match self {
            VectorCopies::NotNeeded => {}
            VectorCopies::InPlace(tunables) => tracing::info!(
                tunables = ?tunables,
                "large copies use glibc's vector loop (GLIBC_TUNABLES sets x86_rep_movsb_threshold)"
            ),
            VectorCopies::Unavailable(why) => tracing::warn!(
                "large copies stay on rep movsb, slow at some offsets on this AMD CPU: {why:?}"
            ),
        }
    }
}

/// Makes glibc copy with its vector loop on CPUs where `rep movsb` is slow at some offsets: if
/// the CPU is affected and `GLIBC_TUNABLES` does not set the threshold yet, starts this program
/// again (the same executable, arguments and process) with it added. Call it first thing in
/// `main`, before any thread or descriptor is opened; it returns only when no restart was needed
/// or the restart failed.
pub fn use_vector_copies() -> VectorCopies {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")) {
        return VectorCopies::NotNeeded;
    }
    let current = std::env::var("GLIBC_TUNABLES").ok();
    let Some(tunables) = with_threshold(current.as_deref()) else {
        return VectorCopies::InPlace(current.unwrap_or_default());
    };
    if !affected_cpu() {
        return VectorCopies::NotNeeded;
    }
    if std::env::var_os(RESTARTED).is_some() {
        return VectorCopies::Unavailable("glibc dropped GLIBC_TUNABLES at the restart".into());
    }
    restart_with(&tunables)
}

#[cfg(unix)]
fn restart_with(tunables: &str) -> VectorCopies {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| OsString::from("ism"));
    // `/proc/self/exe` is this very executable, even if its file was replaced since it started.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(RESTARTED, "1")
        .exec();
    VectorCopies::Unavailable(format!("restarting with GLIBC_TUNABLES failed: {error}"))
}

#[cfg(not(unix))]
fn restart_with(_: &str) -> VectorCopies {
    VectorCopies::NotNeeded
}

/// Whether this machine's CPU is one whose `rep movsb` is slow at some offsets (an AMD CPU with
/// FSRM, from `/proc/cpuinfo`).
pub fn affected_cpu() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    rep_movsb_misaligned_slow(&cpuinfo)
}

/// `GLIBC_TUNABLES` with the threshold added, or `None` when it already sets one (the
/// operator's value, or ours after the restart).
fn with_threshold(current: Option<&str>) -> Option<String> {
    let current = current.unwrap_or_default();
    let names_it =
        current.split(':').any(|tunable| tunable.split('=').next() == Some(THRESHOLD_TUNABLE));
    if names_it {
        return None;
    }
    let ours = format!("{THRESHOLD_TUNABLE}={THRESHOLD}");
    Some(if current.is_empty() { ours } else { format!("{current}:{ours}") })
}

/// Whether `/proc/cpuinfo` describes an AMD CPU with FSRM, the CPUs glibc gives `rep movsb`
/// for copies above 2 KiB and on which it is slow at some offsets. Intel CPUs with FSRM lose
/// about a quarter on misaligned destinations (Intel's optimisation manual), not 95%: left as
/// they are.
fn rep_movsb_misaligned_slow(cpuinfo: &str) -> bool {
    let field = |name: &str| {
        cpuinfo
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim())
    };
    field("vendor_id") == Some("AuthenticAMD")
        && field("flags").is_some_and(|flags| flags.split_whitespace().any(|f| f == "fsrm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_added_to_what_the_operator_set() {
        let ours = "glibc.cpu.x86_rep_movsb_threshold=4194304";
        assert_eq!(with_threshold(None).as_deref(), Some(ours));
        assert_eq!(with_threshold(Some("")).as_deref(), Some(ours));
        assert_eq!(
            with_threshold(Some("glibc.malloc.trim_threshold=1")).as_deref(),
            Some(format!("glibc.malloc.trim_threshold=1:{ours}").as_str())
        );
    }

    #[test]
    fn an_operators_threshold_is_kept() {
        assert_eq!(with_threshold(Some("glibc.cpu.x86_rep_movsb_threshold=8192")), None);
        assert_eq!(with_threshold(Some("a.b=1:glibc.cpu.x86_rep_movsb_threshold=0:c.d=2")), None);
        // A tunable whose name merely starts the same is another tunable.
        assert!(with_threshold(Some("glibc.cpu.x86_rep_movsb_threshold_x=1")).is_some());
    }

    #[test]
    fn only_amd_cpus_with_fsrm_are_changed() {
        let cpu = |vendor: &str, flags: &str| {
            format!("processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        };
        assert!(rep_movsb_misaligned_slow(&cpu("AuthenticAMD", "fpu erms fsrm avx512f")));
        assert!(!rep_movsb_misaligned_slow(&cpu("AuthenticAMD", "fpu erms avx2")));
        assert!(!rep_movsb_misaligned_slow(&cpu("GenuineIntel", "fpu erms fsrm")));
        assert!(!rep_movsb_misaligned_slow(&cpu("AuthenticAMD", "fpu erms fsrmx")));
        assert!(!rep_movsb_misaligned_slow(""));
    }
}

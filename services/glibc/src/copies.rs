//! Large memory copies on AMD CPUs that report fast short `rep movsb` (FSRM: Zen 3 and later),
//! under glibc.
//!
//! glibc 2.36 (Debian 12) copies anything above about 2 KiB with `rep movsb` on such a CPU. On the
//! AMD EPYC this project is measured on, that instruction copies 16 or 64 KiB at 3.5 GB/s instead
//! of 50-100 GB/s whenever the destination lies 1 to 15 bytes past the source, counted modulo 64
//! (and at about 42 GB/s at 16 to 31 bytes); glibc's vector loop copies at 80-100 GB/s at every
//! offset (Measured, 2026-12-04, sixth session, in ARCHITECTURE.md). The tunnel's copies land on
//! such offsets by chance: rustls writes each record 5 bytes into its buffer, a frame's WebSocket
//! header (2 to 14 bytes) sits in front of its payload, and the allocator places buffers at
//! 16-byte steps, so which copies are slow changes from buffer to buffer and from run to run. In
//! three pairs of runs of one build, the vector loop took a lone stream's CPU per MiB from
//! 2 030-2 510 µs to 1 340-1 430 µs.
//!
//! glibc's tunable `glibc.cpu.x86_rep_movsb_threshold` above the largest copy (4 MiB) makes it
//! use the vector loop instead. glibc reads tunables only when a program starts, so a process
//! that carries tunnel bytes starts itself again with the tunable added ([`use_vector_copies`]):
//! the same executable file (so `ps` and `pgrep` still see its name), arguments, descriptors and
//! process id. An operator who sets the threshold in `GLIBC_TUNABLES` keeps their value, and
//! `ISM_VECTOR_COPIES=off` leaves the process as started. glibc's bug 30994 reports the same
//! slowness on AMD CPUs, and later glibc releases changed where they use `rep movsb` there (not
//! checked here: this project's machines run Debian 12's 2.36). The kernel's copies into and out
//! of sockets use `rep movsb` too, and no setting of ours reaches them.

use crate::{find_tunable, switched_off};
use ism_escape::escaped;
use std::ffi::OsStr;

/// glibc's tunable: copies at least this long use `rep movsb`.
const THRESHOLD_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Above every copy the tunnel makes (its frames are at most 256 KiB; rustls' buffers hold at
/// most a few of them).
const THRESHOLD: &str = "4194304";

/// The operator's switch: `off` leaves the process as it was started.
const SWITCH: &str = "ISM_VECTOR_COPIES";

/// Holds the id of the process that restarted itself, so that a glibc which drops the tunable
/// (as it may for a program with file capabilities) cannot make it restart forever, while a child
/// that inherits the variable (another process id) still decides for itself.
const RESTARTED: &str = "ISM_VECTOR_COPIES_RESTARTED";

/// What [`use_vector_copies`] found, for the process to log once its logging is up.
#[must_use = "log it once logging is up"]
#[derive(Debug, PartialEq, Eq)]
pub enum VectorCopies {
    /// Not an AMD CPU with FSRM, or not glibc on x86-64 Linux: nothing to change.
    NotNeeded,
    /// This process restarted itself and glibc copies with its vector loop.
    InPlace,
    /// `GLIBC_TUNABLES` already sets the threshold (the operator's value, shown), or
    /// `ISM_VECTOR_COPIES=off`: left as it is.
    OperatorsChoice(String),
    /// The CPU is affected, but the process could not start itself again; large copies stay
    /// as glibc chose them.
    Unavailable(String),
}

impl VectorCopies {
    /// Says in the log what was found: nothing when there was nothing to change.
    pub fn log(&self) {
        match self {
            VectorCopies::NotNeeded => {}
            VectorCopies::InPlace => tracing::info!(
                "large copies use glibc's vector loop: restarted with {THRESHOLD_TUNABLE}={THRESHOLD} \
                 (rep movsb is slow at some offsets on this AMD CPU)"
            ),
            VectorCopies::OperatorsChoice(choice) => tracing::info!(
                choice = %escaped(choice),
                "large copies left as the environment sets them"
            ),
            VectorCopies::Unavailable(why) => tracing::warn!(
                "large copies stay on rep movsb, slow at some offsets on this AMD CPU: {}",
                escaped(why)
            ),
        }
    }
}

/// What to do, decided from the environment and the CPU (no I/O).
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Keep(VectorCopies),
    /// Start again with this `GLIBC_TUNABLES`.
    Restart(String),
}

fn decide(
    tunables: Option<&OsStr>,
    switch: Option<&OsStr>,
    affected: bool,
    restarted: bool,
) -> Decision {
    if !affected {
        return Decision::Keep(VectorCopies::NotNeeded);
    }
    if switched_off(switch) {
        return Decision::Keep(VectorCopies::OperatorsChoice(format!("{SWITCH}=off")));
    }
    // A value that is not Unicode is the operator's, and not ours to rewrite.
    let Some(current) = tunables.map_or(Some(""), OsStr::to_str) else {
        return Decision::Keep(VectorCopies::OperatorsChoice(format!("{tunables:?}")));
    };
    let ours = format!("{THRESHOLD_TUNABLE}={THRESHOLD}");
    match find_tunable(current, THRESHOLD_TUNABLE) {
        Some(set) if restarted && set == ours => Decision::Keep(VectorCopies::InPlace),
        Some(_) => Decision::Keep(VectorCopies::OperatorsChoice(current.to_string())),
        None if restarted => Decision::Keep(VectorCopies::Unavailable(
            "glibc dropped the tunable at the restart".into(),
        )),
        None if current.is_empty() => Decision::Restart(ours),
        None => Decision::Restart(format!("{current}:{ours}")),
    }
}

/// Makes glibc copy with its vector loop on CPUs where `rep movsb` is slow at some offsets: if
/// the CPU is affected and `GLIBC_TUNABLES` does not set the threshold yet, starts this program
/// again with it added. Call it before any thread starts; it returns only when no restart was
/// needed or the restart failed.
pub fn use_vector_copies() -> VectorCopies {
    let restarted = std::env::var(RESTARTED).is_ok_and(|pid| pid == std::process::id().to_string());
    match decide_here(restarted) {
        Decision::Keep(found) => found,
        Decision::Restart(tunables) => restart_with(&tunables),
    }
}

/// Whether [`use_vector_copies`] would restart a process started with this process's
/// environment (the benchmark asks it for the children it starts).
pub fn restart_planned() -> bool {
    matches!(decide_here(false), Decision::Restart(_))
}

/// [`decide`] on this process's environment and CPU.
fn decide_here(restarted: bool) -> Decision {
    let tunables = std::env::var_os("GLIBC_TUNABLES");
    let switch = std::env::var_os(SWITCH);
    decide(tunables.as_deref(), switch.as_deref(), affected_cpu(), restarted)
}

/// Executes this program's file again. The path `/proc/self/exe` points to is used rather than
/// that link itself: the kernel names a process after the file it executes, and `exe` is a name
/// no operator's tooling looks for.
fn restart_with(tunables: &str) -> VectorCopies {
    match std::env::current_exe() {
        Ok(path) if path.is_file() => execute(path, tunables),
        Ok(path) => VectorCopies::Unavailable(format!("{} is gone", path.display())),
        Err(e) => VectorCopies::Unavailable(format!("cannot find this program: {e}")),
    }
}

/// Executes `program` with this process's arguments and `tunables`; returns only if that failed,
/// with the process as usable as before.
fn execute(program: std::path::PathBuf, tunables: &str) -> VectorCopies {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(RESTARTED, std::process::id().to_string())
        .exec();
    ignore_sigpipe_again();
    VectorCopies::Unavailable(format!("restarting failed: {error}"))
}

/// A failed `exec` leaves SIGPIPE at its default action (std resets it for the new program
/// before trying), which would end the process at the first write to a closed socket; a
/// registered handler (tokio's, which stays for the life of the process) makes it harmless again.
/// It must be the process's first registration of SIGPIPE through tokio, since the handler is
/// installed only then: it is, as this runs before any runtime starts.
fn ignore_sigpipe_again() {
    let registered = tokio::runtime::Builder::new_current_thread().enable_io().build().map(|rt| {
        rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe()) })
    });
    if !matches!(registered, Ok(Ok(_))) {
        eprintln!("ism: SIGPIPE could not be ignored again after a failed restart");
    }
}

/// Whether this machine's CPU is one whose `rep movsb` is slow at some offsets (an AMD CPU with
/// FSRM, from `/proc/cpuinfo`), under glibc on x86-64 Linux.
pub fn affected_cpu() -> bool {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")) {
        return false;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    rep_movsb_misaligned_slow(&cpuinfo)
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

    const OURS: &str = "glibc.cpu.x86_rep_movsb_threshold=4194304";

    /// A restart that cannot execute (here the root directory, which no `exec` runs, not even
    /// as root)
    /// is reported, and the process goes on as before: a write to a pipe nobody reads fails
    /// instead of ending it, although `exec` reset SIGPIPE to its default before it failed.
    #[test]
    fn a_failed_restart_is_reported_and_a_broken_pipe_stays_harmless() {
        use std::io::Write;
        let found = execute(std::path::PathBuf::from("/"), OURS);
        let VectorCopies::Unavailable(why) = &found else { panic!("{found:?}") };
        assert!(why.starts_with("restarting failed: "), "{why}");
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let written = writer.write_all(b"nobody reads this");
        assert_eq!(written.map_err(|e| e.kind()), Err(std::io::ErrorKind::BrokenPipe));
    }

    fn restart(tunables: Option<&str>) -> Decision {
        decide(tunables.map(OsStr::new), None, true, false)
    }

    #[test]
    fn the_threshold_is_added_to_what_the_operator_set() {
        assert_eq!(restart(None), Decision::Restart(OURS.into()));
        assert_eq!(restart(Some("")), Decision::Restart(OURS.into()));
        assert_eq!(
            restart(Some("glibc.malloc.trim_threshold=1")),
            Decision::Restart(format!("glibc.malloc.trim_threshold=1:{OURS}"))
        );
        // A tunable whose name merely starts the same is another tunable.
        assert!(matches!(
            restart(Some("glibc.cpu.x86_rep_movsb_threshold_x=1")),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn an_operators_threshold_or_switch_is_kept() {
        let theirs = "a.b=1:glibc.cpu.x86_rep_movsb_threshold=8192";
        assert_eq!(
            restart(Some(theirs)),
            Decision::Keep(VectorCopies::OperatorsChoice(theirs.into()))
        );
        // Even our value, when this process did not set it, is the operator's.
        assert_eq!(restart(Some(OURS)), Decision::Keep(VectorCopies::OperatorsChoice(OURS.into())));
        let off = decide(None, Some(OsStr::new("off")), true, false);
        assert!(matches!(off, Decision::Keep(VectorCopies::OperatorsChoice(_))));
        let not_unicode = std::os::unix::ffi::OsStrExt::from_bytes(b"a.b=\xff");
        assert!(matches!(
            decide(Some(not_unicode), None, true, false),
            Decision::Keep(VectorCopies::OperatorsChoice(_))
        ));
    }

    #[test]
    fn a_restarted_process_does_not_restart_again() {
        let tunables = format!("x.y=1:{OURS}");
        assert_eq!(
            decide(Some(OsStr::new(&tunables)), None, true, true),
            Decision::Keep(VectorCopies::InPlace)
        );
        assert!(matches!(
            decide(Some(OsStr::new("x.y=1")), None, true, true),
            Decision::Keep(VectorCopies::Unavailable(_))
        ));
        assert!(matches!(
            decide(None, None, true, true),
            Decision::Keep(VectorCopies::Unavailable(_))
        ));
    }

    #[test]
    fn other_cpus_are_left_alone() {
        assert_eq!(decide(None, None, false, false), Decision::Keep(VectorCopies::NotNeeded));
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

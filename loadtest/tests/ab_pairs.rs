//! `loadtest/ab-pairs`, the A/B method as a script, run against a stand-in for `ism-bench` that
//! records which side each run was and writes that as its figures: the pairs alternate their
//! order, only the old side gets the switch, and the figures printed are each run's own.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// A stand-in bench: appends the switch's value (or `new`) to `runs` and writes it as the JSON
/// figure `side` to the file after `--json`.
fn stand_in(dir: &Path) -> std::path::PathBuf {
    stand_in_named(dir, "bench", "new")
}

/// As [`stand_in`], at `dir/name`, saying `unswitched` when the switch is not set.
fn stand_in_named(dir: &Path, name: &str, unswitched: &str) -> std::path::PathBuf {
    let bench = dir.join(name);
    let script = format!(
        "#!/bin/sh\nside=${{ISM_TEST_SWITCH:-{unswitched}}}\necho \"$side ab_old=$ISM_AB_OLD $*\" >> {runs}\n\
         while [ \"$1\" != --json ]; do shift; done\nprintf '{{\"side\": \"%s\"}}' \"$side\" > \"$2\"\n",
        runs = dir.join("runs").display()
    );
    std::fs::write(&bench, script).unwrap();
    std::fs::set_permissions(&bench, std::fs::Permissions::from_mode(0o755)).unwrap();
    bench
}

/// Runs `ab-pairs PAIRS DIR/out --bench BENCH ARGS...`.
fn ab_pairs(pairs: &str, dir: &Path, bench: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ab-pairs");
    Command::new("python3")
        .arg(script)
        .args([pairs, dir.join("out").to_str().unwrap(), "--bench", bench.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn pairs_alternate_and_only_the_old_side_gets_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let bench = stand_in(dir.path());
    let args = ["--old-env", "ISM_TEST_SWITCH=old", "--keys", "side", "--", "--only", "single"];
    let run = ab_pairs("2", dir.path(), &bench, &args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    let sides: Vec<&str> = runs.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(sides, ["new", "old", "old", "new"], "new first in odd pairs: {runs}");
    assert!(runs.lines().all(|l| l.contains("--only single --json")), "{runs}");
    let printed = String::from_utf8(run.stdout).unwrap();
    let expected = "pair 1 old: side=\"old\"\npair 1 new: side=\"new\"\n\
                    pair 2 old: side=\"old\"\npair 2 new: side=\"new\"\n";
    assert_eq!(printed, expected);
}

#[test]
fn an_old_build_runs_for_the_old_side_without_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let bench = stand_in(dir.path());
    let old = stand_in_named(dir.path(), "old-bench", "old-build");
    let old = old.to_str().unwrap();
    let run = ab_pairs("2", dir.path(), &bench, &["--old-bench", old, "--keys", "side"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    let sides: Vec<&str> = runs.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(sides, ["new", "old-build", "old-build", "new"], "{runs}");
    assert!(runs.lines().all(|l| l.contains("ab_old= ")), "no side gets the switch: {runs}");
    let both = ["--old-bench", old, "--old-env", "ISM_TEST_SWITCH=old"];
    let run = ab_pairs("1", dir.path(), &bench, &both);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("exclude each other"));
    let missing = dir.path().join("no-such-bench");
    let args = ["--old-bench", missing.to_str().unwrap()];
    let run = ab_pairs("1", dir.path(), &bench, &args);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("(--old-bench)"));
}

#[test]
fn a_malformed_switch_or_a_missing_bench_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bench = stand_in(dir.path());
    let run = ab_pairs("1", dir.path(), &bench, &["--old-env", "X"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--old-env wants NAME=VALUE"));
    let missing = dir.path().join("no-such-bench");
    let run = ab_pairs("1", dir.path(), &missing, &[]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no ism-bench at"));
    assert!(!dir.path().join("runs").exists(), "nothing ran");
}

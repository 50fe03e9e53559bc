//! Files written whole or not at all: a gateway node's secrets (key secret, admin token) and the
//! cluster's certificates and keys, and an endpoint's machine key. Written in place, a full disk
//! or a crash half-way leaves an empty or cut-off file, and every later start fails on it (for
//! the machine key, after the gateway may have bound its public half). Here the bytes go to a
//! temporary file in the same directory, are synced, and only then take the final name; the
//! directory is synced last, so the name survives a crash too.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `path` with `contents` and `mode`. Fails with `AlreadyExists`, and leaves the file
/// alone, when `path` exists: a secret once written is never replaced.
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, mode, |f| f.write_all(contents), link_new)
}

/// Writes `path` with `contents` and `mode`, replacing what was there only once the new file is
/// whole.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, mode, |f| f.write_all(contents), |temp, path| std::fs::rename(temp, path))
}

/// Fills a temporary file beside `path`, syncs it, `place`s it at `path` and syncs the
/// directory. On failure the temporary file is removed and `path` is as it was.
fn write_via_temp(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    place: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (temp, mut file) = create_temp(path, mode)?;
    let placed = fill(&mut file).and_then(|()| file.sync_all()).and_then(|()| place(&temp, path));
    if placed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    placed?;
    File::open(dir)?.sync_all()
}

/// A new file beside `path` (`.<name>.<pid>.<n>.tmp`) with `mode`, so the secret is never
/// readable by others, not even before its rename. A number already taken (a leftover of a
/// crash, or another process) is passed over: `create_new` decides who has it.
fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    for n in 0..16 {
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("every temporary name is taken: remove the leftover .*.tmp files"))
}

/// Gives `temp` the name `path` unless `path` exists. A hard link never replaces a file, so two
/// first starts racing keep one secret. Where the file system has no hard links (some network
/// shares), a rename after checking that `path` is absent does it: a process creating `path`
/// between the check and the rename would see its file replaced, a race accepted because only
/// two first starts of one installation at the same instant run it.
fn link_new(temp: &Path, path: &Path) -> io::Result<()> {
    match std::fs::hard_link(temp, path) {
        Ok(()) => std::fs::remove_file(temp),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            Err(io::Error::from(io::ErrorKind::AlreadyExists))
        }
        Err(_) => std::fs::rename(temp, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn full_disk(f: &mut File) -> io::Result<()> {
        f.write_all(b"half a sec")?;
        Err(io::Error::other("no space left on device"))
    }

    fn names(dir: &Path) -> Vec<OsString> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect()
    }

    #[test]
    fn a_secret_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key-secret");
        assert!(write_via_temp(&path, 0o600, full_disk, link_new).is_err());
        assert!(!path.exists(), "a cut-off secret would fail every later start");
        assert!(names(dir.path()).is_empty(), "no temporary file is left");

        create_new(&path, b"the secret\n", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = create_new(&path, b"another\n", 0o600).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"the secret\n", "never replaced");
        assert_eq!(names(dir.path()), vec![OsString::from("key-secret")]);
    }

    #[test]
    fn a_failed_replacement_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1.key");
        replace(&path, b"old key", 0o600).unwrap();
        let rename = |temp: &Path, path: &Path| std::fs::rename(temp, path);
        assert!(write_via_temp(&path, 0o600, full_disk, rename).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old key");
        assert_eq!(names(dir.path()), vec![OsString::from("node-1.key")]);

        replace(&path, b"new key", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new key");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

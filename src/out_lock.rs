//! `synthcti run --out DIR`: the folder is claimed before any work, and held for the run.
//!
//! `--out` that is a file, sits under a file, or is a folder with anything in it is refused
//! before the manifest's data is read. Two runs started at once into the same empty folder both
//! see it empty, so emptiness alone cannot decide: the folder is claimed by an exclusive advisory
//! lock on `DIR/.synthcti-run.lock` (`flock` through `std::fs::File::try_lock`), taken at the
//! start and held until the run ends. The second run finds the lock held and is refused, naming
//! the holder (process id and start time, written in the lock file). The lock file is removed
//! when the run ends, however it ends; one left by a killed run holds no lock and is taken over.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside the run folder.
pub const LOCK_NAME: &str = ".synthcti-run.lock";

/// A claimed `--out` folder: the lock is held while this lives; dropping it removes the lock
/// file (and the folder, when this claim made it and the run wrote nothing).
#[derive(Debug)]
pub struct OutClaim {
    dir: PathBuf,
    lock: Option<fs::File>,
    created: bool,
}

/// Whether `dir` holds anything but a lock file.
fn has_content(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|d| d.flatten().any(|e| e.file_name() != LOCK_NAME))
        .unwrap_or(false)
}

/// Refuse an `--out` that is a file, sits under a file, or already has content.
pub fn check(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::config(format!(
            "--out {} is a file, not a folder; choose a folder path",
            out.display()
        )));
    }
    if let Some(file) = out.ancestors().skip(1).find(|a| a.is_file()) {
        return Err(Error::config(format!(
            "--out {}: {} is a file, so no folder can be made under it; choose a folder path",
            out.display(),
            file.display()
        )));
    }
    if out.is_dir() && has_content(out) {
        return Err(Error::config(format!(
            "--out {} already exists and is not empty; choose another folder or remove it",
            out.display()
        )));
    }
    Ok(())
}

/// Check `out` ([`check`]), create it and take its lock. Fails, writing nothing of its own, when
/// another run holds the lock or got content in first.
pub fn claim(out: &Path) -> Result<OutClaim> {
    check(out)?;
    let created = !out.exists();
    fs::create_dir_all(out).map_err(|e| {
        Error::config(format!(
            "--out {}: cannot create the folder ({e}); choose a folder you can write",
            out.display()
        ))
    })?;
    let mut claim = OutClaim {
        dir: out.to_path_buf(),
        lock: None,
        created,
    };
    let path = out.join(LOCK_NAME);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            Error::config(format!(
                "--out {}: cannot write {} ({e}); choose a folder you can write",
                out.display(),
                path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            // Not ours: leave the folder and its lock file to the run that holds it.
            claim.created = false;
            return Err(Error::config(format!(
                "--out {}: another synthcti run is writing into this folder ({}); wait for it to finish, or choose another folder",
                out.display(),
                if holder.trim().is_empty() {
                    "its lock is held".to_string()
                } else {
                    holder.trim().to_string()
                }
            )));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(Error::config(format!(
                "--out {}: cannot lock {} ({e})",
                out.display(),
                path.display()
            )));
        }
    }
    claim.lock = Some(file);
    // A run that held the lock before us and has finished left content: still not ours.
    if has_content(out) {
        return Err(Error::config(format!(
            "--out {} already exists and is not empty; choose another folder or remove it",
            out.display()
        )));
    }
    let mut f = claim.lock.as_ref().expect("just set");
    let _ = f.set_len(0);
    let _ = write!(
        f,
        "pid {}, started {}",
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(claim)
}

impl OutClaim {
    /// The claimed folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OutClaim {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            // Removed while still held, so no other run can take a lock on a file about to go.
            let _ = fs::remove_file(self.dir.join(LOCK_NAME));
            drop(lock);
            if self.created {
                // Only succeeds when the run wrote nothing (it failed before its first file).
                let _ = fs::remove_dir(&self.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_folder_is_refused_to_a_second_claim_and_freed_after() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = claim(&out).unwrap();
        let err = claim(&out).unwrap_err();
        assert!(
            err.message
                .contains("another synthcti run is writing into this folder (pid "),
            "{}",
            err.message
        );
        assert!(
            out.join(LOCK_NAME).is_file(),
            "the holder's lock file stays"
        );
        drop(first);
        assert!(!out.exists(), "an unused folder this claim made is removed");
        let again = claim(&out).unwrap();
        fs::write(out.join("run.log"), "x").unwrap();
        drop(again);
        assert!(!out.join(LOCK_NAME).exists(), "no lock file left behind");
        assert!(out.join("run.log").is_file());
        let err = claim(&out).unwrap_err();
        assert!(err.message.contains("not empty"), "{}", err.message);
    }

    #[test]
    fn a_lock_file_left_by_a_killed_run_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join(LOCK_NAME), "pid 1, started long ago").unwrap();
        let c = claim(&out).unwrap();
        assert!(
            fs::read_to_string(out.join(LOCK_NAME))
                .unwrap()
                .starts_with(&format!("pid {},", std::process::id()))
        );
        drop(c);
    }

    #[test]
    fn a_file_is_no_out_folder() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, "x").unwrap();
        assert!(claim(&f).unwrap_err().message.contains("is a file"));
        assert!(
            claim(&f.join("sub"))
                .unwrap_err()
                .message
                .contains("is a file, so no folder")
        );
    }
}

//! Keeping `Cargo.lock` as it was.
//!
//! The `[patch]` that points cargo at the edited `wdk-build` rewrites the
//! lock file (a patched package is recorded without its registry source),
//! and `wdk-build` itself runs `cargo metadata` without the patch during the
//! build, which rewrites it back. The patched state is not for committing.
//! After the cross build, a changed lock file is re-resolved by cargo
//! without the patch (`cargo metadata`), which puts the registry
//! `wdk-build` back and keeps any other change made meanwhile (the working
//! tree may be shared); only if that fails is the snapshot written back.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What [`Guard::settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file was as snapshotted.
    Unchanged,
    /// Re-resolving made it equal to the snapshot again.
    Restored,
    /// Re-resolved without the patch, but it differs from the snapshot
    /// through changes made during the build by someone else.
    ReResolvedWithOtherChanges,
    /// Re-resolving failed; the snapshot was written back.
    SnapshotWritten,
}

/// A snapshot of a lock file.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    original: Option<Vec<u8>>,
}

impl Guard {
    /// Snapshot `path` (which may not exist).
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn snapshot(path: &Path) -> Result<Self> {
        let original = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            original,
        })
    }

    fn current(&self) -> Option<Vec<u8>> {
        fs::read(&self.path).ok()
    }

    /// Bring the file back to an unpatched state: nothing if unchanged,
    /// else `reresolve` (cargo without the patch), else the snapshot.
    ///
    /// # Errors
    /// When the snapshot has to be written back and cannot be.
    pub fn settle(&self, reresolve: impl FnOnce() -> Result<()>) -> Result<Outcome> {
        if self.current() == self.original {
            return Ok(Outcome::Unchanged);
        }
        match reresolve() {
            Ok(()) if self.current() == self.original => Ok(Outcome::Restored),
            Ok(()) => Ok(Outcome::ReResolvedWithOtherChanges),
            Err(error) => {
                eprintln!("warning: re-resolving Cargo.lock failed ({error:#}); writing the snapshot back");
                match &self.original {
                    Some(bytes) => fs::write(&self.path, bytes)
                        .with_context(|| format!("cannot restore {}", self.path.display()))?,
                    None => fs::remove_file(&self.path)
                        .with_context(|| format!("cannot remove {}", self.path.display()))?,
                }
                Ok(Outcome::SnapshotWritten)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("Cargo.lock");
        fs::write(&lock, "a").unwrap();

        let guard = Guard::snapshot(&lock).unwrap();
        let untouched = guard.settle(|| panic!("must not re-resolve an unchanged file"));
        assert_eq!(untouched.unwrap(), Outcome::Unchanged);

        fs::write(&lock, "patched").unwrap();
        let restored = guard.settle(|| fs::write(&lock, "a").map_err(Into::into));
        assert_eq!(restored.unwrap(), Outcome::Restored);

        fs::write(&lock, "patched").unwrap();
        let other = guard.settle(|| fs::write(&lock, "a+other").map_err(Into::into));
        assert_eq!(other.unwrap(), Outcome::ReResolvedWithOtherChanges);

        fs::write(&lock, "patched").unwrap();
        let written = guard.settle(|| anyhow::bail!("offline"));
        assert_eq!(written.unwrap(), Outcome::SnapshotWritten);
        assert_eq!(fs::read_to_string(&lock).unwrap(), "a");

        fs::remove_file(&lock).unwrap();
        let absent = Guard::snapshot(&lock).unwrap();
        fs::write(&lock, "created").unwrap();
        assert_eq!(
            absent.settle(|| anyhow::bail!("no")).unwrap(),
            Outcome::SnapshotWritten
        );
        assert!(!lock.exists());
    }
}

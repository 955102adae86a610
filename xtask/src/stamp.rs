//! Build-once directories: a directory is rebuilt only when the text that
//! describes its inputs (its stamp) changes, and is replaced atomically so an
//! interrupted run never leaves a half-made one behind.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

const STAMP_FILE: &str = ".xtask-stamp";

/// Is `dir` complete and made from inputs described by `stamp`?
pub fn is_current(dir: &Path, stamp: &str) -> bool {
    fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|found| found == stamp)
}

/// Make `dir` with `fill` unless it is current for `stamp`. `fill` gets an
/// empty scratch directory beside `dir` that becomes `dir` on success.
/// Returns whether anything was rebuilt.
///
/// # Errors
/// When `fill` fails or the file system does.
pub fn rebuild_if_stale(
    dir: &Path,
    stamp: &str,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<bool> {
    if is_current(dir, stamp) {
        return Ok(false);
    }
    let parent = dir
        .parent()
        .with_context(|| format!("{} has no parent directory", dir.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Removed with everything in it if `fill` fails or panics.
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))?;
    fill(scratch.path())?;
    fs::write(scratch.path().join(STAMP_FILE), stamp).context("cannot write the stamp file")?;
    if dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove stale {}", dir.display()))?;
    }
    let scratch = scratch.keep();
    fs::rename(&scratch, dir)
        .with_context(|| format!("cannot move {} to {}", scratch.display(), dir.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_only_when_stamp_changes_and_cleans_up_on_failure() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("made");
        let mut runs = 0;
        let mut fill = |d: &Path| {
            runs += 1;
            fs::write(d.join("file"), "x").map_err(Into::into)
        };
        assert!(rebuild_if_stale(&dir, "one", &mut fill).unwrap());
        assert!(!rebuild_if_stale(&dir, "one", &mut fill).unwrap());
        assert!(rebuild_if_stale(&dir, "two", &mut fill).unwrap());
        assert_eq!(runs, 2);
        assert!(dir.join("file").is_file());

        let failed = rebuild_if_stale(&dir, "three", |_| anyhow::bail!("no"));
        assert!(failed.is_err());
        // The old directory survives a failed rebuild, and no scratch is left.
        assert!(is_current(&dir, "two"));
        assert_eq!(fs::read_dir(base.path()).unwrap().count(), 1);
    }
}

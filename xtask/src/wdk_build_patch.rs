//! `wdk-build` made to run on a Linux host.
//!
//! Stock `wdk-build` refuses to build anywhere but Windows. Three edits fix
//! that; they are applied at build time to a copy of the registry's source
//! in `target/` (its source is never committed), and cargo is pointed at
//! the copy with `--config 'patch.crates-io.wdk-build.path="…"'`:
//!
//! 1. the `windows` crate dependency and the registry look-ups for the WDK
//!    location (and the `CStr` import only they use) are gated behind
//!    `cfg(windows)` — `WDKContentRoot` says where the WDK is instead;
//! 2. the `compile_error!` bodies of `set_var`/`remove_var` for non-Windows
//!    hosts become the plain `std::env` calls;
//! 3. the cargo-make helper makes a Unix symlink where it makes a Windows one.
//!
//! Each edit names the exact text it replaces and how often it occurs; if a
//! newer `wdk-build` no longer matches, the build stops and says which edit.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::stamp;

/// The `wdk-build` version these edits were written against.
pub const WRITTEN_FOR: &str = "0.6.0";

/// One textual replacement in one file.
#[derive(Debug, Clone, Copy)]
pub struct Edit {
    /// Which of the three edits this belongs to.
    pub purpose: &'static str,
    /// File, relative to the crate root.
    pub file: &'static str,
    /// Exact text to find.
    pub find: &'static str,
    /// How many times it must occur.
    pub occurrences: usize,
    /// Replacement for every occurrence.
    pub replace: &'static str,
}

const GATE: &str = "1: gate `windows` and the registry look-ups behind cfg(windows)";
const ENV: &str = "2: std::env bodies for set_var/remove_var";
const LINK: &str = "3: Unix symlink";

/// The edits, in order.
pub const EDITS: &[Edit] = &[
    Edit {
        purpose: GATE,
        file: "Cargo.toml",
        find: "[dependencies.windows]",
        occurrences: 1,
        replace: "[target.'cfg(windows)'.dependencies.windows]",
    },
    Edit {
        purpose: GATE,
        file: "Cargo.toml",
        find: "[dev-dependencies.windows]",
        occurrences: 1,
        replace: "[target.'cfg(windows)'.dev-dependencies.windows]",
    },
    Edit {
        purpose: GATE,
        file: "src/utils.rs",
        find: "    ffi::{CStr, OsStr},\n",
        occurrences: 1,
        replace: "    ffi::OsStr,\n",
    },
    Edit {
        purpose: GATE,
        file: "src/utils.rs",
        find: "use windows::{",
        occurrences: 1,
        replace: "#[cfg(windows)]\nuse std::ffi::CStr;\n\n#[cfg(windows)]\nuse windows::{",
    },
    Edit {
        purpose: GATE,
        file: "src/utils.rs",
        find: "    // Check HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows Kits\\Installed\n    // Roots@KitsRoot10 registry key\n",
        occurrences: 1,
        replace: "    detect_wdk_content_root_from_registry()\n}\n\n\
/// The registry does not exist off Windows: `WDKContentRoot` must be set.\n\
#[cfg(not(windows))]\n\
const fn detect_wdk_content_root_from_registry() -> Option<PathBuf> {\n    None\n}\n\n\
#[cfg(windows)]\n\
fn detect_wdk_content_root_from_registry() -> Option<PathBuf> {\n\
    // Check HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows Kits\\Installed\n    // Roots@KitsRoot10 registry key\n",
    },
    Edit {
        purpose: GATE,
        file: "src/utils.rs",
        find: "\nfn read_registry_key_string_value(",
        occurrences: 1,
        replace: "\n#[cfg(windows)]\nfn read_registry_key_string_value(",
    },
    Edit {
        purpose: ENV,
        file: "src/utils.rs",
        find: "pub fn set_var<K, V>(_key: K, _value: V)\nwhere\n    K: AsRef<OsStr>,\n    V: AsRef<OsStr>,\n{\n    compile_error!(\n        \"windows-drivers-rs is designed to be run on a Windows host machine in a WDK environment. \\\n         Please build using a Windows target.\"\n    );\n}",
        occurrences: 1,
        replace: "pub fn set_var<K, V>(key: K, value: V)\nwhere\n    K: AsRef<OsStr>,\n    V: AsRef<OsStr>,\n{\n    // SAFETY: (patched by capdma's xtask) wdk-build calls this from build\n    // scripts before it starts any thread.\n    unsafe {\n        env::set_var(key, value);\n    }\n}",
    },
    Edit {
        purpose: ENV,
        file: "src/utils.rs",
        find: "pub fn remove_var<K>(_key: K)\nwhere\n    K: AsRef<OsStr>,\n{\n    compile_error!(\n        \"windows-drivers-rs is designed to be run on a Windows host machine in a WDK environment. \\\n         Please build using a Windows target.\"\n    );\n}",
        occurrences: 1,
        replace: "pub fn remove_var<K>(key: K)\nwhere\n    K: AsRef<OsStr>,\n{\n    // SAFETY: (patched by capdma's xtask) wdk-build calls this from build\n    // scripts before it starts any thread.\n    unsafe {\n        env::remove_var(key);\n    }\n}",
    },
    Edit {
        purpose: LINK,
        file: "src/cargo_make.rs",
        find: "std::os::windows::fs::symlink_file(",
        occurrences: 2,
        replace: "symlink_file(",
    },
];

/// Appended to `src/cargo_make.rs` by edit 3.
const SYMLINK_HELPER: &str = "
// Added by capdma's xtask: a file symlink on either host family.
#[cfg(windows)]
fn symlink_file(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(original, link)
}

#[cfg(unix)]
fn symlink_file(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}
";

/// Files appended to: `(file, text)`.
const APPENDS: &[(&str, &str)] = &[("src/cargo_make.rs", SYMLINK_HELPER)];

/// Apply the edits for `file` to its `text`. The published crate has CRLF
/// line endings; the edits are written with LF, so the text is normalised
/// to LF first (rustc does not mind either).
///
/// # Errors
/// When an edit's text does not occur exactly as often as expected.
pub fn edit_text(file: &str, text: &str, version: &str) -> Result<String> {
    let mut text = text.replace("\r\n", "\n");
    for edit in EDITS.iter().filter(|e| e.file == file) {
        let found = text.matches(edit.find).count();
        if found != edit.occurrences {
            bail!(
                "wdk-build {version}: edit \"{}\" expects {} occurrence(s) of {:?} in {file}, found {found}. \
                 The edits in xtask/src/wdk_build_patch.rs were written for wdk-build {WRITTEN_FOR}; \
                 pin that version or update the edits.",
                edit.purpose,
                edit.occurrences,
                edit.find.lines().next().unwrap_or_default(),
            );
        }
        text = text.replace(edit.find, edit.replace);
    }
    for (_, append) in APPENDS.iter().filter(|(f, _)| *f == file) {
        text.push_str(append);
    }
    Ok(text)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", from.display()))?;
        let kind = entry.file_type().context("cannot stat a source file")?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &target)?;
            }
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn stamp_text(source: &Path, version: &str) -> String {
    let mut text = format!("wdk-build {version} from {}\n", source.display());
    for edit in EDITS {
        let _ = writeln!(text, "{edit:?}");
    }
    for (file, append) in APPENDS {
        let _ = writeln!(text, "append {file}: {append}");
    }
    text
}

/// Copy `wdk-build` `version` from `source` (its unpacked registry
/// directory) to `dest` and apply the edits, unless `dest` is current.
/// Returns whether it was rebuilt.
///
/// # Errors
/// When an edit does not apply or the file system fails.
pub fn prepare(source: &Path, version: &str, dest: &Path) -> Result<bool> {
    stamp::rebuild_if_stale(dest, &stamp_text(source, version), |scratch| {
        copy_tree(source, scratch)?;
        let mut files: Vec<&str> = EDITS.iter().map(|e| e.file).collect();
        files.extend(APPENDS.iter().map(|(f, _)| *f));
        files.sort_unstable();
        files.dedup();
        for file in files {
            let path = scratch.join(file);
            let text = fs::read_to_string(&path)
                .with_context(|| format!("wdk-build {version} has no readable {file}"))?;
            fs::write(&path, edit_text(file, &text, version)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTILS: &str = "use std::{
    env,
    ffi::{CStr, OsStr},
};

use windows::{
    core::PCSTR,
};

pub fn detect_wdk_content_root() -> Option<PathBuf> {
    // Check HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows Kits\\Installed
    // Roots@KitsRoot10 registry key
    None
}

fn read_registry_key_string_value(
) {}

#[cfg(not(target_os = \"windows\"))]
pub fn set_var<K, V>(_key: K, _value: V)
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    compile_error!(
        \"windows-drivers-rs is designed to be run on a Windows host machine in a WDK environment. \\
         Please build using a Windows target.\"
    );
}

pub fn remove_var<K>(_key: K)
where
    K: AsRef<OsStr>,
{
    compile_error!(
        \"windows-drivers-rs is designed to be run on a Windows host machine in a WDK environment. \\
         Please build using a Windows target.\"
    );
}
";

    #[test]
    fn all_utils_edits_apply_to_the_shape_of_0_6_0() {
        let edited = edit_text("src/utils.rs", UTILS, "0.6.0").unwrap();
        assert!(!edited.contains("compile_error!"));
        assert!(edited.contains("env::set_var(key, value);"));
        assert!(edited.contains("env::remove_var(key);"));
        assert!(edited.contains("#[cfg(windows)]\nuse windows::{"));
        assert!(edited.contains("#[cfg(windows)]\nfn read_registry_key_string_value("));
        assert!(
            edited.contains("#[cfg(not(windows))]\nconst fn detect_wdk_content_root_from_registry")
        );
    }

    #[test]
    fn crlf_sources_are_edited_too() {
        let crlf = UTILS.replace('\n', "\r\n");
        let edited = edit_text("src/utils.rs", &crlf, "0.6.0").unwrap();
        assert!(!edited.contains("compile_error!"));
        assert!(!edited.contains('\r'));
    }

    #[test]
    fn a_changed_upstream_is_refused_with_the_edit_named() {
        let changed = UTILS.replace("compile_error!", "panic!");
        let error = edit_text("src/utils.rs", &changed, "0.7.0")
            .unwrap_err()
            .to_string();
        assert!(error.contains("0.7.0"), "{error}");
        assert!(error.contains("set_var/remove_var"), "{error}");
        assert!(error.contains(WRITTEN_FOR), "{error}");
    }

    #[test]
    fn symlink_edit_needs_both_calls_and_appends_helper() {
        let one = "std::os::windows::fs::symlink_file(a, b)";
        assert!(edit_text("src/cargo_make.rs", one, "0.6.0").is_err());
        let two = format!("{one};\n{one};\n");
        let edited = edit_text("src/cargo_make.rs", &two, "0.6.0").unwrap();
        assert_eq!(
            edited
                .matches("std::os::windows::fs::symlink_file(")
                .count(),
            1
        );
        assert!(edited.contains("std::os::unix::fs::symlink(original, link)"));
    }

    #[test]
    fn files_without_edits_are_unchanged() {
        assert_eq!(edit_text("src/lib.rs", "x", "0.6.0").unwrap(), "x");
    }
}

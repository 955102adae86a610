//! The host tools the Linux cross build needs, found or named with the
//! command that installs them.
//!
//! Defaults are Debian 12's paths; `CAPDMA_LLVM_ROOT` (default
//! `/usr/lib/llvm-14`), `CAPDMA_MINGW_INCLUDE` (default
//! `/usr/share/mingw-w64/include`) and `CAPDMA_MINGW_LIB` (default
//! `/usr/x86_64-w64-mingw32/lib`) override them.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The Rust target the drivers are built for.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-msvc";

/// Debian packages the pipeline uses (see `.ci/windows-prereqs.sh`).
pub const APT_PACKAGES: &[&str] = &[
    "clang-14",
    "llvm-14",
    "libclang-14-dev",
    "mingw-w64-x86-64-dev",
];

/// mingw-w64 import archives the synthesised import libraries come from:
/// `(stem, module name the library imports from)`.
pub const MINGW_IMPORT_LIBS: &[(&str, &str)] = &[
    ("ntoskrnl", "ntoskrnl.exe"),
    ("hal", "HAL.dll"),
    ("wmilib", "WMILIB.SYS"),
    ("ks", "ks.sys"),
];

/// Every host tool and directory the cross build uses.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `clang` (run as `clang-cl` through a symlink).
    pub clang: PathBuf,
    /// `llvm-lib`.
    pub llvm_lib: PathBuf,
    /// `llvm-dlltool`.
    pub llvm_dlltool: PathBuf,
    /// `llvm-nm`.
    pub llvm_nm: PathBuf,
    /// The directory holding `libclang.so` (`LIBCLANG_PATH`).
    pub libclang_dir: PathBuf,
    /// clang's own header directory (`stddef.h`, `stdarg.h`, ...).
    pub clang_builtin_include: PathBuf,
    /// mingw-w64's include directory (with `ddk/`).
    pub mingw_include: PathBuf,
    /// mingw-w64's library directory (with `libntoskrnl.a`, ...).
    pub mingw_lib: PathBuf,
    /// The cargo to run (`$CARGO` when run by cargo).
    pub cargo: OsString,
}

struct Missing {
    what: String,
    fix: String,
}

fn env_path(name: &str, default: &str) -> PathBuf {
    env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}

/// The highest-versioned `lib/clang/<ver>/include` under `llvm_root`.
fn clang_builtin_include(llvm_root: &Path) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(llvm_root.join("lib/clang"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("include"))
        .filter(|p| p.join("stddef.h").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn rustc_output(args: &[&str]) -> Option<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Is the Rust standard library for [`WINDOWS_TARGET`] installed?
fn windows_target_installed() -> bool {
    rustc_output(&["--print", "target-libdir", "--target", WINDOWS_TARGET]).is_some_and(|dir| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
    })
}

/// Is `rust-lld` in the active toolchain?
fn rust_lld_present() -> bool {
    let (Some(sysroot), Some(version)) = (
        rustc_output(&["--print", "sysroot"]),
        rustc_output(&["-vV"]),
    ) else {
        return false;
    };
    let Some(host) = version.lines().find_map(|l| l.strip_prefix("host: ")) else {
        return false;
    };
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/rust-lld")
        .is_file()
}

/// Find every prerequisite, or fail naming each missing one and the command
/// that installs it.
///
/// # Errors
/// When anything is missing.
pub fn check() -> Result<Toolchain> {
    let llvm_root = env_path("CAPDMA_LLVM_ROOT", "/usr/lib/llvm-14");
    let mingw_include = env_path("CAPDMA_MINGW_INCLUDE", "/usr/share/mingw-w64/include");
    let mingw_lib = env_path("CAPDMA_MINGW_LIB", "/usr/x86_64-w64-mingw32/lib");
    let bin = llvm_root.join("bin");
    let lib = llvm_root.join("lib");
    let mut missing = Vec::new();
    let mut need = |what: String, fix: &str| {
        missing.push(Missing {
            what,
            fix: fix.to_owned(),
        });
    };

    let tool = |name: &str| bin.join(name);
    for (path, package) in [
        (tool("clang"), "apt-get install -y clang-14"),
        (tool("llvm-lib"), "apt-get install -y llvm-14"),
        (tool("llvm-dlltool"), "apt-get install -y llvm-14"),
        (tool("llvm-nm"), "apt-get install -y llvm-14"),
    ] {
        if !path.is_file() {
            need(format!("{}", path.display()), package);
        }
    }
    let libclang = first_existing(&[lib.join("libclang.so"), lib.join("libclang.so.1")]);
    if libclang.is_none() {
        need(
            format!("libclang ({}/libclang.so)", lib.display()),
            "apt-get install -y libclang-14-dev",
        );
    }
    let builtin_include = clang_builtin_include(&llvm_root);
    if builtin_include.is_none() {
        need(
            format!(
                "clang's builtin headers ({}/clang/<version>/include)",
                lib.display()
            ),
            "apt-get install -y libclang-14-dev",
        );
    }
    if !mingw_include.join("ddk/wdm.h").is_file() || !mingw_include.join("ks.h").is_file() {
        need(
            format!(
                "mingw-w64 headers ({}/ddk/wdm.h, ks.h)",
                mingw_include.display()
            ),
            "apt-get install -y mingw-w64-x86-64-dev",
        );
    }
    for (stem, _) in MINGW_IMPORT_LIBS {
        let archive = mingw_lib.join(format!("lib{stem}.a"));
        if !archive.is_file() {
            need(
                format!("{}", archive.display()),
                "apt-get install -y mingw-w64-x86-64-dev",
            );
        }
    }
    if !windows_target_installed() {
        need(
            format!("the Rust standard library for {WINDOWS_TARGET}"),
            &format!("rustup target add {WINDOWS_TARGET}"),
        );
    }
    if !rust_lld_present() {
        need(
            "rust-lld in the active Rust toolchain".to_owned(),
            "rustup toolchain install stable (rustup's toolchains ship rust-lld)",
        );
    }

    if !missing.is_empty() {
        let mut message = String::from("missing prerequisites for the Windows cross build:\n");
        for m in &missing {
            let _ = writeln!(message, "  - {}\n      fix: {}", m.what, m.fix);
        }
        let _ = write!(
            message,
            "all at once: bash .ci/windows-prereqs.sh  (apt-get install -y {}; rustup target add {WINDOWS_TARGET})",
            APT_PACKAGES.join(" ")
        );
        bail!(message);
    }

    Ok(Toolchain {
        clang: tool("clang"),
        llvm_lib: tool("llvm-lib"),
        llvm_dlltool: tool("llvm-dlltool"),
        llvm_nm: tool("llvm-nm"),
        libclang_dir: lib,
        clang_builtin_include: builtin_include.context("checked above")?,
        mingw_include,
        mingw_lib,
        cargo: env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_include_picks_highest_version_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (ver, with_header) in [("13.0.1", true), ("14.0.6", true), ("15.0.0", false)] {
            let inc = root.join("lib/clang").join(ver).join("include");
            std::fs::create_dir_all(&inc).unwrap();
            if with_header {
                std::fs::write(inc.join("stddef.h"), "").unwrap();
            }
        }
        assert_eq!(
            clang_builtin_include(root),
            Some(root.join("lib/clang/14.0.6/include"))
        );
        assert_eq!(clang_builtin_include(&root.join("nowhere")), None);
    }
}

//! A WDK content root (`WDKContentRoot`) synthesised from mingw-w64, laid
//! out the way `wdk-build` looks for a real one:
//!
//! ```text
//! Include/<ver>/km/        every mingw ddk/ header (symlinks), wdm.h replaced
//!                          by a wrapper that adds the capdma shim
//! Include/<ver>/km/crt  -> mingw include/
//! Include/<ver>/shared  -> mingw include/
//! Include/<ver>/um      -> mingw include/
//! Lib/<ver>/km/x64/      ntoskrnl.lib hal.lib wmilib.lib ks.lib (llvm-dlltool
//!                        from .def files listed out of mingw's lib*.a with
//!                        nm, plus the shim's exports), an empty
//!                        BufferOverflowFastFailK.lib, and rpcrt4.lib
//!                        (UuidCreate only, for the tracelogging crate)
//! defs/                  the .def files, for reference
//! ```

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::def_file::{self, ExportKind};
use crate::prereqs::{Toolchain, MINGW_IMPORT_LIBS};
use crate::stamp;
use crate::wdk_shim;

/// The SDK version directory name. `wdk-build` wants `10.x.y.z`; the
/// headers are mingw-w64's whatever this says.
pub const SDK_VERSION: &str = "10.0.22621.0";

/// Bump when the layout or the generation changes.
const LAYOUT_REVISION: u32 = 3;

/// An empty `ar` archive: the kernel's `/GS` helpers are unused by Rust.
const EMPTY_ARCHIVE: &[u8] = b"!<arch>\n";

fn file_fingerprint(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(meta) => format!(
            "{} {} {:?}",
            path.display(),
            meta.len(),
            meta.modified().ok()
        ),
        Err(_) => format!("{} absent", path.display()),
    }
}

fn stamp_text(tc: &Toolchain) -> String {
    let mut text = format!(
        "layout {LAYOUT_REVISION}\nsdk {SDK_VERSION}\n{}\n{}\n{}\n",
        file_fingerprint(&tc.mingw_include.join("ddk/wdm.h")),
        file_fingerprint(&tc.llvm_dlltool),
        wdk_shim::SHIM_HEADER,
    );
    for (stem, module) in MINGW_IMPORT_LIBS {
        let _ = writeln!(
            text,
            "{module} {}",
            file_fingerprint(&tc.mingw_lib.join(format!("lib{stem}.a")))
        );
    }
    for (stem, extra) in wdk_shim::EXTRA_EXPORTS {
        let _ = writeln!(text, "extra {stem}: {}", extra.join(","));
    }
    text
}

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

fn include_tree(tc: &Toolchain, root: &Path) -> Result<()> {
    let version_dir = root.join("Include").join(SDK_VERSION);
    let km = version_dir.join("km");
    fs::create_dir_all(&km).with_context(|| format!("cannot create {}", km.display()))?;
    let ddk = tc.mingw_include.join("ddk");
    let entries = fs::read_dir(&ddk).with_context(|| format!("cannot list {}", ddk.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", ddk.display()))?;
        let name = entry.file_name();
        if name == "wdm.h" {
            continue;
        }
        symlink(entry.path(), km.join(&name))
            .with_context(|| format!("cannot link {}", km.join(&name).display()))?;
    }
    let mingw_wdm = ddk.join("wdm.h");
    let mingw_wdm = mingw_wdm
        .to_str()
        .with_context(|| format!("{} is not UTF-8", mingw_wdm.display()))?;
    fs::write(km.join("wdm.h"), wdk_shim::wdm_wrapper(mingw_wdm))
        .context("cannot write km/wdm.h")?;
    fs::write(km.join(wdk_shim::SHIM_HEADER_NAME), wdk_shim::SHIM_HEADER)
        .context("cannot write the shim header")?;
    for link in [
        km.join("crt"),
        version_dir.join("shared"),
        version_dir.join("um"),
    ] {
        symlink(&tc.mingw_include, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(())
}

fn import_libraries(tc: &Toolchain, root: &Path) -> Result<()> {
    let lib_dir = root.join("Lib").join(SDK_VERSION).join("km/x64");
    let def_dir = root.join("defs");
    fs::create_dir_all(&lib_dir).with_context(|| format!("cannot create {}", lib_dir.display()))?;
    fs::create_dir_all(&def_dir).with_context(|| format!("cannot create {}", def_dir.display()))?;
    for (stem, module) in MINGW_IMPORT_LIBS {
        let archive = tc.mingw_lib.join(format!("lib{stem}.a"));
        let nm = run(Command::new(&tc.llvm_nm).arg(&archive))?;
        let mut exports = def_file::exports_from_nm(&String::from_utf8_lossy(&nm));
        if exports.is_empty() {
            bail!(
                "no exports found in {} (is it a mingw import archive?)",
                archive.display()
            );
        }
        for (extra_stem, symbols) in wdk_shim::EXTRA_EXPORTS {
            if extra_stem == stem {
                for symbol in *symbols {
                    exports.insert((*symbol).to_owned(), ExportKind::Function);
                }
            }
        }
        let def_path = def_dir.join(format!("{stem}.def"));
        fs::write(&def_path, def_file::render(module, &exports))
            .with_context(|| format!("cannot write {}", def_path.display()))?;
        run(Command::new(&tc.llvm_dlltool)
            .args(["-m", "i386:x86-64", "-d"])
            .arg(&def_path)
            .arg("-l")
            .arg(lib_dir.join(format!("{stem}.lib"))))?;
    }
    fs::write(lib_dir.join("BufferOverflowFastFailK.lib"), EMPTY_ARCHIVE)
        .context("cannot write BufferOverflowFastFailK.lib")?;
    // The `tracelogging` crate's `Guid::new` (user mode's `UuidCreate`,
    // under `#[link(name = "rpcrt4")]`) is compiled into its rlib although
    // the drivers never call it, and lld-link resolves every symbol before
    // it drops unreferenced code: it needs an `rpcrt4.lib` naming
    // `UuidCreate`. The function is dropped with `/OPT:REF`, so nothing is
    // imported from `rpcrt4.dll`; the PE check refuses the image if it ever is.
    let mut rpcrt4 = std::collections::BTreeMap::new();
    rpcrt4.insert("UuidCreate".to_owned(), ExportKind::Function);
    let def_path = def_dir.join("rpcrt4.def");
    fs::write(&def_path, def_file::render("rpcrt4.dll", &rpcrt4))
        .with_context(|| format!("cannot write {}", def_path.display()))?;
    run(Command::new(&tc.llvm_dlltool)
        .args(["-m", "i386:x86-64", "-d"])
        .arg(&def_path)
        .arg("-l")
        .arg(lib_dir.join("rpcrt4.lib")))?;
    Ok(())
}

/// Make (or keep, when current) the synthesised WDK root at `root`.
/// Returns whether it was rebuilt.
///
/// # Errors
/// When a tool fails or the file system does.
pub fn prepare(tc: &Toolchain, root: &Path) -> Result<bool> {
    stamp::rebuild_if_stale(root, &stamp_text(tc), |scratch| {
        include_tree(tc, scratch)?;
        import_libraries(tc, scratch)
    })
}

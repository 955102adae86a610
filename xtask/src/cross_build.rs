//! `cargo xtask windows`: cross-build the driver packages on Linux into
//! `.sys` images for `x86_64-pc-windows-msvc`.
//!
//! Layout under `target/` (all generated, never committed):
//!
//! ```text
//! target/wdk-root/              synthesised WDKContentRoot (wdk_root.rs)
//! target/wdk-build-patched/     edited copy of wdk-build (wdk_build_patch.rs)
//! target/windows/bin/           clang-cl and llvm-lib symlinks for `cc`
//! target/windows/cargo/         CARGO_TARGET_DIR of the cross build
//! target/windows/<profile>/     <lib>.sys, <lib>.pdb, <lib>.map
//! ```
//!
//! The driver packages are libraries (`rlib`, so host tests never link a
//! driver); each is built with `cargo rustc --crate-type cdylib`, which
//! links the DLL that becomes the `.sys`. The cross build gets its own
//! target directory inside the workspace: `wdk-build` finds the workspace
//! by looking for `Cargo.lock` above `OUT_DIR`, and host builds are never
//! invalidated by the cross build's environment.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::lockfile;
use crate::prereqs::{Toolchain, WINDOWS_TARGET};
use crate::wdk_build_patch;
use crate::wdk_root;
use crate::workspace;

/// The driver packages, built in this order.
pub const DRIVER_PACKAGES: &[&str] = &["capdma-bus", "capdma-avstream", "capdma-probe"];

/// Driver packages built only for the project's tests (the emulated
/// kernel loads them): never packaged, signed for release or installed.
/// `capdma-probe` commits a Driver Verifier-class mistake per export.
pub const TEST_ONLY_PACKAGES: &[&str] = &["capdma-probe"];

/// Cargo features a driver package is built with for Windows: what its
/// `build.rs` needs on a non-Windows host (`capdma-avstream` generates its
/// KS bindings with bindgen, an optional build-dependency).
pub const DRIVER_FEATURES: &[(&str, &[&str])] = &[("capdma-avstream", &["ks-bindgen"])];

/// The features [`DRIVER_FEATURES`] lists for `package`, comma-separated
/// (`None` for none).
pub fn features_of(package: &str) -> Option<String> {
    DRIVER_FEATURES
        .iter()
        .find(|(name, _)| *name == package)
        .map(|(_, features)| features.join(","))
        .filter(|list| !list.is_empty())
}

/// The driver packages to build: `selected` (each one of
/// [`DRIVER_PACKAGES`]) in the order of [`DRIVER_PACKAGES`], or all of them
/// when `selected` is empty.
///
/// # Errors
/// When a selected name is not a driver package.
pub fn select_packages(selected: &[String]) -> Result<Vec<&'static str>> {
    if let Some(unknown) = selected
        .iter()
        .find(|name| !DRIVER_PACKAGES.contains(&name.as_str()))
    {
        bail!(
            "`{unknown}` is not a driver package (driver packages: {})",
            DRIVER_PACKAGES.join(", ")
        );
    }
    Ok(DRIVER_PACKAGES
        .iter()
        .copied()
        .filter(|package| selected.is_empty() || selected.iter().any(|s| s == package))
        .collect())
}

/// Windows-only library crates the drivers' glue shares: no image of their
/// own, linted with the drivers by `cargo xtask windows --clippy` (clippy
/// lints only the packages it is asked for, not their dependencies).
pub const SHARED_GLUE_LIBRARIES: &[&str] = &["capdma-wdm"];

/// Options of `cargo xtask windows`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Build with the release profile (default) rather than dev.
    pub release: bool,
    /// Lint instead of build: `cargo clippy` of each driver's library for
    /// the Windows target (its glue included), warnings as errors; no image.
    pub clippy: bool,
}

/// Where everything goes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Workspace root.
    pub root: PathBuf,
    /// `target/wdk-root`.
    pub wdk_root: PathBuf,
    /// `target/wdk-build-patched`.
    pub wdk_build: PathBuf,
    /// `target/windows/bin`.
    pub tools: PathBuf,
    /// `target/windows/cargo`.
    pub cargo_target: PathBuf,
    /// `target/windows/<profile>`.
    pub out: PathBuf,
}

impl Layout {
    /// The layout for workspace `root`.
    pub fn new(root: &Path, options: Options) -> Self {
        let target = root.join("target");
        let windows = target.join("windows");
        Self {
            root: root.to_path_buf(),
            wdk_root: target.join("wdk-root"),
            wdk_build: target.join("wdk-build-patched"),
            tools: windows.join("bin"),
            cargo_target: windows.join("cargo"),
            out: windows.join(profile_dir(options)),
        }
    }
}

fn profile_dir(options: Options) -> &'static str {
    if options.release {
        "release"
    } else {
        "debug"
    }
}

/// `BINDGEN_EXTRA_CLANG_ARGS` for the mingw headers on the msvc target:
/// mingw's headers want a GNU-compatible compiler (`-fgnuc-version`), are
/// kernel headers (`-ffreestanding`), use an undefined `CDECL` in places,
/// and need clang's own `stddef.h`/`stdarg.h` (bindgen runs with
/// `detect_include_paths(false)`).
pub fn bindgen_args(tc: &Toolchain) -> String {
    format!(
        "-fgnuc-version=4.2.1 -ffreestanding -DCDECL= -isystem {}",
        tc.clang_builtin_include.display()
    )
}

fn replace_symlink(original: &Path, link: &Path) -> Result<()> {
    if fs::read_link(link).is_ok_and(|current| current == original) {
        return Ok(());
    }
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    symlink(original, link).with_context(|| format!("cannot link {}", link.display()))
}

fn tool_links(tc: &Toolchain, layout: &Layout) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(&layout.tools)
        .with_context(|| format!("cannot create {}", layout.tools.display()))?;
    // clang picks its driver mode from its name: as `clang-cl` it takes MSVC
    // options, which is what `cc` passes for an msvc target.
    let clang_cl = layout.tools.join("clang-cl");
    let llvm_lib = layout.tools.join("llvm-lib");
    replace_symlink(&tc.clang, &clang_cl)?;
    replace_symlink(&tc.llvm_lib, &llvm_lib)?;
    Ok((clang_cl, llvm_lib))
}

/// The cargo command that builds `package` into a DLL.
fn cargo_command(
    tc: &Toolchain,
    layout: &Layout,
    package: &str,
    options: Options,
) -> Result<Command> {
    let (clang_cl, llvm_lib) = tool_links(tc, layout)?;
    let wdk_build = layout
        .wdk_build
        .to_str()
        .context("the workspace path is not UTF-8")?;
    let mut command = Command::new(&tc.cargo);
    command
        .current_dir(&layout.root)
        .args(if options.clippy { ["clippy"].as_slice() } else { ["rustc"].as_slice() })
        .args(["-p", package, "--lib"])
        .args(if options.clippy { [].as_slice() } else { ["--crate-type", "cdylib"].as_slice() })
        .args(["--target", WINDOWS_TARGET])
        .args(options.release.then_some("--release"))
        .args(
            features_of(package)
                .map(|list| ["--features".to_owned(), list])
                .into_iter()
                .flatten(),
        )
        .arg("--config")
        .arg(format!("patch.crates-io.wdk-build.path={wdk_build:?}"))
        // A panic in a driver is a bugcheck: never unwind.
        .args(["--config", "profile.dev.panic=\"abort\""])
        .args(["--config", "profile.release.panic=\"abort\""])
        .env("CARGO_TARGET_DIR", &layout.cargo_target)
        .env("WDKContentRoot", &layout.wdk_root)
        .env("LIBCLANG_PATH", &tc.libclang_dir)
        .env(
            "BINDGEN_EXTRA_CLANG_ARGS_x86_64_pc_windows_msvc",
            bindgen_args(tc),
        )
        .env("CC_x86_64_pc_windows_msvc", clang_cl)
        .env("AR_x86_64_pc_windows_msvc", llvm_lib)
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", "rust-lld");
    if options.clippy {
        command.args(["--", "-D", "warnings"]);
    }
    Ok(command)
}

fn copy_outputs(layout: &Layout, lib_name: &str, options: Options) -> Result<PathBuf> {
    let built = layout
        .cargo_target
        .join(WINDOWS_TARGET)
        .join(profile_dir(options));
    let dll = built.join(format!("{lib_name}.dll"));
    if !dll.is_file() {
        bail!("cargo succeeded but {} is missing", dll.display());
    }
    fs::create_dir_all(&layout.out)
        .with_context(|| format!("cannot create {}", layout.out.display()))?;
    let image = layout.out.join(format!("{lib_name}.sys"));
    fs::copy(&dll, &image).with_context(|| format!("cannot copy {}", dll.display()))?;
    for (from, to) in [
        (
            built.join(format!("{lib_name}.pdb")),
            layout.out.join(format!("{lib_name}.pdb")),
        ),
        (
            built.join("deps").join(format!("{lib_name}.map")),
            layout.out.join(format!("{lib_name}.map")),
        ),
    ] {
        if from.is_file() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        } else if to.exists() {
            fs::remove_file(&to)
                .with_context(|| format!("cannot remove stale {}", to.display()))?;
        }
    }
    Ok(image)
}

const LINK_HINT: &str = "\
hints:
  - `#[panic_handler] function required` or `undefined symbol: DriverEntry`: the package has
    no Windows glue yet. It needs a module compiled only for Windows
    (`#[cfg(target_os = \"windows\")] mod wdm;`) with `use wdk_panic as _;` and
    `#[unsafe(export_name = \"DriverEntry\")] pub unsafe extern \"system\" fn ...`.
  - `undefined symbol: <Ddi>`: the DDI is missing from mingw-w64's import libraries; add it to
    xtask/src/wdk_shim.rs (declaration and export), or declare it with
    #[link(name = \"ntoskrnl.exe\", kind = \"raw-dylib\", modifiers = \"+verbatim\")].
  - see docs/windows-build.md, \"For the driver glue\".";

/// Build every driver package; returns the `.sys` paths.
///
/// # Errors
/// When a step fails; `Cargo.lock` is restored in every case.
pub fn run(tc: &Toolchain, options: Options, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let root = workspace::root();
    let layout = Layout::new(&root, options);

    let rebuilt = wdk_root::prepare(tc, &layout.wdk_root)?;
    println!(
        "[windows] WDK root      {} ({})",
        layout.wdk_root.display(),
        if rebuilt { "synthesised" } else { "up to date" }
    );

    let lock = lockfile::Guard::snapshot(&root.join("Cargo.lock"))?;
    let built = build_all(tc, &layout, options, packages);
    match lock.settle(|| reresolve_lock(tc, &root))? {
        lockfile::Outcome::Unchanged => {}
        lockfile::Outcome::Restored | lockfile::Outcome::SnapshotWritten => {
            println!("[windows] Cargo.lock     restored (the [patch] had rewritten it)");
        }
        lockfile::Outcome::ReResolvedWithOtherChanges => println!(
            "[windows] Cargo.lock     re-resolved without the patch; it also has changes made \
             by others during the build"
        ),
    }
    let built = built?;
    if options.clippy {
        println!("[windows] clippy         clean: {}", built.join(", "));
        return Ok(Vec::new());
    }

    let mut images = Vec::new();
    for lib_name in built {
        images.push(copy_outputs(&layout, &lib_name, options)?);
    }
    for image in &images {
        println!("[windows] image          {}", image.display());
    }
    Ok(images)
}

/// Let cargo re-resolve `Cargo.lock` without the `[patch]`.
fn reresolve_lock(tc: &Toolchain, root: &Path) -> Result<()> {
    workspace::metadata(&tc.cargo, root, None).map(drop)
}

fn build_all(
    tc: &Toolchain,
    layout: &Layout,
    options: Options,
    packages: &[&str],
) -> Result<Vec<String>> {
    let facts = workspace::facts(tc, &layout.root, packages)?;
    let (version, source) = &facts.wdk_build;
    let rebuilt = wdk_build_patch::prepare(source, version, &layout.wdk_build)?;
    println!(
        "[windows] wdk-build      {version} patched at {} ({})",
        layout.wdk_build.display(),
        if rebuilt { "edited" } else { "up to date" }
    );
    let mut built = Vec::new();
    for driver in &facts.drivers {
        println!(
            "[windows] {}       {} -> {}.sys ({}{})",
            if options.clippy { "linting " } else { "building" },
            driver.package,
            driver.lib_name,
            profile_dir(options),
            if TEST_ONLY_PACKAGES.contains(&driver.package.as_str()) {
                ", test-only: never packaged or installed"
            } else {
                ""
            }
        );
        let mut command = cargo_command(tc, layout, &driver.package, options)?;
        let status = command
            .status()
            .with_context(|| format!("cannot run {command:?}"))?;
        if !status.success() {
            bail!(
                "cross build of `{}` failed ({status})\n{LINK_HINT}",
                driver.package
            );
        }
        built.push(driver.lib_name.clone());
    }
    if options.clippy {
        for library in SHARED_GLUE_LIBRARIES {
            println!("[windows] linting        {library} (the glue the drivers share)");
            let mut command = cargo_command(tc, layout, library, options)?;
            let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
            if !status.success() {
                bail!("clippy of `{library}` failed ({status})");
            }
            built.push((*library).to_owned());
        }
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_target() {
        let layout = Layout::new(Path::new("/w"), Options { release: true, clippy: false });
        assert_eq!(layout.out, PathBuf::from("/w/target/windows/release"));
        assert_eq!(
            layout.cargo_target,
            PathBuf::from("/w/target/windows/cargo")
        );
        assert_eq!(layout.wdk_root, PathBuf::from("/w/target/wdk-root"));
        let debug = Layout::new(Path::new("/w"), Options { release: false, clippy: false });
        assert_eq!(debug.out, PathBuf::from("/w/target/windows/debug"));
    }

    #[test]
    fn package_selection_keeps_the_build_order() {
        assert_eq!(select_packages(&[]).unwrap(), DRIVER_PACKAGES);
        assert_eq!(
            select_packages(&["capdma-avstream".into(), "capdma-bus".into()]).unwrap(),
            ["capdma-bus", "capdma-avstream"]
        );
        assert_eq!(
            select_packages(&["capdma-bus".into(), "capdma-bus".into()]).unwrap(),
            ["capdma-bus"]
        );
        assert!(select_packages(&["capdma-sim".into()]).is_err());
        assert_eq!(
            select_packages(&["capdma-probe".into()]).unwrap(),
            ["capdma-probe"]
        );
    }

    #[test]
    fn test_only_packages_are_driver_packages_but_not_the_product() {
        assert!(TEST_ONLY_PACKAGES
            .iter()
            .all(|package| DRIVER_PACKAGES.contains(package)));
        assert!(!TEST_ONLY_PACKAGES.contains(&"capdma-bus"));
        assert!(!TEST_ONLY_PACKAGES.contains(&"capdma-avstream"));
    }

    #[test]
    fn avstream_is_built_with_its_bindgen_feature() {
        assert_eq!(
            features_of("capdma-avstream").as_deref(),
            Some("ks-bindgen")
        );
        assert_eq!(features_of("capdma-bus"), None);
        assert!(DRIVER_FEATURES
            .iter()
            .all(|(package, _)| DRIVER_PACKAGES.contains(package)));
    }

    #[test]
    fn symlinks_are_replaced_only_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("tool");
        replace_symlink(Path::new("/bin/a"), &link).unwrap();
        replace_symlink(Path::new("/bin/a"), &link).unwrap();
        replace_symlink(Path::new("/bin/b"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("/bin/b"));
    }
}

//! The build script of a capdma driver package (`bus-driver/build.rs` and
//! `avstream-driver/build.rs` include this file with `#[path]`).
//!
//! * Host builds (any target but Windows): nothing but the `check-cfg`
//!   declaration, so `cargo test` on Linux never needs the WDK.
//! * Windows target on a Windows host: the standard windows-drivers-rs flow,
//!   `wdk_build::configure_wdk_binary_build()`.
//! * Windows target on another host (`cargo xtask windows`): the same
//!   directives `wdk-build` emits for a WDM driver, with the library path
//!   taken from `WDKContentRoot` (the synthesised WDK root). `wdk-build` is
//!   not used here because cargo resolves `[target.'cfg(windows)'.build-dependencies]`
//!   against the host, and this script must also compile where the patched
//!   `wdk-build` does not exist.

use std::env;
use std::path::{Path, PathBuf};

/// Linker arguments of a WDM driver, as `wdk-build` 0.6 emits them
/// (`WindowsDriver.KernelMode.props` and `Microsoft.Link.Common.props`).
pub const WDM_LINK_ARGS: &[&str] = &[
    "/DRIVER",
    "/NODEFAULTLIB",
    "/SUBSYSTEM:NATIVE",
    "/KERNEL",
    "/ENTRY:DriverEntry",
    "/IGNORE:4257",
    "/IGNORE:4216",
    "/NXCOMPAT",
    "/DYNAMICBASE",
    "/MAP",
    "/MAPINFO:EXPORTS",
    "/OPT:REF,ICF",
    "/INTEGRITYCHECK",
    "/MANIFEST:NO",
];

/// The newest `10.*` SDK version directory in `lib_dir` (`WDKContentRoot/Lib`),
/// or `pinned` (`Version_Number`, as in `wdk-build`) when given.
pub fn sdk_version(lib_dir: &Path, pinned: Option<String>) -> Option<String> {
    if pinned.is_some() {
        return pinned;
    }
    std::fs::read_dir(lib_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("10."))
        .max()
}

/// The import-library directory of a WDK root for kernel-mode x64.
pub fn kernel_library_dir(wdk_root: &Path, pinned: Option<String>) -> Result<PathBuf, String> {
    let lib_dir = wdk_root.join("Lib");
    let version = sdk_version(&lib_dir, pinned)
        .ok_or_else(|| format!("no 10.* SDK version directory in {}", lib_dir.display()))?;
    let dir = lib_dir.join(version).join("km").join("x64");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} does not exist", dir.display()))
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

#[cfg(windows)]
fn configure_windows_target() {
    if let Err(error) = wdk_build::configure_wdk_binary_build() {
        fail(&format!(
            "wdk-build could not configure the driver build: {error}"
        ));
    }
}

#[cfg(not(windows))]
fn configure_windows_target() {
    println!("cargo::rerun-if-env-changed=WDKContentRoot");
    println!("cargo::rerun-if-env-changed=Version_Number");
    let Some(root) = env::var_os("WDKContentRoot") else {
        fail(
            "building a driver for Windows on a non-Windows host needs WDKContentRoot; \
             use `cargo xtask windows` (docs/windows-build.md)",
        );
    };
    match kernel_library_dir(Path::new(&root), env::var("Version_Number").ok()) {
        Ok(dir) => println!("cargo::rustc-link-search=native={}", dir.display()),
        Err(error) => fail(&format!("WDKContentRoot: {error}")),
    }
    // `rustc-link-arg`, not `rustc-cdylib-link-arg`: the package is an rlib
    // in its manifest and is linked as a cdylib only by `cargo rustc
    // --crate-type cdylib`; cargo warns about cdylib arguments for a package
    // without a cdylib target.
    for arg in WDM_LINK_ARGS {
        println!("cargo::rustc-link-arg={arg}");
    }
    println!("cargo::rustc-cfg=driver_model__driver_type=\"WDM\"");
}

/// The build script.
pub fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(driver_model__driver_type, values(\"WDM\", \"KMDF\", \"UMDF\"))");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        configure_windows_target();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_newest_sdk_version_or_the_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for version in ["10.0.19041.0", "10.0.22621.0", "8.1"] {
            std::fs::create_dir_all(root.join("Lib").join(version).join("km/x64")).unwrap();
        }
        assert_eq!(
            kernel_library_dir(root, None).unwrap(),
            root.join("Lib/10.0.22621.0/km/x64")
        );
        assert_eq!(
            kernel_library_dir(root, Some("10.0.19041.0".into())).unwrap(),
            root.join("Lib/10.0.19041.0/km/x64")
        );
        assert!(kernel_library_dir(root, Some("10.0.1.0".into())).is_err());
        assert!(kernel_library_dir(&root.join("absent"), None).is_err());
    }

    #[test]
    fn link_args_name_the_wdm_entry_point_and_native_subsystem() {
        assert!(WDM_LINK_ARGS.contains(&"/ENTRY:DriverEntry"));
        assert!(WDM_LINK_ARGS.contains(&"/SUBSYSTEM:NATIVE"));
        assert!(WDM_LINK_ARGS.contains(&"/NODEFAULTLIB"));
    }
}

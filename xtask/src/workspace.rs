//! What the cross build needs to know about the workspace, from
//! `cargo metadata` resolved for the Windows target (read with the
//! `cargo_metadata` crate): where the locked `wdk-build` is unpacked, and
//! the library names and versions of the driver packages.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cargo_metadata::{Metadata, MetadataCommand};

use crate::prereqs::{Toolchain, WINDOWS_TARGET};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A driver package of the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverPackage {
    /// Package name (`capdma-bus`).
    pub package: String,
    /// Library target name (`capdma_bus`): the image is `<lib>.sys`.
    pub lib_name: String,
    /// The package's version (`0.1.0`), the default of the INF's `DriverVer`.
    pub version: String,
}

/// What `cargo metadata` told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `wdk-build`'s locked version and its unpacked source directory.
    pub wdk_build: (String, PathBuf),
    /// The requested driver packages, in request order.
    pub drivers: Vec<DriverPackage>,
}

/// The workspace packages named in `packages`, in that order.
///
/// # Errors
/// When a package is not a workspace member or has no library target.
pub fn drivers_from_metadata(metadata: &Metadata, packages: &[&str]) -> Result<Vec<DriverPackage>> {
    let members = metadata.workspace_packages();
    packages
        .iter()
        .map(|&name| {
            let package = members
                .iter()
                .find(|p| p.name.as_str() == name)
                .with_context(|| format!("package `{name}` is not in the workspace"))?;
            let lib = package
                .targets
                .iter()
                .find(|t| t.is_lib() || t.is_rlib() || t.is_cdylib())
                .with_context(|| format!("package `{name}` has no library target"))?;
            Ok(DriverPackage {
                package: name.to_owned(),
                lib_name: lib.name.replace('-', "_"),
                version: package.version.to_string(),
            })
        })
        .collect()
}

/// Extract [`Facts`] from `cargo metadata` output.
///
/// # Errors
/// When `wdk-build` from crates.io is absent or locked at more than one
/// version, or a package is missing or has no library.
pub fn facts_from_metadata(metadata: &Metadata, packages: &[&str]) -> Result<Facts> {
    let wdk_builds: Vec<_> = metadata
        .packages
        .iter()
        .filter(|p| {
            p.name.as_str() == "wdk-build"
                && p.source
                    .as_ref()
                    .is_some_and(|s| s.repr.starts_with("registry+"))
        })
        .collect();
    let wdk_build = match wdk_builds.as_slice() {
        [one] => {
            let dir = one
                .manifest_path
                .parent()
                .context("wdk-build's manifest path has no parent")?;
            (one.version.to_string(), dir.as_std_path().to_path_buf())
        }
        [] => bail!(
            "wdk-build is not in the Windows dependency graph from crates.io. The driver packages \
             need `[target.'cfg(windows)'.dependencies] wdk-sys` (which builds with wdk-build); \
             if Cargo.lock points wdk-build at a path, restore it from git."
        ),
        several => bail!(
            "wdk-build is locked at {} versions; the patch needs exactly one",
            several.len()
        ),
    };
    Ok(Facts {
        wdk_build,
        drivers: drivers_from_metadata(metadata, packages)?,
    })
}

/// `cargo metadata` of the workspace at `root`, resolved for
/// `filter_platform` when given (`--filter-platform`).
///
/// # Errors
/// When cargo fails or prints something that is not cargo metadata.
pub fn metadata(
    cargo: &std::ffi::OsStr,
    root: &Path,
    filter_platform: Option<&str>,
) -> Result<Metadata> {
    let mut command = MetadataCommand::new();
    command.cargo_path(cargo).current_dir(root);
    if let Some(platform) = filter_platform {
        command.other_options(vec!["--filter-platform".to_owned(), platform.to_owned()]);
    }
    command.exec().context("cargo metadata failed")
}

/// [`Facts`] from `cargo metadata` for the Windows target in the workspace
/// `root`.
///
/// # Errors
/// When cargo fails or its output is not as expected.
pub fn facts(tc: &Toolchain, root: &Path, packages: &[&str]) -> Result<Facts> {
    facts_from_metadata(&metadata(&tc.cargo, root, Some(WINDOWS_TARGET))?, packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package object as `cargo metadata --format-version 1` prints it,
    /// with the fields `cargo_metadata` requires.
    fn package(
        name: &str,
        version: &str,
        source: Option<&str>,
        manifest: &str,
        targets: &str,
    ) -> String {
        let source = source.map_or_else(|| "null".to_owned(), |s| format!("{s:?}"));
        format!(
            r#"{{"name":"{name}","version":"{version}","id":"{name} {version}","source":{source},
                "dependencies":[],"features":{{}},"manifest_path":"{manifest}","targets":[{targets}]}}"#
        )
    }

    fn target(kind: &str, name: &str) -> String {
        format!(
            r#"{{"kind":["{kind}"],"crate_types":["{kind}"],"name":"{name}","src_path":"/w/src/lib.rs"}}"#
        )
    }

    fn metadata_json(wdk_build_name: &str) -> String {
        let packages = [
            package(
                wdk_build_name,
                "0.6.0",
                Some("registry+https://github.com/rust-lang/crates.io-index"),
                "/home/u/.cargo/registry/src/idx/wdk-build-0.6.0/Cargo.toml",
                "",
            ),
            package(
                "capdma-bus",
                "0.1.0",
                None,
                "/w/bus-driver/Cargo.toml",
                &[
                    target("custom-build", "build-script-build"),
                    target("lib", "capdma_bus"),
                ]
                .join(","),
            ),
            package(
                "capdma-sim",
                "0.2.3",
                None,
                "/w/sim/Cargo.toml",
                &target("bin", "capdma-sim"),
            ),
        ];
        format!(
            r#"{{"packages":[{}],"workspace_members":["capdma-bus 0.1.0","capdma-sim 0.2.3"],
                "resolve":null,"workspace_root":"/w","target_directory":"/w/target","version":1}}"#,
            packages.join(",")
        )
    }

    fn parsed(json: &str) -> Metadata {
        MetadataCommand::parse(json).expect("the fixture is cargo metadata")
    }

    #[test]
    fn finds_wdk_build_and_driver_libs() {
        let facts =
            facts_from_metadata(&parsed(&metadata_json("wdk-build")), &["capdma-bus"]).unwrap();
        assert_eq!(facts.wdk_build.0, "0.6.0");
        assert_eq!(
            facts.wdk_build.1,
            PathBuf::from("/home/u/.cargo/registry/src/idx/wdk-build-0.6.0")
        );
        assert_eq!(
            facts.drivers,
            vec![DriverPackage {
                package: "capdma-bus".into(),
                lib_name: "capdma_bus".into(),
                version: "0.1.0".into(),
            }]
        );
    }

    #[test]
    fn missing_package_library_or_wdk_build_are_errors() {
        let metadata = parsed(&metadata_json("wdk-build"));
        assert!(facts_from_metadata(&metadata, &["capdma-avstream"]).is_err());
        assert!(facts_from_metadata(&metadata, &["capdma-sim"]).is_err());
        let no_wdk = parsed(&metadata_json("other"));
        let error = facts_from_metadata(&no_wdk, &["capdma-bus"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("wdk-sys"), "{error}");
        assert!(MetadataCommand::parse("not json").is_err());
    }

    #[test]
    fn reads_this_workspace() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let metadata = metadata(&cargo, &root(), None).expect("cargo metadata of this workspace");
        let drivers = drivers_from_metadata(&metadata, &["capdma-bus", "capdma-avstream"]).unwrap();
        let libs: Vec<&str> = drivers.iter().map(|d| d.lib_name.as_str()).collect();
        assert_eq!(libs, ["capdma_bus", "capdma_avstream"]);
        assert!(drivers.iter().all(|d| d.version.split('.').count() == 3));
    }
}

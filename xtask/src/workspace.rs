//! What the cross build needs to know about the workspace, from
//! `cargo metadata` resolved for the Windows target: where the locked
//! `wdk-build` is unpacked, and the library names of the driver packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

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
}

/// What `cargo metadata` told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `wdk-build`'s locked version and its unpacked source directory.
    pub wdk_build: (String, PathBuf),
    /// The requested driver packages, in request order.
    pub drivers: Vec<DriverPackage>,
}

/// Extract [`Facts`] from `cargo metadata` JSON.
///
/// # Errors
/// When the JSON is not cargo metadata, `wdk-build` is absent or locked at
/// more than one version, or a package is missing or has no library.
pub fn facts_from_metadata(json: &str, packages: &[&str]) -> Result<Facts> {
    let metadata: Value =
        serde_json::from_str(json).context("cargo metadata printed invalid JSON")?;
    let all = metadata["packages"]
        .as_array()
        .context("cargo metadata has no `packages` list")?;
    let str_of = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();

    let wdk_builds: Vec<&Value> = all
        .iter()
        .filter(|p| {
            p["name"] == "wdk-build"
                && p["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("registry+"))
        })
        .collect();
    let wdk_build = match wdk_builds.as_slice() {
        [one] => {
            let manifest = PathBuf::from(str_of(one, "manifest_path"));
            let dir = manifest
                .parent()
                .context("wdk-build's manifest path has no parent")?
                .to_path_buf();
            (str_of(one, "version"), dir)
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

    let mut drivers = Vec::new();
    for &name in packages {
        let package = all
            .iter()
            .find(|p| p["name"] == name && p["source"].is_null())
            .with_context(|| format!("package `{name}` is not in the workspace"))?;
        let lib_name = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "rlib" || k == "cdylib"))
            })
            .map(|t| str_of(t, "name").replace('-', "_"))
            .with_context(|| format!("package `{name}` has no library target"))?;
        drivers.push(DriverPackage {
            package: name.to_owned(),
            lib_name,
        });
    }
    Ok(Facts { wdk_build, drivers })
}

/// Run `cargo metadata` for the Windows target in the workspace `root`.
///
/// # Errors
/// When cargo fails or its output is not as expected.
pub fn facts(tc: &Toolchain, root: &Path, packages: &[&str]) -> Result<Facts> {
    let output = Command::new(&tc.cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            WINDOWS_TARGET,
        ])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    facts_from_metadata(&String::from_utf8_lossy(&output.stdout), packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{"packages":[
      {"name":"wdk-build","version":"0.6.0","source":"registry+https://github.com/rust-lang/crates.io-index",
       "manifest_path":"/home/u/.cargo/registry/src/idx/wdk-build-0.6.0/Cargo.toml","targets":[]},
      {"name":"capdma-bus","version":"0.1.0","source":null,"manifest_path":"/w/bus-driver/Cargo.toml",
       "targets":[{"kind":["custom-build"],"name":"build-script-build"},{"kind":["lib"],"name":"capdma_bus"}]},
      {"name":"capdma-sim","version":"0.1.0","source":null,"manifest_path":"/w/sim/Cargo.toml",
       "targets":[{"kind":["bin"],"name":"capdma-sim"}]}
    ]}"#;

    #[test]
    fn finds_wdk_build_and_driver_libs() {
        let facts = facts_from_metadata(METADATA, &["capdma-bus"]).unwrap();
        assert_eq!(facts.wdk_build.0, "0.6.0");
        assert_eq!(
            facts.wdk_build.1,
            PathBuf::from("/home/u/.cargo/registry/src/idx/wdk-build-0.6.0")
        );
        assert_eq!(
            facts.drivers,
            vec![DriverPackage {
                package: "capdma-bus".into(),
                lib_name: "capdma_bus".into()
            }]
        );
    }

    #[test]
    fn missing_package_library_or_wdk_build_are_errors() {
        assert!(facts_from_metadata(METADATA, &["capdma-avstream"]).is_err());
        assert!(facts_from_metadata(METADATA, &["capdma-sim"]).is_err());
        let no_wdk = METADATA.replace("\"wdk-build\"", "\"other\"");
        let error = facts_from_metadata(&no_wdk, &["capdma-bus"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("wdk-sys"), "{error}");
        assert!(facts_from_metadata("not json", &[]).is_err());
        assert!(facts_from_metadata("{}", &[]).is_err());
    }
}

//! Build script of `capdma-avstream`:
//!
//! * the driver link setup shared by both driver packages
//!   (`xtask/build-support/driver_build.rs`, `docs/windows-build.md`);
//! * for Windows targets, the crate's own bindings of the kernel-streaming
//!   parts of `ks.h`/`ksmedia.h` (`wdk-sys` has none): bindgen over the WDK
//!   headers, limited to what `src/ks/` uses, written to
//!   `$OUT_DIR/ks_bindings.rs`, and `ks.lib` linked for the `Ks*` imports.
//!
//! Host builds (any target but Windows) run nothing of the second part and
//! compile neither bindgen nor libclang: bindgen is an optional
//! build-dependency, enabled by the `ks-bindgen` feature (which `cargo xtask
//! windows` turns on for this package) or, on a Windows host, by the
//! `cfg(windows)` build-dependency table.

#[path = "../xtask/build-support/driver_build.rs"]
#[allow(dead_code)] // parts are used only on one kind of host
mod driver_build;

fn main() {
    driver_build::main();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        ks_bindings::generate();
    }
}

/// The KS bindings (Windows targets).
#[cfg(any(windows, feature = "ks-bindgen"))]
mod ks_bindings {
    use std::env;
    use std::path::{Path, PathBuf};

    /// What bindgen parses: the kernel headers first (`ks.h` needs
    /// `_NTDDK_`), `windef.h` for the `RECT`/`DWORD` of `ksmedia.h`, and
    /// `TCHAR`, which `ksmedia.h` uses but no kernel header defines (the
    /// `UNICODE` definition; only `KSPROPERTY_EXTXPORT_S`, which is not
    /// bound, has one).
    const WRAPPER: &str = "\
#include <ntddk.h>
#include <windef.h>
#ifndef _TCHAR_DEFINED
typedef WCHAR TCHAR;
#define _TCHAR_DEFINED
#endif
#include <ks.h>
#include <ksmedia.h>
";

    /// The types the glue uses; bindgen adds what they contain from
    /// `ks.h`/`ksmedia.h` (everything else is blocklisted by file and
    /// comes from `wdk-sys`).
    const TYPES: &[&str] = &[
        "KSDEVICE_DESCRIPTOR",
        "KSDEVICE_DISPATCH",
        "KSDEVICE",
        "KSFILTER_DESCRIPTOR",
        "KSFILTER_DISPATCH",
        "KSFILTERFACTORY",
        "KSPIN_DESCRIPTOR_EX",
        "KSPIN_DISPATCH",
        "KSPIN",
        "KSALLOCATOR_FRAMING_EX",
        "KSSTREAM_POINTER",
        "KSSTREAM_POINTER_OFFSET",
        "KSSTREAM_POINTER_STATE",
        "KSSTREAM_HEADER",
        "KSMAPPING",
        "KSPROPERTY_ITEM",
        "KSPROPERTY_SET",
        "KSAUTOMATION_TABLE",
        "KSMETHOD_ITEM",
        "KSEVENT_ITEM",
        "KS_FRAME_INFO",
        "KSP_PIN",
        "KSDATARANGE",
        "KSATTRIBUTE_LIST",
        "KSMULTIPLE_ITEM",
        "KSPROPERTY_DROPPEDFRAMES_CURRENT_S",
        "PFNKSFREE",
    ];

    /// The `Ks*` functions the glue calls.
    const FUNCTIONS: &[&str] = &[
        "KsInitializeDriver",
        "KsCreateFilterFactory",
        "KsAcquireDevice",
        "KsReleaseDevice",
        "KsDeviceRegisterAdapterObject",
        "KsAddItemToObjectBag",
        "KsGetDevice",
        "KsGetPinFromIrp",
        "_KsEdit",
        "KsPinGetLeadingEdgeStreamPointer",
        "KsStreamPointerClone",
        "KsStreamPointerAdvanceOffsets",
        "KsStreamPointerAdvanceOffsetsAndUnlock",
        "KsStreamPointerUnlock",
        "KsStreamPointerDelete",
        "KsPinAttemptProcessing",
        "KsPinAcquireProcessingMutex",
        "KsPinReleaseProcessingMutex",
    ];

    /// The `#define`d constants the glue uses.
    const VARS: &[&str] = &[
        "KSPIN_FLAG_.*",
        "KSSTREAM_HEADER_OPTIONSF_.*",
        "KSPROPERTY_TYPE_GET",
        "KSDEVICE_DESCRIPTOR_VERSION",
        "KSALLOCATOR_REQUIREMENTF_.*",
    ];

    /// Headers whose items are not generated (referred to by name, and
    /// resolved from `wdk-sys`): every file whose name does not start with
    /// `ks` (`wdm.h`, `ntddk.h`, `ntdef.h`, `windef.h`, clang's own, ...).
    const NOT_KS_HEADER: &str = r".*[/\\]([^k/\\][^/\\]*|k[^s/\\][^/\\]*)";

    /// Tells bindgen that the `wdk-sys` types it does not generate (every
    /// blocklisted one) are `Copy`, as `wdk-sys` derives them; without it,
    /// every union holding one (`KSIDENTIFIER`, `KSDATAFORMAT`,
    /// `KSSTREAM_POINTER_OFFSET`, ...) would become a `__BindgenUnionField`
    /// struct instead of a Rust `union`.
    #[derive(Debug)]
    struct WdkSysTypesAreCopy;

    impl bindgen::callbacks::ParseCallbacks for WdkSysTypesAreCopy {
        fn blocklisted_type_implements_trait(
            &self,
            _name: &str,
            derive_trait: bindgen::callbacks::DeriveTrait,
        ) -> Option<bindgen::callbacks::ImplementsTrait> {
            match derive_trait {
                bindgen::callbacks::DeriveTrait::Copy => Some(bindgen::callbacks::ImplementsTrait::Yes),
                _ => Some(bindgen::callbacks::ImplementsTrait::No),
            }
        }
    }

    fn fail(message: &str) -> ! {
        eprintln!("error: {message}");
        std::process::exit(1);
    }

    /// `Include/<ver>/{km/crt,km,shared}` of a WDK root, as `wdk-build`
    /// uses them for a WDM driver.
    fn include_dirs_of_root(root: &Path) -> Result<Vec<PathBuf>, String> {
        let include = root.join("Include");
        let version = super::driver_build::sdk_version(&include, env::var("Version_Number").ok())
            .ok_or_else(|| format!("no 10.* version directory in {}", include.display()))?;
        let base = include.join(version);
        let dirs: Vec<PathBuf> = ["km/crt", "km", "shared"].iter().map(|d| base.join(d)).collect();
        match dirs.iter().find(|d| !d.is_dir()) {
            Some(missing) => Err(format!("{} does not exist", missing.display())),
            None => Ok(dirs),
        }
    }

    /// The include directories: `WDKContentRoot` when set (the synthesised
    /// root of `cargo xtask windows`, or an explicit WDK), else on a
    /// Windows host the WDK `wdk-build` detects.
    fn include_dirs() -> Result<Vec<PathBuf>, String> {
        println!("cargo::rerun-if-env-changed=WDKContentRoot");
        println!("cargo::rerun-if-env-changed=Version_Number");
        if let Some(root) = env::var_os("WDKContentRoot") {
            return include_dirs_of_root(Path::new(&root));
        }
        detected_include_dirs()
    }

    #[cfg(windows)]
    fn detected_include_dirs() -> Result<Vec<PathBuf>, String> {
        let config = wdk_build::Config::from_env_auto().map_err(|e| e.to_string())?;
        let dirs = config.include_paths().map_err(|e| e.to_string())?;
        Ok(dirs.collect())
    }

    #[cfg(not(windows))]
    fn detected_include_dirs() -> Result<Vec<PathBuf>, String> {
        Err("WDKContentRoot is not set; use `cargo xtask windows` (docs/windows-build.md)".into())
    }

    /// Runs bindgen and links `ks.lib`.
    pub fn generate() {
        let dirs = include_dirs().unwrap_or_else(|e| fail(&format!("KS bindings: {e}")));
        let mut builder = bindgen::Builder::default()
            .header_contents("capdma_ks_bindings.h", WRAPPER)
            .use_core()
            .detect_include_paths(false)
            .clang_args(dirs.iter().map(|d| format!("--include-directory={}", d.display())))
            // As wdk-build for an AMD64 WDM driver; the mingw-specific
            // arguments come from BINDGEN_EXTRA_CLANG_ARGS_<target>.
            .clang_args(["-D_WIN64", "-D_AMD64_", "-DAMD64", "-D_KERNEL_MODE", "-fno-builtin"])
            .clang_args(["-fms-compatibility", "-fms-extensions"])
            .clang_args(["-Wno-pragma-pack", "-Wno-ignored-attributes", "-Wno-microsoft"])
            .clang_args(["-Wno-nonportable-include-path", "-Wno-ignored-pragma-intrinsic"])
            .blocklist_file(NOT_KS_HEADER)
            .default_enum_style(bindgen::EnumVariation::ModuleConsts)
            .derive_debug(false)
            .derive_default(false)
            .layout_tests(true)
            .generate_comments(false)
            .formatter(bindgen::Formatter::Prettyplease)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .parse_callbacks(Box::new(WdkSysTypesAreCopy));
        for name in TYPES {
            builder = builder.allowlist_type(name);
        }
        for name in FUNCTIONS {
            builder = builder.allowlist_function(name);
        }
        for name in VARS {
            builder = builder.allowlist_var(name);
        }
        let bindings = builder.generate().unwrap_or_else(|e| fail(&format!("bindgen over ks.h/ksmedia.h failed: {e}")));
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
        if let Err(e) = bindings.write_to_file(out.join("ks_bindings.rs")) {
            fail(&format!("cannot write the KS bindings: {e}"));
        }
        // The `Ks*` imports come from ks.sys through ks.lib (in the kernel
        // library directory driver_build put on the search path).
        println!("cargo::rustc-link-lib=ks");
    }
}

/// Without bindgen (a Windows target on a non-Windows host without the
/// `ks-bindgen` feature): say how to build.
#[cfg(not(any(windows, feature = "ks-bindgen")))]
mod ks_bindings {
    pub fn generate() {
        eprintln!(
            "error: building capdma-avstream for Windows needs its KS bindings: enable the \
             `ks-bindgen` feature; `cargo xtask windows` does (docs/windows-build.md)"
        );
        std::process::exit(1);
    }
}

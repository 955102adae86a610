//! `cargo xtask pe-check`: is a `.sys` file a kernel driver image we would
//! ship?
//!
//! Checks, per image:
//! * machine is AMD64 and subsystem is NATIVE (1);
//! * the entry point is `DriverEntry` or `GsDriverEntry`: the entry RVA from
//!   the optional header must equal the RVA of an export of that name (our
//!   drivers export `DriverEntry`, because Rust cannot name a symbol without
//!   exporting it from a cdylib), or, when it is not exported, the address
//!   of that symbol in the linker map `<stem>.map` beside the image;
//! * every import (and delay-load import, of which there should be none)
//!   comes from a module in [`import_policy::ALLOWED_IMPORT_MODULES`];
//! * the image's row of [`import_policy::REQUIRED_IMPORTS`] is all there,
//!   unless that check is skipped, which is then reported loudly;
//! * no executable section holds a privileged instruction (an inline
//!   `mov cr8` instead of the IRQL routines of ntoskrnl, `cli`, `rdmsr`, …:
//!   [`privileged`]);
//! * the memory-integrity (HVCI) rules of [`hvci`]: `NX_COMPAT`, page-aligned
//!   sections, no section both writable and executable or both executable
//!   and discardable, the import address table outside code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::hvci;
use crate::import_policy::{self, Import, Violation};
use crate::linker_map;
use crate::pe_image::{self, ImageInfo};
use crate::privileged;

/// Symbols the kernel accepts as a driver's entry point.
pub const ENTRY_SYMBOLS: &[&str] = &["DriverEntry", "GsDriverEntry"];

/// Options of a PE check run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip the required-import check (until the driver glue exists).
    pub skip_required_imports: bool,
}

/// How the entry point was (or was not) identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The entry RVA is the address of `symbol`, as `source` says.
    Confirmed {
        /// `DriverEntry` or `GsDriverEntry`.
        symbol: &'static str,
        /// "export table" or "linker map".
        source: &'static str,
    },
    /// `symbol` is known, but the entry point is elsewhere.
    Elsewhere {
        /// The entry symbol that was found.
        symbol: &'static str,
        /// Its RVA.
        symbol_rva: u64,
    },
    /// The image has no entry point at all.
    Missing,
    /// No entry symbol is exported and there is no map that names one.
    Unknown,
}

/// Identify the entry point of `info` from its exports, else from the
/// `(symbol, virtual address)` list of its linker map.
pub fn resolve_entry(info: &ImageInfo, map_publics: &[(String, u64)]) -> Entry {
    if info.entry_rva == 0 {
        return Entry::Missing;
    }
    let entry = u64::from(info.entry_rva);
    let exported = ENTRY_SYMBOLS.iter().find_map(|&symbol| {
        info.exports
            .iter()
            .find(|(name, _)| name == symbol)
            .map(|&(_, rva)| (symbol, u64::from(rva), "export table"))
    });
    let mapped = || {
        ENTRY_SYMBOLS.iter().find_map(|&symbol| {
            map_publics
                .iter()
                .find(|(name, _)| name == symbol)
                .map(|&(_, va)| (symbol, va.wrapping_sub(info.image_base), "linker map"))
        })
    };
    // Prefer a source that confirms the entry point; report a mismatch
    // only when no source does.
    let candidates: Vec<_> = exported.into_iter().chain(mapped()).collect();
    if let Some(&(symbol, _, source)) = candidates.iter().find(|(_, rva, _)| *rva == entry) {
        return Entry::Confirmed { symbol, source };
    }
    match candidates.first() {
        Some(&(symbol, symbol_rva, _)) => Entry::Elsewhere { symbol, symbol_rva },
        None => Entry::Unknown,
    }
}

/// The failures of one image against the rules (empty: it passes).
pub fn failures(stem: &str, info: &ImageInfo, entry: &Entry, options: Options) -> Vec<String> {
    let mut failures = Vec::new();
    if info.machine != pe_image::MACHINE_AMD64 {
        failures.push(format!(
            "machine is {:#06x} ({}), expected AMD64 (0x8664)",
            info.machine,
            pe_image::machine_name(info.machine)
        ));
    }
    if info.subsystem != pe_image::SUBSYSTEM_NATIVE {
        failures.push(format!(
            "subsystem is {} ({}), expected NATIVE (1)",
            info.subsystem,
            pe_image::subsystem_name(info.subsystem)
        ));
    }
    match entry {
        Entry::Confirmed { .. } => {}
        Entry::Missing => failures.push("the image has no entry point".to_owned()),
        Entry::Elsewhere { symbol, symbol_rva } => failures.push(format!(
            "entry point RVA {:#x} is not {symbol} (at RVA {symbol_rva:#x})",
            info.entry_rva
        )),
        Entry::Unknown => failures.push(format!(
            "cannot identify the entry point (RVA {:#x}): none of {} is exported and no \
             linker map beside the image names one",
            info.entry_rva,
            ENTRY_SYMBOLS.join("/")
        )),
    }
    if !info.delay_imports.is_empty() {
        failures.push(format!(
            "has {} delay-load import(s); the kernel loader does not delay-load",
            info.delay_imports.len()
        ));
    }
    let all_imports: Vec<Import> = info
        .imports
        .iter()
        .chain(&info.delay_imports)
        .cloned()
        .collect();
    let mut violations = import_policy::check_allowed_modules(&all_imports);
    if !options.skip_required_imports {
        if let Some(required) = import_policy::required_imports_for(stem) {
            violations.extend(import_policy::check_required(&info.imports, required));
        }
    }
    failures.extend(violations.iter().map(Violation::to_string));
    failures.extend(hvci::check(info).iter().map(hvci::Violation::to_string));
    failures
}

/// The import table as text, grouped by module.
pub fn format_imports(imports: &[Import]) -> String {
    let mut by_module: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for import in imports {
        by_module
            .entry(import.module.to_ascii_lowercase())
            .or_insert_with(|| (import.module.clone(), Vec::new()))
            .1
            .push(&import.symbol);
    }
    let mut out = String::new();
    for (module, mut symbols) in by_module.into_values() {
        symbols.sort_unstable();
        let _ = writeln!(out, "    {module} ({} symbols)", symbols.len());
        for symbol in symbols {
            let _ = writeln!(out, "      {symbol}");
        }
    }
    out
}

fn check_one(path: &Path, options: Options) -> Result<Vec<String>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let info = pe_image::read_image(&data).with_context(|| format!("{}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let map_path = path.with_extension("map");
    let map_publics = std::fs::read_to_string(&map_path)
        .map(|text| linker_map::publics(&text))
        .unwrap_or_default();
    let entry = resolve_entry(&info, &map_publics);

    println!("{}", path.display());
    println!(
        "  machine     {:#06x} ({})",
        info.machine,
        pe_image::machine_name(info.machine)
    );
    println!(
        "  subsystem   {} ({})",
        info.subsystem,
        pe_image::subsystem_name(info.subsystem)
    );
    println!(
        "  dll chars   {:#06x} ({})",
        info.dll_characteristics,
        pe_image::dll_characteristics_names(info.dll_characteristics)
    );
    println!(
        "  sections    {} (alignment {:#x})",
        info.sections
            .iter()
            .map(|s| format!("{} {:#010x}", s.name, s.characteristics))
            .collect::<Vec<_>>()
            .join(", "),
        info.section_alignment
    );
    let entry_text = match &entry {
        Entry::Confirmed { symbol, source } => format!("{symbol} (by {source})"),
        Entry::Elsewhere { symbol, .. } => format!("not {symbol}"),
        Entry::Missing => "none".to_owned(),
        Entry::Unknown => "unidentified".to_owned(),
    };
    println!("  entry       RVA {:#x} = {entry_text}", info.entry_rva);
    println!("  imports");
    print!("{}", format_imports(&info.imports));
    if !info.delay_imports.is_empty() {
        println!("  delay-load imports");
        print!("{}", format_imports(&info.delay_imports));
    }
    if options.skip_required_imports {
        println!("  required imports: CHECK SKIPPED (--skip-required-imports)");
    } else if let Some(required) = import_policy::required_imports_for(&stem) {
        println!("  required imports: {} listed for `{stem}`", required.len());
    } else {
        println!("  required imports: none listed for `{stem}`");
    }
    let code = privileged::scan_image(&data).with_context(|| format!("{}", path.display()))?;
    println!(
        "  privileged  {} instruction(s) in executable sections",
        code.len()
    );
    let mut failures = failures(&stem, &info, &entry, options);
    failures.extend(privileged::failures(&code, &map_publics, info.image_base));
    if failures.is_empty() {
        println!("  PASS");
    } else {
        for failure in &failures {
            println!("  FAIL: {failure}");
        }
    }
    Ok(failures)
}

/// Check every image in `paths`, print a report per image, and fail if any
/// image fails or cannot be read.
///
/// # Errors
/// When `paths` is empty, an image cannot be read or parsed, or one breaks
/// a rule.
pub fn run(paths: &[PathBuf], options: Options) -> Result<()> {
    if paths.is_empty() {
        bail!("pe-check: no image given (usage: cargo xtask pe-check [--skip-required-imports] FILE.sys...)");
    }
    if options.skip_required_imports {
        eprintln!();
        eprintln!("!!! WARNING: the required-import check is SKIPPED (--skip-required-imports).");
        eprintln!("!!! Images are checked only for machine, subsystem, entry point and allowed");
        eprintln!("!!! import modules. Drop the flag once the driver glue exists.");
        eprintln!();
    }
    let mut failed = Vec::new();
    for path in paths {
        match check_one(path, options) {
            Ok(failures) if failures.is_empty() => {}
            Ok(_) => failed.push(path.display().to_string()),
            Err(error) => {
                println!("{}\n  FAIL: {error:#}", path.display());
                failed.push(path.display().to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!("PE check failed for: {}", failed.join(", "));
    }
    println!("PE check passed for {} image(s).", paths.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver_like() -> ImageInfo {
        ImageInfo {
            machine: 0x8664,
            subsystem: 1,
            image_base: 0x1_4000_0000,
            entry_rva: 0x1000,
            dll_characteristics: 0x01e0,
            section_alignment: 0x1000,
            exports: vec![("DriverEntry".into(), 0x1000)],
            imports: vec![Import::new("ntoskrnl.exe", "IoCreateDevice")],
            ..ImageInfo::default()
        }
    }

    #[test]
    fn entry_confirmed_by_export() {
        assert_eq!(
            resolve_entry(&driver_like(), &[]),
            Entry::Confirmed {
                symbol: "DriverEntry",
                source: "export table"
            }
        );
    }

    #[test]
    fn entry_confirmed_by_map_when_not_exported() {
        let info = ImageInfo {
            exports: vec![],
            ..driver_like()
        };
        let map = vec![("GsDriverEntry".to_owned(), 0x1_4000_1000)];
        assert_eq!(
            resolve_entry(&info, &map),
            Entry::Confirmed {
                symbol: "GsDriverEntry",
                source: "linker map"
            }
        );
    }

    #[test]
    fn entry_elsewhere_missing_or_unknown_fail() {
        let elsewhere = ImageInfo {
            entry_rva: 0x2000,
            ..driver_like()
        };
        let entry = resolve_entry(&elsewhere, &[]);
        assert_eq!(
            entry,
            Entry::Elsewhere {
                symbol: "DriverEntry",
                symbol_rva: 0x1000
            }
        );
        assert_eq!(
            failures("x", &elsewhere, &entry, Options::default()).len(),
            1
        );

        let missing = ImageInfo {
            entry_rva: 0,
            ..driver_like()
        };
        assert_eq!(resolve_entry(&missing, &[]), Entry::Missing);

        let unknown = ImageInfo {
            exports: vec![("Other".into(), 0x1000)],
            ..driver_like()
        };
        let entry = resolve_entry(&unknown, &[("main".into(), 0x1_4000_1000)]);
        assert_eq!(entry, Entry::Unknown);
        assert!(failures("x", &unknown, &entry, Options::default())[0].contains("cannot identify"));
    }

    #[test]
    fn a_good_image_without_required_list_passes() {
        let info = driver_like();
        let entry = resolve_entry(&info, &[]);
        assert!(failures("unlisted", &info, &entry, Options::default()).is_empty());
    }

    #[test]
    fn wrong_machine_subsystem_and_modules_all_reported() {
        let info = ImageInfo {
            machine: 0x14c,
            subsystem: 3,
            imports: vec![Import::new("ntdll.dll", "NtClose")],
            delay_imports: vec![Import::new("hal.dll", "KeStallExecutionProcessor")],
            ..driver_like()
        };
        let entry = resolve_entry(&info, &[]);
        let failures = failures("unlisted", &info, &entry, Options::default());
        assert_eq!(failures.len(), 4, "{failures:#?}");
        assert!(failures[0].contains("AMD64"));
        assert!(failures[1].contains("NATIVE"));
        assert!(failures[2].contains("delay-load"));
        assert!(failures[3].contains("ntdll.dll"));
    }

    #[test]
    fn hvci_rules_are_part_of_the_check() {
        let info = ImageInfo {
            dll_characteristics: 0x0060,
            ..driver_like()
        };
        let entry = resolve_entry(&info, &[]);
        let failures = failures("unlisted", &info, &entry, Options::default());
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(failures[0].contains("NX_COMPAT"));
    }

    #[test]
    fn required_imports_checked_unless_skipped() {
        let info = driver_like();
        let entry = resolve_entry(&info, &[]);
        let strict = failures("capdma_avstream", &info, &entry, Options::default());
        assert!(strict.iter().any(|f| f.contains("KsInitializeDriver")));
        let skipped = Options {
            skip_required_imports: true,
        };
        assert!(failures("capdma_avstream", &info, &entry, skipped).is_empty());
    }

    #[test]
    fn import_table_is_grouped_and_sorted() {
        let text = format_imports(&[
            Import::new("ntoskrnl.exe", "b"),
            Import::new("HAL.dll", "z"),
            Import::new("ntoskrnl.exe", "a"),
        ]);
        assert_eq!(
            text,
            "    HAL.dll (1 symbols)\n      z\n    ntoskrnl.exe (2 symbols)\n      a\n      b\n"
        );
    }

    #[test]
    fn unreadable_or_garbage_files_fail_cleanly() {
        assert!(run(&[], Options::default()).is_err());
        let missing = PathBuf::from("/nonexistent/capdma_bus.sys");
        assert!(run(&[missing], Options::default()).is_err());
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.sys");
        std::fs::write(&garbage, b"MZ not really").unwrap();
        assert!(run(&[garbage], Options::default()).is_err());
    }
}

//! Module-definition (`.def`) files for the synthesised import libraries,
//! listed out of mingw-w64's import archives with `nm`.
//!
//! In a mingw import archive each function export `F` defines a thunk `F`
//! (`T`) and an import pointer `__imp_F` (`I`); a data export defines only
//! `__imp_F`. The `.def` file marks the latter `DATA`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How a symbol is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// A function: callable through a thunk and through `__imp_`.
    Function,
    /// Data: reachable only through `__imp_`.
    Data,
}

/// The exports listed in `nm` output (POSIX or BSD format, as `llvm-nm`
/// prints for archives: `<value> <type> <name>` or ` <type> <name>` lines,
/// archive member headers in between).
pub fn exports_from_nm(nm_output: &str) -> BTreeMap<String, ExportKind> {
    let mut thunks = std::collections::BTreeSet::new();
    let mut imps = std::collections::BTreeSet::new();
    for line in nm_output.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, name) = match fields.as_slice() {
            [_, kind, name] | [kind, name] => (*kind, *name),
            _ => continue,
        };
        match kind {
            "T" => {
                thunks.insert(name.to_owned());
            }
            "I" => {
                if let Some(export) = name.strip_prefix("__imp_") {
                    if !export.is_empty() {
                        imps.insert(export.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    imps.into_iter()
        .map(|name| {
            let kind = if thunks.contains(&name) {
                ExportKind::Function
            } else {
                ExportKind::Data
            };
            (name, kind)
        })
        .collect()
}

/// A `.def` file for `module` with `exports`.
pub fn render(module: &str, exports: &BTreeMap<String, ExportKind>) -> String {
    let mut out = format!("LIBRARY \"{module}\"\nEXPORTS\n");
    for (name, kind) in exports {
        match kind {
            ExportKind::Function => {
                let _ = writeln!(out, "    {name}");
            }
            ExportKind::Data => {
                let _ = writeln!(out, "    {name} DATA");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NM: &str = "
libntoskrnlt.o:
0000000000000000 b .bss

libntoskrnlh.o:
00000000 I _head_lib64_libntoskrnl_a
00000000 i fthunk

dkhs00001.o:
00000000 T IoCreateDevice
00000000 I __imp_IoCreateDevice
         U _head_lib64_libntoskrnl_a

dkhs00002.o:
00000000 I __imp_IoFileObjectType
";

    #[test]
    fn functions_and_data_are_told_apart() {
        let exports = exports_from_nm(NM);
        assert_eq!(exports.len(), 2, "{exports:?}");
        assert_eq!(exports["IoCreateDevice"], ExportKind::Function);
        assert_eq!(exports["IoFileObjectType"], ExportKind::Data);
    }

    #[test]
    fn a_thunk_without_imp_is_not_an_export() {
        assert!(exports_from_nm("0 T local_helper\n0 I __imp_\n").is_empty());
    }

    #[test]
    fn renders_a_def_file() {
        let exports = exports_from_nm(NM);
        assert_eq!(
            render("ntoskrnl.exe", &exports),
            "LIBRARY \"ntoskrnl.exe\"\nEXPORTS\n    IoCreateDevice\n    IoFileObjectType DATA\n"
        );
    }
}

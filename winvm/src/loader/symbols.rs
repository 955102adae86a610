//! Symbols of a loaded image, from its PDB (the `.pdb` the linker wrote next
//! to the `.sys`): public symbols and every module's procedures, demangled,
//! so that a guest address reads as `capdma_bus::wdm::fdo_pnp::dispatch+0x42`.

use std::path::Path;

use pdb::FallibleIterator;

/// Sorted `(virtual address, name)` pairs of one image.
#[derive(Debug, Default)]
pub struct Symbols {
    by_address: Vec<(u64, String)>,
}

/// How far past a symbol's start an address may lie and still be named
/// after it (no function in these images is longer).
const MAX_DISTANCE: u64 = 0x10000;

impl Symbols {
    /// The symbols of the PDB at `path` for an image loaded at `base`; empty
    /// when there is no PDB or it cannot be read (addresses are then shown
    /// as `image+offset`).
    #[must_use]
    pub fn from_pdb(path: &Path, base: u64) -> Self {
        let mut by_address = read_pdb(path, base).unwrap_or_default();
        by_address.sort();
        by_address.dedup_by_key(|(address, _)| *address);
        Self { by_address }
    }

    /// Number of symbols.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// `name+0xoffset` for `va`, when a symbol at or below it is close enough.
    #[must_use]
    pub fn describe(&self, va: u64) -> Option<String> {
        let index = self.by_address.partition_point(|(address, _)| *address <= va);
        let (address, name) = self.by_address.get(index.checked_sub(1)?)?;
        (va - address < MAX_DISTANCE).then(|| format!("{name}+{:#x}", va - address))
    }

    /// The address of the symbol whose demangled name is `name` or ends
    /// with `::name`.
    #[must_use]
    pub fn address_of(&self, name: &str) -> Option<u64> {
        let suffix = format!("::{name}");
        self.by_address.iter().find(|(_, n)| n == name || n.ends_with(&suffix)).map(|(a, _)| *a)
    }
}

fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

fn read_pdb(path: &Path, base: u64) -> Result<Vec<(u64, String)>, pdb::Error> {
    let file = std::fs::File::open(path)?;
    let mut pdb = pdb::PDB::open(file)?;
    let address_map = pdb.address_map()?;
    let mut out = Vec::new();
    let globals = pdb.global_symbols()?;
    let mut iter = globals.iter();
    while let Some(symbol) = iter.next()? {
        if let Ok(pdb::SymbolData::Public(public)) = symbol.parse() {
            if let Some(rva) = public.offset.to_rva(&address_map) {
                out.push((base + u64::from(rva.0), demangle(&public.name.to_string())));
            }
        }
    }
    let info = pdb.debug_information()?;
    let mut modules = info.modules()?;
    while let Some(module) = modules.next()? {
        let Some(module_info) = pdb.module_info(&module)? else { continue };
        let mut symbols = module_info.symbols()?;
        while let Some(symbol) = symbols.next()? {
            if let Ok(pdb::SymbolData::Procedure(procedure)) = symbol.parse() {
                if let Some(rva) = procedure.offset.to_rva(&address_map) {
                    out.push((base + u64::from(rva.0), demangle(&procedure.name.to_string())));
                }
            }
        }
    }
    Ok(out)
}

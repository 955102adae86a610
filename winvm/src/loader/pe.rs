//! Loading a PE32+ kernel-mode image as the Windows loader does for a
//! driver: headers and sections mapped at a base of our choosing with each
//! section's protection, `IMAGE_REL_BASED_DIR64` base relocations applied
//! for the difference to the preferred base, and every import-address-table
//! slot bound to the address the resolver gives for `(module, symbol)`.
//!
//! Source: the PE format ("PE Format" in the Windows documentation:
//! optional header, section table, `.reloc`, `.idata`, `.edata`, `.pdata`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, ImageThunkData, Import, PeFile64};
use object::LittleEndian as LE;

use super::symbols::Symbols;
use crate::layout::PAGE_SIZE;
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, Protection};
use crate::Stop;

/// One import an image could not be given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingImport {
    /// The module, as the image names it (`ntoskrnl.exe`).
    pub module: String,
    /// The symbol.
    pub symbol: String,
}

/// An image in guest memory.
#[derive(Debug)]
pub struct LoadedImage {
    /// File name without the extension (`capdma_bus`).
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Guest virtual address of the image base.
    pub base: u64,
    /// `SizeOfImage`, bytes.
    pub size: u64,
    /// Guest virtual address of the entry point (`DriverEntry`).
    pub entry: u64,
    /// Named exports: name → guest virtual address.
    pub exports: HashMap<String, u64>,
    /// The exception directory (`.pdata`): RVA and size in bytes.
    pub pdata: (u32, u32),
    /// Public symbols from the image's PDB, when one sits next to it.
    pub symbols: Symbols,
    /// Imports bound: `(module, symbol)` in import-table order.
    pub imports: Vec<(String, String)>,
}

impl LoadedImage {
    /// Whether `va` lies inside the image.
    #[must_use]
    pub fn contains(&self, va: u64) -> bool {
        va >= self.base && va < self.base + self.size
    }
}

/// The protection the Windows loader gives a section with these
/// characteristics (`IMAGE_SCN_MEM_*`).
fn section_protection(characteristics: u32) -> Protection {
    Protection {
        write: characteristics & pe::IMAGE_SCN_MEM_WRITE.0 != 0,
        execute: characteristics & pe::IMAGE_SCN_MEM_EXECUTE.0 != 0,
        user: true,
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Stop {
    Stop::Host(format!("{}: {what}", path.display()))
}

/// Loads the image at `path`.
///
/// `resolve(module, symbol)` gives the address an import binds to, or
/// `None` when the emulated kernel does not implement it.
///
/// # Errors
/// [`Stop::Host`] when the file cannot be read or is not an AMD64 PE32+
/// image, uses a relocation type other than `DIR64`, or imports by ordinal;
/// [`Stop::MissingImports`] listing every import `resolve` refused.
#[allow(clippy::too_many_lines)] // one pass over the image, in the loader's order
pub fn load(
    mem: &mut GuestMemory,
    space: &mut AddressSpace,
    path: &Path,
    resolve: &mut dyn FnMut(&str, &str) -> Option<u64>,
) -> Result<LoadedImage, Stop> {
    let data = std::fs::read(path).map_err(|e| bad(path, e))?;
    let file = PeFile64::parse(&*data).map_err(|e| bad(path, e))?;
    let nt = file.nt_headers();
    if nt.file_header().machine.get(LE) != pe::IMAGE_FILE_MACHINE_AMD64 {
        return Err(bad(path, "not an AMD64 image"));
    }
    let opt = nt.optional_header();
    let size = u64::from(opt.size_of_image()).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let pages = size / PAGE_SIZE;
    let base = space.reserve(pages);
    let preferred = opt.image_base();

    // Frames first, all read-write for the host to fill; protections after.
    let mut frames = Vec::new();
    for page in 0..pages {
        let frame = mem.alloc_frame()?;
        space.map(mem, base + page * PAGE_SIZE, frame, Protection::READ)?;
        frames.push(frame);
    }
    let write = |mem: &GuestMemory, rva: u64, bytes: &[u8]| -> Result<(), Stop> {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = rva + done as u64;
            let page = usize::try_from(at / PAGE_SIZE).map_err(|_| Stop::Host("rva".into()))?;
            let frame = *frames.get(page).ok_or_else(|| bad(path, format!("RVA {at:#x} outside the image")))?;
            let in_page = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let n = in_page.min(bytes.len() - done);
            mem.write(frame + at % PAGE_SIZE, &bytes[done..done + n])?;
            done += n;
        }
        Ok(())
    };
    let read_u64 = |mem: &GuestMemory, rva: u64| -> Result<u64, Stop> {
        let page = usize::try_from(rva / PAGE_SIZE).map_err(|_| Stop::Host("rva".into()))?;
        let frame = *frames.get(page).ok_or_else(|| bad(path, format!("RVA {rva:#x} outside the image")))?;
        mem.read_u64(frame + rva % PAGE_SIZE)
    };

    let headers = usize::try_from(opt.size_of_headers()).unwrap_or(usize::MAX).min(data.len());
    write(mem, 0, &data[..headers])?;
    let sections = file.section_table();
    for section in sections.iter() {
        let raw = section.pe_data(&*data).map_err(|e| bad(path, e))?;
        let virtual_size = section.virtual_size.get(LE) as usize;
        let n = if virtual_size == 0 { raw.len() } else { raw.len().min(virtual_size) };
        write(mem, u64::from(section.virtual_address.get(LE)), &raw[..n])?;
    }

    // Base relocations.
    let delta = base.wrapping_sub(preferred);
    let directories = file.data_directories();
    if let Some(mut blocks) = directories.relocation_blocks(&*data, &sections).map_err(|e| bad(path, e))? {
        while let Some(block) = blocks.next().map_err(|e| bad(path, e))? {
            for reloc in block {
                match reloc.typ {
                    pe::IMAGE_REL_BASED_DIR64 => {
                        let rva = u64::from(reloc.virtual_address);
                        let value = read_u64(mem, rva)?.wrapping_add(delta);
                        write(mem, rva, &value.to_le_bytes())?;
                    }
                    pe::IMAGE_REL_BASED_ABSOLUTE => {}
                    other => return Err(bad(path, format!("relocation type {other} is not DIR64"))),
                }
            }
        }
    }

    // Imports.
    let mut missing = Vec::new();
    let mut imports = Vec::new();
    if let Some(table) = directories.import_table(&*data, &sections).map_err(|e| bad(path, e))? {
        let mut descriptors = table.descriptors().map_err(|e| bad(path, e))?;
        while let Some(descriptor) = descriptors.next().map_err(|e| bad(path, e))? {
            let module = String::from_utf8_lossy(table.name(descriptor.name.get(LE)).map_err(|e| bad(path, e))?).into_owned();
            let iat = descriptor.first_thunk.get(LE);
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => iat,
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(|e| bad(path, e))?;
            let mut slot = 0u64;
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(|e| bad(path, e))? {
                let symbol = match table.import::<pe::ImageNtHeaders64>(thunk).map_err(|e| bad(path, e))? {
                    Import::Name(_, name) => String::from_utf8_lossy(name).into_owned(),
                    Import::Ordinal(ordinal) => {
                        return Err(bad(path, format!("{module} imported by ordinal {ordinal}")));
                    }
                };
                let _ = thunk.raw();
                match resolve(&module, &symbol) {
                    Some(target) => write(mem, u64::from(iat) + slot * 8, &target.to_le_bytes())?,
                    None => missing.push(MissingImport { module: module.clone(), symbol: symbol.clone() }),
                }
                imports.push((module.clone(), symbol));
                slot += 1;
            }
        }
    }
    if !missing.is_empty() {
        for page in 0..pages {
            space.unmap(mem, base + page * PAGE_SIZE)?;
        }
        for frame in frames {
            mem.free_frame(frame);
        }
        return Err(Stop::MissingImports { image: path.display().to_string(), missing });
    }

    // Exports.
    let mut exports = HashMap::new();
    if let Some(table) = directories.export_table(&*data, &sections).map_err(|e| bad(path, e))? {
        for export in table.exports().map_err(|e| bad(path, e))? {
            if let (Some(name), object::read::pe::ExportTarget::Address(rva)) = (export.name, export.target) {
                exports.insert(String::from_utf8_lossy(name).into_owned(), base + u64::from(rva));
            }
        }
    }

    // Protections: headers read-only; each section as it asks; pages
    // shared by two sections get the union.
    let mut protections = vec![Protection::READ; frames.len()];
    for section in sections.iter() {
        let prot = section_protection(section.characteristics.get(LE).0);
        let start = u64::from(section.virtual_address.get(LE)) / PAGE_SIZE;
        let len = u64::from(section.virtual_size.get(LE).max(section.size_of_raw_data.get(LE)));
        let end = (u64::from(section.virtual_address.get(LE)) + len).div_ceil(PAGE_SIZE);
        for page in start..end.min(pages) {
            let p = &mut protections[usize::try_from(page).unwrap_or(usize::MAX)];
            p.write |= prot.write;
            p.execute |= prot.execute;
        }
    }
    for (page, prot) in protections.iter().enumerate() {
        space.protect(mem, base + page as u64 * PAGE_SIZE, *prot)?;
    }

    let pdata = directories
        .get(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
        .map_or((0, 0), |d| (d.virtual_address.get(LE), d.size.get(LE)));
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let symbols = Symbols::from_pdb(&path.with_extension("pdb"), base);
    Ok(LoadedImage {
        name,
        path: path.to_path_buf(),
        base,
        size,
        entry: base + u64::from(opt.address_of_entry_point()),
        exports,
        pdata,
        symbols,
        imports,
    })
}

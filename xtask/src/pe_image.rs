//! Reading the facts the PE check needs out of a PE32+ image, with the
//! `object` crate. Malformed input is an error, never a panic.

use anyhow::{bail, Context, Result};
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

use crate::import_policy::Import;

/// One section header: what the HVCI rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// `IMAGE_SECTION_HEADER::Name` (up to 8 bytes, NULs dropped).
    pub name: String,
    /// `IMAGE_SECTION_HEADER::VirtualAddress` (an RVA).
    pub virtual_address: u32,
    /// `IMAGE_SECTION_HEADER::VirtualSize`, bytes.
    pub virtual_size: u32,
    /// `IMAGE_SECTION_HEADER::Characteristics` (`IMAGE_SCN_*`).
    pub characteristics: u32,
}

impl Section {
    /// Is `rva` inside the section's virtual range?
    pub fn contains(&self, rva: u32) -> bool {
        rva.checked_sub(self.virtual_address)
            .is_some_and(|offset| offset < self.virtual_size)
    }
}

/// What the PE check looks at in one image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// `IMAGE_FILE_HEADER::Machine`.
    pub machine: u16,
    /// `IMAGE_OPTIONAL_HEADER64::Subsystem`.
    pub subsystem: u16,
    /// `IMAGE_OPTIONAL_HEADER64::DllCharacteristics`.
    pub dll_characteristics: u16,
    /// `IMAGE_OPTIONAL_HEADER64::ImageBase`.
    pub image_base: u64,
    /// `IMAGE_OPTIONAL_HEADER64::AddressOfEntryPoint` (an RVA).
    pub entry_rva: u32,
    /// `IMAGE_OPTIONAL_HEADER64::SectionAlignment`, bytes.
    pub section_alignment: u32,
    /// The section table, in file order.
    pub sections: Vec<Section>,
    /// The import address table directory (`IMAGE_DIRECTORY_ENTRY_IAT`):
    /// `(rva, size in bytes)`, `None` when absent or empty.
    pub iat: Option<(u32, u32)>,
    /// Named exports that point into the image: `(name, rva)`.
    pub exports: Vec<(String, u32)>,
    /// Imports from the import directory.
    pub imports: Vec<Import>,
    /// Imports from the delay-load import directory (a driver should have
    /// none: the kernel loader does not delay-load).
    pub delay_imports: Vec<Import>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn import_symbol(import: object::read::pe::Import<'_>) -> String {
    match import {
        object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
        object::read::pe::Import::Name(_hint, name) => lossy(name),
    }
}

/// The section table and the import address table's place.
fn read_layout(file: &PeFile64<'_>, info: &mut ImageInfo) {
    info.sections = file
        .section_table()
        .iter()
        .map(|header| Section {
            name: lossy(header.name.split(|&b| b == 0).next().unwrap_or_default()),
            virtual_address: header.virtual_address.get(LE),
            virtual_size: header.virtual_size.get(LE),
            characteristics: header.characteristics.get(LE).0,
        })
        .collect();
    info.iat = file
        .data_directory(pe::IMAGE_DIRECTORY_ENTRY_IAT)
        .map(pe::ImageDataDirectory::address_range)
        .filter(|&(rva, size)| rva != 0 && size != 0);
}

/// Parse `data` as a 64-bit PE image.
///
/// # Errors
/// When `data` is not a PE32+ image or one of its tables is malformed.
pub fn read_image(data: &[u8]) -> Result<ImageInfo> {
    let kind = object::FileKind::parse(data).context("not an object file of any known kind")?;
    if kind != object::FileKind::Pe64 {
        bail!("not a PE32+ (64-bit PE) image: detected {kind:?}");
    }
    let file = PeFile64::parse(data).context("malformed PE32+ image")?;
    let nt = file.nt_headers();
    let optional = nt.optional_header();
    let mut info = ImageInfo {
        machine: nt.file_header().machine.get(LE).0,
        subsystem: optional.subsystem().0,
        dll_characteristics: optional.dll_characteristics().0,
        image_base: optional.image_base(),
        entry_rva: optional.address_of_entry_point(),
        section_alignment: optional.section_alignment(),
        ..ImageInfo::default()
    };

    read_layout(&file, &mut info);

    if let Some(exports) = file.export_table().context("malformed export table")? {
        for export in exports.exports().context("malformed export table")? {
            if let (Some(name), object::read::pe::ExportTarget::Address(rva)) =
                (export.name, export.target)
            {
                info.exports.push((lossy(name), rva));
            }
        }
    }

    if let Some(table) = file.import_table().context("malformed import table")? {
        let mut descriptors = table
            .descriptors()
            .context("malformed import descriptors")?;
        while let Some(descriptor) = descriptors.next().context("malformed import descriptor")? {
            let module = lossy(
                table
                    .name(descriptor.name.get(LE))
                    .context("malformed import module name")?,
            );
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).context("malformed import thunks")?;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .context("malformed import thunk")?
            {
                let import = table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .context("malformed import entry")?;
                info.imports.push(Import {
                    module: module.clone(),
                    symbol: import_symbol(import),
                });
            }
        }
    }

    if let Some(table) = file
        .delay_load_import_table()
        .context("malformed delay-load import table")?
    {
        let mut descriptors = table
            .descriptors()
            .context("malformed delay-load descriptors")?;
        while let Some(descriptor) = descriptors
            .next()
            .context("malformed delay-load descriptor")?
        {
            let module = lossy(
                table
                    .name(descriptor.dll_name_rva.get(LE))
                    .context("malformed delay-load module name")?,
            );
            let mut thunks = table
                .thunks(descriptor.import_name_table_rva.get(LE))
                .context("malformed delay-load thunks")?;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .context("malformed delay-load thunk")?
            {
                let import = table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .context("malformed delay-load entry")?;
                info.delay_imports.push(Import {
                    module: module.clone(),
                    symbol: import_symbol(import),
                });
            }
        }
    }

    Ok(info)
}

/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = pe::IMAGE_FILE_MACHINE_AMD64.0;
/// `IMAGE_SUBSYSTEM_NATIVE`.
pub const SUBSYSTEM_NATIVE: u16 = pe::IMAGE_SUBSYSTEM_NATIVE.0;

/// A readable name for a machine type.
pub fn machine_name(machine: u16) -> &'static str {
    [
        (pe::IMAGE_FILE_MACHINE_AMD64, "AMD64"),
        (pe::IMAGE_FILE_MACHINE_I386, "I386"),
        (pe::IMAGE_FILE_MACHINE_ARM64, "ARM64"),
        (pe::IMAGE_FILE_MACHINE_ARM64EC, "ARM64EC"),
    ]
    .iter()
    .find(|(m, _)| m.0 == machine)
    .map_or("other", |(_, name)| name)
}

/// A readable name for a subsystem.
pub fn subsystem_name(subsystem: u16) -> &'static str {
    [
        (pe::IMAGE_SUBSYSTEM_NATIVE, "NATIVE"),
        (pe::IMAGE_SUBSYSTEM_WINDOWS_GUI, "WINDOWS_GUI"),
        (pe::IMAGE_SUBSYSTEM_WINDOWS_CUI, "WINDOWS_CUI"),
        (
            pe::IMAGE_SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
            "EFI_BOOT_SERVICE_DRIVER",
        ),
    ]
    .iter()
    .find(|(s, _)| s.0 == subsystem)
    .map_or("other", |(_, name)| name)
}

/// The set `DllCharacteristics` flags, by name.
pub fn dll_characteristics_names(flags: u16) -> String {
    let names: Vec<&str> = [
        (
            pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA,
            "HIGH_ENTROPY_VA",
        ),
        (pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, "DYNAMIC_BASE"),
        (
            pe::IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY,
            "FORCE_INTEGRITY",
        ),
        (pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT, "NX_COMPAT"),
        (pe::IMAGE_DLLCHARACTERISTICS_WDM_DRIVER, "WDM_DRIVER"),
        (pe::IMAGE_DLLCHARACTERISTICS_GUARD_CF, "GUARD_CF"),
    ]
    .iter()
    .filter(|(flag, _)| flags & flag.0 != 0)
    .map(|(_, name)| *name)
    .collect();
    names.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [&b""[..], b"MZ", b"\x7fELF\x02\x01\x01", &[0u8; 512][..]] {
            assert!(read_image(data).is_err());
        }
    }

    #[test]
    fn truncated_pe_header_is_an_error() {
        // A DOS header whose e_lfanew points at a PE signature with nothing after it.
        let mut data = vec![0u8; 0x48];
        data[0] = b'M';
        data[1] = b'Z';
        data[0x3c] = 0x40;
        data[0x40..0x44].copy_from_slice(b"PE\0\0");
        assert!(read_image(&data).is_err());
    }

    #[test]
    fn names_are_readable() {
        assert_eq!(machine_name(0x8664), "AMD64");
        assert_eq!(subsystem_name(1), "NATIVE");
        assert_eq!(subsystem_name(3), "WINDOWS_CUI");
        assert_eq!(
            dll_characteristics_names(0x01e0),
            "HIGH_ENTROPY_VA | DYNAMIC_BASE | FORCE_INTEGRITY | NX_COMPAT"
        );
    }
}

//! The memory-integrity (HVCI) rules of the PE check: what an image must
//! look like to load with hypervisor-protected code integrity on, which
//! Windows 11 turns on by default.
//!
//! Sources: "Implement memory integrity compatible code" (Windows driver
//! docs, driver security: opt in to NX, no section both writable and
//! executable, section alignment a multiple of `PAGE_SIZE`) and the Driver
//! Verifier code-integrity parameters of bug check 0xC4
//! (`DRIVER_VERIFIER_DETECTED_VIOLATION`): 0x2003 an executable and
//! writable section, 0x2004 a section that is not page aligned, 0x2005 an
//! import address table in an executable section.
//!
//! One rule is the project's own, stricter than the loader: no section
//! that is both executable and discardable. MSVC drivers put
//! `DriverEntry` in a discardable `INIT` section, whose pages the kernel
//! frees, and under HVCI must re-protect, after initialisation; a Rust
//! driver has no such section, and the rule keeps it that way so that no
//! code page of ours ever changes protection after load.

use std::fmt;

use object::pe;

use crate::pe_image::{ImageInfo, Section};

/// `PAGE_SIZE` on x64, bytes: the section alignment HVCI requires of an
/// image. Defined here rather than taken from
/// `capdma_interface::kernel::PAGE_SIZE` on purpose: the checks are rules of
/// the PE format that xtask applies to any `.sys` file, and xtask builds
/// nothing of the drivers' crates for the host.
pub const PAGE_SIZE: u32 = 0x1000;

/// One HVCI rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A section is both writable and executable (bug check 0xC4, 0x2003).
    WritableExecutable,
    /// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT` is not set ("opts in to NX by
    /// default").
    NoNxCompat,
    /// `SectionAlignment` is not a multiple of a page, or a section does not
    /// start on a page (bug check 0xC4, 0x2004).
    SubPageAlignment,
    /// A section is both executable and discardable (the project's rule,
    /// see the module documentation).
    DiscardableExecutable,
    /// The import address table lies in an executable section (bug check
    /// 0xC4, 0x2005).
    ExecutableIat,
}

/// One broken rule, with what broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The offending section, flags or value, for the report.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match self.rule {
            Rule::WritableExecutable => "a section is both writable and executable",
            Rule::NoNxCompat => "DllCharacteristics lacks NX_COMPAT",
            Rule::SubPageAlignment => "sections are not page aligned",
            Rule::DiscardableExecutable => "a section is both executable and discardable",
            Rule::ExecutableIat => "the import address table is in an executable section",
        };
        write!(f, "HVCI: {rule} ({})", self.detail)
    }
}

fn has(section: &Section, flag: pe::SectionFlags) -> bool {
    section.characteristics & flag.0 != 0
}

fn is_executable(section: &Section) -> bool {
    has(section, pe::IMAGE_SCN_MEM_EXECUTE) || has(section, pe::IMAGE_SCN_CNT_CODE)
}

/// Every HVCI rule `info` breaks (empty: memory-integrity compatible as
/// far as the image's headers tell).
pub fn check(info: &ImageInfo) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut broke = |rule, detail: String| violations.push(Violation { rule, detail });
    if info.dll_characteristics & pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0 == 0 {
        broke(
            Rule::NoNxCompat,
            format!("DllCharacteristics {:#06x}", info.dll_characteristics),
        );
    }
    if info.section_alignment == 0 || !info.section_alignment.is_multiple_of(PAGE_SIZE) {
        broke(
            Rule::SubPageAlignment,
            format!(
                "SectionAlignment {:#x}, a page is {PAGE_SIZE:#x}",
                info.section_alignment
            ),
        );
    }
    for section in &info.sections {
        let name = &section.name;
        if info.section_alignment.is_multiple_of(PAGE_SIZE)
            && !section.virtual_address.is_multiple_of(PAGE_SIZE)
        {
            broke(
                Rule::SubPageAlignment,
                format!("{name} at RVA {:#x}", section.virtual_address),
            );
        }
        if is_executable(section) && has(section, pe::IMAGE_SCN_MEM_WRITE) {
            broke(
                Rule::WritableExecutable,
                format!("{name}, characteristics {:#010x}", section.characteristics),
            );
        }
        if is_executable(section) && has(section, pe::IMAGE_SCN_MEM_DISCARDABLE) {
            broke(
                Rule::DiscardableExecutable,
                format!("{name}, characteristics {:#010x}", section.characteristics),
            );
        }
    }
    if let Some((rva, _)) = info.iat {
        if let Some(section) = info
            .sections
            .iter()
            .find(|s| s.contains(rva) && is_executable(s))
        {
            broke(
                Rule::ExecutableIat,
                format!("IAT at RVA {rva:#x} in {}", section.name),
            );
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use object::write::pe::{NtHeaders, Writer};

    use super::*;
    use crate::pe_image::read_image;

    const TEXT: u32 =
        pe::IMAGE_SCN_CNT_CODE.0 | pe::IMAGE_SCN_MEM_EXECUTE.0 | pe::IMAGE_SCN_MEM_READ.0;
    const RDATA: u32 = pe::IMAGE_SCN_CNT_INITIALIZED_DATA.0 | pe::IMAGE_SCN_MEM_READ.0;
    /// What our linker sets (`/NXCOMPAT /DYNAMICBASE /HIGHENTROPYVA /INTEGRITYCHECK`).
    const DLL_CHARACTERISTICS: u16 = 0x01e0;

    /// The shape of an image, good by default.
    struct Spec {
        section_alignment: u32,
        dll_characteristics: u16,
        text: u32,
        /// An extra section: name and characteristics.
        extra: Option<(&'static [u8; 8], u32)>,
        iat_in_text: bool,
    }

    impl Default for Spec {
        fn default() -> Self {
            Self {
                section_alignment: PAGE_SIZE,
                dll_characteristics: DLL_CHARACTERISTICS,
                text: TEXT,
                extra: None,
                iat_in_text: false,
            }
        }
    }

    /// A PE32+ driver-like image written with `object`'s PE writer.
    fn image(spec: &Spec) -> Vec<u8> {
        const SIZE: u32 = 0x200;
        let mut data = Vec::new();
        let mut writer = Writer::new(true, spec.section_alignment, 0x200, &mut data);
        writer.reserve_dos_header_and_stub();
        writer.reserve_nt_headers(16);
        writer.reserve_section_headers(2 + u16::from(spec.extra.is_some()));
        let text = writer.reserve_section(*b".text\0\0\0", pe::SectionFlags(spec.text), SIZE, SIZE);
        let rdata = writer.reserve_section(*b".rdata\0\0", pe::SectionFlags(RDATA), SIZE, SIZE);
        let extra = spec.extra.map(|(name, flags)| {
            writer.reserve_section(*name, pe::SectionFlags(flags), SIZE, SIZE)
        });
        let iat = if spec.iat_in_text { &text } else { &rdata };
        writer.set_data_directory(
            pe::IMAGE_DIRECTORY_ENTRY_IAT,
            iat.virtual_address + 0x10,
            16,
        );
        writer.write_dos_header_and_stub().unwrap();
        writer.write_nt_headers(NtHeaders {
            machine: pe::IMAGE_FILE_MACHINE_AMD64,
            time_date_stamp: 0,
            characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_DLL,
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: text.virtual_address,
            image_base: 0x1_4000_0000,
            major_operating_system_version: 10,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 10,
            minor_subsystem_version: 0,
            subsystem: pe::IMAGE_SUBSYSTEM_NATIVE,
            dll_characteristics: pe::DllFlags(spec.dll_characteristics),
            size_of_stack_reserve: 0x4_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0,
            size_of_heap_commit: 0,
        });
        writer.write_section_headers();
        writer.write_section(text.file_offset, &[0xC3; SIZE as usize]);
        writer.write_section(rdata.file_offset, &[0; SIZE as usize]);
        if let Some(extra) = extra {
            writer.write_section(extra.file_offset, &[0; SIZE as usize]);
        }
        data
    }

    fn rules(spec: &Spec) -> Vec<Rule> {
        let info = read_image(&image(spec)).expect("the writer makes a PE32+ image");
        check(&info).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_good_image_passes_and_is_read_back_as_written() {
        let info = read_image(&image(&Spec::default())).unwrap();
        assert_eq!(info.section_alignment, PAGE_SIZE);
        let names: Vec<&str> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".rdata"]);
        assert_eq!(info.sections[0].characteristics, TEXT);
        assert!(info.sections[1].contains(info.iat.unwrap().0));
        assert_eq!(check(&info), []);
    }

    #[test]
    fn a_writable_executable_section_fails() {
        let text = TEXT | pe::IMAGE_SCN_MEM_WRITE.0;
        assert_eq!(
            rules(&Spec {
                text,
                ..Spec::default()
            }),
            [Rule::WritableExecutable]
        );
        // Code flagged only by its contents (CNT_CODE) counts as executable.
        let rwx_data =
            pe::IMAGE_SCN_CNT_CODE.0 | pe::IMAGE_SCN_MEM_READ.0 | pe::IMAGE_SCN_MEM_WRITE.0;
        assert_eq!(
            rules(&Spec {
                extra: Some((b".rwx\0\0\0\0", rwx_data)),
                ..Spec::default()
            }),
            [Rule::WritableExecutable]
        );
    }

    #[test]
    fn an_image_without_nx_compat_fails() {
        let flags = DLL_CHARACTERISTICS & !pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0;
        assert_eq!(
            rules(&Spec {
                dll_characteristics: flags,
                ..Spec::default()
            }),
            [Rule::NoNxCompat]
        );
    }

    #[test]
    fn section_alignment_below_a_page_fails() {
        let found = rules(&Spec {
            section_alignment: 0x200,
            ..Spec::default()
        });
        assert_eq!(found, [Rule::SubPageAlignment]);
    }

    #[test]
    fn an_executable_discardable_section_fails() {
        let init = TEXT | pe::IMAGE_SCN_MEM_DISCARDABLE.0;
        assert_eq!(
            rules(&Spec {
                extra: Some((b"INIT\0\0\0\0", init)),
                ..Spec::default()
            }),
            [Rule::DiscardableExecutable]
        );
        // A discardable data section (`.reloc`) is fine.
        let reloc = RDATA | pe::IMAGE_SCN_MEM_DISCARDABLE.0;
        assert_eq!(
            rules(&Spec {
                extra: Some((b".reloc\0\0", reloc)),
                ..Spec::default()
            }),
            []
        );
    }

    #[test]
    fn an_import_address_table_in_code_fails() {
        assert_eq!(
            rules(&Spec {
                iat_in_text: true,
                ..Spec::default()
            }),
            [Rule::ExecutableIat]
        );
    }

    #[test]
    fn a_section_off_its_page_fails() {
        let mut info = read_image(&image(&Spec::default())).unwrap();
        info.sections[1].virtual_address += 0x200;
        let found: Vec<Rule> = check(&info).into_iter().map(|v| v.rule).collect();
        assert_eq!(found, [Rule::SubPageAlignment]);
    }

    #[test]
    fn violations_name_the_section() {
        let text = TEXT | pe::IMAGE_SCN_MEM_WRITE.0;
        let info = read_image(&image(&Spec {
            text,
            ..Spec::default()
        }))
        .unwrap();
        let text = check(&info)[0].to_string();
        assert!(
            text.starts_with("HVCI: ") && text.contains(".text"),
            "{text}"
        );
    }
}

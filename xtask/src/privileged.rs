//! The PE check's code rule: no privileged instruction in an executable
//! section of a driver image.
//!
//! A driver built with the current WDK reads and changes the IRQL through
//! ntoskrnl (`KeGetCurrentIrql`, `KfRaiseIrql`/`KeRaiseIrqlToDpcLevel`,
//! `KeLowerIrql`: wdm.h on x64 without `NT_INLINE_IRQL`), never with an
//! inline `mov cr8`: Driver Verifier's IRQL checking sees only the changes
//! made through the kernel. Nor has it any other reason to execute a
//! privileged instruction (`mov crN`/`drN`, `rdmsr`/`wrmsr`, `cli`/`sti`,
//! `in`/`out`, `hlt`, `invlpg`, `swapgs`, …): the HAL and the kernel do
//! that for it. The emulated kernel of the project runs images at CPL 3,
//! where each one traps.
//!
//! Each executable section (`IMAGE_SCN_MEM_EXECUTE`) is decoded linearly
//! with iced-x86 (64-bit mode); an instruction is privileged as iced-x86's
//! `Instruction::is_privileged` says (every CPL 0 instruction but `VMCALL`,
//! and the IOPL-sensitive `in`/`ins`/`out`/`outs`/`cli`/`sti`). The linker
//! puts jump tables and constants in `.rdata`, so `.text` is code and
//! `int3` padding only; bytes that do not decode are skipped.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};
use object::pe;
use object::read::pe::PeFile64;
use object::LittleEndian as LE;

/// One privileged instruction found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Its RVA.
    pub rva: u32,
    /// The instruction in Intel syntax (`mov cr8,rax`).
    pub text: String,
    /// The instruction with its general-purpose register, memory and
    /// immediate operands generalised (`mov cr8,reg`): the failures are
    /// grouped by it.
    pub kind: String,
}

/// `instruction` with general-purpose registers shown as `reg`, memory
/// operands as `mem` and immediates or branch targets as `imm`; other
/// registers (control, debug, segment) by name.
fn kind(instruction: &Instruction) -> String {
    let operands: Vec<String> = (0..instruction.op_count())
        .map(|operand| match instruction.op_kind(operand) {
            OpKind::Register => {
                let register = instruction.op_register(operand);
                if register.is_gpr() {
                    "reg".to_owned()
                } else {
                    format!("{register:?}").to_lowercase()
                }
            }
            OpKind::Memory => "mem".to_owned(),
            _ => "imm".to_owned(),
        })
        .collect();
    let mnemonic = format!("{:?}", instruction.mnemonic()).to_lowercase();
    if operands.is_empty() {
        mnemonic
    } else {
        format!("{mnemonic} {}", operands.join(","))
    }
}

/// Every privileged instruction in `code`, decoded as 64-bit code that
/// starts at `rva`.
pub fn scan_code(code: &[u8], rva: u32) -> Vec<Finding> {
    let mut decoder = Decoder::with_ip(64, code, u64::from(rva), DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut findings = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if !instruction.is_invalid() && instruction.is_privileged() {
            findings.push(Finding {
                rva: u32::try_from(instruction.ip()).unwrap_or(u32::MAX),
                text: instruction.to_string(),
                kind: kind(&instruction),
            });
        }
    }
    findings
}

/// Every privileged instruction in the executable sections of the PE32+
/// image `data`.
///
/// # Errors
/// When `data` is not a PE32+ image or a section's data lies outside it.
pub fn scan_image(data: &[u8]) -> Result<Vec<Finding>> {
    let file = PeFile64::parse(data).context("malformed PE32+ image")?;
    let mut findings = Vec::new();
    for section in file.section_table().iter() {
        if section.characteristics.get(LE).0 & pe::IMAGE_SCN_MEM_EXECUTE.0 == 0 {
            continue;
        }
        // The file data up to VirtualSize (without the file-alignment padding).
        let code = section
            .pe_data(data)
            .map_err(|error| anyhow::anyhow!("{error}"))
            .with_context(|| format!("section {} lies outside the file", name(section)))?;
        findings.extend(scan_code(code, section.virtual_address.get(LE)));
    }
    Ok(findings)
}

fn name(section: &pe::ImageSectionHeader) -> String {
    String::from_utf8_lossy(section.raw_name())
        .trim_end_matches('\0')
        .to_owned()
}

/// `symbol+0xoffset` for `rva`: the nearest public of the linker map
/// (`(name, virtual address)`) at or below it, demangled; `None` without one.
fn locate(rva: u32, publics: &[(String, u64)], image_base: u64) -> Option<String> {
    let address = image_base.checked_add(u64::from(rva))?;
    publics
        .iter()
        .filter(|(_, va)| *va <= address)
        .max_by_key(|(_, va)| *va)
        .map(|(name, va)| format!("{:#}+{:#x}", rustc_demangle::demangle(name), address - va))
}

/// The PE-check failures for `findings`: one per kind of instruction
/// ([`Finding::kind`]), with how often it occurs and where the first one is
/// (its text, RVA, and the function from the linker map `publics` when
/// there is one); CR8 accesses say what to call instead.
pub fn failures(findings: &[Finding], publics: &[(String, u64)], image_base: u64) -> Vec<String> {
    let mut by_kind: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for finding in findings {
        by_kind.entry(&finding.kind).or_default().push(finding);
    }
    by_kind
        .into_iter()
        .filter_map(|(kind, found)| {
            let first = found.iter().min_by_key(|finding| finding.rva)?;
            let place = locate(first.rva, publics, image_base)
                .map(|symbol| format!(" in {symbol}"))
                .unwrap_or_default();
            let hint = if kind.contains("cr8") {
                ": the IRQL is CR8; call KeGetCurrentIrql / KfRaiseIrql / \
                 KeRaiseIrqlToDpcLevel / KeLowerIrql in ntoskrnl instead (Driver Verifier \
                 sees only IRQL changes made through the kernel)"
            } else {
                ": a driver leaves privileged operations to the kernel and the HAL"
            };
            Some(format!(
                "privileged instruction `{kind}` ({} time(s), first `{}` at RVA {:#x}{place}){hint}",
                found.len(),
                first.text,
                first.rva
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::pe::{NtHeaders, Writer};

    /// `mov cr8, rax`; `mov rax, cr8`; `cli`; `rdmsr`; `out dx, al`.
    const PRIVILEGED: &[&[u8]] = &[
        &[0x44, 0x0f, 0x22, 0xc0],
        &[0x44, 0x0f, 0x20, 0xc0],
        &[0xfa],
        &[0x0f, 0x32],
        &[0xee],
    ];
    /// `mov rax, rcx`; `cpuid`; `xgetbv`; `pause`; `int3`; `ret`: ordinary
    /// (`cpuid` and `xgetbv` run at any privilege level).
    const ORDINARY: &[&[u8]] = &[
        &[0x48, 0x89, 0xc8],
        &[0x0f, 0xa2],
        &[0x0f, 0x01, 0xd0],
        &[0xf3, 0x90],
        &[0xcc],
        &[0xc3],
    ];

    fn code(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn privileged_instructions_are_found_at_their_rva() {
        let mut bytes = code(ORDINARY);
        let first = bytes.len();
        bytes.extend(code(PRIVILEGED));
        bytes.extend(code(ORDINARY));
        let findings = scan_code(&bytes, 0x1000);
        let texts: Vec<&str> = findings.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            ["mov cr8,rax", "mov rax,cr8", "cli", "rdmsr", "out dx,al"]
        );
        assert_eq!(findings[0].rva, 0x1000 + u32::try_from(first).unwrap());
        assert_eq!(findings[1].rva, findings[0].rva + 4);
    }

    #[test]
    fn ordinary_code_and_padding_pass() {
        let mut bytes = code(ORDINARY);
        bytes.extend([0xcc; 13]);
        bytes.extend([0x00; 7]);
        assert!(scan_code(&bytes, 0).is_empty());
    }

    /// A PE32+ image with an executable `.text` and a read-only `.rdata`.
    fn image(text: &[u8], rdata: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::new(true, 0x1000, 0x200, &mut out);
        writer.reserve_dos_header_and_stub();
        writer.reserve_nt_headers(16);
        writer.reserve_section_headers(2);
        let text_range = writer.reserve_text_section(u32::try_from(text.len()).unwrap());
        let rdata_range = writer.reserve_rdata_section(u32::try_from(rdata.len()).unwrap());
        writer.write_dos_header_and_stub().unwrap();
        writer.write_nt_headers(NtHeaders {
            machine: pe::IMAGE_FILE_MACHINE_AMD64,
            time_date_stamp: 0,
            characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_DLL,
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: text_range.virtual_address,
            image_base: 0x1_4000_0000,
            major_operating_system_version: 10,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 10,
            minor_subsystem_version: 0,
            subsystem: pe::IMAGE_SUBSYSTEM_NATIVE,
            dll_characteristics: pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT,
            size_of_stack_reserve: 0x4_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0x10_0000,
            size_of_heap_commit: 0x1000,
        });
        writer.write_section_headers();
        writer.write_section(text_range.file_offset, text);
        writer.write_section(rdata_range.file_offset, rdata);
        out
    }

    #[test]
    fn only_executable_sections_are_scanned() {
        let privileged = code(PRIVILEGED);
        let clean = image(&code(ORDINARY), &privileged);
        assert_eq!(scan_image(&clean).unwrap(), Vec::new());

        let mut text = code(ORDINARY);
        text.extend(&privileged);
        let dirty = image(&text, &code(ORDINARY));
        let findings = scan_image(&dirty).unwrap();
        assert_eq!(findings.len(), PRIVILEGED.len(), "{findings:?}");
        assert!(scan_image(b"MZ not an image").is_err());
    }

    #[test]
    fn failures_group_by_instruction_and_name_the_function() {
        let finding = |rva, text: &str, kind: &str| Finding {
            rva,
            text: text.into(),
            kind: kind.into(),
        };
        let findings = [
            finding(0x1010, "mov cr8,rax", "mov cr8,reg"),
            finding(0x1004, "mov cr8,r10", "mov cr8,reg"),
            finding(0x2000, "cli", "cli"),
        ];
        let publics = [
            (
                "_ZN10capdma_bus3wdm3ddi9write_cr817h0123456789abcdefE".to_owned(),
                0x1_8000_1000,
            ),
            ("other".to_owned(), 0x1_8000_1800),
        ];
        let found = failures(&findings, &publics, 0x1_8000_0000);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with(
            "privileged instruction `cli` (1 time(s), first `cli` at RVA 0x2000 in other+0x800)"
        ));
        assert!(found[1].contains(
            "`mov cr8,reg` (2 time(s), first `mov cr8,r10` at RVA 0x1004 in \
             capdma_bus::wdm::ddi::write_cr8+0x4)"
        ));
        assert!(found[1].contains("KeLowerIrql"));
        assert!(failures(&[], &publics, 0).is_empty());
    }
}

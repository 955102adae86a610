//! A stack walk from an image's x64 unwind data (`.pdata` `RUNTIME_FUNCTION`s
//! and their `UNWIND_INFO` in `.xdata`), as `RtlVirtualUnwind` does it: for
//! each frame, undo the prolog operations that have run (all of them when
//! the address is past the prolog), then pop the return address. A function
//! without unwind data is a leaf: its return address is at `[rsp]`. An
//! address in an epilog is unwound by executing the rest of the epilog
//! (`add rsp`/`lea rsp`/`pop`/`ret`) on the copy of the registers.
//!
//! Source: "x64 exception handling" in the Microsoft C++ ABI documentation
//! (`UNWIND_INFO`, `UNWIND_CODE`, the unwind operation codes, chained info).

use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// Registers the walk tracks: the 16 general-purpose registers in the
/// unwind codes' numbering (`RAX = 0` … `R15 = 15`) and RIP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameRegisters {
    /// General-purpose registers, `RSP` at index 4.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
}

const RSP: usize = 4;
const UNW_FLAG_CHAININFO: u8 = 0x4;

/// What the walk needs of an image: its base, its `.pdata`, and reads of
/// its memory (the image's bytes and the stack).
pub trait UnwindSource {
    /// The image that holds `va`: its base and `.pdata` `(rva, size)`.
    fn image_at(&self, va: u64) -> Option<(u64, (u32, u32))>;
    /// Reads guest memory; `None` when unmapped.
    fn read(&self, va: u64, buf: &mut [u8]) -> Option<()>;
}

fn read_u64(src: &dyn UnwindSource, va: u64) -> Option<u64> {
    let mut b = [0; 8];
    src.read(va, &mut b)?;
    Some(u64::from_le_bytes(b))
}

fn read_u32(src: &dyn UnwindSource, va: u64) -> Option<u32> {
    let mut b = [0; 4];
    src.read(va, &mut b)?;
    Some(u32::from_le_bytes(b))
}

/// The `RUNTIME_FUNCTION` `(begin, end, unwind_info)` RVAs covering `rva`.
fn lookup(src: &dyn UnwindSource, base: u64, pdata: (u32, u32), rva: u32) -> Option<(u32, u32, u32)> {
    let count = pdata.1 / 12;
    let (mut lo, mut hi) = (0u32, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = base + u64::from(pdata.0) + u64::from(mid) * 12;
        let begin = read_u32(src, entry)?;
        let end = read_u32(src, entry + 4)?;
        if rva < begin {
            hi = mid;
        } else if rva >= end {
            lo = mid + 1;
        } else {
            return Some((begin, end, read_u32(src, entry + 8)?));
        }
    }
    None
}

/// Executes the epilog at `regs.rip` if that is where it is; `Some(())` when it did.
fn unwind_epilog(src: &dyn UnwindSource, regs: &mut FrameRegisters) -> Option<()> {
    let mut code = [0u8; 64];
    src.read(regs.rip, &mut code)?;
    let mut decoder = Decoder::with_ip(64, &code, regs.rip, DecoderOptions::NONE);
    let mut copy = *regs;
    for _ in 0..12 {
        let ins = decoder.decode();
        match ins.mnemonic() {
            Mnemonic::Add if ins.op0_register() == Register::RSP && ins.op1_kind() != OpKind::Register => {
                copy.gpr[RSP] = copy.gpr[RSP].wrapping_add(ins.immediate(1));
            }
            Mnemonic::Lea if ins.op0_register() == Register::RSP => {
                let base = gpr_index(ins.memory_base())?;
                copy.gpr[RSP] = copy.gpr[base].wrapping_add(ins.memory_displacement64());
            }
            Mnemonic::Pop if ins.op0_kind() == OpKind::Register => {
                let reg = gpr_index(ins.op0_register())?;
                copy.gpr[reg] = read_u64(src, copy.gpr[RSP])?;
                copy.gpr[RSP] += 8;
            }
            Mnemonic::Ret => {
                copy.rip = read_u64(src, copy.gpr[RSP])?;
                copy.gpr[RSP] += 8;
                *regs = copy;
                return Some(());
            }
            _ if ins.code() == Code::Jmp_rel32_64 || ins.code() == Code::Jmp_rel8_64 => {
                // A tail call ends the epilog like a `ret` whose target is
                // the jump's: the caller's return address is at [rsp].
                copy.rip = read_u64(src, copy.gpr[RSP])?;
                copy.gpr[RSP] += 8;
                *regs = copy;
                return Some(());
            }
            _ => return None,
        }
    }
    None
}

fn gpr_index(register: Register) -> Option<usize> {
    let all = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    all.iter().position(|r| *r == register)
}

/// Unwinds one frame: `regs` becomes the caller's registers. `None` when
/// the unwind data or the stack cannot be read.
pub fn unwind_frame(src: &dyn UnwindSource, regs: &mut FrameRegisters) -> Option<()> {
    let Some((base, pdata)) = src.image_at(regs.rip) else {
        // Not in an image (a stub): treat as a leaf.
        regs.rip = read_u64(src, regs.gpr[RSP])?;
        regs.gpr[RSP] += 8;
        return Some(());
    };
    let rva = u32::try_from(regs.rip - base).ok()?;
    let Some((begin, _end, mut info)) = lookup(src, base, pdata, rva) else {
        regs.rip = read_u64(src, regs.gpr[RSP])?;
        regs.gpr[RSP] += 8;
        return Some(());
    };
    if unwind_epilog(src, regs).is_some() {
        return Some(());
    }
    let mut offset_in_function = rva - begin;
    loop {
        let at = base + u64::from(info);
        let mut header = [0u8; 4];
        src.read(at, &mut header)?;
        let flags = header[0] >> 3;
        let prolog = u32::from(header[1]);
        let count = usize::from(header[2]);
        let frame_register = usize::from(header[3] & 0xF);
        let frame_offset = u64::from(header[3] >> 4) * 16;
        let mut codes = vec![0u8; count * 2];
        src.read(at + 4, &mut codes)?;
        let slot = |i: usize| u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]]);
        let mut i = 0;
        while i < count {
            let code_offset = u32::from(codes[2 * i]);
            let op = codes[2 * i + 1] & 0xF;
            let op_info = usize::from(codes[2 * i + 1] >> 4);
            let slots = match op {
                1 if op_info == 0 => 2,
                1 | 5 | 9 => 3,
                4 | 6 | 8 => 2,
                _ => 1,
            };
            // In the prolog, only the operations already executed count.
            let executed = offset_in_function >= prolog || code_offset <= offset_in_function;
            if executed {
                match op {
                    0 => {
                        regs.gpr[op_info] = read_u64(src, regs.gpr[RSP])?;
                        regs.gpr[RSP] += 8;
                    }
                    1 => {
                        let size = if op_info == 0 {
                            u64::from(slot(i + 1)) * 8
                        } else {
                            u64::from(slot(i + 1)) | (u64::from(slot(i + 2)) << 16)
                        };
                        regs.gpr[RSP] += size;
                    }
                    2 => regs.gpr[RSP] += op_info as u64 * 8 + 8,
                    3 => regs.gpr[RSP] = regs.gpr[frame_register].wrapping_sub(frame_offset),
                    4 => regs.gpr[op_info] = read_u64(src, regs.gpr[RSP] + u64::from(slot(i + 1)) * 8)?,
                    5 => {
                        let off = u64::from(slot(i + 1)) | (u64::from(slot(i + 2)) << 16);
                        regs.gpr[op_info] = read_u64(src, regs.gpr[RSP] + off)?;
                    }
                    10 => {
                        let frame = regs.gpr[RSP] + if op_info == 1 { 8 } else { 0 };
                        regs.rip = read_u64(src, frame)?;
                        regs.gpr[RSP] = read_u64(src, frame + 24)?;
                        return Some(());
                    }
                    _ => {}
                }
            }
            i += slots;
        }
        if flags & UNW_FLAG_CHAININFO == 0 {
            break;
        }
        // Chained: the primary RUNTIME_FUNCTION follows the (even-padded) codes.
        let chained = at + 4 + (count.div_ceil(2) * 4) as u64;
        info = read_u32(src, chained + 8)?;
        // The chained parent's prolog has fully run.
        offset_in_function = u32::MAX;
    }
    regs.rip = read_u64(src, regs.gpr[RSP])?;
    regs.gpr[RSP] += 8;
    Some(())
}

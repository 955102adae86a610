//! Why a run stopped: a bugcheck (what Windows would show on a blue screen,
//! plus the stack), an import the emulated kernel does not implement, or a
//! failure of the host itself.

use std::fmt;

use crate::loader::pe::MissingImport;

/// A guest exception or a kernel-detected fatal error, reported as Windows
/// would report the bugcheck, with the registers and a stack walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BugcheckReport {
    /// The bug check code (`0x50`, `0xD1`, `0x1E`, …), as listed in the
    /// Windows "Bug check code reference".
    pub code: u32,
    /// Its symbolic name (`PAGE_FAULT_IN_NONPAGED_AREA`).
    pub name: String,
    /// The four bug check parameters.
    pub parameters: [u64; 4],
    /// The CPU exception vector, when an exception caused it.
    pub vector: Option<u8>,
    /// The exception's error code, for vectors that push one.
    pub error_code: Option<u64>,
    /// CR2 (the faulting address) for a page fault.
    pub cr2: Option<u64>,
    /// RIP where it happened.
    pub rip: u64,
    /// IRQL at the time.
    pub irql: u8,
    /// `symbol+offset` of each frame, innermost first (the first is RIP).
    pub stack: Vec<String>,
    /// The general-purpose registers, `rax … r15` in encoding order.
    pub registers: [u64; 16],
}

/// Mnemonic of a CPU exception vector.
#[must_use]
pub fn vector_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD exception",
        0x29 => "int 29h (__fastfail)",
        0x2C => "int 2Ch (__assertfail)",
        _ => "interrupt",
    }
}

/// Register names in encoding order.
const NAMES: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

impl fmt::Display for BugcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p1, p2, p3, p4] = self.parameters;
        writeln!(f, "*** BUGCHECK {:#010x} {} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})", self.code, self.name)?;
        if let Some(vector) = self.vector {
            write!(f, "    exception: vector {vector} ({})", vector_name(vector))?;
            if let Some(code) = self.error_code {
                write!(f, ", error code {code:#x}")?;
            }
            if let Some(cr2) = self.cr2 {
                write!(f, ", CR2 {cr2:#018x}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "    IRQL {}, RIP {:#018x}", self.irql, self.rip)?;
        for (i, chunk) in NAMES.chunks(4).enumerate() {
            write!(f, "   ")?;
            for (j, name) in chunk.iter().enumerate() {
                write!(f, " {name:>3}={:#018x}", self.registers[i * 4 + j])?;
            }
            writeln!(f)?;
        }
        writeln!(f, "    stack:")?;
        for (i, frame) in self.stack.iter().enumerate() {
            writeln!(f, "      #{i:02} {frame}")?;
        }
        Ok(())
    }
}

/// Why a guest call did not return normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest (or the kernel on its behalf) crashed the machine.
    Bugcheck(Box<BugcheckReport>),
    /// An image imports what the emulated kernel does not implement; the
    /// image was not started.
    MissingImports {
        /// The image's path.
        image: String,
        /// Every unresolved import.
        missing: Vec<MissingImport>,
    },
    /// The host failed (KVM refused an operation, the machine ran out of
    /// its own frames, a VM exit that cannot happen happened).
    Host(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bugcheck(report) => write!(f, "{report}"),
            Self::MissingImports { image, missing } => {
                writeln!(f, "{image}: {} import(s) have no implementation in the emulated kernel:", missing.len())?;
                for m in missing {
                    writeln!(f, "    {}!{}", m.module, m.symbol)?;
                }
                Ok(())
            }
            Self::Host(message) => write!(f, "host error: {message}"),
        }
    }
}

impl std::error::Error for Stop {}

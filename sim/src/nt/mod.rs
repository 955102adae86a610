//! The emulated Windows kernel: `ntoskrnl.exe` and `hal.dll` as the driver
//! images see them, run on the host on top of the simulated machine, with
//! Driver Verifier's checks.
//!
//! The images execute in a `capdma_winvm::Machine`; each import they make
//! is bound to a stub whose host side is a [`Ddi`] here. Each DDI
//! implements its documented contract (the DDI reference page is cited on
//! each), checks the IRQL the page requires (the table's `max_irql`), and
//! records what Driver Verifier would catch as a [`verifier::Finding`].
//!
//! One concern per file: [`irql`] (the IRQL and its DDIs), [`pool`]
//! (`ExAllocatePool2` and frees, special-pool style), [`rtl`] (debug
//! output, `memcpy`/`memset`, `KeBugCheckEx`), [`layout`] (the x64 layouts
//! of the structures the kernel and the images share).

#![allow(
    clippy::doc_markdown,
    reason = "the docs name Windows DDIs, types and constants by the hundred; backticks on each would bury the text"
)]
#![allow(clippy::unnecessary_wraps, reason = "every DDI has the DdiFn signature, whether or not it can fail")]

pub mod etw;
pub mod hal;
pub mod io;
pub mod irql;
pub mod ke;
pub mod ks;
pub mod layout;
pub mod pnp;
pub mod pool;
pub mod rtl;
pub mod system;
pub mod verifier;

use capdma_winvm::{Kernel, Machine, Protection, Stop};

use self::verifier::{Finding, Verifier};

pub use capdma_interface::kernel::{APC_LEVEL, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// A module the emulated kernel exports from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// `ntoskrnl.exe`.
    Ntoskrnl,
    /// `hal.dll`.
    Hal,
    /// `ks.sys`.
    Ks,
}

impl Module {
    fn matches(self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            Self::Ntoskrnl => name == "ntoskrnl.exe",
            Self::Hal => name == "hal.dll",
            Self::Ks => name == "ks.sys",
        }
    }
}

/// A DDI's host implementation: reads its arguments from the machine,
/// returns RAX.
pub type DdiFn = fn(&mut Nt, &mut Machine) -> Result<u64, Stop>;

/// One exported DDI.
pub struct Ddi {
    /// Where it is exported from.
    pub module: Module,
    /// Its name.
    pub name: &'static str,
    /// The highest IRQL its reference page allows a caller to be at.
    pub max_irql: u8,
    /// The implementation.
    pub run: DdiFn,
}

/// A host function whose address the guest holds (a `DMA_OPERATIONS`
/// entry, an interface's routine), with the context it was made for.
pub type HostFn = fn(&mut Nt, &mut Machine, u64) -> Result<u64, Stop>;

/// What a stub index leads to.
#[derive(Clone, Copy)]
enum StubTarget {
    Ddi(&'static Ddi),
    Host { run: HostFn, context: u64, max_irql: u8 },
}

/// Every DDI the emulated kernel implements, by file.
fn all_ddis() -> impl Iterator<Item = &'static Ddi> {
    [irql::DDIS, pool::DDIS, rtl::DDIS, io::DDIS, ke::DDIS, hal::DDIS, etw::DDIS, ks::DDIS].into_iter().flatten()
}

/// A line of debug output (`DbgPrint`), stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// Virtual time, 100-ns units.
    pub time: u64,
    /// IRQL of the caller.
    pub irql: u8,
    /// The image that printed it.
    pub image: String,
    /// The text, without its trailing newline.
    pub text: String,
}

/// The emulated kernel's state.
pub struct Nt {
    /// Current IRQL of the one processor.
    pub irql: u8,
    /// Driver Verifier: checks made and findings.
    pub verifier: Verifier,
    /// Virtual time since boot, 100-ns units (`KeQueryInterruptTime`).
    pub time: u64,
    /// Pool allocations.
    pub pool: pool::Pool,
    /// `DbgPrint` output.
    pub trace: Vec<TraceLine>,
    /// DDI calls made, by the image.
    pub ddi_calls: u64,
    /// Calls per imported DDI, by name (what a run executed of each image's imports).
    pub calls_by_ddi: std::collections::BTreeMap<&'static str, u64>,
    /// The I/O manager's state ([`io`]).
    pub io: io::IoState,
    /// The dispatcher's state ([`ke`]).
    pub ke: ke::KeState,
    /// The hardware's state ([`hal`]).
    pub hal: hal::HalState,
    /// ETW: the trace session, provider registrations, decoded events ([`etw`]).
    pub etw: etw::EtwState,
    /// The emulated `ks.sys` ([`ks`]).
    pub ks: ks::KsState,
    stubs: Vec<StubTarget>,
}

impl Default for Nt {
    fn default() -> Self {
        Self::new()
    }
}

impl Nt {
    /// A kernel at boot: `PASSIVE_LEVEL`, time 0, nothing allocated.
    #[must_use]
    pub fn new() -> Self {
        Self {
            irql: PASSIVE_LEVEL,
            verifier: Verifier::default(),
            time: 0,
            pool: pool::Pool::default(),
            trace: Vec::new(),
            ddi_calls: 0,
            calls_by_ddi: std::collections::BTreeMap::new(),
            io: io::IoState::default(),
            ke: ke::KeState::default(),
            hal: hal::HalState::default(),
            etw: etw::EtwState::default(),
            ks: ks::KsState::default(),
            stubs: Vec::new(),
        }
    }

    /// The address an image's import `(module, symbol)` binds to: a stub
    /// for the DDI, or `None` when it is not implemented (the loader then
    /// refuses the image and lists it).
    pub fn resolve(&mut self, m: &mut Machine, module: &str, symbol: &str) -> Option<u64> {
        let ddi = all_ddis().find(|d| d.name == symbol && d.module.matches(module))?;
        let (index, va) = m.add_stub(symbol).ok()?;
        debug_assert_eq!(index as usize, self.stubs.len());
        self.stubs.push(StubTarget::Ddi(ddi));
        Some(va)
    }

    /// A guest-callable address for `run(context)`, allowed up to `max_irql`.
    ///
    /// # Errors
    /// [`Stop::Host`] when no stub page can be mapped.
    pub fn host_function(&mut self, m: &mut Machine, name: &str, run: HostFn, context: u64, max_irql: u8) -> Result<u64, Stop> {
        let (_, va) = m.add_stub(name)?;
        self.stubs.push(StubTarget::Host { run, context, max_irql });
        Ok(va)
    }

    /// Records a finding at the current DDI's caller, of a check the caller
    /// counted (`verifier.checks += 1` before its test, or
    /// [`Self::check_irql`]); see [`Self::counted_violation`].
    pub fn violation(&mut self, m: &Machine, rule: &'static str, bugcheck: u32, parameter1: Option<u64>, detail: String) {
        let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
        self.verifier.report(Finding { rule, bugcheck, parameter1, detail, caller });
    }

    /// [`Self::violation`] for a finding that is its own check (an object
    /// found where none may be, a freed block freed again): counts the
    /// check, then records the finding.
    pub fn counted_violation(&mut self, m: &Machine, rule: &'static str, bugcheck: u32, parameter1: Option<u64>, detail: String) {
        self.verifier.checks += 1;
        self.violation(m, rule, bugcheck, parameter1, detail);
    }

    /// Checks that the current IRQL is at most `max` for `what`; records
    /// `IRQL_TOO_HIGH` (bug check 0xC4, DDI compliance rule) otherwise.
    pub fn check_irql(&mut self, m: &Machine, what: &str, max: u8) -> bool {
        let irql = self.irql;
        self.verifier.checks += 1;
        if irql > max {
            self.violation(
                m,
                "IRQL_TOO_HIGH",
                0xC4,
                None,
                format!("{what} called at IRQL {irql}; its reference page allows at most {max}"),
            );
            return false;
        }
        true
    }

    /// Kernel-owned memory for structures the kernel hands the guest (IRPs,
    /// `DMA_ADAPTER`s, …): whole zeroed pages, read-write.
    ///
    /// # Errors
    /// [`Stop::Host`] when the machine's frames are exhausted.
    pub fn alloc_kernel(&mut self, m: &mut Machine, bytes: u64) -> Result<u64, Stop> {
        m.alloc_own_pages(bytes.div_ceil(4096).max(1), Protection::READ_WRITE)
    }
}

impl Kernel for Nt {
    fn stub_called(&mut self, m: &mut Machine, index: u32) -> Result<u64, Stop> {
        let Some(target) = self.stubs.get(index as usize).copied() else {
            return Err(Stop::Host(format!("stub {index} has no target")));
        };
        self.ddi_calls += 1;
        match target {
            StubTarget::Ddi(ddi) => {
                *self.calls_by_ddi.entry(ddi.name).or_default() += 1;
                self.check_irql(m, ddi.name, ddi.max_irql);
                (ddi.run)(self, m)
            }
            StubTarget::Host { run, context, max_irql } => {
                let name = m.stub_name(index).to_owned();
                self.check_irql(m, &name, max_irql);
                run(self, m, context)
            }
        }
    }

    fn mmio_read(&mut self, m: &mut Machine, gpa: u64, data: &mut [u8]) -> Result<(), Stop> {
        hal::mmio_read(self, m, gpa, data)
    }

    fn mmio_write(&mut self, m: &mut Machine, gpa: u64, data: &[u8]) -> Result<(), Stop> {
        hal::mmio_write(self, m, gpa, data)
    }

    fn irql(&self) -> u8 {
        self.irql
    }

    fn set_irql_by_cr8(&mut self, m: &mut Machine, irql: u8) -> Result<(), Stop> {
        self.irql = irql;
        pool::sync_pageable(self, m)
    }

    fn at_exit(&mut self, m: &mut Machine) -> Result<(), Stop> {
        ke::deliver(self, m)?;
        pool::sync_pageable(self, m)
    }

    fn page_fault(&self, va: u64, write: bool, rip: u64) -> Option<(u32, &'static str, [u64; 4])> {
        pool::freed_special_fault(&self.pool, va, write, rip)
    }
}

//! What the emulated kernel checks, named as Driver Verifier names it.
//!
//! Every check the emulated kernel makes is counted; every broken rule is a
//! [`Finding`] with the rule's name and the bug check Driver Verifier
//! raises for it (and its first parameter, where the bug check page lists
//! one per rule). A finding does not stop the run: the report lists them
//! all, and a run with any finding fails.
//!
//! Sources: "Driver Verifier" and its option pages (IRQL checking, pool
//! tracking, special pool, I/O verification, DMA verification, low
//! resources simulation) and the bug check pages the findings name: 0x18,
//! 0x35, 0x44, 0xC2, 0xC4, 0xC7, 0xC8, 0xC9, 0xCA, 0xCE, 0xD1, 0xD5 and
//! 0xE6 in the Windows driver documentation.

use std::fmt;

/// A rule broken, with the bug check Windows raises for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule, as a short stable name (`IRQL_TOO_HIGH`, `POOL_DOUBLE_FREE`).
    pub rule: &'static str,
    /// Bug check code (`0xC4` `DRIVER_VERIFIER_DETECTED_VIOLATION`, …), or 0
    /// for a stream contract Windows does not crash on (a KS check).
    pub bugcheck: u32,
    /// Bug check parameter 1 where the bug check page gives one per rule.
    pub parameter1: Option<u64>,
    /// What happened, with the DDI and the addresses involved.
    pub detail: String,
    /// Where in the driver (`symbol+offset` of the caller), when known.
    pub caller: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bugcheck == 0 {
            // A stream contract the application sees broken (a KS check), not a crash.
            write!(f, "{} (no bug check", self.rule)?;
        } else {
            write!(f, "{} (bug check {:#X}", self.rule, self.bugcheck)?;
        }
        if let Some(p1) = self.parameter1 {
            write!(f, ", parameter 1 = {p1:#x}")?;
        }
        write!(f, ") at {}: {}", self.caller, self.detail)
    }
}

/// The checks made and what they found.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Checks made (each DDI call checks its IRQL, each free its tag, …).
    pub checks: u64,
    /// Broken rules, in order.
    pub findings: Vec<Finding>,
}

impl Verifier {
    /// Counts a check; when `ok` is false records `finding()`.
    pub fn check(&mut self, ok: bool, finding: impl FnOnce() -> Finding) -> bool {
        self.checks += 1;
        if !ok {
            self.findings.push(finding());
        }
        ok
    }

    /// Records a broken rule found by a check the caller counted (its
    /// `checks += 1` made whether the check passes or fails): a failing
    /// check counts once, as a passing one does.
    pub fn report(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Whether a finding with this rule name was recorded.
    #[must_use]
    pub fn found(&self, rule: &str) -> bool {
        self.findings.iter().any(|f| f.rule == rule)
    }
}

/// What Driver Verifier's low resources simulation fails, one kind of call
/// at a time ("Low Resources Simulation": the driver must handle every
/// allocation failing). Each kind counts its calls from boot, and one
/// 0-based index of it can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LowResources {
    /// `ExAllocatePool2`, including what the emulated `ks.sys` allocates
    /// for a minidriver through it (`_KsEdit`): returns NULL.
    Pool,
    /// `IoCreateDevice` as the images call it (the bus image's FDO and
    /// child PDOs): `STATUS_INSUFFICIENT_RESOURCES`.
    DeviceObject,
    /// IRPs a driver builds (`IoBuildSynchronousFsdRequest`,
    /// `PoRequestPowerIrp`): NULL / `STATUS_INSUFFICIENT_RESOURCES`.
    Irp,
    /// `IoGetDmaAdapter`: NULL.
    DmaAdapter,
    /// `DMA_OPERATIONS.AllocateCommonBuffer`: NULL.
    CommonBuffer,
    /// `_KsEdit`: the pool allocation of its new item fails, so it returns
    /// `STATUS_INSUFFICIENT_RESOURCES` (counted as a pool failure too).
    KsEdit,
}

impl LowResources {
    /// Every kind.
    pub const ALL: [Self; 6] = [Self::Pool, Self::DeviceObject, Self::Irp, Self::DmaAdapter, Self::CommonBuffer, Self::KsEdit];

    /// The call it fails, as the DDI is named.
    #[must_use]
    pub const fn ddi(self) -> &'static str {
        match self {
            Self::Pool => "ExAllocatePool2",
            Self::DeviceObject => "IoCreateDevice",
            Self::Irp => "IoBuildSynchronousFsdRequest/PoRequestPowerIrp",
            Self::DmaAdapter => "IoGetDmaAdapter",
            Self::CommonBuffer => "AllocateCommonBuffer",
            Self::KsEdit => "_KsEdit",
        }
    }

    /// Calls of this kind made since boot.
    #[must_use]
    pub const fn made(self, nt: &super::Nt) -> u64 {
        match self {
            Self::Pool => nt.pool.allocations,
            Self::DeviceObject => nt.io.devices_made,
            Self::Irp => nt.io.irps_made,
            Self::DmaAdapter => nt.hal.dma.adapters_requested,
            Self::CommonBuffer => nt.hal.dma.common_buffers_requested,
            Self::KsEdit => nt.ks.edits,
        }
    }

    /// Makes the call of this kind with the 0-based `index` (since boot)
    /// fail; replaces the kind's earlier one.
    pub fn fail_at(self, nt: &mut super::Nt, index: u64) {
        match self {
            Self::Pool => nt.pool.fail_at = Some(index),
            Self::DeviceObject => nt.io.fail_create_device_at = Some(index),
            Self::Irp => nt.io.fail_irp_at = Some(index),
            Self::DmaAdapter => nt.hal.dma.fail_adapter_at = Some(index),
            Self::CommonBuffer => nt.hal.dma.fail_common_buffer_at = Some(index),
            Self::KsEdit => nt.ks.fail_edit_at = Some(index),
        }
    }
}

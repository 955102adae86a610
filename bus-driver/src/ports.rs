//! The ports the bus core is written against.
//!
//! The Windows glue implements them with wdk-sys; `capdma-sim` implements
//! them with the simulated machine, which checks the IRQL and DMA rules.
use crate::channel::RecordFault;
use core::ffi::c_void;

pub use capdma_interface::kernel::{Irql, DISPATCH_LEVEL, PASSIVE_LEVEL};

/// Why the core resets a channel's engine ([`CoreEvent::EngineReset`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// The board reported a value the range checks refused.
    RefusedValue(RecordFault),
    /// An error interrupt, with the engine halted (`STATUS_HALTED`).
    ErrorInterrupt,
    /// The watchdog: the channel owed a completion and made none for more
    /// than `WATCHDOG_FRAME_INTERVALS` frame intervals.
    Watchdog,
}

impl ResetCause {
    /// A short stable name (`"refused-value"`, `"error-interrupt"`,
    /// `"watchdog"`), as the trace events carry it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RefusedValue(_) => "refused-value",
            Self::ErrorInterrupt => "error-interrupt",
            Self::Watchdog => "watchdog",
        }
    }
}

/// Something the core observed that a driver engineer wants in a trace
/// (the glue writes each as an ETW event, docs/tracing.md). Reported
/// through [`RegisterPort::report`] as it happens, at the IRQL of the path
/// that saw it (up to `DISPATCH_LEVEL`, under the channel's spin lock): a
/// report must not block, allocate or call back into the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// The board reported a completion record (or a `CQ_PRODUCER`) that
    /// the range checks refused; the channel is reset next.
    ValueRefused {
        /// The channel, 0-based.
        channel: u32,
        /// What was wrong with it.
        fault: RecordFault,
    },
    /// The core resets channel `channel`'s engine (`CTRL_RESET`) because of `cause`.
    EngineReset {
        /// The channel, 0-based.
        channel: u32,
        /// Why.
        cause: ResetCause,
    },
    /// The board's `DROPPED_FRAMES` counter advanced by `frames` since the
    /// core last read it (frames the board had no buffer for).
    DroppedByBoard {
        /// The channel, 0-based.
        channel: u32,
        /// Frames dropped since the last report.
        frames: u32,
    },
}

/// BAR0 register access: `READ_REGISTER_ULONG` / `WRITE_REGISTER_ULONG` on
/// the `MmMapIoSpaceEx` mapping of BAR0. Callable at any IRQL.
pub trait RegisterPort {
    /// Reads the 32-bit register at byte `offset` of BAR0. A vanished board reads all ones.
    fn read32(&self, offset: u32) -> u32;
    /// Writes the 32-bit register at byte `offset` of BAR0.
    fn write32(&self, offset: u32, value: u32);
    /// The core's reporting hook: `event` just happened (see [`CoreEvent`]
    /// for the IRQL and what a report may not do). It lives on this port
    /// because it is the one every core path holds — the channel engine,
    /// under its spin lock, has only the registers. The glue traces it
    /// (ETW); the default ignores it.
    fn report(&self, event: CoreEvent) {
        let _ = event;
    }
}

/// A physically contiguous common buffer (`AllocateCommonBuffer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonBuffer {
    /// Kernel virtual address (page-aligned).
    pub va: *mut u8,
    /// Logical (bus) address the board uses (page-aligned).
    pub logical: u64,
    /// Bytes allocated.
    pub bytes: usize,
}

/// The fields of a version-2 `DEVICE_DESCRIPTION` the core decides; the glue
/// fills the rest (`Master = TRUE`, `InterfaceType = PCIBus`, `Version = 2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceDescription {
    /// `ScatterGather`.
    pub scatter_gather: bool,
    /// `Dma64BitAddresses` (else `Dma32BitAddresses`).
    pub dma64: bool,
    /// `MaximumLength`: bytes of the largest single transfer (one frame).
    pub maximum_length: u32,
}

/// A DMA adapter (`DMA_ADAPTER` with its `DMA_OPERATIONS`) from `IoGetDmaAdapter`.
pub trait DmaAdapterPort {
    /// `AllocateCommonBuffer(Adapter, bytes, &LogicalAddress, CacheEnabled = TRUE)`
    /// (cached: the CPU copies out of these buffers).
    /// `PASSIVE_LEVEL`. The buffer is page-aligned, zeroed and reachable by
    /// the board. `None` when contiguous memory is not available.
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer>;
    /// `FreeCommonBuffer`. `PASSIVE_LEVEL`. `buffer` exactly as allocated.
    fn free_common_buffer(&self, buffer: CommonBuffer);
    /// The `PDMA_ADAPTER` to hand to the child (for `KsDeviceRegisterAdapterObject`).
    fn raw(&self) -> *mut c_void;
    /// `NumberOfMapRegisters` that `IoGetDmaAdapter` granted.
    fn map_registers(&self) -> u32;
}

/// The machine around the board: adapter creation, IRQL control, memory facts.
pub trait BusPlatform {
    /// BAR0 access.
    type Registers: RegisterPort;
    /// The DMA adapter type.
    type Adapter: DmaAdapterPort;

    /// The mapped BAR0.
    fn registers(&self) -> &Self::Registers;
    /// `IoGetDmaAdapter(PciPdo, &description, &NumberOfMapRegisters)`.
    /// `PASSIVE_LEVEL`. `None` when the system refuses.
    fn get_dma_adapter(&self, description: &DeviceDescription) -> Option<Self::Adapter>;
    /// `DmaOperations->PutDmaAdapter(Adapter)`. `PASSIVE_LEVEL`. Called only
    /// after every common buffer of the adapter is freed.
    fn put_dma_adapter(&self, adapter: Self::Adapter);
    /// Highest physical address of RAM in bytes (from
    /// `MmGetPhysicalMemoryRanges`), to know whether a 32-bit board can reach
    /// all memory.
    fn highest_physical_address(&self) -> u64;
    /// `KeRaiseIrql(DISPATCH_LEVEL, &Old)`: returns the old IRQL. Spin locks
    /// of the core are only held at `DISPATCH_LEVEL`.
    fn raise_to_dispatch(&self) -> Irql;
    /// `KeLowerIrql(old)`.
    fn lower_irql(&self, old: Irql);
    /// `KeGetCurrentIrql()`.
    fn current_irql(&self) -> Irql;
}

//! The DMA mode, chosen once per board at `IRP_MN_START_DEVICE`.
use zerocopy::{Immutable, IntoBytes, TryFromBytes};

/// How frames reach the AVStream frame buffers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, Immutable)]
pub enum DmaMode {
    /// Packet-based DMA: the child registers the bus's DMA adapter with
    /// `KsDeviceRegisterAdapterObject`, AVStream generates `KSMAPPING`s and
    /// the board writes straight into the frame buffers. Zero copies.
    ScatterGather = 1,
    /// Common-buffer DMA: the board fills slots of a physically contiguous
    /// ring allocated at start; the CPU copies each slot into a frame.
    CommonBuffer = 2,
}

impl DmaMode {
    /// Decodes the `mode` field of [`crate::table::DmaConfig`]: `None` for a
    /// value that names no mode.
    #[must_use]
    pub fn from_u32(value: u32) -> Option<Self> {
        zerocopy::try_transmute!(value).ok()
    }

    /// The name used in logs, the registry override and the simulator's output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ScatterGather => "scatter-gather",
            Self::CommonBuffer => "common-buffer",
        }
    }
}

/// Why [`DmaMode`] was chosen; reported in `DmaConfig::reason` and logs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, Immutable)]
pub enum ModeReason {
    /// The board can do S/G, nothing overrode it, the adapter allows it.
    BoardScatterGather = 1,
    /// The board's capability register does not advertise S/G.
    BoardLacksScatterGather = 2,
    /// The `DmaMode` registry value forced common-buffer mode.
    OverrideCommonBuffer = 3,
    /// The `DmaMode` registry value forced S/G and the board supports it.
    OverrideScatterGather = 4,
    /// The registry forced S/G but the board cannot do it: common buffer instead.
    OverrideIgnoredNoScatterGather = 5,
    /// A 32-bit board on a machine with memory above 4 GiB and too few map
    /// registers to bounce one whole frame through: S/G could never map a
    /// frame, common buffer instead.
    AddressLimitNoMapRegisters = 6,
    /// A 32-bit board on a machine with memory above 4 GiB: S/G would bounce
    /// every page through map registers (a hidden copy per frame and a scarce
    /// resource); one explicit copy from a common buffer is cheaper and cannot
    /// run out.
    AddressLimitPreferCommonBuffer = 7,
}

impl ModeReason {
    /// Decodes the `reason` field of [`crate::table::DmaConfig`]: `None` for
    /// a value that names no reason.
    #[must_use]
    pub fn from_u32(value: u32) -> Option<Self> {
        zerocopy::try_transmute!(value).ok()
    }

    /// A one-line human explanation.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::BoardScatterGather => "board advertises scatter/gather and the adapter allows it",
            Self::BoardLacksScatterGather => "board has no scatter/gather capability",
            Self::OverrideCommonBuffer => "DmaMode registry override forces common-buffer",
            Self::OverrideScatterGather => "DmaMode registry override forces scatter-gather",
            Self::OverrideIgnoredNoScatterGather => {
                "DmaMode override asked for scatter-gather but the board cannot do it"
            }
            Self::AddressLimitNoMapRegisters => {
                "32-bit board, memory above 4 GiB and too few map registers to bounce one frame"
            }
            Self::AddressLimitPreferCommonBuffer => {
                "32-bit board and memory above 4 GiB: one copy from a common buffer beats map-register bouncing"
            }
        }
    }
}

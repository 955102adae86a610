//! The Windows kernel constants both drivers and the simulated machine rely
//! on: the page size and the IRQL levels (wdm.h, x64).
//!
//! The one definition: the bus and AVStream cores, the probe image's glue and
//! `capdma-sim` (its memory, DMA adapter and emulated kernel) use these.
//! Two crates keep a page size of their own on purpose, each with a comment
//! saying why: `capdma-winvm` (the x86-64 MMU's page, which it emulates
//! whatever driver it runs) and `xtask` (the PE section alignment HVCI
//! requires, a rule of the image format checked without the drivers).

/// `PAGE_SIZE` (wdm.h, x64): bytes in a page, 4096. The unit of
/// `ADDRESS_AND_SIZE_TO_SPAN_PAGES`, of map registers and of the pages a
/// common buffer or a frame buffer's MDL spans.
pub const PAGE_SIZE: u32 = 4096;

/// An IRQL value (`KIRQL`, wdm.h: a `UCHAR`). Higher runs first; `0..=2` are
/// the software levels, device IRQLs (DIRQL) are above `DISPATCH_LEVEL`.
pub type Irql = u8;

/// `PASSIVE_LEVEL` (0): threads, `DriverEntry`, Plug and Play, power and KS
/// state changes; pageable code and waits are allowed.
pub const PASSIVE_LEVEL: Irql = 0;
/// `APC_LEVEL` (1): asynchronous procedure calls, fast mutexes held;
/// `PoSetPowerState` for D1..D3 needs this or below.
pub const APC_LEVEL: Irql = 1;
/// `DISPATCH_LEVEL` (2): DPCs and spin locks held; no waits, no paged memory.
pub const DISPATCH_LEVEL: Irql = 2;
/// `HIGH_LEVEL` (15, x64): the highest IRQL, every interrupt masked.
pub const HIGH_LEVEL: Irql = 15;

//! The WDM glue of `capdma_bus.sys` (Windows targets only), over wdk-sys.
//!
//! It translates IRPs into calls of the portable core — [`crate::BusDevice`]
//! for the board and the DMA, [`crate::pnp`] for every Plug and Play
//! decision — and acts on their answers. It decides nothing the simulated
//! machine could test.
//!
//! | file | concern |
//! |---|---|
//! | `driver_entry.rs` | `DriverEntry`, `DriverUnload`, the dispatch table |
//! | `extension.rs` | FDO or child PDO: the device-extension header |
//! | `fdo.rs` | the FDO extension (holding the `BusDevice`), `AddDevice` |
//! | `fdo_pnp.rs` | `IRP_MJ_PNP` at the FDO: start, relations, stop, removal, teardown order |
//! | `pdo.rs` | child PDO creation and deletion, its extension |
//! | `pdo_pnp.rs` | `IRP_MJ_PNP` at a child PDO: IDs, capabilities, query interface, … |
//! | `isr_dpc.rs` | interrupt connection, ISR, DPC, watchdog timer |
//! | `platform.rs` | the core's ports: `BusPlatform`, `RegisterPort` (BAR0), `DmaAdapterPort` |
//! | `registry.rs` | the start parameters from the `Device Parameters` key |
//! | `power.rs` | `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL`, other majors |
//! | `irp.rs` | passing, forwarding and sending IRPs; the remove lock |
//! | `ddi.rs` | wdm.h macros and inline functions written in Rust |
//! | `trace.rs` | ETW `TraceLogging`: the `Capdma.Bus` provider and its events (docs/tracing.md) |
//!
//! See `docs/ddi.md` for every DDI called here, what the simulated machine
//! models of it, and which test covers it.

mod ddi;
mod driver_entry;
mod extension;
mod fdo;
mod fdo_pnp;
mod irp;
mod isr_dpc;
mod pdo;
mod pdo_pnp;
mod platform;
mod power;
mod registry;
pub mod trace;

// The panic handler of the image (a panic is a bugcheck: KeBugCheckEx).
use wdk_panic as _;

// The extension is shared by the ISR, DPCs and every IRP path.
const _: fn() = || {
    fn sync<T: Sync>() {}
    sync::<crate::BusDevice<platform::WdmPlatform>>();
};

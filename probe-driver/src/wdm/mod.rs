//! The Windows glue of `capdma_probe.sys` (Windows targets only): a
//! minimal, correct WDM function driver (`driver.rs`) and the `Probe*`
//! exports, each breaking one rule on purpose (`crate::catalog` lists
//! them).
//!
//! | file | concern |
//! |---|---|
//! | `driver.rs` | `DriverEntry`, `DriverUnload`, `AddDevice`, the device extension, the dispatch routines |
//! | `ddi.rs` | the IRQL routines (ntoskrnl imports), wdm.h inline functions in Rust, pool and status helpers |
//! | `irql.rs` | IRQL probes |
//! | `pool.rs` | pool probes |
//! | `irp.rs` | IRP probes and the dispatch routine that commits them |
//! | `remove_lock.rs` | remove-lock probes |
//! | `dma.rs` | DMA adapter probes |
//! | `unload.rs` | what is left behind at removal and unload: interrupt, timer, DPC, device object |
//! | `objects.rs` | the object-reference probe |
//! | `allocate.rs` | `ProbeAllocate`: the allocations a low-resources mode fails, handled correctly |

mod allocate;
mod ddi;
mod dma;
mod driver;
mod irp;
mod irql;
mod objects;
mod pool;
mod remove_lock;
mod unload;

// The panic handler of the image (a panic is a bugcheck: KeBugCheckEx).
use wdk_panic as _;

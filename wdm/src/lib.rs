//! What wdm.h defines as `FORCEINLINE` functions or macros for a driver's
//! IRP stack locations, written in Rust with the semantics of the x64
//! definitions (bindgen produces nothing for them): the one copy the
//! capdma images' Windows glue (`capdma_bus.sys`, `capdma_avstream.sys`,
//! the test-only `capdma_probe.sys`) shares. None of them calls the kernel,
//! so none adds an import to an image.
//!
//! | DDI | here |
//! |---|---|
//! | `IoGetCurrentIrpStackLocation` | `irp::current_stack` |
//! | `IoGetNextIrpStackLocation` | `irp::next_stack` |
//! | `IoSkipCurrentIrpStackLocation` | `irp::skip_current_stack` |
//! | `IoCopyCurrentIrpStackLocationToNext` | `irp::copy_current_stack_to_next` |
//! | `IoMarkIrpPending` | `irp::mark_irp_pending` |
//!
//! Empty on targets other than Windows.
#![no_std]

#[cfg(target_os = "windows")]
pub mod irp;

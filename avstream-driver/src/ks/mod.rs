//! The KS glue of `capdma_avstream.sys` (Windows targets only).
//!
//! It hands every kernel-streaming callback to the portable core and acts on
//! its answers; every decision it needs (formats, pin flags, framing,
//! restart compatibility, stream-header flags) is a tested core function.
//!
//! | file | concern |
//! |---|---|
//! | `bindings.rs` | the crate's own `ks.h`/`ksmedia.h` bindings (bindgen at build time) and their layout asserts |
//! | `descriptors.rs` | device, filter and pin descriptors, data ranges, automation table |
//! | `device.rs` | `KSDEVICE_DISPATCH`: Add, Start (bus interface, adapter, filter factory), Stop, `SurpriseRemoval`, Remove |
//! | `pin.rs` | `KSPIN_DISPATCH`, the intersect handler, the dropped-frames property |
//! | `port.rs` | the core's `KsPinPort` over `PKSPIN`/`PKSSTREAM_POINTER` |
//! | `ddi.rs` | wdm.h inline functions in Rust, pool helpers |
//!
//! See `docs/ddi.md` (AVStream section) for every DDI called here, what the
//! simulated machine models of it, and which test covers it.

mod bindings;
mod ddi;
mod descriptors;
mod device;
mod pin;
mod port;

// The panic handler of the image (a panic is a bugcheck: KeBugCheckEx).
use wdk_panic as _;

use wdk_sys::{NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT};

/// `DriverEntry`: `KsInitializeDriver(DriverObject, RegistryPath,
/// &DeviceDescriptor)`: AVStream takes over the driver object's dispatch
/// and calls the device dispatch (`device.rs`) for each channel's device.
///
/// # Safety
/// Called once by the I/O manager with its driver object and registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: the I/O manager passes a live driver object and registry path
    // (KS only reads the path); the device descriptor is a static.
    unsafe {
        bindings::KsInitializeDriver(driver, registry_path.cast_mut(), &raw const descriptors::DEVICE_DESCRIPTOR.0)
    }
}

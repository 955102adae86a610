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
//! | `adapter.rs` | the DMA adapter registered through `IKsDeviceFunctions::RegisterAdapterObjectEx` |
//! | `device.rs` | `KSDEVICE_DISPATCH`: Add, Start (bus interface, adapter, filter factory), Stop, `SurpriseRemoval`, Remove |
//! | `pin.rs` | `KSPIN_DISPATCH`, the intersect handler, the dropped-frames property |
//! | `clock.rs` | the pin's `IKsReferenceClock` (`KsPinGetReferenceClockInterface`, `GetCorrelatedTime`) |
//! | `port.rs` | the core's `KsPinPort` over `PKSPIN`/`PKSSTREAM_POINTER` |
//! | `ddi.rs` | wdm.h inline functions in Rust, pool helpers |
//! | `trace.rs` | ETW `TraceLogging`: the `Capdma.AVStream` provider and its events (docs/tracing.md) |
//!
//! See `docs/ddi.md` (AVStream section) for every DDI called here, what the
//! simulated machine models of it, and which test covers it.

mod adapter;
mod bindings;
mod clock;
mod ddi;
mod descriptors;
mod device;
mod pin;
mod port;
pub mod trace;

// The panic handler of the image (a panic is a bugcheck: KeBugCheckEx).
use wdk_panic as _;

use wdk_sys::{NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, PDRIVER_UNLOAD};

/// The unload routine `KsInitializeDriver` installed, called by
/// [`driver_unload`] after the ETW provider is unregistered.
static KS_UNLOAD: spin::Mutex<PDRIVER_UNLOAD> = spin::Mutex::new(None);

/// `DriverEntry`: registers the ETW provider (`trace`, `Capdma.AVStream`),
/// then `KsInitializeDriver(DriverObject, RegistryPath,
/// &DeviceDescriptor)`: AVStream takes over the driver object's dispatch
/// and calls the device dispatch (`device.rs`) for each channel's device.
/// On success writes `DriverLoad` and puts [`driver_unload`] in front of
/// the unload routine KS installed; on failure unregisters the provider
/// and returns KS's status.
///
/// # Safety
/// Called once by the I/O manager with its driver object and registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // A failed registration only means no events; the driver works on.
    let _ = trace::register();
    // SAFETY: the I/O manager passes a live driver object and registry path
    // (KS only reads the path); the device descriptor is a static.
    let status = unsafe {
        bindings::KsInitializeDriver(driver, registry_path.cast_mut(), &raw const descriptors::DEVICE_DESCRIPTOR.0)
    };
    if !ddi::nt_success(status) {
        trace::failure(trace::Area::Driver, "KsInitializeDriver", status);
        trace::unregister();
        return status;
    }
    // SAFETY: the live driver object, ours during DriverEntry.
    if let Some(driver) = unsafe { driver.as_mut() } {
        *KS_UNLOAD.lock() = driver.DriverUnload;
        driver.DriverUnload = Some(driver_unload);
    }
    trace::driver_load();
    status
}

/// The driver's unload routine: writes `DriverUnload`, unregisters the ETW
/// provider, then calls the routine `KsInitializeDriver` installed.
///
/// # Safety
/// Called once by the I/O manager, at PASSIVE, with the driver object.
unsafe extern "C" fn driver_unload(driver: PDRIVER_OBJECT) {
    trace::driver_unload();
    trace::unregister();
    let ks_unload = *KS_UNLOAD.lock();
    if let Some(ks_unload) = ks_unload {
        // SAFETY: KS's own unload routine, with the driver object it was installed in.
        unsafe { ks_unload(driver) };
    }
}

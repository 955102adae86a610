//! The object-reference probe.
use super::driver::fdo;
use capdma_interface::status::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use wdk_sys::ntddk::{ObfDereferenceObject, ObfReferenceObject};
use wdk_sys::{NTSTATUS, PDEVICE_OBJECT};

/// **Breaks: object references balanced.** `ObReferenceObject(device)`
/// once, `ObDereferenceObject(device)` twice: the FDO loses a reference it
/// was never given (its creation's own).
///
/// Windows: bug check 0x18 (`REFERENCE_BY_POINTER`), parameter 2 the object;
/// Driver Verifier: 0xC4, 0x3F when the count reaches zero.
///
/// Returns `STATUS_SUCCESS`, or `STATUS_INVALID_PARAMETER` when `device` is
/// not the probe's FDO.
///
/// # Safety
/// `device` is the probe's FDO; `<= DISPATCH_LEVEL`. The FDO may be gone
/// afterwards, as far as the kernel is concerned.
#[unsafe(export_name = "ProbeDereferenceTooOften")]
pub unsafe extern "system" fn probe_dereference_too_often(device: PDEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the caller passes a valid device object.
    if unsafe { fdo(device) }.is_none() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a valid object; the reference is taken here.
    unsafe { ObfReferenceObject(device.cast()) };
    // SAFETY: gives back the reference taken above.
    unsafe { ObfDereferenceObject(device.cast()) };
    // SAFETY: NOT SAFE, on purpose: a reference this driver does not hold
    // (the mistake the kernel must report).
    unsafe { ObfDereferenceObject(device.cast()) };
    STATUS_SUCCESS
}

//! Reads the start parameters from the device's hardware key
//! (`IoOpenDeviceRegistryKey(PLUGPLAY_REGKEY_DEVICE)` = `…\Device
//! Parameters`, `ZwQueryValueKey(KeyValuePartialInformation)`, `ZwClose`);
//! which values and how they decode is [`crate::pnp::registry`].
use crate::config::RegistryValues;
use crate::pnp::registry::{
    partial_information_dword, MAX_VALUE_NAME_UNITS, PARTIAL_INFORMATION_DWORD_BYTES, REGISTRY_VALUES,
};
use core::ptr::null_mut;
use wdk_sys::ntddk::{IoOpenDeviceRegistryKey, ZwClose, ZwQueryValueKey};
use wdk_sys::{
    _KEY_VALUE_INFORMATION_CLASS, HANDLE, KEY_READ, NT_SUCCESS, PDEVICE_OBJECT, PLUGPLAY_REGKEY_DEVICE, ULONG,
    UNICODE_STRING, USHORT,
};

/// A `KEY_VALUE_PARTIAL_INFORMATION` buffer for one `REG_DWORD` (with room
/// to spare), aligned as the structure.
#[repr(C, align(8))]
struct PartialInformation([u8; 32]);

const _: () = assert!(size_of::<PartialInformation>() >= PARTIAL_INFORMATION_DWORD_BYTES);

/// The start parameters of the device whose PDO is `pdo`; absent values
/// (or an absent key) are `None`. `PASSIVE_LEVEL`.
///
/// # Safety
/// `pdo` is the PCI PDO of this device's stack.
pub unsafe fn read_start_values(pdo: PDEVICE_OBJECT) -> RegistryValues {
    let mut values = RegistryValues::default();
    let mut key: HANDLE = null_mut();
    // SAFETY: a valid PDO, PASSIVE_LEVEL, a valid out-handle.
    let status = unsafe { IoOpenDeviceRegistryKey(pdo, PLUGPLAY_REGKEY_DEVICE, KEY_READ, &raw mut key) };
    if !NT_SUCCESS(status) {
        wdk::println!("capdma_bus: no Device Parameters key ({status:#x}): defaults");
        return values;
    }
    for value in REGISTRY_VALUES {
        let mut name_units = [0u16; MAX_VALUE_NAME_UNITS];
        let Some(units) = value.name_utf16(&mut name_units) else {
            continue;
        };
        let Some(bytes) = units.checked_mul(2).and_then(|b| USHORT::try_from(b).ok()) else {
            continue;
        };
        let mut name = UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: name_units.as_mut_ptr() };
        let mut answer = PartialInformation([0; 32]);
        let mut returned: ULONG = 0;
        // SAFETY: an open key handle; `name` describes a live buffer; the
        // answer buffer is as long as stated and aligned for the structure.
        let status = unsafe {
            ZwQueryValueKey(
                key,
                &raw mut name,
                _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation,
                answer.0.as_mut_ptr().cast(),
                ULONG::try_from(answer.0.len()).unwrap_or(0),
                &raw mut returned,
            )
        };
        let read = if NT_SUCCESS(status) {
            partial_information_dword(&answer.0, usize::try_from(returned).unwrap_or(0))
        } else {
            None
        };
        value.store(&mut values, read);
    }
    // SAFETY: the handle IoOpenDeviceRegistryKey opened, closed once.
    let _ = unsafe { ZwClose(key) };
    values
}

//! A small registry: the values under each PDO's hardware key (`Device
//! Parameters`), set by a test or the PnP manager's caller, read by the
//! driver through `IoOpenDeviceRegistryKey`, `ZwQueryValueKey` and
//! `ZwClose`.

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::{key_value, status};
use super::super::Nt;
use super::device::read_unicode_string;
use super::{low32, ret};

/// A registry value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegValue {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
    /// `REG_SZ` (stored NUL-terminated, UTF-16LE).
    String(String),
}

impl RegValue {
    /// `REG_*` type and the data bytes.
    #[must_use]
    pub fn encode(&self) -> (u32, Vec<u8>) {
        match self {
            Self::Dword(v) => (key_value::REG_DWORD, v.to_le_bytes().to_vec()),
            Self::Binary(b) => (key_value::REG_BINARY, b.clone()),
            Self::String(s) => {
                (key_value::REG_SZ, s.encode_utf16().chain(std::iter::once(0)).flat_map(u16::to_le_bytes).collect())
            }
        }
    }
}

/// An open key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenKey {
    /// The PDO whose key it is.
    pub pdo: u64,
    /// `symbol+offset` of who opened it.
    pub opened_by: String,
}

/// `NTSTATUS IoOpenDeviceRegistryKey(PDEVICE_OBJECT DeviceObject, ULONG
/// DevInstKeyType, ACCESS_MASK DesiredAccess, PHANDLE DeviceRegKey)`
/// ("IoOpenDeviceRegistryKey function (wdm.h)"): a kernel handle to the
/// device's hardware (`PLUGPLAY_REGKEY_DEVICE`) or software
/// (`PLUGPLAY_REGKEY_DRIVER`) key; `DeviceObject` must be a PDO
/// (`STATUS_INVALID_DEVICE_REQUEST` otherwise; an FDO is also bug check
/// 0xCA, parameter 2, as Windows reports "an API which requires a PDO").
/// Another key type: `STATUS_INVALID_PARAMETER`. `PASSIVE_LEVEL`.
pub(crate) fn io_open_device_registry_key(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, kind, _access, out] = m.args::<4>()?;
    let record = nt.io.devices.get(&device).cloned();
    nt.verifier.checks += 1;
    let Some(record) = record.filter(|d| !d.deleted && d.lower.is_none()) else {
        nt.violation(
            m,
            "REGISTRY_KEY_NOT_PDO",
            0xCA,
            Some(0x2),
            format!("IoOpenDeviceRegistryKey({device:#x}): not a PDO"),
        );
        return Ok(ret(status::INVALID_DEVICE_REQUEST));
    };
    let _ = record;
    let kind = low32(kind);
    if kind != key_value::PLUGPLAY_REGKEY_DEVICE && kind != key_value::PLUGPLAY_REGKEY_DRIVER {
        return Ok(ret(status::INVALID_PARAMETER));
    }
    nt.io.handles_made += 1;
    // Kernel handles have the top bit set.
    let handle = 0xFFFF_FFFF_8000_0000 | (nt.io.handles_made * 4);
    let opened_by = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    // The software key holds nothing here; the hardware key holds the PDO's values.
    let pdo = if kind == key_value::PLUGPLAY_REGKEY_DEVICE { device } else { 0 };
    nt.io.handles.insert(handle, OpenKey { pdo, opened_by });
    m.write_u64(out, handle)?;
    Ok(ret(status::SUCCESS))
}

/// Bug check 0x93 `INVALID_KERNEL_HANDLE` for a handle that is not open.
fn bad_handle(nt: &mut Nt, m: &mut Machine, handle: u64, ddi: &str) -> Stop {
    nt.fatal(
        m,
        "INVALID_KERNEL_HANDLE",
        0x93,
        [handle, 0, 0, 0],
        "INVALID_KERNEL_HANDLE",
        format!("{ddi}({handle:#x}): not an open handle"),
    )
}

/// `NTSTATUS ZwQueryValueKey(HANDLE KeyHandle, PUNICODE_STRING ValueName,
/// KEY_VALUE_INFORMATION_CLASS KeyValueInformationClass, PVOID
/// KeyValueInformation, ULONG Length, PULONG ResultLength)`
/// ("ZwQueryValueKey function (wdm.h)"), for `KeyValuePartialInformation`:
/// `STATUS_OBJECT_NAME_NOT_FOUND` for a value that is not there;
/// `STATUS_BUFFER_TOO_SMALL` when not even the fixed part fits,
/// `STATUS_BUFFER_OVERFLOW` (fixed part written) when the data does not;
/// `*ResultLength` is the size needed. Other classes:
/// `STATUS_INVALID_PARAMETER` (not modelled). A handle that is not open is
/// bug check 0x93. `PASSIVE_LEVEL`.
pub(crate) fn zw_query_value_key(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [handle, name, class, buffer, length, result_length] = m.args::<6>()?;
    let Some(key) = nt.io.handles.get(&handle).cloned() else {
        return Err(bad_handle(nt, m, handle, "ZwQueryValueKey"));
    };
    if low32(class) != key_value::PARTIAL_INFORMATION {
        return Ok(ret(status::INVALID_PARAMETER));
    }
    let name = read_unicode_string(m, name)?.unwrap_or_default().to_ascii_lowercase();
    let Some(value) = nt.io.registry.get(&key.pdo).and_then(|values| values.get(&name)).cloned() else {
        return Ok(ret(status::OBJECT_NAME_NOT_FOUND));
    };
    let (kind, data) = value.encode();
    let length = u64::from(low32(length));
    let needed = key_value::DATA + data.len() as u64;
    if result_length != 0 {
        m.write_u32(result_length, u32::try_from(needed).unwrap_or(u32::MAX))?;
    }
    if length < key_value::DATA {
        return Ok(ret(status::BUFFER_TOO_SMALL));
    }
    m.write_u32(buffer + key_value::TITLE_INDEX, 0)?;
    m.write_u32(buffer + key_value::TYPE, kind)?;
    m.write_u32(buffer + key_value::DATA_LENGTH, u32::try_from(data.len()).unwrap_or(u32::MAX))?;
    if length < needed {
        return Ok(ret(status::BUFFER_OVERFLOW));
    }
    m.write(buffer + key_value::DATA, &data)?;
    Ok(ret(status::SUCCESS))
}

/// `NTSTATUS ZwClose(HANDLE Handle)` ("ZwClose function (wdm.h)"): closes
/// an open handle; a handle that is not open is bug check 0x93
/// `INVALID_KERNEL_HANDLE` (Windows raises it for kernel-mode callers).
/// `PASSIVE_LEVEL`.
pub(crate) fn zw_close(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let handle = m.arg(0)?;
    nt.verifier.checks += 1;
    if nt.io.handles.remove(&handle).is_none() {
        return Err(bad_handle(nt, m, handle, "ZwClose"));
    }
    Ok(ret(status::SUCCESS))
}

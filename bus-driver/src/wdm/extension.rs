//! Which kind of device object an IRP arrived at: the FDO (attached to the
//! PCI PDO) or one of the child PDOs this driver enumerates. Both device
//! extensions start with an [`ExtensionHeader`].
use super::fdo::FdoExtension;
use super::pdo::PdoExtension;
use wdk_sys::PDEVICE_OBJECT;

/// The kind tag at the start of every device extension of this driver.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// `'CDFo'`: the function device object over the PCI PDO.
    Fdo = u32::from_le_bytes(*b"CDFo"),
    /// `'CDPd'`: a child PDO (one per channel).
    Pdo = u32::from_le_bytes(*b"CDPd"),
}

/// The first member of both device extensions.
#[repr(C)]
pub struct ExtensionHeader {
    /// The raw kind tag ([`DeviceKind`] as `u32`).
    pub kind: u32,
}

impl ExtensionHeader {
    /// A header of `kind`.
    pub const fn new(kind: DeviceKind) -> Self {
        Self { kind: kind as u32 }
    }
}

/// A device object's extension, by kind.
pub enum Extension<'a> {
    /// The FDO.
    Fdo(&'a FdoExtension),
    /// A child PDO.
    Pdo(&'a PdoExtension),
}

/// The extension of `device` (`DeviceObject->DeviceExtension`), by its
/// header; `None` for a null device or an extension this driver did not
/// initialize.
///
/// # Safety
/// `device` is null or a device object created by this driver (every
/// dispatch routine receives one), whose extension was initialized by
/// `AddDevice` or the child creation and is not yet freed.
pub unsafe fn extension<'a>(device: PDEVICE_OBJECT) -> Option<Extension<'a>> {
    if device.is_null() {
        return None;
    }
    // SAFETY: a valid device object of this driver (caller's guarantee).
    let raw = unsafe { (*device).DeviceExtension };
    if raw.is_null() {
        return None;
    }
    // SAFETY: both extensions are #[repr(C)] and start with the header.
    let kind = unsafe { (*raw.cast::<ExtensionHeader>()).kind };
    if kind == DeviceKind::Fdo as u32 {
        // SAFETY: the header says this is an initialized FdoExtension.
        Some(Extension::Fdo(unsafe { &*raw.cast::<FdoExtension>() }))
    } else if kind == DeviceKind::Pdo as u32 {
        // SAFETY: the header says this is an initialized PdoExtension.
        Some(Extension::Pdo(unsafe { &*raw.cast::<PdoExtension>() }))
    } else {
        None
    }
}

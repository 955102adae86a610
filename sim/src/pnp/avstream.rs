//! The AVStream device on a child PDO (`capdma_avstream.sys` under KS), as
//! Plug and Play sees it: whether a pin is open, and the bus interface it
//! holds from its start until its own `IRP_MN_REMOVE_DEVICE`.
//!
//! * `IRP_MN_QUERY_REMOVE_DEVICE`: a device with an open file object (a
//!   filter or pin handle) cannot be removed — on Windows the PnP manager's
//!   outstanding-open check vetoes it (the real driver registers no
//!   `QueryRemove` handler); the model answers that veto here, at the child,
//!   with `STATUS_DEVICE_BUSY`. Otherwise the IRP goes down to the bus's
//!   child PDO.
//! * `IRP_MN_REMOVE_DEVICE`: the device drops its interface reference
//!   (`InterfaceDereference`) and passes the IRP down — unless it was made
//!   [`AvStreamDevice::keep_interface_past_remove`] (a deliberately buggy
//!   child, for the fault matrix), which keeps it.
use std::cell::{Cell, RefCell};

use capdma_avstream::bus_client::BusClient;
use capdma_interface::status::NtStatus;

/// One child's AVStream device (shared by the device tree and the machine).
#[derive(Debug)]
pub struct AvStreamDevice {
    name: String,
    pin_open: Cell<bool>,
    interface: RefCell<Option<BusClient>>,
    keeps_interface: Cell<bool>,
}

impl AvStreamDevice {
    /// A device not started: no pin, no interface.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), pin_open: Cell::new(false), interface: RefCell::new(None), keeps_interface: Cell::new(false) }
    }

    /// The device's name (for messages).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The application opened (`true`) or closed (`false`) the capture pin.
    pub fn set_pin_open(&self, open: bool) {
        self.pin_open.set(open);
    }

    /// Whether a pin is open (the removal is vetoed then).
    #[must_use]
    pub fn pin_open(&self) -> bool {
        self.pin_open.get()
    }

    /// The device start got the bus interface (the reference is now the device's).
    pub fn hold_interface(&self, client: BusClient) {
        if let Some(old) = self.interface.replace(Some(client)) {
            // SAFETY: a device holds one interface; a second start without a
            // removal replaces it, and the old reference is dropped once.
            unsafe { old.release() };
        }
    }

    /// Whether the device holds the bus interface.
    #[must_use]
    pub fn holds_interface(&self) -> bool {
        self.interface.borrow().is_some()
    }

    /// Makes this device keep its interface reference past its own
    /// `IRP_MN_REMOVE_DEVICE` (a child bug the bus must survive).
    pub fn keep_interface_past_remove(&self, keep: bool) {
        self.keeps_interface.set(keep);
    }

    /// `InterfaceDereference` now, if the device holds the interface (a
    /// failed start, or a buggy device letting go late). `true` if it did.
    #[allow(clippy::must_use_candidate, reason = "releasing is the effect")]
    pub fn release_interface(&self) -> bool {
        match self.interface.borrow_mut().take() {
            Some(client) => {
                // SAFETY: the pin is gone (the machine drops pins before their
                // device lets go) and the reference is dropped once, here.
                unsafe { client.release() };
                true
            }
            None => false,
        }
    }

    /// `IRP_MN_QUERY_REMOVE_DEVICE` at this device: `Err(STATUS_DEVICE_BUSY)`
    /// while a pin is open.
    pub(crate) fn query_remove(&self) -> Result<(), NtStatus> {
        if self.pin_open.get() {
            Err(capdma_interface::status::STATUS_DEVICE_BUSY)
        } else {
            Ok(())
        }
    }

    /// `IRP_MN_REMOVE_DEVICE` at this device: the interface is released
    /// (unless the device was made to keep it).
    pub(crate) fn remove(&self) {
        self.pin_open.set(false);
        if !self.keeps_interface.get() {
            let _ = self.release_interface();
        }
    }

    /// A call through the interface the device still holds (the buggy
    /// device's late use after the bus's removal): `GetDmaConfig`'s status,
    /// `None` without an interface.
    #[must_use]
    pub fn late_interface_call(&self) -> Option<NtStatus> {
        let interface = self.interface.borrow();
        let client = interface.as_ref()?;
        Some(client.channel().get_dma_config().err().unwrap_or(capdma_interface::status::STATUS_SUCCESS))
    }
}

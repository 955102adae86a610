//! I/O manager: device objects and stacks, object references, device
//! properties (`IoGetDeviceProperty`), IRPs (`IofCallDriver`,
//! `IofCompleteRequest` with completion routines,
//! `IoBuildSynchronousFsdRequest`), events and waits, remove locks, a small
//! registry, and the power manager's `PoCallDriver` / `PoRequestPowerIrp` /
//! `PoSetPowerState`; `IoInvalidateDeviceRelations` is queued for the Plug
//! and Play manager ([`super::pnp`]).
//!
//! Everything the images see lives in guest memory with the real layouts
//! ([`super::layout::irp`]); the host keeps a record of each object to
//! check what Driver Verifier's I/O verification checks (bug checks 0x44,
//! 0xC9 with the "WDM DRIVER ERROR" codes, 0x18, 0x35, 0x93) and to list
//! leaks at the end of a run ([`IoState::leaks`]).
//!
//! One concern per file: [`device`] (device objects, attachment, object
//! references, device properties), [`irp`] (IRPs and their checks),
//! [`sync`] (events, waits and remove locks), [`registry`] (`IoOpenDeviceRegistryKey`,
//! `ZwQueryValueKey`, `ZwClose`), [`power`] (`Po*`).

pub mod device;
pub mod irp;
pub mod power;
pub mod registry;
pub mod sync;

use std::collections::BTreeMap;

use capdma_winvm::{Machine, Stop};

use super::verifier::Finding;
use super::{Ddi, Module, Nt, DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "IoCreateDevice", max_irql: PASSIVE_LEVEL, run: device::io_create_device },
    Ddi { module: Module::Ntoskrnl, name: "IoDeleteDevice", max_irql: PASSIVE_LEVEL, run: device::io_delete_device },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoAttachDeviceToDeviceStack",
        max_irql: PASSIVE_LEVEL,
        run: device::io_attach_device_to_device_stack,
    },
    Ddi { module: Module::Ntoskrnl, name: "IoDetachDevice", max_irql: PASSIVE_LEVEL, run: device::io_detach_device },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoGetAttachedDeviceReference",
        max_irql: DISPATCH_LEVEL,
        run: device::io_get_attached_device_reference,
    },
    Ddi { module: Module::Ntoskrnl, name: "ObfReferenceObject", max_irql: DISPATCH_LEVEL, run: device::obf_reference_object },
    Ddi {
        module: Module::Ntoskrnl,
        name: "ObfDereferenceObject",
        max_irql: DISPATCH_LEVEL,
        run: device::obf_dereference_object,
    },
    Ddi { module: Module::Ntoskrnl, name: "IoGetDeviceProperty", max_irql: PASSIVE_LEVEL, run: device::io_get_device_property },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoInvalidateDeviceRelations",
        max_irql: DISPATCH_LEVEL,
        run: device::io_invalidate_device_relations,
    },
    // IofCallDriver and IofCompleteRequest check their IRQL themselves, with
    // the I/O verification codes (0xC9 0x10 and 0x0E).
    Ddi { module: Module::Ntoskrnl, name: "IofCallDriver", max_irql: HIGH_LEVEL, run: irp::iof_call_driver },
    Ddi { module: Module::Ntoskrnl, name: "IofCompleteRequest", max_irql: HIGH_LEVEL, run: irp::iof_complete_request },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoBuildSynchronousFsdRequest",
        max_irql: PASSIVE_LEVEL,
        run: irp::io_build_synchronous_fsd_request,
    },
    Ddi { module: Module::Ntoskrnl, name: "PoCallDriver", max_irql: DISPATCH_LEVEL, run: power::po_call_driver },
    Ddi { module: Module::Ntoskrnl, name: "PoRequestPowerIrp", max_irql: DISPATCH_LEVEL, run: power::po_request_power_irp },
    Ddi { module: Module::Ntoskrnl, name: "PoSetPowerState", max_irql: DISPATCH_LEVEL, run: power::po_set_power_state },
    Ddi { module: Module::Ntoskrnl, name: "KeInitializeEvent", max_irql: HIGH_LEVEL, run: sync::ke_initialize_event },
    Ddi { module: Module::Ntoskrnl, name: "KeSetEvent", max_irql: DISPATCH_LEVEL, run: sync::ke_set_event },
    Ddi {
        module: Module::Ntoskrnl,
        name: "KeWaitForSingleObject",
        max_irql: DISPATCH_LEVEL,
        run: sync::ke_wait_for_single_object,
    },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoInitializeRemoveLockEx",
        max_irql: PASSIVE_LEVEL,
        run: sync::io_initialize_remove_lock_ex,
    },
    Ddi { module: Module::Ntoskrnl, name: "IoAcquireRemoveLockEx", max_irql: DISPATCH_LEVEL, run: sync::io_acquire_remove_lock_ex },
    Ddi { module: Module::Ntoskrnl, name: "IoReleaseRemoveLockEx", max_irql: DISPATCH_LEVEL, run: sync::io_release_remove_lock_ex },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoReleaseRemoveLockAndWaitEx",
        max_irql: PASSIVE_LEVEL,
        run: sync::io_release_remove_lock_and_wait_ex,
    },
    Ddi {
        module: Module::Ntoskrnl,
        name: "IoOpenDeviceRegistryKey",
        max_irql: PASSIVE_LEVEL,
        run: registry::io_open_device_registry_key,
    },
    Ddi { module: Module::Ntoskrnl, name: "ZwQueryValueKey", max_irql: PASSIVE_LEVEL, run: registry::zw_query_value_key },
    Ddi { module: Module::Ntoskrnl, name: "ZwClose", max_irql: PASSIVE_LEVEL, run: registry::zw_close },
];

/// This area's state in the emulated kernel.
#[derive(Debug, Default)]
pub struct IoState {
    /// IRPs an emulated bus driver answered with `STATUS_PENDING`, to be
    /// completed (with the status given) the next time pending work runs
    /// ([`complete_deferred`]): as a real bus driver may complete from its
    /// DPC or another thread, so the driver above must wait.
    pub deferred: Vec<(u64, u32)>,
    /// Whether the emulated PCI PDO answers `IRP_MN_START_DEVICE` with
    /// `STATUS_PENDING` and completes it later (exercising the function
    /// driver's forward-and-wait path), or completes it at once.
    pub pend_pci_start: bool,
    /// Device objects by address (deleted ones stay until their memory is freed).
    pub devices: BTreeMap<u64, device::DeviceRecord>,
    /// References drivers took on objects that are not device objects
    /// (`ObfReferenceObject` on anything else), by address.
    pub other_references: BTreeMap<u64, i64>,
    /// IRPs in flight, by address.
    pub irps: BTreeMap<u64, irp::IrpRecord>,
    /// IRPs completed and freed (their memory is unmapped), with their final `IoStatus`.
    pub completed: BTreeMap<u64, irp::IrpResult>,
    /// IRPs made so far (for the low-resources simulation).
    pub irps_made: u64,
    /// Low resources simulation: `IoBuildSynchronousFsdRequest` /
    /// `PoRequestPowerIrp` fail the IRP with this 0-based index.
    pub fail_irp_at: Option<u64>,
    /// Low resources simulation: `IoCreateDevice` fails the call with this
    /// 0-based index (`STATUS_INSUFFICIENT_RESOURCES`).
    pub fail_create_device_at: Option<u64>,
    /// `IoCreateDevice` calls so far.
    pub devices_made: u64,
    /// Remove locks by address.
    pub remove_locks: BTreeMap<u64, sync::RemoveLockRecord>,
    /// The registry: values under each PDO's `Device Parameters` key.
    pub registry: BTreeMap<u64, BTreeMap<String, registry::RegValue>>,
    /// Open registry handles: handle → PDO.
    pub handles: BTreeMap<u64, registry::OpenKey>,
    /// Handles ever handed out (to make the next one).
    pub handles_made: u64,
    /// `IoInvalidateDeviceRelations` calls not yet served by the PnP manager: (PDO, relation type).
    pub invalidated: Vec<(u64, u32)>,
    /// `PoSetPowerState` calls: (device, type, state), in order.
    pub power_states: Vec<(u64, u32, u32)>,
    /// Device power states (`PoSetPowerState(DevicePowerState)`), by device.
    pub device_power: BTreeMap<u64, u32>,
    /// Imports bound to [`unimplemented_stub`]s, by stub context.
    pub unimplemented: Vec<String>,
    /// Host routines a test puts in place of imports bound to
    /// [`unimplemented_stub`]s, by symbol (stand-ins for DDIs another part
    /// of the emulated kernel will implement; the test says what they do).
    pub stand_ins: BTreeMap<String, super::HostFn>,
    /// References taken through `INTERFACE.InterfaceReference` of the
    /// interfaces the host's bus drivers hand out, by interface context.
    pub interface_references: BTreeMap<u64, i64>,
}

impl IoState {
    /// Values of a PDO's `Device Parameters` key (what `IoOpenDeviceRegistryKey(PLUGPLAY_REGKEY_DEVICE)` opens).
    pub fn set_device_value(&mut self, pdo: u64, name: &str, value: registry::RegValue) {
        self.registry.entry(pdo).or_default().insert(name.to_ascii_lowercase(), value);
    }

    /// What is left that a driver should have cleaned up: device objects
    /// not deleted, references not dropped, remove locks not released,
    /// registry handles not closed, IRPs not completed. Empty at the end
    /// of a clean run.
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (va, d) in &self.devices {
            if !d.deleted {
                out.push(format!("device object {va:#x} ({}) created by {} not deleted", d.describe(), d.created_by));
            } else if d.references != 0 {
                out.push(format!("device object {va:#x} ({}) deleted with {} reference(s) still held", d.describe(), d.references));
            }
        }
        for (va, n) in &self.other_references {
            if *n != 0 {
                out.push(format!("object {va:#x}: {n} reference(s) not dropped"));
            }
        }
        for (va, lock) in &self.remove_locks {
            if !(lock.removed && lock.held.is_empty()) {
                out.push(format!(
                    "remove lock {va:#x}: {} acquisition(s) held ({}), {}",
                    lock.held.values().sum::<u64>(),
                    lock.held.keys().map(|t| format!("{t:#x}")).collect::<Vec<_>>().join(", "),
                    if lock.removed { "released and waited" } else { "never released and waited (IRP_MN_REMOVE_DEVICE)" }
                ));
            }
        }
        for (context, n) in &self.interface_references {
            if *n != 0 {
                out.push(format!("interface {context:#x}: {n} reference(s) not dereferenced"));
            }
        }
        for (handle, key) in &self.handles {
            out.push(format!("registry handle {handle:#x} (PDO {:#x}) opened by {} not closed", key.pdo, key.opened_by));
        }
        for (va, irp) in &self.irps {
            out.push(format!("IRP {va:#x} (major {:#x}) made by {} never completed", irp.major, irp.created_by));
        }
        out
    }
}

/// Completes the IRPs in [`IoState::deferred`] at `DISPATCH_LEVEL`, as a
/// bus driver's DPC would (completion routines then run at that IRQL).
///
/// # Errors
/// A bugcheck or host failure from the completion routines.
pub fn complete_deferred(nt: &mut Nt, m: &mut Machine) -> Result<(), Stop> {
    while !nt.io.deferred.is_empty() {
        let (irp_va, status) = nt.io.deferred.remove(0);
        let old = nt.irql;
        nt.irql = old.max(DISPATCH_LEVEL);
        m.write_u32(irp_va + super::layout::irp::irp::STATUS, status)?;
        let result = irp::complete_request(nt, m, irp_va);
        nt.irql = old;
        result?;
    }
    Ok(())
}

impl Nt {
    /// Records a finding with bug check `code` and stops the machine as
    /// Windows would: returns the [`Stop`] to propagate.
    pub(crate) fn fatal(&mut self, m: &mut Machine, rule: &'static str, code: u32, parameters: [u64; 4], name: &str, detail: String) -> Stop {
        self.counted_violation(m, rule, code, Some(parameters[0]), detail);
        m.bugcheck_now(self, code, name, parameters)
    }

    /// Counts a check that passed or records `finding` — see [`super::verifier::Verifier::check`].
    pub(crate) fn io_check(&mut self, m: &Machine, ok: bool, rule: &'static str, code: u64, detail: impl FnOnce() -> String) -> bool {
        let caller = if ok { String::new() } else { m.caller().map_or_else(|_| "?".into(), |c| m.describe(c)) };
        self.verifier.check(ok, || Finding { rule, bugcheck: 0xC9, parameter1: Some(code), detail: detail(), caller })
    }
}

/// A stub for an import the emulated kernel does not implement: calling it
/// stops the run with [`Stop::Host`] naming it (for
/// [`super::system::System::load_driver_allowing_missing`]).
pub fn unimplemented_stub(nt: &mut Nt, m: &mut Machine, module: &str, symbol: &str) -> Option<u64> {
    let index = nt.io.unimplemented.len() as u64;
    nt.io.unimplemented.push(format!("{module}!{symbol}"));
    nt.host_function(m, symbol, unimplemented_called, index, HIGH_LEVEL).ok()
}

fn unimplemented_called(nt: &mut Nt, m: &mut Machine, index: u64) -> Result<u64, Stop> {
    let name = nt.io.unimplemented.get(usize::try_from(index).unwrap_or(usize::MAX)).cloned().unwrap_or_default();
    let symbol = name.rsplit('!').next().unwrap_or_default();
    if let Some(stand_in) = nt.io.stand_ins.get(symbol).copied() {
        return stand_in(nt, m, index);
    }
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    Err(Stop::Host(format!("{name} called by {caller}: not implemented in the emulated kernel yet")))
}

/// An NTSTATUS as the RAX of a DDI (the 32-bit pattern, zero-extended).
pub(crate) const fn ret(status: u32) -> u64 {
    status as u64
}

/// The low 32 bits of an argument.
pub(crate) const fn low32(value: u64) -> u32 {
    (value & 0xFFFF_FFFF) as u32
}

/// The low 8 bits of an argument.
pub(crate) const fn low8(value: u64) -> u8 {
    (value & 0xFF) as u8
}

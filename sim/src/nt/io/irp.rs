//! IRPs: made, sent down a stack, completed back up it, freed.
//!
//! An IRP is its own pages with the IRP and its stack locations placed at
//! the end of the last page, so that a stack location beyond the last one
//! runs into the guard page. When the completion has gone through every
//! stack location, the I/O manager copies `IoStatus` to the requester's
//! status block, signals its event, calls the power manager's callback
//! where there is one, and frees the IRP: its pages are unmapped, so a
//! driver touching it afterwards faults, as with Verifier's special pool.
//!
//! The host tracks, per stack location and per `IofCallDriver`, whether
//! the location was completed through and whether `SL_PENDING_RETURNED`
//! was set there, to check each dispatch routine's return value.

use std::collections::BTreeMap;

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::{io_status_block, irp, kevent, mj, mn, sl, stack, status};
use super::super::layout::{device_object, driver_object};
use super::super::{Nt, DISPATCH_LEVEL};
use super::{low32, low8, ret};

/// Who asked for an IRP, and what happens when it is completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrpOrigin {
    /// `IoBuildSynchronousFsdRequest`: `UserIosb` gets `IoStatus`, `UserEvent` is signalled.
    Synchronous,
    /// `PoRequestPowerIrp`: the callback is called with these.
    PowerRequest {
        /// `PREQUEST_POWER_COMPLETE CompletionFunction` (0: none).
        callback: u64,
        /// The `DeviceObject` given to `PoRequestPowerIrp`.
        device: u64,
        /// `IRP_MN_*`.
        minor: u8,
        /// `POWER_STATE`.
        state: u32,
        /// `Context`.
        context: u64,
    },
    /// The host (the PnP manager): it reads the result from [`super::IoState::completed`].
    Host,
}

/// What the host tracks of one stack location during an `IofCallDriver`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocationState {
    /// The completion went through this location.
    pub completed_through: bool,
    /// `SL_PENDING_RETURNED` was set in it when the completion went through.
    pub pending: bool,
    /// The dispatch routine returned `STATUS_PENDING` before the completion
    /// went through, without the location marked yet: a completion routine
    /// must mark it on the way up (checked then).
    pub returned_pending: bool,
}

/// One IRP in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrpRecord {
    /// `StackCount`.
    pub stack_count: u8,
    /// The major function it was made for.
    pub major: u8,
    /// First page of its pages, and how many.
    pub pages_va: u64,
    /// Pages.
    pub pages: u64,
    /// Who asked for it.
    pub origin: IrpOrigin,
    /// Per stack location (1-based index).
    pub locations: BTreeMap<u8, LocationState>,
    /// `IoStatus` (status, information) when a PDO got it, for an IRP
    /// it cannot understand (it must complete it untouched).
    pub untouched_at_pdo: Option<(u32, u64)>,
    /// `symbol+offset` of who made it.
    pub created_by: String,
}

/// An IRP's final `IoStatus` (and what the walk saw), kept after it is freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrpResult {
    /// `IoStatus.Status`.
    pub status: u32,
    /// `IoStatus.Information`.
    pub information: u64,
    /// Per stack location, as in [`IrpRecord::locations`].
    pub locations: BTreeMap<u8, LocationState>,
}

/// Address of stack location `index` (1-based) of the IRP at `irp_va`.
#[must_use]
pub const fn location_va(irp_va: u64, index: u8) -> u64 {
    irp_va + irp::SIZE + (index as u64).wrapping_sub(1).wrapping_mul(stack::SIZE)
}

/// Makes an IRP with `stack_count` stack locations, none current yet
/// (`CurrentLocation` = `stack_count + 1`), `IoStatus.Status` = `initial_status`,
/// the first location's major function set: `IoAllocateIrp` plus what
/// `IoBuildSynchronousFsdRequest` and the PnP manager set up.
///
/// # Errors
/// [`Stop::Host`] when the machine's frames are exhausted.
pub fn make_irp(
    nt: &mut Nt,
    m: &mut Machine,
    stack_count: u8,
    major: u8,
    initial_status: u32,
    origin: IrpOrigin,
    created_by: String,
) -> Result<u64, Stop> {
    let bytes = irp::SIZE + u64::from(stack_count) * stack::SIZE;
    let pages = bytes.div_ceil(4096);
    let pages_va = nt.alloc_kernel(m, pages * 4096)?;
    // At the end of the last page (8-byte aligned: both sizes are multiples of 8).
    let va = pages_va + pages * 4096 - bytes;
    m.write_u16(va + irp::TYPE, irp::IO_TYPE_IRP)?;
    m.write_u16(va + irp::SIZE_FIELD, u16::try_from(bytes).unwrap_or(u16::MAX))?;
    m.write_u8(va + irp::STACK_COUNT, stack_count)?;
    m.write_u8(va + irp::CURRENT_LOCATION, stack_count.wrapping_add(1))?;
    m.write_u64(va + irp::CURRENT_STACK_LOCATION, location_va(va, stack_count.wrapping_add(1)))?;
    m.write_u32(va + irp::STATUS, initial_status)?;
    // Tail.Overlay.Thread: the one thread of this machine (a non-NULL tag).
    m.write_u64(va + irp::THREAD, 0xFFFF_F800_0000_7000)?;
    if stack_count > 0 {
        m.write_u8(location_va(va, stack_count) + stack::MAJOR_FUNCTION, major)?;
    }
    nt.io.completed.remove(&va);
    nt.io.irps.insert(
        va,
        IrpRecord {
            stack_count,
            major,
            pages_va,
            pages,
            origin,
            locations: BTreeMap::new(),
            untouched_at_pdo: None,
            created_by,
        },
    );
    Ok(va)
}

/// Whether the low resources simulation fails the next IRP (and counts it).
pub(crate) fn irp_allocation_fails(nt: &mut Nt) -> bool {
    let index = nt.io.irps_made;
    nt.io.irps_made += 1;
    nt.io.fail_irp_at == Some(index)
}

/// `PIRP IoBuildSynchronousFsdRequest(ULONG MajorFunction, PDEVICE_OBJECT
/// DeviceObject, PVOID Buffer, ULONG Length, PLARGE_INTEGER StartingOffset,
/// PKEVENT Event, PIO_STATUS_BLOCK IoStatusBlock)`
/// ("IoBuildSynchronousFsdRequest function (wdm.h)"): an IRP with
/// `DeviceObject->StackSize` locations, the next one set up with the major
/// function, whose completion fills `IoStatusBlock`, signals `Event` and
/// frees the IRP. Supported here without a buffer (`IRP_MJ_PNP`,
/// `IRP_MJ_POWER`, `IRP_MJ_FLUSH_BUFFERS`, `IRP_MJ_SHUTDOWN`); a buffer, or
/// the low resources simulation, returns NULL (the documented failure).
/// `PASSIVE_LEVEL`.
pub(crate) fn io_build_synchronous_fsd_request(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [major, device, buffer, length, _offset, event, iosb] = m.args::<7>()?;
    let major = low8(major);
    if buffer != 0 || low32(length) != 0 || irp_allocation_fails(nt) {
        return Ok(0);
    }
    let stack_count = m.read_u8(device + device_object::STACK_SIZE)?;
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    let va = make_irp(nt, m, stack_count, major, status::SUCCESS, IrpOrigin::Synchronous, caller)?;
    m.write_u64(va + irp::USER_IOSB, iosb)?;
    m.write_u64(va + irp::USER_EVENT, event)?;
    Ok(va)
}

/// `NTSTATUS IofCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp)` (what
/// `IoCallDriver` compiles to; "IoCallDriver macro (wdm.h)").
pub(crate) fn iof_call_driver(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, irp_va] = m.args::<2>()?;
    call_driver(nt, m, device, irp_va, "IofCallDriver").map(ret)
}

/// Sends `irp_va` to `device`, as `IoCallDriver` does: moves to the next
/// stack location (bug check 0x35 `NO_MORE_IRP_STACK_LOCATIONS` when there
/// is none), stores the device in it, calls the driver's dispatch routine
/// for the location's major function, and checks what I/O verification
/// checks: `IRQL <= DISPATCH_LEVEL` (0xC9 0x10), a device object (0x204,
/// 0x04), an IRP (0x03), the stack pointer consistent (0x212), a new PnP
/// or power IRP starting as `STATUS_NOT_SUPPORTED` (0x20E, 0x20F), the
/// IRQL unchanged by the dispatch routine (0x05), `STATUS_PENDING`
/// returned exactly when the location was marked pending (0x23D, 0x23E),
/// an IRP passed down, completed or pending when the routine returns
/// (0x226), and after `IRP_MN_REMOVE_DEVICE` an FDO or filter detached
/// (0x21D) and deleted (0x21E). Returns the dispatch routine's status.
///
/// # Errors
/// A bugcheck (fatal Verifier finding, a fault in the driver) or host failure.
#[allow(clippy::too_many_lines, reason = "IoCallDriver's steps and checks, in order")]
pub fn call_driver(nt: &mut Nt, m: &mut Machine, device: u64, irp_va: u64, ddi: &str) -> Result<u32, Stop> {
    let irql = nt.irql;
    nt.io_check(m, irql <= DISPATCH_LEVEL, "IO_CALL_DRIVER_IRQL", 0x10, || format!("{ddi} at IRQL {irql}"));
    if device == 0 {
        return Err(nt.fatal(
            m,
            "IO_CALL_DRIVER_NULL_DEVICE",
            0xC9,
            [0x204, irp_va, 0, 0],
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{ddi}(NULL, {irp_va:#x})"),
        ));
    }
    let known_device = nt.io.devices.get(&device).cloned();
    let Some(record) = known_device.filter(|d| !d.deleted) else {
        return Err(nt.fatal(
            m,
            "IO_CALL_DRIVER_BAD_DEVICE",
            0xC9,
            [0x4, device, 0, 0],
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{ddi}({device:#x}, {irp_va:#x}): not a live device object"),
        ));
    };
    // Reading the IRP faults (0x50) when it was completed and freed.
    let kind = m.read_u16(irp_va + irp::TYPE)?;
    if kind != irp::IO_TYPE_IRP || !nt.io.irps.contains_key(&irp_va) {
        return Err(nt.fatal(
            m,
            "IO_CALL_DRIVER_NOT_AN_IRP",
            0xC9,
            [0x3, irp_va, 0, 0],
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{ddi}({device:#x}, {irp_va:#x}): not an IRP in flight (Type {kind})"),
        ));
    }
    let stack_count = m.read_u8(irp_va + irp::STACK_COUNT)?;
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    let pointer = m.read_u64(irp_va + irp::CURRENT_STACK_LOCATION)?;
    nt.io_check(m, pointer == location_va(irp_va, current), "IRP_STACK_TRASHED", 0x212, || {
        format!(
            "{ddi}: IRP {irp_va:#x} CurrentLocation {current} but CurrentStackLocation {pointer:#x} (expected {:#x})",
            location_va(irp_va, current)
        )
    });
    let index = current.wrapping_sub(1);
    if index == 0 || index > 0x80 {
        return Err(nt.fatal(
            m,
            "NO_MORE_IRP_STACK_LOCATIONS",
            0x35,
            [irp_va, 0, 0, 0],
            "NO_MORE_IRP_STACK_LOCATIONS",
            format!("{ddi}({device:#x}, {irp_va:#x}): the IRP has no stack location left for this device"),
        ));
    }
    if index > stack_count {
        return Err(nt.fatal(
            m,
            "IRP_STACK_LOCATION_OUT_OF_RANGE",
            0xC9,
            [0x212, irp_va, device, 0],
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{ddi}: IRP {irp_va:#x} sent with location {index} of {stack_count} (skipped past its own?)"),
        ));
    }
    let location = location_va(irp_va, index);
    m.write_u8(irp_va + irp::CURRENT_LOCATION, index)?;
    m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, location)?;
    m.write_u64(location + stack::DEVICE_OBJECT, device)?;
    let major = m.read_u8(location + stack::MAJOR_FUNCTION)?;
    let minor = m.read_u8(location + stack::MINOR_FUNCTION)?;
    let io_status = m.read_u32(irp_va + irp::STATUS)?;
    let first_send = index == stack_count;
    let origin_is_driver = nt.io.irps.get(&irp_va).is_some_and(|r| r.origin != IrpOrigin::Host);
    if first_send && origin_is_driver && major == mj::PNP {
        nt.io_check(m, io_status == status::NOT_SUPPORTED, "PNP_IRP_BAD_INITIAL_STATUS", 0x20E, || {
            format!("a new IRP_MJ_PNP (minor {minor:#x}) sent with IoStatus.Status {io_status:#x}, not STATUS_NOT_SUPPORTED")
        });
    }
    if first_send && origin_is_driver && major == mj::POWER {
        nt.io_check(m, io_status == status::NOT_SUPPORTED, "POWER_IRP_BAD_INITIAL_STATUS", 0x20F, || {
            format!("a new IRP_MJ_POWER (minor {minor:#x}) sent with IoStatus.Status {io_status:#x}, not STATUS_NOT_SUPPORTED")
        });
    }
    let is_pdo = record.lower.is_none();
    let information = m.read_u64(irp_va + irp::INFORMATION)?;
    if let Some(r) = nt.io.irps.get_mut(&irp_va) {
        r.locations.insert(index, LocationState::default());
        if is_pdo && major == mj::PNP && !mn::is_known_pnp(minor) {
            r.untouched_at_pdo = Some((io_status, information));
        }
    }
    if major > mj::MAXIMUM_FUNCTION {
        nt.io_check(m, false, "IRP_BAD_MAJOR_FUNCTION", 0x212, || format!("{ddi}: IRP {irp_va:#x} with major function {major:#x}"));
        return Ok(status::INVALID_DEVICE_REQUEST);
    }
    let dispatch = m.read_u64(record.driver_object + driver_object::MAJOR_FUNCTION + 8 * u64::from(major))?;
    if dispatch == 0 {
        nt.io_check(m, false, "NO_DISPATCH_ROUTINE", 0x21F, || {
            format!("{ddi}: the driver of {device:#x} has no dispatch routine for major function {major:#x}")
        });
        return Ok(status::INVALID_DEVICE_REQUEST);
    }
    let irql_before = nt.irql;
    let returned = low32(m.call(nt, dispatch, &[device, irp_va])?);
    let irql_after = nt.irql;
    let what = m.describe(dispatch);
    if irql_after != irql_before {
        nt.counted_violation(
            m,
            "DISPATCH_CHANGED_IRQL",
            0xC9,
            Some(0x5),
            format!("{what} (device {device:#x}) entered at IRQL {irql_before}, returned at {irql_after}"),
        );
    }
    let live = nt.io.irps.contains_key(&irp_va);
    let state = match nt.io.irps.get(&irp_va) {
        Some(r) => r.locations.get(&index).copied(),
        None => nt.io.completed.get(&irp_va).and_then(|r| r.locations.get(&index).copied()),
    };
    let (through, pending) = match state {
        Some(s) if s.completed_through => (true, s.pending),
        _ if live => (false, m.read_u8(location + stack::CONTROL)? & sl::PENDING_RETURNED != 0),
        _ => (true, false),
    };
    let forwarded = nt.io.irps.get(&irp_va).is_some_and(|r| r.locations.contains_key(&index.wrapping_sub(1)));
    if returned == status::PENDING && !through && !pending && forwarded {
        // `return IoCallDriver(lower, Irp)` with a completion routine that
        // marks the IRP pending on the way up: checked when it gets there.
        if let Some(s) = nt.io.irps.get_mut(&irp_va).and_then(|r| r.locations.get_mut(&index)) {
            s.returned_pending = true;
        }
    } else if returned == status::PENDING {
        nt.io_check(m, pending, "PENDING_NOT_MARKED", 0x23D, || {
            format!("{what} returned STATUS_PENDING for IRP {irp_va:#x} without IoMarkIrpPending")
        });
    } else {
        nt.io_check(m, !pending, "MARKED_PENDING_NOT_RETURNED", 0x23E, || {
            format!("{what} marked IRP {irp_va:#x} pending but returned {returned:#x}")
        });
        nt.io_check(m, through, "IRP_NOT_COMPLETED_OR_PASSED", 0x226, || {
            format!("{what} returned {returned:#x} without completing, passing down or pending IRP {irp_va:#x}")
        });
    }
    if major == mj::PNP && minor == mn::REMOVE_DEVICE && !is_pdo {
        let after = nt.io.devices.get(&device).cloned().unwrap_or_default();
        nt.io_check(m, after.lower.is_none(), "REMOVE_NOT_DETACHED", 0x21D, || {
            format!("{what}: device {device:#x} still attached below after IRP_MN_REMOVE_DEVICE")
        });
        nt.io_check(m, after.deleted, "REMOVE_NOT_DELETED", 0x21E, || {
            format!("{what}: device {device:#x} not deleted after IRP_MN_REMOVE_DEVICE")
        });
    }
    Ok(returned)
}

/// `VOID IofCompleteRequest(PIRP Irp, CCHAR PriorityBoost)` (what
/// `IoCompleteRequest` compiles to; "IoCompleteRequest macro (wdm.h)").
pub(crate) fn iof_complete_request(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let irp_va = m.arg(0)?;
    complete_request(nt, m, irp_va)?;
    Ok(0)
}

/// Completes `irp_va` as `IoCompleteRequest` does: walks up from the
/// current stack location, setting `PendingReturned` from each location's
/// `SL_PENDING_RETURNED`, calling each completion routine whose
/// `SL_INVOKE_ON_*` bit matches the status (or `Cancel`), at the
/// completer's IRQL, with the device of the location above it (NULL above
/// the top); a routine returning `STATUS_MORE_PROCESSING_REQUIRED` stops
/// the walk; where no routine runs, a pending return is propagated to the
/// location above. Past the top the IRP is finished ([`finish`]).
///
/// Checks: completed again after it was finished (bug check 0x44
/// `MULTIPLE_IRP_COMPLETE_REQUESTS`, parameter 1 the IRP), `IRQL <=
/// DISPATCH_LEVEL` (0xC9 0x0E), a final status that is `STATUS_PENDING` or
/// −1 (0xC9 0x06), a cancel routine still set (0x07), an IRP_MJ_PNP a
/// driver does not understand completed by an FDO or filter instead of
/// passed down (0x22D) or completed by the PDO with `IoStatus` changed
/// (0x213, 0x214), a completion routine that did not propagate a pending
/// return (0x228), and a completion routine that returned at another IRQL.
///
/// # Errors
/// A bugcheck (fatal finding, a fault in a completion routine) or host failure.
#[allow(clippy::too_many_lines, reason = "IoCompleteRequest's walk and checks, in order")]
pub fn complete_request(nt: &mut Nt, m: &mut Machine, irp_va: u64) -> Result<(), Stop> {
    if nt.io.completed.contains_key(&irp_va) {
        return Err(nt.fatal(
            m,
            "IRP_COMPLETED_TWICE",
            0x44,
            [irp_va, 0, 0, 0],
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IoCompleteRequest({irp_va:#x}): the IRP was already completed"),
        ));
    }
    if !nt.io.irps.contains_key(&irp_va) {
        return Err(nt.fatal(
            m,
            "COMPLETE_NOT_AN_IRP",
            0x44,
            [irp_va, 0, 0, 0],
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IoCompleteRequest({irp_va:#x}): not an IRP in flight"),
        ));
    }
    let irql = nt.irql;
    nt.io_check(m, irql <= DISPATCH_LEVEL, "COMPLETE_IRQL", 0x0E, || format!("IoCompleteRequest({irp_va:#x}) at IRQL {irql}"));
    let final_status = m.read_u32(irp_va + irp::STATUS)?;
    if final_status == status::PENDING || final_status == u32::MAX {
        return Err(nt.fatal(
            m,
            "COMPLETE_WITH_PENDING_STATUS",
            0xC9,
            [0x6, u64::from(final_status), irp_va, 0],
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IoCompleteRequest({irp_va:#x}) with IoStatus.Status {final_status:#x}"),
        ));
    }
    let cancel_routine = m.read_u64(irp_va + irp::CANCEL_ROUTINE)?;
    nt.io_check(m, cancel_routine == 0, "COMPLETE_WITH_CANCEL_ROUTINE", 0x07, || {
        format!("IoCompleteRequest({irp_va:#x}) with cancel routine {} still set", m.describe(cancel_routine))
    });
    let stack_count = m.read_u8(irp_va + irp::STACK_COUNT)?;
    let mut current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    if current > stack_count.wrapping_add(1) || current == 0 {
        return Err(nt.fatal(
            m,
            "IRP_COMPLETED_TWICE",
            0x44,
            [irp_va, u64::from(current), 0, 0],
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IoCompleteRequest({irp_va:#x}): CurrentLocation {current} is past the top ({stack_count} locations)"),
        ));
    }
    // The checks on who completed an IRP it does not understand.
    if current <= stack_count {
        let location = location_va(irp_va, current);
        let major = m.read_u8(location + stack::MAJOR_FUNCTION)?;
        let minor = m.read_u8(location + stack::MINOR_FUNCTION)?;
        let completer = m.read_u64(location + stack::DEVICE_OBJECT)?;
        if major == mj::PNP && !mn::is_known_pnp(minor) {
            let is_pdo = nt.io.devices.get(&completer).is_some_and(|d| d.lower.is_none());
            if is_pdo {
                let entry = nt.io.irps.get(&irp_va).and_then(|r| r.untouched_at_pdo);
                let information = m.read_u64(irp_va + irp::INFORMATION)?;
                if let Some((entry_status, entry_information)) = entry {
                    nt.io_check(m, final_status == entry_status, "PDO_CHANGED_STATUS_OF_UNKNOWN_IRP", 0x213, || {
                        format!("PDO {completer:#x} completed IRP_MJ_PNP minor {minor:#x} (not one it understands) with Status {final_status:#x}, was {entry_status:#x}")
                    });
                    nt.io_check(m, information == entry_information, "PDO_CHANGED_INFORMATION_OF_UNKNOWN_IRP", 0x214, || {
                        format!("PDO {completer:#x} completed IRP_MJ_PNP minor {minor:#x} (not one it understands) with Information {information:#x}, was {entry_information:#x}")
                    });
                }
            } else {
                nt.io_check(m, false, "COMPLETED_UNKNOWN_PNP_IRP", 0x22D, || {
                    format!("device {completer:#x} (not the PDO) completed IRP_MJ_PNP minor {minor:#x} instead of passing it down")
                });
            }
        }
    }
    // The walk.
    while current <= stack_count {
        let location = location_va(irp_va, current);
        let control = m.read_u8(location + stack::CONTROL)?;
        let routine = m.read_u64(location + stack::COMPLETION_ROUTINE)?;
        let context = m.read_u64(location + stack::CONTEXT)?;
        let pending = control & sl::PENDING_RETURNED != 0;
        m.write_u8(irp_va + irp::PENDING_RETURNED, u8::from(pending))?;
        let mut returned_pending = false;
        if let Some(state) = nt.io.irps.get_mut(&irp_va).and_then(|r| r.locations.get_mut(&current)) {
            state.completed_through = true;
            state.pending = pending;
            returned_pending = state.returned_pending;
        }
        if returned_pending {
            nt.io_check(m, pending, "PENDING_NOT_MARKED", 0x23D, || {
                format!("a dispatch routine returned STATUS_PENDING for IRP {irp_va:#x} at location {current}, which was never marked pending (not by IoMarkIrpPending, nor by a completion routine on the way up)")
            });
        }
        // IoCompleteRequest clears the location it leaves (keeping its
        // major function and device for the debugger's sake).
        m.write_u8(location + stack::MINOR_FUNCTION, 0)?;
        m.write_u8(location + stack::FLAGS, 0)?;
        m.write_u8(location + stack::CONTROL, 0)?;
        m.fill(location + stack::PARAMETERS, 32, 0)?;
        m.write_u64(location + stack::FILE_OBJECT, 0)?;
        m.write_u64(location + stack::COMPLETION_ROUTINE, 0)?;
        m.write_u64(location + stack::CONTEXT, 0)?;
        current += 1;
        m.write_u8(irp_va + irp::CURRENT_LOCATION, current)?;
        m.write_u64(irp_va + irp::CURRENT_STACK_LOCATION, location_va(irp_va, current))?;
        let status_now = m.read_u32(irp_va + irp::STATUS)?;
        let cancel = m.read_u8(irp_va + irp::CANCEL)? != 0;
        let invoke = routine != 0
            && ((status::nt_success(status_now) && control & sl::INVOKE_ON_SUCCESS != 0)
                || (!status::nt_success(status_now) && control & sl::INVOKE_ON_ERROR != 0)
                || (cancel && control & sl::INVOKE_ON_CANCEL != 0));
        if invoke {
            let device = if current > stack_count { 0 } else { m.read_u64(location_va(irp_va, current) + stack::DEVICE_OBJECT)? };
            let irql_before = nt.irql;
            let result = low32(m.call(nt, routine, &[device, irp_va, context])?);
            let what = m.describe(routine);
            if nt.irql != irql_before {
                nt.counted_violation(
                    m,
                    "COMPLETION_ROUTINE_CHANGED_IRQL",
                    0xC4,
                    None,
                    format!("completion routine {what} of IRP {irp_va:#x} called at IRQL {irql_before}, returned at {}", nt.irql),
                );
            }
            if result == status::MORE_PROCESSING_REQUIRED {
                return Ok(());
            }
            if pending && current <= stack_count {
                let above = m.read_u8(location_va(irp_va, current) + stack::CONTROL)?;
                nt.io_check(m, above & sl::PENDING_RETURNED != 0, "COMPLETION_ROUTINE_PENDING_NOT_PROPAGATED", 0x228, || {
                    format!("completion routine {what} let IRP {irp_va:#x} go on with PendingReturned set but did not IoMarkIrpPending")
                });
            }
        } else if pending && current <= stack_count {
            let above = location_va(irp_va, current) + stack::CONTROL;
            let control = m.read_u8(above)?;
            m.write_u8(above, control | sl::PENDING_RETURNED)?;
        }
    }
    finish(nt, m, irp_va)
}

/// The end of an IRP's completion: `UserIosb` gets `IoStatus`, `UserEvent`
/// is signalled, a power request's callback is called (with the IRP's
/// `IoStatus`), and the IRP is freed (special pool: a later touch is bug
/// check 0xD5); its result stays in [`super::IoState::completed`].
///
/// # Errors
/// A bugcheck (a bad status block or event address, a fault in the
/// callback) or host failure.
pub fn finish(nt: &mut Nt, m: &mut Machine, irp_va: u64) -> Result<(), Stop> {
    let Some(record) = nt.io.irps.get(&irp_va).cloned() else {
        return Ok(());
    };
    let result = IrpResult {
        status: m.read_u32(irp_va + irp::STATUS)?,
        information: m.read_u64(irp_va + irp::INFORMATION)?,
        locations: record.locations.clone(),
    };
    let iosb = m.read_u64(irp_va + irp::USER_IOSB)?;
    if iosb != 0 {
        m.write_u32(iosb + io_status_block::STATUS, result.status)?;
        m.write_u64(iosb + io_status_block::INFORMATION, result.information)?;
    }
    let event = m.read_u64(irp_va + irp::USER_EVENT)?;
    if event != 0 {
        m.write_u32(event + kevent::SIGNAL_STATE, 1)?;
    }
    if let IrpOrigin::PowerRequest { callback, device, minor, state, context } = record.origin {
        if callback != 0 {
            m.call(nt, callback, &[device, u64::from(minor), u64::from(state), context, irp_va + irp::STATUS])?;
        }
    }
    nt.io.irps.remove(&irp_va);
    nt.io.completed.insert(irp_va, result);
    m.free_own_pages(record.pages_va, record.pages)?;
    // A touch after this is a use of freed special pool (0xD5).
    nt.pool.freed_special.insert(record.pages_va, record.pages);
    Ok(())
}

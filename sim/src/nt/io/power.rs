//! The power manager's I/O: `PoCallDriver`, `PoRequestPowerIrp`,
//! `PoSetPowerState`.

use capdma_winvm::{Machine, Stop};

use super::super::layout::irp::{irp, mj, mn, stack, status};
use super::super::Nt;
use super::device::top_of_stack;
use super::irp::{call_driver, irp_allocation_fails, location_va, make_irp, IrpOrigin};
use super::{low32, low8, ret};

/// `DevicePowerState` (`POWER_STATE_TYPE`).
pub const DEVICE_POWER_STATE: u32 = 1;
/// `SystemPowerState` (`POWER_STATE_TYPE`).
pub const SYSTEM_POWER_STATE: u32 = 0;

/// `NTSTATUS PoCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp)`
/// ("PoCallDriver function (wdm.h)"): since Windows Vista the same as
/// `IoCallDriver`, for `IRP_MJ_POWER` IRPs only (another major function is
/// a finding, 0xC9 0x212). `<= DISPATCH_LEVEL`.
pub(crate) fn po_call_driver(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, irp_va] = m.args::<2>()?;
    let current = m.read_u8(irp_va + irp::CURRENT_LOCATION)?;
    let major = m.read_u8(location_va(irp_va, current.wrapping_sub(1)) + stack::MAJOR_FUNCTION)?;
    nt.io_check(m, major == mj::POWER, "PO_CALL_DRIVER_NOT_POWER", 0x212, || {
        format!("PoCallDriver({device:#x}, {irp_va:#x}) with major function {major:#x}")
    });
    call_driver(nt, m, device, irp_va, "PoCallDriver").map(ret)
}

/// `NTSTATUS PoRequestPowerIrp(PDEVICE_OBJECT DeviceObject, UCHAR
/// MinorFunction, POWER_STATE PowerState, PREQUEST_POWER_COMPLETE
/// CompletionFunction, PVOID Context, PIRP *Irp)` ("PoRequestPowerIrp
/// function (wdm.h)"): a device power IRP (`IRP_MN_SET_POWER`,
/// `IRP_MN_QUERY_POWER` or `IRP_MN_WAIT_WAKE`) sent to the top of
/// `DeviceObject`'s stack (a PDO's), `IoStatus.Status` =
/// `STATUS_NOT_SUPPORTED`; when it completes, `CompletionFunction` is
/// called with the IRP's status block and the IRP is freed. Returns
/// `STATUS_PENDING` (the IRP was sent); another minor function:
/// `STATUS_INVALID_PARAMETER_2`; the low resources simulation:
/// `STATUS_INSUFFICIENT_RESOURCES`. `<= DISPATCH_LEVEL`.
pub(crate) fn po_request_power_irp(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, minor, state, callback, context, out] = m.args::<6>()?;
    let minor = low8(minor);
    let state = low32(state);
    if !matches!(minor, mn::SET_POWER | mn::QUERY_POWER | mn::WAIT_WAKE) {
        return Ok(ret(status::INVALID_PARAMETER_2));
    }
    if irp_allocation_fails(nt) {
        return Ok(ret(status::INSUFFICIENT_RESOURCES));
    }
    let top = top_of_stack(m, device)?;
    let stack_count = m.read_u8(top + super::super::layout::device_object::STACK_SIZE)?;
    let caller = m.caller().map_or_else(|_| "?".into(), |c| m.describe(c));
    let origin = IrpOrigin::PowerRequest { callback, device, minor, state, context };
    let irp_va = make_irp(nt, m, stack_count, mj::POWER, status::NOT_SUPPORTED, origin, caller)?;
    let location = location_va(irp_va, stack_count);
    m.write_u8(location + stack::MINOR_FUNCTION, minor)?;
    m.write_u32(location + stack::POWER_TYPE, DEVICE_POWER_STATE)?;
    m.write_u32(location + stack::POWER_STATE, state)?;
    if out != 0 {
        m.write_u64(out, irp_va)?;
    }
    call_driver(nt, m, top, irp_va, "PoRequestPowerIrp")?;
    Ok(ret(status::PENDING))
}

/// `POWER_STATE PoSetPowerState(PDEVICE_OBJECT DeviceObject,
/// POWER_STATE_TYPE Type, POWER_STATE State)` ("PoSetPowerState function
/// (wdm.h)"): tells the power manager the device's new power state;
/// returns the previous one (D0 before the first call). `<= DISPATCH_LEVEL`.
pub(crate) fn po_set_power_state(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let [device, kind, state] = m.args::<3>()?;
    let (kind, state) = (low32(kind), low32(state));
    nt.io.power_states.push((device, kind, state));
    let previous = if kind == DEVICE_POWER_STATE { nt.io.device_power.insert(device, state).unwrap_or(1) } else { 1 };
    Ok(u64::from(previous))
}

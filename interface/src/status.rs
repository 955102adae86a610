//! The NTSTATUS values used across the contract (ntstatus.h).
//!
//! The portable cores return these; the Windows glue passes them on unchanged
//! (an `NTSTATUS` is an `i32` there too).

/// An `NTSTATUS` (ntdef.h): negative is an error.
pub type NtStatus = i32;

/// Reinterprets the 32-bit pattern of an NTSTATUS as the signed value.
const fn nt(value: u32) -> NtStatus {
    i32::from_ne_bytes(value.to_ne_bytes())
}

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: NtStatus = 0;
/// `STATUS_PENDING`: the operation continues asynchronously.
pub const STATUS_PENDING: NtStatus = 0x0000_0103;
/// `STATUS_UNSUCCESSFUL`.
pub const STATUS_UNSUCCESSFUL: NtStatus = nt(0xC000_0001);
/// `STATUS_NOT_IMPLEMENTED`.
pub const STATUS_NOT_IMPLEMENTED: NtStatus = nt(0xC000_0002);
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: NtStatus = nt(0xC000_000D);
/// `STATUS_INVALID_DEVICE_REQUEST`: the request is not valid in the current state.
pub const STATUS_INVALID_DEVICE_REQUEST: NtStatus = nt(0xC000_0010);
/// `STATUS_BUFFER_TOO_SMALL`: a structure is shorter than its header says or than required.
pub const STATUS_BUFFER_TOO_SMALL: NtStatus = nt(0xC000_0023);
/// `STATUS_INVALID_DEVICE_STATE`: the device is not in a state for the
/// request (`ProgramFramePart`: a frame is, or is not, open).
pub const STATUS_INVALID_DEVICE_STATE: NtStatus = nt(0xC000_0184);
/// `STATUS_INSUFFICIENT_RESOURCES`: memory, common buffer or ring space ran out.
pub const STATUS_INSUFFICIENT_RESOURCES: NtStatus = nt(0xC000_009A);
/// `STATUS_NOT_SUPPORTED`: the request is not supported (also the status of an
/// unanswered `IRP_MN_QUERY_INTERFACE`).
pub const STATUS_NOT_SUPPORTED: NtStatus = nt(0xC000_00BB);
/// `STATUS_IO_DEVICE_ERROR`: the board reported an error or an out-of-range value.
pub const STATUS_IO_DEVICE_ERROR: NtStatus = nt(0xC000_0185);
/// `STATUS_DEVICE_NOT_READY`: the channel is not started.
pub const STATUS_DEVICE_NOT_READY: NtStatus = nt(0xC000_00A3);
/// `STATUS_DEVICE_BUSY`: the device is in use (removal refused while an
/// interface reference is held; a ring is full).
pub const STATUS_DEVICE_BUSY: NtStatus = nt(0x8000_0011);
/// `STATUS_CANCELLED`: the frame was cancelled (stop, reset, removal).
pub const STATUS_CANCELLED: NtStatus = nt(0xC000_0120);
/// `STATUS_DEVICE_REMOVED`: the device is gone (surprise removal).
pub const STATUS_DEVICE_REMOVED: NtStatus = nt(0xC000_02B6);
/// `STATUS_NO_MATCH`: a data format matches none of the pin's data ranges.
pub const STATUS_NO_MATCH: NtStatus = nt(0xC000_0272);
/// `STATUS_INTEGER_OVERFLOW`: a size computation overflowed.
pub const STATUS_INTEGER_OVERFLOW: NtStatus = nt(0xC000_0095);
/// `STATUS_INVALID_BUFFER_SIZE`: a stated size disagrees with the computed one.
pub const STATUS_INVALID_BUFFER_SIZE: NtStatus = nt(0xC000_0206);
/// `STATUS_REVISION_MISMATCH`: the requested interface version is not one this bus serves.
pub const STATUS_REVISION_MISMATCH: NtStatus = nt(0xC000_0059);
/// `STATUS_TIMEOUT` (a success code): the engine watchdog fired.
pub const STATUS_TIMEOUT: NtStatus = 0x0000_0102;

/// `NT_SUCCESS(Status)`.
#[must_use]
pub const fn nt_success(status: NtStatus) -> bool {
    status >= 0
}

/// The symbolic name of a status this crate defines, for logs and test output.
#[must_use]
pub const fn status_name(status: NtStatus) -> &'static str {
    match status {
        STATUS_SUCCESS => "STATUS_SUCCESS",
        STATUS_PENDING => "STATUS_PENDING",
        STATUS_UNSUCCESSFUL => "STATUS_UNSUCCESSFUL",
        STATUS_NOT_IMPLEMENTED => "STATUS_NOT_IMPLEMENTED",
        STATUS_INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
        STATUS_INVALID_DEVICE_REQUEST => "STATUS_INVALID_DEVICE_REQUEST",
        STATUS_INVALID_DEVICE_STATE => "STATUS_INVALID_DEVICE_STATE",
        STATUS_BUFFER_TOO_SMALL => "STATUS_BUFFER_TOO_SMALL",
        STATUS_INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
        STATUS_NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
        STATUS_IO_DEVICE_ERROR => "STATUS_IO_DEVICE_ERROR",
        STATUS_DEVICE_NOT_READY => "STATUS_DEVICE_NOT_READY",
        STATUS_DEVICE_BUSY => "STATUS_DEVICE_BUSY",
        STATUS_CANCELLED => "STATUS_CANCELLED",
        STATUS_DEVICE_REMOVED => "STATUS_DEVICE_REMOVED",
        STATUS_NO_MATCH => "STATUS_NO_MATCH",
        STATUS_INTEGER_OVERFLOW => "STATUS_INTEGER_OVERFLOW",
        STATUS_INVALID_BUFFER_SIZE => "STATUS_INVALID_BUFFER_SIZE",
        STATUS_REVISION_MISMATCH => "STATUS_REVISION_MISMATCH",
        STATUS_TIMEOUT => "STATUS_TIMEOUT",
        _ => "STATUS_<other>",
    }
}

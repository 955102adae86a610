//! The emulated `ks.sys`: the kernel-streaming class driver AVStream
//! minidrivers link against, as its DDI reference pages and the "AVStream
//! Overview" guide describe it, run on the host around the image.
//!
//! What a minidriver sees of it lives in guest memory with the layouts of
//! `ks.h` ([`super::layout::ks`]): the `KSDEVICE`, `KSFILTERFACTORY`,
//! `KSFILTER`, `KSPIN`, each `KSSTREAM_POINTER`, the stream headers with
//! their `KS_FRAME_INFO`, the `KSMAPPING` tables and the frames' data
//! mapped at system addresses over the application's scattered pages. The
//! host keeps a record of each object to check what the DDI pages require
//! (the IRQL, the device mutex around `KsCreateFilterFactory` and not
//! taken twice, the mutex of an object bag held when it changes, stream
//! pointers used once deleted, the processing mutex not taken twice, a
//! `Process` that makes no progress).
//!
//! One concern per file:
//! * [`driver`]: `KsInitializeDriver`, AVStream's `AddDevice` and its
//!   dispatch of the PnP IRPs to the minidriver's `KSDEVICE_DISPATCH`;
//! * [`device`]: `KSDEVICE` (`KsAcquireDevice`/`KsReleaseDevice`,
//!   `KsGetDevice`), the filter control mutex (`KsAcquireControl`,
//!   `KsReleaseControl`) and the mutexes AVStream holds for the
//!   minidriver, object bags (`KsAddItemToObjectBag`, `_KsEdit`),
//!   `KsDeviceRegisterAdapterObject`, `KsCreateFilterFactory`;
//! * [`pin`]: what an application does through a filter handle (filter and
//!   pin creation through the pin's intersect handler, `SetDataFormat`,
//!   `SetDeviceState` step by step, the dropped-frames property, close) and
//!   the processing mutex;
//! * [`unknown`]: `KsGetOuterUnknown` and the device's
//!   `IKsDeviceFunctions::RegisterAdapterObjectEx`;
//! * [`clock`]: the master clock an application assigns to a pin,
//!   `KsPinGetReferenceClockInterface` and its `IKsReferenceClock`, and the
//!   presentation times checked against it;
//! * [`stream`]: the queue — frames submitted, stream pointers
//!   (`KsPinGetLeadingEdgeStreamPointer`, clones, unlock, advance, delete),
//!   mapping generation, and when AVStream calls `Process`.

pub mod clock;
pub mod device;
pub mod driver;
pub mod pin;
pub mod stream;
pub mod unknown;

use std::collections::{BTreeMap, BTreeSet};

use super::{Ddi, Module, DISPATCH_LEVEL, PASSIVE_LEVEL};

pub use driver::device_on;
pub use pin::{AppBuffer, PinHandle};
pub use stream::run_workers;

/// The DDIs `ks.sys` exports that the emulated kernel implements, each with
/// the highest IRQL its reference page allows.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ks, name: "KsInitializeDriver", max_irql: PASSIVE_LEVEL, run: driver::ks_initialize_driver },
    Ddi { module: Module::Ks, name: "KsAcquireDevice", max_irql: PASSIVE_LEVEL, run: device::ks_acquire_device },
    Ddi { module: Module::Ks, name: "KsReleaseDevice", max_irql: PASSIVE_LEVEL, run: device::ks_release_device },
    Ddi { module: Module::Ks, name: "KsAcquireControl", max_irql: PASSIVE_LEVEL, run: device::ks_acquire_control },
    Ddi { module: Module::Ks, name: "KsReleaseControl", max_irql: PASSIVE_LEVEL, run: device::ks_release_control },
    Ddi { module: Module::Ks, name: "KsGetDevice", max_irql: DISPATCH_LEVEL, run: device::ks_get_device },
    Ddi { module: Module::Ks, name: "KsAddItemToObjectBag", max_irql: PASSIVE_LEVEL, run: device::ks_add_item_to_object_bag },
    Ddi { module: Module::Ks, name: "_KsEdit", max_irql: PASSIVE_LEVEL, run: device::ks_edit },
    Ddi { module: Module::Ks, name: "KsCreateFilterFactory", max_irql: PASSIVE_LEVEL, run: device::ks_create_filter_factory },
    Ddi {
        module: Module::Ks,
        name: "KsDeviceRegisterAdapterObject",
        max_irql: PASSIVE_LEVEL,
        run: device::ks_device_register_adapter_object,
    },
    Ddi { module: Module::Ks, name: "KsGetOuterUnknown", max_irql: PASSIVE_LEVEL, run: unknown::ks_get_outer_unknown },
    Ddi { module: Module::Ks, name: "KsGetPinFromIrp", max_irql: DISPATCH_LEVEL, run: pin::ks_get_pin_from_irp },
    Ddi { module: Module::Ks, name: "KsPinAcquireProcessingMutex", max_irql: PASSIVE_LEVEL, run: pin::ks_pin_acquire_processing_mutex },
    Ddi { module: Module::Ks, name: "KsPinReleaseProcessingMutex", max_irql: PASSIVE_LEVEL, run: pin::ks_pin_release_processing_mutex },
    Ddi { module: Module::Ks, name: "KsPinAttemptProcessing", max_irql: DISPATCH_LEVEL, run: stream::ks_pin_attempt_processing },
    Ddi { module: Module::Ks, name: "KsPinGetReferenceClockInterface", max_irql: PASSIVE_LEVEL, run: clock::ks_pin_get_reference_clock_interface },
    Ddi {
        module: Module::Ks,
        name: "KsPinGetLeadingEdgeStreamPointer",
        max_irql: DISPATCH_LEVEL,
        run: stream::ks_pin_get_leading_edge_stream_pointer,
    },
    Ddi { module: Module::Ks, name: "KsStreamPointerClone", max_irql: DISPATCH_LEVEL, run: stream::ks_stream_pointer_clone },
    Ddi { module: Module::Ks, name: "KsStreamPointerDelete", max_irql: DISPATCH_LEVEL, run: stream::ks_stream_pointer_delete },
    Ddi { module: Module::Ks, name: "KsStreamPointerUnlock", max_irql: DISPATCH_LEVEL, run: stream::ks_stream_pointer_unlock },
    Ddi {
        module: Module::Ks,
        name: "KsStreamPointerAdvanceOffsets",
        max_irql: DISPATCH_LEVEL,
        run: stream::ks_stream_pointer_advance_offsets,
    },
    Ddi {
        module: Module::Ks,
        name: "KsStreamPointerAdvanceOffsetsAndUnlock",
        max_irql: DISPATCH_LEVEL,
        run: stream::ks_stream_pointer_advance_offsets_and_unlock,
    },
];

/// The emulated `ks.sys`'s state.
#[derive(Default)]
pub struct KsState {
    /// Drivers that called `KsInitializeDriver`: driver object → its `KSDEVICE_DESCRIPTOR`.
    pub drivers: BTreeMap<u64, u64>,
    /// `KSDEVICE`s by address.
    pub devices: BTreeMap<u64, device::KsDeviceRecord>,
    /// Object bags by handle.
    pub bags: BTreeMap<u64, device::Bag>,
    /// The mutexes AVStream holds on the minidriver's behalf while it runs
    /// one of the minidriver's routines, innermost last: a `KSDEVICE` (its
    /// device mutex: `Start`, `PostStart`, `QueryStop`, `QueryRemove`, by
    /// "Device Mutex in AVStream") or a `KSFILTER` (its control mutex: the
    /// pin's `Create`, `Close`, `SetDataFormat`, `SetDeviceState`, by
    /// "Filter Control Mutex in AVStream").
    pub held_for_minidriver: Vec<u64>,
    /// Filters whose control mutex the minidriver took (`KsAcquireControl`).
    pub control_held: BTreeSet<u64>,
    /// Filter factories by address: the `KSDEVICE` they belong to.
    pub factories: BTreeMap<u64, u64>,
    /// Filters by address: (the factory, the `KSDEVICE`).
    pub filters: BTreeMap<u64, (u64, u64)>,
    /// Pins by `KSPIN` address.
    pub pins: BTreeMap<u64, pin::KsPinRecord>,
    /// IRPs handed to a pin's handlers (property requests, create, close), for `KsGetPinFromIrp`.
    pub irp_pins: BTreeMap<u64, u64>,
    /// Stream pointers by `KSSTREAM_POINTER` address: the pin and the queue's handle.
    pub pointers: BTreeMap<u64, stream::PointerRecord>,
    /// Deleted clones' `KSSTREAM_POINTER` slots, for reuse (poisoned).
    pub free_pointers: Vec<u64>,
    /// IRPs forwarded down synchronously whose completion came back.
    pub forwarded_done: BTreeSet<u64>,
    /// The host function addresses made once (by name).
    pub host_functions: BTreeMap<&'static str, u64>,
    /// `_KsEdit` calls made (for the low resources simulation).
    pub edits: u64,
    /// Low resources simulation: the `_KsEdit` call with this 0-based
    /// index fails (its pool allocation fails: `STATUS_INSUFFICIENT_RESOURCES`).
    pub fail_edit_at: Option<u64>,
    /// Counters.
    pub stats: KsCounters,
    /// The first [`PROCESS_SAMPLES_KEPT`] `Process` calls, timed one by one.
    pub process_samples: Vec<ProcessSample>,
    /// DDI calls made inside `Process` calls, by name.
    pub process_calls_by_ddi: BTreeMap<&'static str, u64>,
}

/// Handles open on the AVStream device on `pdo`'s stack (filters the
/// application opened, each with its pins): what makes the PnP manager veto
/// a removal of that stack.
#[must_use]
pub fn handles_open_on(nt: &super::Nt, pdo: u64) -> usize {
    nt.ks.filters.values().filter(|(_, device)| nt.ks.devices.get(device).is_some_and(|d| d.pdo == pdo)).count()
}

/// Counters of the emulated `ks.sys`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KsCounters {
    /// `Process` calls made.
    pub process_calls: u64,
    /// `Process` calls made inside `KsPinAttemptProcessing(FALSE)`.
    pub process_calls_synchronous: u64,
    /// `KsPinAttemptProcessing` calls.
    pub attempts: u64,
    /// Frames the application submitted.
    pub frames_submitted: u64,
    /// Stream pointer clones made.
    pub clones: u64,
    /// Host wall-clock nanoseconds inside the `Process` calls (from
    /// entering the guest to its return): the minidriver's code running
    /// natively in the VM, every VM exit it causes and what the host does
    /// at each (its DDI calls; interrupts and DPCs delivered there).
    pub process_wall_ns: u64,
    /// The part of `process_wall_ns` inside `KVM_RUN` (the guest's code and
    /// the world switches; [`capdma_winvm::ExitCounts::guest_ns`]); the rest
    /// is the host handling the exits.
    pub process_guest_ns: u64,
    /// VM exits during the `Process` calls (each call's return included).
    pub process_vm_exits: u64,
    /// DDI calls (imports and host routines) the `Process` calls made.
    pub process_ddi_calls: u64,
    /// Other host → guest calls nested in the `Process` calls (ISRs, DPCs
    /// and callbacks delivered at their exits).
    pub process_nested_calls: u64,
    /// Frames completed back to the application during the `Process` calls.
    pub process_frames_completed: u64,
    /// `KsPinGetReferenceClockInterface` calls that handed out a clock.
    pub clock_interfaces: u64,
    /// Reads of a pin's clock (`IKsReferenceClock::GetTime`,
    /// `GetCorrelatedTime` and their physical-time twins).
    pub clock_reads: u64,
}

/// One `Process` call as the emulated `ks.sys` timed it (see
/// [`KsCounters::process_wall_ns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessSample {
    /// Host wall-clock nanoseconds of the call.
    pub wall_ns: u64,
    /// Of which inside `KVM_RUN`.
    pub guest_ns: u64,
    /// VM exits during the call (its return included).
    pub vm_exits: u64,
    /// Frames completed during the call.
    pub frames_completed: u64,
}

/// `Process` calls kept in [`KsState::process_samples`] (the first ones).
pub const PROCESS_SAMPLES_KEPT: usize = 100_000;

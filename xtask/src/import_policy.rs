//! What a capdma driver image may import, and what it must import.
//!
//! This file is the one table to edit when the driver glue grows: add a row
//! to [`REQUIRED_IMPORTS`] when an image starts depending on a DDI that its
//! design cannot do without, so that a build which silently lost it (a glue
//! module compiled out, a `cfg` typo) fails the PE check instead of shipping.

use std::collections::BTreeSet;
use std::fmt;

/// Modules a kernel driver image of this project may import from. Compared
/// case-insensitively: the PE loader does, and the import libraries spell
/// them differently (`HAL.dll`, `ntoskrnl.exe`).
pub const ALLOWED_IMPORT_MODULES: &[&str] = &["ntoskrnl.exe", "hal.dll", "ks.sys"];

/// One import an image must have: `(module, symbol)`.
pub type RequiredImport = (&'static str, &'static str);

/// Required imports per image. The key is the image's file stem
/// (`capdma_bus` for `capdma_bus.sys`). Images not listed have no
/// required imports.
pub const REQUIRED_IMPORTS: &[(&str, &[RequiredImport])] = &[
    (
        "capdma_bus",
        &[
            // Device objects and the PnP stack (AddDevice, removal).
            ("ntoskrnl.exe", "IoCreateDevice"),
            ("ntoskrnl.exe", "IoAttachDeviceToDeviceStack"),
            ("ntoskrnl.exe", "IoDetachDevice"),
            ("ntoskrnl.exe", "IoDeleteDevice"),
            ("ntoskrnl.exe", "IofCallDriver"),
            ("ntoskrnl.exe", "IofCompleteRequest"),
            ("ntoskrnl.exe", "PoCallDriver"),
            // Power policy owner: the D-IRP for each S-IRP, the power
            // manager told of every device state change; the ISR barrier
            // when leaving D0.
            ("ntoskrnl.exe", "PoRequestPowerIrp"),
            ("ntoskrnl.exe", "PoSetPowerState"),
            ("ntoskrnl.exe", "KeAcquireInterruptSpinLock"),
            ("ntoskrnl.exe", "KeReleaseInterruptSpinLock"),
            // Remove lock: no IRP inside the driver when the FDO is deleted.
            ("ntoskrnl.exe", "IoInitializeRemoveLockEx"),
            ("ntoskrnl.exe", "IoAcquireRemoveLockEx"),
            ("ntoskrnl.exe", "IoReleaseRemoveLockEx"),
            ("ntoskrnl.exe", "IoReleaseRemoveLockAndWaitEx"),
            // START_DEVICE forwarded down and waited for.
            ("ntoskrnl.exe", "KeInitializeEvent"),
            ("ntoskrnl.exe", "KeSetEvent"),
            ("ntoskrnl.exe", "KeWaitForSingleObject"),
            // Child PDO enumeration and their answers.
            ("ntoskrnl.exe", "IoInvalidateDeviceRelations"),
            ("ntoskrnl.exe", "ExAllocatePool2"),
            ("ntoskrnl.exe", "ObfReferenceObject"),
            ("ntoskrnl.exe", "ObfDereferenceObject"),
            // BUS_INTERFACE_STANDARD forwarded from a child to the parent stack.
            ("ntoskrnl.exe", "IoGetAttachedDeviceReference"),
            ("ntoskrnl.exe", "IoBuildSynchronousFsdRequest"),
            // BAR0 mapping.
            ("ntoskrnl.exe", "MmMapIoSpaceEx"),
            ("ntoskrnl.exe", "MmUnmapIoSpace"),
            // Interrupt, its DPC, and the watchdog timer.
            ("ntoskrnl.exe", "IoConnectInterruptEx"),
            ("ntoskrnl.exe", "IoDisconnectInterruptEx"),
            ("ntoskrnl.exe", "KeInitializeDpc"),
            ("ntoskrnl.exe", "KeInsertQueueDpc"),
            ("ntoskrnl.exe", "KeFlushQueuedDpcs"),
            ("ntoskrnl.exe", "KeInitializeTimerEx"),
            ("ntoskrnl.exe", "KeSetTimerEx"),
            ("ntoskrnl.exe", "KeCancelTimer"),
            // The DMA adapter (its operations are called through
            // DMA_OPERATIONS, not imported) and the memory facts for the mode.
            ("ntoskrnl.exe", "IoGetDmaAdapter"),
            ("ntoskrnl.exe", "MmGetPhysicalMemoryRanges"),
            ("ntoskrnl.exe", "ExFreePool"),
            // Start parameters (DmaMode, ...) from the Device Parameters key.
            ("ntoskrnl.exe", "IoOpenDeviceRegistryKey"),
            ("ntoskrnl.exe", "ZwQueryValueKey"),
            ("ntoskrnl.exe", "ZwClose"),
            // IRQL through the kernel, as the WDK compiles it on x64 (Driver
            // Verifier sees only raises and lowers that go through it).
            ("ntoskrnl.exe", "KeGetCurrentIrql"),
            ("ntoskrnl.exe", "KeRaiseIrqlToDpcLevel"),
            ("ntoskrnl.exe", "KeLowerIrql"),
            // ETW TraceLogging (docs/tracing.md): the provider registered in
            // DriverEntry with its traits, events written, unregistered in
            // DriverUnload.
            ("ntoskrnl.exe", "EtwRegister"),
            ("ntoskrnl.exe", "EtwSetInformation"),
            ("ntoskrnl.exe", "EtwWriteTransfer"),
            ("ntoskrnl.exe", "EtwUnregister"),
        ],
    ),
    (
        "capdma_avstream",
        &[
            // DriverEntry and the device (Add: the context in the object bag).
            ("ks.sys", "KsInitializeDriver"),
            ("ks.sys", "KsAddItemToObjectBag"),
            ("ntoskrnl.exe", "ExAllocatePool2"),
            ("ntoskrnl.exe", "ExFreePoolWithTag"),
            // Start: the channel, the bus interface (IRP_MN_QUERY_INTERFACE
            // sent down the stack and waited for), the filter factory.
            ("ntoskrnl.exe", "IoGetDeviceProperty"),
            ("ntoskrnl.exe", "IoBuildSynchronousFsdRequest"),
            ("ntoskrnl.exe", "IofCallDriver"),
            ("ntoskrnl.exe", "KeInitializeEvent"),
            ("ntoskrnl.exe", "KeWaitForSingleObject"),
            ("ks.sys", "KsCreateFilterFactory"),
            // ... with the device mutex held, which Start takes itself.
            ("ks.sys", "KsAcquireDevice"),
            ("ks.sys", "KsReleaseDevice"),
            // Packet-based DMA.
            ("ks.sys", "KsDeviceRegisterAdapterObject"),
            // Pin creation: the device, the pin's own framing; properties.
            ("ks.sys", "KsGetDevice"),
            ("ks.sys", "_KsEdit"),
            ("ks.sys", "KsGetPinFromIrp"),
            // Process / DPC completion path.
            ("ks.sys", "KsPinGetLeadingEdgeStreamPointer"),
            // The master clock, taken at STOP -> ACQUIRE, frames stamped with it.
            ("ks.sys", "KsPinGetReferenceClockInterface"),
            ("ks.sys", "KsStreamPointerClone"),
            ("ks.sys", "KsStreamPointerAdvanceOffsets"),
            ("ks.sys", "KsStreamPointerAdvanceOffsetsAndUnlock"),
            ("ks.sys", "KsStreamPointerUnlock"),
            ("ks.sys", "KsStreamPointerDelete"),
            ("ks.sys", "KsPinAttemptProcessing"),
            // RUN -> PAUSE stops the channel with Process held off.
            ("ks.sys", "KsPinAcquireProcessingMutex"),
            ("ks.sys", "KsPinReleaseProcessingMutex"),
            // The core's spin locks at DISPATCH_LEVEL, IRQL through the kernel.
            ("ntoskrnl.exe", "KeRaiseIrqlToDpcLevel"),
            ("ntoskrnl.exe", "KeLowerIrql"),
            // ETW TraceLogging (docs/tracing.md): the provider registered in
            // DriverEntry with its traits, events written, unregistered in
            // DriverUnload.
            ("ntoskrnl.exe", "EtwRegister"),
            ("ntoskrnl.exe", "EtwSetInformation"),
            ("ntoskrnl.exe", "EtwWriteTransfer"),
            ("ntoskrnl.exe", "EtwUnregister"),
        ],
    ),
    (
        // Test-only: the DDIs its probes misuse (probe-driver/src/catalog.rs).
        "capdma_probe",
        &[
            ("ntoskrnl.exe", "IoCreateDevice"),
            ("ntoskrnl.exe", "IoAttachDeviceToDeviceStack"),
            ("ntoskrnl.exe", "IoDetachDevice"),
            ("ntoskrnl.exe", "IoDeleteDevice"),
            ("ntoskrnl.exe", "IofCallDriver"),
            ("ntoskrnl.exe", "IofCompleteRequest"),
            ("ntoskrnl.exe", "PoCallDriver"),
            // IRQL.
            ("ntoskrnl.exe", "KeGetCurrentIrql"),
            ("ntoskrnl.exe", "KfRaiseIrql"),
            ("ntoskrnl.exe", "KeRaiseIrqlToDpcLevel"),
            ("ntoskrnl.exe", "KeLowerIrql"),
            ("ntoskrnl.exe", "KeInitializeEvent"),
            ("ntoskrnl.exe", "KeWaitForSingleObject"),
            // Pool.
            ("ntoskrnl.exe", "ExAllocatePool2"),
            ("ntoskrnl.exe", "ExFreePoolWithTag"),
            // Remove lock.
            ("ntoskrnl.exe", "IoInitializeRemoveLockEx"),
            ("ntoskrnl.exe", "IoAcquireRemoveLockEx"),
            ("ntoskrnl.exe", "IoReleaseRemoveLockEx"),
            ("ntoskrnl.exe", "IoReleaseRemoveLockAndWaitEx"),
            // DMA (its operations are called through DMA_OPERATIONS).
            ("ntoskrnl.exe", "IoGetDmaAdapter"),
            // What is left at unload.
            ("ntoskrnl.exe", "IoConnectInterruptEx"),
            ("ntoskrnl.exe", "KeInitializeTimerEx"),
            ("ntoskrnl.exe", "KeSetTimerEx"),
            ("ntoskrnl.exe", "KeInitializeDpc"),
            ("ntoskrnl.exe", "KeInsertQueueDpc"),
            // Object references.
            ("ntoskrnl.exe", "ObfReferenceObject"),
            ("ntoskrnl.exe", "ObfDereferenceObject"),
        ],
    ),
];

/// One imported symbol of an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    /// The module (DLL) name as written in the image.
    pub module: String,
    /// The symbol name, or `#<ordinal>` for an import by ordinal.
    pub symbol: String,
}

#[cfg(test)]
impl Import {
    /// An import of `symbol` from `module`.
    pub fn new(module: &str, symbol: &str) -> Self {
        Self {
            module: module.to_owned(),
            symbol: symbol.to_owned(),
        }
    }
}

/// A rule an image broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The image imports from a module that is not allowed.
    ForbiddenModule {
        /// The module as written in the image.
        module: String,
        /// The symbols imported from it.
        symbols: Vec<String>,
    },
    /// A required import is missing.
    MissingRequired {
        /// The module it should come from.
        module: &'static str,
        /// The symbol.
        symbol: &'static str,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForbiddenModule { module, symbols } => write!(
                f,
                "imports from `{module}`, which a kernel driver must not use \
                 (allowed: {}); symbols: {}",
                ALLOWED_IMPORT_MODULES.join(", "),
                symbols.join(", ")
            ),
            Self::MissingRequired { module, symbol } => {
                write!(f, "required import `{module}!{symbol}` is missing")
            }
        }
    }
}

fn module_allowed(module: &str) -> bool {
    ALLOWED_IMPORT_MODULES
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(module))
}

/// Every import whose module is not in [`ALLOWED_IMPORT_MODULES`], grouped
/// by module (in the order the modules first appear).
pub fn check_allowed_modules(imports: &[Import]) -> Vec<Violation> {
    let mut violations: Vec<Violation> = Vec::new();
    for import in imports.iter().filter(|i| !module_allowed(&i.module)) {
        let existing = violations.iter_mut().find_map(|v| match v {
            Violation::ForbiddenModule { module, symbols } if *module == import.module => {
                Some(symbols)
            }
            _ => None,
        });
        match existing {
            Some(symbols) => symbols.push(import.symbol.clone()),
            None => violations.push(Violation::ForbiddenModule {
                module: import.module.clone(),
                symbols: vec![import.symbol.clone()],
            }),
        }
    }
    violations
}

/// The required-import list for the image with file stem `image_stem`
/// (case-insensitive), if it has one.
pub fn required_imports_for(image_stem: &str) -> Option<&'static [RequiredImport]> {
    REQUIRED_IMPORTS
        .iter()
        .find(|(stem, _)| stem.eq_ignore_ascii_case(image_stem))
        .map(|(_, list)| *list)
}

/// Every entry of `required` that `imports` lacks. Module names compare
/// case-insensitively, symbol names exactly (PE exports are case-sensitive).
pub fn check_required(imports: &[Import], required: &'static [RequiredImport]) -> Vec<Violation> {
    let present: BTreeSet<(String, &str)> = imports
        .iter()
        .map(|i| (i.module.to_ascii_lowercase(), i.symbol.as_str()))
        .collect();
    required
        .iter()
        .filter(|(module, symbol)| !present.contains(&(module.to_ascii_lowercase(), *symbol)))
        .map(|&(module, symbol)| Violation::MissingRequired { module, symbol })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imports(list: &[(&str, &str)]) -> Vec<Import> {
        list.iter().map(|(m, s)| Import::new(m, s)).collect()
    }

    #[test]
    fn allowed_modules_pass_in_any_case() {
        let list = imports(&[
            ("ntoskrnl.exe", "IoCreateDevice"),
            ("HAL.dll", "KeStallExecutionProcessor"),
            ("KS.SYS", "KsInitializeDriver"),
        ]);
        assert_eq!(check_allowed_modules(&list), Vec::new());
    }

    #[test]
    fn user_mode_modules_are_rejected_and_grouped() {
        let list = imports(&[
            ("ntoskrnl.exe", "IoCreateDevice"),
            ("ntdll.dll", "RtlCopyMemory"),
            ("kernel32.dll", "ExitProcess"),
            ("ntdll.dll", "NtClose"),
        ]);
        let violations = check_allowed_modules(&list);
        assert_eq!(
            violations,
            vec![
                Violation::ForbiddenModule {
                    module: "ntdll.dll".into(),
                    symbols: vec!["RtlCopyMemory".into(), "NtClose".into()],
                },
                Violation::ForbiddenModule {
                    module: "kernel32.dll".into(),
                    symbols: vec!["ExitProcess".into()],
                },
            ]
        );
        assert!(violations[0].to_string().contains("ntdll.dll"));
    }

    #[test]
    fn near_miss_module_names_are_rejected() {
        let list = imports(&[("ntoskrnl.dll", "IoCreateDevice"), ("ks.sys.old", "X")]);
        assert_eq!(check_allowed_modules(&list).len(), 2);
    }

    #[test]
    fn required_imports_found_case_insensitively_by_module() {
        static REQ: &[RequiredImport] = &[
            ("ks.sys", "KsInitializeDriver"),
            ("hal.dll", "KeStallExecutionProcessor"),
        ];
        let list = imports(&[
            ("KS.sys", "KsInitializeDriver"),
            ("HAL.dll", "KeStallExecutionProcessor"),
        ]);
        assert!(check_required(&list, REQ).is_empty());
    }

    #[test]
    fn missing_or_misplaced_required_imports_are_reported() {
        static REQ: &[RequiredImport] = &[
            ("ks.sys", "KsInitializeDriver"),
            ("ntoskrnl.exe", "IoGetDmaAdapter"),
            ("ntoskrnl.exe", "MmMapIoSpaceEx"),
        ];
        // IoGetDmaAdapter from the wrong module, MmMapIoSpaceEx with the
        // wrong case: both count as missing.
        let list = imports(&[
            ("ks.sys", "KsInitializeDriver"),
            ("hal.dll", "IoGetDmaAdapter"),
            ("ntoskrnl.exe", "mmmapiospaceex"),
        ]);
        assert_eq!(
            check_required(&list, REQ),
            vec![
                Violation::MissingRequired {
                    module: "ntoskrnl.exe",
                    symbol: "IoGetDmaAdapter"
                },
                Violation::MissingRequired {
                    module: "ntoskrnl.exe",
                    symbol: "MmMapIoSpaceEx"
                },
            ]
        );
    }

    #[test]
    fn table_has_both_images_with_allowed_modules_only() {
        for stem in ["capdma_bus", "CAPDMA_AVSTREAM", "capdma_probe"] {
            let list = required_imports_for(stem).expect("image listed");
            assert!(!list.is_empty());
            assert!(list.iter().all(|(module, _)| module_allowed(module)));
        }
        assert!(required_imports_for("other").is_none());
    }
}

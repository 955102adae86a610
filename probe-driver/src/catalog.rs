//! The catalog of the image's `Probe*` exports: what each takes, which
//! rule it breaks, the bug check Windows (with Driver Verifier) answers it
//! with, and when the mistake can be seen. A host harness iterates over
//! [`PROBES`] to have one test per rule; `src/wdm/` implements each entry
//! (a test below checks that the two agree, name by name).
//!
//! Sources: the bug check reference of the Windows debugger documentation
//! (`Bug Check 0xC4: DRIVER_VERIFIER_DETECTED_VIOLATION`, `0xC2:
//! BAD_POOL_CALLER`, `0xC9: DRIVER_VERIFIER_IOMANAGER_VIOLATION`, `0xE6:
//! DRIVER_VERIFIER_DMA_VIOLATION`, `0xC7: TIMER_OR_DPC_INVALID`, `0xCE`,
//! `0xD1`, `0xD5`, `0x18`, `0x35`, `0x44`), and the DDI pages of the
//! routines each probe misuses.

/// What the harness passes to a probe export, in order (all `extern
/// "system"`, Win64 convention; every probe returns an `NTSTATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument {
    /// `PDEVICE_OBJECT`: the probe's FDO, as its `AddDevice` created it
    /// over the PDO the harness gave (attached, `DO_DEVICE_INITIALIZING`
    /// cleared, not removed).
    Fdo,
    /// `PIRP`: a new IRP that was never sent, with at least one free stack
    /// location for the FDO (`IoAllocateIrp(Fdo->StackSize, FALSE)`:
    /// `CurrentLocation == StackCount + 1`). The probe sends it to its own
    /// FDO (`IoCallDriver`) and commits the mistake in its dispatch routine,
    /// so the kernel sees the dispatch routine's return.
    Irp,
    /// `PIRP`: as [`Argument::Irp`], but with exactly one stack location
    /// (`IoAllocateIrp(1, FALSE)`): none is left for a lower driver.
    IrpWithOneLocation,
    /// `PDMA_ADAPTER`: an adapter `IoGetDmaAdapter` returned for the probe's
    /// PDO and that nobody has put yet.
    DmaAdapter,
    /// `ULONG`: the translated vector of a line-based interrupt assigned
    /// to the probe's PDO.
    InterruptVector,
    /// `KIRQL` (`u8`): that interrupt's device IRQL.
    InterruptIrql,
}

/// The family of rules a probe breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The IRQL a DDI requires; raises and lowers in the right direction.
    Irql,
    /// Pool: tags, double free, use after free, leaks at unload.
    Pool,
    /// IRPs: completed once, not touched after completion, `STATUS_PENDING`
    /// exactly with `IoMarkIrpPending`, stack locations, a PDO's answer to
    /// what it does not handle.
    Irp,
    /// Remove locks balanced.
    RemoveLock,
    /// DMA: common buffers freed before `PutDmaAdapter`, the adapter put once.
    Dma,
    /// What must be gone before the image is unloaded: interrupts
    /// disconnected, timers cancelled, DPCs flushed, device objects deleted.
    Unload,
    /// Object references balanced.
    ObjectReference,
    /// Not a mistake: the allocations a low-resources mode fails, each
    /// failure handled.
    LowResources,
}

/// When the mistake can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// During the call.
    InCall,
    /// When the harness sends the FDO `IRP_MN_REMOVE_DEVICE` after the call.
    AtRemove,
    /// When the harness unloads the image (`DriverUnload`) after the call
    /// (after the removal of the FDO).
    AtUnload,
    /// Never: the probe is correct (whatever the kernel fails, nothing
    /// leaks and nothing is broken).
    Never,
}

/// The bug check Windows stops with for the mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BugCheck {
    /// The bug check code (`0xC4`).
    pub code: u32,
    /// Its symbolic name (`DRIVER_VERIFIER_DETECTED_VIOLATION`).
    pub name: &'static str,
    /// Parameter 1 (the violation subcode, or for 0xC9 the I/O
    /// verification error code), where it identifies the mistake.
    pub parameter1: Option<u64>,
}

/// One export of the probe image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The exported name (`ProbeDoubleFreePool`).
    pub export: &'static str,
    /// Its arguments, in order.
    pub arguments: &'static [Argument],
    /// The rule family.
    pub rule: Rule,
    /// The mistake, in one line.
    pub mistake: &'static str,
    /// The bug check it corresponds to (`None`: Windows does not stop; see
    /// [`Probe::mistake`]).
    pub bug_check: Option<BugCheck>,
    /// When it can be seen.
    pub detected: Detected,
}

const fn bug(code: u32, name: &'static str, parameter1: Option<u64>) -> BugCheck {
    BugCheck { code, name, parameter1 }
}

const C4: &str = "DRIVER_VERIFIER_DETECTED_VIOLATION";
const C2: &str = "BAD_POOL_CALLER";
const C9: &str = "DRIVER_VERIFIER_IOMANAGER_VIOLATION";
const E6: &str = "DRIVER_VERIFIER_DMA_VIOLATION";

/// Every probe export, grouped by rule.
pub const PROBES: &[Probe] = &[
    // IRQL.
    Probe {
        export: "ProbePagedPoolAtDispatch",
        arguments: &[],
        rule: Rule::Irql,
        mistake: "ExAllocatePool2(POOL_FLAG_PAGED) at DISPATCH_LEVEL (paged pool needs <= APC_LEVEL)",
        bug_check: Some(bug(0xC4, C4, Some(0x01))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeTouchPagedPoolAtDispatch",
        arguments: &[],
        rule: Rule::Irql,
        mistake: "writes paged pool at DISPATCH_LEVEL (a page fault there cannot be served)",
        bug_check: Some(bug(0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL", None)),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeWaitAtDispatch",
        arguments: &[],
        rule: Rule::Irql,
        mistake: "KeWaitForSingleObject with a non-zero timeout at DISPATCH_LEVEL",
        bug_check: Some(bug(0xC4, C4, Some(0x122))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeRaiseIrqlToLower",
        arguments: &[],
        rule: Rule::Irql,
        mistake: "KfRaiseIrql(PASSIVE_LEVEL) at DISPATCH_LEVEL (a raise to a lower level)",
        bug_check: Some(bug(0xC4, C4, Some(0x30))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeLowerIrqlToHigher",
        arguments: &[],
        rule: Rule::Irql,
        mistake: "KeLowerIrql(DISPATCH_LEVEL) at PASSIVE_LEVEL (a lower to a higher level)",
        bug_check: Some(bug(0xC4, C4, Some(0x31))),
        detected: Detected::InCall,
    },
    // Pool.
    Probe {
        export: "ProbeFreePoolWrongTag",
        arguments: &[],
        rule: Rule::Pool,
        mistake: "ExFreePoolWithTag with a tag other than the allocation's",
        bug_check: Some(bug(0xC2, C2, Some(0x0A))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeDoubleFreePool",
        arguments: &[],
        rule: Rule::Pool,
        mistake: "ExFreePoolWithTag twice on the same allocation",
        bug_check: Some(bug(0xC2, C2, Some(0x07))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeWriteFreedPool",
        arguments: &[],
        rule: Rule::Pool,
        mistake: "writes a ULONG into pool after freeing it",
        bug_check: Some(bug(0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL", None)),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeLeakPool",
        arguments: &[],
        rule: Rule::Pool,
        mistake: "allocates non-paged pool and never frees it",
        bug_check: Some(bug(0xC4, C4, Some(0x62))),
        detected: Detected::AtUnload,
    },
    // IRPs.
    Probe {
        export: "ProbeCompleteIrpTwice",
        arguments: &[Argument::Fdo, Argument::Irp],
        rule: Rule::Irp,
        mistake: "IoCompleteRequest twice on the same IRP",
        bug_check: Some(bug(0x44, "MULTIPLE_IRP_COMPLETE_REQUESTS", None)),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeTouchIrpAfterCompletion",
        arguments: &[Argument::Fdo, Argument::Irp],
        rule: Rule::Irp,
        mistake: "writes Irp->IoStatus.Information after IoCompleteRequest",
        bug_check: Some(bug(0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL", None)),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbePendingWithoutMark",
        arguments: &[Argument::Fdo, Argument::Irp],
        rule: Rule::Irp,
        mistake: "a dispatch routine returns STATUS_PENDING without IoMarkIrpPending",
        bug_check: Some(bug(0xC9, C9, Some(0x23D))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeMarkPendingWithoutPending",
        arguments: &[Argument::Fdo, Argument::Irp],
        rule: Rule::Irp,
        mistake: "a dispatch routine calls IoMarkIrpPending, completes the IRP and returns STATUS_SUCCESS",
        bug_check: Some(bug(0xC9, C9, Some(0x23E))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeCallDriverNoStackLocation",
        arguments: &[Argument::Fdo, Argument::IrpWithOneLocation],
        rule: Rule::Irp,
        mistake: "IoCallDriver to the lower device on an IRP with no stack location left",
        bug_check: Some(bug(0x35, "NO_MORE_IRP_STACK_LOCATIONS", None)),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbePdoChangesUnhandledIrp",
        arguments: &[Argument::Fdo, Argument::Irp],
        rule: Rule::Irp,
        mistake: "a PDO completes a Plug and Play IRP it does not understand \
                  (minor function 0xFF, Verifier's IRP_MN_BOGUS) with a changed IoStatus.Status",
        bug_check: Some(bug(0xC9, C9, Some(0x213))),
        detected: Detected::InCall,
    },
    // Remove lock.
    Probe {
        export: "ProbeRemoveLockHeldAtRemove",
        arguments: &[Argument::Fdo],
        rule: Rule::RemoveLock,
        mistake: "IoReleaseRemoveLockAndWait while an earlier IoAcquireRemoveLock was never released \
                  (Windows waits for ever: a hang, no bug check)",
        bug_check: None,
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeReleaseRemoveLockNotAcquired",
        arguments: &[Argument::Fdo],
        rule: Rule::RemoveLock,
        mistake: "IoReleaseRemoveLock with a tag that was never acquired",
        bug_check: Some(bug(0xC4, C4, Some(0xD5))),
        detected: Detected::InCall,
    },
    // DMA.
    Probe {
        export: "ProbePutAdapterWithCommonBuffer",
        arguments: &[Argument::DmaAdapter],
        rule: Rule::Dma,
        mistake: "PutDmaAdapter while a common buffer of the adapter is still allocated",
        bug_check: Some(bug(0xE6, E6, Some(0x07))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbePutAdapterTwice",
        arguments: &[Argument::DmaAdapter],
        rule: Rule::Dma,
        mistake: "PutDmaAdapter twice on the same adapter",
        bug_check: Some(bug(0xE6, E6, Some(0x18))),
        detected: Detected::InCall,
    },
    Probe {
        export: "ProbeFreeCommonBufferAfterPut",
        arguments: &[Argument::DmaAdapter],
        rule: Rule::Dma,
        mistake: "FreeCommonBuffer through an adapter already put (the put itself is 0x07 first)",
        bug_check: Some(bug(0xE6, E6, Some(0x18))),
        detected: Detected::InCall,
    },
    // Unload.
    Probe {
        export: "ProbeLeaveInterruptConnected",
        arguments: &[Argument::Fdo, Argument::InterruptVector, Argument::InterruptIrql],
        rule: Rule::Unload,
        mistake: "IoConnectInterruptEx and no IoDisconnectInterruptEx before unload",
        bug_check: Some(bug(0xCE, "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS", None)),
        detected: Detected::AtUnload,
    },
    Probe {
        export: "ProbeLeaveTimerSet",
        arguments: &[],
        rule: Rule::Unload,
        mistake: "a periodic KeSetTimerEx on a timer in the image, never cancelled",
        bug_check: Some(bug(0xC7, "TIMER_OR_DPC_INVALID", Some(0x0))),
        detected: Detected::AtUnload,
    },
    Probe {
        export: "ProbeDpcNotFlushedAtUnload",
        arguments: &[],
        rule: Rule::Unload,
        mistake: "KeInsertQueueDpc on a DPC in the image, no KeFlushQueuedDpcs before unload",
        bug_check: Some(bug(0xC7, "TIMER_OR_DPC_INVALID", Some(0x1))),
        detected: Detected::AtUnload,
    },
    Probe {
        export: "ProbeKeepDeviceAtRemove",
        arguments: &[Argument::Fdo],
        rule: Rule::Unload,
        mistake: "the FDO's IRP_MN_REMOVE_DEVICE detaches but does not IoDeleteDevice",
        bug_check: Some(bug(0xC9, C9, Some(0x21E))),
        detected: Detected::AtRemove,
    },
    // Object references.
    Probe {
        export: "ProbeDereferenceTooOften",
        arguments: &[Argument::Fdo],
        rule: Rule::ObjectReference,
        mistake: "ObReferenceObject once, ObDereferenceObject twice",
        bug_check: Some(bug(0x18, "REFERENCE_BY_POINTER", None)),
        detected: Detected::InCall,
    },
    // Low resources (correct).
    Probe {
        export: "ProbeAllocate",
        arguments: &[Argument::Fdo],
        rule: Rule::LowResources,
        mistake: "none: ExAllocatePool2, IoGetDmaAdapter and AllocateCommonBuffer, \
                  each failure handled (STATUS_INSUFFICIENT_RESOURCES, nothing held)",
        bug_check: None,
        detected: Detected::Never,
    },
];

/// The catalog entry of `export`.
#[must_use]
pub fn probe(export: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|probe| probe.export == export)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every source file of the Windows glue (`src/wdm/`), where the
    /// exports are defined.
    const GLUE: &[(&str, &str)] = &[
        ("mod.rs", include_str!("wdm/mod.rs")),
        ("ddi.rs", include_str!("wdm/ddi.rs")),
        ("driver.rs", include_str!("wdm/driver.rs")),
        ("irql.rs", include_str!("wdm/irql.rs")),
        ("pool.rs", include_str!("wdm/pool.rs")),
        ("irp.rs", include_str!("wdm/irp.rs")),
        ("remove_lock.rs", include_str!("wdm/remove_lock.rs")),
        ("dma.rs", include_str!("wdm/dma.rs")),
        ("unload.rs", include_str!("wdm/unload.rs")),
        ("objects.rs", include_str!("wdm/objects.rs")),
        ("allocate.rs", include_str!("wdm/allocate.rs")),
    ];

    #[test]
    fn the_glue_list_is_every_file_of_src_wdm() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wdm");
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("src/wdm")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let listed: BTreeSet<String> = GLUE.iter().map(|(name, _)| (*name).to_owned()).collect();
        assert_eq!(on_disk, listed);
    }

    /// `(export name, its doc comment)` for every `export_name = "Probe…"`
    /// in the glue.
    fn exports_in_glue() -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (_, text) in GLUE {
            let lines: Vec<&str> = text.lines().collect();
            for (index, line) in lines.iter().enumerate() {
                let Some(rest) = line.trim().strip_prefix("#[unsafe(export_name = \"") else {
                    continue;
                };
                let name = rest.split('"').next().unwrap_or_default().to_owned();
                if !name.starts_with("Probe") {
                    continue;
                }
                let doc: Vec<&str> = lines[..index]
                    .iter()
                    .rev()
                    .map(|l| l.trim())
                    .take_while(|l| l.starts_with("///") || l.starts_with("#["))
                    .collect();
                found.push((name, doc.into_iter().rev().collect::<Vec<_>>().join("\n")));
            }
        }
        found
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let names: BTreeSet<&str> = PROBES.iter().map(|p| p.export).collect();
        assert_eq!(names.len(), PROBES.len());
        assert!(PROBES.iter().all(|p| p.export.starts_with("Probe") && p.export.is_ascii()));
    }

    #[test]
    fn every_catalog_entry_is_exported_by_the_glue_and_vice_versa() {
        let glue: BTreeSet<String> = exports_in_glue().into_iter().map(|(name, _)| name).collect();
        let catalog: BTreeSet<String> = PROBES.iter().map(|p| p.export.to_owned()).collect();
        assert_eq!(glue, catalog);
    }

    #[test]
    fn every_export_doc_names_its_bug_check_or_says_there_is_none() {
        for (name, doc) in exports_in_glue() {
            let probe = probe(&name).expect("in the catalog");
            match probe.bug_check {
                Some(bug) => {
                    let code = format!("{:#X}", bug.code);
                    assert!(doc.contains(&code), "{name}: the doc does not name {code}:\n{doc}");
                    assert!(doc.contains(bug.name), "{name}: the doc does not name {}:\n{doc}", bug.name);
                    if let Some(parameter) = bug.parameter1 {
                        // As the bug check pages write it: 0x1, 0x01 or 0x001.
                        let forms =
                            [format!("{parameter:#X}"), format!("0x{parameter:02X}"), format!("0x{parameter:03X}")];
                        assert!(
                            forms.iter().any(|form| doc.contains(form.as_str())),
                            "{name}: the doc does not name parameter 1 {parameter:#X}:\n{doc}"
                        );
                    }
                }
                None => assert!(doc.contains("No bug check"), "{name}: the doc must say there is none:\n{doc}"),
            }
            assert!(doc.contains("# Safety"), "{name}: no safety section");
        }
    }

    #[test]
    fn every_rule_of_issue_8_item_4_has_a_probe() {
        for rule in [
            Rule::Irql,
            Rule::Pool,
            Rule::Irp,
            Rule::RemoveLock,
            Rule::Dma,
            Rule::Unload,
            Rule::ObjectReference,
            Rule::LowResources,
        ] {
            assert!(PROBES.iter().any(|p| p.rule == rule), "{rule:?}");
        }
        // Only the low-resources probe is correct; every other one is
        // caught, during the call or at removal or unload.
        for probe in PROBES {
            assert_eq!(probe.detected == Detected::Never, probe.rule == Rule::LowResources, "{}", probe.export);
        }
    }

    #[test]
    fn irp_probes_take_the_fdo_and_an_irp() {
        for probe in PROBES.iter().filter(|p| p.rule == Rule::Irp) {
            assert_eq!(probe.arguments.first(), Some(&Argument::Fdo), "{}", probe.export);
            assert!(
                matches!(probe.arguments.get(1), Some(Argument::Irp | Argument::IrpWithOneLocation)),
                "{}",
                probe.export
            );
        }
        assert_eq!(probe("ProbeDoubleFreePool").map(|p| p.rule), Some(Rule::Pool));
        assert!(probe("ProbeNothing").is_none());
    }
}

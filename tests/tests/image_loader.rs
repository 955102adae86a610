//! The real `capdma_bus.sys` in the machine, below the emulated kernel: the
//! loader refuses an image whose imports are not all implemented and lists
//! them; `DriverEntry` runs; a crash in the image is a bugcheck report whose
//! RIP and stack are named from the image's PDB and unwound with its
//! `.pdata`.

mod support;

use capdma_sim::nt::Nt;
use capdma_winvm::{Machine, Stop};
#[test]
fn an_image_with_an_unimplemented_import_is_refused_with_the_list() {
    let Some(path) = support::image("capdma_bus") else { return };
    let Some(mut m) = support::machine() else { return };
    let result = m.load_image(&path, &mut |m, _module, symbol| {
        (!matches!(symbol, "IoCreateDevice" | "IoDeleteDevice")).then(|| m.add_stub(symbol).map(|(_, va)| va).ok()).flatten()
    });
    let Err(Stop::MissingImports { missing, .. }) = result else { panic!("the image was loaded") };
    let mut names: Vec<_> = missing.iter().map(|i| format!("{}!{}", i.module, i.symbol)).collect();
    names.sort();
    assert_eq!(names, ["ntoskrnl.exe!IoCreateDevice", "ntoskrnl.exe!IoDeleteDevice"]);
    assert!(m.images().is_empty());
}

/// Loads the bus image (imports the emulated kernel lacks become stubs that
/// fail the call) and runs its `DriverEntry`.
fn bus_after_driver_entry() -> Option<(Machine, Nt, u64)> {
    let path = support::image("capdma_bus")?;
    let mut m = support::machine()?;
    let mut k = Nt::new();
    let entry = m
        .load_image(&path, &mut |m, module, symbol| {
            k.resolve(m, module, symbol).or_else(|| k.host_function(m, symbol, support::refuse, 0, 15).ok())
        })
        .expect("loaded")
        .entry;
    assert!(!m.images()[0].symbols.is_empty(), "the PDB next to the image gives symbols");
    let driver_object = m.alloc_own_pages(1, capdma_winvm::Protection::READ_WRITE).unwrap();
    let registry_path = driver_object + 0x800;
    let status = m.call(&mut k, entry, &[driver_object, registry_path]).expect("DriverEntry ran");
    assert_eq!(status, 0, "STATUS_SUCCESS");
    Some((m, k, driver_object))
}

#[test]
fn driver_entry_runs_and_fills_the_driver_object() {
    let Some((m, k, driver_object)) = bus_after_driver_entry() else { return };
    assert!(k.trace.iter().any(|l| l.text.contains("capdma_bus") && l.image == "capdma_bus"), "{:?}", k.trace);
    // MajorFunction[IRP_MJ_PNP] (0x1B) and DriverUnload point into the image.
    let image = &m.images()[0];
    let pnp = m.read_u64(driver_object + 0x70 + 8 * 0x1B).unwrap();
    let unload = m.read_u64(driver_object + 0x68).unwrap();
    assert!(image.contains(pnp) && image.contains(unload));
}

#[test]
fn a_crash_in_the_image_is_reported_with_symbols_and_a_stack() {
    let Some((mut m, mut k, driver_object)) = bus_after_driver_entry() else { return };
    let pnp = m.read_u64(driver_object + 0x70 + 8 * 0x1B).unwrap();
    // IRP_MJ_PNP with a device object and an IRP at unmapped addresses.
    let Err(Stop::Bugcheck(report)) = m.call(&mut k, pnp, &[0x10, 0x20]) else { panic!("no bugcheck") };
    assert_eq!(report.vector, Some(14), "{report}");
    assert!(report.cr2.is_some_and(|a| a < 0x1000), "{report}");
    assert!(report.stack[0].contains("capdma_bus"), "RIP named from the PDB: {report}");
    assert!(report.stack.iter().any(|f| f.contains("<return to host>")), "the walk reaches the host call: {report}");
    let text = report.to_string();
    println!("{text}");
    assert!(text.contains("BUGCHECK") && text.contains("CR2"), "{text}");
}

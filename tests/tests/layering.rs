//! Stack layering on the simulated machine: filter drivers above and below
//! the bus FDO and the AVStream FDO, `IRP_MN_QUERY_INTERFACE` travelling
//! down the stacks, `IoGetDmaAdapter` on PDOs that are not the PCI PDO,
//! and several cards with several channels each.
use capdma_bus::ports::DeviceDescription;
use capdma_interface::guid::{Guid, GUID_BUS_INTERFACE_STANDARD, GUID_CAPDMA_BUS_INTERFACE};
use capdma_interface::mode::DmaMode;
use capdma_interface::status::{STATUS_DEVICE_BUSY, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use capdma_sim::board::BoardKind;
use capdma_sim::machine::{run, Action, Machine, MachineConfig, RunError, RunHooks, RunReport};
use capdma_sim::pnp::{BusInterfaceStandard, FilterKind, StackLayout};

fn small(board: BoardKind, stack: StackLayout) -> MachineConfig {
    MachineConfig { board, width: 128, height: 64, frames: 12, stack, ..MachineConfig::default() }
}

/// Every captured frame delivered and verified, no violation, no leak.
fn assert_clean(report: &RunReport) {
    assert!(report.violations.is_empty(), "violations: {:#?}", report.violations);
    assert!(!report.channels.is_empty());
    for c in &report.channels {
        assert!(c.frames_captured > 0, "{c:?}");
        assert_eq!(c.frames_delivered, c.frames_captured, "{c:?}");
        assert_eq!(c.frames_verified, c.frames_delivered, "{c:?}");
        assert_eq!(c.frames_corrupt, 0);
    }
}

fn description() -> DeviceDescription {
    DeviceDescription { scatter_gather: true, dma64: true, maximum_length: 1 << 20 }
}

/// Two filters of `kind` in each of the four places.
fn twice_everywhere(kind: FilterKind) -> StackLayout {
    StackLayout { below_bus: vec![kind; 2], above_bus: vec![kind; 2], below_avstream: vec![kind; 2], above_avstream: vec![kind; 2] }
}

#[test]
fn pass_through_filters_everywhere_stream_in_both_modes() {
    for (board, mode) in [(BoardKind::Legacy, DmaMode::CommonBuffer), (BoardKind::ScatterGather, DmaMode::ScatterGather)] {
        let mut machine = Machine::new(small(board, twice_everywhere(FilterKind::PassThrough))).unwrap();
        machine.start().unwrap();
        // The child's query went down its whole stack: two upper filters, the
        // AVStream FDO, two lower filters, then the child PDO answered.
        let fdo = machine.avstream_fdo(0, 0).unwrap();
        assert_eq!(machine.tree().stack_of(fdo).len(), 6, "PDO + 2 lower + FDO + 2 upper");
        let mut answer = capdma_avstream::BusClient::query_buffer();
        // SAFETY: `answer` is a live local of `Size` bytes.
        let irp = unsafe {
            machine.tree().query_interface(fdo, Some(GUID_CAPDMA_BUS_INTERFACE), answer.header.size, answer.header.version, (&raw mut answer).cast())
        };
        assert_eq!(irp.status, STATUS_SUCCESS, "{}", machine.tree().describe_path(&irp.path));
        assert_eq!(irp.path.len(), 6, "{}", machine.tree().describe_path(&irp.path));
        assert_eq!(irp.path.last().copied(), machine.child_pdo(0, 0));
        // SAFETY: drops the reference this extra query took, once.
        unsafe { answer.header.interface_dereference.unwrap()(answer.header.context) };
        machine.run(&mut RunHooks::default());
        machine.teardown();
        let report = machine.report();
        assert_clean(&report);
        assert_eq!(report.channels[0].mode, mode.name());
    }
}

#[test]
fn a_filter_failing_unknown_interfaces_above_avstream_fails_its_start_cleanly() {
    let stack = StackLayout { above_avstream: vec![FilterKind::FailsUnknownQueryInterface], ..StackLayout::none() };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let mut machine = Machine::new(small(board, stack.clone())).unwrap();
        let Err(RunError::Driver { step, status, .. }) = machine.start() else {
            panic!("the child's start must fail behind a filter that eats the query");
        };
        assert_eq!(status, STATUS_NOT_SUPPORTED, "{step}");
        assert!(step.contains("IRP_MN_QUERY_INTERFACE"), "{step}");
        assert!(step.contains("upper filter"), "the path names the filter that completed it: {step}");
        assert_eq!(machine.bus().reference_count(), 0, "no interface reference was taken");
        machine.teardown();
        let report = machine.report();
        assert!(report.violations.is_empty(), "a failed child start leaks nothing: {:#?}", report.violations);
    }
    // The same through run(): a clear error, nothing leaked.
    match run(small(BoardKind::Legacy, stack), &mut RunHooks::default()) {
        Err(RunError::Driver { status, report, .. }) => {
            assert_eq!(status, STATUS_NOT_SUPPORTED);
            assert!(report.violations.is_empty(), "{:#?}", report.violations);
        }
        other => panic!("expected a driver error, got {other:?}"),
    }
}

#[test]
fn io_get_dma_adapter_on_the_child_pdo_works_through_the_forwarded_standard_interface() {
    // Filters on both stacks, including ones that fail unknown interfaces:
    // they know GUID_BUS_INTERFACE_STANDARD, so the forwarded query gets through.
    let stack = StackLayout {
        below_bus: vec![FilterKind::FailsUnknownQueryInterface],
        above_bus: vec![FilterKind::PassThrough],
        below_avstream: vec![FilterKind::PassThrough],
        above_avstream: vec![FilterKind::PassThrough],
    };
    let mut machine = Machine::new(small(BoardKind::ScatterGather, stack)).unwrap();
    machine.start().unwrap();
    let child = machine.child_pdo(0, 0).unwrap();
    let pci = machine.pci(0).unwrap().clone();
    let adapters_before = pci.adapters().len();
    let (adapter, map_registers) = machine.tree().io_get_dma_adapter(child, &description()).expect("IoGetDmaAdapter on the child PDO");
    assert_eq!(map_registers, 64);
    assert_eq!(pci.adapters().len(), adapters_before + 1, "the adapter was made on the PCI PDO");
    assert!(pci.adapters().iter().any(|a| a.id() == adapter.id()));
    assert_eq!(pci.interface_references(), 0, "IoGetDmaAdapter dropped the interface reference");
    assert_eq!(pci.interface_references_taken(), 1);

    // The path: down the child's stack (upper filter, FDO, lower filter, PDO),
    // forwarded to the top of the bus stack and down to the PCI PDO.
    let mut table = BusInterfaceStandard::query_buffer();
    // SAFETY: `table` is a live local of `SIZE` bytes.
    let irp = unsafe {
        machine.tree().query_interface(child, Some(GUID_BUS_INTERFACE_STANDARD), BusInterfaceStandard::SIZE, 1, (&raw mut table).cast())
    };
    assert_eq!(irp.status, STATUS_SUCCESS);
    let names = machine.tree().describe_path(&irp.path);
    assert_eq!(irp.path.len(), 8, "{names}");
    assert_eq!(irp.path[3], child, "{names}");
    assert_eq!(irp.path.last().copied(), machine.pci_pdo(0), "{names}");
    assert!(table.get_dma_adapter.is_some());
    // SAFETY: drops the reference the answer took, once.
    unsafe { table.header.interface_dereference.unwrap()(table.header.context) };
    assert_eq!(pci.interface_references(), 0);

    adapter.put();
    machine.run(&mut RunHooks::default());
    machine.teardown();
    assert_clean(&machine.report());
}

#[test]
fn io_get_dma_adapter_on_a_pdo_that_forwards_nothing_is_null() {
    let mut machine = Machine::new(small(BoardKind::ScatterGather, StackLayout::none())).unwrap();
    machine.start().unwrap();
    let software = machine.software_pdo();
    assert!(machine.tree().io_get_dma_adapter(software, &description()).is_none(), "no bus interface: NULL");
    // The PCI PDO itself always works.
    let pci_pdo = machine.pci_pdo(0).unwrap();
    let (adapter, _) = machine.tree().io_get_dma_adapter(pci_pdo, &description()).expect("on the PCI PDO");
    adapter.put();
    // Any other interface type on the child PDO is completed untouched.
    let unknown = Guid::new(0x7021_1b0e, 0x0afb, 0x47db, [0xaf, 0xc1, 0x41, 0x0b, 0xf8, 0x42, 0x49, 0x7a]);
    let mut buffer = [0u8; 64];
    for guid in [Some(unknown), None] {
        // SAFETY: `buffer` is 64 writable bytes.
        let irp = unsafe { machine.tree().query_interface(machine.child_pdo(0, 0).unwrap(), guid, 64, 1, buffer.as_mut_ptr().cast()) };
        assert_eq!(irp.status, STATUS_NOT_SUPPORTED, "{guid:?}");
    }
    assert_eq!(buffer, [0u8; 64], "untouched");
    assert!(machine.violations().is_empty(), "{:#?}", machine.violations().list());
    // IoGetDmaAdapter on a device object that is not a PDO is a caller bug.
    let fdo = machine.bus_fdo(0).unwrap();
    assert!(machine.tree().io_get_dma_adapter(fdo, &description()).is_none());
    let taken = machine.violations().take();
    assert_eq!(taken.len(), 1, "{taken:#?}");
    assert!(taken[0].message.contains("not a PDO"), "{taken:#?}");
    machine.run(&mut RunHooks::default());
    machine.teardown();
    assert_clean(&machine.report());
}

#[test]
fn two_cards_with_three_channels_each_stream_in_both_modes_on_a_shared_line() {
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let config = MachineConfig { cards: 2, channels: 3, ..small(board, StackLayout::everywhere(FilterKind::PassThrough)) };
        let report = match run(config, &mut RunHooks::default()) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_clean(&report);
        assert_eq!(report.channels.len(), 6);
        for card in 0..2 {
            assert_eq!(report.channels.iter().filter(|c| c.card == card).count(), 3);
        }
        assert!(report.interrupts_claimed > 0);
    }
}

#[test]
fn a_filter_failing_unknown_interfaces_on_the_bus_stack_is_harmless() {
    // The capdma interface is answered by the child PDO; the bus stack only
    // ever sees the standard interface, which the filter knows.
    let stack = StackLayout {
        below_bus: vec![FilterKind::FailsUnknownQueryInterface],
        above_bus: vec![FilterKind::FailsUnknownQueryInterface],
        ..StackLayout::none()
    };
    for board in [BoardKind::Legacy, BoardKind::ScatterGather] {
        let report = run(small(board, stack.clone()), &mut RunHooks::default()).unwrap();
        assert_clean(&report);
    }
}

#[test]
fn a_filter_failing_unknown_interfaces_below_avstream_also_fails_the_start_but_not_io_get_dma_adapter() {
    let stack = StackLayout { below_avstream: vec![FilterKind::FailsUnknownQueryInterface], ..StackLayout::none() };
    let mut machine = Machine::new(small(BoardKind::ScatterGather, stack)).unwrap();
    let Err(RunError::Driver { status, step, .. }) = machine.start() else { panic!("must fail") };
    assert_eq!(status, STATUS_NOT_SUPPORTED, "{step}");
    assert!(step.contains("lower filter"), "{step}");
    // The child PDO exists (the bus started and enumerated it) and still
    // forwards the standard interface, which this filter passes.
    let child = machine.child_pdo(0, 0).unwrap();
    let (adapter, _) = machine.tree().io_get_dma_adapter(child, &description()).expect("standard interface passes");
    adapter.put();
    machine.teardown();
    assert!(machine.report().violations.is_empty(), "{:#?}", machine.report().violations);
}

#[test]
fn removal_through_filtered_stacks_is_vetoed_by_the_child_while_streaming_then_goes_children_first() {
    let mut machine = Machine::new(small(BoardKind::Legacy, twice_everywhere(FilterKind::PassThrough))).unwrap();
    machine.start().unwrap();
    let at = machine.frame_time(4);
    machine.schedule(at, Action::RequestRemoval { card: 0 });
    machine.run(&mut RunHooks::default());
    machine.teardown();
    let removal: Vec<_> = machine
        .statuses()
        .iter()
        .filter(|s| s.what.contains("QUERY_REMOVE") || s.what.contains("IRP_MN_REMOVE_DEVICE"))
        .map(|s| (s.what.as_str(), s.status))
        .collect();
    assert_eq!(
        removal,
        vec![
            ("card 0 channel 0: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack)", STATUS_DEVICE_BUSY),
            ("card 0 channel 0: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack) at teardown", STATUS_SUCCESS),
            ("card 0: IRP_MN_QUERY_REMOVE_DEVICE (bus stack) at teardown", STATUS_SUCCESS),
            ("card 0 channel 0: IRP_MN_REMOVE_DEVICE (AVStream stack)", STATUS_SUCCESS),
            ("card 0: IRP_MN_REMOVE_DEVICE (bus FDO)", STATUS_SUCCESS),
        ],
        "vetoed by the child's open pin (the bus never asked), then children first through every filter"
    );
    assert_clean(&machine.report());
}

#[test]
fn the_bus_does_not_veto_a_query_remove_while_its_child_holds_the_interface() {
    let mut machine = Machine::new(small(BoardKind::ScatterGather, twice_everywhere(FilterKind::PassThrough))).unwrap();
    machine.start().unwrap();
    assert_eq!(machine.bus().reference_count(), 1);
    let bus_fdo = machine.bus_fdo(0).unwrap();
    let irp = machine.tree().query_remove(bus_fdo);
    assert_eq!(irp.status, STATUS_SUCCESS, "children are removed before their bus: it is always asked while referenced");
    assert_eq!(irp.path.len(), 6, "through both filter pairs, the bus FDO and down to the PCI PDO");
    assert_eq!(machine.tree().cancel_remove(bus_fdo).status, STATUS_SUCCESS);
    machine.run(&mut RunHooks::default());
    machine.teardown();
    assert_clean(&machine.report());
}

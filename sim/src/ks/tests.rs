//! The KS queue model against the AVStream rules it stands for.
use capdma_avstream::ports::{FrameCompletion, KsPinPort};
use capdma_bus::ports::DeviceDescription;

use super::{PinFlags, SimKsPin, SimMapping};
use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::IrqlTracker;
use crate::memory::{Allocation, MemoryConfig, PhysicalMemory};
use crate::violations::Violations;

struct World {
    violations: Violations,
    irql: IrqlTracker,
    memory: PhysicalMemory,
}

fn world() -> World {
    let violations = Violations::new();
    let irql = IrqlTracker::new(violations.clone());
    let memory = PhysicalMemory::new(MemoryConfig { high_memory: false, ..MemoryConfig::default() }, violations.clone());
    World { violations, irql, memory }
}

fn byte_pin(w: &World) -> SimKsPin {
    let pin = SimKsPin::new(PinFlags::default(), None, w.irql.clone(), w.violations.clone());
    pin.set_running(true);
    pin
}

fn buffer(w: &World, bytes: usize) -> Allocation {
    w.memory.allocate_scattered(bytes, "test frame").unwrap()
}

fn done(data_used: u32) -> FrameCompletion {
    FrameCompletion { data_used, ..FrameCompletion::default() }
}

#[test]
fn no_frame_means_no_leading_edge() {
    let w = world();
    let pin = byte_pin(&w);
    assert!(pin.leading_edge().is_none());
    assert!(w.violations.is_empty());
}

#[test]
fn byte_mode_offset_is_the_frame_and_eject_completes_it() {
    let w = world();
    let pin = byte_pin(&w);
    let b = buffer(&w, 8192);
    pin.submit(7, b.va, 8192);
    let le = pin.leading_edge().unwrap();
    let off = pin.offset_out(le);
    assert_eq!((off.data, off.count, off.remaining), (b.va, 8192, 8192));
    assert_eq!(pin.frame_extent(le), 8192);
    pin.complete_frame(le, &done(100));
    pin.advance_offsets_and_unlock(le, 100, true);
    let out = pin.take_completed().unwrap();
    assert_eq!(out.buffer_id, 7);
    assert_eq!(out.completion.unwrap().data_used, 100);
    assert!(!out.cancelled);
    assert!(w.violations.is_empty(), "{:?}", w.violations.list());
}

#[test]
fn a_clone_holds_its_frame_and_frames_complete_in_order() {
    let w = world();
    let pin = byte_pin(&w);
    let (a, b) = (buffer(&w, 4096), buffer(&w, 4096));
    pin.submit(1, a.va, 4096);
    pin.submit(2, b.va, 4096);
    let le = pin.leading_edge().unwrap();
    let first = pin.clone_pointer(le).unwrap();
    pin.advance_offsets(le, 4096, false).unwrap(); // onto frame 2
    let second = pin.clone_pointer(le).unwrap();
    assert_eq!(pin.advance_offsets(le, 4096, false), Err(capdma_interface::status::STATUS_DEVICE_NOT_READY));
    // Frame 2 finishes first, but KS hands frames back in queue order.
    pin.delete(second);
    assert!(pin.take_completed().is_none(), "frame 2 must wait for frame 1");
    pin.delete(first);
    assert_eq!(pin.take_completed().map(|f| f.buffer_id), Some(1));
    assert_eq!(pin.take_completed().map(|f| f.buffer_id), Some(2));
    assert_eq!(pin.live_clones(), 0);
    assert!(w.violations.is_empty(), "{:?}", w.violations.list());
}

#[test]
fn without_enforce_fifo_a_frame_goes_back_as_soon_as_nothing_holds_it() {
    let w = world();
    let flags = PinFlags { complete_out_of_order: true, ..PinFlags::default() };
    let pin = SimKsPin::new(flags, None, w.irql.clone(), w.violations.clone());
    pin.set_running(true);
    let (a, b, c) = (buffer(&w, 4096), buffer(&w, 4096), buffer(&w, 4096));
    pin.submit(1, a.va, 4096);
    pin.submit(2, b.va, 4096);
    let le = pin.leading_edge().unwrap();
    let first = pin.clone_pointer(le).unwrap();
    pin.advance_offsets(le, 4096, false).unwrap(); // onto frame 2
    let second = pin.clone_pointer(le).unwrap();
    assert!(pin.advance_offsets(le, 4096, false).is_err(), "past the last frame");
    // Frame 2 finishes first and goes back first.
    pin.delete(second);
    assert_eq!(pin.take_completed().map(|f| f.buffer_id), Some(2), "out of order");
    // The queue still finds frame 1 (a gap behind it) and a new frame 3.
    pin.submit(3, c.va, 4096);
    assert_eq!(pin.frame_extent(first), 4096);
    pin.delete(first);
    assert_eq!(pin.take_completed().map(|f| f.buffer_id), Some(1));
    let le = pin.leading_edge().expect("frame 3 at the leading edge");
    pin.advance_offsets_and_unlock(le, 4096, true);
    assert_eq!(pin.take_completed().map(|f| f.buffer_id), Some(3));
    assert_eq!((pin.queued_frames(), pin.live_clones()), (0, 0));
    assert!(w.violations.is_empty(), "{:?}", w.violations.list());
}

#[test]
fn mapping_mode_generates_mappings_no_larger_than_max_mapping_byte_count() {
    let w = world();
    let description = DeviceDescription { scatter_gather: true, dma64: true, maximum_length: 1 << 20 };
    let adapter = SimDmaAdapter::new(description, AdapterConfig::default(), &w.memory, &w.irql);
    let mapping = SimMapping { adapter: crate::ks::MappingSource::Adapter(adapter.clone()), max_mapping_byte_count: 1000 };
    let flags = PinFlags { generate_mappings: true, ..PinFlags::default() };
    let pin = SimKsPin::new(flags, Some(mapping), w.irql.clone(), w.violations.clone());
    pin.set_running(true);
    let b = buffer(&w, 3 * 4096);
    pin.submit(1, b.va, 3 * 4096);
    let le = pin.leading_edge().unwrap();
    let off = pin.offset_out(le);
    assert!(off.data.is_null());
    // SAFETY: the model keeps the mappings alive while the frame is queued.
    let maps = unsafe { std::slice::from_raw_parts(off.mappings, off.count as usize) };
    assert_eq!(maps.iter().map(|m| u64::from(m.byte_count)).sum::<u64>(), 3 * 4096);
    assert!(maps.iter().all(|m| m.byte_count <= 1000));
    assert_eq!(adapter.live_lists(), 1, "the frame's S/G list is held while it is queued");
    let clone = pin.clone_pointer(le).unwrap();
    pin.advance_offsets_and_unlock(le, off.count, false);
    pin.complete_frame(clone, &done(3 * 4096));
    pin.delete(clone);
    assert!(pin.take_completed().is_some());
    assert_eq!(adapter.live_lists(), 0, "the list is put before the frame goes back");
    assert!(w.violations.is_empty(), "{:?}", w.violations.list());
    adapter.put();
}

#[test]
fn misuse_is_recorded_not_ignored() {
    let w = world();
    let pin = byte_pin(&w);
    let b = buffer(&w, 4096);
    pin.submit(1, b.va, 4096);
    let le = pin.leading_edge().unwrap();
    let clone = pin.clone_pointer(le).unwrap();
    pin.delete(clone);
    pin.delete(clone); // a deleted pointer used again
    pin.complete_frame(le, &done(5000)); // DataUsed beyond FrameExtent
    let kept = pin.clone_pointer(le).unwrap();
    pin.flush_on_stop(); // a clone alive at KSSTATE_STOP
    let _ = kept;
    let list = w.violations.list();
    assert!(list.iter().any(|v| v.contains("not live")), "{list:?}");
    assert!(list.iter().any(|v| v.contains("exceeds FrameExtent")), "{list:?}");
    assert!(list.iter().any(|v| v.contains("alive at KSSTATE_STOP")), "{list:?}");
}

#[test]
fn attempt_processing_requests_a_process_call_only_while_running() {
    let w = world();
    let pin = SimKsPin::new(
        PinFlags { do_not_initiate_processing: true, ..PinFlags::default() },
        None,
        w.irql.clone(),
        w.violations.clone(),
    );
    pin.attempt_processing(true);
    assert!(!pin.take_process_request(), "not running: no Process");
    pin.set_running(true);
    let b = buffer(&w, 4096);
    pin.submit(1, b.va, 4096);
    assert!(!pin.take_process_request(), "DO_NOT_INITIATE_PROCESSING: a new frame starts nothing");
    pin.attempt_processing(true);
    assert!(pin.take_process_request());
}

#[test]
fn process_is_requested_as_avstream_does_not_on_every_arrival() {
    use capdma_interface::status::{STATUS_PENDING, STATUS_SUCCESS};
    let w = world();
    let pin = byte_pin(&w);
    assert!(pin.take_process_request(), "entering KSSTATE_RUN attempts processing");
    let (a, b) = (buffer(&w, 4096), buffer(&w, 4096));
    pin.submit(1, a.va, 4096);
    assert!(pin.take_process_request(), "a frame landing in a dry queue starts processing");
    pin.submit(2, b.va, 4096);
    assert!(!pin.take_process_request(), "a frame behind another one does not");
    // Process returned STATUS_PENDING: nothing calls it again by itself,
    // not even a frame going back to the application.
    pin.process_returned(STATUS_PENDING);
    assert!(!pin.take_process_request());
    let le = pin.leading_edge().unwrap();
    pin.advance_offsets_and_unlock(le, 4096, true);
    assert!(pin.take_completed().is_some());
    assert!(!pin.take_process_request(), "only KsPinAttemptProcessing restarts it");
    // STATUS_SUCCESS with a frame still waiting: AVStream calls again.
    pin.process_returned(STATUS_SUCCESS);
    assert!(pin.take_process_request());
    let le = pin.leading_edge().unwrap();
    pin.advance_offsets_and_unlock(le, 4096, true);
    pin.process_returned(STATUS_SUCCESS);
    assert!(!pin.take_process_request(), "nothing left: no call");
    pin.attempt_processing(true);
    assert!(pin.take_process_request());
}

/// A mapping-mode pin over an emulated kernel adapter granted
/// `map_registers`, whose DMA-remapping domain has `window_pages` pages.
fn domain_pin(w: &World, map_registers: u32, window_pages: u64) -> (SimKsPin, crate::ks::DomainMapper) {
    let domain = crate::dma::DmaDomain::new("test domain", 64 << 30, window_pages * 4096);
    let raw = crate::ks::DomainMapper::register(0xFFFF_F800_0000_2000, domain, map_registers, &w.memory);
    let Some(crate::ks::MappingSource::Domain(mapper)) = crate::ks::MappingSource::from_raw(raw) else {
        panic!("a registered domain mapper")
    };
    let mapping = SimMapping { adapter: crate::ks::MappingSource::Domain(mapper.clone()), max_mapping_byte_count: 3000 };
    let flags = PinFlags { generate_mappings: true, ..PinFlags::default() };
    let pin = SimKsPin::new(flags, Some(mapping), w.irql.clone(), w.violations.clone());
    pin.set_running(true);
    (pin, mapper)
}

#[test]
fn a_frame_larger_than_the_grant_is_mapped_by_several_transfers_into_one_whole_table() {
    let w = world();
    let (pin, mapper) = domain_pin(&w, 4, 1024);
    let b = buffer(&w, 10 * 4096);
    // 100 bytes into the first page, 9 pages long: 10 pages, 4 + 4 + 2.
    let bytes = 9 * 4096;
    pin.submit(1, b.va.wrapping_add(100), bytes);
    let le = pin.leading_edge().expect("mapped");
    let off = pin.offset_out(le);
    // SAFETY: the model keeps the mappings alive while the frame is queued.
    let maps = unsafe { std::slice::from_raw_parts(off.mappings, off.count as usize) };
    assert_eq!((off.count, off.remaining), (off.count, off.count), "the whole table, from its start");
    assert_eq!(maps.iter().map(|m| m.byte_count).sum::<u32>(), bytes, "every byte of the frame mapped");
    assert!(maps.iter().all(|m| m.byte_count <= 3000), "split at MaxMappingByteCount within each transfer");
    assert_eq!(pin.stats().sg_lists, 3, "three transfers of at most 4 map registers");
    assert_eq!(mapper.map_registers_in_use(), 10, "all held while the frame is queued");
    // Each transfer's pages are mapped at a logical run of their own: the
    // table walks the frame's bytes in order across the three.
    let boundaries = maps.windows(2).filter(|p| p[0].logical_address + u64::from(p[0].byte_count) != p[1].logical_address);
    assert_eq!(boundaries.count(), 2, "two seams between three logical runs");
    let clone = pin.clone_pointer(le).unwrap();
    pin.advance_offsets_and_unlock(le, off.count, false);
    pin.complete_frame(clone, &done(bytes));
    pin.delete(clone);
    assert!(pin.take_completed().is_some());
    assert_eq!(mapper.map_registers_in_use(), 0, "every list put before the frame goes back");
    assert!(mapper.retire().is_empty(), "no list left");
    assert!(w.violations.is_empty(), "KS asked for no transfer above the grant: {:?}", w.violations.list());
}

#[test]
fn a_frame_that_cannot_be_mapped_whole_waits_holding_no_map_registers() {
    let w = world();
    // The domain has room for 8 of the frame's 10 pages.
    let (pin, mapper) = domain_pin(&w, 4, 8);
    let b = buffer(&w, 10 * 4096);
    pin.submit(1, b.va, 10 * 4096);
    assert!(pin.leading_edge().is_none(), "not mapped: no leading edge to lock");
    assert!(pin.waiting_for_map_registers());
    assert_eq!((pin.stats().map_waits, pin.stats().sg_lists), (1, 0));
    assert_eq!(mapper.map_registers_in_use(), 0, "the transfers already built were put back");
    assert!(pin.leading_edge().is_none(), "a second lock still cannot map it");
    assert_eq!((pin.stats().map_waits, mapper.map_registers_in_use()), (2, 0));
    pin.flush_on_stop();
    assert!(mapper.retire().is_empty());
    assert!(w.violations.is_empty(), "{:?}", w.violations.list());
}

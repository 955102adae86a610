//! What the machine shows of itself: its boards, bus drivers, device
//! objects, memory and IRQL tracker, the statuses and channel logs it
//! recorded, and its clock; with the two helpers the other files share
//! (recording a status, finding a channel).
use std::rc::Rc;

use capdma_bus::device::BusDevice;
use capdma_interface::status::NtStatus;

use super::actions::StatusRecord;
use super::build::{ChannelLog, Machine};
use super::config::MachineConfig;
use super::platform::SimBusPlatform;
use crate::board::Board;
use crate::irql::IrqlTracker;
use crate::memory::PhysicalMemory;
use crate::nt::etw::EtwRecord;
use crate::pnp::{AvStreamDevice, DeviceId, DeviceTree, PciFunction};
use crate::violations::Violations;

impl Machine {
    /// Card 0's board, for fault injection.
    #[must_use]
    pub fn board(&self) -> &Board {
        &self.cards[0].board
    }

    /// Card `card`'s board.
    #[must_use]
    pub fn board_of(&self, card: u32) -> Option<&Board> {
        self.cards.get(card as usize).map(|c| &c.board)
    }

    /// Card 0's bus driver device (the core).
    ///
    /// # Panics
    /// When the machine runs the bus image (`--drivers bus-image`): it has
    /// no core; see [`Machine::bus_of`].
    #[must_use]
    pub fn bus(&self) -> &BusDevice<SimBusPlatform> {
        self.bus_of(0).expect("the machine runs the bus core (not the image)")
    }

    /// Card `card`'s bus driver device (the core); `None` for no such card
    /// or a machine running the bus image.
    #[must_use]
    pub fn bus_of(&self, card: u32) -> Option<&BusDevice<SimBusPlatform>> {
        self.cards.get(card as usize).and_then(|c| c.bus.core()).map(|b| &**b)
    }

    /// What the emulated kernel did so far, when the machine runs the bus
    /// image.
    #[must_use]
    pub fn image_report(&self) -> Option<super::ImageReport> {
        let delivered = self.channels.iter().map(|r| r.report.frames_delivered).sum();
        self.image.as_ref().map(|w| w.report(delivered))
    }

    /// The bus image's ETW events so far, decoded, in order, each with its
    /// virtual time (100-ns units): the trace session the machine starts
    /// before `DriverEntry` records every level and keyword. Empty for a
    /// machine running the cores.
    #[must_use]
    pub fn image_trace(&self) -> &[EtwRecord] {
        self.image.as_ref().map_or(&[], |w| w.sys.nt.etw.records.as_slice())
    }

    /// With the AVStream image: the KS devices whose adapter came through
    /// `IKsDeviceFunctions::RegisterAdapterObjectEx` (the entry point the
    /// docs prescribe for 64-bit drivers) so far; 0 otherwise.
    #[must_use]
    pub fn image_adapters_registered_ex(&self) -> usize {
        self.image.as_ref().map_or(0, |w| w.sys.nt.ks.devices.values().filter(|d| d.registered_ex).count())
    }

    /// How many times the images called the emulated kernel's DDI `name`
    /// (`KsDeviceRegisterAdapterObject`, `IoGetDmaAdapter`, ...) so far; 0
    /// for a machine running the cores.
    #[must_use]
    pub fn image_ddi_calls(&self, name: &str) -> u64 {
        self.image.as_ref().and_then(|w| w.sys.nt.calls_by_ddi.get(name).copied()).unwrap_or(0)
    }

    /// The AVStream image's `Process` calls so far, each timed by the
    /// emulated `ks.sys` (the first [`crate::nt::ks::PROCESS_SAMPLES_KEPT`]);
    /// empty for a machine not running the AVStream image.
    #[must_use]
    pub fn image_process_samples(&self) -> &[crate::nt::ks::ProcessSample] {
        self.image.as_ref().map_or(&[], |w| w.sys.nt.ks.process_samples.as_slice())
    }

    /// The DDI calls the AVStream image's `Process` calls made so far, by
    /// name (`KsPinGetLeadingEdgeStreamPointer`, `memcpy`, ...); empty for
    /// a machine not running the AVStream image.
    #[must_use]
    pub fn image_process_calls_by_ddi(&self) -> Vec<(&'static str, u64)> {
        self.image.as_ref().map(|w| w.sys.nt.ks.process_calls_by_ddi.iter().map(|(n, c)| (*n, *c)).collect()).unwrap_or_default()
    }

    /// The device stack on the emulated kernel's child PDO of card `card`'s
    /// channel `channel` (the bus image's child), bottom first: each device
    /// object as who created it (`symbol+offset` of the image's
    /// `IoCreateDevice` call, `ks.sys (KsCreateDevice)` for the AVStream
    /// FDO, `filter` for a pass-through filter of [`MachineConfig::stack`]).
    /// `None` for a machine running the cores, no such child, or a child
    /// already removed.
    #[must_use]
    pub fn image_child_stack(&self, card: u32, channel: u32) -> Option<Vec<String>> {
        let world = self.image.as_ref()?;
        let child = world.cards.get(card as usize)?.pnp.children.iter().filter(|c| !c.removed).nth(channel as usize)?;
        let devices = &world.sys.nt.io.devices;
        let mut stack = Vec::new();
        let mut device = Some(child.pdo);
        while let Some(va) = device.filter(|_| stack.len() < 64) {
            let record = devices.get(&va)?;
            stack.push(record.created_by.clone());
            device = devices.iter().find(|(_, d)| d.lower == Some(va) && !d.deleted).map(|(above, _)| *above);
        }
        Some(stack)
    }

    /// The rules broken so far.
    #[must_use]
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// The machine's memory.
    #[must_use]
    pub fn memory(&self) -> &PhysicalMemory {
        &self.memory
    }

    /// The IRQL tracker (tests call DDIs at `PASSIVE_LEVEL` through it).
    #[must_use]
    pub fn irql(&self) -> &IrqlTracker {
        &self.irql
    }

    /// The Plug and Play device tree.
    #[must_use]
    pub fn tree(&self) -> &DeviceTree {
        &self.tree
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Card `card`'s PCI PDO.
    #[must_use]
    pub fn pci_pdo(&self, card: u32) -> Option<DeviceId> {
        self.cards.get(card as usize).map(|c| c.pci_pdo)
    }

    /// Card `card`'s bus FDO.
    #[must_use]
    pub fn bus_fdo(&self, card: u32) -> Option<DeviceId> {
        self.cards.get(card as usize).map(|c| c.bus_fdo)
    }

    /// Card `card`'s PCI function (its adapters, its interface references).
    #[must_use]
    pub fn pci(&self, card: u32) -> Option<&PciFunction> {
        self.cards.get(card as usize).map(|c| &c.pci)
    }

    /// The child PDO the bus enumerated for `channel` of `card` (after `start`).
    #[must_use]
    pub fn child_pdo(&self, card: u32, channel: u32) -> Option<DeviceId> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| c.pdo)
    }

    /// The AVStream FDO over that child PDO (after `start`).
    #[must_use]
    pub fn avstream_fdo(&self, card: u32, channel: u32) -> Option<DeviceId> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| c.fdo)
    }

    /// The AVStream device on `channel` of `card` (after `start`).
    #[must_use]
    pub fn avstream_device(&self, card: u32, channel: u32) -> Option<Rc<AvStreamDevice>> {
        self.cards.get(card as usize)?.children.get(channel as usize).map(|c| Rc::clone(&c.device))
    }

    /// A root-enumerated software PDO whose bus forwards nothing.
    #[must_use]
    pub fn software_pdo(&self) -> DeviceId {
        self.software_pdo
    }

    /// The statuses actions and the teardown saw, in order.
    #[must_use]
    pub fn statuses(&self) -> &[StatusRecord] {
        &self.statuses
    }

    /// What the machine recorded about `channel` of `card`.
    #[must_use]
    pub fn channel_log(&self, card: u32, channel: u32) -> Option<ChannelLog> {
        let run = self.channels.iter().find(|r| r.card == card && r.index == channel)?;
        let mut log = run.log.clone();
        let ks = run.ks.stats();
        log.ks_submitted = ks.submitted;
        log.ks_completed = ks.completed;
        log.ks_map_waits = ks.map_waits;
        log.ks_sg_lists = ks.sg_lists;
        log.ks_queued = run.ks.queued_frames();
        log.ks_live_clones = run.ks.live_clones();
        if let Some(pin) = run.pin.as_ref() {
            log.pin_stats = Some(pin.stats());
        }
        Some(log)
    }

    /// The current virtual time, 100-ns units.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.timeline.now()
    }

    /// The time of the `k`-th capture (1-based) of the current run, 100-ns
    /// units: schedule an action at `frame_time(k) - 1` to have it happen
    /// just before that capture.
    #[must_use]
    pub fn frame_time(&self, k: u32) -> u64 {
        self.run_start + self.config.frame_interval_100ns() * u64::from(k)
    }

    pub(super) fn record_status(&mut self, what: impl Into<String>, status: NtStatus) {
        self.statuses.push(StatusRecord { at_100ns: self.timeline.now(), what: what.into(), status });
    }

    pub(super) fn channel_position(&self, card: u32, channel: u32) -> Option<usize> {
        self.channels.iter().position(|r| r.card == card && r.index == channel)
    }
}

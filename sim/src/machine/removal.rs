//! Plug and Play removal of the cards and the end of the machine: the
//! surprise removal, Windows' orderly removal (`IRP_MN_QUERY_REMOVE_DEVICE`
//! down the child stacks and then the bus stack, `IRP_MN_REMOVE_DEVICE`
//! after), the bus FDO's release through the core's teardown sequence
//! (with the glue steps of `teardown.rs`), and [`Machine::teardown`]: pins
//! closed, every card removed, then the leak checks.
use capdma_avstream::bus_client::BusClient;
use capdma_bus::pnp::state::Release;
use capdma_interface::guid::GUID_CAPDMA_BUS_INTERFACE;
use capdma_interface::status::{nt_success, status_name, STATUS_SUCCESS};

use super::build::Machine;
use super::run::RunHooks;
use super::teardown::SimTeardown;
use crate::violations::ViolationKind;

impl Machine {
    /// Plug and Play's surprise removal of `card` (see [`Action::SurpriseRemoval`](super::Action::SurpriseRemoval)).
    pub(super) fn surprise_removal(&mut self, card: u32, now: u64, hooks: &mut RunHooks<'_>) {
        let Some(c) = self.cards.get(card as usize) else { return };
        if c.removed {
            return;
        }
        let Some(bus) = c.bus.core().cloned() else {
            self.image_surprise_removal(card as usize, now, hooks);
            return;
        };
        // IRP_MN_SURPRISE_REMOVAL: the children first (the AVStream core has
        // nothing to do: KS fails new requests), then the bus FDO: the core
        // stops the engines and the glue gives up the interrupt (a DPC
        // already queued still runs), the watchdog and BAR0; the common
        // buffers and the adapter wait for the removal.
        bus.surprise_remove();
        let _ = self.release_card(card as usize, Release::Hardware, now);
        // The application sees its reads fail and closes the pins.
        for i in 0..self.channels.len() {
            if self.channels[i].card == card {
                self.close_channel(i, now, hooks);
            }
        }
        // A child asking for the interface now gets the removal status.
        if let Some(stack) = self.cards[card as usize].children.first().cloned() {
            let mut answer = BusClient::query_buffer();
            // SAFETY: `answer` is a live local of `Size` bytes.
            let irp = unsafe {
                self.tree.query_interface(stack.fdo, Some(GUID_CAPDMA_BUS_INTERFACE), answer.header.size, answer.header.version, (&raw mut answer).cast())
            };
            if nt_success(irp.status) {
                self.violations.push(ViolationKind::Pnp, format!("card {card}: the capdma interface was served after surprise removal"));
                if let Some(deref) = answer.header.interface_dereference {
                    // SAFETY: drops the reference the unexpected answer took.
                    unsafe { deref(answer.header.context) };
                }
            }
            self.record_status(format!("card {card}: IRP_MN_QUERY_INTERFACE after surprise removal"), irp.status);
        }
        // IRP_MN_REMOVE_DEVICE: each child stack (the AVStream device drops
        // its interface reference), then the bus (buffers, adapter).
        self.remove_children(card as usize);
        self.remove_card(card as usize, now);
        self.cards[card as usize].removed = true;
    }

    /// The bus core's teardown sequence (`BusDevice::release_hardware`) on
    /// card `card` with the machine's glue steps ([`SimTeardown`]: interrupt,
    /// watchdog timer and DPCs, BAR0), each checked; returns the interface
    /// references leaked (see `capdma_bus::teardown`).
    fn release_card(&mut self, card: usize, release: Release, now: u64) -> u32 {
        let c = &self.cards[card];
        let Some(bus) = c.bus.core() else { return 0 };
        let port = SimTeardown::new(
            c.index,
            bus,
            &c.board,
            &self.irql,
            &self.violations,
            now,
            c.interrupt_connected,
            c.timer_armed,
            c.dpc_queued,
        );
        let leaked = bus.release_hardware(release, &port);
        if release != Release::Nothing {
            port.check_order();
        }
        let (connected, armed, queued) = (port.interrupt_connected.get(), port.timer_armed.get(), port.dpc_queued.get());
        let c = &mut self.cards[card];
        c.interrupt_connected = connected;
        c.timer_armed = armed;
        c.dpc_queued = queued;
        leaked
    }

    /// Windows' orderly removal of `card` (a user disabling it, or the end
    /// of the run): `IRP_MN_QUERY_REMOVE_DEVICE` down every child stack,
    /// then down the bus stack; the first veto ends it and
    /// `IRP_MN_CANCEL_REMOVE_DEVICE` goes to every stack queried. Without a
    /// veto: `IRP_MN_REMOVE_DEVICE` to the children (each AVStream device
    /// drops its interface reference), then the bus's removal. Every status
    /// is recorded (`when` is appended to the descriptions). Returns whether
    /// the card was removed.
    pub(super) fn request_removal(&mut self, card: usize, now: u64, when: &str) -> bool {
        if self.cards[card].bus.core().is_none() {
            return self.image_request_removal(card, when);
        }
        let children = self.cards[card].children.clone();
        let mut queried = Vec::new();
        let mut vetoed = false;
        for (ch, child) in children.iter().enumerate() {
            let irp = self.tree.query_remove(child.fdo);
            queried.push(child.fdo);
            self.record_status(format!("card {card} channel {ch}: IRP_MN_QUERY_REMOVE_DEVICE (AVStream stack){when}"), irp.status);
            if !nt_success(irp.status) {
                vetoed = true;
                break;
            }
        }
        if !vetoed {
            let fdo = self.cards[card].bus_fdo;
            let irp = self.tree.query_remove(fdo);
            queried.push(fdo);
            self.record_status(format!("card {card}: IRP_MN_QUERY_REMOVE_DEVICE (bus stack){when}"), irp.status);
            vetoed = !nt_success(irp.status);
        }
        if vetoed {
            for device in queried {
                let irp = self.tree.cancel_remove(device);
                if !nt_success(irp.status) {
                    let name = self.tree.name(device);
                    self.violations.push(ViolationKind::Pnp, format!("{name}: IRP_MN_CANCEL_REMOVE_DEVICE failed: {}", status_name(irp.status)));
                }
            }
            return false;
        }
        self.remove_children(card);
        self.remove_card(card, now);
        self.cards[card].removed = true;
        true
    }

    /// `IRP_MN_REMOVE_DEVICE` down each of the card's child stacks (the
    /// AVStream device drops its interface reference; the bus's child PDO,
    /// still present, stays).
    fn remove_children(&mut self, card: usize) {
        for (ch, child) in self.cards[card].children.clone().iter().enumerate() {
            let irp = self.tree.remove_device(child.fdo);
            self.record_status(format!("card {card} channel {ch}: IRP_MN_REMOVE_DEVICE (AVStream stack)"), irp.status);
        }
    }

    /// `IRP_MN_REMOVE_DEVICE` of a card's bus FDO (its children were removed
    /// first): the core's teardown sequence with everything released
    /// (engines stopped, interrupt disconnected, watchdog cancelled, DPCs
    /// flushed, common buffers freed, adapter put, BAR0 unmapped); the
    /// channels' bus counters into the report. An interface reference still
    /// held here is a bug of the child that holds it: recorded against it.
    fn remove_card(&mut self, card: usize, now: u64) {
        let leaked = self.release_card(card, Release::Everything, now);
        self.record_status(format!("card {card}: IRP_MN_REMOVE_DEVICE (bus FDO)"), STATUS_SUCCESS);
        if leaked > 0 {
            let holders: Vec<String> =
                self.cards[card].children.iter().filter(|c| c.device.holds_interface()).map(|c| c.device.name().to_string()).collect();
            let who = if holders.is_empty() { "an unknown holder".to_string() } else { holders.join(", ") };
            self.violations.push(
                ViolationKind::Pnp,
                format!("card {card}: {leaked} capdma interface reference(s) still held at the bus's IRP_MN_REMOVE_DEVICE by {who} (a child must drop its reference in its own IRP_MN_REMOVE_DEVICE); the bus tore down anyway"),
            );
        }
        let Some(bus) = self.cards[card].bus.core().cloned() else { return };
        for run in self.channels.iter_mut().filter(|r| r.card as usize == card) {
            if let Some(stats) = bus.channel_stats(run.index) {
                run.report.channel_resets = stats.resets;
                run.report.board_dropped = stats.dropped_by_board;
            }
        }
    }

    /// Stops everything in the order Windows would and checks for leaks:
    /// the application closes its pins (every queued buffer back to it,
    /// buffers freed); then per card the orderly removal
    /// (`Machine::request_removal`): `IRP_MN_QUERY_REMOVE_DEVICE` down the
    /// child stacks and then the bus stack, `IRP_MN_REMOVE_DEVICE` to the
    /// children (interface references dropped) and then to the bus (engines
    /// stopped, interrupt disconnected, watchdog cancelled, DPCs flushed,
    /// common buffers freed, adapter put, BAR0 unmapped). A veto here is a
    /// violation (nothing is open any more); the card is removed anyway.
    pub fn teardown(&mut self) {
        if self.runs_image() {
            self.teardown_image();
            return;
        }
        let now = self.timeline.now();
        let mut hooks = RunHooks::default();
        for i in 0..self.channels.len() {
            self.close_channel(i, now, &mut hooks);
        }
        for card in 0..self.cards.len() {
            if self.cards[card].removed {
                continue;
            }
            if !self.request_removal(card, now, " at teardown") {
                self.violations.push(ViolationKind::Pnp, format!("card {card}: the removal was vetoed at teardown"));
                self.remove_children(card);
                self.remove_card(card, now);
            }
        }
        // DMA a reset caught in flight lands now at the latest: into freed
        // memory if a driver handed it back before the reset completed.
        self.settle_boards();
        self.timeline.clear();
        for leak in self.memory.leaks() {
            self.violations.push(ViolationKind::Leak, leak);
        }
        for card in &self.cards {
            for leak in card.pci.leaks() {
                self.violations.push(ViolationKind::Leak, leak);
            }
            card.pci.forget_put_adapters();
            let references = card.bus.core().map_or(0, |bus| bus.reference_count());
            if references != 0 {
                self.violations.push(
                    ViolationKind::Leak,
                    format!("card {}: {references} capdma interface reference(s) never dropped", card.index),
                );
            }
        }
    }
}

//! The bus driver's view of the simulated machine: [`SimBusPlatform`]
//! implements the bus core's [`BusPlatform`] port.
use std::cell::RefCell;

use capdma_bus::ports::{BusPlatform, DeviceDescription, Irql};

use crate::board::Board;
use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::{IrqlTracker, DISPATCH};
use crate::memory::PhysicalMemory;

/// The PCI function the bus driver runs on: BAR0 is the board's register
/// file, `IoGetDmaAdapter` makes a [`SimDmaAdapter`], IRQL is tracked.
pub struct SimBusPlatform {
    board: Board,
    memory: PhysicalMemory,
    irql: IrqlTracker,
    adapter_config: AdapterConfig,
    adapters: RefCell<Vec<SimDmaAdapter>>,
}

impl SimBusPlatform {
    /// A platform for `board`, granting adapters `adapter_config` (map registers).
    #[must_use]
    pub fn new(board: Board, memory: PhysicalMemory, irql: IrqlTracker, adapter_config: AdapterConfig) -> Self {
        Self { board, memory, irql, adapter_config, adapters: RefCell::new(Vec::new()) }
    }

    /// Every adapter `IoGetDmaAdapter` handed out (put or not), oldest first.
    #[must_use]
    pub fn adapters(&self) -> Vec<SimDmaAdapter> {
        self.adapters.borrow().clone()
    }

    /// The board behind BAR0.
    #[must_use]
    pub fn board(&self) -> &Board {
        &self.board
    }
}

impl BusPlatform for SimBusPlatform {
    type Registers = Board;
    type Adapter = SimDmaAdapter;

    fn registers(&self) -> &Board {
        &self.board
    }

    fn get_dma_adapter(&self, description: &DeviceDescription) -> Option<SimDmaAdapter> {
        let adapter = SimDmaAdapter::new(*description, self.adapter_config, &self.memory, &self.irql);
        self.adapters.borrow_mut().push(adapter.clone());
        Some(adapter)
    }

    fn put_dma_adapter(&self, adapter: SimDmaAdapter) {
        adapter.put();
    }

    fn highest_physical_address(&self) -> u64 {
        self.memory.highest_physical_address()
    }

    fn raise_to_dispatch(&self) -> Irql {
        self.irql.raise(DISPATCH)
    }

    fn lower_irql(&self, old: Irql) {
        self.irql.lower(old);
    }

    fn current_irql(&self) -> Irql {
        self.irql.current()
    }
}

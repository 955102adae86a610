//! The bus driver's view of the simulated machine: [`SimBusPlatform`]
//! implements the bus core's [`BusPlatform`] port.
use capdma_bus::ports::{BusPlatform, DeviceDescription, Irql};

use crate::board::Board;
use crate::dma::adapter::{AdapterConfig, SimDmaAdapter};
use crate::irql::{IrqlTracker, DISPATCH_LEVEL};
use crate::memory::PhysicalMemory;
use crate::pnp::PciFunction;

/// The PCI function the bus driver runs on: BAR0 is the board's register
/// file, `IoGetDmaAdapter` on the PCI PDO makes a [`SimDmaAdapter`]
/// (through the card's [`PciFunction`]), IRQL is tracked.
pub struct SimBusPlatform {
    board: Board,
    memory: PhysicalMemory,
    irql: IrqlTracker,
    pci: PciFunction,
}

impl SimBusPlatform {
    /// A platform for `board`, granting adapters `adapter_config` (map registers).
    #[must_use]
    pub fn new(board: Board, memory: PhysicalMemory, irql: IrqlTracker, adapter_config: AdapterConfig) -> Self {
        let pci = PciFunction::new("PCI function", &memory, &irql, adapter_config);
        Self::with_pci(board, memory, irql, pci)
    }

    /// A platform for `board` on the PCI function `pci` (which the machine's
    /// PCI PDO serves too, so adapters from either path are one list).
    #[must_use]
    pub fn with_pci(board: Board, memory: PhysicalMemory, irql: IrqlTracker, pci: PciFunction) -> Self {
        Self { board, memory, irql, pci }
    }

    /// Every adapter `IoGetDmaAdapter` handed out on this PCI function (put or not), oldest first.
    #[must_use]
    pub fn adapters(&self) -> Vec<SimDmaAdapter> {
        self.pci.adapters()
    }

    /// The PCI function.
    #[must_use]
    pub fn pci(&self) -> &PciFunction {
        &self.pci
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
        Some(self.pci.io_get_dma_adapter(description))
    }

    fn put_dma_adapter(&self, adapter: SimDmaAdapter) {
        adapter.put();
    }

    fn highest_physical_address(&self) -> u64 {
        self.memory.highest_physical_address()
    }

    fn raise_to_dispatch(&self) -> Irql {
        self.irql.raise(DISPATCH_LEVEL)
    }

    fn lower_irql(&self, old: Irql) {
        self.irql.lower(old);
    }

    fn current_irql(&self) -> Irql {
        self.irql.current()
    }
}

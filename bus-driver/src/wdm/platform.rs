//! The bus core's ports over wdk-sys: [`WdmPlatform`] (`BusPlatform`),
//! [`Bar0`] (`RegisterPort`) and [`WdmAdapter`] (`DmaAdapterPort`).
use super::ddi::{current_irql, lower_irql, raise_to_dispatch, BOOLEAN_FALSE, BOOLEAN_TRUE};
use crate::pnp::resources::highest_ram_address;
use crate::pnp::window::RegisterWindow;
use crate::ports::{BusPlatform, CommonBuffer, CoreEvent, DeviceDescription, DmaAdapterPort, Irql, RegisterPort};
use capdma_interface::kernel::PAGE_SIZE;
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};
use wdk_sys::ntddk::{ExFreePool, IoGetDmaAdapter, MmGetPhysicalMemoryRanges, MmMapIoSpaceEx, MmUnmapIoSpace};
use wdk_sys::{
    _DMA_WIDTH, _INTERFACE_TYPE, DEVICE_DESCRIPTION, DEVICE_DESCRIPTION_VERSION2, DEVICE_OBJECT, DMA_ADAPTER,
    DMA_OPERATIONS, PAGE_NOCACHE, PAGE_READWRITE, PHYSICAL_ADDRESS, ULONG,
};

/// BAR0 mapped with `MmMapIoSpaceEx`; register access is
/// `READ_REGISTER_ULONG` / `WRITE_REGISTER_ULONG`: one volatile 32-bit
/// access on the uncached mapping.
///
/// The mapping is published and withdrawn through the core's
/// [`RegisterWindow`] (`pnp::window`), so it can be unmapped while other
/// processors may be inside an access. Every access runs at
/// `DISPATCH_LEVEL` or above (raised here when called below), which bounds
/// the withdrawal's wait by one register access. While unmapped, reads
/// return all ones (what a vanished PCI device reads) and writes are dropped.
pub struct Bar0 {
    window: RegisterWindow,
}

impl Bar0 {
    /// Not mapped.
    pub const fn new() -> Self {
        Self { window: RegisterWindow::new() }
    }

    /// `MmMapIoSpaceEx(start, bytes, PAGE_READWRITE | PAGE_NOCACHE)`.
    /// `<= DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the mapping fails, or when a
    /// mapping already exists (the start sequence maps once).
    pub fn map(&self, start: u64, bytes: usize) -> Result<(), wdk_sys::NTSTATUS> {
        use capdma_interface::status::STATUS_INSUFFICIENT_RESOURCES;
        if self.window.is_published() {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let physical = PHYSICAL_ADDRESS { QuadPart: i64::from_ne_bytes(start.to_ne_bytes()) };
        // SAFETY: `start`/`bytes` are the translated BAR0 of this device
        // (from IRP_MN_START_DEVICE's resources), so mapping them uncached
        // is what the HAL assigned them for.
        let va = unsafe { MmMapIoSpaceEx(physical, bytes as u64, PAGE_READWRITE | PAGE_NOCACHE) };
        if va.is_null() {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        if self.window.publish(va.expose_provenance(), bytes).is_err() {
            // SAFETY: the mapping just made, used by nobody.
            unsafe { MmUnmapIoSpace(va, bytes as u64) };
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        Ok(())
    }

    /// Withdraws the mapping (`RegisterWindow::withdraw`: no access in
    /// flight any more) and `MmUnmapIoSpace`s it. Idempotent.
    /// `<= DISPATCH_LEVEL`, never from inside a register access.
    pub fn unmap(&self) {
        if let Some((base, bytes)) = self.window.withdraw() {
            // SAFETY: the mapping `map` made and published; it is withdrawn
            // and no access uses it any more.
            unsafe { MmUnmapIoSpace(core::ptr::with_exposed_provenance_mut(base), bytes as u64) };
        }
    }

    /// Runs `access` on the register at `offset` at `DISPATCH_LEVEL` or
    /// above, if mapped and in range.
    fn with_register<R>(&self, offset: u32, access: impl FnOnce(*mut u32) -> R) -> Option<R> {
        let old = raise_to_dispatch();
        let result = self.window.access(offset, |address| access(core::ptr::with_exposed_provenance_mut(address)));
        lower_irql(old);
        result
    }
}

impl RegisterPort for Bar0 {
    /// `READ_REGISTER_ULONG(base + offset)`; all ones when unmapped or out of range.
    fn read32(&self, offset: u32) -> u32 {
        self.with_register(offset, |register| {
            // SAFETY: `register` is 4-byte aligned inside the published
            // uncached BAR0 mapping, which cannot be withdrawn during the access.
            unsafe { core::ptr::read_volatile(register) }
        })
        .unwrap_or(u32::MAX)
    }

    /// `WRITE_REGISTER_ULONG(base + offset, value)`; dropped when unmapped or out of range.
    fn write32(&self, offset: u32, value: u32) {
        self.with_register(offset, |register| {
            // SAFETY: as in `read32`.
            unsafe { core::ptr::write_volatile(register, value) };
        });
    }

    /// The core's report, written as an ETW event (`super::trace::core_event`).
    fn report(&self, event: CoreEvent) {
        super::trace::core_event(event);
    }
}

/// A DMA adapter from `IoGetDmaAdapter`, used through its `DMA_OPERATIONS`.
pub struct WdmAdapter {
    adapter: *mut DMA_ADAPTER,
    map_registers: u32,
}

// SAFETY: a DMA_ADAPTER is a system object usable from any thread at the
// IRQLs its operations document; the bus core serializes its use.
unsafe impl Send for WdmAdapter {}

impl WdmAdapter {
    /// The adapter's `DMA_OPERATIONS` table.
    fn operations(&self) -> Option<&DMA_OPERATIONS> {
        // SAFETY: `adapter` came non-null from IoGetDmaAdapter and is not
        // put while this value exists (`put_dma_adapter` consumes it).
        let operations = unsafe { (*self.adapter).DmaOperations };
        // SAFETY: the system's operations table lives as long as the adapter.
        unsafe { operations.as_ref() }
    }
}

impl DmaAdapterPort for WdmAdapter {
    /// `DmaOperations->AllocateCommonBuffer(Adapter, bytes, &Logical,
    /// CacheEnabled = TRUE)`, then zeroed. `None` when the system has no
    /// such buffer, or gives one that is not page-aligned (the core relies on it).
    ///
    /// Cached memory: the CPU reads every slot of the common-buffer ring
    /// (the frame copy) and every completion record, and uncached reads
    /// would make that copy many times slower. On x64 the flag changes
    /// nothing (PCI DMA is cache-coherent there and common buffers are
    /// mapped cached whatever is asked); where it is honoured (ARM64),
    /// `FALSE` would make every read of a slot uncached. Keeping a cached
    /// common buffer coherent with the board's writes is the platform's DMA
    /// layer's job; the core's release/acquire fences order the rest.
    fn allocate_common_buffer(&self, bytes: usize) -> Option<CommonBuffer> {
        let length = ULONG::try_from(bytes).ok()?;
        let allocate = self.operations()?.AllocateCommonBuffer?;
        let mut logical = PHYSICAL_ADDRESS { QuadPart: 0 };
        // SAFETY: a live adapter and its own operation; PASSIVE_LEVEL (the
        // core calls this only at start); `logical` is a valid out-pointer.
        // CacheEnabled = TRUE (see above).
        let va = unsafe { allocate(self.adapter, length, &raw mut logical, BOOLEAN_TRUE) };
        if va.is_null() {
            return None;
        }
        // SAFETY: QuadPart is the whole union.
        let logical = u64::from_ne_bytes(unsafe { logical.QuadPart }.to_ne_bytes());
        let buffer = CommonBuffer { va: va.cast(), logical, bytes };
        if !(va as u64).is_multiple_of(u64::from(PAGE_SIZE)) || !logical.is_multiple_of(u64::from(PAGE_SIZE)) {
            self.free_common_buffer(buffer);
            return None;
        }
        // SAFETY: the buffer is `bytes` long, writable, and ours alone.
        unsafe { core::ptr::write_bytes(buffer.va, 0, bytes) };
        Some(buffer)
    }

    /// `DmaOperations->FreeCommonBuffer(Adapter, Length, Logical, Va,
    /// CacheEnabled = TRUE)`: the same cache setting as the allocation.
    fn free_common_buffer(&self, buffer: CommonBuffer) {
        let (Some(free), Ok(length)) =
            (self.operations().and_then(|o| o.FreeCommonBuffer), ULONG::try_from(buffer.bytes))
        else {
            return;
        };
        let logical = PHYSICAL_ADDRESS { QuadPart: i64::from_ne_bytes(buffer.logical.to_ne_bytes()) };
        // SAFETY: exactly the buffer AllocateCommonBuffer returned on this
        // adapter, with the same cache setting (TRUE); PASSIVE_LEVEL.
        unsafe { free(self.adapter, length, logical, buffer.va.cast(), BOOLEAN_TRUE) };
    }

    fn raw(&self) -> *mut c_void {
        self.adapter.cast()
    }

    fn map_registers(&self) -> u32 {
        self.map_registers
    }
}

/// The machine around the board: BAR0 and the PCI PDO the DMA adapter is
/// requested on.
pub struct WdmPlatform {
    bar0: Bar0,
    /// The PDO the PCI bus driver created (from `AddDevice`). Not the next
    /// lower device: a filter may sit between, and `IoGetDmaAdapter` needs the PDO.
    pci_pdo: AtomicPtr<DEVICE_OBJECT>,
}

impl WdmPlatform {
    /// BAR0 unmapped, no PDO yet.
    pub const fn new() -> Self {
        Self { bar0: Bar0::new(), pci_pdo: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Records the PCI PDO (`AddDevice`).
    pub fn set_pci_pdo(&self, pdo: *mut DEVICE_OBJECT) {
        self.pci_pdo.store(pdo, Ordering::Release);
    }

    /// BAR0.
    pub const fn bar0(&self) -> &Bar0 {
        &self.bar0
    }
}

impl BusPlatform for WdmPlatform {
    type Registers = Bar0;
    type Adapter = WdmAdapter;

    fn registers(&self) -> &Bar0 {
        &self.bar0
    }

    /// `IoGetDmaAdapter(PciPdo, &Description, &NumberOfMapRegisters)` with
    /// a version-2 `DEVICE_DESCRIPTION`: `Master`, `InterfaceType = PCIBus`,
    /// `DmaWidth = Width32Bits`, and the core's `ScatterGather`,
    /// `Dma64BitAddresses` (else `Dma32BitAddresses`) and `MaximumLength`.
    fn get_dma_adapter(&self, description: &DeviceDescription) -> Option<WdmAdapter> {
        let pdo = self.pci_pdo.load(Ordering::Acquire);
        if pdo.is_null() {
            return None;
        }
        let flag = |on: bool| if on { BOOLEAN_TRUE } else { BOOLEAN_FALSE };
        let mut dd = DEVICE_DESCRIPTION {
            Version: DEVICE_DESCRIPTION_VERSION2,
            Master: BOOLEAN_TRUE,
            ScatterGather: flag(description.scatter_gather),
            Dma32BitAddresses: flag(!description.dma64),
            Dma64BitAddresses: flag(description.dma64),
            InterfaceType: _INTERFACE_TYPE::PCIBus,
            DmaWidth: _DMA_WIDTH::Width32Bits,
            MaximumLength: description.maximum_length,
            ..DEVICE_DESCRIPTION::default()
        };
        let mut map_registers: ULONG = 0;
        // SAFETY: `pdo` is the PCI PDO of this stack (referenced by the
        // stack while the FDO exists); `dd` and `map_registers` are valid.
        let adapter = unsafe { IoGetDmaAdapter(pdo, &raw mut dd, &raw mut map_registers) };
        (!adapter.is_null()).then_some(WdmAdapter { adapter, map_registers })
    }

    /// `DmaOperations->PutDmaAdapter(Adapter)`.
    fn put_dma_adapter(&self, adapter: WdmAdapter) {
        if let Some(put) = adapter.operations().and_then(|o| o.PutDmaAdapter) {
            // SAFETY: the adapter is live; the core frees every common
            // buffer before putting it; it is consumed here.
            unsafe { put(adapter.adapter) };
        }
    }

    /// The highest byte address of RAM from `MmGetPhysicalMemoryRanges`
    /// (the array ends with an all-zero entry and is freed with
    /// `ExFreePool`), computed by `pnp::resources::highest_ram_address`.
    /// `u64::MAX` when the system does not answer, which makes a 32-bit
    /// board choose the safe common-buffer mode.
    fn highest_physical_address(&self) -> u64 {
        // SAFETY: PASSIVE_LEVEL (called from the start); no arguments.
        let ranges = unsafe { MmGetPhysicalMemoryRanges() };
        if ranges.is_null() {
            return u64::MAX;
        }
        let entries = (0usize..)
            .map(|index| {
                // SAFETY: the array is terminated by an all-zero entry and
                // the walk stops there: every entry read is inside it.
                let range = unsafe { &*ranges.wrapping_add(index) };
                // SAFETY: QuadPart is the whole union.
                let base = unsafe { range.BaseAddress.QuadPart };
                // SAFETY: as above.
                let length = unsafe { range.NumberOfBytes.QuadPart };
                (u64::from_ne_bytes(base.to_ne_bytes()), u64::from_ne_bytes(length.to_ne_bytes()))
            })
            .take_while(|&(base, length)| base != 0 || length != 0);
        let highest = highest_ram_address(entries);
        // SAFETY: the array came from MmGetPhysicalMemoryRanges, which
        // documents ExFreePool as its release.
        unsafe { ExFreePool(ranges.cast()) };
        highest
    }

    fn raise_to_dispatch(&self) -> Irql {
        raise_to_dispatch()
    }

    fn lower_irql(&self, old: Irql) {
        lower_irql(old);
    }

    fn current_irql(&self) -> Irql {
        current_irql()
    }
}

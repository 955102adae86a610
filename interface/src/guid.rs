//! GUIDs of the contract.

/// A GUID with the layout of the Windows `GUID` structure (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

impl Guid {
    /// Builds a GUID from its canonical parts.
    #[must_use]
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self { data1, data2, data3, data4 }
    }
}

/// `GUID_CAPDMA_BUS_INTERFACE` {849a90bb-b660-4808-b559-65e0a2d54c96}: the
/// interface type a capdma child driver passes in
/// `IO_STACK_LOCATION.Parameters.QueryInterface.InterfaceType`.
pub const GUID_CAPDMA_BUS_INTERFACE: Guid =
    Guid::new(0x849a_90bb, 0xb660, 0x4808, [0xb5, 0x59, 0x65, 0xe0, 0xa2, 0xd5, 0x4c, 0x96]);

/// `GUID_BUS_INTERFACE_STANDARD` {496B8280-6F25-11D0-BEAF-08002BE2092F}
/// (wdmguid.h): the standard bus interface; the child PDO forwards it to the
/// parent stack so `IoGetDmaAdapter` works on the child PDO.
pub const GUID_BUS_INTERFACE_STANDARD: Guid =
    Guid::new(0x496b_8280, 0x6f25, 0x11d0, [0xbe, 0xaf, 0x08, 0x00, 0x2b, 0xe2, 0x09, 0x2f]);

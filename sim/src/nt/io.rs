//! I/O manager: device objects and stacks, IRPs (IofCallDriver, IofCompleteRequest, completion routines), object references, remove locks, the registry, PoCallDriver/PoRequestPowerIrp/PoSetPowerState, IoInvalidateDeviceRelations.

use super::Ddi;

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[];

/// This area's state in the emulated kernel.
#[derive(Debug, Default)]
pub struct IoState {}

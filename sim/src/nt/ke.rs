//! Kernel dispatcher: events and waits, DPCs, timers in virtual time, interrupts (IoConnectInterruptEx, the ISR at its DIRQL, interrupt spin locks), and the delivery of pending ISRs and DPCs when the IRQL allows.

use super::Ddi;

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[];

/// This area's state in the emulated kernel.
#[derive(Debug, Default)]
pub struct KeState {}

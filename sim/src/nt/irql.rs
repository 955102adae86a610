//! The IRQL of the one processor, and the DDIs that read and change it.
//!
//! On x64 the current WDK compiles `KeGetCurrentIrql`, `KeRaiseIrql` and
//! `KeLowerIrql` as calls into ntoskrnl (unless `NT_INLINE_IRQL`), which is
//! where Driver Verifier's IRQL checking sees them; the images are built
//! that way. Any inline `mov cr8` that remains traps and is emulated by the
//! machine (counted in its report).

use capdma_winvm::{Machine, Stop};

use super::{Ddi, Module, Nt, DISPATCH_LEVEL, HIGH_LEVEL};

/// The DDIs of this file.
pub const DDIS: &[Ddi] = &[
    Ddi { module: Module::Ntoskrnl, name: "KeGetCurrentIrql", max_irql: HIGH_LEVEL, run: ke_get_current_irql },
    Ddi { module: Module::Ntoskrnl, name: "KfRaiseIrql", max_irql: HIGH_LEVEL, run: kf_raise_irql },
    Ddi { module: Module::Ntoskrnl, name: "KeRaiseIrqlToDpcLevel", max_irql: DISPATCH_LEVEL, run: ke_raise_irql_to_dpc_level },
    Ddi { module: Module::Ntoskrnl, name: "KeLowerIrql", max_irql: HIGH_LEVEL, run: ke_lower_irql },
];

/// `KIRQL KeGetCurrentIrql()` (wdm.h; "KeGetCurrentIrql function").
fn ke_get_current_irql(nt: &mut Nt, _m: &mut Machine) -> Result<u64, Stop> {
    Ok(u64::from(nt.irql))
}

/// `KIRQL KfRaiseIrql(KIRQL NewIrql)`, what `KeRaiseIrql` compiles to on
/// x64 ("KeRaiseIrql function": "If the new IRQL is less than the current
/// IRQL, a bug check occurs" — Verifier: 0xC4, parameter 0x30).
fn kf_raise_irql(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let new = (m.arg(0)? & 0xFF) as u8;
    let old = nt.irql;
    let ok = nt.verifier.check(new >= old && new <= HIGH_LEVEL, || super::verifier::Finding {
        rule: "IRQL_RAISE_TO_LOWER",
        bugcheck: 0xC4,
        parameter1: Some(0x30),
        detail: format!("KeRaiseIrql({new}) at IRQL {old}"),
        caller: m.caller().map_or_else(|_| "?".into(), |c| m.describe(c)),
    });
    if ok {
        nt.irql = new;
    }
    Ok(u64::from(old))
}

/// `KIRQL KeRaiseIrqlToDpcLevel()` ("KeRaiseIrqlToDpcLevel function":
/// callers are at or below `DISPATCH_LEVEL`).
fn ke_raise_irql_to_dpc_level(nt: &mut Nt, _m: &mut Machine) -> Result<u64, Stop> {
    let old = nt.irql;
    nt.irql = nt.irql.max(DISPATCH_LEVEL);
    Ok(u64::from(old))
}

/// `VOID KeLowerIrql(KIRQL NewIrql)` ("KeLowerIrql function": "It is a
/// fatal error to call KeLowerIrql using an input IRQL that was not
/// obtained from KeRaiseIrql" — lowering to a higher level is caught by
/// Verifier: 0xC4, parameter 0x31).
fn ke_lower_irql(nt: &mut Nt, m: &mut Machine) -> Result<u64, Stop> {
    let new = (m.arg(0)? & 0xFF) as u8;
    let old = nt.irql;
    let ok = nt.verifier.check(new <= old, || super::verifier::Finding {
        rule: "IRQL_LOWER_TO_HIGHER",
        bugcheck: 0xC4,
        parameter1: Some(0x31),
        detail: format!("KeLowerIrql({new}) at IRQL {old}"),
        caller: m.caller().map_or_else(|_| "?".into(), |c| m.describe(c)),
    });
    if ok {
        nt.irql = new;
    }
    Ok(0)
}

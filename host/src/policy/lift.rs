//! Lifting a component's output without letting it ask the host for more memory than the
//! output limit allows.
//!
//! The canonical ABI hands the host `(pointer, length)` pairs into the guest's memory, and
//! nothing stops two of them from pointing at the same bytes. A `list<charge-line>` of half
//! a million lines whose `item` strings all point at one 30 MiB string fits a 64 MiB guest,
//! yet lifting it into host `String`s would copy the string half a million times and abort
//! the process. The output-size check the engine runs on every output
//! ([`crate::config::PolicyLimits::max_output_bytes`]) comes too late: it sees the output
//! only after it was lifted.
//!
//! So the outputs that can hold a list of strings — a tariff's `lines` and the batch result
//! lists of contract 1.1 — are lifted through [`BoundedString`] and [`BoundedList`], which
//! read a string's or list's length from its canonical ABI pair and charge the bytes it
//! occupies in the guest (a list: length × element size) to the call's budget
//! ([`with_budget`]) **before** anything is copied; a call whose output goes over the budget
//! fails with [`OutputOverBudget`] (the engine records it as an invalid output).
//!
//! The engine gives a call the guest's memory limit
//! ([`crate::config::PolicyLimits::memory_bytes`]) as its budget, for a batch call as a
//! whole: an output whose strings and lists lie in distinct bytes always fits in the memory
//! it came from, so only an output that points several times at the same bytes is refused
//! here; everything else is checked afterwards as before (an explanation over its limit is
//! still refused for that). The host then copies at most about twice the guest's memory per
//! call. (`WasmStr`/`WasmList` cannot do this: since wasmtime 48 a typed call runs the
//! component's `post-return`, which frees them, before it returns.)
//!
//! The raw output records here mirror the WIT records field for field (names checked by
//! wasmtime against the component at load) and convert into the generated bindings' types.

use super::bindings::{
    ChargeLine, Decimal, PolicyError, TariffOutput, WarningAction, WarningOutput,
};
use std::cell::Cell;
use wasmtime::ValRaw;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

thread_local! {
    /// `(bytes left, limit)` of the output being lifted on this thread; `None` outside
    /// [`with_budget`] (no limit).
    static BUDGET: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// A lift went over its call's budget ([`with_budget`]): the output is refused before it is
/// copied into the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "output points at more than the component's {limit} bytes of memory ({what} of {bytes} \
     bytes more: its strings or lists share bytes); refused before it was copied"
)]
pub struct OutputOverBudget {
    /// The budget the call had, bytes.
    pub limit: usize,
    /// `"a string"` or `"a list"`.
    pub what: &'static str,
    /// The bytes that did not fit.
    pub bytes: usize,
}

/// Runs `call` (one call into a component, lifting its result) with `limit` bytes of output
/// budget on this thread: every [`BoundedString`] and [`BoundedList`] lifted during it is
/// charged the bytes it occupies in the guest, and the first that does not fit fails the
/// lift with [`OutputOverBudget`]. The budget before is restored afterwards, also when
/// `call` panics.
pub fn with_budget<T>(limit: usize, call: impl FnOnce() -> T) -> T {
    struct Restore(Option<(usize, usize)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(Some((limit, limit)))));
    call()
}

/// Charges `bytes` to the current budget, or fails when they do not fit.
fn charge(bytes: usize, what: &'static str) -> wasmtime::Result<()> {
    BUDGET.with(|b| match b.get() {
        None => Ok(()),
        Some((left, limit)) if bytes <= left => {
            b.set(Some((left - bytes, limit)));
            Ok(())
        }
        Some((_, limit)) => Err(wasmtime::Error::new(OutputOverBudget {
            limit,
            what,
            bytes,
        })),
    })
}

/// The length half of a canonical ABI `(pointer, length)` pair held in memory.
fn length_in_memory(bytes: &[u8]) -> u32 {
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[4..8]);
    u32::from_le_bytes(len)
}

/// The length half of a flat `(pointer, length)` pair.
fn length_flat(src: &[ValRaw; 2]) -> u32 {
    src[1].get_u32()
}

/// A string's size in guest bytes from its canonical ABI length: UTF-8 and Latin-1 give
/// bytes; UTF-16 sets the top bit as a tag and gives 16-bit code units.
fn string_bytes(len: u32) -> usize {
    const UTF16_TAG: u32 = 1 << 31;
    if len & UTF16_TAG != 0 {
        ((len & !UTF16_TAG) as usize).saturating_mul(2)
    } else {
        len as usize
    }
}

/// A list's size in guest bytes: its length times the element's canonical ABI size.
fn list_bytes<T: ComponentType>(len: u32) -> usize {
    (len as usize).saturating_mul(T::SIZE32)
}

/// A WIT `string` lifted into a `String` only after its length was charged to the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedString(pub String);

// SAFETY: the same canonical ABI representation as `String` (a pointer pair), whose
// `ComponentType` this forwards to unchanged.
unsafe impl ComponentType for BoundedString {
    type Lower = <String as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <String as ComponentType>::ABI;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: charges the budget, then lifts exactly as `String` does.
unsafe impl Lift for BoundedString {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        charge(string_bytes(length_flat(src)), "a string")?;
        String::linear_lift_from_flat(cx, ty, src).map(Self)
    }
    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        charge(string_bytes(length_in_memory(bytes)), "a string")?;
        String::linear_lift_from_memory(cx, ty, bytes).map(Self)
    }
}

/// A WIT `list<T>` lifted into a `Vec` only after its length × the element's canonical ABI
/// size was charged to the budget; the elements charge their own strings and lists as they
/// lift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedList<T>(pub Vec<T>);

// SAFETY: the same canonical ABI representation as `Vec<T>` (a pointer pair), whose
// `ComponentType` this forwards to unchanged.
unsafe impl<T: ComponentType> ComponentType for BoundedList<T> {
    type Lower = <Vec<T> as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Vec<T> as ComponentType>::ABI;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<T> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: charges the budget, then lifts exactly as `Vec<T>` does.
unsafe impl<T: Lift> Lift for BoundedList<T> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        charge(list_bytes::<T>(length_flat(src)), "a list")?;
        Vec::<T>::linear_lift_from_flat(cx, ty, src).map(Self)
    }
    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        charge(list_bytes::<T>(length_in_memory(bytes)), "a list")?;
        Vec::<T>::linear_lift_from_memory(cx, ty, bytes).map(Self)
    }
}

/// WIT `policy-error`, lifted within the budget.
#[derive(ComponentType, Lift, Debug, Clone)]
#[component(record)]
pub struct RawPolicyError {
    code: BoundedString,
    message: BoundedString,
}

impl From<RawPolicyError> for PolicyError {
    fn from(e: RawPolicyError) -> Self {
        PolicyError {
            code: e.code.0,
            message: e.message.0,
        }
    }
}

/// WIT `tariff.charge-line`, lifted within the budget.
#[derive(ComponentType, Lift, Debug, Clone)]
#[component(record)]
pub struct RawChargeLine {
    item: BoundedString,
    kwh: Decimal,
    price: Decimal,
    amount: Decimal,
}

/// WIT `tariff.tariff-output`, lifted within the budget.
#[derive(ComponentType, Lift, Debug, Clone)]
#[component(record)]
pub struct RawTariffOutput {
    lines: BoundedList<RawChargeLine>,
    #[component(name = "charge-fen")]
    charge_fen: i64,
    #[component(name = "reason-code")]
    reason_code: BoundedString,
    explanation: BoundedString,
}

impl From<RawTariffOutput> for TariffOutput {
    fn from(o: RawTariffOutput) -> Self {
        TariffOutput {
            lines: o
                .lines
                .0
                .into_iter()
                .map(|l| ChargeLine {
                    item: l.item.0,
                    kwh: l.kwh,
                    price: l.price,
                    amount: l.amount,
                })
                .collect(),
            charge_fen: o.charge_fen,
            reason_code: o.reason_code.0,
            explanation: o.explanation.0,
        }
    }
}

/// WIT `warning.warning-output`, lifted within the budget.
#[derive(ComponentType, Lift, Debug, Clone)]
#[component(record)]
pub struct RawWarningOutput {
    level: u8,
    actions: BoundedList<WarningAction>,
    #[component(name = "days-of-credit-left")]
    days_of_credit_left: Option<Decimal>,
    #[component(name = "reason-code")]
    reason_code: BoundedString,
    explanation: BoundedString,
}

impl From<RawWarningOutput> for WarningOutput {
    fn from(o: RawWarningOutput) -> Self {
        WarningOutput {
            level: o.level,
            actions: o.actions.0,
            days_of_credit_left: o.days_of_credit_left,
            reason_code: o.reason_code.0,
            explanation: o.explanation.0,
        }
    }
}

/// A call's lifted `result<output, policy-error>` in the bindings' types.
pub fn into_result<R: Into<O>, O>(r: Result<R, RawPolicyError>) -> Result<O, PolicyError> {
    r.map(Into::into).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_costs_its_bytes_in_the_guest() {
        assert_eq!(string_bytes(0), 0);
        assert_eq!(string_bytes(17), 17);
        // UTF-16: the tag bit set, the rest counts 16-bit code units.
        assert_eq!(string_bytes((1 << 31) | 5), 10);
        assert_eq!(list_bytes::<u8>(7), 7);
        assert_eq!(list_bytes::<RawChargeLine>(2), 2 * RawChargeLine::SIZE32);
        assert_eq!(
            RawChargeLine::SIZE32,
            56,
            "item (8) + three decimals (16 each)"
        );
    }

    #[test]
    fn the_budget_is_charged_refused_when_spent_and_restored_after_the_call() {
        assert!(
            charge(usize::MAX, "a string").is_ok(),
            "no budget outside a call"
        );
        with_budget(10, || {
            assert!(charge(6, "a string").is_ok());
            assert!(charge(4, "a list").is_ok());
            let e = charge(1, "a string").unwrap_err();
            assert_eq!(
                e.downcast_ref::<OutputOverBudget>(),
                Some(&OutputOverBudget {
                    limit: 10,
                    what: "a string",
                    bytes: 1
                })
            );
            // A nested call has its own budget and gives the outer one back.
            with_budget(3, || assert!(charge(4, "a list").is_err()));
            assert!(charge(1, "a list").is_err());
        });
        assert!(charge(usize::MAX, "a list").is_ok());
    }
}

//! A hostile policy component, for containment tests only.
//!
//! It exports all four policy interfaces; what it does is chosen by the `mode` field
//! of its parameters (a plain string search, so even unparseable parameters work):
//!
//! | mode | behaviour |
//! |---|---|
//! | `ok` | behaves: charges 1 fen per whole kWh, warns nobody, keeps power, direct close |
//! | `loop` | spins forever (fuel / epoch limits must stop it) |
//! | `trap` | panics (an `unreachable` trap under `panic = abort`) |
//! | `memory` | allocates without end (the memory limit must stop it) |
//! | `negative` | returns a negative charge (output validation must refuse it) |
//! | `huge` | returns a 1 MiB explanation (the size limit must refuse it) |
//! | `chatty` | prints 64 KiB to stdout (the bounded capture must stop it) |
//! | `giant` | tariff: charges 10 billion yuan (the host's charge ceiling must hold it) |
//! | `disconnect` | cutoff: asks to disconnect everyone, always (the floor must hold) |
//! | `trap-one` | tariff: traps on an account id containing `trap`, prices the others |
//! | `miscount` | tariff: `price-batch` drops its last result (the host must price again alone) |
//! | `batch-differs` | `price-batch` charges 1 fen more than `price`, `assess-batch` warns one level higher than `assess` (activation must refuse both) |
//! | `burn` | tariff: spins a million loop turns per input, then prices (a test sizes the fuel budget so that one fits and a batch of three does not) |
//! | `alias` | tariff: returns 200,000 charge `lines` whose `item` strings all point at one 16 MiB string (40 MiB of guest memory; copied line by line it would be 3 TiB: the host must refuse it before copying) |
//! | `remember` | `price-batch` charges each input what the input before it in the call used (an answer depending on another account's input) |
//!
//! It exports `tariff-batch` and `warning-batch` (contract 1.1) too: they decide each
//! input as `price` and `assess` do, misbehaving in the same modes.

wit_bindgen::generate!({
    inline: r#"
        package test:hostile;
        world hostile {
            export feegate:policy/tariff@1.1.0;
            export feegate:policy/tariff-batch@1.1.0;
            export feegate:policy/warning-batch@1.1.0;
            export feegate:policy/warning@1.1.0;
            export feegate:policy/notice@1.1.0;
            export feegate:policy/cutoff@1.1.0;
        }
    "#,
    path: "../../wit",
    world: "test:hostile/hostile",
    generate_all,
});

use exports::feegate::policy::cutoff::{
    CutoffAction, CutoffInput, CutoffOutput, ReconnectionInput, ReconnectionMode,
    ReconnectionOutput,
};
use exports::feegate::policy::notice::{NoticeInput, NoticeOutput};
use exports::feegate::policy::tariff::{ChargeLine, TariffInput, TariffOutput};
use exports::feegate::policy::warning::{WarningInput, WarningOutput};
use feegate::policy::types::PolicyError;

struct Hostile;

fn mode(parameters: &str) -> &'static str {
    for m in [
        "loop",
        "trap",
        "memory",
        "negative",
        "huge",
        "chatty",
        "disconnect",
        "giant",
        "trap-one",
        "miscount",
        "batch-differs",
        "burn",
        "remember",
        "alias",
    ] {
        if parameters.contains(&format!("\"{m}\"")) {
            return m;
        }
    }
    "ok"
}

/// Misbehaves per `mode`; returns only for the modes that shape the output.
fn misbehave(m: &str) {
    match m {
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "trap" => panic!("hostile component: deliberate trap"),
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "chatty" => {
            let line = "x".repeat(1024);
            for _ in 0..64 {
                println!("{line}");
            }
        }
        _ => {}
    }
}

fn explanation(m: &str) -> String {
    if m == "huge" {
        "x".repeat(1 << 20)
    } else {
        format!("hostile component in mode {m}")
    }
}

impl exports::feegate::policy::tariff::Guest for Hostile {
    fn price(input: TariffInput) -> Result<TariffOutput, PolicyError> {
        let m = mode(&input.parameters);
        misbehave(m);
        if m == "burn" {
            let mut x: u64 = 0;
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        if m == "trap-one" && input.account_id.contains("trap") {
            panic!("hostile component: deliberate trap on {}", input.account_id);
        }
        let whole_kwh = input.kwh.mantissa / 10i64.pow(u32::from(input.kwh.scale));
        Ok(TariffOutput {
            lines: if m == "alias" {
                aliased_lines()
            } else {
                vec![]
            },
            charge_fen: match m {
                "negative" => -100,
                // Ten billion yuan: within the contract (non-negative), absurd in fact.
                "giant" => 1_000_000_000_000,
                _ => whole_kwh,
            },
            reason_code: "hostile".into(),
            explanation: explanation(m),
        })
    }
}

/// 200,000 charge lines whose `item` strings share one leaked 16 MiB buffer: the canonical
/// ABI carries only (pointer, length) pairs, so the host sees 200,000 strings of 16 MiB.
/// The guest never frees them twice in a test: the host refuses the output while lifting
/// it, before the component's `post-return` would run.
fn aliased_lines() -> Vec<ChargeLine> {
    let shared: &'static mut str = "x".repeat(16 << 20).leak();
    let (ptr, len) = (shared.as_mut_ptr(), shared.len());
    let zero = feegate::policy::types::Decimal {
        mantissa: 0,
        scale: 0,
    };
    (0..200_000)
        .map(|_| ChargeLine {
            // SAFETY (for the test's purpose): every line claims the same leaked bytes; see
            // the function doc for why they are never freed through these `String`s.
            item: unsafe { String::from_raw_parts(ptr, len, len) },
            kwh: zero,
            price: zero,
            amount: zero,
        })
        .collect()
}

impl exports::feegate::policy::tariff_batch::Guest for Hostile {
    fn price_batch(
        parameters: String,
        inputs: Vec<TariffInput>,
    ) -> Vec<Result<TariffOutput, PolicyError>> {
        use exports::feegate::policy::tariff::Guest;
        let m = mode(&parameters);
        let mut out: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                Hostile::price(TariffInput {
                    parameters: parameters.clone(),
                    ..input
                })
            })
            .collect();
        match m {
            "miscount" => {
                out.pop();
            }
            "batch-differs" => {
                for o in out.iter_mut().flatten() {
                    o.charge_fen += 1;
                }
            }
            "remember" => {
                let mut before = 0;
                for o in out.iter_mut().flatten() {
                    (o.charge_fen, before) = (before, o.charge_fen);
                }
            }
            _ => {}
        }
        out
    }
}

impl exports::feegate::policy::warning_batch::Guest for Hostile {
    fn assess_batch(
        parameters: String,
        inputs: Vec<WarningInput>,
    ) -> Vec<Result<WarningOutput, PolicyError>> {
        use exports::feegate::policy::warning::Guest;
        let m = mode(&parameters);
        inputs
            .into_iter()
            .map(|input| {
                let mut out = Hostile::assess(WarningInput {
                    parameters: parameters.clone(),
                    ..input
                });
                if m == "batch-differs"
                    && let Ok(o) = &mut out
                {
                    o.level += 1;
                }
                out
            })
            .collect()
    }
}

impl exports::feegate::policy::warning::Guest for Hostile {
    fn assess(input: WarningInput) -> Result<WarningOutput, PolicyError> {
        let m = mode(&input.parameters);
        misbehave(m);
        Ok(WarningOutput {
            level: if m == "negative" { 9 } else { 0 },
            actions: vec![],
            days_of_credit_left: None,
            reason_code: "hostile".into(),
            explanation: explanation(m),
        })
    }
}

impl exports::feegate::policy::notice::Guest for Hostile {
    fn word(input: NoticeInput) -> Result<NoticeOutput, PolicyError> {
        let m = mode(&input.parameters);
        misbehave(m);
        Ok(NoticeOutput {
            text: if m == "negative" {
                String::new()
            } else {
                "hostile notice".into()
            },
            reason_code: "hostile".into(),
            explanation: explanation(m),
        })
    }
}

impl exports::feegate::policy::cutoff::Guest for Hostile {
    fn decide(input: CutoffInput) -> Result<CutoffOutput, PolicyError> {
        let m = mode(&input.parameters);
        misbehave(m);
        let action = if m == "disconnect" {
            CutoffAction::Disconnect
        } else {
            CutoffAction::Keep
        };
        Ok(CutoffOutput {
            action,
            automatic_customer: m == "disconnect",
            reason_code: "hostile".into(),
            explanation: explanation(m),
        })
    }

    fn reconnection(input: ReconnectionInput) -> Result<ReconnectionOutput, PolicyError> {
        let m = mode(&input.parameters);
        misbehave(m);
        Ok(ReconnectionOutput {
            mode: Some(ReconnectionMode::DirectClose),
            reason_code: "hostile".into(),
            explanation: explanation(m),
        })
    }
}

export!(Hostile);

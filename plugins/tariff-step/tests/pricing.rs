//! The step tariff against hand-computed charges.
//!
//! Xianyou steps (annual): ≤ 2760 kWh at 0.4983, 2760–4800 at 0.5483, above 4800 at
//! 0.7983 元/kWh; time-of-use adders peak +0.0300, valley −0.2000 元/kWh. Every expected
//! amount below was worked out by hand from those figures, never by the code under test.

#![allow(clippy::type_complexity, clippy::too_many_arguments)]

mod common;

use common::*;
use policy_tariff_step::{TariffOutput, TouBand, price};

struct Case {
    name: &'static str,
    params: &'static str,
    first: &'static str,
    last: &'static str,
    kwh: &'static str,
    ytd: &'static str,
    mtd: &'static str,
    /// `(item, kWh, price, amount)`.
    lines: &'static [(&'static str, &'static str, &'static str, &'static str)],
    total: &'static str,
    fen: i64,
}

const fn case(
    name: &'static str,
    first: &'static str,
    last: &'static str,
    kwh: &'static str,
    ytd: &'static str,
    lines: &'static [(&'static str, &'static str, &'static str, &'static str)],
    total: &'static str,
    fen: i64,
) -> Case {
    Case {
        name,
        params: XIANYOU,
        first,
        last,
        kwh,
        ytd,
        mtd: "0",
        lines,
        total,
        fen,
    }
}

const STEP_CASES: &[Case] = &[
    // 12.50 × 0.4983 = 6.22875 → 622.875 fen → 623.
    case(
        "inside step 1",
        "2013-06-01",
        "2013-06-01",
        "12.50",
        "1000",
        &[("step 1", "12.50", "0.4983", "6.22875")],
        "6.22875",
        623,
    ),
    // Ends exactly on the threshold: stays in step 1. 10 × 0.4983 = 4.983.
    case(
        "ends on 2760",
        "2013-06-01",
        "2013-06-01",
        "10",
        "2750",
        &[("step 1", "10", "0.4983", "4.983")],
        "4.983",
        498,
    ),
    // Starts exactly on the threshold: all in step 2. 10 × 0.5483 = 5.483.
    case(
        "starts on 2760",
        "2013-06-01",
        "2013-06-01",
        "10",
        "2760",
        &[("step 2", "10", "0.5483", "5.483")],
        "5.483",
        548,
    ),
    // 2755 → 2767.50: 5 × 0.4983 = 2.4915; 7.5 × 0.5483 = 4.11225; Σ 6.60375 → 660.
    case(
        "crosses 2760",
        "2013-08-14",
        "2013-08-14",
        "12.50",
        "2755",
        &[
            ("step 1", "5", "0.4983", "2.4915"),
            ("step 2", "7.5", "0.5483", "4.11225"),
        ],
        "6.60375",
        660,
    ),
    // 4790.5 → 4810.75: 9.5 × 0.5483 = 5.20885; 10.75 × 0.7983 = 8.581725; Σ 13.790575 → 1379.
    case(
        "crosses 4800",
        "2013-11-02",
        "2013-11-02",
        "20.25",
        "4790.5",
        &[
            ("step 2", "9.5", "0.5483", "5.20885"),
            ("step 3", "10.75", "0.7983", "8.581725"),
        ],
        "13.790575",
        1379,
    ),
    // 33.333 × 0.7983 = 26.6097339 → 2660.97339 fen → 2661.
    case(
        "entirely step 3",
        "2013-12-01",
        "2013-12-01",
        "33.333",
        "6000",
        &[("step 3", "33.333", "0.7983", "26.6097339")],
        "26.6097339",
        2661,
    ),
    // 2000 → 5000: 760 × 0.4983 = 378.708; 2040 × 0.5483 = 1118.532; 200 × 0.7983 = 159.66;
    // Σ 1656.900 → 165690.
    case(
        "below 2760 to above 4800",
        "2013-03-01",
        "2013-05-31",
        "3000",
        "2000",
        &[
            ("step 1", "760", "0.4983", "378.708"),
            ("step 2", "2040", "0.5483", "1118.532"),
            ("step 3", "200", "0.7983", "159.66"),
        ],
        "1656.9",
        165690,
    ),
    // A five-day period inside the year is priced as one block: 2740 → 2790:
    // 20 × 0.4983 = 9.966; 30 × 0.5483 = 16.449; Σ 26.415 → 2641.5 → half-up 2642.
    case(
        "five days in one cycle",
        "2013-03-01",
        "2013-03-05",
        "50",
        "2740",
        &[
            ("step 1", "20", "0.4983", "9.966"),
            ("step 2", "30", "0.5483", "16.449"),
        ],
        "26.415",
        2642,
    ),
    case(
        "zero kWh",
        "2013-06-01",
        "2013-06-01",
        "0",
        "3000",
        &[],
        "0",
        0,
    ),
    // 3 days over the year boundary, 10 kWh: 10.000 / 3 = 3.333 a day, remainder 0.001 on
    // 2014-01-02. 2013-12-31 gets 3.333 kWh from 4799: 1 × 0.5483 = 0.5483 and
    // 2.333 × 0.7983 = 1.8624339. 2014 starts at 0: 6.667 × 0.4983 = 3.3221661.
    // Σ 5.7329 → 573.29 fen → 573.
    case(
        "year boundary, indivisible",
        "2013-12-31",
        "2014-01-02",
        "10",
        "4799",
        &[
            ("step 2 (2013-12-31..2013-12-31)", "1", "0.5483", "0.5483"),
            (
                "step 3 (2013-12-31..2013-12-31)",
                "2.333",
                "0.7983",
                "1.8624339",
            ),
            (
                "step 1 (2014-01-01..2014-01-02)",
                "6.667",
                "0.4983",
                "3.3221661",
            ),
        ],
        "5.7329",
        573,
    ),
    // 2013-12-30..2014-01-02, 40.002 kWh over 4 days: 10.000 a day, 0.002 on the last day.
    // 2013: 20.000 from 2750: 10 × 0.4983 = 4.983; 10 × 0.5483 = 5.483.
    // 2014: 20.002 from 0: 20.002 × 0.4983 = 9.9669966. Σ 20.4329966 → 2043.
    case(
        "year boundary, remainder on the last day",
        "2013-12-30",
        "2014-01-02",
        "40.002",
        "2750",
        &[
            ("step 1 (2013-12-30..2013-12-31)", "10", "0.4983", "4.983"),
            ("step 2 (2013-12-30..2013-12-31)", "10", "0.5483", "5.483"),
            (
                "step 1 (2014-01-01..2014-01-02)",
                "20.002",
                "0.4983",
                "9.9669966",
            ),
        ],
        "20.4329966",
        2043,
    ),
    Case {
        // Monthly cycle, 2 days over a month boundary, 20 kWh: 10 a day. January from 225:
        // 5 × 0.4983 = 2.4915, 5 × 0.5483 = 2.7415. February from 0: 10 × 0.4983 = 4.983.
        // Σ 10.216 → 1021.6 → 1022. The year-to-date (999) is ignored by a monthly cycle.
        name: "month boundary, monthly cycle",
        params: MONTHLY,
        first: "2013-01-31",
        last: "2013-02-01",
        kwh: "20",
        ytd: "999",
        mtd: "225",
        lines: &[
            ("step 1 (2013-01-31..2013-01-31)", "5", "0.4983", "2.4915"),
            ("step 2 (2013-01-31..2013-01-31)", "5", "0.5483", "2.7415"),
            ("step 1 (2013-02-01..2013-02-01)", "10", "0.4983", "4.983"),
        ],
        total: "10.216",
        fen: 1022,
    },
    Case {
        // 30 days over two month boundaries, 30.001 kWh: 1.000 a day, 0.001 on 2013-03-01.
        // Jan (1 day, from 229.5): 0.5 × 0.4983 = 0.24915; 0.5 × 0.5483 = 0.27415.
        // Feb (28 days, 28.000 from 0): 13.9524. Mar (1.001 from 0): 0.4987983.
        // Σ 14.9744983 → 1497.
        name: "two month boundaries",
        params: MONTHLY,
        first: "2013-01-31",
        last: "2013-03-01",
        kwh: "30.001",
        ytd: "0",
        mtd: "229.5",
        lines: &[
            (
                "step 1 (2013-01-31..2013-01-31)",
                "0.5",
                "0.4983",
                "0.24915",
            ),
            (
                "step 2 (2013-01-31..2013-01-31)",
                "0.5",
                "0.5483",
                "0.27415",
            ),
            ("step 1 (2013-02-01..2013-02-28)", "28", "0.4983", "13.9524"),
            (
                "step 1 (2013-03-01..2013-03-01)",
                "1.001",
                "0.4983",
                "0.4987983",
            ),
        ],
        total: "14.9744983",
        fen: 1497,
    },
];

fn run(c: &Case) -> TariffOutput {
    price(&input(c.params, c.first, c.last, c.kwh, c.ytd, c.mtd))
        .unwrap_or_else(|e| panic!("{}: {e:?}", c.name))
}

#[test]
fn step_boundaries_and_cycle_boundaries() {
    for c in STEP_CASES {
        let out = run(c);
        assert_lines(&out, c.lines, c.name);
        assert_eq!(total(&out), dec(c.total), "{}: total", c.name);
        assert_eq!(out.charge_fen, c.fen, "{}: charge-fen", c.name);
        assert_eq!(out.reason_code, "step-tariff", "{}", c.name);
    }
}

#[test]
fn explanation_names_the_steps_used() {
    let out = run(&STEP_CASES[3]);
    for part in [
        "Annual step tariff, 2013-08-14: 12.50 kWh.",
        "Year-to-date before the period 2755.00 kWh",
        "5.00 kWh at step 1 (0.4983 元/kWh) = 2.4915 元",
        "7.50 kWh at step 2 (0.5483 元/kWh) = 4.11225 元",
        "Total 6.60375 元, posted as 660 fen (half-up).",
    ] {
        assert!(
            out.explanation.contains(part),
            "{part:?} not in {:?}",
            out.explanation
        );
    }
    let boundary = run(&STEP_CASES[9]);
    for part in [
        "2013-12-31..2014-01-02 (3 days): 10.00 kWh spread evenly per day across the cycle boundary",
        "2013-12-31..2013-12-31 (1 day, 3.333 kWh, year-to-date before it 4799.00 kWh)",
        "2014-01-01..2014-01-02 (2 days, 6.667 kWh, year-to-date before it 0.00 kWh)",
    ] {
        assert!(
            boundary.explanation.contains(part),
            "{part:?} not in {:?}",
            boundary.explanation
        );
    }
}

#[test]
fn rounding_modes() {
    let with_rounding = |rounding: &str| XIANYOU.replace("\"half-up\"", &format!("\"{rounding}\""));
    // (kWh, year-to-date, half-up, half-even, down)
    // 150 × 0.4983 = 74.745 → 7474.5 fen: a true half.
    // 50 × 0.4983 = 24.915 → 2491.5 fen: a half with an odd fen below.
    // 33.333 × 0.7983 = 26.6097339 → 2660.97339 fen: not a half.
    let cases = [
        ("150", "0", 7475, 7474, 7474),
        ("50", "0", 2492, 2492, 2491),
        ("33.333", "6000", 2661, 2661, 2660),
    ];
    for (kwh, ytd, up, even, down) in cases {
        for (rounding, want) in [("half-up", up), ("half-even", even), ("down", down)] {
            let params = with_rounding(rounding);
            let out = price(&input(&params, "2013-06-01", "2013-06-01", kwh, ytd, "0")).unwrap();
            assert_eq!(out.charge_fen, want, "{kwh} kWh from {ytd}, {rounding}");
            assert!(out.explanation.contains(&format!("({rounding})")));
        }
    }
}

#[test]
fn time_of_use_adders() {
    // (case, year-to-date, kWh, elected, split, lines, fen, reason)
    type Lines = &'static [(&'static str, &'static str, &'static str, &'static str)];
    let cases: &[(&str, &str, &str, bool, &[(TouBand, &str)], Lines, i64, &str)] = &[
        // 10 × 0.4983 = 4.983; peak 6 × 0.0300 = 0.18; valley 4 × −0.2000 = −0.8.
        // Σ 4.363 → 436.
        (
            "peak and valley",
            "100",
            "10",
            true,
            &[(TouBand::Peak, "6"), (TouBand::Valley, "4")],
            &[
                ("step 1", "10", "0.4983", "4.983"),
                ("peak adder", "6", "0.0300", "0.18"),
                ("valley adder", "4", "-0.2000", "-0.8"),
            ],
            436,
            "step-tariff-tou",
        ),
        // Same energy reported as two peak registers: merged into one line.
        (
            "duplicate band merged",
            "100",
            "10",
            true,
            &[
                (TouBand::Peak, "3"),
                (TouBand::Valley, "4"),
                (TouBand::Peak, "3"),
            ],
            &[
                ("step 1", "10", "0.4983", "4.983"),
                ("peak adder", "6", "0.0300", "0.18"),
                ("valley adder", "4", "-0.2000", "-0.8"),
            ],
            436,
            "step-tariff-tou",
        ),
        // Flat has no adder in Xianyou: 4.983 + 5 × 0.03 = 5.133 → 513.
        (
            "band without adder",
            "100",
            "10",
            true,
            &[(TouBand::Flat, "5"), (TouBand::Peak, "5")],
            &[
                ("step 1", "10", "0.4983", "4.983"),
                ("peak adder", "5", "0.0300", "0.15"),
            ],
            513,
            "step-tariff-tou",
        ),
        // The step is decided by total usage; the adders ride on top.
        // 6.60375 + 10 × 0.03 − 2.5 × 0.2 = 6.40375 → 640.
        (
            "adders across a step boundary",
            "2755",
            "12.50",
            true,
            &[(TouBand::Peak, "10"), (TouBand::Valley, "2.50")],
            &[
                ("step 1", "5", "0.4983", "2.4915"),
                ("step 2", "7.5", "0.5483", "4.11225"),
                ("peak adder", "10", "0.0300", "0.3"),
                ("valley adder", "2.5", "-0.2000", "-0.5"),
            ],
            640,
            "step-tariff-tou",
        ),
        // Not elected: the split is ignored. 4.983 → 498.
        (
            "split but not elected",
            "100",
            "10",
            false,
            &[(TouBand::Peak, "6"), (TouBand::Valley, "4")],
            &[("step 1", "10", "0.4983", "4.983")],
            498,
            "step-tariff",
        ),
        // Elected but the meter reported no bands: steps alone.
        (
            "elected without split",
            "100",
            "10",
            true,
            &[],
            &[("step 1", "10", "0.4983", "4.983")],
            498,
            "step-tariff",
        ),
    ];
    for &(name, ytd, kwh, elected, bands, lines, fen, reason) in cases {
        let mut inp = input(XIANYOU, "2013-01-15", "2013-01-15", kwh, ytd, "0");
        inp.time_of_use_elected = elected;
        inp.tou_split = split(bands);
        let out = price(&inp).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_lines(&out, lines, name);
        assert_eq!(out.charge_fen, fen, "{name}");
        assert_eq!(out.reason_code, reason, "{name}");
    }

    let mut inp = input(XIANYOU, "2013-01-15", "2013-01-15", "10", "100", "0");
    inp.time_of_use_elected = true;
    let out = price(&inp).unwrap();
    assert!(
        out.explanation.contains("no band split was reported"),
        "{}",
        out.explanation
    );
    inp.tou_split = split(&[(TouBand::Peak, "6"), (TouBand::Valley, "4")]);
    let out = price(&inp).unwrap();
    assert!(
        out.explanation
            .contains("peak 6.00 kWh × +0.0300 元/kWh = 0.18 元")
            && out
                .explanation
                .contains("valley 4.00 kWh × -0.2000 元/kWh = -0.80 元"),
        "{}",
        out.explanation
    );
}

#[test]
fn integer_thresholds_as_in_the_fujian_example() {
    // fujian-residential-example.toml writes `up_to_kwh = 2760` as a TOML integer.
    let params = XIANYOU
        .replace(r#""up_to_kwh":"2760""#, r#""up_to_kwh":2760"#)
        .replace(r#""up_to_kwh":"4800""#, r#""up_to_kwh":4800"#);
    assert!(params.contains(r#""up_to_kwh":2760"#));
    let out = price(&input(
        &params,
        "2013-08-14",
        "2013-08-14",
        "12.50",
        "2755",
        "0",
    ))
    .unwrap();
    assert_eq!(out.charge_fen, 660);
}

#[test]
fn refused_inputs() {
    let ok = || input(XIANYOU, "2013-06-01", "2013-06-01", "10", "100", "0");
    let mut cases: Vec<(&str, policy_tariff_step::TariffInput, &str)> = Vec::new();

    let mut c = ok();
    c.time_of_use_elected = true;
    c.tou_split = split(&[(TouBand::Peak, "6"), (TouBand::Valley, "3")]);
    cases.push(("split short of kwh", c, "tou-split-mismatch"));

    let mut c = ok();
    c.time_of_use_elected = true;
    c.tou_split = split(&[(TouBand::Peak, "11"), (TouBand::Valley, "-1")]);
    cases.push(("negative band", c, "invalid-input"));

    cases.push((
        "negative kWh",
        input(XIANYOU, "2013-06-01", "2013-06-01", "-0.001", "100", "0"),
        "invalid-input",
    ));
    cases.push((
        "negative year-to-date",
        input(XIANYOU, "2013-06-01", "2013-06-01", "1", "-5", "0"),
        "invalid-input",
    ));
    cases.push((
        "reversed period",
        input(XIANYOU, "2013-06-02", "2013-06-01", "1", "0", "0"),
        "invalid-input",
    ));
    cases.push((
        "impossible date",
        input(XIANYOU, "2013-02-29", "2013-03-01", "1", "0", "0"),
        "invalid-input",
    ));

    // An absurd price times a huge reading overflows a 96-bit decimal: refused, no trap.
    let huge_price = XIANYOU.replace("\"0.7983\"", "\"79228162514264.3375\"");
    cases.push((
        "overflow",
        input(
            &huge_price,
            "2013-06-01",
            "2013-06-01",
            "92233720368547758.07",
            "0",
            "0",
        ),
        "decimal-out-of-range",
    ));

    let mut c = ok();
    c.kwh = policy_tariff_step::WitDecimal {
        mantissa: 1,
        scale: 29,
    };
    cases.push(("scale 29", c, "decimal-out-of-range"));

    for (name, inp, code) in cases {
        let err = price(&inp).expect_err(name);
        assert_eq!(err.code, code, "{name}: {}", err.message);
        assert!(!err.message.is_empty(), "{name}");
    }
}

#[test]
fn bad_parameters() {
    let steps = r#""steps":[{"price":"0.4983","up_to_kwh":"2760"},{"price":"0.5483","up_to_kwh":"4800"},{"price":"0.7983"}]"#;
    let head = r#""charge_rounding":"half-up","cycle":"calendar-year""#;
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "steps: 3".to_string()),
        ("missing steps", format!("{{{head}}}")),
        (
            "missing rounding",
            format!(r#"{{"cycle":"calendar-year",{steps}}}"#),
        ),
        ("misspelt key", format!("{{{head},{},\"stpes\":[]}}", steps)),
        (
            "float price",
            format!(r#"{{{head},"steps":[{{"price":0.4983}}]}}"#),
        ),
        (
            "unknown rounding",
            format!(r#"{{"charge_rounding":"ceiling","cycle":"calendar-year",{steps}}}"#),
        ),
        (
            "unknown cycle",
            format!(r#"{{"charge_rounding":"half-up","cycle":"fortnight",{steps}}}"#),
        ),
        ("empty steps", format!(r#"{{{head},"steps":[]}}"#)),
        (
            "thresholds not increasing",
            format!(
                r#"{{{head},"steps":[{{"price":"0.4","up_to_kwh":"4800"}},{{"price":"0.5","up_to_kwh":"2760"}},{{"price":"0.6"}}]}}"#
            ),
        ),
        (
            "zero threshold",
            format!(r#"{{{head},"steps":[{{"price":"0.4","up_to_kwh":"0"}},{{"price":"0.6"}}]}}"#),
        ),
        (
            "last step bounded",
            format!(r#"{{{head},"steps":[{{"price":"0.4","up_to_kwh":"2760"}}]}}"#),
        ),
        (
            "middle step open",
            format!(r#"{{{head},"steps":[{{"price":"0.4"}},{{"price":"0.6"}}]}}"#),
        ),
        (
            "five-decimal price",
            format!(r#"{{{head},"steps":[{{"price":"0.49831"}}]}}"#),
        ),
        (
            "negative price",
            format!(r#"{{{head},"steps":[{{"price":"-0.1"}}]}}"#),
        ),
        (
            "foreign currency",
            format!(r#"{{{head},"currency":"USD",{steps}}}"#),
        ),
        (
            "adder below zero price",
            format!(r#"{{{head},{steps},"time_of_use":{{"valley":{{"add":"-0.6000"}}}}}}"#),
        ),
        (
            "unknown band",
            format!(r#"{{{head},{steps},"time_of_use":{{"shoulder":{{"add":"0.01"}}}}}}"#),
        ),
        (
            "bad band time",
            format!(
                r#"{{{head},{steps},"time_of_use":{{"peak":{{"add":"0.03","from":"8:00"}}}}}}"#
            ),
        ),
    ];
    for (name, params) in cases {
        let err =
            price(&input(&params, "2013-06-01", "2013-06-01", "10", "0", "0")).expect_err(name);
        assert_eq!(err.code, "bad-parameters", "{name}: {}", err.message);
    }
    // A five-decimal price is fine once the county declares price_scale = 5.
    let five = format!(r#"{{{head},"price_scale":5,"steps":[{{"price":"0.49831"}}]}}"#);
    let out = price(&input(&five, "2013-06-01", "2013-06-01", "100", "0", "0")).unwrap();
    assert_eq!(out.charge_fen, 4983); // 100 × 0.49831 = 49.831 → 4983.1 fen
}

#[test]
fn xianyou_policy_set_matches() {
    // The parameters the host will hand over are exactly the ones these tests use.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/xianyou/policy-set.toml"
    );
    let set: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params: serde_json::Value = serde_json::to_value(&set["tariff"]["parameters"]).unwrap();
    assert_eq!(serde_json::to_string(&params).unwrap(), XIANYOU);
}

/// Contract 1.1: `price-batch` answers each input exactly as `price` does with the batch's
/// parameters filled in — priced, refused and out-of-range inputs mixed in one list, in
/// order, whatever the inputs' own `parameters` say — and bad parameters refuse every
/// input alike.
#[test]
fn price_batch_is_price_of_each_input() {
    use policy_tariff_step::price_batch;
    let mut inputs = vec![
        input(XIANYOU, "2013-06-01", "2013-06-01", "12.50", "1000", "0"),
        input(XIANYOU, "2013-06-01", "2013-06-01", "-1", "1000", "0"),
        input(XIANYOU, "2013-12-30", "2013-01-02", "3", "0", "0"),
        input(XIANYOU, "2013-12-31", "2014-01-01", "40", "4790", "0"),
    ];
    let mut tou = input(XIANYOU, "2013-06-01", "2013-06-01", "10", "100", "0");
    tou.time_of_use_elected = true;
    tou.tou_split = split(&[(TouBand::Peak, "6"), (TouBand::Valley, "4")]);
    inputs.push(tou);
    let alone: Vec<_> = inputs.iter().map(price).collect();
    assert!(alone.iter().filter(|r| r.is_ok()).count() >= 3);
    assert!(alone.iter().any(|r| r.is_err()));

    // The inputs' own parameters are ignored: empty, or another county's.
    for own in ["", r#"{"cycle":"calendar-month"}"#] {
        let stripped: Vec<_> = inputs
            .iter()
            .map(|i| policy_tariff_step::TariffInput {
                parameters: own.to_string(),
                ..i.clone()
            })
            .collect();
        assert_eq!(
            price_batch(XIANYOU, &stripped),
            alone,
            "own parameters {own:?}"
        );
        // Order is kept: reversed in, reversed out.
        let mut reversed = stripped.clone();
        reversed.reverse();
        let mut expected = alone.clone();
        expected.reverse();
        assert_eq!(price_batch(XIANYOU, &reversed), expected);
    }
    assert!(price_batch(XIANYOU, &[]).is_empty());

    let refused = price_batch("steps: 3", &inputs);
    assert_eq!(refused.len(), inputs.len());
    for r in &refused {
        assert_eq!(r.as_ref().unwrap_err().code, "bad-parameters");
    }
}

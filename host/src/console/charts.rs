//! Charts as SVG, drawn on the server with `plotters` (SVG backend only: no bitmap
//! backend and no font library; plotters then sizes text by estimate and the browser
//! draws it with its own fonts).
//!
//! Amounts arrive as integer fen and centi-kWh; they are turned into `f64` only for
//! placing points on the drawing, never for arithmetic on money.

use plotters::prelude::*;

/// One point of a balance history: when (county local, as stored) and the balance
/// after that ledger entry, fen.
#[derive(Clone, Debug)]
pub struct BalancePoint {
    pub at: String,
    pub balance_fen: i64,
}

/// One settled day: date, energy in centi-kWh, charge in fen.
#[derive(Clone, Debug)]
pub struct UsageDay {
    pub date: String,
    pub kwh_centi: i64,
    pub charge_fen: i64,
}

const W: u32 = 640;
const H: u32 = 240;

fn range(values: impl Iterator<Item = f64>, include_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let pad = ((hi - lo) * 0.1).max(1.0);
    (lo - pad, hi + pad)
}

fn label_at(labels: &[String], x: &usize) -> String {
    labels.get(*x).cloned().unwrap_or_default()
}

/// The balance after each ledger entry, oldest first, as a line (yuan on the y axis,
/// a zero line to show arrears). `title` is already translated. Empty history → a
/// chart with no points.
pub fn balance_history(points: &[BalancePoint], title: &str, y_label: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let ys = points.iter().map(|p| p.balance_fen as f64 / 100.0);
        let (lo, hi) = range(ys, true);
        let n = points.len().max(2);
        let labels: Vec<String> = points
            .iter()
            .map(|p| p.at.get(..10).unwrap_or(&p.at).to_string())
            .collect();
        let draw =
            || -> Result<(), Box<dyn std::error::Error + '_>> {
                root.fill(&WHITE)?;
                let mut chart = ChartBuilder::on(&root)
                    .caption(title, ("sans-serif", 16))
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(56)
                    .build_cartesian_2d(0usize..n - 1, lo..hi)?;
                chart
                    .configure_mesh()
                    .x_labels(6)
                    .x_label_formatter(&|x| label_at(&labels, x))
                    .y_desc(y_label)
                    .y_label_formatter(&|y| format!("{y:.0}"))
                    .draw()?;
                chart.draw_series(LineSeries::new([(0usize, 0.0), (n - 1, 0.0)], RED.mix(0.5)))?;
                chart.draw_series(LineSeries::new(
                    points
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (i, p.balance_fen as f64 / 100.0)),
                    BLUE.stroke_width(2),
                ))?;
                chart.draw_series(points.iter().enumerate().map(|(i, p)| {
                    Circle::new((i, p.balance_fen as f64 / 100.0), 2, BLUE.filled())
                }))?;
                root.present()?;
                Ok(())
            };
        if let Err(e) = draw() {
            tracing::warn!("balance chart: {e}");
        }
    }
    svg
}

/// Daily usage (bars, kWh, left axis) and charges (line, yuan, right axis), oldest
/// first. Labels are already translated.
pub fn daily_usage(days: &[UsageDay], title: &str, kwh_label: &str, yuan_label: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let n = days.len().max(1);
        let (_, kwh_hi) = range(days.iter().map(|d| d.kwh_centi as f64 / 100.0), true);
        let (_, yuan_hi) = range(days.iter().map(|d| d.charge_fen as f64 / 100.0), true);
        let labels: Vec<String> = days
            .iter()
            .map(|d| d.date.get(5..).unwrap_or(&d.date).to_string())
            .collect();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(48)
                .right_y_label_area_size(48)
                .build_cartesian_2d((0usize..n - 1).into_segmented(), 0.0..kwh_hi)?
                // The charge line's x runs over the bars' centres: bar i spans i..i+1.
                .set_secondary_coord(-0.5..(n as f64 - 0.5), 0.0..yuan_hi);
            chart
                .configure_mesh()
                .x_labels(8)
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => label_at(&labels, i),
                    SegmentValue::Last => String::new(),
                })
                .y_desc(kwh_label)
                .draw()?;
            chart.configure_secondary_axes().y_desc(yuan_label).draw()?;
            chart.draw_series(days.iter().enumerate().map(|(i, d)| {
                let kwh = d.kwh_centi as f64 / 100.0;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), kwh),
                    ],
                    GREEN.mix(0.6).filled(),
                );
                bar.set_margin(0, 0, 2, 2);
                bar
            }))?;
            chart.draw_secondary_series(LineSeries::new(
                days.iter()
                    .enumerate()
                    .map(|(i, d)| (i as f64, d.charge_fen as f64 / 100.0)),
                RED.stroke_width(2),
            ))?;
            root.present()?;
            Ok(())
        };
        if let Err(e) = draw() {
            tracing::warn!("usage chart: {e}");
        }
    }
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balance_chart_is_an_svg_with_one_point_per_entry_and_the_title() {
        let pts: Vec<BalancePoint> = [5000, 3000, -250]
            .iter()
            .enumerate()
            .map(|(i, &b)| BalancePoint {
                at: format!("2013-01-0{} 00:10:00", i + 1),
                balance_fen: b,
            })
            .collect();
        let svg = balance_history(&pts, "余额", "元");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("余额"));
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("2013-01-01"));
    }

    #[test]
    fn the_usage_chart_has_a_bar_per_day_and_a_charge_line() {
        let days: Vec<UsageDay> = (1..=4)
            .map(|d| UsageDay {
                date: format!("2013-01-0{d}"),
                kwh_centi: 1000 * d,
                charge_fen: 498 * d,
            })
            .collect();
        let svg = daily_usage(&days, "Daily usage", "kWh", "yuan");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Daily usage") && svg.contains("kWh") && svg.contains("yuan"));
        // Four bars (rect) besides the background, and one polyline for the charges.
        assert!(svg.matches("<rect").count() >= 5, "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
    }

    #[test]
    fn empty_data_still_gives_a_chart() {
        assert!(balance_history(&[], "t", "y").starts_with("<svg"));
        assert!(daily_usage(&[], "t", "a", "b").starts_with("<svg"));
    }
}

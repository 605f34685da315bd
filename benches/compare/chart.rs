//! The table as an SVG bar chart: one group of bars per row, one bar per
//! contender, each bar the contender's result over raw Tokio's, turned so
//! that taller is better everywhere (latency and memory are inverted); and
//! the scaling curves as log-log line charts (Unix only, as the curves).

use std::path::Path;

use plotters::prelude::*;

/// One group of bars: a row's label and each contender's "higher is
/// better" ratio to the baseline (`None`: not measured).
pub struct Group {
    pub label: String,
    pub ratios: Vec<Option<f64>>,
}

const COLORS: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0xff, 0x7f, 0x0e),
];

/// Draws the chart into `path`.
pub fn draw(path: &Path, title: &str, contenders: &[&str], groups: &[Group]) {
    let top = groups
        .iter()
        .flat_map(|g| g.ratios.iter().flatten())
        .fold(1.5f64, |a, &b| a.max(b * 1.1));
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..groups.len() as f64 - 0.5, 0f64..top)
        .unwrap();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            match labels.get(i as usize) {
                Some(label) if (x - i).abs() < 0.01 => label.clone(),
                _ => String::new(),
            }
        })
        .y_desc("ratio to raw tokio (higher is better)")
        .draw()
        .unwrap();
    let width = 0.8 / contenders.len() as f64;
    for (k, name) in contenders.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars = groups.iter().enumerate().filter_map(|(i, g)| {
            let ratio = g.ratios.get(k).copied().flatten()?;
            let left = i as f64 - 0.4 + k as f64 * width;
            Some(Rectangle::new(
                [(left, 0.0), (left + width * 0.9, ratio)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .unwrap()
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    let baseline = LineSeries::new(
        [(-0.5, 1.0), (groups.len() as f64 - 0.5, 1.0)],
        BLACK.stroke_width(1),
    );
    chart.draw_series(baseline).unwrap();
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// One panel of a curve chart: its y axis and one line per contender
/// (`values[contender][point]`; points that are not positive are left out).
#[cfg(all(unix, feature = "peers"))]
pub struct Panel {
    pub y_desc: &'static str,
    pub values: Vec<Vec<f64>>,
}

#[cfg(all(unix, feature = "peers"))]
const LINE_COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// Draws the panels side by side into `path`, each a log-log line chart
/// of its values against `xs`, one line per contender.
#[cfg(all(unix, feature = "peers"))]
pub fn draw_curves(
    path: &Path,
    title: &str,
    x_desc: &str,
    contenders: &[&str],
    xs: &[f64],
    panels: &[Panel],
) {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let root = root.titled(title, ("sans-serif", 20)).unwrap();
    let x_range = xs[0] * 0.8..xs[xs.len() - 1] * 1.25;
    for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let all = panel.values.iter().flatten().copied().filter(|&v| v > 0.0);
        let (low, high) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (low, high) = match low <= high {
            true => (low / 1.5, high * 1.5),
            false => (1.0, 10.0),
        };
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone().log_scale(), (low..high).log_scale())
            .unwrap();
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(panel.y_desc)
            .x_label_formatter(&|x| short(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()
            .unwrap();
        for (k, name) in contenders.iter().enumerate() {
            let color = LINE_COLORS[k % LINE_COLORS.len()];
            let line: Vec<(f64, f64)> = xs
                .iter()
                .zip(&panel.values[k])
                .filter(|(_, &v)| v > 0.0)
                .map(|(&x, &v)| (x, v))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .unwrap()
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .unwrap();
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}

/// A tick label: 5000 as "5k", 8388608 as "8.39M".
#[cfg(all(unix, feature = "peers"))]
fn short(v: f64) -> String {
    let (n, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let n = format!("{n:.2}");
    format!("{}{unit}", n.trim_end_matches('0').trim_end_matches('.'))
}

//! The table as an SVG bar chart: one group of bars per row, one bar per
//! contender, each bar the contender's result over raw Tokio's, turned so
//! that taller is better everywhere (latency and memory are inverted).

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

//! The picture of the propagation latency (P1): for each fleet size, the share of bans that
//! reached a client within a given time, on a log scale, drawn with plotters as SVG. The
//! poll-based alternative's medians, as measured on this kind of machine (docs/performance.md,
//! issue 18), are drawn beside it as dashed lines: they are figures, not samples of this run.

use plotters::prelude::*;

use super::*;

/// CrowdSec 1.4.6 with its firewall bouncer, command to nftables set, median of 20 samples.
const POLL_BASED: [(&str, f64); 2] = [
    ("CrowdSec, 1 s poll: median 651 ms", 651.0),
    ("CrowdSec, 10 s poll: median 4.82 s", 4820.0),
];
const COLOURS: [RGBColor; 3] = [BLUE, GREEN, MAGENTA];
const POINTS: usize = 400;

/// Draws `series` (a label, and its samples) into `path`.
pub fn latency_svg(path: &Path, series: &[(String, Vec<Duration>)]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Report to ban command on every client (P1)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((1f64..10_000f64).log_scale(), 0f64..1f64)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("share of bans applied")
        .draw()
        .unwrap();
    for ((label, samples), colour) in series.iter().zip(COLOURS.iter().cycle()) {
        let mut ms: Vec<f64> = samples.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        // At most POINTS points a curve, so that the picture stays small.
        let n = ms.len();
        let points = (1..=POINTS.min(n)).map(|k| {
            let i = k * n / POINTS.min(n) - 1;
            (ms[i].max(1.0), (i + 1) as f64 / n as f64)
        });
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .unwrap()
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    for (label, median) in POLL_BASED {
        let line = [(median, 0.0), (median, 1.0)];
        chart
            .draw_series(DashedLineSeries::new(line, 6, 4, RED.stroke_width(2)))
            .unwrap()
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .unwrap();
    root.present().unwrap();
    eprintln!("picture of P1: {}", path.display());
}

//! The SVG plot of a [`BenchReport`] (`capdma-sim bench --svg FILE`), drawn
//! with `plotters`: GB/s of every method, grouped by frame size, each bar
//! with the range of the runs' medians, and both limits of each frame size
//! drawn across its group (the contiguous limit solid, the scattered limit
//! dashed). A legend to the right names the methods.
use super::BenchReport;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor;

/// Pixels of the whole picture.
const SIZE: (u32, u32) = (1280, 620);
/// Pixels of the legend on the right.
const LEGEND_WIDTH: u32 = 300;

fn drawing_error<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

/// Renders `report` as an SVG document.
///
/// # Errors
/// The report has no case, or `plotters` failed to draw.
pub fn render_svg(report: &BenchReport) -> Result<String, String> {
    let first = report.cases.first().ok_or("plot: no frame size measured")?;
    let methods: Vec<&str> = first.methods.iter().map(|m| m.method.as_str()).collect();
    let top = report
        .cases
        .iter()
        .flat_map(|c| c.methods.iter().flat_map(|m| m.gbps_by_run.iter().copied()).chain([c.limit.gbps, c.scattered_limit.gbps]))
        .fold(0.0, f64::max);
    let y_max = (top * 1.15).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        draw_bars(report, &methods, y_max, &plot_area)?;
        draw_legend(&methods, &legend_area)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// The first whitespace-separated word of `text` (the 1-minute load average).
fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("?")
}

fn color(index: usize) -> RGBColor {
    let c = Palette99::pick(index).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn draw_bars(report: &BenchReport, methods: &[&str], y_max: f64, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
    let groups = report.cases.len();
    let s = &report.settings;
    let day = report.started.get(..10).unwrap_or(&report.started);
    let caption = format!(
        "capdma copy, GB/s per method: {} run(s), median of the run medians, whiskers: their range; {}, {day}, load {} -> {}",
        s.runs,
        report.machine.cpu_model,
        first_word(&s.load_average.0),
        first_word(&s.load_average.1)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(8)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..groups as f64, 0f64..y_max)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_desc("GB/s (10^9 bytes per second)")
        .draw()
        .map_err(drawing_error)?;
    let slot = 0.9 / methods.len().max(1) as f64;
    for (k, case) in report.cases.iter().enumerate() {
        let x0 = k as f64 + 0.05;
        for (i, m) in case.methods.iter().enumerate() {
            let left = x0 + i as f64 * slot;
            let right = left + slot * 0.85;
            let style = color(i).filled();
            chart.draw_series(std::iter::once(Rectangle::new([(left, 0.0), (right, m.gbps_median)], style))).map_err(drawing_error)?;
            if m.method == "driver" {
                // The driver's path, outlined.
                let outline = BLACK.stroke_width(2);
                chart.draw_series(std::iter::once(Rectangle::new([(left, 0.0), (right, m.gbps_median)], outline))).map_err(drawing_error)?;
            }
            if m.gbps_by_run.len() > 1 {
                let low = m.gbps_by_run.iter().copied().fold(f64::INFINITY, f64::min);
                let high = m.gbps_by_run.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mid = f64::midpoint(left, right);
                chart.draw_series(std::iter::once(PathElement::new(vec![(mid, low), (mid, high)], BLACK.stroke_width(1)))).map_err(drawing_error)?;
            }
        }
        let span = vec![(x0 - 0.02, case.limit.gbps), (x0 + 0.92, case.limit.gbps)];
        chart.draw_series(std::iter::once(PathElement::new(span, BLACK.stroke_width(2)))).map_err(drawing_error)?;
        let dashed = vec![(x0 - 0.02, case.scattered_limit.gbps), (x0 + 0.92, case.scattered_limit.gbps)];
        chart.draw_series(std::iter::once(DashedPathElement::new(dashed, 6, 4, RED.stroke_width(2)))).map_err(drawing_error)?;
        let label = format!("{} ({:.2} MB)", case.name, case.frame_bytes as f64 / 1e6);
        let style = ("sans-serif", 15).into_font().color(&BLACK).pos(text_anchor::Pos::new(text_anchor::HPos::Center, text_anchor::VPos::Top));
        chart.draw_series(std::iter::once(Text::new(label, (k as f64 + 0.5, y_max * 0.985), style))).map_err(drawing_error)?;
    }
    Ok(())
}

fn draw_legend(methods: &[&str], area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    let row = 22;
    let mut y = 40;
    let line = |y: i32, text: String, sample: &dyn Fn(i32) -> Result<(), String>| -> Result<(), String> {
        sample(y)?;
        area.draw(&Text::new(text, (40, y - 7), font.clone())).map_err(drawing_error)
    };
    line(y, "limit (best non-temporal, contiguous)".into(), &|y| area.draw(&PathElement::new(vec![(8, y), (32, y)], BLACK.stroke_width(2))).map_err(drawing_error))?;
    y += row;
    line(y, "scattered limit (best into the pages)".into(), &|y| {
        area.draw(&DashedPathElement::new(vec![(8, y), (32, y)], 6, 4, RED.stroke_width(2))).map_err(drawing_error)
    })?;
    y += row + 6;
    for (i, m) in methods.iter().enumerate() {
        line(y, (*m).to_owned(), &|y| area.draw(&Rectangle::new([(10, y - 7), (30, y + 7)], color(i).filled())).map_err(drawing_error))?;
        y += row;
    }
    Ok(())
}

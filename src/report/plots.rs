//! The chart kinds the report draws, with plotters into SVG strings.

use plotters::prelude::*;

const W: u32 = 720;
const H: u32 = 400;

pub(super) fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Lines of (x, y) series, each with a label, on shared axes.
pub(super) fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (x0, x1) = bounds(pts.iter().map(|p| p.0));
    let (y0, y1) = bounds(pts.iter().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Grouped bars: one group per name, one bar per series.
pub(super) fn bars(
    title: &str,
    y_desc: &str,
    names: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<String, String> {
    let n = names.len().max(1);
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(err)?;
        let label = |x: &f64| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .disable_x_mesh()
            .draw()
            .map_err(err)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, (label, values)) in series.iter().enumerate() {
            let color = Palette99::pick(s).to_rgba();
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x = i as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x, 0.0), (x + width, *v)], color.filled())
                }))
                .map_err(err)?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A confusion matrix as a heat map, rows (true class) normalised. Class `r` is the `r`-th cell
/// from the top and the left, and each axis label sits on its own cell (segmented axes).
pub(super) fn heatmap(title: &str, m: &[Vec<u64>]) -> Result<String, String> {
    let k = m.len().max(1) as i32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(35)
            .build_cartesian_2d((0..k).into_segmented(), (0..k).into_segmented())
            .map_err(err)?;
        // The y axis grows upward; true class r is drawn at y = k − 1 − r, so label it r.
        let class = |v: &SegmentValue<i32>, flip: bool| match v {
            SegmentValue::CenterOf(c) | SegmentValue::Exact(c) if (0..k).contains(c) => {
                (if flip { k - 1 - c } else { *c }).to_string()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k as usize)
            .y_labels(k as usize)
            .x_label_formatter(&|v| class(v, false))
            .y_label_formatter(&|v| class(v, true))
            .disable_mesh()
            .draw()
            .map_err(err)?;
        chart
            .draw_series(m.iter().enumerate().flat_map(|(r, row)| {
                let total = row.iter().sum::<u64>().max(1) as f64;
                row.iter().enumerate().map(move |(c, &v)| {
                    let share = v as f64 / total;
                    let shade = (255.0 * (1.0 - share)) as u8;
                    let y = k - 1 - r as i32;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(c as i32), SegmentValue::Exact(y)),
                            (
                                SegmentValue::Exact(c as i32 + 1),
                                SegmentValue::Exact(y + 1),
                            ),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )
                })
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

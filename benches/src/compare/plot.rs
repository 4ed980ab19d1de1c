//! The picture: bandwidth against message size, as an SVG file.
//!
//! plotters with only its SVG backend: no font or image system library is
//! needed (text is written as SVG `<text>`; the viewer picks the font).

use plotters::prelude::*;
use std::path::Path;

/// One line of the picture: a name and (message size, MiB/s) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(u64, f64)>,
}

fn size_label(x: f64) -> String {
    let x = x.round() as u64;
    match x {
        x if x >= 1 << 20 => format!("{}M", x >> 20),
        x if x >= 1 << 10 => format!("{}K", x >> 10),
        x => x.to_string(),
    }
}

/// Bandwidth (log) against message size (log 2); `reference` is a
/// horizontal dashed line (e.g. memcpy).
pub fn bandwidth_svg(
    path: &Path,
    title: &str,
    series: &[Series],
    reference: Option<(&str, f64)>,
) -> Result<(), String> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let xmax = pts.clone().map(|p| p.0).max().unwrap_or(1 << 23).max(4) as f64;
    let xmin = pts.clone().map(|p| p.0).min().unwrap_or(2).max(1) as f64;
    let ys = pts
        .map(|p| p.1)
        .chain(reference.map(|r| r.1))
        .filter(|y| *y > 0.0);
    let ymax = ys.clone().fold(1.0f64, f64::max) * 2.0;
    let ymin = ys.fold(f64::INFINITY, f64::min).min(ymax / 10.0) / 2.0;
    let err = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((xmin..xmax).log_scale().base(2.0), (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("message size [bytes]")
        .y_desc("bandwidth [MiB/s]")
        .x_label_formatter(&|x| size_label(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    let palette = [RED, BLUE, RGBColor(0, 150, 0), MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = palette[i % palette.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(x, y)| (x as f64, y))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    if let Some((name, y)) = reference {
        let dashes: Vec<Vec<(f64, f64)>> = (0..40)
            .map(|k| {
                let a = xmin * (xmax / xmin).powf(k as f64 / 40.0);
                let b = xmin * (xmax / xmin).powf((k as f64 + 0.5) / 40.0);
                vec![(a, y), (b, y)]
            })
            .collect();
        chart
            .draw_series(
                dashes
                    .into_iter()
                    .map(|d| PathElement::new(d, BLACK.stroke_width(1))),
            )
            .map_err(err)?
            .label(name.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

//! Turning measurements into the tables and the plot of `benches/RESULTS.md`.

use std::fmt::Write as _;
use std::time::Duration;

/// Latency percentiles of one series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Maximum, ms.
    pub max: f64,
}

/// Nearest-rank percentiles of `samples` (ms).
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let rank = |q: f64| {
        let index = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    Percentiles {
        count: samples.len(),
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        max: rank(1.0),
    }
}

/// One line of the plot.
pub struct Series<'a> {
    /// Legend.
    pub name: &'a str,
    /// Stroke colour.
    pub color: &'a str,
    /// `(offered load, latency ms)` points.
    pub points: Vec<(f64, f64)>,
}

/// An SVG line chart of latency (log scale) against offered load.
pub fn svg_plot(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let (width, height, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 170.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0_f64, f64::max) * 1.05;
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1.max(0.1)));
    let (y_min, y_max) = ys.fold((f64::MAX, 1.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (log_lo, log_hi) = (y_min.min(1.0).log10().floor(), (y_max * 1.5).log10().ceil());
    let px = |x: f64| left + x / x_max * (width - left - right);
    let py = |y: f64| {
        let t = (y.max(0.1).log10() - log_lo) / (log_hi - log_lo).max(1e-9);
        height - bottom - t * (height - bottom - top)
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">latency (ms, log scale)</text>
"#,
        (width - right + left) / 2.0,
        height - bottom,
        width - right,
        height - bottom,
        height - bottom,
        (width - right + left) / 2.0,
        height - 12.0,
        (height - bottom + top) / 2.0,
        (height - bottom + top) / 2.0,
    );
    let mut decade = log_lo;
    while decade <= log_hi {
        let y = py(10f64.powf(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - right,
            left - 6.0,
            y + 4.0,
            10f64.powf(decade)
        );
        decade += 1.0;
    }
    for i in 0..=4 {
        let x = x_max / 1.05 * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0}</text>"#,
            px(x),
            height - bottom + 16.0,
            x
        );
    }
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            path.join(" ")
        );
        for (x, y) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                px(*x),
                py(*y),
                s.color
            );
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            width - right + 10.0,
            width - right + 30.0,
            s.color,
            width - right + 35.0,
            ly + 4.0,
            s.name
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&mut samples);
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(percentiles(&mut []).count, 0);
    }

    #[test]
    fn plot_has_a_line_per_series() {
        let svg = svg_plot(
            "t",
            "x",
            &[
                Series {
                    name: "a",
                    color: "red",
                    points: vec![(1.0, 2.0), (2.0, 30.0)],
                },
                Series {
                    name: "b",
                    color: "blue",
                    points: vec![(1.0, 5.0)],
                },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}

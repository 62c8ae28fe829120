//! The dashboard's charts, drawn on the server as SVG: the geometry is computed here and the
//! template writes it as attributes, coloured by stylesheet classes (the CSP allows no inline
//! style and no script). Each bar carries a `<title>`, which the browser shows on hover; the
//! axis labels are HTML beside the drawing, so they stay readable at every width.

/// The drawing's coordinate space; it is stretched to the width of its box.
pub(super) const WIDTH: f64 = 600.0;
pub(super) const HEIGHT: f64 = 150.0;

/// One bucket of a series: its label and its value for each series drawn.
pub(super) struct Bucket {
    pub label: String,
    pub values: Vec<f64>,
}

/// A series: the class that colours it and its name in the legend.
#[derive(Clone, Copy)]
pub(super) struct Series {
    pub class: &'static str,
    pub label: &'static str,
}

/// A rectangle of a bar.
pub(super) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub class: &'static str,
}

/// One bucket's bar: its stacked rectangles, and what hovering it says.
pub(super) struct Bar {
    pub rects: Vec<Rect>,
    /// The whole slot, transparent, so hovering anywhere above the bucket shows `tip`.
    pub slot: Rect,
    pub tip: String,
}

impl Bar {
    /// The bar in the slot from `x`, `width` wide, whose hover names `label` and `parts`.
    fn new(rects: Vec<Rect>, x: f64, width: f64, label: &str, parts: &[String]) -> Self {
        Self {
            rects,
            slot: Rect {
                x: round(x),
                y: 0.0,
                w: round(width),
                h: HEIGHT,
                class: "slot",
            },
            tip: format!("{label} — {}", parts.join(", ")),
        }
    }
}

/// A polyline.
pub(super) struct Line {
    pub class: &'static str,
    /// `x,y x,y …`, over the buckets that have a value.
    pub points: String,
}

/// A chart as the template draws it.
pub(super) struct Chart {
    pub title: &'static str,
    /// The top of the value axis, as a label (`1.2k`, `3.40`, `100 %`).
    pub top: String,
    pub legend: Vec<Series>,
    pub bars: Vec<Bar>,
    pub lines: Vec<Line>,
    /// The first, middle and last buckets' labels, under the drawing.
    pub ticks: [String; 3],
}

impl Chart {
    /// Stacked bars, one per bucket: `values[i]` of each bucket is series `i`, stacked bottom
    /// up. `format` writes a value for the axis and the hover text.
    pub(super) fn stacked(
        title: &'static str,
        series: &[Series],
        buckets: &[Bucket],
        format: fn(f64) -> String,
    ) -> Self {
        let peak = buckets
            .iter()
            .map(|b| b.values.iter().sum::<f64>())
            .fold(0.0, f64::max);
        let top = nice_ceiling(peak);
        let slot = WIDTH / buckets.len().max(1) as f64;
        let bars = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let x = i as f64 * slot;
                let mut base = HEIGHT;
                let rects = series
                    .iter()
                    .zip(&b.values)
                    .filter(|&(_, &v)| v > 0.0)
                    .map(|(s, &v)| {
                        let h = v / top * HEIGHT;
                        base -= h;
                        Rect {
                            x: round(x + slot * 0.1),
                            y: round(base),
                            w: round(slot * 0.8),
                            h: round(h),
                            class: s.class,
                        }
                    })
                    .collect();
                let parts: Vec<String> = series
                    .iter()
                    .zip(&b.values)
                    .map(|(s, &v)| format!("{}: {}", s.label, format(v)))
                    .collect();
                Bar::new(rects, x, slot, &b.label, &parts)
            })
            .collect();
        Self {
            title,
            top: format(top),
            legend: series.to_vec(),
            bars,
            lines: Vec::new(),
            ticks: ticks(buckets),
        }
    }

    /// Lines of ratios between 0 and 1, one per series; a bucket whose value is NaN (nothing
    /// to divide) is skipped.
    pub(super) fn ratios(title: &'static str, series: &[Series], buckets: &[Bucket]) -> Self {
        let slot = WIDTH / buckets.len().max(1) as f64;
        let lines = series
            .iter()
            .enumerate()
            .map(|(s, series)| Line {
                class: series.class,
                points: buckets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| {
                        let v = *b.values.get(s)?;
                        v.is_finite().then(|| {
                            let x = round(i as f64 * slot + slot / 2.0);
                            let y = round(HEIGHT - v.clamp(0.0, 1.0) * HEIGHT);
                            format!("{x},{y}")
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            })
            .collect();
        let bars = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let parts: Vec<String> = series
                    .iter()
                    .zip(&b.values)
                    .map(|(s, &v)| format!("{}: {}", s.label, percent(v)))
                    .collect();
                Bar::new(Vec::new(), i as f64 * slot, slot, &b.label, &parts)
            })
            .collect();
        Self {
            title,
            top: "100 %".into(),
            legend: series.to_vec(),
            bars,
            lines,
            ticks: ticks(buckets),
        }
    }
}

/// The first, middle and last labels.
fn ticks(buckets: &[Bucket]) -> [String; 3] {
    let label = |i: usize| buckets.get(i).map(|b| b.label.clone()).unwrap_or_default();
    [
        label(0),
        label(buckets.len() / 2),
        label(buckets.len().saturating_sub(1)),
    ]
}

/// The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10ⁿ) at or above `v` (1 for
/// nothing), so the axis reads round and the tallest bar still fills most of the height.
pub(super) fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// One decimal is plenty for a drawing.
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `0.1234` as `12.3 %`; nothing to divide as `—`.
pub(super) fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", v * 100.0)
    } else {
        "—".into()
    }
}

/// An amount for people: cents from one unit up (`8.98`), else four decimals (`0.0165`).
pub(super) fn money(micros: f64) -> String {
    if micros.abs() >= 1e6 {
        format!("{:.2}", micros / 1e6)
    } else {
        format!("{:.4}", micros / 1e6)
    }
}

/// A count for people: `950`, `12.3k`, `4.5M`, `1.2B`.
pub(super) fn compact(v: f64) -> String {
    let abs = v.abs();
    let (scaled, suffix) = if abs >= 1e9 {
        (v / 1e9, "B")
    } else if abs >= 1e6 {
        (v / 1e6, "M")
    } else if abs >= 1e3 {
        (v / 1e3, "k")
    } else {
        return format!("{v:.0}");
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up_to_one_two_or_five() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.1), 1.5);
        assert_eq!(nice_ceiling(3.0), 3.0);
        assert_eq!(nice_ceiling(24.0), 25.0);
        assert_eq!(nice_ceiling(730.0), 800.0);
        assert_eq!(nice_ceiling(1999.0), 2000.0);
        assert_eq!(nice_ceiling(8100.0), 10_000.0);
    }

    #[test]
    fn counts_read_short() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(4_000_000.0), "4M");
        assert_eq!(compact(1_260_000_000.0), "1.3B");
        assert_eq!(percent(0.1234), "12.3 %");
        assert_eq!(money(8_983_875.0), "8.98");
        assert_eq!(money(16_500.0), "0.0165");
        assert_eq!(percent(f64::NAN), "—");
    }

    #[test]
    fn bars_stack_to_their_total_and_fit_the_drawing() {
        let series = [
            Series {
                class: "a",
                label: "A",
            },
            Series {
                class: "b",
                label: "B",
            },
        ];
        let buckets = vec![
            Bucket {
                label: "one".into(),
                values: vec![30.0, 10.0],
            },
            Bucket {
                label: "two".into(),
                values: vec![0.0, 0.0],
            },
            Bucket {
                label: "three".into(),
                values: vec![80.0, 20.0],
            },
        ];
        let chart = Chart::stacked("t", &series, &buckets, compact);
        assert_eq!(chart.top, "100");
        assert_eq!(
            chart.ticks,
            ["one".to_owned(), "two".into(), "three".into()]
        );
        assert!(chart.bars[1].rects.is_empty(), "nothing drawn for zero");
        let full = &chart.bars[2].rects;
        assert_eq!(full.len(), 2);
        assert_eq!((full[0].y, full[0].h), (HEIGHT * 0.2, HEIGHT * 0.8));
        assert_eq!((full[1].y, full[1].h), (0.0, HEIGHT * 0.2));
        assert_eq!(chart.bars[0].tip, "one — A: 30, B: 10");
        assert!(chart.bars.iter().all(|b| b.slot.x + b.slot.w <= WIDTH));
    }

    #[test]
    fn ratio_lines_skip_buckets_with_nothing_to_divide() {
        let series = [Series {
            class: "r",
            label: "R",
        }];
        let buckets = vec![
            Bucket {
                label: "a".into(),
                values: vec![0.5],
            },
            Bucket {
                label: "b".into(),
                values: vec![f64::NAN],
            },
            Bucket {
                label: "c".into(),
                values: vec![1.0],
            },
        ];
        let chart = Chart::ratios("t", &series, &buckets);
        assert_eq!(chart.lines[0].points, "100,75 500,0");
        assert_eq!(chart.bars[1].tip, "b — R: —");
    }
}

//! The report writer: `report.json` (every figure), `report.md` (the same for people,
//! with tables) and one SVG chart per [`Chart`], drawn by `plotters`.
//!
//! Charts are drawn with the SVG backend and plotters' built-in text layout (no `ttf`
//! feature): titles and labels are SVG `<text>` elements in the generic `sans-serif`
//! family, which every viewer renders with its own fonts, so drawing needs neither
//! system fonts nor a network.
//!
//! Bad data does not stop a report: non-finite points, and points with `x <= 0` on a
//! log-x chart, are skipped; a chart left with no point is drawn with its axes and a
//! "no data" note.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::TestnetError;

/// Width of every chart, in pixels.
const WIDTH: u32 = 800;
/// Height of every chart, in pixels.
const HEIGHT: u32 = 500;
/// The share of an axis's data span added on each side as a margin.
const MARGIN: f64 = 0.05;
/// The font of every text on a chart: a generic family, so the SVG viewer chooses.
const FONT: &str = "sans-serif";

/// Series colours, in order (Tableau 10): distinct on screen and in print.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One named line on a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The name shown in the legend.
    pub name: String,
    /// The `(x, y)` points, drawn in this order.
    pub points: Vec<(f64, f64)>,
}

/// How points are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Style {
    /// A line through the points (a series of one point is drawn as a dot).
    #[default]
    Line,
    /// A dot at each point.
    Points,
    /// A line through the points and a dot at each.
    LinePoints,
}

/// One chart, written as `file` (such as "propagation_cdf.svg") beside report.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The SVG's file name: one path component ending in `.svg`, without whitespace,
    /// parentheses or angle brackets (it is linked from report.md as it is).
    pub file: String,
    /// The title drawn above the chart, also the image's alt text in report.md.
    pub title: String,
    /// The label of the x axis.
    pub x_label: String,
    /// The label of the y axis.
    pub y_label: String,
    /// The lines drawn; with more than one, or any named one, a legend names them.
    pub series: Vec<Series>,
    /// How points are drawn.
    pub style: Style,
    /// A logarithmic x axis (points with `x <= 0` are then skipped).
    pub log_x: bool,
    /// A fixed y range `(low, high)`; `None` fits the data with a small margin.
    pub y_range: Option<(f64, f64)>,
}

/// The points of an empirical CDF: (value, fraction of samples <= value), sorted.
///
/// Non-finite samples are left out (fractions are of the finite ones); equal samples
/// give one point. No finite sample gives no point.
pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut values: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let fraction = (i + 1) as f64 / n;
        match points.last_mut() {
            // -0.0 and 0.0 are one value here, as they are for `<=`.
            Some(last) if last.0 == *v => last.1 = fraction,
            _ => points.push((*v, fraction)),
        }
    }
    points
}

/// Draws `chart` as SVG at `path`.
///
/// Fails with [`TestnetError::Invalid`] when `y_range` is not two finite numbers, low
/// below high, or when plotters cannot draw the chart, and with [`TestnetError::Io`]
/// when the file cannot be written.
pub fn render_svg(chart: &Chart, path: &Path) -> Result<(), TestnetError> {
    let svg = svg_string(chart)?;
    std::fs::write(path, svg)?;
    Ok(())
}

/// A part of report.md.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Section {
    /// The section's heading (a level-2 heading in report.md).
    pub heading: String,
    /// Markdown paragraphs, written as they are.
    pub text: String,
    /// (figure name, value) rows, rendered as a 2-column markdown table when not empty.
    pub table: Vec<(String, String)>,
    /// Charts, each written as an SVG and linked from the section.
    pub charts: Vec<Chart>,
}

/// A whole report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The report's title (the level-1 heading of report.md).
    pub title: String,
    /// Everything measured, written as report.json.
    pub json: serde_json::Value,
    /// The parts of report.md, in order.
    pub sections: Vec<Section>,
}

/// Writes `dir/report.json` (pretty), `dir/report.md` (title, then each section:
/// heading, text, table, then each chart as `![title](file)`), and every chart's SVG
/// into `dir`. Creates `dir`.
///
/// Every chart's file name is checked before anything is written: one that is not a
/// plain `.svg` file name (see [`Chart::file`]), or that two charts share, fails with
/// [`TestnetError::Invalid`].
pub fn write(dir: &Path, report: &Report) -> Result<(), TestnetError> {
    let mut files = std::collections::BTreeSet::new();
    for chart in report.sections.iter().flat_map(|s| &s.charts) {
        check_file_name(&chart.file)?;
        if !files.insert(chart.file.as_str()) {
            return Err(TestnetError::Invalid(format!(
                "two charts are both written as `{}`",
                chart.file
            )));
        }
    }
    // Draw every chart before writing anything, so a chart that cannot be drawn
    // leaves no half-written report.
    let mut svgs = Vec::new();
    for chart in report.sections.iter().flat_map(|s| &s.charts) {
        svgs.push((chart.file.as_str(), svg_string(chart)?));
    }
    let json = serde_json::to_string_pretty(&report.json)
        .map_err(|e| TestnetError::Invalid(format!("report.json: {e}")))?;

    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    for (file, svg) in svgs {
        std::fs::write(dir.join(file), svg)?;
    }
    Ok(())
}

/// Fails unless `file` is a plain `.svg` file name that markdown can link as it is.
fn check_file_name(file: &str) -> Result<(), TestnetError> {
    let plain = file.len() > ".svg".len()
        && file.ends_with(".svg")
        && !file.starts_with('.')
        && !file
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/\\()<>".contains(c));
    if plain {
        Ok(())
    } else {
        Err(TestnetError::Invalid(format!(
            "chart file `{file}` is not a plain .svg file name (one path component, \
             no whitespace, parentheses or angle brackets)"
        )))
    }
}

/// report.md's text.
fn markdown(report: &Report) -> String {
    let mut md = format!("# {}\n", one_line(&report.title));
    for section in &report.sections {
        md.push_str(&format!("\n## {}\n", one_line(&section.heading)));
        let text = section.text.trim();
        if !text.is_empty() {
            md.push('\n');
            md.push_str(text);
            md.push('\n');
        }
        if !section.table.is_empty() {
            md.push_str("\n| Figure | Value |\n| --- | --- |\n");
            for (name, value) in &section.table {
                md.push_str(&format!("| {} | {} |\n", cell(name), cell(value)));
            }
        }
        for chart in &section.charts {
            md.push_str(&format!(
                "\n![{}]({})\n",
                alt_text(&chart.title),
                chart.file
            ));
        }
    }
    md
}

/// `text` on one line (a heading cannot span lines).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` as a markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// `text` as an image's alt text: one line, brackets escaped.
fn alt_text(text: &str) -> String {
    one_line(text).replace('[', "\\[").replace(']', "\\]")
}

/// One series ready to draw: its name, colour and the points that can be drawn.
struct Drawable<'a> {
    name: &'a str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// The SVG text of `chart`.
fn svg_string(chart: &Chart) -> Result<String, TestnetError> {
    let log_x = chart.log_x;
    let drawables: Vec<Drawable<'_>> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| Drawable {
            name: &s.name,
            colour: COLOURS[i % COLOURS.len()],
            points: s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0))
                .collect(),
        })
        .collect();

    let all = || drawables.iter().flat_map(|d| d.points.iter());
    let y = match chart.y_range {
        Some((low, high)) => {
            // A span that is not finite, or too small for f64 to step through, would
            // never end plotters' tick search.
            let span = high - low;
            if !(span.is_finite() && span > low.abs().max(high.abs()) * 1e-9) {
                return Err(TestnetError::Invalid(format!(
                    "chart `{}`: y range ({low}, {high}) is not two finite numbers, low \
                     below high, with a finite span",
                    chart.file
                )));
            }
            low..high
        }
        None => linear_range(all().map(|p| p.1)),
    };
    let x = if log_x {
        log_range(all().map(|p| p.0))
    } else {
        linear_range(all().map(|p| p.0))
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = if log_x {
            draw(&root, chart, &drawables, x.log_scale(), y)
        } else {
            draw(&root, chart, &drawables, x, y)
        };
        drawn
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| {
                TestnetError::Invalid(format!("chart `{}` could not be drawn: {e}", chart.file))
            })?;
    }
    Ok(svg)
}

/// Draws the chart on `root` over the given axes; the error is plotters', as text.
fn draw<X>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
    drawables: &[Drawable<'_>],
    x: X,
    y: Range<f64>,
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let text = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    root.fill(&WHITE).map_err(text)?;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(text)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&|v: &f64| number(*v))
        .y_label_formatter(&|v: &f64| number(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(text)?;

    for d in drawables {
        let colour = d.colour;
        let dots = matches!(chart.style, Style::Points | Style::LinePoints) || d.points.len() == 1;
        let line = matches!(chart.style, Style::Line | Style::LinePoints);
        // The legend entry is attached to the first element drawn for the series.
        let mut legend_done = false;
        if line {
            let drawn = ctx
                .draw_series(LineSeries::new(
                    d.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(text)?;
            drawn.label(d.name).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
            });
            legend_done = true;
        }
        if dots {
            let drawn = ctx
                .draw_series(d.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(text)?;
            if !legend_done {
                drawn
                    .label(d.name)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, colour.filled()));
            }
        }
    }

    if drawables.len() > 1 || drawables.iter().any(|d| !d.name.is_empty()) {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(text)?;
    }

    if drawables.iter().all(|d| d.points.is_empty()) {
        let area = ctx.plotting_area();
        let (w, h) = area.dim_in_pixel();
        let centre = (w as i32 / 2, h as i32 / 2);
        let grey = BLACK.mix(0.5);
        let style =
            TextStyle::from((FONT, 20))
                .color(&grey)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ));
        area.strip_coord_spec()
            .draw_text("no data", &style, centre)
            .map_err(text)?;
    }
    Ok(())
}

/// The range of `values` (all finite) with a margin on each side; (0, 1) for none.
///
/// Plotters' tick search never ends on a span that is not finite, so data beyond
/// ±f64::MAX / 4 is cut to it (and drawn at the edge), and a span too small for f64
/// to step through is widened.
fn linear_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    const LIMIT: f64 = f64::MAX / 4.0;
    let Some((low, high)) = min_max(values) else {
        return 0.0..1.0;
    };
    let (low, high) = (low.clamp(-LIMIT, LIMIT), high.clamp(-LIMIT, LIMIT));
    let span = high - low;
    let pad = if span > low.abs().max(high.abs()) * 1e-9 {
        span * MARGIN
    } else if low == 0.0 && high == 0.0 {
        1.0
    } else {
        low.abs().max(high.abs()) * 0.1
    };
    (low - pad)..(high + pad)
}

/// The range of `values` (all finite and positive) with a margin on each side measured
/// in decades; (1, 10) for none.
///
/// Plotters' log ticks never end when the axis's ratio overflows f64, so the axis stays
/// within 1e-290..1e290 and spans at most 250 decades of data, keeping the largest
/// values; points beyond are drawn at the edge.
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    const BOUND: f64 = 290.0;
    const DECADES: f64 = 250.0;
    let Some((low, high)) = min_max(values) else {
        return 1.0..10.0;
    };
    let log_high = high.log10().clamp(-BOUND, BOUND);
    let log_low = low.log10().clamp(-BOUND, BOUND).max(log_high - DECADES);
    let span = log_high - log_low;
    let pad = if span > 1e-9 { span * MARGIN } else { 0.3 };
    10f64.powf(log_low - pad)..10f64.powf(log_high + pad)
}

/// The least and greatest of `values`, if any.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((low, high)) => Some((low.min(v), high.max(v))),
    })
}

/// An axis label: plain for everyday magnitudes, scientific for the very large or small.
fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else {
        let text = format!("{v:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(file: &str, series: Vec<Series>) -> Chart {
        Chart {
            file: file.to_string(),
            title: "Propagation CDF".to_string(),
            x_label: "latency (ms)".to_string(),
            y_label: "fraction of nodes".to_string(),
            series,
            style: Style::Line,
            log_x: false,
            y_range: None,
        }
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            points,
        }
    }

    /// The SVG of `chart`, checked to be a whole SVG document.
    fn render(chart: &Chart) -> String {
        let svg = svg_string(chart).expect("chart draws");
        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        svg
    }

    #[test]
    fn cdf_of_samples() {
        assert_eq!(
            cdf(&[3.0, 1.0, 2.0, 2.0]),
            vec![(1.0, 0.25), (2.0, 0.75), (3.0, 1.0)]
        );
        assert_eq!(cdf(&[5.0]), vec![(5.0, 1.0)]);
        assert_eq!(cdf(&[7.0, 7.0, 7.0]), vec![(7.0, 1.0)]);
        assert_eq!(cdf(&[]), Vec::<(f64, f64)>::new());
        assert_eq!(cdf(&[f64::NAN, f64::INFINITY]), Vec::<(f64, f64)>::new());
        // Non-finite samples are left out of the count too.
        assert_eq!(
            cdf(&[f64::NAN, 2.0, f64::NEG_INFINITY, 1.0]),
            vec![(1.0, 0.5), (2.0, 1.0)]
        );
        assert_eq!(cdf(&[-0.0, 0.0]), vec![(-0.0, 1.0)]);
    }

    #[test]
    fn cdf_is_sorted_and_ends_at_one() {
        let samples: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 / 10.0)
            .collect();
        let points = cdf(&samples);
        assert_eq!(points.len(), 1000);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        assert_eq!(points.last().map(|p| p.1), Some(1.0));
        assert_eq!(points[499], (49.9, 0.5));
    }

    #[test]
    fn write_produces_json_markdown_and_svgs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("nested").join("report");
        let mut cdf_chart = chart(
            "propagation_cdf.svg",
            vec![
                series("ring", cdf(&[12.0, 15.0, 15.0, 40.0, 22.0])),
                series("full", cdf(&[3.0, 4.0, 9.0, 5.5])),
            ],
        );
        cdf_chart.y_range = Some((0.0, 1.0));
        let mut memory = chart(
            "memory.svg",
            vec![series("", vec![(10.0, 1.5), (100.0, 4.0), (1000.0, 31.0)])],
        );
        memory.title = "Memory per agent".to_string();
        memory.x_label = "agents held".to_string();
        memory.y_label = "resident MiB".to_string();
        memory.style = Style::LinePoints;
        memory.log_x = true;
        let report = Report {
            title: "agentnet testnet: ring, 5 nodes".to_string(),
            json: serde_json::json!({ "propagation": { "p50_ms": 15.0 }, "nodes": 5 }),
            sections: vec![
                Section {
                    heading: "Propagation".to_string(),
                    text: "Cards reached every node.\n\nSecond paragraph.".to_string(),
                    table: vec![
                        ("p50".to_string(), "15 ms".to_string()),
                        ("a|b".to_string(), "x".to_string()),
                    ],
                    charts: vec![cdf_chart],
                },
                Section {
                    heading: "Memory".to_string(),
                    text: String::new(),
                    table: vec![],
                    charts: vec![memory],
                },
            ],
        };
        write(&out, &report).expect("write");

        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
        )
        .expect("report.json parses");
        assert_eq!(json, report.json);

        let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
        assert!(
            md.starts_with("# agentnet testnet: ring, 5 nodes\n"),
            "{md}"
        );
        assert!(
            md.contains("\n## Propagation\n\nCards reached every node.\n\nSecond paragraph.\n")
        );
        assert!(md.contains("| Figure | Value |\n| --- | --- |\n| p50 | 15 ms |\n| a\\|b | x |\n"));
        assert!(md.contains("![Propagation CDF](propagation_cdf.svg)"));
        assert!(md.contains("\n## Memory\n\n![Memory per agent](memory.svg)\n"));
        let order = ["## Propagation", "| p50", "![Propagation CDF]", "## Memory"];
        let at: Vec<usize> = order.iter().map(|s| md.find(s).expect(s)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{md}");

        let svg = std::fs::read_to_string(out.join("propagation_cdf.svg")).expect("svg");
        assert!(svg.starts_with("<svg"));
        for text in [
            "Propagation CDF",
            "latency (ms)",
            "fraction of nodes",
            "ring",
            "full",
        ] {
            assert!(svg.contains(text), "no `{text}` in the SVG");
        }
        // Two series, two colours, both drawn as lines.
        assert!(svg.contains("#1F77B4") || svg.contains("#1f77b4"), "{svg}");
        assert!(svg.contains("#FF7F0E") || svg.contains("#ff7f0e"), "{svg}");
        assert!(svg.matches("<polyline").count() >= 2);

        let svg = std::fs::read_to_string(out.join("memory.svg")).expect("svg");
        for text in ["Memory per agent", "agents held", "resident MiB"] {
            assert!(svg.contains(text), "no `{text}` in the SVG");
        }
        assert_eq!(svg.matches("<circle").count(), 3, "one dot per point");
    }

    #[test]
    fn write_rejects_bad_or_shared_file_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in [
            "../x.svg",
            "a b.svg",
            "x.png",
            ".svg",
            "sub/x.svg",
            "x(1).svg",
        ] {
            let report = Report {
                title: "t".to_string(),
                json: serde_json::json!({}),
                sections: vec![Section {
                    charts: vec![chart(file, vec![])],
                    ..Section::default()
                }],
            };
            let out = dir.path().join("bad");
            assert!(
                matches!(write(&out, &report), Err(TestnetError::Invalid(_))),
                "{file}"
            );
            assert!(!out.exists(), "{file}: nothing is written");
        }
        let report = Report {
            title: "t".to_string(),
            json: serde_json::json!({}),
            sections: vec![
                Section {
                    charts: vec![chart("same.svg", vec![])],
                    ..Section::default()
                },
                Section {
                    charts: vec![chart("same.svg", vec![])],
                    ..Section::default()
                },
            ],
        };
        assert!(matches!(
            write(dir.path(), &report),
            Err(TestnetError::Invalid(_))
        ));
    }

    #[test]
    fn degenerate_inputs_draw_without_panicking() {
        let cases: Vec<(&str, Vec<Series>)> = vec![
            ("no series", vec![]),
            (
                "empty series",
                vec![series("a", vec![]), series("b", vec![])],
            ),
            ("one point", vec![series("a", vec![(3.0, 4.0)])]),
            ("all equal", vec![series("a", vec![(2.0, 2.0); 5])]),
            ("all zero", vec![series("a", vec![(0.0, 0.0); 3])]),
            (
                "non-finite",
                vec![series(
                    "a",
                    vec![
                        (f64::NAN, 1.0),
                        (1.0, f64::INFINITY),
                        (f64::NEG_INFINITY, 0.0),
                        (2.0, 3.0),
                    ],
                )],
            ),
            (
                "only non-finite",
                vec![series("a", vec![(f64::NAN, f64::NAN)])],
            ),
            (
                "huge",
                vec![series(
                    "a",
                    vec![(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX)],
                )],
            ),
            (
                "tiny span",
                vec![series("a", vec![(1.0, 1.0), (1.0 + 1e-15, 1.0 + 1e-15)])],
            ),
            (
                "negative",
                vec![series("a", vec![(-5.0, -1e-9), (-4.0, -2e-9)])],
            ),
            (
                "subnormal",
                vec![series("a", vec![(1e-310, 1e-310), (2e-310, 3e-310)])],
            ),
            (
                "wide log",
                vec![series("a", vec![(f64::MIN_POSITIVE, 0.0), (f64::MAX, 1.0)])],
            ),
            (
                "many series",
                (0..12)
                    .map(|i| series(&format!("s{i}"), vec![(0.0, i as f64), (1.0, i as f64)]))
                    .collect(),
            ),
        ];
        for (what, s) in cases {
            for style in [Style::Line, Style::Points, Style::LinePoints] {
                for log_x in [false, true] {
                    let mut c = chart("x.svg", s.clone());
                    c.style = style;
                    c.log_x = log_x;
                    let svg = render(&c);
                    assert!(svg.contains("Propagation CDF"), "{what}");
                    assert!(svg.contains("latency (ms)"), "{what}");
                }
            }
        }

        // Log x with non-positive x: those points are skipped, the others drawn (the
        // series is unnamed, so no legend adds a circle of its own).
        let mut c = chart(
            "x.svg",
            vec![series(
                "",
                vec![(0.0, 1.0), (-3.0, 2.0), (10.0, 3.0), (100.0, 4.0)],
            )],
        );
        c.log_x = true;
        c.style = Style::Points;
        assert_eq!(render(&c).matches("<circle").count(), 2);

        // Only non-positive x on a log axis: a chart that says so.
        c.series = vec![series("", vec![(0.0, 1.0), (-1.0, 1.0)])];
        let svg = render(&c);
        assert!(svg.contains("no data"));
        assert_eq!(svg.matches("<circle").count(), 0);

        // A chart with data says nothing of the kind.
        c.series = vec![series("a", vec![(1.0, 1.0)])];
        assert!(!render(&c).contains("no data"));
    }

    #[test]
    fn bad_y_range_is_invalid() {
        for range in [
            (1.0, 1.0),
            (2.0, 1.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
            (-f64::MAX, f64::MAX),
            (1.0, 1.0 + f64::EPSILON),
        ] {
            let mut c = chart("x.svg", vec![series("a", vec![(1.0, 1.0)])]);
            c.y_range = Some(range);
            assert!(
                matches!(svg_string(&c), Err(TestnetError::Invalid(_))),
                "{range:?}"
            );
        }
        let mut c = chart("x.svg", vec![series("a", vec![(1.0, 1.0)])]);
        c.y_range = Some((-1e300, 1e300));
        render(&c);
    }

    #[test]
    fn render_svg_writes_the_file_and_reports_io_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = chart("x.svg", vec![series("a", vec![(1.0, 2.0), (2.0, 3.0)])]);
        let path = dir.path().join("x.svg");
        render_svg(&c, &path).expect("render");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") && svg.contains("Propagation CDF"));
        let missing = dir.path().join("no-such-dir").join("x.svg");
        assert!(matches!(render_svg(&c, &missing), Err(TestnetError::Io(_))));
    }

    #[test]
    fn ranges_have_margins() {
        let r = linear_range([0.0, 10.0].into_iter());
        assert!(
            r.start < 0.0 && r.start > -1.0 && r.end > 10.0 && r.end < 11.0,
            "{r:?}"
        );
        let r = linear_range([5.0, 5.0].into_iter());
        assert!(r.start < 5.0 && r.end > 5.0, "{r:?}");
        assert_eq!(linear_range(std::iter::empty()), 0.0..1.0);
        let r = log_range([1.0, 1000.0].into_iter());
        assert!(
            r.start < 1.0 && r.start > 0.5 && r.end > 1000.0 && r.end < 2000.0,
            "{r:?}"
        );
        let r = log_range([7.0].into_iter());
        assert!(r.start > 0.0 && r.start < 7.0 && r.end > 7.0, "{r:?}");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1500.0), "1500");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(2e7), "2.00e7");
        assert_eq!(number(1e-5), "1.00e-5");
    }
}

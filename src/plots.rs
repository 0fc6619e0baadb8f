//! The run's figures, as SVG and PNG (both drawn by plotters: its SVG backend, and its bitmap
//! backend written as PNG by [`crate::png`]), in
//! `plots/` of the run folder, with the plotted numbers in `plots/series.json`:
//!
//! - `delta_vs_train_count`: per-class F1 delta (augmented − baseline, with its paired interval)
//!   against the class's real train count, log x; one series per augmented configuration.
//! - `macro_f1_by_model_size`: macro-F1 against the classifier's trained parameters (log x),
//!   one series per augmentation arm, with 95% bootstrap intervals over test sentences.
//! - `macro_f1_vs_k`: macro-F1 against the clustering k of the synthetic arm, one series per
//!   classifier configuration, its baseline as a flat line.
//! - `confusion_best`: the confusion matrix of the cell with the highest macro-F1 as a heat map,
//!   rows and columns ordered by test support; every row normalised to 1.
//!
//! A figure whose x axis would hold a single value is not drawn: `summary.md` says why.
//!
//! **Intervals of a macro-F1** (not of a difference): the paired bootstrap of
//! [`crate::stats::pooled_deltas`] against a classifier that predicts no class of L (F1 = 0 for
//! every class), so the "delta" is the macro-F1 itself, resampled and pooled over replicates
//! exactly as the comparison intervals are.
//!
//! **Fonts.** DejaVu Sans is built into the binary (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera
//! licence, `assets/fonts/LICENSE-DejaVu.txt`) and registered with plotters (its `ab_glyph`
//! feature) as `sans-serif`: the PNG's text is drawn with it and the SVG's labels are laid out with
//! its metrics (the SVG's text itself names `sans-serif`, for the viewer's font), so no system font
//! is needed.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::manifest::AugmentKind;
use crate::per_class::ClassTable;
use crate::record::CellResult;
use crate::results_section::{Group, augment_label, groups};
use crate::stats::{Bootstrap, Paired};
use crate::study::{Comparison, read_predictions};

/// DejaVu Sans 2.37 (Debian `fonts-dejavu-core`): the figures' `sans-serif`.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Register [`FONT`] as plotters' `sans-serif` (once per process); every drawing, SVG or PNG,
/// needs it (plotters' `ab_glyph` fonts are only those registered).
fn register_font() -> DrawResult<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the built-in DejaVu Sans does not parse as a font".into())
    }
}

/// The folder of the figures inside a run folder.
pub const DIR: &str = "plots";

/// One plotted point: x, y and, where there is one, y's 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lo: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hi: Option<f64>,
    /// What the point is (a class, a configuration).
    pub label: String,
}

/// A named series of points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    /// Drawn as a dashed line without markers (a reference level such as a baseline).
    #[serde(default)]
    pub reference: bool,
}

/// A scatter figure with intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub name: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// What a reader should know to read it.
    pub caption: String,
    /// Names written in the plot above the points near these x positions (within a factor
    /// 1.2; the model-size figure names each classifier over its size); empty for the other
    /// figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub x_names: Vec<(f64, String)>,
}

/// A confusion matrix: `rows[i][j]` = test sentences of gold `classes[i]` predicted as
/// `classes[j]`, classes ordered by support (descending), then name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heatmap {
    pub name: String,
    pub title: String,
    pub cell: String,
    pub classes: Vec<String>,
    pub counts: Vec<Vec<usize>>,
}

/// Everything plotted (`plots/series.json`), and what was skipped and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub figures: Vec<Figure>,
    pub heatmaps: Vec<Heatmap>,
    /// (figure name, why it was not drawn)
    pub skipped: Vec<(String, String)>,
}

/// Macro-F1 over L of a group's replicates: mean and the pooled 95% bootstrap interval.
fn macro_f1_interval(run_dir: &Path, g: &Group, b: Bootstrap) -> Result<(f64, f64, f64)> {
    let mut owned: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut labels_len = 0;
    for r in &g.cells {
        let preds = read_predictions(run_dir, &r.cell.name)?;
        let l = &r.metrics.macro_classes;
        let mut ix: BTreeMap<&str, usize> =
            l.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        for p in &preds {
            for c in [&p.gold, &p.pred] {
                let n = ix.len();
                ix.entry(c.as_str()).or_insert(n);
            }
        }
        let none = ix.len(); // a class outside L that nobody has
        owned.push((
            preds.iter().map(|p| ix[p.gold.as_str()]).collect(),
            vec![none; preds.len()],
            preds.iter().map(|p| ix[p.pred.as_str()]).collect(),
        ));
        labels_len = labels_len.max(l.len());
    }
    let pairs: Vec<Paired> = owned
        .iter()
        .map(|(g, z, p)| Paired {
            gold: g,
            baseline: z,
            augmented: p,
        })
        .collect();
    let labels: Vec<usize> = (0..labels_len).collect();
    let iv = crate::stats::pooled_delta(&pairs, &labels, b);
    Ok((iv.delta, iv.lo, iv.hi))
}

/// The label of a configuration without its augmentation (`fasttext (dim=8)`).
fn classifier_label(g: &Group) -> String {
    g.label
        .rsplit_once(", ")
        .map(|(c, _)| c.to_string())
        .unwrap_or_else(|| g.label.clone())
}

fn distinct(xs: impl Iterator<Item = f64>) -> usize {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.len()
}

/// The data of every figure (nothing drawn).
pub fn figures(
    run_dir: &Path,
    results: &[CellResult],
    classes: &[ClassTable],
    b: Bootstrap,
) -> Result<Figures> {
    let mut out = Figures::default();
    let groups = groups(results);

    // 1. Per-class delta against the train count.
    let name = "delta_vs_train_count";
    if classes.is_empty() {
        out.skipped.push((
            name.into(),
            "no augmented cell is paired with a baseline".into(),
        ));
    } else if distinct(
        classes
            .iter()
            .flat_map(|t| t.rows.iter().map(|r| r.train_count)),
    ) < 2
    {
        out.skipped
            .push((name.into(), "every class has the same train count".into()));
    } else {
        out.figures.push(Figure {
            name: name.into(),
            title: "Per-class F1 change against real train sentences".into(),
            x_label: "real train sentences of the class (log scale)".into(),
            y_label: "F1 augmented − baseline".into(),
            log_x: true,
            series: classes
                .iter()
                .map(|t| Series {
                    name: t.label.clone(),
                    points: t
                        .rows
                        .iter()
                        .map(|r| Point {
                            x: r.train_count.max(1.0),
                            y: r.delta.delta,
                            lo: Some(r.delta.lo),
                            hi: Some(r.delta.hi),
                            label: r.class.clone(),
                        })
                        .collect(),
                    reference: false,
                })
                .collect(),
            caption: "Each point is a class (mean over paired replicates), its bar the 95% paired bootstrap interval over test sentences; a class without real train sentences is drawn at 1.".into(),
            x_names: Vec::new(),
        });
    }

    // Macro-F1 and its interval per configuration, computed once.
    // (In parallel across configurations, rayon.)
    let f1: Vec<(f64, f64, f64)> = {
        use rayon::prelude::*;
        groups
            .par_iter()
            .map(|g| macro_f1_interval(run_dir, g, b))
            .collect::<Result<_>>()?
    };
    let point = |i: usize, x: f64| Point {
        x,
        y: f1[i].0,
        lo: Some(f1[i].1),
        hi: Some(f1[i].2),
        label: groups[i].label.clone(),
    };

    // 2. Macro-F1 by model size, one series per augmentation arm.
    let name = "macro_f1_by_model_size";
    let size = |g: &Group| g.cells[0].trained_parameters as f64;
    if distinct(groups.iter().map(size)) < 2 {
        out.skipped.push((
            name.into(),
            "every classifier of the run has the same number of trained parameters".into(),
        ));
    } else {
        let mut arms: Vec<String> = Vec::new();
        for g in &groups {
            let a = augment_label(&g.cells[0].cell);
            if !arms.contains(&a) {
                arms.push(a);
            }
        }
        // Each classifier configuration named once, with its size (the axis alone, log scale
        // over a decade or two, may carry a single tick). Its arms differ a little in size (a
        // fastText model has a row per word the added sentences bring), so the name sits at
        // their geometric middle and gives the range.
        let mut sizes: Vec<(String, f64, f64)> = Vec::new();
        for g in &groups {
            let (c, x) = (classifier_label(g), size(g).max(1.0));
            match sizes.iter_mut().find(|(n, _, _)| *n == c) {
                Some((_, lo, hi)) => (*lo, *hi) = (lo.min(x), hi.max(x)),
                None => sizes.push((c, x, x)),
            }
        }
        let mut x_names: Vec<(f64, String)> = sizes
            .into_iter()
            .map(|(c, lo, hi)| {
                let n = if count_label(lo) == count_label(hi) {
                    count_label(lo)
                } else {
                    format!("{}–{}", count_label(lo), count_label(hi))
                };
                ((lo * hi).sqrt(), format!("{c}, {n}"))
            })
            .collect();
        x_names.sort_by(|a, b| a.0.total_cmp(&b.0));
        let series = arms
            .iter()
            .map(|a| {
                let mut points: Vec<Point> = groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| &augment_label(&g.cells[0].cell) == a)
                    .map(|(i, g)| point(i, size(g).max(1.0)))
                    .collect();
                points.sort_by(|p, q| p.x.total_cmp(&q.x));
                Series {
                    name: a.clone(),
                    points,
                    reference: false,
                }
            })
            .collect();
        out.figures.push(Figure {
            name: name.into(),
            title: "Macro-F1 by model size, with and without extra sentences".into(),
            x_label: "trained parameters (log scale)".into(),
            y_label: "macro-F1".into(),
            log_x: true,
            series,
            caption: "Mean over replicates; bars: 95% bootstrap interval over test sentences, pooled over replicates. Trained parameters: for `encoder-frozen` only the head is trained.".into(),
            x_names,
        });
    }

    // 3. Macro-F1 against the clustering k.
    let name = "macro_f1_vs_k";
    let ks = |g: &Group| g.cells[0].cell.synthetic.as_ref().map(|s| s.k as f64);
    if distinct(groups.iter().filter_map(ks)) < 2 {
        out.skipped.push((
            name.into(),
            "the run's synthetic cells use fewer than two values of k".into(),
        ));
    } else {
        let (kmin, kmax) = groups
            .iter()
            .filter_map(ks)
            .fold((f64::MAX, 0.0f64), |a, k| (a.0.min(k), a.1.max(k)));
        let mut series: Vec<Series> = Vec::new();
        let mut classifiers: Vec<String> = Vec::new();
        for g in &groups {
            let c = classifier_label(g);
            if !classifiers.contains(&c) {
                classifiers.push(c);
            }
        }
        for c in &classifiers {
            let mut pts: Vec<Point> = groups
                .iter()
                .enumerate()
                .filter(|(_, g)| &classifier_label(g) == c)
                .filter_map(|(i, g)| ks(g).map(|k| point(i, k)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|p, q| p.x.total_cmp(&q.x));
            series.push(Series {
                name: c.clone(),
                points: pts,
                reference: false,
            });
            if let Some(i) = groups.iter().position(|g| {
                &classifier_label(g) == c && g.cells[0].cell.augment == AugmentKind::None
            }) {
                series.push(Series {
                    name: format!("{c}, baseline"),
                    points: [kmin, kmax]
                        .into_iter()
                        .map(|x| Point {
                            lo: None,
                            hi: None,
                            ..point(i, x)
                        })
                        .collect(),
                    reference: true,
                });
            }
        }
        out.figures.push(Figure {
            name: name.into(),
            title: "Macro-F1 against clusters per target technique (k)".into(),
            x_label: "k (clusters per target technique)".into(),
            y_label: "macro-F1".into(),
            log_x: false,
            series,
            caption: "Mean over replicates with 95% bootstrap intervals; dashed: the classifier without extra sentences.".into(),
            x_names: Vec::new(),
        });
    }

    // 4. The confusion matrix of the best cell.
    if let Some(best) = results
        .iter()
        .max_by(|a, b| a.metrics.macro_f1.total_cmp(&b.metrics.macro_f1))
    {
        let preds = read_predictions(run_dir, &best.cell.name)?;
        let mut support: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &best.metrics.macro_classes {
            support.insert(c, 0);
        }
        for p in &preds {
            *support.entry(&p.gold).or_insert(0) += 1;
            support.entry(&p.pred).or_insert(0);
        }
        let mut order: Vec<(&str, usize)> = support.into_iter().collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let classes: Vec<String> = order.iter().map(|(c, _)| c.to_string()).collect();
        let at: BTreeMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (*c, i))
            .collect();
        let mut counts = vec![vec![0usize; classes.len()]; classes.len()];
        for p in &preds {
            counts[at[p.gold.as_str()]][at[p.pred.as_str()]] += 1;
        }
        out.heatmaps.push(Heatmap {
            name: "confusion_best".into(),
            title: format!(
                "Confusion matrix of {} (macro-F1 {:.3})",
                best.cell.name, best.metrics.macro_f1
            ),
            cell: best.cell.name.clone(),
            classes,
            counts,
        });
    }
    Ok(out)
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type DrawResult<T> = std::result::Result<T, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// y range covering every point and interval, padded by 5%.
fn y_range(f: &Figure) -> (f64, f64) {
    let ys = f.series.iter().flat_map(|s| {
        s.points
            .iter()
            .flat_map(|p| [Some(p.y), p.lo, p.hi].into_iter().flatten())
    });
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |a, y| (a.0.min(y), a.1.max(y)));
    let pad = ((hi - lo) * 0.05).max(0.01);
    (lo - pad, hi + pad)
}

/// A count as an axis or a name writes it: `1.2M`, `35k`, `512`, `2.5`.
fn count_label(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x.abs() >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn draw_figure<DB: DrawingBackend>(f: &Figure, root: &DrawingArea<DB, Shift>) -> DrawResult<()> {
    root.fill(&WHITE).map_err(err)?;
    let xs: Vec<f64> = f
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
    let (ymin, ymax) = y_range(f);
    let mut b = ChartBuilder::on(root);
    b.caption(&f.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(f.x_label.as_str())
                .y_desc(f.y_label.as_str())
                .axis_desc_style(("sans-serif", 17))
                .label_style(("sans-serif", 14))
                .x_labels(8)
                .y_labels(8)
                .x_label_formatter(&|x: &f64| count_label(*x))
                .y_label_formatter(&|y: &f64| format!("{y:.2}"))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            if ymin < 0.0 && ymax > 0.0 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(xmin, 0.0), (xmax, 0.0)],
                        BLACK.mix(0.5),
                    )))
                    .map_err(err)?;
            }
            for (i, s) in f.series.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                if s.reference {
                    let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.y)).collect();
                    chart
                        .draw_series(DashedLineSeries::new(pts, 8, 5, c.stroke_width(2)))
                        .map_err(err)?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                        });
                    continue;
                }
                chart
                    .draw_series(s.points.iter().filter_map(|p| {
                        Some(PathElement::new(
                            vec![(p.x, p.lo?), (p.x, p.hi?)],
                            c.mix(0.6).stroke_width(1),
                        ))
                    }))
                    .map_err(err)?;
                if !f.log_x || f.name != "delta_vs_train_count" {
                    chart
                        .draw_series(LineSeries::new(
                            s.points.iter().map(|p| (p.x, p.y)),
                            c.mix(0.5).stroke_width(1),
                        ))
                        .map_err(err)?;
                }
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|p| Circle::new((p.x, p.y), 4, c.filled())),
                    )
                    .map_err(err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
            // Each name above the highest point or interval at its x; a name less than half an
            // order of magnitude right of the one before goes a line higher (up to two), so
            // that neighbours do not print over each other.
            let mut level = 0usize;
            let mut before: Option<f64> = None;
            for (x, name) in &f.x_names {
                level = match before {
                    Some(b) if f.log_x && *x / b < 10f64.sqrt() => (level + 1) % 3,
                    _ => 0,
                };
                before = Some(*x);
                let top = f
                    .series
                    .iter()
                    .flat_map(|s| s.points.iter())
                    // The points of its configuration: within a factor 1.2 of the name's x.
                    .filter(|p| (p.x / *x).ln().abs() < 1.2f64.ln())
                    .map(|p| p.hi.unwrap_or(p.y).max(p.y))
                    .fold(f64::MIN, f64::max);
                if top == f64::MIN {
                    continue;
                }
                chart
                    .draw_series(std::iter::once(Text::new(
                        name.clone(),
                        (*x, top + (ymax - ymin) * (0.01 + 0.045 * level as f64)),
                        ("sans-serif", 13)
                            .into_font()
                            .color(&BLACK.mix(0.8))
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(err)?;
        }};
    }
    if f.log_x {
        let (lo, hi) = (xmin / 1.3, xmax * 1.3);
        body!(
            b.build_cartesian_2d((lo..hi).log_scale(), ymin..ymax)
                .map_err(err)?
        );
    } else {
        let pad = ((xmax - xmin) * 0.05).max(0.5);
        body!(
            b.build_cartesian_2d((xmin - pad)..(xmax + pad), ymin..ymax)
                .map_err(err)?
        );
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Side in pixels of one matrix cell, and every how many classes a tick label is written.
fn heatmap_layout(n: usize) -> (u32, usize) {
    let cell = (900 / n.max(1)).clamp(4, 24) as u32;
    // Labels of 11 px need 12 px each; above that they would overlap.
    let every = (12usize).div_ceil(cell as usize).max(1);
    (cell, every)
}

fn draw_heatmap<DB: DrawingBackend>(h: &Heatmap, root: &DrawingArea<DB, Shift>) -> DrawResult<()> {
    root.fill(&WHITE).map_err(err)?;
    let n = h.classes.len() as i32;
    let (_, every) = heatmap_layout(h.classes.len());
    let label = |v: &SegmentValue<i32>, flip: bool| -> String {
        match v {
            SegmentValue::CenterOf(i) => {
                let i = if flip { n - 1 - *i } else { *i };
                if i >= 0 && i < n && (i as usize).is_multiple_of(every) {
                    h.classes[i as usize].clone()
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(root)
        .caption(&h.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(110)
        .y_label_area_size(110)
        // A segmented 0..m has a segment for every value in 0..=m: n segments for 0..n - 1.
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted technique")
        .y_desc("gold technique (ordered by test support)")
        .axis_desc_style(("sans-serif", 16))
        .x_labels(n as usize)
        .y_labels(n as usize)
        .x_label_style(
            TextStyle::from(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .pos(Pos::new(HPos::Left, VPos::Center)),
        )
        .y_label_style(("sans-serif", 11))
        .x_label_formatter(&|v| label(v, false))
        .y_label_formatter(&|v| label(v, true))
        .draw()
        .map_err(err)?;
    let cells = h.counts.iter().enumerate().flat_map(|(i, row)| {
        let total: usize = row.iter().sum();
        row.iter().enumerate().filter_map(move |(j, &c)| {
            if c == 0 {
                return None;
            }
            let v = c as f64 / total.max(1) as f64;
            let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
            let color = RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0));
            let y = n - 1 - i as i32;
            Some(Rectangle::new(
                [
                    (SegmentValue::Exact(j as i32), SegmentValue::Exact(y)),
                    (
                        SegmentValue::Exact(j as i32 + 1),
                        SegmentValue::Exact(y + 1),
                    ),
                ],
                color.filled(),
            ))
        })
    });
    chart.draw_series(cells).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The SVG of a drawing of `size` (width, height) pixels.
fn svg_of(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult<()>,
) -> DrawResult<String> {
    register_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root)?;
    }
    Ok(svg)
}

/// The PNG (8-bit RGB) of a drawing of `size` (width, height) pixels: plotters' bitmap backend,
/// text in the built-in DejaVu Sans, written by [`crate::png::encode_rgb`].
pub fn png_of(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult<()>,
) -> DrawResult<Vec<u8>> {
    register_font()?;
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root)?;
    }
    Ok(crate::png::encode_rgb(size.0, size.1, &rgb))
}

/// Draw every figure into `<run_dir>/plots/` (SVG and PNG), write `plots/series.json`, and
/// return the `summary.md` section that embeds them (relative links) and lists what was
/// skipped.
pub fn write_all(
    run_dir: &Path,
    results: &[CellResult],
    _comparisons: &[Comparison],
    classes: &[ClassTable],
    b: Bootstrap,
) -> Result<String> {
    if results.is_empty() {
        return Ok(String::new());
    }
    // The figures read single-label predictions (one gold and one predicted technique per
    // sentence); a multi-label run's figures are its tables.
    if results.iter().any(|r| r.multi_label.is_some()) {
        return Ok("\n## Figures\n\nNone: a multi-label run's figures are in the tables above (the plots are drawn for single-label tasks).\n".into());
    }
    let figs = figures(run_dir, results, classes, b)?;
    let dir = run_dir.join(DIR);
    std::fs::create_dir_all(&dir).io_ctx(ErrorKind::Internal, || {
        format!("cannot create {}", dir.display())
    })?;
    let write = |name: &str, body: &[u8]| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, body).io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}", p.display())
        })
    };
    let fail = |name: &str, e: String| Error::internal(format!("drawing {name}: {e}"));
    let mut md = String::from("\n## Figures\n");
    for f in &figs.figures {
        let svg = svg_of((960, 600), |root| draw_figure(f, root)).map_err(|e| fail(&f.name, e))?;
        write(&format!("{}.svg", f.name), svg.as_bytes())?;
        let png = png_of((960, 600), |root| draw_figure(f, root)).map_err(|e| fail(&f.name, e))?;
        write(&format!("{}.png", f.name), &png)?;
        md.push_str(&format!(
            "\n### {}\n\n![{}]({DIR}/{}.svg)\n\n{} PNG: [`{DIR}/{}.png`]({DIR}/{}.png).\n",
            f.title, f.title, f.name, f.caption, f.name, f.name
        ));
    }
    for h in &figs.heatmaps {
        let (cell, _) = heatmap_layout(h.classes.len());
        let side = cell * h.classes.len() as u32 + 260;
        let svg =
            svg_of((side, side), |root| draw_heatmap(h, root)).map_err(|e| fail(&h.name, e))?;
        write(&format!("{}.svg", h.name), svg.as_bytes())?;
        let png =
            png_of((side, side), |root| draw_heatmap(h, root)).map_err(|e| fail(&h.name, e))?;
        write(&format!("{}.png", h.name), &png)?;
        let (_, every) = heatmap_layout(h.classes.len());
        md.push_str(&format!(
            "\n### Confusion matrix of the best cell\n\n![{}]({DIR}/{}.svg)\n\n`{}`, the cell with the highest macro-F1. Rows: gold technique, columns: predicted, both ordered by test support; shade: share of the row, white 0 → dark blue 1.{} PNG: [`{DIR}/{}.png`]({DIR}/{}.png).\n",
            h.title,
            h.name,
            h.cell,
            if every > 1 {
                format!(" Every {every}th technique is labelled.")
            } else {
                String::new()
            },
            h.name,
            h.name,
        ));
    }
    if !figs.skipped.is_empty() {
        md.push_str("\nNot drawn:\n\n");
        for (name, why) in &figs.skipped {
            md.push_str(&format!("- `{name}`: {why}.\n"));
        }
    }
    write(
        "series.json",
        &serde_json::to_vec_pretty(&figs).expect("figures serialize"),
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig() -> Figure {
        Figure {
            name: "t".into(),
            title: "A title".into(),
            x_label: "the x axis".into(),
            y_label: "the y axis".into(),
            log_x: true,
            series: vec![Series {
                name: "arm one".into(),
                points: vec![
                    Point {
                        x: 2.0,
                        y: -0.1,
                        lo: Some(-0.3),
                        hi: Some(0.1),
                        label: "a".into(),
                    },
                    Point {
                        x: 200.0,
                        y: 0.2,
                        lo: Some(0.05),
                        hi: Some(0.3),
                        label: "b".into(),
                    },
                ],
                reference: false,
            }],
            caption: String::new(),
            x_names: Vec::new(),
        }
    }

    /// A PNG read back (signature, CRCs, header, inflated size checked): width, height, RGB.
    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        crate::png::decode_rgb(png).unwrap()
    }

    /// Pixels that are not white in rows `rows` of a decoded RGB picture `width` wide.
    fn ink(rgb: &[u8], width: u32, rows: std::ops::Range<usize>) -> usize {
        let row = width as usize * 3;
        rgb[rows.start * row..rows.end * row]
            .chunks(3)
            .filter(|p| p != &[255, 255, 255])
            .count()
    }

    #[test]
    fn a_figure_draws_as_svg_with_its_labels_and_as_png() {
        let f = fig();
        let svg = svg_of((960, 600), |r| draw_figure(&f, r)).unwrap();
        for want in ["A title", "the x axis", "the y axis", "arm one", "<svg"] {
            assert!(svg.contains(want), "{want} missing");
        }
        let (w, h, rgb) = decode(&png_of((960, 600), |r| draw_figure(&f, r)).unwrap());
        assert_eq!((w, h), (960, 600));
        // Not blank: axes, grid, points, intervals and text cover well over 1% of the picture.
        let all = ink(&rgb, w, 0..600);
        assert!(all > 960 * 600 / 100, "{all} pixels drawn");
        // The title is the only thing in the top band (margin 16 + a 22 px caption): its glyphs
        // are drawn with the built-in font, and without a title the band is white.
        let title = ink(&rgb, w, 0..40);
        assert!(title > 150, "{title} title pixels");
        let untitled = Figure {
            title: String::new(),
            ..fig()
        };
        let (_, _, bare) = decode(&png_of((960, 600), |r| draw_figure(&untitled, r)).unwrap());
        assert_eq!(ink(&bare, w, 0..40), 0);
        // The x axis label sits in the bottom band below the tick labels; without the label
        // the band holds fewer drawn pixels.
        let unlabelled = Figure {
            x_label: String::new(),
            ..fig()
        };
        let (_, _, nox) = decode(&png_of((960, 600), |r| draw_figure(&unlabelled, r)).unwrap());
        assert!(
            ink(&rgb, w, 560..600) > ink(&nox, w, 560..600) + 100,
            "{} vs {}",
            ink(&rgb, w, 560..600),
            ink(&nox, w, 560..600)
        );
        let (lo, hi) = y_range(&f);
        assert!(
            (lo + 0.33).abs() < 1e-12 && (hi - 0.33).abs() < 1e-12,
            "{lo} {hi}"
        );
    }

    #[test]
    fn named_x_positions_are_written_above_their_points() {
        let named = Figure {
            x_names: vec![(2.0, "linear, 2".into()), (200.0, "fasttext, 200".into())],
            ..fig()
        };
        let svg = svg_of((960, 600), |r| draw_figure(&named, r)).unwrap();
        assert!(svg.contains("linear, 2") && svg.contains("fasttext, 200"));
        assert!(
            !svg_of((960, 600), |r| draw_figure(&fig(), r))
                .unwrap()
                .contains("fasttext, 200")
        );
        assert_eq!(count_label(1_234_567.0), "1.2M");
        assert_eq!(count_label(35_200.0), "35k");
        assert_eq!(count_label(512.0), "512");
    }

    #[test]
    fn heatmap_labels_thin_out_with_many_classes() {
        assert_eq!(heatmap_layout(4), (24, 1));
        assert_eq!(heatmap_layout(50), (18, 1));
        assert_eq!(heatmap_layout(188), (4, 3));
        let h = Heatmap {
            name: "h".into(),
            title: "T".into(),
            cell: "c".into(),
            classes: vec!["T1027".into(), "T1105".into()],
            counts: vec![vec![3, 1], vec![0, 2]],
        };
        let svg = svg_of((400, 400), |r| draw_heatmap(&h, r)).unwrap();
        assert!(svg.contains("T1027") && svg.contains("predicted technique"));
        let (w, hh, rgb) = decode(&png_of((400, 400), |r| draw_heatmap(&h, r)).unwrap());
        assert_eq!((w, hh), (400, 400));
        // The filled cells (counts 3, 1 and 2; the two darkest clearly blue) and the labels.
        let blue = rgb
            .chunks(3)
            .filter(|p| i32::from(p[2]) > i32::from(p[0]) + 40)
            .count();
        assert!(blue >= 3 * 20 * 20, "{blue} blue pixels");
        assert!(ink(&rgb, w, 0..400) > blue + 200);
    }
}

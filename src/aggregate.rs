//! The main table of a study: every (classifier configuration, augment arm) over its replicates,
//! each figure as mean ± sample standard deviation and n (`summary.md`, `aggregate.csv`). Rows
//! follow the order of the cells given (the run's plan order).

use std::collections::BTreeMap;

use crate::record::CellResult;
use crate::stats::MeanSd;

/// One (configuration, arm) over its replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub classifier: String,
    pub config: String,
    pub augment: String,
    pub arm: String,
    /// Replicates (cells) in the row.
    pub n: usize,
    pub accuracy: MeanSd,
    pub macro_f1: MeanSd,
    pub weighted_f1: MeanSd,
    /// Over the cells that have targets in their test split.
    pub target_macro_f1: Option<MeanSd>,
    /// Sentences the arm added, mean over replicates.
    pub added: f64,
}

/// Group `results` by (configuration, arm), in first-seen order.
pub fn rows(results: &[CellResult]) -> Vec<Row> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&CellResult>> = BTreeMap::new();
    for r in results {
        let key = (r.cell.config_key(), r.cell.arm_label());
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    order
        .into_iter()
        .map(|key| {
            let g = &groups[&key];
            let of = |f: fn(&CellResult) -> f64| {
                MeanSd::of(&g.iter().map(|r| f(r)).collect::<Vec<_>>()).expect("a cell")
            };
            let targets: Vec<f64> = g.iter().filter_map(|r| r.target_macro_f1).collect();
            Row {
                classifier: g[0].cell.classifier.as_str().to_string(),
                config: key.0.clone(),
                augment: g[0].cell.augment.as_str().to_string(),
                arm: key.1.clone(),
                n: g.len(),
                accuracy: of(|r| r.metrics.accuracy),
                macro_f1: of(|r| r.metrics.macro_f1),
                weighted_f1: of(|r| r.metrics.weighted_f1),
                target_macro_f1: MeanSd::of(&targets),
                added: g.iter().map(|r| r.added as f64).sum::<f64>() / g.len() as f64,
            }
        })
        .collect()
}

/// The `summary.md` section: the main table, mean ± sd (n) over replicates.
pub fn markdown(results: &[CellResult]) -> String {
    let rows = rows(results);
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Main table: mean ± sd over replicates\n\nEach row is one classifier configuration and augment arm; each figure is the mean ± sample standard deviation over its replicates (n = replicates; a replicate has its own split, generation and training seed). `added`: sentences the arm added to the real train split (mean).\n\n| classifier | arm | n | macro-F1 | target macro-F1 | accuracy | weighted-F1 | added |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.config,
            r.arm,
            r.n,
            r.macro_f1.show(),
            r.target_macro_f1
                .as_ref()
                .map(MeanSd::show)
                .unwrap_or_else(|| "—".into()),
            r.accuracy.show(),
            r.weighted_f1.show(),
            r.added
        ));
    }
    s.push_str("\nThe same figures as columns: `aggregate.csv`.\n");
    s
}

/// `aggregate.csv`: one row per (configuration, arm), mean, sd and n of each figure.
pub fn csv(results: &[CellResult]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "classifier",
        "config",
        "augment",
        "arm",
        "n",
        "macro_f1_mean",
        "macro_f1_sd",
        "target_macro_f1_mean",
        "target_macro_f1_sd",
        "target_n",
        "accuracy_mean",
        "accuracy_sd",
        "weighted_f1_mean",
        "weighted_f1_sd",
        "added_mean",
    ])
    .expect("csv");
    let f = |x: f64| format!("{x:.4}");
    let sd = |m: &MeanSd| m.sd.map(f).unwrap_or_default();
    for r in rows(results) {
        let (tm, ts, tn) = match &r.target_macro_f1 {
            Some(t) => (f(t.mean), sd(t), t.n.to_string()),
            None => (String::new(), String::new(), "0".into()),
        };
        w.write_record([
            r.classifier.clone(),
            r.config.clone(),
            r.augment.clone(),
            r.arm.clone(),
            r.n.to_string(),
            f(r.macro_f1.mean),
            sd(&r.macro_f1),
            tm,
            ts,
            tn,
            f(r.accuracy.mean),
            sd(&r.accuracy),
            f(r.weighted_f1.mean),
            sd(&r.weighted_f1),
            format!("{:.1}", r.added),
        ])
        .expect("csv");
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

//! Tables over the grid: terminal (tabled), `summary.md`, `summary.csv`, `per_class.csv`.

use std::path::Path;

use tabled::settings::Style;
use tabled::{Table, Tabled};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::record::CellResult;

pub const SUMMARY_COLUMNS: &[&str] = &[
    "cell",
    "dataset",
    "classifier",
    "augment",
    "seed",
    "replicate",
    "config",
    "split_seed",
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "train_size",
    "test_size",
    "train_seconds",
    "best_epoch",
    "dim",
    "word_ngrams",
    "minn",
    "maxn",
    "buckets",
    "lr",
    "model",
    "size",
    "trained_parameters",
    "target_macro_f1",
    "k",
    "template",
    "generator",
    "per_technique",
    "synthetic_kept",
    "llm_calls",
    "llm_tokens",
    "llm_tokens_estimated",
    "added",
    "status",
    "error",
];

fn row(r: &CellResult) -> Vec<String> {
    let p = &r.cell.params;
    vec![
        r.cell.name.clone(),
        r.dataset.clone(),
        r.cell.classifier.as_str().into(),
        r.cell.augment.as_str().into(),
        r.cell.seed.to_string(),
        r.cell.replicate.to_string(),
        r.cell.config_key(),
        r.cell.split_seed.to_string(),
        format!("{:.4}", r.metrics.accuracy),
        format!("{:.4}", r.metrics.macro_f1),
        format!("{:.4}", r.metrics.micro_f1),
        format!("{:.4}", r.metrics.weighted_f1),
        r.train_size.to_string(),
        r.test_size.to_string(),
        format!("{:.2}", r.train_seconds),
        r.best_epoch.to_string(),
    ]
    .into_iter()
    .chain(match p.fasttext() {
        Some(f) => [
            f.dim.to_string(),
            f.word_ngrams.to_string(),
            f.minn.to_string(),
            f.maxn.to_string(),
            f.buckets.to_string(),
        ],
        None => Default::default(),
    })
    .chain([
        p.lr().map(|lr| lr.to_string()).unwrap_or_default(),
        p.encoder().map(|e| e.model.clone()).unwrap_or_default(),
        p.encoder()
            .and_then(|e| e.layers.map(|l| format!("{l}x{}", e.hidden.unwrap_or(0))))
            .unwrap_or_default(),
        r.trained_parameters.to_string(),
        r.target_macro_f1
            .map(|f| format!("{f:.4}"))
            .unwrap_or_default(),
    ])
    .chain(match &r.synthetic {
        Some(s) => [
            s.k.to_string(),
            s.template.clone(),
            s.generator.clone(),
            s.per_technique.to_string(),
            s.kept.to_string(),
            s.usage.calls.to_string(),
            s.usage.tokens().to_string(),
            s.usage.estimated_tokens.to_string(),
        ],
        None => Default::default(),
    })
    .chain([r.added.to_string(), "ok".to_string(), String::new()])
    .collect()
}

/// Per chain and technique: what was asked, parsed, removed by each filter and kept, and the
/// diversity of what was kept.
pub fn synthetic_csv(chains: &[(String, &crate::filter::Synthetic)]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "synthetic",
        "technique",
        "train_count",
        "requested",
        "calls",
        "failed_calls",
        "empty_answers",
        "parsed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(
        crate::filter::FILTERS
            .iter()
            .map(|f| format!("removed_{f}")),
    );
    header.extend(
        [
            "kept",
            "distinct_1",
            "distinct_2",
            "self_bleu",
            "mean_similarity_real",
            "nearest_similarity_real",
        ]
        .map(String::from),
    );
    w.write_record(&header).expect("csv");
    let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
    for (label, s) in chains {
        for t in &s.techniques {
            let mut rec = vec![
                label.clone(),
                t.technique.clone(),
                t.train_count.to_string(),
                t.requested.to_string(),
                t.calls.to_string(),
                t.failed_calls.to_string(),
                t.empty_answers.to_string(),
                t.parsed.to_string(),
            ];
            rec.extend(
                crate::filter::FILTERS
                    .iter()
                    .map(|f| t.removed.get(*f).copied().unwrap_or(0).to_string()),
            );
            rec.extend([
                t.kept.to_string(),
                f(t.distinct_1),
                f(t.distinct_2),
                f(t.self_bleu),
                f(t.mean_similarity_real),
                f(t.nearest_similarity_real),
            ]);
            w.write_record(rec).expect("csv");
        }
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

/// Why a cell that `--fail-fast` kept from running has no result: its row's status is
/// `skipped`, not `failed`.
pub const NOT_RUN: &str = "not run: an earlier cell failed and --fail-fast is set";

pub fn summary_csv(results: &[CellResult], failed: &[(String, String)]) -> String {
    summary_csv_with_plan(results, failed, &[])
}

/// `summary.csv`; a failed or skipped cell's row keeps its configuration columns, read from its
/// entry in `plan` (the run's `plan.json` cells), and its status is `failed`, or `skipped` when
/// it did not run ([`NOT_RUN`]).
pub fn summary_csv_with_plan(
    results: &[CellResult],
    failed: &[(String, String)],
    plan: &[serde_json::Value],
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Columns only some runs have (multi-label figures, external sets), after the fixed ones.
    let extra = crate::multilabel::summary_columns(results);
    let external = crate::external::summary_columns(results);
    w.write_record(
        SUMMARY_COLUMNS
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .chain(external.iter().map(String::as_str)),
    )
    .expect("csv");
    for r in results {
        w.write_record(
            row(r)
                .into_iter()
                .chain(crate::multilabel::summary_values(r, &extra))
                .chain(crate::external::summary_values(r, &external)),
        )
        .expect("csv");
    }
    let dataset = results
        .first()
        .map(|r| r.dataset.clone())
        .unwrap_or_default();
    for (name, why) in failed {
        let cell = plan.iter().find(|c| c["cell"].as_str() == Some(name));
        w.write_record(
            unfinished_row(name, why, cell, &dataset)
                .into_iter()
                .chain(extra.iter().map(|_| String::new()))
                .chain(external.iter().map(|_| String::new())),
        )
        .expect("csv");
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

/// The first value under `key` anywhere in `v` (params nest per classifier kind).
fn find_key<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        _ => None,
    }
}

fn unfinished_row(
    name: &str,
    why: &str,
    cell: Option<&serde_json::Value>,
    dataset: &str,
) -> Vec<String> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let n = SUMMARY_COLUMNS.len();
    let mut rec: Vec<String> = SUMMARY_COLUMNS
        .iter()
        .map(|col| {
            let Some(c) = cell else {
                return String::new();
            };
            match *col {
                "dataset" => dataset.to_string(),
                "classifier" | "augment" | "seed" => text(&c[*col]),
                "replicate" => c.get("replicate").map(text).unwrap_or_else(|| "0".into()),
                "dim" | "word_ngrams" | "minn" | "maxn" | "buckets" | "lr" | "model" => {
                    find_key(&c["params"], col).map(text).unwrap_or_default()
                }
                "k" | "template" | "generator" | "per_technique" => text(&c["synthetic"][*col]),
                _ => String::new(),
            }
        })
        .collect();
    rec[0] = name.to_string();
    rec[n - 2] = if why == NOT_RUN { "skipped" } else { "failed" }.into();
    rec[n - 1] = why.to_string();
    rec
}

pub fn per_class_csv(results: &[CellResult]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "cell",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "predicted",
    ])
    .expect("csv");
    for r in results {
        for c in &r.metrics.per_class {
            w.write_record([
                r.cell.name.clone(),
                c.class.clone(),
                format!("{:.4}", c.precision),
                format!("{:.4}", c.recall),
                format!("{:.4}", c.f1),
                c.support.to_string(),
                c.predicted.to_string(),
            ])
            .expect("csv");
        }
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

#[derive(Tabled)]
struct TermRow {
    cell: String,
    classifier: String,
    augment: String,
    seed: u64,
    accuracy: String,
    #[tabled(rename = "macro-F1")]
    macro_f1: String,
    #[tabled(rename = "micro-F1")]
    micro_f1: String,
    #[tabled(rename = "weighted-F1")]
    weighted_f1: String,
    #[tabled(rename = "target macro-F1")]
    target_f1: String,
    #[tabled(rename = "synthetic")]
    synthetic: String,
    #[tabled(rename = "train s")]
    train_seconds: String,
}

fn term_rows(results: &[CellResult]) -> Vec<TermRow> {
    results
        .iter()
        .map(|r| TermRow {
            cell: r.cell.name.clone(),
            classifier: r.cell.classifier.as_str().into(),
            augment: r.cell.augment.as_str().into(),
            seed: r.cell.seed,
            accuracy: format!("{:.4}", r.metrics.accuracy),
            macro_f1: format!("{:.4}", r.metrics.macro_f1),
            micro_f1: format!("{:.4}", r.metrics.micro_f1),
            weighted_f1: format!("{:.4}", r.metrics.weighted_f1),
            target_f1: r
                .target_macro_f1
                .map(|f| format!("{f:.4}"))
                .unwrap_or_default(),
            synthetic: r
                .synthetic
                .as_ref()
                .map(|s| format!("{} (k={}, {})", s.kept, s.k, s.generator))
                .unwrap_or_default(),
            train_seconds: format!("{:.2}", r.train_seconds),
        })
        .collect()
}

pub fn terminal_table(results: &[CellResult]) -> String {
    Table::new(term_rows(results))
        .with(Style::rounded())
        .to_string()
}

/// The per-cell part of `summary.md` (under its `## Cells` heading, which
/// [`crate::results_section::summary_md`] writes): every cell, the synthetic data, failed and
/// skipped cells, the most confused pairs.
pub fn summary_md(results: &[CellResult], failed: &[(String, String)]) -> String {
    let mut s = String::new();
    s.push_str(
        &Table::new(term_rows(results))
            .with(Style::markdown())
            .to_string(),
    );
    s.push('\n');
    // Each chain once, with the replicate it belongs to: replicates generate apart (their own
    // split and generator seed), so a run of several has one row per replicate and chain.
    let mut chains: Vec<(usize, &crate::record::SynthSummary)> = results
        .iter()
        .filter_map(|r| r.synthetic.as_ref().map(|c| (r.cell.replicate, c)))
        .collect();
    chains.sort_by_key(|(rep, c)| {
        (
            c.k,
            c.template.clone(),
            c.generator.clone(),
            c.per_technique,
            *rep,
        )
    });
    chains.dedup_by(|a, b| a.1.filter_key == b.1.filter_key);
    let replicates = chains.iter().any(|(rep, _)| *rep > 0);
    if !chains.is_empty() {
        let (rep_head, rep_rule) = if replicates {
            ("replicate | ", "---|")
        } else {
            ("", "")
        };
        s.push_str(&format!("\n## Synthetic data\n\n| {rep_head}k | template | generator | per technique | targets | requested | kept | LLM calls (made / cached / failed / skipped) | tokens (prompt + completion) |\n|{rep_rule}---|---|---|---|---|---|---|---|---|\n"));
        let any_estimated = chains.iter().any(|(_, c)| c.usage.estimated_tokens > 0);
        for (rep, c) in chains {
            if replicates {
                s.push_str(&format!("| {rep} "));
            }
            let u = &c.usage;
            let estimated = if u.estimated_tokens > 0 {
                format!(" ({} estimated)", u.estimated_tokens)
            } else {
                String::new()
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} ({} / {} / {} / {}) | {} + {}{estimated} |\n",
                c.k,
                c.template,
                c.generator,
                c.per_technique,
                c.targets,
                c.requested,
                c.kept,
                u.calls,
                u.made,
                u.cached,
                u.failed,
                u.skipped,
                u.prompt_tokens,
                u.completion_tokens
            ));
        }
        if any_estimated {
            s.push_str(&format!(
                "\nEstimated tokens: the server sent no usage for those answers, so their prompt and answer were counted as characters / {} (rounded up).\n",
                crate::llm::CHARS_PER_TOKEN
            ));
        }
        s.push_str("\nPer technique: `synthetic.csv`; every sentence and the filters it passed: `cells/<cell>/synthetic.jsonl`.\n");
    }
    s.push_str(&crate::multilabel::summary_md(results));
    s.push_str(&crate::external::summary_md(results));
    let (skipped, failed): (Vec<_>, Vec<_>) = failed.iter().partition(|(_, why)| why == NOT_RUN);
    if !failed.is_empty() {
        s.push_str("\n## Failed cells\n\n");
        for (name, why) in failed {
            s.push_str(&format!("- `{name}`: {}\n", why.replace('\n', " ")));
        }
    }
    if !skipped.is_empty() {
        s.push_str(
            "\n## Skipped cells\n\nNot run: an earlier cell failed and `--fail-fast` is set.\n\n",
        );
        for (name, _) in skipped {
            s.push_str(&format!("- `{name}`\n"));
        }
    }
    for r in results {
        if r.metrics.most_confused.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "\n## Most confused pairs — `{}`\n\n| gold | predicted | count |\n|---|---|---|\n",
            r.cell.name
        ));
        for c in r.metrics.most_confused.iter().take(5) {
            s.push_str(&format!("| {} | {} | {} |\n", c.gold, c.pred, c.count));
        }
    }
    s
}

/// Write every summary file into a run folder.
///
/// Rows follow the cells' order in the run's `plan.json` (so a run and `synthcti report` write
/// the same tables), and a planned cell with neither a result nor an error is listed as skipped.
pub fn write_all(dir: &Path, results: &[CellResult], failed: &[(String, String)]) -> Result<()> {
    let w = |name: &str, body: String| {
        std::fs::write(dir.join(name), body).io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}", dir.join(name).display())
        })
    };
    let plan: Vec<serde_json::Value> = std::fs::read(dir.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["cells"].as_array().cloned())
        .unwrap_or_default();
    let pos = |name: &str| {
        plan.iter()
            .position(|c| c["cell"].as_str() == Some(name))
            .unwrap_or(usize::MAX)
    };
    let mut results = results.to_vec();
    results
        .sort_by(|a, b| (pos(&a.cell.name), &a.cell.name).cmp(&(pos(&b.cell.name), &b.cell.name)));
    let mut failed = failed.to_vec();
    for c in &plan {
        let Some(name) = c["cell"].as_str() else {
            continue;
        };
        if !results.iter().any(|r| r.cell.name == name) && !failed.iter().any(|f| f.0 == name) {
            failed.push((name.to_string(), NOT_RUN.to_string()));
        }
    }
    // Failed cells first, then the skipped ones, each in the plan's order.
    failed
        .sort_by(|a, b| (a.1 == NOT_RUN, pos(&a.0), &a.0).cmp(&(b.1 == NOT_RUN, pos(&b.0), &b.0)));
    w(
        "summary.csv",
        summary_csv_with_plan(&results, &failed, &plan),
    )?;
    let bootstrap = crate::study::bootstrap_of_run(dir)?;
    let study = crate::study::study(dir, &results, bootstrap)?;
    let comparisons = &study.comparisons;
    let classes = crate::per_class::tables(dir, &results, comparisons, bootstrap)?;
    let figures = crate::plots::write_all(dir, &results, comparisons, &classes, bootstrap)?;
    w(
        "summary.md",
        crate::results_section::summary_md(
            dir,
            &results,
            bootstrap,
            &(crate::study::markdown(&results, &study, bootstrap) + &leakage_md(dir)),
            &crate::per_class::markdown(&classes),
            &figures,
            &summary_md(&results, &failed),
        ),
    )?;
    w("intervals.csv", crate::study::intervals_csv(comparisons))?;
    w(
        "intervals_pooled.csv",
        crate::study::pooled_csv(&study.pooled),
    )?;
    w("aggregate.csv", crate::aggregate::csv(&results))?;
    w(
        "per_class.csv",
        crate::per_class::per_class_csv(dir, &results, comparisons, bootstrap)?,
    )?;
    w("per_class_delta.csv", crate::per_class::delta_csv(&classes))?;
    if let Some(body) = crate::external::per_class_csv(&results) {
        w("per_class_external.csv", body)?;
    }
    Ok(())
}

/// The `summary.md` section on test sentences that occur (exactly or nearly) in train +
/// validation, from the run's `leakage.json` (absent in runs of an older synthcti: no section).
fn leakage_md(dir: &Path) -> String {
    let Some(ls) = std::fs::read(dir.join("leakage.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<crate::leakage::Overlap>>(&b).ok())
    else {
        return String::new();
    };
    let mut s = String::from("
## Test sentences seen in training

A property of the dataset and the split, not of any cell: test sentences with an exact duplicate (same text after lower-casing and collapsing white space) or a near duplicate (TF-IDF cosine over words and word bigrams, fitted on train + validation only) among the train + validation sentences. Every cell of a replicate is scored on the same test sentences, so these inflate baseline and augmented cells alike.

");
    for (r, l) in ls.iter().enumerate() {
        s.push_str(&format!(
            "- {}
",
            l.sentence(r, ls.len())
        ));
    }
    s
}

/// `synthcti report RUN_DIR`: rebuild the tables from the cells on disk.
/// A failed cell: its name and why.
pub type Failed = (String, String);

pub fn rebuild(run_dir: &Path) -> Result<(Vec<CellResult>, Vec<Failed>)> {
    let (results, failed) = read_run(run_dir)?;
    write_all(run_dir, &results, &failed)?;
    Ok((results, failed))
}

/// The cells of a run folder as written: each `cells/<cell>/metrics.json`, and for a cell
/// without one its `error.txt` (or "no metrics.json"); cells in name order. Writes nothing.
pub fn read_run(run_dir: &Path) -> Result<(Vec<CellResult>, Vec<Failed>)> {
    let cells = run_dir.join("cells");
    let rd = std::fs::read_dir(&cells).map_err(|e| {
        Error::config(format!(
            "{} is not a run folder ({}: {e}); pass a folder written by `synthcti run`, such as results/<experiment>/<run-id>",
            run_dir.display(),
            cells.display()
        ))
    })?;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for dir in names {
        let name = dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let m = dir.join("metrics.json");
        if m.is_file() {
            let bytes =
                std::fs::read(&m).io_ctx(ErrorKind::Internal, || m.display().to_string())?;
            let r: CellResult = serde_json::from_slice(&bytes).map_err(|e| {
                Error::data(format!(
                    "{} is not a metrics.json written by synthcti: {e}",
                    m.display()
                ))
            })?;
            results.push(r);
        } else {
            let why = std::fs::read_to_string(dir.join("error.txt"))
                .unwrap_or_else(|_| "no metrics.json".into());
            failed.push((name, why));
        }
    }
    Ok((results, failed))
}

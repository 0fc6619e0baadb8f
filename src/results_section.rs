//! `summary.md` as a paper's results section: the setup (dataset, split, targets, generator,
//! classifiers, bootstrap, manifest digest), the main table over replicates (mean ± sd, n), the
//! paired intervals ([`crate::study`]), the per-class table ([`crate::per_class`]), the figures
//! ([`crate::plots`]), the cost (LLM calls and tokens, wall time per stage from
//! [`crate::timings`]) and then the per-cell detail of [`crate::report::summary_md`].
//!
//! Everything is read from the run folder (`cells/*/metrics.json`, `manifest.resolved.toml`,
//! `provenance.json`, `timings.json`), so `synthcti report RUN_DIR` writes the same file.
//!
//! **Replicates.** Two cells are replicates of one configuration when their [`CellSpec`]s are
//! equal once the cell name and every seed or replicate field are removed ([`replicate_key`]):
//! today the training seed (`experiment.seeds`), and any `replicate…` / `…seed` field a later
//! grid axis adds.

use std::collections::BTreeMap;
use std::path::Path;

use crate::manifest::{AugmentKind, CellSpec};
use crate::record::CellResult;
use crate::stats::Bootstrap;

/// Whether a field of a cell's configuration only names a replicate (and so is left out of
/// [`replicate_key`]).
/// Fields that differ between the replicates of one configuration: seeds, the replicate index,
/// the generation seed offset, and `config` (which spells the training seed when
/// `experiment.seeds` is swept; the classifier settings it names are in `params`).
fn is_replicate_field(key: &str) -> bool {
    key == "seed"
        || key.ends_with("_seed")
        || key.starts_with("replicate")
        || key == "generation_offset"
        || key == "config"
}

fn strip_replicate_fields(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(m) = v {
        m.retain(|k, _| !is_replicate_field(k));
        m.values_mut().for_each(strip_replicate_fields);
    }
}

/// The configuration of a cell without its name and its seed / replicate fields, as canonical
/// JSON (object keys sorted): equal for the replicates of one configuration.
pub fn replicate_key(spec: &CellSpec) -> String {
    let mut v = serde_json::to_value(spec).expect("cell spec serializes");
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("name");
    }
    strip_replicate_fields(&mut v);
    // serde_json's map is a BTreeMap (no `preserve_order`): keys come out sorted.
    serde_json::to_string(&v).expect("json")
}

/// The replicates of one configuration, in the run's order.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub key: String,
    pub cells: Vec<&'a CellResult>,
    /// A short name for the configuration: its classifier, the settings that differ between
    /// the run's configurations, its augmentation.
    pub label: String,
}

impl Group<'_> {
    pub fn augment(&self) -> AugmentKind {
        self.cells[0].cell.augment
    }
    pub fn n(&self) -> usize {
        self.cells.len()
    }
    /// Mean and sample standard deviation (n − 1; `None` for one replicate) of `f`.
    pub fn mean_sd(&self, f: impl Fn(&CellResult) -> Option<f64>) -> Option<(f64, Option<f64>)> {
        mean_sd(&self.cells.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    }
}

/// Mean and sample standard deviation (n − 1 in the denominator; `None` when n = 1); `None`
/// for no values.
pub fn mean_sd(v: &[f64]) -> Option<(f64, Option<f64>)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, sd))
}

/// `0.7123 ± 0.0101`, or `0.7123` for one value, `—` for none.
pub fn show_mean_sd(m: Option<(f64, Option<f64>)>) -> String {
    match m {
        None => "—".into(),
        Some((mean, None)) => format!("{mean:.4}"),
        Some((mean, Some(sd))) => format!("{mean:.4} ± {sd:.4}"),
    }
}

/// Leaves of a JSON value as `path = value` (paths joined with `.`).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.into(), s.clone());
        }
        serde_json::Value::Null => {}
        other => {
            out.insert(prefix.into(), other.to_string());
        }
    }
}

/// The run's cells grouped into replicates of one configuration, in the order each
/// configuration first appears, each labelled by what sets it apart.
pub fn groups(results: &[CellResult]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in results {
        let key = replicate_key(&r.cell);
        match out.iter_mut().find(|g| g.key == key) {
            Some(g) => g.cells.push(r),
            None => out.push(Group {
                key,
                cells: vec![r],
                label: String::new(),
            }),
        }
    }
    // Settings (inside `params`) that differ between configurations of one classifier kind.
    let flat: Vec<BTreeMap<String, String>> = out
        .iter()
        .map(|g| {
            let mut m = BTreeMap::new();
            let v: serde_json::Value = serde_json::from_str(&g.key).expect("json");
            flatten("", &v["params"], &mut m);
            m
        })
        .collect();
    let labels: Vec<String> = out
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let kind = g.cells[0].cell.classifier.as_str();
            let same_kind: Vec<usize> = (0..out.len())
                .filter(|&j| out[j].cells[0].cell.classifier.as_str() == kind)
                .collect();
            let varying: Vec<String> = flat[i]
                .iter()
                .filter(|(k, v)| same_kind.iter().any(|&j| flat[j].get(*k) != Some(*v)))
                .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
                .collect();
            let mut s = kind.to_string();
            if !varying.is_empty() {
                s.push_str(&format!(" ({})", varying.join(", ")));
            }
            s.push_str(&format!(", {}", augment_label(&g.cells[0].cell)));
            s
        })
        .collect();
    for (g, l) in out.iter_mut().zip(labels) {
        g.label = l;
    }
    out
}

/// `none`, or `synthetic k=3 cluster-guided smollm2 ×20` (what the augmented arm added).
pub fn augment_label(c: &CellSpec) -> String {
    match &c.synthetic {
        Some(s) => format!(
            "{} k={} {} {} ×{}",
            c.augment.as_str(),
            s.k,
            s.template,
            s.generator,
            s.per_technique
        ),
        None => c.augment.as_str().into(),
    }
}

/// The setup paragraph's table: what a reader needs to reproduce the run.
/// Settings of an `openai` generator only (the HTTP client's).
const OPENAI_SETTINGS: &[&str] = &[
    "base_url",
    "concurrency",
    "max_retries",
    "timeout_s",
    "backoff_s",
    "max_backoff_s",
];

/// Settings of a `local` generator only (llama.cpp's).
const LOCAL_SETTINGS: &[&str] = &[
    "top_k",
    "threads",
    "context",
    "parallel",
    "cache_ram_mib",
    "repeat_penalty",
    "repeat_last_n",
    "banned_words",
    "item_decay_start",
    "item_decay_factor",
];

/// Whether a `[[generator]]` setting (as `manifest.resolved.toml` spells it, every default
/// written out) means anything to a generator of `provider`: the HTTP client's settings only to
/// `openai`, llama.cpp's only to `local`, `item_chars` only with `structured`, `of` only to a
/// `replay`, which takes everything else from the generator it replays.
fn generator_setting_applies(provider: &str, structured: bool, key: &str) -> bool {
    match provider {
        "replay" => matches!(key, "provider" | "of" | "budget_calls" | "budget_tokens"),
        _ if key == "of" => false,
        _ if key == "item_chars" => structured,
        "openai" => !LOCAL_SETTINGS.contains(&key),
        "local" => !OPENAI_SETTINGS.contains(&key),
        _ => true,
    }
}

fn setup_md(run_dir: &Path, results: &[CellResult], groups: &[Group], b: Bootstrap) -> String {
    let manifest_text = std::fs::read_to_string(run_dir.join("manifest.resolved.toml")).ok();
    let manifest: toml::Table = manifest_text
        .as_deref()
        .and_then(|t| toml::from_str(t).ok())
        .unwrap_or_default();
    let prov: serde_json::Value = std::fs::read(run_dir.join("provenance.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let table = |name: &str| -> String {
        manifest
            .get(name)
            .and_then(|v| v.as_table())
            .map(|t| {
                t.iter()
                    .filter(|(_, v)| !v.is_table() && !v.is_array())
                    .map(|(k, v)| format!("{k} = {}", inline(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let first = &results[0];
    let data_files: Vec<String> = prov["data_files"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap_or_default();
                    let name = Path::new(path)
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let sha = f["sha256"].as_str().unwrap_or_default();
                    format!("`{name}` (sha256 {}…)", &sha[..sha.len().min(12)])
                })
                .collect()
        })
        .unwrap_or_default();
    rows.push((
        "dataset".into(),
        format!(
            "{}: {}; `[data]` {}",
            first.dataset,
            if data_files.is_empty() {
                "files not recorded".into()
            } else {
                data_files.join(", ")
            },
            table("data").replace(" = ", "=")
        ),
    ));
    rows.push((
        "split".into(),
        format!(
            "{}; train {} / validation {} / test {} sentences (first cell)",
            table("split"),
            if first.train_counts.is_empty() {
                // Records of an older synthcti: the train size of a baseline cell.
                results
                    .iter()
                    .find(|r| r.synthetic.is_none())
                    .map_or(0, |r| r.train_size)
            } else {
                first.train_counts.values().sum::<usize>()
            },
            first.validation_size,
            first.test_size
        ),
    ));
    rows.push((
        "classes".into(),
        format!(
            "{} with a test sentence; every macro average runs over this same set L (`macro_classes` in each `metrics.json`)",
            first.metrics.macro_classes.len()
        ),
    ));
    if let Some(t) = results.iter().find(|r| !r.target_classes.is_empty()) {
        rows.push((
            "target techniques".into(),
            format!(
                "{} in L: {}",
                t.target_classes.len(),
                t.target_classes.join(", ")
            ),
        ));
    }
    let mut used_generators: Vec<&str> = results
        .iter()
        .filter_map(|r| r.synthetic.as_ref().map(|s| s.generator.as_str()))
        .collect();
    used_generators.sort();
    used_generators.dedup();
    if let Some(gens) = manifest.get("generator").and_then(|g| g.as_array()) {
        for g in gens.iter().filter_map(|g| g.as_table()) {
            let name = g.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            if !used_generators.contains(&name) {
                continue;
            }
            let provider = g
                .get("provider")
                .and_then(|p| p.as_str())
                .unwrap_or("local");
            let structured = g
                .get("structured")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let desc: Vec<String> = g
                .iter()
                .filter(|(k, _)| !k.contains("key") && *k != "name")
                .filter(|(k, _)| generator_setting_applies(provider, structured, k))
                .map(|(k, v)| format!("{k}={}", inline(v)))
                .collect();
            rows.push((format!("generator `{name}`"), desc.join(", ")));
        }
        // The clustering's embedding settings that its `embedding` does not use are left out.
        let embedding = manifest
            .get("augment")
            .and_then(|a| a.get("embedding"))
            .and_then(|e| e.as_str())
            .unwrap_or("tfidf-svd")
            .to_string();
        let augment = manifest
            .get("augment")
            .and_then(|v| v.as_table())
            .map(|t| {
                t.iter()
                    .filter(|(_, v)| !v.is_table() && !v.is_array())
                    .filter(|(k, _)| match k.as_str() {
                        "encoder" => embedding == "encoder",
                        "svd_dim" => embedding == "tfidf-svd",
                        _ => true,
                    })
                    .map(|(k, v)| format!("{k}={}", inline(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        if !used_generators.is_empty() && !augment.is_empty() {
            rows.push(("augment".into(), augment));
        }
    }
    let mut kinds: Vec<&str> = groups
        .iter()
        .map(|g| g.cells[0].cell.classifier.as_str())
        .collect();
    kinds.dedup();
    rows.push((
        "configurations".into(),
        format!(
            "{} ({} cells; classifiers: {})",
            groups.len(),
            results.len(),
            kinds.join(", ")
        ),
    ));
    let ns: Vec<usize> = groups.iter().map(Group::n).collect();
    rows.push((
        "replicates".into(),
        format!(
            "n = {} per configuration: cells whose configuration differs only in seeds",
            if ns.iter().min() == ns.iter().max() {
                ns.first().copied().unwrap_or(0).to_string()
            } else {
                format!(
                    "{}–{}",
                    ns.iter().min().unwrap_or(&0),
                    ns.iter().max().unwrap_or(&0)
                )
            }
        ),
    ));
    rows.push((
        "bootstrap".into(),
        format!(
            "{} resamples of the test sentences, seed {}; 95% percentile intervals",
            b.resamples, b.seed
        ),
    ));
    let digest = manifest_text
        .map(|t| {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(t.as_bytes()))[..16].to_string()
        })
        .unwrap_or_else(|| "not recorded".into());
    rows.push((
        "manifest".into(),
        format!(
            "`{}`; `manifest.resolved.toml` sha256 {digest}…; synthcti {} (`provenance.json`)",
            prov["manifest"]
                .as_str()
                .and_then(|p| Path::new(p).file_name())
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "unknown".into()),
            prov["version"].as_str().unwrap_or("unknown"),
        ),
    ));
    let mut s = String::from("## Setup\n\n| | |\n|---|---|\n");
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    s
}

/// A TOML value on one line (strings without quotes).
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The main table: one row per configuration, mean ± sd over its replicates, and n.
fn main_table_md(groups: &[Group]) -> String {
    let mut s = String::from(
        "## Main results\n\nMean ± sample standard deviation over the replicates of each configuration (n: how many).\n\n| configuration | n | macro-F1 | target macro-F1 | accuracy | weighted-F1 | train sentences |\n|---|---|---|---|---|---|---|\n",
    );
    for g in groups {
        let train = mean_sd(
            &g.cells
                .iter()
                .map(|r| r.train_size as f64)
                .collect::<Vec<_>>(),
        )
        .map(|(m, _)| format!("{m:.0}"))
        .unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {train} |\n",
            g.label,
            g.n(),
            show_mean_sd(g.mean_sd(|r| Some(r.metrics.macro_f1))),
            show_mean_sd(g.mean_sd(|r| r.target_macro_f1)),
            show_mean_sd(g.mean_sd(|r| Some(r.metrics.accuracy))),
            show_mean_sd(g.mean_sd(|r| Some(r.metrics.weighted_f1))),
        ));
    }
    s
}

/// LLM calls and tokens per synthetic chain, and wall time per stage.
fn cost_md(run_dir: &Path, results: &[CellResult]) -> String {
    let mut s = String::from("## Cost\n\n");
    let mut chains: Vec<&crate::record::SynthSummary> = results
        .iter()
        .filter_map(|r| r.synthetic.as_ref())
        .collect();
    chains.sort_by(|a, b| a.filter_key.cmp(&b.filter_key));
    chains.dedup_by(|a, b| a.filter_key == b.filter_key);
    if !chains.is_empty() {
        let calls: usize = chains.iter().map(|c| c.usage.calls).sum();
        let made: usize = chains.iter().map(|c| c.usage.made).sum();
        let cached: usize = chains.iter().map(|c| c.usage.cached).sum();
        let prompt: u64 = chains.iter().map(|c| c.usage.prompt_tokens).sum();
        let completion: u64 = chains.iter().map(|c| c.usage.completion_tokens).sum();
        let estimated: u64 = chains.iter().map(|c| c.usage.estimated_tokens).sum();
        s.push_str(&format!(
            "LLM: {} synthetic chain(s), {calls} calls ({made} made by this run, {cached} from the call cache), {prompt} prompt + {completion} completion tokens{}; per chain in the synthetic data table below.\n\n",
            chains.len(),
            if estimated > 0 {
                format!(" ({estimated} estimated)")
            } else {
                String::new()
            }
        ));
    }
    let trained: f64 = results.iter().map(|r| r.train_seconds).sum();
    s.push_str(&format!(
        "Training, as recorded when each model was trained (also for cells this run read from the cache): {trained:.1} s over {} cells.\n\n",
        results.len()
    ));
    let times = crate::timings::read(run_dir);
    if times.is_empty() {
        s.push_str("Wall time per stage: not recorded (a run of an older synthcti).\n");
        return s;
    }
    s.push_str("Wall time of this run per stage (a stage answered from the cache costs little here):\n\n| stage | steps | from cache | wall s |\n|---|---|---|---|\n");
    for (stage, steps, cached, secs) in crate::timings::by_stage(&times) {
        let what = match stage.as_str() {
            "synthesize" => "synthesize (generate + filter)".to_string(),
            "cell" => "cell (train + evaluate)".to_string(),
            "run" => "whole run".to_string(),
            _ => stage.clone(),
        };
        let cached = if stage == "cell" {
            cached.to_string()
        } else {
            "—".into()
        };
        s.push_str(&format!("| {what} | {steps} | {cached} | {secs:.1} s |\n"));
    }
    s
}

/// The whole `summary.md`: title, setup, main table, paired intervals, per-class table,
/// figures, cost, then the per-cell detail (`cells_md`, the body [`crate::report::summary_md`]
/// writes).
#[allow(clippy::too_many_arguments)]
pub fn summary_md(
    run_dir: &Path,
    results: &[CellResult],
    b: Bootstrap,
    intervals_md: &str,
    per_class_md: &str,
    figures_md: &str,
    cells_md: &str,
) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else {
        s.push_str("# Results\n\nNo cell finished.\n\n");
        s.push_str(cells_md);
        return s;
    };
    let groups = groups(results);
    s.push_str(&format!(
        "# {} — results on {}\n\n",
        first.experiment, first.dataset
    ));
    s.push_str(&setup_md(run_dir, results, &groups, b));
    s.push('\n');
    s.push_str(&main_table_md(&groups));
    s.push_str(intervals_md);
    s.push_str(per_class_md);
    s.push_str(figures_md);
    s.push('\n');
    s.push_str(&cost_md(run_dir, results));
    s.push_str("\n## Cells\n\n");
    s.push_str(cells_md);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_row_of_a_generator_lists_only_settings_its_provider_uses() {
        let keys = [
            "provider",
            "model",
            "temperature",
            "threads",
            "parallel",
            "banned_words",
            "base_url",
            "concurrency",
            "item_chars",
            "of",
            "budget_calls",
        ];
        // The settings each provider's row leaves out.
        let left_out = |provider, structured| -> Vec<&str> {
            keys.into_iter()
                .filter(|k| !generator_setting_applies(provider, structured, k))
                .collect()
        };
        assert_eq!(left_out("local", true), ["base_url", "concurrency", "of"]);
        assert_eq!(
            left_out("local", false),
            ["base_url", "concurrency", "item_chars", "of"]
        );
        assert_eq!(
            left_out("openai", false),
            ["threads", "parallel", "banned_words", "item_chars", "of"]
        );
        // A replay takes everything else from the generator it replays.
        let kept: Vec<&str> = keys
            .into_iter()
            .filter(|k| generator_setting_applies("replay", false, k))
            .collect();
        assert_eq!(kept, ["provider", "of", "budget_calls"]);
    }

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(mean_sd(&[0.5]), Some((0.5, None)));
        // numpy.std([1, 2, 3, 4], ddof=1) = 1.2909944487358056
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m, 2.5);
        assert!((sd.unwrap() - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(show_mean_sd(Some((0.5, Some(0.01)))), "0.5000 ± 0.0100");
        assert_eq!(show_mean_sd(None), "—");
    }

    #[test]
    fn replicate_fields_are_left_out_of_the_key() {
        let mut v = serde_json::json!({"name": "x", "seed": 1, "replicate": 2, "split_seed": 44,
            "generation_offset": 2, "config": "fasttext-dim8-s1",
            "params": {"dim": 8, "split_seed": 3}, "synthetic": {"k": 3, "seed": 4}});
        v.as_object_mut().unwrap().remove("name");
        strip_replicate_fields(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"params": {"dim": 8}, "synthetic": {"k": 3}})
        );
    }
}

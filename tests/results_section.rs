//! End-to-end: the results section a run writes (`summary.md`, `per_class.csv`,
//! `per_class_delta.csv`, `plots/`) and `synthcti compare`, with the real binary on small real
//! TRAM rows; the synthetic sentences come from an OpenAI-compatible server the test starts on
//! 127.0.0.1 (one call, so its answer is fixed).
//!
//! Update the snapshots after a deliberate change: `INSTA_UPDATE=always cargo test --test
//! results_section`, then read the diff.

mod common;
use common::llm_server::{self, Reply};
use common::*;
use std::path::{Path, PathBuf};

const KEY: &str = "sk-test-results-1234";

/// Four TRAM classes × 40 rows, fastText (dim 8 and 16), training seeds 1 and 2 (the
/// replicates), `none` and `synthetic` (k = 1, 3 sentences for the target T1027).
fn augmented(url: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = [8, 16]\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n[augment]\nkind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 3\n[augment.targets]\nlist = [\"T1027\"]\n[study]\nresamples = 200\nseed = 3\n[[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\napi_key_env = \"TEST_LLM_KEY\"\nmax_tokens = 64\nseed = 5\n"
        ),
    );
    (s, m)
}

fn run(s: &Sandbox, m: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let out = s.path(out);
    let mut args = vec![
        "run",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--set",
        "experiment.seeds=[1, 2]",
    ];
    args.extend_from_slice(extra);
    let o = s.cmd_env(&args, &[("TEST_LLM_KEY", KEY)]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    out
}

fn settings(s: &Sandbox) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let root = s.dir.path().canonicalize().unwrap();
    for p in [
        root.display().to_string(),
        s.dir.path().display().to_string(),
    ] {
        settings.add_filter(&regex::escape(&p), "[SANDBOX]");
    }
    settings.add_filter(
        &regex::escape(&shared_data().display().to_string()),
        "[DATA]",
    );
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    // Measurements, not results: wall and training times; the digest of a manifest that
    // holds the sandbox's paths.
    settings.add_filter(r"\d+\.\d s\b", "[s]");
    settings.add_filter(r"\| \d+\.\d\d +\|\n", "| [s]     |\n");
    settings.add_filter(
        r"sha256 [0-9a-f]{16}…; synthcti",
        "sha256 [DIGEST]…; synthcti",
    );
    settings
}

#[test]
fn a_run_writes_a_results_section_and_report_rebuilds_it() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let (s, m) = augmented(&server.url);
    let dir = run(&s, &m, "results/r", &[]);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    for section in [
        "## Setup",
        "## Main results",
        "## Paired comparison",
        "## Per-class F1",
        "## Figures",
        "## Cost",
        "## Cells",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    // Two configurations per arm, each with its two seeds as replicates.
    assert!(md.contains("| fasttext (dim=8), none | 2 |"), "{md}");
    assert!(
        md.contains("| fasttext (dim=16), synthetic k=1 cluster-guided remote ×3 | 2 |"),
        "{md}"
    );
    settings(&s).bind(|| insta::assert_snapshot!("results_summary_md", md));

    // per_class.csv: a row per cell and class with the new columns; the target's synthetic
    // sentences are counted on the augmented cells only.
    let rows = read_csv_rows(&dir.join("per_class.csv"));
    assert_eq!(rows.len(), 8 * 4, "8 cells × 4 classes");
    let kept = read_csv_rows(&dir.join("synthetic.csv"))
        .into_iter()
        .find(|r| r["technique"] == "T1027")
        .unwrap()["kept"]
        .clone();
    assert_ne!(kept, "0");
    let t1027: Vec<_> = rows.iter().filter(|r| r["class"] == "T1027").collect();
    for r in &t1027 {
        assert_eq!(r["target"], "true");
        let augmented = !r["baseline_cell"].is_empty();
        let want = if augmented { kept.as_str() } else { "0" };
        assert_eq!(r["synthetic_kept"], want, "{r:?}");
        assert_eq!(r["delta_f1"].is_empty(), !augmented);
    }
    let train: usize = rows
        .iter()
        .filter(|r| r["cell"] == t1027[0]["cell"])
        .map(|r| r["train_count"].parse::<usize>().unwrap())
        .sum();
    let split_train = std::fs::read_to_string(dir.join("split/train.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(train, split_train);

    // per_class_delta.csv: the target first, one table per augmented configuration.
    let deltas = read_csv_rows(&dir.join("per_class_delta.csv"));
    assert_eq!(deltas.len(), 2 * 4);
    assert_eq!(deltas[0]["class"], "T1027");
    assert_eq!(deltas[0]["replicates"], "2");
    for d in &deltas {
        let (x, lo, hi): (f64, f64, f64) = (
            d["delta_f1"].parse().unwrap(),
            d["delta_lo"].parse().unwrap(),
            d["delta_hi"].parse().unwrap(),
        );
        assert!(lo <= x + 1e-4 && x <= hi + 1e-4, "{d:?}");
        let (b, a): (f64, f64) = (
            d["baseline_f1"].parse().unwrap(),
            d["augmented_f1"].parse().unwrap(),
        );
        assert!((a - b - x).abs() < 2e-4, "{d:?}");
    }

    // Figures: the delta plot and the heat map are drawn; model size (one size per dim? no: the
    // trained parameters differ with dim) and k (one k) as the data allow.
    let series: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("plots/series.json")).unwrap()).unwrap();
    for name in ["delta_vs_train_count", "confusion_best"] {
        for ext in ["svg", "png"] {
            let p = dir.join(format!("plots/{name}.{ext}"));
            assert!(
                std::fs::metadata(&p).unwrap().len() > 1000,
                "{}",
                p.display()
            );
        }
        assert!(md.contains(&format!("](plots/{name}.svg)")), "{md}");
    }
    let svg = std::fs::read_to_string(dir.join("plots/delta_vs_train_count.svg")).unwrap();
    for label in [
        "real train sentences of the class (log scale)",
        "F1 augmented − baseline",
        "fasttext (dim=8), synthetic k=1 cluster-guided remote ×3",
    ] {
        assert!(svg.contains(label), "{label} not in the SVG");
    }
    assert!(
        md.contains("- `macro_f1_vs_k`: the run's synthetic cells use fewer than two values of k."),
        "{md}"
    );
    // The PNG reads back as a picture of the SVG's size with something drawn on it.
    let (w, h, rgb) = synthcti::png::decode_rgb(
        &std::fs::read(dir.join("plots/delta_vs_train_count.png")).unwrap(),
    )
    .unwrap();
    assert_eq!((w, h), (960, 600));
    let ink = rgb.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(ink > 960 * 600 / 100, "{ink} pixels drawn");
    assert!(
        md.contains("PNG: [`plots/delta_vs_train_count.png`](plots/delta_vs_train_count.png)."),
        "{md}"
    );
    settings(&s).bind(|| {
        insta::assert_snapshot!(
            "results_plot_series",
            serde_json::to_string_pretty(&series).unwrap()
        )
    });

    // `report` writes the same files from disk.
    let before: Vec<String> = [
        "summary.md",
        "per_class.csv",
        "per_class_delta.csv",
        "plots/series.json",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
    .collect();
    std::fs::remove_dir_all(dir.join("plots")).unwrap();
    let o = s.cmd(&["report", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (f, b) in [
        "summary.md",
        "per_class.csv",
        "per_class_delta.csv",
        "plots/series.json",
    ]
    .iter()
    .zip(before)
    {
        assert_eq!(std::fs::read_to_string(dir.join(f)).unwrap(), b, "{f}");
    }
}

/// Run A; run B of the same manifest with `--set classifier.dim=[8, 32]` (the dim-8 cells are
/// the same, dim 16 meets dim 32); run C with another split seed (other test sentences).
#[test]
fn compare_pairs_cells_by_configuration_and_says_what_is_not_comparable() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = [8, 16]\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n[study]\nresamples = 200\nseed = 3\n",
    );
    let a = s.path("results/a");
    let b = s.path("results/b");
    let c = s.path("results/c");
    s.run_ok(&m, &a, &["-q"]);
    s.run_ok(&m, &b, &["-q", "--set", "classifier.dim=[8, 32]"]);
    s.run_ok(&m, &c, &["-q", "--set", "split.seed=8"]);
    let cmp = |x: &Path, y: &Path, f: &str| {
        let o = s.cmd(&[
            "compare",
            x.to_str().unwrap(),
            y.to_str().unwrap(),
            "--format",
            f,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let ab = cmp(&a, &b, "csv");
    let rows = read_csv_rows_str(&ab);
    assert_eq!(rows.len(), 2, "{ab}");
    // The same cell (cached in B): identical predictions, so the delta and its interval are 0.
    assert_eq!(rows[0]["matched_by"], "configuration");
    assert_eq!(rows[0]["macro_f1_a"], rows[0]["macro_f1_b"]);
    assert_eq!(rows[0]["delta_macro_f1"], "+0.0000 [+0.0000, +0.0000]");
    assert_eq!(rows[1]["matched_by"], "classifier, augment, seed");
    assert_eq!(rows[1]["differs"], "dim: 16 → 32");
    assert_eq!(rows[1]["status"], "comparable");
    insta::assert_snapshot!("compare_a_b", cmp(&a, &b, "table"));

    let ac = read_csv_rows_str(&cmp(&a, &c, "csv"));
    assert_eq!(ac.len(), 2);
    for r in &ac {
        assert_eq!(r["matched_by"], "configuration");
        // The cells' specs are the same; the run-wide split seed is not.
        assert_eq!(r["differs"], "split.seed: 7 → 8");
        assert!(r["status"].starts_with("not comparable: "), "{r:?}");
        assert_eq!(r["delta_macro_f1"], "");
    }
    // Other target techniques (none at all below 1): comparable over L, and the row says why
    // the target delta is missing.
    let d = s.path("results/d");
    s.run_ok(&m, &d, &["-q", "--set", "augment.targets.below=1"]);
    for r in read_csv_rows_str(&cmp(&a, &d, "csv")) {
        assert_eq!(r["differs"], "", "{r:?}");
        assert_eq!(r["delta_target_macro_f1"], "", "{r:?}");
        assert!(
            r["status"].starts_with("comparable; no target delta: the target techniques differ ("),
            "{r:?}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&cmp(&a, &c, "json")).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    // A folder that is not a run.
    let o = s.cmd(&[
        "compare",
        a.to_str().unwrap(),
        s.path("data").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a run folder"), "{}", stderr(&o));
}

fn read_csv_rows_str(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            h.iter()
                .zip(rec.unwrap().iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

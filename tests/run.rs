//! End-to-end: the real binary on small real data (TRAM rows from the shared data folder).

mod common;
use common::*;
use std::path::{Path, PathBuf};

const SMALL: &str = "[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n";

fn small_sandbox() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &("[split]\nseed = 7\n".to_string() + SMALL),
    );
    (s, m)
}

#[test]
fn run_writes_every_output_and_a_second_run_trains_nothing() {
    let (s, m) = small_sandbox();
    let out = s.path("results/first");
    s.run_ok(&m, &out, &["--set", "experiment.seeds=[1,2]"]);
    for f in [
        "manifest.resolved.toml",
        "plan.json",
        "summary.md",
        "summary.csv",
        "per_class.csv",
        "run.log",
        "split/train.jsonl",
        "split/test.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    for col in [
        "cell",
        "dataset",
        "classifier",
        "augment",
        "seed",
        "accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "train_size",
        "test_size",
        "train_seconds",
    ] {
        assert!(rows[0].contains_key(col), "summary.csv lacks {col}");
    }
    assert_eq!(rows[0]["classifier"], "fasttext");
    assert_eq!(rows[0]["augment"], "none");
    assert_eq!(rows[0]["dataset"], "tram-single");
    let log = run_log(&out);
    assert!(log.contains("2 trained, 0 from cache"), "{log}");

    // The same manifest again: every stage comes from the cache.
    let out2 = s.path("results/second");
    s.run_ok(&m, &out2, &["--set", "experiment.seeds=[1,2]"]);
    let log = run_log(&out2);
    assert!(log.contains("0 trained, 2 from cache"), "{log}");
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        std::fs::read_to_string(out2.join("summary.csv")).unwrap()
    );
}

#[test]
fn metrics_can_be_recomputed_from_predictions() {
    let (s, m) = small_sandbox();
    let out = s.path("results/r");
    let o = s.cmd(&["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cell = std::fs::read_dir(out.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(cell.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        preds
            .iter()
            .all(|p| p["text"].is_string() && p["top"].is_array())
    );
    let mut classes = std::collections::BTreeSet::new();
    for p in &preds {
        classes.insert(p["gold"].as_str().unwrap().to_string());
        classes.insert(p["pred"].as_str().unwrap().to_string());
    }
    let mut f1s = Vec::new();
    for c in &classes {
        let tp = preds
            .iter()
            .filter(|p| p["gold"] == c.as_str() && p["pred"] == c.as_str())
            .count() as f64;
        let g = preds.iter().filter(|p| p["gold"] == c.as_str()).count() as f64;
        let q = preds.iter().filter(|p| p["pred"] == c.as_str()).count() as f64;
        let (pr, rc) = (
            if q > 0.0 { tp / q } else { 0.0 },
            if g > 0.0 { tp / g } else { 0.0 },
        );
        f1s.push(if pr + rc > 0.0 {
            2.0 * pr * rc / (pr + rc)
        } else {
            0.0
        });
    }
    let macro_f1 = f1s.iter().sum::<f64>() / f1s.len() as f64;
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cell.join("metrics.json")).unwrap()).unwrap();
    assert!((metrics["metrics"]["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-9);
}

#[test]
fn plan_lists_keys_and_cache_state() {
    let (s, m) = small_sandbox();
    let plan = s.plan_json(&m, &[]);
    let stages = plan["cells"][0]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 4);
    assert!(
        stages
            .iter()
            .all(|st| st["cached"] == false && st["key"].as_str().unwrap().len() == 64)
    );
    assert!(s.cmd(&["run", m.to_str().unwrap(), "-q"]).status.success());
    let plan2 = s.plan_json(&m, &[]);
    assert!(
        plan2["cells"][0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["cached"] == true)
    );
    assert_eq!(plan["cells"][0]["stages"], {
        let mut v = plan2["cells"][0]["stages"].clone();
        for st in v.as_array_mut().unwrap() {
            st["cached"] = false.into();
        }
        v
    });
}

#[test]
fn environment_and_set_layer_over_the_file() {
    let (s, m) = small_sandbox();
    let key_of = |o: std::process::Output| -> String {
        assert!(o.status.success(), "{}", stderr(&o));
        let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        p["cells"][0]["stages"][1]["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let file = s.plan_json(&m, &[])["cells"][0]["stages"][1]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let env = |extra: &[&str]| {
        bin()
            .args(["plan", m.to_str().unwrap(), "--json"])
            .args(extra)
            .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
            .env("SYNTHCTI_SPLIT__SEED", "8")
            .output()
            .unwrap()
    };
    let from_env = key_of(env(&[]));
    assert_ne!(file, from_env, "the environment overrides the file");
    let set_back = key_of(env(&["--set", "split.seed=7"]));
    assert_eq!(file, set_back, "--set overrides the environment");
}

#[test]
fn report_rebuilds_the_tables_from_disk() {
    let (s, m) = small_sandbox();
    let out = s.path("results/r");
    s.run_ok(&m, &out, &["-q"]);
    let before = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.md")).unwrap();
    let o = s.cmd(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        before
    );
    assert!(out.join("summary.md").is_file());
    let o = s.cmd(&["report", s.path("nowhere").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn same_seed_gives_the_same_predictions_with_separate_caches() {
    let (s, m) = small_sandbox();
    let a = s.path("results/a");
    s.run_ok(&m, &a, &["-q"]);
    let b = s.path("results/b");
    let o = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "-q",
        ])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cell = |d: &Path| {
        std::fs::read_dir(d.join("cells"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    assert_eq!(
        std::fs::read_to_string(cell(&a).join("predictions.jsonl")).unwrap(),
        std::fs::read_to_string(cell(&b).join("predictions.jsonl")).unwrap()
    );
}

#[test]
fn grid_lists_expand_into_named_cells() {
    let (s, m) = small_sandbox();
    let p = s.plan_json(
        &m,
        &[
            "--set",
            "classifier.dim=[8,16]",
            "--set",
            "experiment.seeds=[1,2,3]",
        ],
    );
    let names: Vec<&str> = p["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cell"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6);
    assert!(
        names.iter().any(|n| n.starts_with("fasttext-dim8-s1-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("fasttext-dim16-s3-")),
        "{names:?}"
    );
}

/// Kill a run while it trains its second cell; the rerun takes the first cell from the cache,
/// trains the second, and no entry is corrupt or half-written.
#[test]
fn a_run_killed_mid_training_resumes_from_the_cache() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(200));
    // Cell 1 is quick; cell 2 (dim 128, 400 epochs, no early stop) trains long enough to be killed.
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[[classifier]]\nkind = \"fasttext\"\ndim = 8\nepochs = 1\nmaxn = 0\nminn = 0\n\
         [[classifier]]\nkind = \"fasttext\"\ndim = 128\nepochs = 400\npatience = 0\n",
    );
    let mut child = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/killed").to_str().unwrap(),
        ])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let train_entries = || {
        std::fs::read_dir(s.path("cache/entries/train"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let in_progress = || {
        std::fs::read_dir(s.path("cache/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Cell 1's log line comes after its evaluate entry, and cell 2 may already be training on
    // the other worker by then: wait for the line too, or a kill in between finds no cell line.
    let cell_logged = || {
        std::fs::read_to_string(s.path("results/killed/run.log")).is_ok_and(|l| {
            l.lines()
                .any(|l| l.starts_with("cell ") && l.contains("macro-F1"))
        })
    };
    let start = std::time::Instant::now();
    while !(train_entries() == 1
        && s.path("cache/entries/evaluate").is_dir()
        && in_progress() > 0
        && cell_logged())
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            start.elapsed().as_secs() < 120,
            "cell 2 never started training"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A killed run leaves its log, written as it went, and no summary that looks finished.
    let killed = s.path("results/killed");
    assert!(!killed.join("summary.csv").exists());
    let log = run_log(&killed);
    assert!(log.contains("load: ") && log.contains("split: "), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("cell ") && l.contains("macro-F1")),
        "{log}"
    );

    let out = s.path("results/resumed");
    // Changing cell 2 only: cell 1 must come from the cache.
    s.run_ok(&m, &out, &["--set", "classifier.1.epochs=3"]);
    let log = run_log(&out);
    assert!(log.contains("1 trained, 1 from cache"), "{log}");
    assert_eq!(
        in_progress(),
        0,
        "the dead writer's temporary entry was swept"
    );
    // Every entry verifies: rerunning the plan sees all stages cached.
    let p = s.plan_json(&m, &["--set", "classifier.1.epochs=3"]);
    for c in p["cells"].as_array().unwrap() {
        assert!(
            c["stages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|st| st["cached"] == true)
        );
    }
    assert!(!s.path("cache/corrupt").exists());
    let hidden: Vec<_> = std::fs::read_dir(s.path("results"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "no hidden run folder: {hidden:?}");
}

#[test]
fn shipped_manifests_validate_and_the_smoke_experiment_runs() {
    let s = Sandbox::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let with_data = |args: &[&str], cwd: &Path| {
        bin()
            .args(args)
            .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
            .env("SYNTHCTI_DATA_DIR", shared_data())
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    // From the repository root, as the README runs them, and from a folder outside the
    // checkout: relative paths in a manifest resolve against its own folder, so both plan the
    // same cells with the same keys.
    let mut shipped: Vec<String> = std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| n.trim_end_matches(".toml").to_string())
        .collect();
    shipped.sort();
    // Every shipped manifest, model-size.toml included; a new one is picked up by itself.
    assert_eq!(
        shipped,
        [
            "cluster-k",
            "cti-to-mitre",
            "generator",
            "model-size",
            "own-data",
            "paper",
            "smoke",
            "tram",
            "tram-multi"
        ]
    );
    let cells = |o: &std::process::Output| {
        let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        p["cells"].clone()
    };
    for m in &shipped {
        let rel = format!("experiments/{m}.toml");
        let o = with_data(&["plan", &rel, "--json"], root);
        assert!(o.status.success(), "{m}: {}", stderr(&o));
        let p = root.join(&rel);
        let elsewhere = with_data(&["plan", p.to_str().unwrap(), "--json"], s.dir.path());
        assert!(
            elsewhere.status.success(),
            "{m} from {}: {}",
            s.dir.path().display(),
            stderr(&elsewhere)
        );
        assert_eq!(cells(&o), cells(&elsewhere), "{m}");
    }
    let out = s.path("results/smoke");
    let o = with_data(
        &[
            "run",
            root.join("experiments/smoke.toml").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        s.dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["macro_f1"].parse::<f64>().unwrap() > 0.3),
        "{rows:?}"
    );
}

/// A cached configuration keeps the name the current grid gives it.
#[test]
fn cached_cells_take_the_names_of_the_current_grid() {
    let (s, m) = small_sandbox();
    s.run_ok(&m, &s.path("results/one"), &["-q"]);
    let out = s.path("results/two");
    s.run_ok(&m, &out, &["-q", "--set", "classifier.dim=[16,8]"]);
    let log = run_log(&out);
    assert!(log.contains("1 trained, 1 from cache"), "{log}");
    let names: Vec<String> = read_csv_rows(&out.join("summary.csv"))
        .into_iter()
        .map(|r| r["cell"].clone())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("fasttext-dim")),
        "{names:?}"
    );
    for n in &names {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("cells").join(n).join("metrics.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m["cell"]["name"], n.as_str());
        let per_class =
            std::fs::read_to_string(out.join("cells").join(n).join("per_class.csv")).unwrap();
        assert!(
            per_class.lines().skip(1).all(|l| l.starts_with(n.as_str())),
            "{per_class}"
        );
    }
}

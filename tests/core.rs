//! End-to-end: the runner's guarantees — determinism under `--jobs`, a panicking cell fails
//! alone, run folders never collide, `plan` is a dry run, and `plan.json` tells what was cached
//! before the run.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const FASTTEXT: &str = "[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n";

fn sandbox(extra: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &format!("[split]\nseed = 7\n{extra}"),
    );
    (s, m)
}

/// Every cell's predictions.jsonl of a run folder, by cell name.
fn predictions(run: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(run.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read_to_string(e.path().join("predictions.jsonl")).unwrap(),
            )
        })
        .collect()
}

/// Cells trained on two threads give bit-identical predictions to cells trained one at a time:
/// weight initialisation and dropout draw from the backend's one random generator, so each
/// draw is seeded for its cell alone. Separate caches, so both runs train everything.
#[test]
fn jobs_2_gives_the_same_predictions_as_jobs_1() {
    let (s, m) = sandbox(&format!(
        "{FASTTEXT}[[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"{}\"\nepochs = 30\nhead_hidden = 32\ndropout = 0.3\n",
        minilm().display()
    ));
    let run = |jobs: &str, cache: &str, out: &str| {
        let out = s.path(out);
        let o = bin()
            .args([
                "run",
                m.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--jobs",
                jobs,
                "-q",
                "--set",
                "experiment.seeds=[1,2,3]",
            ])
            .env("SYNTHCTI_CACHE_DIR", s.path(cache))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        predictions(&out)
    };
    let one = run("1", "cache1", "results/jobs1");
    let two = run("2", "cache2", "results/jobs2");
    assert_eq!(one.len(), 6);
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    for (cell, p) in &one {
        assert!(
            p == &two[cell],
            "{cell}: predictions differ between --jobs 1 and --jobs 2"
        );
    }
}

/// A panic inside one cell fails that cell (exit 4, error.txt naming the panic); the other
/// cells finish and the summary is written.
#[test]
fn a_panicking_cell_fails_alone() {
    let (s, m) = sandbox(FASTTEXT);
    let plan = s.plan_json(&m, &["--set", "classifier.dim=[8,16]"]);
    let victim = plan["cells"][0]["cell"].as_str().unwrap().to_string();
    let out = s.path("results/r");
    let o = s.cmd_env(
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "classifier.dim=[8,16]",
        ],
        &[("FAILPOINT_PANIC_CELL", &victim)],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let why = std::fs::read_to_string(out.join("cells").join(&victim).join("error.txt")).unwrap();
    assert!(
        why.contains("panicked: failpoint: cell") && why.contains(&victim),
        "{why}"
    );
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ok: Vec<_> = rows.iter().filter(|r| r["status"] == "ok").collect();
    assert_eq!(ok.len(), 1, "{rows:?}");
    assert!(stdout(&o).contains(&format!("FAILED {victim}")));
}

/// Two runs of one manifest started at the same moment both keep their results, each in a
/// folder of its own.
#[test]
fn two_runs_started_together_keep_both_results() {
    let (s, m) = sandbox(FASTTEXT);
    // Warm the cache so both runs are quick and start within the same second.
    s.run_ok(&m, &s.path("elsewhere"), &["-q"]);
    let spawn = || {
        bin()
            .args(["run", m.to_str().unwrap(), "-q"])
            .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
            .current_dir(s.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Two run folders (and `latest`, a link to the one that finished last).
    let runs: Vec<PathBuf> = std::fs::read_dir(s.path("results/t"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("latest"))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let latest = std::fs::canonicalize(s.path("results/t/latest")).unwrap();
    assert!(
        runs.iter()
            .any(|r| std::fs::canonicalize(r).unwrap() == latest),
        "latest -> {}",
        latest.display()
    );
    for r in &runs {
        assert_eq!(
            read_csv_rows(&r.join("summary.csv")).len(),
            1,
            "{}",
            r.display()
        );
        assert!(run_log(r).contains("1 cells: 0 trained, 1 from cache"));
    }
    // Nothing hidden beside them.
    let hidden: Vec<_> = std::fs::read_dir(s.path("results/t"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// `plan` parses and splits in memory and writes nothing to the cache — not even with an
/// augmented grid that clusters on MiniLM embeddings — yet still names the targets.
#[test]
fn plan_is_a_dry_run() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n{FASTTEXT}\n[augment]\nkind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 64\nembedding = \"encoder\"\nencoder = \"{}\"\n[augment.targets]\nlist = [\"T1027\"]\n\n[[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
            minilm().display()
        ),
    );
    let cache = s.path("plan-cache");
    let o = bin()
        .args(["plan", m.to_str().unwrap(), "--json"])
        .env("SYNTHCTI_CACHE_DIR", &cache)
        .env("OPENAI_API_KEY", "unused")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("1 target techniques") && notes.contains("T1027 ("),
        "{notes}"
    );
    assert!(notes.contains("T1027: k clipped from 64 to "), "{notes}");
    let written: Vec<_> = s
        .files_under("plan-cache")
        .into_iter()
        .chain(std::iter::once(cache.clone()).filter(|c| c.exists()))
        .collect();
    assert!(written.is_empty(), "plan wrote {written:?}");
}

/// `plan.json` in a run folder says what was cached before the run: nothing on the first run,
/// everything on the second.
#[test]
fn plan_json_records_the_cache_before_the_run() {
    let (s, m) = sandbox(FASTTEXT);
    let cached = |run: &Path| -> Vec<(String, bool)> {
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("plan.json")).unwrap()).unwrap();
        plan_stages(&p, 0)
    };
    let first = s.path("results/first");
    s.run_ok(&m, &first, &["-q"]);
    let stages = ["load", "split", "train", "evaluate"];
    assert_eq!(
        cached(&first),
        stages.map(|st| (st.to_string(), false)).to_vec()
    );
    let second = s.path("results/second");
    s.run_ok(&m, &second, &["-q"]);
    assert_eq!(
        cached(&second),
        stages.map(|st| (st.to_string(), true)).to_vec()
    );
}

/// `--out` naming a file is refused before any work, and so is a folder another run wrote.
#[test]
fn out_that_is_a_file_or_a_used_folder_is_refused_before_work() {
    let (s, m) = sandbox(FASTTEXT);
    let file = s.write("results/a-file", "x");
    let o = s.cmd(&["run", m.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a file"), "{}", stderr(&o));
    assert_eq!(cache_entries(&s, "load"), 0, "refused before any work");
    let under = file.join("sub");
    let o = s.cmd(&["run", m.to_str().unwrap(), "--out", under.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a file, so no folder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cache_entries(&s, "load"), 0, "refused before any work");
    let used = s.path("results/used");
    s.run_ok(&m, &used, &["-q"]);
    let o = s.cmd(&["run", m.to_str().unwrap(), "--out", used.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

/// A trained model's cache key names its starting weights by content, not by path, and a cached
/// model is self-contained: moved to another folder (another checkout, another machine), the
/// same model folder hits the cache, and the cached model predicts with the tokenizer inside its
/// own entry after the folder it was trained from is gone.
#[test]
fn a_cached_model_is_keyed_by_content_and_self_contained() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let first = s.path("checkout-a/models/minilm");
    std::fs::create_dir_all(&first).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(minilm().join(f), first.join(f)).unwrap();
    }
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[split]\nseed = 7\n[[classifier]]\nkind = \"transformer\"\nmodel = \"PLACEHOLDER\"\nlayers = 1\nhidden = 32\nheads = 2\nintermediate = 64\nepochs = 1\nmax_length = 32\n",
    );
    let with_model = |dir: &Path| format!("classifier.model=\"{}\"", dir.display());
    s.run_ok(
        &m,
        &s.path("results/a"),
        &["-q", "--set", &with_model(&first)],
    );
    let entry = std::fs::read_dir(s.path("cache/entries/train"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        entry.join("tokenizer.json").is_file(),
        "the tokenizer is in the entry"
    );

    // The same files elsewhere; the first folder removed; the evaluation forgotten, so the cached
    // model must load and predict from its entry alone.
    let second = s.path("checkout-b/minilm");
    std::fs::create_dir_all(&second).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(first.join(f), second.join(f)).unwrap();
    }
    std::fs::remove_dir_all(s.path("checkout-a")).unwrap();
    std::fs::remove_dir_all(s.path("cache/entries/evaluate")).unwrap();
    let out = s.path("results/b");
    s.run_ok(&m, &out, &["-q", "--set", &with_model(&second)]);
    assert!(
        run_log(&out).contains("1 cells: 0 trained, 1 from cache"),
        "{}",
        run_log(&out)
    );
    assert_eq!(
        std::fs::read_to_string(s.path("results/a/summary.csv"))
            .unwrap()
            .lines()
            .nth(1)
            .map(|l| l.split(',').nth(6).unwrap().to_string()),
        std::fs::read_to_string(out.join("summary.csv"))
            .unwrap()
            .lines()
            .nth(1)
            .map(|l| l.split(',').nth(6).unwrap().to_string()),
        "the same macro-F1 from the same cached model"
    );
}

/// Every run folder's log accounts for its data, also when load and split came from the cache.
#[test]
fn a_warm_run_logs_its_load_and_split_lines() {
    let (s, m) = sandbox(FASTTEXT);
    let first = s.path("results/first");
    s.run_ok(&m, &first, &["-q"]);
    let warm = s.path("results/warm");
    s.run_ok(&m, &warm, &["-q"]);
    let line = |run: &Path, prefix: &str| -> String {
        run_log(run)
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {}", run_log(run)))
            .to_string()
    };
    for prefix in ["load: ", "split: "] {
        assert_eq!(
            line(&warm, prefix),
            format!("{} (from the cache)", line(&first, prefix))
        );
    }
}

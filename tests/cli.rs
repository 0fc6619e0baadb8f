//! End-to-end: the command line as researchers use it (issue 15) — overrides from the
//! environment, closed pipes, `--format`, completions, `runs`, `latest`, provenance, failed and
//! skipped rows, and the cache commands. The real binary on small real TRAM rows.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const SMALL: &str = "[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 3\nbatch_size = 16\nlr = 0.05\n";

fn small_sandbox() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(30));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &("[split]\nseed = 7\n".to_string() + SMALL),
    );
    (s, m)
}

fn fasttext_dims(plan: &serde_json::Value) -> Vec<u64> {
    plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["params"]["dim"].as_u64().unwrap_or_else(|| panic!("{c}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Overrides.

#[test]
fn environment_variables_reach_classifier_fields_in_both_spellings() {
    let (s, m) = small_sandbox();
    let plan = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["plan", m.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let o = s.cmd_env(&args, env);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(
        fasttext_dims(&plan(&[("SYNTHCTI_CLASSIFIER__DIM", "[8, 12]")], &[])),
        vec![8, 12]
    );
    assert_eq!(
        fasttext_dims(&plan(&[("SYNTHCTI_CLASSIFIER__0__DIM", "24")], &[])),
        vec![24]
    );
    // --set is above the environment.
    assert_eq!(
        fasttext_dims(&plan(
            &[("SYNTHCTI_CLASSIFIER__DIM", "8")],
            &["--set", "classifier.dim=32"]
        )),
        vec![32]
    );
}

#[test]
fn environment_variables_reach_generator_fields() {
    let (s, m) = small_sandbox();
    let out = s.path("results/r");
    s.run_ok(&m, &out, &["-q"]);
    let o = s.cmd_env(
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/g").to_str().unwrap(),
            "-q",
        ],
        &[("SYNTHCTI_GENERATOR__0__TEMPERATURE", "0.35")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let resolved = std::fs::read_to_string(s.path("results/g/manifest.resolved.toml")).unwrap();
    assert!(resolved.contains("temperature = 0.35"), "{resolved}");
    let before = std::fs::read_to_string(out.join("manifest.resolved.toml")).unwrap();
    assert!(!before.contains("temperature = 0.35"), "{before}");
}

#[test]
fn an_error_caused_by_the_environment_or_a_set_names_that_source() {
    let (s, m) = small_sandbox();
    let o = s.cmd_env(
        &["plan", m.to_str().unwrap()],
        &[("SYNTHCTI_CLASSIFIER__0__DIM", "0")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: environment variable SYNTHCTI_CLASSIFIER__0__DIM=0, key `classifier.0.dim`: 0 is out of range; it must be between 1 and 4096"
    );
    let o = s.cmd(&["plan", m.to_str().unwrap(), "--set", "classifier.dim=0"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: --set classifier.dim=0, key `classifier.0.dim`: 0 is out of range; it must be between 1 and 4096"
    );
    let o = s.cmd_env(
        &["plan", m.to_str().unwrap()],
        &[("SYNTHCTI_SPLIT__TEST_FRACTION", "1.5")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(
            "error: environment variable SYNTHCTI_SPLIT__TEST_FRACTION=1.5, key `split.test_fraction`: 1.5 is out of range"
        ),
        "{}",
        stderr(&o)
    );
    let o = s.cmd_env(
        &["plan", m.to_str().unwrap()],
        &[("SYNTHCTI_CLASSIFIER__HEAD_HIDDEN", "4")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("environment variable SYNTHCTI_CLASSIFIER__HEAD_HIDDEN=4: no [[classifier]] of this manifest has `head_hidden`"),
        "{}",
        stderr(&o)
    );
    s.assert_nothing_written();
}

#[test]
fn a_stray_synthcti_variable_warns_and_the_command_goes_on() {
    let (s, m) = small_sandbox();
    let o = s.cmd_env(&["plan", m.to_str().unwrap()], &[("SYNTHCTI_TOKEN", "x")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "warning: environment variable SYNTHCTI_TOKEN is not a manifest key and is ignored"
        ),
        "{e}"
    );
    assert!(
        stdout(&o).starts_with("experiment t (1 cells)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_list_on_a_key_that_is_no_grid_axis_names_the_axes() {
    let (s, m) = small_sandbox();
    for (key, val) in [
        ("split.seed", "[1,2]"),
        ("split.test_fraction", "[0.2,0.3]"),
        ("data.min_examples", "[2,5]"),
    ] {
        let o = s.cmd(&[
            "plan",
            m.to_str().unwrap(),
            "--set",
            &format!("{key}={val}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{key}");
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "--set {key}={val}, key `{key}`: a list was given where one value is expected"
            )) && e.contains(&format!("`{key}` is not a grid axis; give one value"))
                && e.contains(
                    "`experiment.seeds`, every `[[classifier]]` field but `kind`, `augment.kind`"
                ),
            "{e}"
        );
    }
    s.assert_nothing_written();
}

// ---------------------------------------------------------------------------------------------
// 7. Unix manners.

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (s, m) = small_sandbox();
    for args in [
        vec!["plan", m.to_str().unwrap()],
        vec!["completions", "bash"],
    ] {
        let mut c = bin()
            .args(&args)
            .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes, as `| head -0` does.
        drop(c.stdout.take());
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

#[test]
fn plan_prints_csv_json_and_a_table_on_request() {
    let (s, m) = small_sandbox();
    let o = s.cmd(&["plan", m.to_str().unwrap(), "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("cell,classifier,augment,seed,synthetic,stage,key,cached")
    );
    let plan = s.plan_json(&m, &[]);
    let cell = plan["cells"][0]["cell"].as_str().unwrap();
    let stages: Vec<&str> = lines.map(|l| l.split(',').nth(5).unwrap()).collect();
    assert_eq!(stages, vec!["load", "split", "train", "evaluate"]);
    assert!(
        text.contains(&format!("{cell},fasttext,none,42,,load,")),
        "{text}"
    );
    let o = s.cmd(&["plan", m.to_str().unwrap(), "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    assert_eq!(rows[3]["stage"], "evaluate");
    assert_eq!(rows[3]["cached"], "false");
    let o = s.cmd(&["plan", m.to_str().unwrap(), "--format", "table"]);
    let first = stdout(&o).lines().next().unwrap().to_string();
    assert!(
        first.contains("cell") && first.contains("cached"),
        "{first}"
    );
    let o = s.cmd(&["plan", m.to_str().unwrap(), "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn completions_print_a_script_per_shell() {
    for (shell, mark) in [
        ("bash", "_synthcti()"),
        ("zsh", "#compdef synthcti"),
        ("fish", "complete -c synthcti"),
    ] {
        let o = bin().args(["completions", shell]).output().unwrap();
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains(mark), "{shell}: {text}");
        assert!(
            text.contains("runs") && text.contains("completions"),
            "{shell}"
        );
    }
    let o = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// 4 and 5. Runs you can find, and their provenance.

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn runs_lists_past_runs_and_latest_points_at_the_last_complete_one() {
    let (s, m) = small_sandbox();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", m.to_str().unwrap(), "-q"];
        args.extend_from_slice(extra);
        let o = s.cmd(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o);
        PathBuf::from(
            line.lines()
                .last()
                .unwrap()
                .strip_prefix("results: ")
                .unwrap(),
        )
    };
    let first = run(&["--set", "experiment.seeds=[1,2]"]);
    let second = run(&[]);
    assert_ne!(first, second);
    let latest = s.path("results/t/latest");
    assert_eq!(
        std::fs::read_link(&latest).unwrap(),
        PathBuf::from(second.file_name().unwrap())
    );
    let o = s.cmd(&[
        "runs",
        "--results",
        s.path("results").to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: Vec<csv::StringRecord> = csv::Reader::from_reader(o.stdout.as_slice())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{}", stdout(&o));
    let best = |dir: &Path| {
        read_csv_rows(&dir.join("summary.csv"))
            .iter()
            .map(|r| r["macro_f1"].parse::<f64>().unwrap())
            .fold(f64::MIN, f64::max)
    };
    for (rec, dir, cells) in [(&listed[0], &first, "2"), (&listed[1], &second, "1")] {
        assert_eq!(&rec[0], "t");
        assert_eq!(&rec[1], dir.file_name().unwrap().to_str().unwrap());
        assert_eq!(&rec[3], cells);
        assert_eq!(&rec[4], cells, "ok cells");
        assert_eq!(&rec[7], format!("{:.4}", best(dir)).as_str());
        assert_eq!(&rec[9], "complete");
    }
    // Only one experiment's runs, and an unknown one is named.
    let o = s.cmd(&[
        "runs",
        "t",
        "--results",
        s.path("results").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let o = s.cmd(&[
        "runs",
        "nope",
        "--results",
        s.path("results").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no runs of experiment `nope`") && stderr(&o).contains(": t"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_run_folder_records_its_provenance() {
    let (s, m) = small_sandbox();
    let out = s.path("results/p");
    let o = s.cmd_env(
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--set",
            "classifier.epochs=2",
        ],
        &[("SYNTHCTI_SPLIT__SEED", "9")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    let commit = p["git_commit"].as_str().unwrap();
    assert!(!commit.is_empty(), "{p}");
    let args: Vec<&str> = p["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        &args[1..],
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--set",
            "classifier.epochs=2"
        ]
    );
    assert_eq!(
        p["overrides"],
        serde_json::json!([
            "environment variable SYNTHCTI_SPLIT__SEED=9",
            "--set classifier.epochs=2"
        ])
    );
    let data = s.path("data/tram/single_label.json");
    assert_eq!(p["data_files"][0]["sha256"], sha256(&data));
    assert_eq!(
        p["data_files"][0]["bytes"],
        std::fs::metadata(&data).unwrap().len()
    );
    assert_eq!(
        p["data_files"].as_array().unwrap().len(),
        1,
        "attack = none reads no bundle"
    );
    let started = chrono::DateTime::parse_from_rfc3339(p["started"].as_str().unwrap()).unwrap();
    let ended = chrono::DateTime::parse_from_rfc3339(p["ended"].as_str().unwrap()).unwrap();
    assert!(started <= ended);
    assert_eq!(
        p["cores"].as_u64().unwrap() as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    assert!(
        !out.join(".running").exists(),
        "the run's lock file is removed at the end"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Failed and skipped cells, and `report`.

#[test]
fn failed_and_skipped_rows_keep_their_configuration_and_report_rebuilds_the_same_tables() {
    let (s, m) = small_sandbox();
    let grid = ["--set", "classifier.dim=[8,16,24]"];
    let plan = s.plan_json(&m, &grid);
    let victim = plan["cells"][0]["cell"].as_str().unwrap().to_string();
    let out = s.path("results/t/ff");
    let mut args = vec![
        "run",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--fail-fast",
        "-q",
    ];
    args.extend_from_slice(&grid);
    let o = s.cmd_env(&args, &[("FAILPOINT_PANIC_CELL", &victim)]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["cell"], victim);
    assert_eq!(rows[0]["status"], "failed");
    for (r, dim) in rows.iter().zip(["8", "16", "24"]) {
        assert_eq!(r["classifier"], "fasttext", "{r:?}");
        assert_eq!(r["seed"], "42", "{r:?}");
        assert_eq!(r["dim"], dim, "{r:?}");
        assert_eq!(r["buckets"], "65536", "{r:?}");
        assert_eq!(
            r["dataset"], "",
            "no cell finished, so no dataset label: {r:?}"
        );
    }
    for r in &rows[1..] {
        assert_eq!(r["status"], "skipped", "{r:?}");
        assert_eq!(
            r["error"],
            "not run: an earlier cell failed and --fail-fast is set"
        );
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Skipped cells"), "{md}");
    let csv_before = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.md")).unwrap();
    let o = s.cmd(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        csv_before
    );
    assert_eq!(std::fs::read_to_string(out.join("summary.md")).unwrap(), md);
    // A run with a failed cell is listed as failed and `latest` does not point at it.
    let o = s.cmd(&[
        "runs",
        "--results",
        s.path("results").to_str().unwrap(),
        "--format",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["status"], "failed");
    assert_eq!(listed[0]["failed"], "1");
    assert_eq!(listed[0]["skipped"], "2");
    assert!(std::fs::symlink_metadata(s.path("results/t/latest")).is_err());
}

// ---------------------------------------------------------------------------------------------
// 6. The cache.

#[test]
fn cache_ls_lists_entries_and_gc_removes_what_no_run_references() {
    let (s, m) = small_sandbox();
    let out = s.path("results/t/a");
    s.run_ok(&m, &out, &["-q"]);
    let cache = s.path("cache");
    let ls = |s: &Sandbox| {
        let o = s.cmd(&[
            "cache",
            "ls",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--format",
            "csv",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        csv::Reader::from_reader(o.stdout.as_slice())
            .records()
            .map(|r| r.unwrap()[0].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ls(&s), vec!["evaluate", "load", "split", "train"]);
    let locks: Vec<_> = std::fs::read_dir(cache.join("locks")).unwrap().collect();
    assert!(locks.is_empty(), "a run leaves no lock files: {locks:?}");
    let results = s.path("results");
    let gc = |extra: &[&str]| {
        let mut args = vec![
            "cache",
            "gc",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = s.cmd(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert!(
        gc(&[]).starts_with("removed 0 entries"),
        "the run references every entry"
    );
    std::fs::remove_dir_all(&out).unwrap();
    let dry = gc(&["--dry-run"]);
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would remove "))
            .count(),
        5,
        "{dry}"
    );
    assert_eq!(ls(&s).len(), 4, "a dry run removes nothing");
    gc(&[]);
    assert!(ls(&s).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 7. Predictions join back to the source.

#[test]
fn predictions_carry_the_source_row_and_group() {
    let (s, m) = small_sandbox();
    let out = s.path("results/j");
    s.run_ok(&m, &out, &["-q"]);
    let source: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(s.path("data/tram/single_label.json")).unwrap())
            .unwrap();
    let cells: Vec<_> = std::fs::read_dir(out.join("cells"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cells.len(), 1);
    let preds = std::fs::read_to_string(cells[0].path().join("predictions.jsonl")).unwrap();
    let mut n = 0;
    for line in preds.lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let row = p["row"].as_u64().unwrap_or_else(|| panic!("{p}")) as usize;
        assert!(row >= 1, "{p}");
        let src = &source[row - 1];
        assert_eq!(p["text"], src["text"].as_str().unwrap().trim(), "{p}");
        assert_eq!(p["gold"], src["label"], "{p}");
        assert_eq!(p["group"], src["doc_title"], "{p}");
        n += 1;
    }
    assert_eq!(
        n,
        read_csv_rows(&out.join("summary.csv"))[0]["test_size"]
            .parse::<usize>()
            .unwrap()
    );
}

//! End-to-end: the everyday surface as researchers use it (issue 15). Data that adds up (every
//! row read is kept or dropped for a counted reason, in the log and in `load.json`, also from
//! the cache), paths that resolve against the manifest's folder from any current folder, an
//! `--out` folder another run is writing refused before any work, and the own-data example.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const SMALL: &str = "[split]\nseed = 7\ntest_fraction = 0.25\n\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n";

/// A user's JSONL file with a UTF-8 byte-order mark: 12 real TRAM sentences of each of four
/// classes, then one row of each kind of drop.
fn messy_jsonl() -> Vec<u8> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(&small_tram_rows(12)).unwrap();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({"text": r["text"], "label": r["label"]}).to_string())
        .collect();
    let first = rows[0]["text"].as_str().unwrap();
    for extra in [
        serde_json::json!({"text": "  \t ", "label": "T1105"}),
        serde_json::json!({"text": "a sentence with a null label", "label": null}),
        serde_json::json!({"text": "a sentence without the label field"}),
        serde_json::json!({"text": "a sentence with two labels", "label": ["T1105", "T1027"]}),
        serde_json::json!({"text": first, "label": rows[0]["label"]}),
        serde_json::json!({"text": "the same words, two labels", "label": "T1105"}),
        serde_json::json!({"text": "the same words, two labels", "label": "T1027"}),
        serde_json::json!({"text": "a class of one row", "label": "T1036"}),
    ] {
        lines.push(extra.to_string());
    }
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(lines.join("\n").as_bytes());
    body.push(b'\n');
    body
}

fn load_line(run: &Path) -> String {
    run_log(run)
        .lines()
        .find(|l| l.starts_with("load: ") && l.contains("rows read"))
        .unwrap_or_else(|| panic!("no load line in {}", run_log(run)))
        .to_string()
}

#[test]
fn every_row_is_accounted_for_in_the_log_and_load_json_also_from_the_cache() {
    let s = Sandbox::new();
    let p = s.path("data/mine.jsonl");
    std::fs::write(&p, messy_jsonl()).unwrap();
    let m = s.manifest(
        "kind = \"jsonl\"\nfile = \"data/mine.jsonl\"\nattack = \"none\"",
        SMALL,
    );
    let want = "load: 56 rows read = 48 kept in 4 classes + 1 with an empty text \
                + 2 without a label (1 of them lack the label field) (data.negatives) \
                + 1 with several labels (data.multi_label) + 2 with conflicting labels (data.conflicts) \
                + 1 duplicates (data.duplicates) + 1 in 1 rare classes (data.min_examples)";
    let mut accounts = Vec::new();
    for (run, cached) in [("first", ""), ("second", " (from the cache)")] {
        let out = s.path(&format!("results/{run}"));
        s.run_ok(&m, &out, &["-q"]);
        assert_eq!(load_line(&out), format!("{want}{cached}"));
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("load.json")).unwrap()).unwrap();
        let a = &j["account"];
        let dropped: u64 = a["dropped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(a["rows_read"], 56);
        assert_eq!(a["kept"], 48);
        assert_eq!(a["rows_read"].as_u64().unwrap(), 48 + dropped);
        accounts.push(a.clone());
    }
    assert_eq!(accounts[0], accounts[1], "the cached load tells the same");
}

/// `proj/exp/m.toml` over `proj/own/mine.jsonl`, written as `../own/mine.jsonl`, with the data
/// folder `../own` too.
fn project() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("proj/own/mine.jsonl", "");
    std::fs::write(s.path("proj/own/mine.jsonl"), messy_jsonl()).unwrap();
    let m = s.write(
        "proj/exp/m.toml",
        &format!(
            "[experiment]\nname = \"t\"\noutput_dir = \"{}\"\n\n[data]\nkind = \"jsonl\"\nfile = \"../own/mine.jsonl\"\ndir = \"../own\"\n{SMALL}",
            s.path("results").display()
        ),
    );
    (s, m)
}

fn plan_in(s: &Sandbox, cwd: &Path, manifest: &str, extra: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.arg("plan")
        .arg(manifest)
        .arg("--json")
        .args(extra)
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .current_dir(cwd);
    c.output().unwrap()
}

fn keys(o: &std::process::Output) -> Vec<String> {
    assert!(o.status.success(), "{}", stderr(o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    p["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["stages"].as_array().unwrap().clone())
        .map(|st| st["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn relative_paths_resolve_against_the_manifest_folder_from_any_folder() {
    let (s, m) = project();
    let from_root = keys(&plan_in(&s, s.dir.path(), "proj/exp/m.toml", &[]));
    let from_exp = keys(&plan_in(&s, &s.path("proj/exp"), "m.toml", &[]));
    let from_slash = keys(&plan_in(&s, Path::new("/"), m.to_str().unwrap(), &[]));
    assert_eq!(
        from_root, from_exp,
        "the same keys, however the file is reached"
    );
    assert_eq!(from_root, from_slash);
    // `--set` paths are relative to the current folder.
    let set = ["--set", "data.file=own/mine.jsonl"];
    assert_eq!(
        keys(&plan_in(&s, &s.path("proj"), "exp/m.toml", &set)),
        from_root
    );
    let o = plan_in(&s, s.dir.path(), "proj/exp/m.toml", &set);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("against the current folder"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_missing_file_of_ones_own_is_not_told_to_pull_the_publishers_data() {
    let s = Sandbox::new();
    std::fs::write(s.path("data/mine.jsonl"), messy_jsonl()).unwrap();
    // Written as the data folder's file: the message finds it there and says how to write it.
    let m = s.manifest(
        "kind = \"jsonl\"\nfile = \"mine.jsonl\"\nattack = \"none\"",
        SMALL,
    );
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(!e.contains("data pull"), "{e}");
    assert!(e.contains("resolves against the manifest's folder"), "{e}");
    assert!(
        e.contains(&format!(
            "there is a file at {}",
            s.path("data/mine.jsonl").display()
        )),
        "{e}"
    );
    s.assert_nothing_written();
}

/// A grid long enough (six seeds) that a second run starts while the first is writing.
fn slow_sandbox() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest("kind = \"tram-single\"\nattack = \"none\"", SMALL);
    (s, m)
}

#[test]
fn an_out_folder_another_run_is_writing_is_refused_before_any_work() {
    let (s, m) = slow_sandbox();
    let out = s.path("results/shared");
    let first = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--jobs",
            "1",
            "--set",
            "experiment.seeds=[1,2,3,4,5,6]",
        ])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = out.join(".synthcti-run.lock");
    let t0 = std::time::Instant::now();
    while !lock.is_file() {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the first run never claimed {}",
            out.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Refused before any work: while the first holds the lock, or (when the first already
    // wrote its first file by the time this one looks) for the folder's content.
    let second = s.cmd(&["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let e = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&format!(
            "another synthcti run is writing into this folder (pid {},",
            first.id()
        )) || e.contains("already exists and is not empty"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "no work, one paragraph: {e}");
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_csv_rows(&out.join("summary.csv")).len(), 6);
    assert!(!lock.exists(), "no lock file left behind");
}

#[test]
fn a_lock_held_on_the_out_folder_refuses_the_run_and_names_the_holder() {
    let (s, m) = slow_sandbox();
    let out = s.path("results/held");
    std::fs::create_dir_all(&out).unwrap();
    let f = std::fs::File::create(out.join(".synthcti-run.lock")).unwrap();
    std::fs::write(
        out.join(".synthcti-run.lock"),
        "pid 4242, started 2026-01-01T00:00:00Z",
    )
    .unwrap();
    f.lock().unwrap();
    let o = s.cmd(&["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another synthcti run is writing into this folder (pid 4242, started 2026-01-01T00:00:00Z)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        s.files_under("results"),
        vec![out.join(".synthcti-run.lock")]
    );
    assert!(
        s.files_under("cache")
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock"))
    );
}

/// The shipped own-data example runs from the repository root and from any other folder, and
/// its load line accounts for each of its 36 rows.
#[test]
fn the_own_data_example_runs_from_anywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = Sandbox::new();
    for (name, cwd) in [("root", root.to_path_buf()), ("elsewhere", s.path("data"))] {
        let out = s.path(&format!("results/{name}"));
        let o = bin()
            .args([
                "run",
                root.join("experiments/own-data.toml").to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "-q",
            ])
            .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
            .env("SYNTHCTI_DATA_DIR", shared_data())
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            load_line(&out).starts_with(
                "load: 36 rows read = 30 kept in 3 classes + 1 with an empty text \
                 + 3 without a label (1 of them lack the label field) (data.negatives) \
                 + 2 with several labels (data.multi_label); labels: 5 normalized to ATT&CK spelling"
            ),
            "{}",
            load_line(&out)
        );
        assert_eq!(read_csv_rows(&out.join("summary.csv")).len(), 1);
    }
    // Its split has no validation sentences: exporting the cell is refused, not a model whose
    // threshold of 0 gives every sentence every technique.
    let out = s.path("results/root");
    let cell = read_csv_rows(&out.join("summary.csv"))[0]["cell"].clone();
    let o = bin()
        .args([
            "export",
            out.to_str().unwrap(),
            &cell,
            "--to",
            s.path("model").to_str().unwrap(),
        ])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no validation sentences")
            && stderr(&o).contains("split.validation_fraction"),
        "{}",
        stderr(&o)
    );
    assert!(
        !s.path("model").exists(),
        "refused before anything is written"
    );
}

/// The README's reference block, copied whole, is a valid manifest whose values are the
/// defaults: one real-data fastText cell, no synthetic data, no pretrained model.
#[test]
fn the_readme_reference_block_copied_whole_is_the_default_experiment() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = &readme[readme.find("### Reference").expect("a Reference section")..];
    let start = after.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &after[start..start + after[start..].find("```").unwrap()];
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.write(
        "m.toml",
        &block.replace(
            "[data]\n",
            &format!("[data]\ndir = \"{}\"\n", s.path("data").display()),
        ),
    );
    let plan = s.plan_json(&m, &[]);
    let cells = plan["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(cells[0]["classifier"], "fasttext");
    assert_eq!(cells[0]["augment"], "none");
    // Its values are the defaults: the same cell as a manifest that says nothing.
    let bare = s.write(
        "bare.toml",
        &format!(
            "[experiment]\nname = \"tram\"\n[data]\ndir = \"{}\"\n",
            s.path("data").display()
        ),
    );
    assert_eq!(s.plan_json(&bare, &[])["cells"], plan["cells"]);
}

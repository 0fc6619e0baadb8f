//! End-to-end: labels as ATT&CK knows them. One technique written several ways is one class,
//! a revoked ID becomes its successor, several IDs in one cell never become a class, and the
//! load line of `run.log` says what was changed. The inputs are the `label-spellings` case from
//! the field (`tests/fixtures/label-spellings/`).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/label-spellings"
);

/// The case's own manifest settings: stratified 75/25, seed 42, a small fastText.
const CASE: &str = "[split]\nmethod = \"stratified\"\ntest_fraction = 0.25\nvalidation_fraction = 0.1\nseed = 42\n\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nminn = 0\nmaxn = 0\nbuckets = 65536\nepochs = 3\n";

/// A sandbox with the fixture `file` in its data folder and a manifest over it that reads the
/// shared ATT&CK bundle; `data_extra` goes into `[data]`.
fn case_sandbox(kind: &str, file: &str, data_extra: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    let body = std::fs::read_to_string(Path::new(FIXTURES).join(file)).unwrap();
    s.write(&format!("data/{file}"), &body);
    let m = s.manifest(
        &format!(
            "kind = \"{kind}\"\nfile = \"data/{file}\"\nlabel = \"label\"\nattack = \"{}\"\n{data_extra}",
            attack_bundle().display()
        ),
        CASE,
    );
    (s, m)
}

/// Class → examples over the run's split files (train, validation and test together).
fn split_classes(run: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for part in ["train", "validation", "test"] {
        let body =
            std::fs::read_to_string(run.join("split").join(format!("{part}.jsonl"))).unwrap();
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *counts
                .entry(v["label"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// The classes `per_class.csv` of the run's only cell reports.
fn per_class_classes(run: &Path) -> Vec<String> {
    let cells: Vec<PathBuf> = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cells.len(), 1, "{cells:?}");
    let mut classes: Vec<String> = read_csv_rows(&cells[0].join("per_class.csv"))
        .into_iter()
        .map(|r| r["class"].clone())
        .collect();
    classes.sort();
    classes
}

/// The line of `run.log` that starts with `load: N rows read`.
fn load_line(run: &Path) -> String {
    run_log(run)
        .lines()
        .find(|l| l.starts_with("load: ") && l.contains("rows read"))
        .unwrap_or_else(|| panic!("no load line in {}", run_log(run)))
        .to_string()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn jsonl_spellings_of_one_technique_are_one_class() {
    let (s, m) = case_sandbox("jsonl", "data.jsonl", "");
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    // "T1059.001" ×6, "t1059.001" ×5, " T1059.001 " ×3 and ["T1059.001"] ×2; T1105 ×10; the
    // revoked T1574.002 ×5 and t1574.002 ×5, all mapped to T1574.001.
    assert_eq!(
        split_classes(&out),
        counts(&[("T1059.001", 16), ("T1105", 10), ("T1574.001", 10)])
    );
    assert_eq!(per_class_classes(&out), ["T1059.001", "T1105", "T1574.001"]);
    assert_eq!(
        load_line(&out),
        "load: 36 rows read = 36 kept in 3 classes; labels: 13 normalized to ATT&CK spelling \
         (\" T1059.001 \" → T1059.001: 3, \"t1059.001\" → T1059.001: 5, \"t1574.002\" → T1574.002: 5), \
         10 revoked IDs mapped (T1574.002 → T1574.001: 10)"
    );
}

#[test]
fn csv_cells_with_several_ids_are_dropped_and_counted_never_classes() {
    let (s, m) = case_sandbox("csv", "data.csv", "");
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    // 28 rows: T1105 ×10, T1027 ×10, "T1059.001;T1105" ×4 and "T1105, T1027" ×4.
    let classes = split_classes(&out);
    assert!(!classes.contains_key("T1059.001;T1105"), "{classes:?}");
    assert!(!classes.contains_key("T1105, T1027"), "{classes:?}");
    assert_eq!(classes, counts(&[("T1027", 10), ("T1105", 10)]));
    assert_eq!(per_class_classes(&out), ["T1027", "T1105"]);
    assert_eq!(
        load_line(&out),
        "load: 28 rows read = 20 kept in 2 classes + 8 with several labels (data.multi_label)"
    );
}

#[test]
fn csv_cells_with_several_ids_keep_their_first_under_multi_label_first() {
    let (s, m) = case_sandbox("csv", "data.csv", "multi_label = \"first\"");
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    // "T1059.001;T1105" ×4 → T1059.001; "T1105, T1027" ×4 → T1105.
    assert_eq!(
        split_classes(&out),
        counts(&[("T1027", 10), ("T1059.001", 4), ("T1105", 14)])
    );
    assert!(
        load_line(&out).ends_with(
            "labels: 8 rows with several technique IDs kept with their first (data.multi_label = \"first\")"
        ),
        "{}",
        load_line(&out)
    );
}

#[test]
fn excluded_techniques_are_dropped_and_counted() {
    // Excluding the revoked spelling excludes the technique it maps to.
    let (s, m) = case_sandbox("jsonl", "data.jsonl", "exclude = [\"t1574.002\"]");
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    assert_eq!(
        split_classes(&out),
        counts(&[("T1059.001", 16), ("T1105", 10)])
    );
    assert!(
        load_line(&out).ends_with("10 rows dropped by data.exclude (T1574.001: 10)"),
        "{}",
        load_line(&out)
    );
}

/// The JSONL case with `extra` rows appended.
fn case_with_rows(data_extra: &str, rows: &[(&str, &str)]) -> (Sandbox, PathBuf) {
    let (s, m) = case_sandbox("jsonl", "data.jsonl", data_extra);
    let mut body = std::fs::read_to_string(Path::new(FIXTURES).join("data.jsonl")).unwrap();
    for (i, (label, text)) in rows.iter().enumerate() {
        body.push_str(&format!(
            "{}\n",
            serde_json::json!({"text": format!("{text} (report {i})"), "label": label})
        ));
    }
    s.write("data/data.jsonl", &body);
    (s, m)
}

#[test]
fn deprecated_techniques_are_dropped_by_default_and_named() {
    // T1064 (Scripting) is deprecated in ATT&CK v18.1.
    let rows = [("T1064", "the loader ran a VBScript"); 4];
    let (s, m) = case_with_rows("", &rows);
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    assert!(!split_classes(&out).contains_key("T1064"));
    assert!(
        run_log(&out).contains(
            "load: 4 rows of deprecated or revoked techniques dropped (data.deprecated = \"drop\"): T1064 (deprecated in ATT&CK, 4 rows)"
        ),
        "{}",
        run_log(&out)
    );

    let (s, m) = case_with_rows("deprecated = \"keep\"", &rows);
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    assert_eq!(split_classes(&out)["T1064"], 4);
    assert!(
        run_log(&out)
            .contains("warning: 4 rows of deprecated or revoked techniques kept as classes"),
        "{}",
        run_log(&out)
    );
}

#[test]
fn ids_absent_from_the_catalog_are_kept_with_a_warning_or_dropped() {
    // T1521 is a Mobile ID (CTI-to-MITRE's dataset_tram.csv has it by a name clash).
    let rows = [("t1521", "the app encrypted its traffic"); 3];
    let (s, m) = case_with_rows("", &rows);
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    assert_eq!(split_classes(&out)["T1521"], 3);
    assert!(
        run_log(&out).contains(
            "load: warning: 3 rows with technique IDs the ATT&CK catalog does not hold kept as classes (data.unknown_techniques = \"keep\"; \"drop\" drops them, data.exclude drops some): T1521 (not in the enterprise catalog (another domain?), 3 rows)"
        ),
        "{}",
        run_log(&out)
    );

    let (s, m) = case_with_rows("unknown_techniques = \"drop\"", &rows);
    let out = s.path("results/run");
    s.run_ok(&m, &out, &[]);
    assert!(!split_classes(&out).contains_key("T1521"));
    assert!(
        run_log(&out).contains(
            "load: 3 rows with technique IDs the ATT&CK catalog does not hold dropped (data.unknown_techniques = \"drop\"): T1521"
        ),
        "{}",
        run_log(&out)
    );
}

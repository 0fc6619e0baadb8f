//! End-to-end: `[[evaluate]]` external test sets. A fastText cell trained on four TRAM classes
//! is scored on CTI-to-MITRE's `dataset_tram.csv` (1,482 TRAM-derived sentences, ATT&CK v10
//! parent techniques): rows whose technique the model lacks are counted, skipped or scored as
//! misses, and the figures land in `metrics.json`, `summary.csv`, `summary.md` and
//! `per_class_external.csv`.

mod common;
use common::*;

use serde_json::Value;

fn manifest(s: &Sandbox, policy: &str) -> std::path::PathBuf {
    s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 8\nbatch_size = 16\nlr = 0.1\n\n[[evaluate]]\nname = \"cti_tram\"\nfile = \"{}\"\nkind = \"cti-to-mitre\"\nunknown_labels = \"{policy}\"\n",
            shared_data().join("cti-to-mitre/dataset_tram.csv").display()
        ),
    )
}

fn external(run: &std::path::Path) -> Value {
    let cell = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let m: Value =
        serde_json::from_slice(&std::fs::read(cell.join("metrics.json")).unwrap()).unwrap();
    m["external"][0].clone()
}

#[test]
fn every_cell_is_scored_on_each_external_set_with_unknown_labels_counted() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let skip = s.path("results/skip");
    s.run_ok(&manifest(&s, "skip"), &skip, &["-q"]);
    let x = external(&skip);
    let rows = x["rows"].as_u64().unwrap();
    let unknown = x["unknown_rows"].as_u64().unwrap();
    assert_eq!(rows, 1482);
    // Only T1027 (104 rows) and T1105 (71) of the model's four classes occur (the file has
    // parent techniques: T1059, T1071).
    assert_eq!(unknown, 1482 - 104 - 71);
    assert_eq!(x["scored"].as_u64().unwrap(), 104 + 71);
    assert_eq!(x["unknown"]["T1059"], 97);
    assert_eq!(
        x["metrics"]["macro_classes"],
        serde_json::json!(["T1027", "T1105"])
    );
    let csv = std::fs::read_to_string(skip.join("summary.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "cti_tram_macro_f1",
        "cti_tram_micro_f1",
        "cti_tram_unknown_rows",
    ] {
        assert!(header.split(',').any(|c| c == col), "{header}");
    }
    let md = std::fs::read_to_string(skip.join("summary.md")).unwrap();
    assert!(md.contains("## External test sets"), "{md}");
    assert!(md.contains("cti_tram: T1059 × 97"), "{md}");
    let per_class = std::fs::read_to_string(skip.join("per_class_external.csv")).unwrap();
    assert!(
        per_class.lines().any(|l| l.contains(",cti_tram,T1027,")),
        "{per_class}"
    );

    // `error`: the unknown rows stay and count as misses; the trained model is reused (the
    // train stage is cached), the external stage is not (the policy is in its key).
    let error = s.path("results/error");
    s.run_ok(&manifest(&s, "error"), &error, &["-q"]);
    let y = external(&error);
    assert_eq!(y["scored"].as_u64().unwrap(), 1482);
    assert_ne!(x["key"], y["key"]);
    assert!(
        y["metrics"]["micro_f1"].as_f64().unwrap() < x["metrics"]["micro_f1"].as_f64().unwrap()
    );
    assert_eq!(
        y["metrics"]["macro_classes"].as_array().unwrap().len(),
        2 + x["unknown"].as_object().unwrap().len()
    );
}

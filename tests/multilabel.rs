//! End-to-end: TRAM's multi-label task with negatives (`data.multi_label = "keep"`). The first
//! 1,500 sentences of `tram/multi_label_reconstructed.jsonl` (8 reports, 261 with a technique,
//! 40 with several), a grouped split, a small fastText: `metrics.json` carries the multi-label
//! figures at the validation threshold, `predictions.jsonl` sets of techniques, the summary its
//! columns, and an exported model gives a sentence 0..n techniques.

mod common;
use common::*;

use serde_json::Value;

#[test]
fn a_multi_label_run_reports_micro_samples_and_per_document_f1_and_predicts_sets() {
    let s = Sandbox::new();
    let head: String =
        std::fs::read_to_string(shared_data().join("tram/multi_label_reconstructed.jsonl"))
            .unwrap()
            .lines()
            .take(1500)
            .map(|l| format!("{l}\n"))
            .collect();
    s.write("data/tram/multi_label_reconstructed.jsonl", &head);
    let m = s.manifest(
        &format!(
            "kind = \"tram-multi\"\nmulti_label = \"keep\"\nnegatives = \"keep\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        "[split]\nmethod = \"grouped\"\ntest_fraction = 0.3\nvalidation_fraction = 0.2\nseed = 1\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 5\nbatch_size = 32\n",
    );
    let run = s.path("results/r");
    s.run_ok(&m, &run, &["-q"]);
    let cell = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r: Value =
        serde_json::from_slice(&std::fs::read(cell.join("metrics.json")).unwrap()).unwrap();
    let ml = &r["multi_label"];
    for k in [
        "micro_f1",
        "macro_f1",
        "samples_f1",
        "document_f1",
        "document_mean_f1",
    ] {
        let v = ml[k].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert_eq!(ml["micro_f1"], r["metrics"]["micro_f1"]);
    let t = ml["validation"]["threshold"].as_f64().unwrap();
    assert_eq!(ml["test"]["threshold"].as_f64().unwrap(), t);
    assert!(ml["documents"].as_u64().unwrap() >= 1);
    // `none` is a class of the model, never a predicted or gold technique.
    assert!(
        !r["metrics"]["macro_classes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("none"))
    );
    let preds = std::fs::read_to_string(cell.join("predictions.jsonl")).unwrap();
    let mut negatives = 0;
    for l in preds.lines() {
        let p: Value = serde_json::from_str(l).unwrap();
        let gold = p["gold"].as_array().unwrap();
        negatives += usize::from(gold.is_empty());
        assert!(!p["pred"].as_array().unwrap().contains(&Value::from("none")));
        // Every predicted technique scored at or above the threshold.
        for t2 in p["pred"].as_array().unwrap() {
            let score = p["top"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x[0] == *t2)
                .map(|x| x[1].as_f64().unwrap());
            if let Some(sc) = score {
                assert!(sc + 1e-6 >= t, "{l}");
            }
        }
    }
    assert_eq!(negatives as u64, ml["negatives"].as_u64().unwrap());
    let csv = std::fs::read_to_string(run.join("summary.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with("threshold,samples_f1,document_f1,document_mean_f1,subset_accuracy")
    );
    let md = std::fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(
        md.contains("## Multi-label (test, at the validation threshold)"),
        "{md}"
    );

    // Export and predict: the exported threshold is the run's, a sentence gets a set.
    let model = s.path("model");
    let name = cell.file_name().unwrap().to_string_lossy().to_string();
    let o = s.cmd(&[
        "export",
        run.to_str().unwrap(),
        &name,
        "--to",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(model.join("synthcti-model.json")).unwrap()).unwrap();
    assert_eq!(meta["multi_label"], true);
    assert_eq!(meta["threshold"]["threshold"].as_f64().unwrap(), t);
    s.write("report.txt", "The actor used PowerShell to download a payload and ran it with cmd.exe. The weather was nice.");
    let o = s.cmd(&[
        "predict",
        model.to_str().unwrap(),
        s.path("report.txt").to_str().unwrap(),
        "--format",
        "json",
        "--top-k",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let sentences = out["documents"][0]["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 2);
    for sn in sentences {
        for tech in sn["techniques"].as_array().unwrap() {
            assert_ne!(tech, "none");
        }
    }
}

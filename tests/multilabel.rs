//! End-to-end: TRAM's multi-label task with negatives (`data.multi_label = "keep"`). The first
//! 1,500 sentences of `tram/multi_label_reconstructed.jsonl` (8 reports, 261 with a technique,
//! 40 with several), a grouped split, a small fastText: `metrics.json` carries the multi-label
//! figures at the validation threshold, `predictions.jsonl` sets of techniques, the summary its
//! columns, and an exported model gives a sentence 0..n techniques — with either head
//! (`data.multi_label_head`: a `none` class, or independent sigmoids).

mod common;
use common::*;

use serde_json::Value;

#[test]
fn a_multi_label_run_reports_micro_samples_and_per_document_f1_and_predicts_sets() {
    multi_label_run("none-class");
}

/// The sigmoid head: the same figures; the model's scores are independent sigmoids (a row's
/// scores need not sum to 1), `predict` reports them unchanged, and the train key differs from
/// the none-class head's.
#[test]
fn sigmoid_heads_train_with_binary_cross_entropy_and_report_the_same_figures() {
    let (none_key, _) = multi_label_run("none-class");
    let (sigmoid_key, preds) = multi_label_run("sigmoid");
    assert_ne!(none_key, sigmoid_key);
    // Some test row's scores (top 5 of the 20-odd outputs) sum above 1: not a softmax.
    assert!(
        preds.iter().any(|p| p["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[1].as_f64().unwrap())
            .sum::<f64>()
            > 1.0 + 1e-3),
        "every row's scores sum to at most 1"
    );
}

/// A sandbox with the first 1,500 sentences of the multi-label task, run (grouped split, seed 1)
/// with the given head and one `[[classifier]]` table's body; the sandbox and the run folder.
fn run_first_1500(head: &str, classifier: &str) -> (Sandbox, std::path::PathBuf) {
    let s = Sandbox::new();
    let rows: String =
        std::fs::read_to_string(shared_data().join("tram/multi_label_reconstructed.jsonl"))
            .unwrap()
            .lines()
            .take(1500)
            .map(|l| format!("{l}\n"))
            .collect();
    s.write("data/tram/multi_label_reconstructed.jsonl", &rows);
    let m = s.manifest(
        &format!(
            "kind = \"tram-multi\"\nmulti_label = \"keep\"\nnegatives = \"keep\"\nmulti_label_head = \"{head}\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nmethod = \"grouped\"\ntest_fraction = 0.3\nvalidation_fraction = 0.2\nseed = 1\n[[classifier]]\n{classifier}\n"
        ),
    );
    let run = s.path("results/r");
    s.run_ok(&m, &run, &["-q"]);
    (s, run)
}

/// Run the 1,500-sentence task with `head`; checks every figure and export/predict, returns the
/// cell's train key and its prediction lines.
fn multi_label_run(head: &str) -> (String, Vec<Value>) {
    let (s, run) = run_first_1500(
        head,
        "kind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 5\nbatch_size = 32",
    );
    let cell = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r: Value =
        serde_json::from_slice(&std::fs::read(cell.join("metrics.json")).unwrap()).unwrap();
    let ml = &r["multi_label"];
    let word = if head == "sigmoid" {
        "sigmoid score"
    } else {
        "softmax score"
    };
    assert!(
        ml["rule"].as_str().unwrap().contains(word),
        "{}",
        ml["rule"]
    );
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
    let lines: Vec<Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    // `predict` scores a test sentence as the run did: the same top technique and score (a
    // sigmoid model's scores are not renormalized into a distribution).
    let probe = lines
        .iter()
        .find(|p| {
            let t = p["text"].as_str().unwrap();
            t.len() > 40 && !t.contains(['.', '!', '?', '\n', '"'])
        })
        .expect("a test sentence without inner punctuation");
    s.write("probe.txt", probe["text"].as_str().unwrap());
    let o = s.cmd(&[
        "predict",
        model.to_str().unwrap(),
        s.path("probe.txt").to_str().unwrap(),
        "--format",
        "json",
        "--top-k",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = &out["documents"][0]["sentences"][0]["top"][0];
    assert_eq!(top["technique"], probe["top"][0][0], "{out}");
    let (a, b) = (
        top["score"].as_f64().unwrap(),
        probe["top"][0][1].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "predict {a} vs the run {b}");
    (r["train_key"].as_str().unwrap().to_string(), lines)
}

/// The linear model fits on train + validation on a single-label task; on a multi-label task it
/// leaves validation out, so the threshold is chosen on sentences it has not seen: the train
/// stage says `fit_on = "train"` in its key (absent on single-label tasks, whose keys are unchanged).
#[test]
fn a_linear_model_on_a_multi_label_task_holds_out_validation_for_the_threshold() {
    let (s, run) = run_first_1500("none-class", "kind = \"linear\"");
    let entries: Vec<Value> = std::fs::read_dir(s.path("cache/entries/train"))
        .unwrap()
        .map(|e| {
            serde_json::from_slice(&std::fs::read(e.unwrap().path().join("entry.json")).unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["params"]["fit_on"], "train", "{}", entries[0]);
    let cell = std::fs::read_dir(run.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r: Value =
        serde_json::from_slice(&std::fs::read(cell.join("metrics.json")).unwrap()).unwrap();
    let t = r["multi_label"]["validation"]["threshold"]
        .as_f64()
        .unwrap();
    assert!(t > 0.0 && t < 1.0, "{t}");
}

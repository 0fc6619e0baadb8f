//! End-to-end: `synthcti export` turns a trained cell into a self-contained model folder, and
//! `synthcti predict` reads reports with it (JSON, JSONL, Markdown, CSV, Navigator layers).
//! One small fastText run on real TRAM rows is shared by the tests of this file.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// A short report in the style of a vendor blog post (written for these tests).
const REPORT: &str = "# Operation Example\n\n\
The actor delivered a macro document that ran cmd.exe /c to launch a batch script, e.g. \
install.bat, from %TEMP%.\n\
It then downloaded a second stage from hxxp://185.141.63.120/update.bin with certutil.exe \
-urlcache.\n\
The payload was packed and its strings were XOR-encoded with the key 0x5A.\n\n\
- The implant talks to its C2 over HTTPS POST requests to cdn-update[.]com.\n\
- Version 2.4.1 added a new command handler.\n\n\
The team thanks its partners for their help.\n";

struct Trained {
    s: Sandbox,
    run: PathBuf,
    cell: String,
    model: PathBuf,
}

/// A fastText cell trained on four TRAM classes (40 rows each), exported once.
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let s = Sandbox::new();
        s.write("data/tram/single_label.json", &small_tram_rows(40));
        let m = s.manifest(
            &format!(
                "kind = \"tram-single\"\nattack = \"{}\"",
                attack_bundle().display()
            ),
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 8\nbatch_size = 16\nlr = 0.1\n",
        );
        let run = s.path("results/r");
        s.run_ok(&m, &run, &["-q"]);
        let cell = std::fs::read_dir(run.join("cells"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .to_string();
        let model = s.path("model");
        let o = s.cmd(&[
            "export",
            run.to_str().unwrap(),
            &cell,
            "--to",
            model.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("exported"), "{}", stdout(&o));
        Trained {
            s,
            run,
            cell,
            model,
        }
    })
}

fn meta(model: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(model.join("synthcti-model.json")).unwrap()).unwrap()
}

#[test]
fn export_writes_a_self_contained_folder_with_names_threshold_and_metrics() {
    let t = trained();
    for f in [
        "synthcti-model.json",
        "README.md",
        "metrics.json",
        "manifest.resolved.toml",
        "model/model.bpk",
        "model/model.json",
    ] {
        assert!(t.model.join(f).is_file(), "{f} missing");
    }
    let m = meta(&t.model);
    let ids: Vec<&str> = m["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["T1027", "T1059.003", "T1071.001", "T1105"]);
    assert_eq!(m["classes"][3]["name"], "Ingress Tool Transfer");
    assert_eq!(m["classes"][1]["name"], "Windows Command Shell");
    assert_eq!(
        m["classes"][3]["tactics"],
        serde_json::json!(["command-and-control"])
    );
    assert_eq!(m["classifier"], "fasttext");
    // The run's own test figures, unchanged.
    let cell: Value = serde_json::from_slice(
        &std::fs::read(t.run.join("cells").join(&t.cell).join("metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["test"]["macro_f1"], cell["metrics"]["macro_f1"]);
    assert_eq!(m["train_key"], cell["train_key"]);
    let manifest = std::fs::read(t.run.join("manifest.resolved.toml")).unwrap();
    assert_eq!(
        m["manifest_digest"],
        format!("blake3:{}", blake3::hash(&manifest).to_hex())
    );
    // Calibration and the threshold come from validation; test is only measured.
    let temp = m["temperature"].as_f64().unwrap();
    assert!((0.05..=20.0).contains(&temp), "{temp}");
    let (before, after) = (
        m["validation_nll"][0].as_f64().unwrap(),
        m["validation_nll"][1].as_f64().unwrap(),
    );
    assert!(
        after <= before + 1e-9,
        "scaling cannot raise the NLL it minimises"
    );
    let thr = m["threshold"]["threshold"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&thr));
    assert_eq!(m["test_at_threshold"]["threshold"].as_f64().unwrap(), thr);
    let tp = m["test_at_threshold"]["precision"].as_f64().unwrap();
    let tr = m["test_at_threshold"]["recall"].as_f64().unwrap();
    assert!(tr <= m["test"]["accuracy"].as_f64().unwrap() + 1e-9);
    assert!(tp >= tr - 1e-9, "precision over accepted ≥ recall over all");
    let card = std::fs::read_to_string(t.model.join("README.md")).unwrap();
    for s in [
        "## Data",
        "## Metrics",
        "## Intended use",
        "## Limits",
        &format!("{tp:.4}"),
    ] {
        assert!(card.contains(s), "model card lacks {s}:\n{card}");
    }
}

/// The exported folder predicts with the cache gone, and its top-1 on the test sentences is
/// the run's own prediction (calibration does not change the order of the classes).
#[test]
fn predict_agrees_with_the_run_on_its_test_sentences_without_the_cache() {
    let t = trained();
    let copy = t.s.path("copied-model");
    copy_dir(&t.model, &copy);
    let s = Sandbox::new(); // an empty cache
    let rows: Vec<Value> =
        std::fs::read_to_string(t.run.join("cells").join(&t.cell).join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &Value| {
                synthcti::segment::sentences(r["text"].as_str().unwrap()).len() == 1
            })
            .collect();
    assert!(rows.len() > 20, "{}", rows.len());
    let jsonl: String = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({"id": i.to_string(), "text": r["text"]}).to_string() + "\n"
        })
        .collect();
    let input = s.write("test.jsonl", &jsonl);
    let o = s.cmd(&[
        "predict",
        copy.to_str().unwrap(),
        input.to_str().unwrap(),
        "--format",
        "jsonl",
        "--top-k",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), rows.len());
    for (d, r) in docs.iter().zip(&rows) {
        let sent = &d["sentences"][0];
        assert_eq!(sent["top"].as_array().unwrap().len(), 2);
        assert_eq!(sent["top"][0]["technique"], r["pred"], "{}", r["text"]);
        assert!(sent["top"][0]["score"].as_f64() >= sent["top"][1]["score"].as_f64());
    }
}

#[test]
fn a_report_gets_sentences_techniques_above_threshold_and_evidence() {
    let t = trained();
    let report = t.s.write("report.md", REPORT);
    let o = t.s.cmd(&[
        "predict",
        t.model.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let thr = v["model"]["threshold"].as_f64().unwrap();
    assert_eq!(
        thr,
        meta(&t.model)["threshold"]["threshold"].as_f64().unwrap()
    );
    let doc = &v["documents"][0];
    let sents: Vec<&str> = doc["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        sents,
        [
            "Operation Example",
            "The actor delivered a macro document that ran cmd.exe /c to launch a batch script, e.g. install.bat, from %TEMP%.",
            "It then downloaded a second stage from hxxp://185.141.63.120/update.bin with certutil.exe -urlcache.",
            "The payload was packed and its strings were XOR-encoded with the key 0x5A.",
            "The implant talks to its C2 over HTTPS POST requests to cdn-update[.]com.",
            "Version 2.4.1 added a new command handler.",
            "The team thanks its partners for their help.",
        ]
    );
    for s in doc["sentences"].as_array().unwrap() {
        assert_eq!(s["top"].as_array().unwrap().len(), 3);
        for id in s["techniques"].as_array().unwrap() {
            let score = s["top"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["technique"] == *id)
                .unwrap()["score"]
                .as_f64()
                .unwrap();
            assert!(score >= thr);
        }
    }
    // Document level: each technique's best score is its first evidence's, evidence best first,
    // and every sentence that reached the threshold with it is counted.
    for dt in doc["techniques"].as_array().unwrap() {
        let ev = dt["evidence"].as_array().unwrap();
        assert_eq!(dt["score"], ev[0]["score"]);
        assert!(
            ev.windows(2)
                .all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64())
        );
        let n = doc["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["techniques"]
                    .as_array()
                    .unwrap()
                    .contains(&dt["technique"])
            })
            .count();
        assert_eq!(dt["sentences"].as_u64().unwrap() as usize, n);
    }
    // A threshold of 0 gives every sentence its top technique; above every score, none.
    let all = t.s.cmd(&[
        "predict",
        t.model.to_str().unwrap(),
        report.to_str().unwrap(),
        "--threshold",
        "0",
    ]);
    let all: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert!(
        all["documents"][0]["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["techniques"].as_array().unwrap().len() == 3)
    );
    let none = t.s.cmd(&[
        "predict",
        t.model.to_str().unwrap(),
        report.to_str().unwrap(),
        "--threshold",
        "1",
    ]);
    let none: Value = serde_json::from_slice(&none.stdout).unwrap();
    for s in none["documents"][0]["sentences"].as_array().unwrap() {
        for id in s["techniques"].as_array().unwrap() {
            let c = s["top"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["technique"] == *id)
                .unwrap();
            assert_eq!(c["score"].as_f64().unwrap(), 1.0);
        }
    }
}

#[test]
fn markdown_csv_and_html_outputs_carry_the_same_techniques() {
    let t = trained();
    let report = t.s.write("r.txt", REPORT);
    let html = t.s.write(
        "r.html",
        &format!(
            "<html><body><h1>Operation Example</h1>{}</body></html>",
            REPORT
                .lines()
                .skip(2)
                .filter(|l| !l.trim().is_empty() && !l.starts_with('-'))
                .map(|l| format!("<p>{l}</p>"))
                .collect::<String>()
        ),
    );
    let run = |fmt: &str, input: &Path| {
        let o = t.s.cmd(&[
            "predict",
            t.model.to_str().unwrap(),
            input.to_str().unwrap(),
            "--format",
            fmt,
            "--threshold",
            "0",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let json: Value = serde_json::from_str(&run("json", &report)).unwrap();
    let techs: Vec<String> = json["documents"][0]["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["technique"].as_str().unwrap().to_string())
        .collect();
    let md = run("md", &report);
    assert!(md.starts_with("# ATT&CK techniques"));
    for id in &techs {
        assert!(md.contains(&format!("| {id} |")), "{id} not in\n{md}");
    }
    let csv = run("csv", &report);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "document,technique,name,score,sentence_index,sentence_score,sentence"
    );
    let evidence: usize = json["documents"][0]["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["evidence"].as_array().unwrap().len())
        .sum();
    let mut rdr = ::csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(rdr.records().count(), evidence);
    // HTML: the same report without its bullet list reads into the same prose sentences.
    let h: Value = serde_json::from_str(&run("json", &html)).unwrap();
    let hs: Vec<&str> = h["documents"][0]["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(hs[0], "Operation Example");
    assert_eq!(hs.len(), 5, "{hs:?}");
    assert_eq!(
        hs[2],
        "It then downloaded a second stage from hxxp://185.141.63.120/update.bin with certutil.exe -urlcache."
    );
}

/// Is mitreattack-python (`pip install mitreattack-python`) importable? CI installs it; a
/// machine without it skips the independent check and says so.
fn mitreattack() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mitreattack.navlayers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED the mitreattack-python check: `pip install mitreattack-python`");
    }
    ok
}

/// Read a layer with mitreattack-python's Layer class; its (techniqueID, score) pairs.
fn read_with_mitreattack(layer: &Path) -> Vec<(String, Option<i64>)> {
    let script = "import sys, json\nfrom mitreattack.navlayers import Layer\nl = Layer()\nl.from_file(sys.argv[1])\nd = l.to_dict()\nassert d is not None, 'mitreattack rejected the layer'\nassert d['domain'] == 'enterprise-attack'\nprint(json.dumps([[t['techniqueID'], t.get('score')] for t in d['techniques']]))\n";
    let o = Command::new("python3")
        .args(["-c", script, layer.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mitreattack-python: {}{}",
        stderr(&o),
        stdout(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_navigator_layer_is_format_4_5_and_mitreattack_reads_it() {
    let t = trained();
    let report = t.s.write("n.md", REPORT);
    let layer = t.s.path("layer.json");
    let o = t.s.cmd(&[
        "predict",
        t.model.to_str().unwrap(),
        report.to_str().unwrap(),
        "--format",
        "navigator",
        "--threshold",
        "0",
        "--out",
        layer.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&std::fs::read(&layer).unwrap()).unwrap();
    assert_eq!(v["versions"]["layer"], "4.5");
    assert_eq!(v["domain"], "enterprise-attack");
    assert_eq!(v["gradient"]["maxValue"], 100);
    let scored: Vec<&Value> = v["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x.get("score").is_some())
        .collect();
    assert!(!scored.is_empty());
    for x in &scored {
        let s = x["score"].as_i64().unwrap();
        assert!((0..=100).contains(&s));
        assert!(!x["comment"].as_str().unwrap().is_empty());
        assert!(x.get("tactic").is_none());
    }
    if mitreattack() {
        let read = read_with_mitreattack(&layer);
        let ours: Vec<(String, Option<i64>)> = v["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["techniqueID"].as_str().unwrap().to_string(),
                    x["score"].as_i64(),
                )
            })
            .collect();
        assert_eq!(read, ours);
    }
}

/// A layer with sub-techniques: the parent is added, opened, and unscored.
#[test]
fn a_layer_with_sub_techniques_reads_back() {
    use synthcti::navigator::{LayerTechnique, layer};
    let v = layer(
        "sub",
        "sub-techniques",
        Some("18"),
        &[
            LayerTechnique {
                id: "T1059.001".into(),
                score: 0.91,
                comment: "PowerShell -enc".into(),
            },
            LayerTechnique {
                id: "T1071.001".into(),
                score: 0.5,
                comment: "HTTPS C2".into(),
            },
        ],
    );
    let s = Sandbox::new();
    let p = s.write("sub.json", &serde_json::to_string(&v).unwrap());
    let want = vec![
        ("T1059.001".to_string(), Some(91)),
        ("T1071.001".to_string(), Some(50)),
        ("T1059".to_string(), None),
        ("T1071".to_string(), None),
    ];
    let ours: Vec<(String, Option<i64>)> = v["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["techniqueID"].as_str().unwrap().to_string(),
                x["score"].as_i64(),
            )
        })
        .collect();
    assert_eq!(ours, want);
    if mitreattack() {
        assert_eq!(read_with_mitreattack(&p), want);
    }
}

// ----- bad input: each refused with its exit code and a message that says how to fix it.

#[test]
fn export_of_an_unknown_cell_lists_the_cells() {
    let t = trained();
    let o = t.s.cmd(&[
        "export",
        t.run.to_str().unwrap(),
        "no-such-cell",
        "--to",
        t.s.path("x1").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("no finished cell `no-such-cell`") && e.contains(&t.cell),
        "{e}"
    );
    assert!(!t.s.path("x1").exists());
}

#[test]
fn export_without_the_trained_model_in_the_cache_says_how_to_get_it() {
    let t = trained();
    let empty = Sandbox::new();
    let o = t.s.cmd(&[
        "export",
        t.run.to_str().unwrap(),
        &t.cell,
        "--to",
        t.s.path("x2").to_str().unwrap(),
        "--cache-dir",
        empty.path("cache").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(5));
    let e = stderr(&o);
    assert!(
        e.contains("is not in the cache") && e.contains("synthcti run"),
        "{e}"
    );
    assert!(!t.s.path("x2").exists());
}

#[test]
fn export_into_a_non_empty_folder_is_refused() {
    let t = trained();
    t.s.write("x3/keep.txt", "mine");
    let o = t.s.cmd(&[
        "export",
        t.run.to_str().unwrap(),
        &t.cell,
        "--to",
        t.s.path("x3").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(t.s.path("x3/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn predict_with_a_folder_that_is_not_a_model_is_refused() {
    let s = Sandbox::new();
    let r = s.write("r.txt", "Hello.");
    let o = s.cmd(&[
        "predict",
        s.path("data").to_str().unwrap(),
        r.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("synthcti export"), "{}", stderr(&o));
}

#[test]
fn predict_refuses_an_unsupported_input_before_loading() {
    let s = Sandbox::new();
    let r = s.write("r.pdf", "%PDF");
    let o = s.cmd(&[
        "predict",
        s.path("nowhere").to_str().unwrap(),
        r.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("unsupported input type `.pdf`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn predict_refuses_a_threshold_outside_0_1() {
    let t = trained();
    let r = t.s.write("t.txt", "Hello.");
    let o = t.s.cmd(&[
        "predict",
        t.model.to_str().unwrap(),
        r.to_str().unwrap(),
        "--threshold",
        "1.5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--threshold 1.5 is out of range"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn predict_names_the_jsonl_line_without_the_text_field() {
    let t = trained();
    let r =
        t.s.write("bad.jsonl", "{\"text\":\"fine.\"}\n{\"body\":\"x\"}\n");
    let o =
        t.s.cmd(&["predict", t.model.to_str().unwrap(), r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("bad.jsonl:2: no string field `text`"),
        "{}",
        stderr(&o)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

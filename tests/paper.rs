//! experiments/paper.toml: its cells validate offline, and the same manifest at a CI size runs end
//! to end with tiny random encoders served under the paper's Hugging Face ids.

mod common;
use common::hub_server::*;
use common::llm_server::{self, Reply};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The tiny stand-ins served for the paper's Hub models: (id in paper.toml, fixture folder, the
/// files its repository lists). Both are parity fixtures `scripts/encoder_fixtures.py` writes:
/// a tiny random ALBERT (factorized embeddings, shared layers) and a tiny random RoBERTa in
/// SecureBERT's own layout (vocab.json + merges.txt, pytorch_model.bin, no tokenizer.json).
const TINY: &[(&str, &str, &[&str])] = &[
    (
        "albert/albert-base-v2",
        "tests/fixtures/encoders/albert-tiny",
        MODEL_FILES,
    ),
    (
        "ehsanaghaei/SecureBERT",
        "tests/fixtures/encoders/roberta-securebert",
        &[
            "config.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "pytorch_model.bin",
        ],
    ),
];

const SHA: &str = "0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with the Hub settings given and none from the developer's environment.
fn cmd(cwd: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
    ] {
        c.env_remove(k);
    }
    c.args(args)
        .env("SYNTHCTI_CACHE_DIR", cache)
        .current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn paper_toml_validates_offline_and_plan_names_what_is_not_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared_data();
    let o = cmd(
        &repo_root(),
        &tmp.path().join("cache"),
        &["plan", "experiments/paper.toml", "--json"],
        &[
            ("HF_HOME", tmp.path().join("hf").to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
            ("SYNTHCTI_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cells = plan["cells"].as_array().unwrap();
    // Five classifiers, each with and without synthetic data.
    assert_eq!(cells.len(), 10);
    let mut kinds: Vec<(String, String)> = cells
        .iter()
        .map(|c| {
            (
                c["classifier"].as_str().unwrap().to_string(),
                // A folder is written resolved (absolute); keep its tail.
                match c["params"]["model"].as_str().unwrap_or("") {
                    m if m.ends_with("/models/all-MiniLM-L6-v2") => {
                        "models/all-MiniLM-L6-v2".into()
                    }
                    m => m.to_string(),
                },
            )
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            ("encoder-finetune".into(), "albert/albert-base-v2".into()),
            ("encoder-finetune".into(), "ehsanaghaei/SecureBERT".into()),
            ("encoder-frozen".into(), "models/all-MiniLM-L6-v2".into()),
            ("fasttext".into(), String::new()),
            ("linear".into(), String::new()),
        ]
    );
    let notes = plan["notes"].to_string();
    for id in ["albert/albert-base-v2", "ehsanaghaei/SecureBERT"] {
        assert!(
            notes.contains(&format!(
                "model not downloaded: Hugging Face model `{id}` at revision `main`"
            )),
            "{notes}"
        );
    }
    assert!(notes.contains("but HF_HUB_OFFLINE is set"), "{notes}");
}

/// A CTI-to-MITRE file of the first `n` rows of four techniques, as the publisher writes it.
fn small_cti_to_mitre(n: usize) -> String {
    let mut r = csv::Reader::from_path(shared_data().join("cti-to-mitre/dataset.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&headers).unwrap();
    let keep = ["T1027", "T1059", "T1105", "T1071"];
    let mut count = std::collections::BTreeMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let tec = rec.get(1).unwrap().to_string();
        if keep.contains(&tec.as_str()) {
            let c = count.entry(tec).or_insert(0);
            if *c < n {
                *c += 1;
                w.write_record(&rec).unwrap();
            }
        }
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// paper.toml at a CI size: its data, augment and classifier grid as written, with fewer rows,
/// epochs and sentences, an `openai` generator on 127.0.0.1, and MiniLM from the checkout.
fn tiny_paper(s: &Sandbox, llm: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("experiments/paper.toml")).unwrap();
    let mut m: toml::Table = text.parse().unwrap();
    let set = |t: &mut toml::Table, path: &[&str], v: toml::Value| {
        let mut cur = t;
        for p in &path[..path.len() - 1] {
            cur = cur.get_mut(*p).unwrap().as_table_mut().unwrap();
        }
        cur.insert(path[path.len() - 1].to_string(), v);
    };
    let s_ = |v: &str| toml::Value::String(v.into());
    let p = |v: &Path| toml::Value::String(v.display().to_string());
    set(&mut m, &["experiment", "output_dir"], p(&s.path("results")));
    set(&mut m, &["data", "dir"], p(&s.path("data")));
    set(&mut m, &["data", "attack"], p(&attack_bundle()));
    set(&mut m, &["augment", "generator"], s_("remote"));
    set(&mut m, &["augment", "k"], toml::Value::Integer(1));
    set(
        &mut m,
        &["augment", "per_technique"],
        toml::Value::Integer(3),
    );
    set(&mut m, &["augment", "per_call"], toml::Value::Integer(3));
    let generator: toml::Table = format!(
        "name = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{llm}\"\nmax_tokens = 64\n"
    )
    .parse()
    .unwrap();
    m.insert(
        "generator".into(),
        toml::Value::Array(vec![toml::Value::Table(generator)]),
    );
    for c in m["classifier"]
        .as_array()
        .unwrap()
        .clone()
        .iter()
        .enumerate()
    {
        let (i, c) = c;
        let mut c = c.as_table().unwrap().clone();
        match c["kind"].as_str().unwrap() {
            "fasttext" => {
                c.insert("epochs".into(), toml::Value::Integer(5));
            }
            "encoder-frozen" => {
                c.insert("model".into(), p(&minilm()));
                c.insert("epochs".into(), toml::Value::Integer(20));
                c.insert("head_hidden".into(), toml::Value::Integer(0));
            }
            "encoder-finetune" => {
                c.insert("epochs".into(), toml::Value::Integer(1));
                c.insert("max_length".into(), toml::Value::Integer(32));
                c.insert("batch_size".into(), toml::Value::Integer(16));
                c.insert("lr".into(), toml::Value::Float(1e-3));
            }
            _ => {}
        }
        m["classifier"].as_array_mut().unwrap()[i] = toml::Value::Table(c);
    }
    s.write("paper.toml", &toml::to_string(&m).unwrap())
}

#[test]
fn a_ci_sized_paper_runs_end_to_end_through_the_hub() {
    let repos: Vec<HubRepo> = TINY
        .iter()
        .map(|(id, dir, files)| HubRepo::new(id, SHA, &repo_root().join(dir), files))
        .collect();
    let hub = HubServer::start(repos);
    let llm = llm_server::start(|n, _| Reply::sentences(3, n));
    let s = Sandbox::new();
    s.write("data/cti-to-mitre/dataset.csv", &small_cti_to_mitre(25));
    let m = tiny_paper(&s, &llm.url);
    let out = s.path("results/paper");
    let o = cmd(
        s.dir.path(),
        &s.path("cache"),
        &["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[
            ("HF_HOME", s.path("hf").to_str().unwrap()),
            ("HF_ENDPOINT", hub.url.as_str()),
        ],
    );
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 10, "{rows:?}");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r:?}");
    }
    let mut cells: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let model = if r["model"].contains("all-MiniLM") {
                "MiniLM".to_string()
            } else {
                r["model"].clone()
            };
            (r["classifier"].clone(), model, r["augment"].clone())
        })
        .collect();
    cells.sort();
    let mut want = Vec::new();
    for (kind, model) in [
        ("encoder-finetune", "albert/albert-base-v2"),
        ("encoder-finetune", "ehsanaghaei/SecureBERT"),
        ("encoder-frozen", "MiniLM"),
        ("fasttext", ""),
        ("linear", ""),
    ] {
        for aug in ["none", "synthetic"] {
            want.push((kind.to_string(), model.to_string(), aug.to_string()));
        }
    }
    assert_eq!(cells, want);
    // Each augmented cell is paired with its baseline.
    assert_eq!(read_csv_rows(&out.join("intervals.csv")).len(), 5);
    // Both paper models came from the Hub, at the served commit.
    let reqs = hub.requests();
    for (id, _, files) in TINY {
        let weights = files.last().unwrap();
        assert!(
            reqs.contains(&format!("GET /{id}/resolve/{SHA}/{weights}")),
            "{id}: {reqs:?}"
        );
    }
}

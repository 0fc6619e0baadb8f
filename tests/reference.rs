//! End-to-end: the reference-classifier filter (`augment.filter.reference_classifier = "none" |
//! "fasttext" | "encoder-frozen"`, and the booleans of older manifests), and every trained cell's
//! figures on the validation split — on real TRAM rows, against an OpenAI-compatible server on
//! 127.0.0.1 and the real all-MiniLM-L6-v2 weights.

mod common;
use common::llm_server::{self, Reply};
use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Three sentences about obfuscation (T1027, the target) and two about other techniques of the
/// data: downloading tools (T1105) and running cmd.exe batch scripts (T1059.003).
const ANSWER: &str = "1. The loader was packed with a custom crypter so antivirus engines could not read its code.\n\
    2. Strings inside the implant were encrypted with RC4 and decrypted only in memory at run time.\n\
    3. The operators hid their script behind several layers of base64 encoding and string concatenation.\n\
    4. The attackers used certutil to download additional tools from a remote server onto the host.\n\
    5. The group ran cmd.exe to execute a batch file that launched commands on the victim machine.";

/// Four TRAM classes (40 rows each), a fastText and a frozen-MiniLM classifier with default
/// settings, the baseline and the synthetic arm for T1027, and a generator at `url`.
fn sandbox(url: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 42\n\
             [[classifier]]\nkind = \"fasttext\"\n\
             [[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"{minilm}\"\n\
             [augment]\nkind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 1\nper_technique = 5\nper_call = 5\n\
             encoder = \"{minilm}\"\n\
             [augment.targets]\nlist = [\"T1027\"]\n\n\
             [[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\n\
             max_tokens = 256\nmax_retries = 0\n",
            minilm = minilm().display()
        ),
    );
    (s, m)
}

/// The plan's stages of the first cell whose name starts with `prefix`, as (stage, key).
fn stages(plan: &serde_json::Value, prefix: &str) -> Vec<(String, String)> {
    let cell = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cell"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no cell {prefix}*: {plan}"));
    cell["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The reference's train stage in a synthetic cell's chain (the `train` before `filter`), if any.
fn reference_key(plan: &serde_json::Value, prefix: &str) -> Option<String> {
    let st = stages(plan, prefix);
    let filter = st.iter().position(|(s, _)| s == "filter").unwrap();
    st[..filter]
        .iter()
        .find(|(s, _)| s == "train")
        .map(|(_, k)| k.clone())
}

fn key_of(plan: &serde_json::Value, prefix: &str, stage: &str) -> String {
    stages(plan, prefix)
        .into_iter()
        .rev()
        .find(|(s, _)| s == stage)
        .unwrap()
        .1
}

#[test]
fn each_reference_classifier_is_the_baseline_cells_train_stage_and_part_of_the_filter_key() {
    let (s, m) = sandbox("http://127.0.0.1:9");
    let set = |v: &str| format!("augment.filter.reference_classifier={v}");
    let plan = |v: &str| s.plan_json(&m, &["--set", &set(v)]);
    let none = plan("\"none\"");
    let fasttext = plan("\"fasttext\"");
    let frozen = plan("\"encoder-frozen\"");
    assert_eq!(reference_key(&none, "fasttext-synthetic"), None);
    // The reference is the train stage of the baseline cell with the same settings: one entry.
    assert_eq!(
        reference_key(&fasttext, "fasttext-synthetic"),
        Some(key_of(&fasttext, "fasttext-none", "train"))
    );
    assert_eq!(
        reference_key(&frozen, "fasttext-synthetic"),
        Some(key_of(&frozen, "encoder-frozen-none", "train"))
    );
    // Every synthetic cell asks the same reference.
    assert_eq!(
        reference_key(&frozen, "encoder-frozen-synthetic"),
        reference_key(&frozen, "fasttext-synthetic")
    );
    // Each value has its own filter key (and so its own synthetic data and augmented cells).
    let filters: std::collections::BTreeSet<String> = [&none, &fasttext, &frozen]
        .iter()
        .map(|p| key_of(p, "fasttext-synthetic", "filter"))
        .collect();
    assert_eq!(filters.len(), 3);
    // Older manifests: `true` is "fasttext" and `false` is "none", key for key.
    assert_eq!(plan("true")["cells"], fasttext["cells"]);
    assert_eq!(plan("false")["cells"], none["cells"]);
    // The default is "none" (see FilterConfig::default and experiments/tram.toml).
    assert_eq!(s.plan_json(&m, &[])["cells"], none["cells"]);
}

/// `generate` with each value: the reference trains once (the baseline cell's entry, which a
/// later `run` reads back) and drops the two sentences about other techniques.
#[test]
fn each_reference_classifier_drops_the_off_technique_sentences() {
    let server = llm_server::start(|_, _| Reply::ok(ANSWER));
    let (s, m) = sandbox(&server.url);
    for (value, trains) in [("none", 0), ("fasttext", 1), ("encoder-frozen", 2)] {
        let o = s.cmd(&[
            "generate",
            m.to_str().unwrap(),
            "--set",
            &format!("augment.filter.reference_classifier=\"{value}\""),
            "--quiet",
        ]);
        assert!(o.status.success(), "{value}: {}", stderr(&o));
        let rows: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
        let with_reference = value != "none";
        let expected: Vec<&str> = ANSWER
            .lines()
            .map(|l| l.trim().split_once(". ").unwrap().1)
            .take(if with_reference { 3 } else { 5 })
            .collect();
        assert_eq!(texts, expected, "{value}");
        for r in &rows {
            let passed: Vec<&str> = r["filters_passed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            assert_eq!(passed.contains(&"reference"), with_reference, "{value}");
        }
        assert_eq!(cache_entries(&s, "train"), trains, "{value}");
    }
    // One call in all: the answer is cached, the filter ran three times over it.
    assert_eq!(server.requests().len(), 1);
    assert_eq!(cache_entries(&s, "filter"), 3);
    // The baseline cells train nothing new: the references were their entries.
    let plan = s.plan_json(
        &m,
        &[
            "--set",
            "augment.filter.reference_classifier=\"encoder-frozen\"",
        ],
    );
    for cell in ["fasttext-none", "encoder-frozen-none"] {
        let c = plan["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cell"].as_str().unwrap().starts_with(cell))
            .unwrap();
        let train = c["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "train")
            .unwrap();
        assert_eq!(train["cached"], true, "{cell}: {c}");
    }
}

/// Every trained cell is scored on the validation split too: the same figures as on test, over
/// the classes with a validation sentence, and the target-only macro-F1 over the targets there.
#[test]
fn every_cell_reports_its_validation_figures() {
    let server = llm_server::start(|_, _| Reply::ok(ANSWER));
    let (s, m) = sandbox(&server.url);
    let out = s.path("results/r");
    s.run_ok(&m, &out, &["--set", "classifier.epochs=20"]);
    // The validation split as the run wrote it: sentences per class.
    let mut support: BTreeMap<String, usize> = BTreeMap::new();
    for l in std::fs::read_to_string(out.join("split/validation.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *support
            .entry(v["label"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let n: usize = support.values().sum();
    assert!(n > 0 && support.contains_key("T1027"), "{support:?}");
    let mut cells = 0;
    for dir in std::fs::read_dir(out.join("cells")).unwrap() {
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.unwrap().path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        cells += 1;
        let v = &r["validation"];
        assert_eq!(v["metrics"]["n"], n, "{r}");
        assert_eq!(r["validation_size"], n);
        let classes: Vec<&str> = v["metrics"]["macro_classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            classes,
            support.keys().map(String::as_str).collect::<Vec<_>>()
        );
        let per_class = v["metrics"]["per_class"].as_array().unwrap();
        let mut f1s = Vec::new();
        for c in per_class {
            let class = c["class"].as_str().unwrap();
            assert_eq!(
                c["support"],
                support.get(class).copied().unwrap_or(0),
                "{c}"
            );
            if support.contains_key(class) {
                f1s.push(c["f1"].as_f64().unwrap());
            }
        }
        let macro_f1 = f1s.iter().sum::<f64>() / f1s.len() as f64;
        assert!((v["metrics"]["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-9);
        // One target (T1027): its F1 on validation.
        let t1027 = per_class.iter().find(|c| c["class"] == "T1027").unwrap();
        assert_eq!(v["target_macro_f1"], t1027["f1"]);
    }
    assert_eq!(cells, 4);
}

/// The linear model fits on train + validation together (it has no early stopping), so a
/// validation figure would be a training figure: its cells report none.
#[test]
fn a_linear_cell_reports_no_validation_figures() {
    let server = llm_server::start(|_, _| Reply::ok(ANSWER));
    let (s, m) = sandbox(&server.url);
    let out = s.path("results/linear");
    s.run_ok(
        &m,
        &out,
        &[
            "--set",
            "classifier=[{kind = \"linear\"}]",
            "--set",
            "augment.kind=\"none\"",
        ],
    );
    let mut cells = 0;
    for dir in std::fs::read_dir(out.join("cells")).unwrap() {
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.unwrap().path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        cells += 1;
        assert_eq!(r["cell"]["classifier"], "linear", "{r}");
        assert!(r.get("validation").is_none_or(|v| v.is_null()), "{r}");
        assert!(r["metrics"]["macro_f1"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(cells, 1);
}

//! Helpers for the end-to-end tests: they run the real binary on small real data.
#![allow(dead_code)]

pub mod hub_server;
pub mod llm_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_synthcti"));
    // Nothing from the developer's environment leaks into a test.
    for (k, _) in std::env::vars() {
        if k.starts_with("SYNTHCTI_") {
            c.env_remove(k);
        }
    }
    c
}

/// The shared datasets (../shared/data, or SYNTHCTI_DATA_DIR).
pub fn shared_data() -> PathBuf {
    let p = std::env::var_os("SYNTHCTI_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        p.join("tram/single_label.json").is_file(),
        "the shared datasets are not at {}; set SYNTHCTI_DATA_DIR",
        p.display()
    );
    p.canonicalize().unwrap()
}

/// A scratch folder with `data/`, `cache/` and `results/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["data", "cache", "results"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }
    /// A manifest over `data/` in this sandbox, with `extra` TOML appended.
    pub fn manifest(&self, data_section: &str, extra: &str) -> PathBuf {
        let body = format!(
            "[experiment]\nname = \"t\"\noutput_dir = \"{}\"\n\n[data]\ndir = \"{}\"\n{data_section}\n{extra}",
            self.path("results").display(),
            self.path("data").display()
        );
        self.write("m.toml", &body)
    }
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(args, &[])
    }
    /// The binary with extra environment variables.
    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = bin();
        c.args(args)
            .env("SYNTHCTI_CACHE_DIR", self.path("cache"))
            .current_dir(self.dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
    /// `synthcti run MANIFEST --out OUT EXTRA…`, which must succeed.
    pub fn run_ok(&self, manifest: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = self.cmd(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    }
    /// `synthcti plan MANIFEST --json EXTRA…`, which must succeed, parsed.
    pub fn plan_json(&self, manifest: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["plan", manifest.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let o = self.cmd(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
    /// Files under a folder, recursively.
    pub fn files_under(&self, rel: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.path(rel)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
    /// Bad input must leave nothing in results/ and no cache entry (lock files aside).
    pub fn assert_nothing_written(&self) {
        assert!(
            self.files_under("results").is_empty(),
            "results/ written: {:?}",
            self.files_under("results")
        );
        let cache: Vec<_> = self
            .files_under("cache")
            .into_iter()
            .filter(|p| p.extension().is_none_or(|e| e != "lock"))
            .collect();
        assert!(cache.is_empty(), "cache written: {cache:?}");
    }
}

/// The run log of a finished run folder.
pub fn run_log(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("run.log")).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A small real dataset: the first `n` rows of each of a few TRAM classes.
pub fn small_tram_rows(per_class: usize) -> String {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(shared_data().join("tram/single_label.json")).unwrap(),
    )
    .unwrap();
    let keep = ["T1027", "T1059.003", "T1105", "T1071.001"];
    let mut out = Vec::new();
    for k in keep {
        out.extend(
            rows.iter()
                .filter(|r| r["label"] == k)
                .take(per_class)
                .cloned(),
        );
    }
    serde_json::to_string_pretty(&out).unwrap()
}

/// The ATT&CK bundle of the shared data folder.
pub fn attack_bundle() -> PathBuf {
    shared_data().join("attack/enterprise-attack-techniques-18.1.json")
}

/// The SmolLM2 GGUF that `scripts/fetch-models.sh` (`just models`) puts in models/.
pub fn smollm2() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing; run scripts/fetch-models.sh (or `just models`) first",
        p.display()
    );
    p
}

/// The all-MiniLM-L6-v2 folder that `scripts/fetch-models.sh` (`just models`) puts in models/.
pub fn minilm() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} is missing; run scripts/fetch-models.sh (or `just models`) first",
        p.display()
    );
    p
}

/// Cache entries of one stage.
pub fn cache_entries(s: &Sandbox, stage: &str) -> usize {
    std::fs::read_dir(s.path("cache").join("entries").join(stage))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A plan's (`plan --json`, `plan.json`) stages of cell `cell`: (stage, cached), in order.
pub fn plan_stages(plan: &serde_json::Value, cell: usize) -> Vec<(String, bool)> {
    plan["cells"][cell]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["stage"].as_str().unwrap().to_string(),
                st["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// summary.csv (or any CSV) as rows of column → value.
pub fn read_csv_rows(p: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(p).unwrap();
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            h.iter()
                .zip(rec.unwrap().iter())
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        })
        .collect()
}

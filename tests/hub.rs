//! End-to-end: classifiers whose `model` is a Hugging Face id, resolved through a Hub served on
//! 127.0.0.1 (`HF_ENDPOINT`) into a Hugging Face cache in the sandbox (`HF_HOME`).

mod common;
use common::hub_server::*;
use common::*;
use std::path::Path;
use std::process::Output;

const ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SHA: &str = "4f5e0a3d2c1b09f8e7d6c5b4a3928170f6e5d4c3";

/// The binary in the sandbox with the Hub settings given and none from the developer's
/// environment; `HF_HOME` defaults to the sandbox's `hf/`.
fn hub_cmd(s: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
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
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .env("HF_HOME", s.path("hf"))
        .current_dir(s.dir.path());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn sandbox(model: &str, extra: &str) -> (Sandbox, std::path::PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(20));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &format!(
            "[split]\nseed = 7\n\n[[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"{model}\"\n{extra}head_hidden = 0\nepochs = 30\n"
        ),
    );
    (s, m)
}

fn train_keys(plan: &serde_json::Value) -> Vec<String> {
    plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["stages"].as_array().unwrap().clone())
        .filter(|st| st["stage"] == "train" || st["stage"] == "evaluate")
        .map(|st| st["key"].as_str().unwrap().to_string())
        .collect()
}

fn plan_json(s: &Sandbox, m: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let o = hub_cmd(s, &["plan", m.to_str().unwrap(), "--json"], env);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_hub_id_is_downloaded_once_then_used_offline_with_the_keys_of_the_same_folder() {
    let server = HubServer::start(vec![HubRepo::new(ID, SHA, &minilm(), MODEL_FILES)]);
    let (s, m) = sandbox(ID, "revision = \"main\"\n");
    let online = [("HF_ENDPOINT", server.url.as_str())];

    // `plan` never downloads: it says the model is missing and exits 0.
    let o = hub_cmd(&s, &["plan", m.to_str().unwrap()], &online);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "model not downloaded: Hugging Face model `{ID}` at revision `main` is not in"
        )),
        "{text}"
    );
    assert!(text.contains("is not pinned"), "{text}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // `run` resolves the revision, downloads the three files at its commit, then trains.
    let out = s.path("results/first");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &online,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = server.requests();
    assert_eq!(reqs[0], format!("GET /api/models/{ID}/revision/main"));
    for f in MODEL_FILES {
        assert!(
            reqs.contains(&format!("GET /{ID}/resolve/{SHA}/{f}")),
            "{f} not fetched at the commit: {reqs:?}"
        );
    }
    assert!(reqs.iter().any(|r| r.starts_with("GET /cdn/")), "{reqs:?}");
    let repo = s.path("hf/hub/models--sentence-transformers--all-MiniLM-L6-v2");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        SHA
    );
    let snap = repo.join("snapshots").join(SHA);
    for f in MODEL_FILES {
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(minilm().join(f)).unwrap(),
            "{f}"
        );
    }
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["model"], ID);
    assert_eq!(rows[0]["status"], "ok", "{rows:?}");
    let resolved = std::fs::read_to_string(out.join("manifest.resolved.toml")).unwrap();
    assert!(resolved.contains("revision = \"main\""), "{resolved}");

    // The keys are those of the same files in a folder: content, not the id.
    let hub_keys = train_keys(&plan_json(&s, &m, &online));
    let folder = s.write(
        "folder.toml",
        &std::fs::read_to_string(&m)
            .unwrap()
            .replace(
                &format!("model = \"{ID}\""),
                &format!("model = \"{}\"", minilm().display()),
            )
            .replace("revision = \"main\"\n", ""),
    );
    assert_eq!(hub_keys, train_keys(&plan_json(&s, &folder, &online)));
    assert_eq!(hub_keys.len(), 2);

    // Offline, with the server gone: the cache answers, the trained cell is reused.
    server.stop();
    let before = server.requests().len();
    let offline = [
        ("HF_ENDPOINT", server.url.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let o = hub_cmd(
        &s,
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/offline").to_str().unwrap(),
        ],
        &offline,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 trained, 1 from cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.requests().len(), before);
    // The commit sha as the revision finds the same snapshot, offline.
    let pinned = plan_json(
        &s,
        &m,
        &[
            ("HF_HUB_OFFLINE", "1"),
            ("SYNTHCTI_CLASSIFIER__REVISION", SHA),
        ],
    );
    assert_eq!(train_keys(&pinned), hub_keys);
    let notes = pinned["notes"].to_string();
    assert!(!notes.contains("not downloaded"), "{notes}");
    assert!(!notes.contains("not pinned"), "{notes}");

    // Offline with an empty cache: `plan` says so and exits 0, `run` stops before any work.
    let empty = s.path("hf-empty");
    let env = [
        ("HF_HOME", empty.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let o = hub_cmd(&s, &["plan", m.to_str().unwrap()], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("model not downloaded"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("but HF_HUB_OFFLINE is set"),
        "{}",
        stdout(&o)
    );
    let o = hub_cmd(
        &s,
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/none").to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Hugging Face model `{ID}` at revision `main` is not in the Hugging Face cache"
        )),
        "{e}"
    );
    assert!(
        e.contains(
            "(config.json, tokenizer.json, model.safetensors missing) and HF_HUB_OFFLINE is set"
        ),
        "{e}"
    );
    assert!(!s.path("results/none").exists());
}

#[test]
fn a_repository_without_weights_is_named_with_the_missing_file_before_any_work() {
    let server = HubServer::start(vec![HubRepo::new(
        "tiny/no-weights",
        SHA,
        &minilm(),
        &["config.json", "tokenizer.json"],
    )]);
    let (s, m) = sandbox("tiny/no-weights", "");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap()],
        &[("HF_ENDPOINT", server.url.as_str())],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Hugging Face model `tiny/no-weights` at revision `main` (commit {SHA}) has no model.safetensors"
        )),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn a_bad_revision_is_named_with_the_id() {
    let server = HubServer::start(vec![HubRepo::new(ID, SHA, &minilm(), MODEL_FILES)]);
    let (s, m) = sandbox(ID, "revision = \"v9.9\"\n");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap()],
        &[("HF_ENDPOINT", server.url.as_str())],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Hugging Face model `{ID}` at revision `v9.9`: no such repository or revision on {} (HTTP 404)",
            server.url
        )),
        "{e}"
    );
    assert!(
        e.contains("a private repository also answers 404 without HF_TOKEN"),
        "{e}"
    );
    assert_eq!(
        server.requests(),
        [format!("GET /api/models/{ID}/revision/v9.9")]
    );
    s.assert_nothing_written();
}

#[test]
fn a_missing_folder_of_the_owner_name_shape_is_read_as_an_id_and_the_error_says_so() {
    let (s, m) = sandbox("models/no-such-model", "");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap()],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("`models/no-such-model` is not a folder here, so it is read as a Hub id; for a local folder write `./models/no-such-model`"),
        "{e}"
    );
    // Written as a path, it is a folder, and the folder's own error applies.
    let (s, m) = sandbox("./models/no-such-model", "");
    let o = hub_cmd(&s, &["run", m.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/./models/no-such-model lacks config.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_revision_on_a_folder_is_rejected() {
    let (s, m) = sandbox(
        &minilm().display().to_string(),
        &format!("revision = \"{SHA}\"\n"),
    );
    let o = hub_cmd(&s, &["plan", m.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("classifier.0.revision"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("applies to a Hugging Face id, but"),
        "{}",
        stderr(&o)
    );
}

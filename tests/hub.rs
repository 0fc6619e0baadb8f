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
            "(config.json, a tokenizer (tokenizer.json, or vocab.json + merges.txt, or vocab.txt) and weights (model.safetensors or pytorch_model.bin) missing) and HF_HUB_OFFLINE is set"
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
            "Hugging Face model `tiny/no-weights` at revision `main` (commit {SHA}) has no model.safetensors or pytorch_model.bin;"
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

/// SecureBERT's files on the Hub: no tokenizer.json, no model.safetensors.
const SECUREBERT_FILES: &[&str] = &[
    "config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "pytorch_model.bin",
];

fn securebert() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/roberta-securebert")
}

#[test]
fn a_repo_in_securebert_s_layout_is_downloaded_once_then_used_offline() {
    let id = "ehsanaghaei/SecureBERT";
    let mut listed = SECUREBERT_FILES.to_vec();
    listed.push("expected.json"); // a file synthcti does not read, as real repos have (README.md)
    let server = HubServer::start(vec![HubRepo::new(id, SHA, &securebert(), &listed)]);
    let (s, m) = sandbox(id, "max_length = 64\n");
    let online = [("HF_ENDPOINT", server.url.as_str())];
    let out = s.path("results/first");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &online,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = server.requests();
    assert_eq!(reqs[0], format!("GET /api/models/{id}/revision/main"));
    let mut fetched: Vec<&str> = reqs
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("GET /{id}/resolve/{SHA}/")))
        .collect();
    fetched.dedup(); // hf-hub asks for each file twice (metadata, then the bytes)
    assert_eq!(fetched, SECUREBERT_FILES, "{reqs:?}");
    let snap = s
        .path("hf/hub/models--ehsanaghaei--SecureBERT/snapshots")
        .join(SHA);
    for f in SECUREBERT_FILES {
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(securebert().join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!snap.join("expected.json").exists());
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows[0]["status"], "ok", "{rows:?}");

    // The keys are those of the same files in a folder.
    let hub_keys = train_keys(&plan_json(&s, &m, &online));
    let folder = s.write(
        "folder.toml",
        &std::fs::read_to_string(&m).unwrap().replace(
            &format!("model = \"{id}\""),
            &format!("model = \"{}\"", securebert().display()),
        ),
    );
    assert_eq!(hub_keys, train_keys(&plan_json(&s, &folder, &online)));

    // Offline, with the server gone: the cache answers and the trained cell is reused.
    server.stop();
    let before = server.requests().len();
    let o = hub_cmd(
        &s,
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/offline").to_str().unwrap(),
        ],
        &[
            ("HF_ENDPOINT", server.url.as_str()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 trained, 1 from cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_transformer_from_scratch_downloads_only_the_tokenizer_files() {
    let id = "tiny/bert-vocab";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/bert-vocab");
    let files = [
        "config.json",
        "vocab.txt",
        "tokenizer_config.json",
        "model.safetensors",
    ];
    let server = HubServer::start(vec![HubRepo::new(id, SHA, &dir, &files)]);
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(20));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &format!(
            "[split]\nseed = 7\n\n[[classifier]]\nkind = \"transformer\"\nmodel = \"{id}\"\nlayers = 1\nhidden = 16\nheads = 2\nintermediate = 32\nmax_length = 32\nepochs = 1\n"
        ),
    );
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap()],
        &[("HF_ENDPOINT", server.url.as_str())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut fetched: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("GET /{id}/resolve/{SHA}/")))
        .map(str::to_string)
        .collect();
    fetched.dedup();
    assert_eq!(fetched, ["vocab.txt", "tokenizer_config.json"]);
}

#[test]
fn a_repo_with_neither_tokenizer_is_named_with_every_layout_read() {
    let server = HubServer::start(vec![HubRepo::new(
        "tiny/no-tokenizer",
        SHA,
        &securebert(),
        &["config.json", "pytorch_model.bin", "vocab.json"],
    )]);
    let (s, m) = sandbox("tiny/no-tokenizer", "");
    let o = hub_cmd(
        &s,
        &["run", m.to_str().unwrap()],
        &[("HF_ENDPOINT", server.url.as_str())],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Hugging Face model `tiny/no-tokenizer` at revision `main` (commit {SHA}) has no merges.txt (beside vocab.json); synthcti reads config.json, a tokenizer (tokenizer.json, or vocab.json + merges.txt, or vocab.txt) and weights (model.safetensors or pytorch_model.bin)"
        )),
        "{e}"
    );
    s.assert_nothing_written();
}

/// A copy of the SecureBERT-layout fixture whose config.json `edit` changes.
fn bad_config_repo(s: &Sandbox, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let dir = s.path("bad-model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in SECUREBERT_FILES {
        std::fs::copy(securebert().join(f), dir.join(f)).unwrap();
    }
    let p = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
    dir
}

#[test]
fn a_bad_config_of_a_hub_id_stops_run_when_fetched_and_plan_once_cached() {
    let id = "tiny/bad-heads";
    let (s, m) = sandbox(id, "");
    let dir = bad_config_repo(&s, |c| c["num_attention_heads"] = 5.into());
    let server = HubServer::start(vec![HubRepo::new(id, SHA, &dir, SECUREBERT_FILES)]);
    let online = [("HF_ENDPOINT", server.url.as_str())];
    // Not downloaded: `plan` cannot know, `run` checks it once fetched, before any work.
    let o = hub_cmd(&s, &["plan", m.to_str().unwrap()], &online);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = hub_cmd(&s, &["run", m.to_str().unwrap()], &online);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Hugging Face model `{id}` at revision `main` (commit {SHA}): "
        )),
        "{e}"
    );
    assert!(
        e.contains("config.json: hidden_size 32 is not a multiple of num_attention_heads 5"),
        "{e}"
    );
    s.assert_nothing_written();
    // Now in the cache: `plan` itself rejects the manifest, offline.
    let o = hub_cmd(
        &s,
        &["plan", m.to_str().unwrap()],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("classifier.0.model"), "{e}");
    assert!(
        e.contains(&format!(
            "the Hugging Face model `{id}` at revision `main` (in the cache): "
        )),
        "{e}"
    );
    assert!(
        e.contains("hidden_size 32 is not a multiple of num_attention_heads 5"),
        "{e}"
    );
}

/// `synthcti plan` on a folder model whose config.json `edit` changes: exit 2, stderr.
fn plan_rejects_folder_config(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let s = Sandbox::new();
    let dir = bad_config_repo(&s, edit);
    let (s2, m) = sandbox(&dir.display().to_string(), "");
    let o = hub_cmd(
        &s2,
        &["plan", m.to_str().unwrap()],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("classifier.0.model"), "{e}");
    assert!(
        e.contains(&format!("{}: ", dir.join("config.json").display())),
        "{e}"
    );
    e
}

#[test]
fn plan_rejects_a_folder_whose_hidden_size_is_not_a_multiple_of_the_heads() {
    let e = plan_rejects_folder_config(|c| c["num_attention_heads"] = 5.into());
    assert!(
        e.contains("hidden_size 32 is not a multiple of num_attention_heads 5"),
        "{e}"
    );
}

#[test]
fn plan_rejects_a_folder_whose_config_lacks_a_size() {
    let e = plan_rejects_folder_config(|c| {
        c.as_object_mut().unwrap().remove("intermediate_size");
    });
    assert!(
        e.contains("`intermediate_size` is missing; every roberta config.json has it"),
        "{e}"
    );
}

#[test]
fn plan_rejects_a_folder_of_an_unsupported_architecture() {
    let e = plan_rejects_folder_config(|c| {
        c.as_object_mut().unwrap().remove("model_type");
        c["architectures"] = serde_json::json!(["DebertaV2ForMaskedLM"]);
    });
    assert!(
        e.contains("no model_type, and no architecture synthcti runs in `architectures` (DebertaV2ForMaskedLM)"),
        "{e}"
    );
}

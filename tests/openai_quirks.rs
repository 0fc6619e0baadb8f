//! End-to-end: the shapes real OpenAI-compatible servers answer in (the `openai-quirks` cases
//! from the field), served from 127.0.0.1, through `synthcti generate` (the synthetic data alone)
//! and `synthcti run`. Absent / null `usage` is covered by `tests/generate.rs`
//! (`token_budget_holds_when_*`), 404 by `every_call_404_…`, 429 and 500 by `openai_429_…` and
//! `openai_repeated_500s_…` (a context error's 500 here).

mod common;
use common::llm_server::{self, Reply};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The answer lines the field's fake server sends (registry run-key persistence, T1547.001).
const POOL: [&str; 5] = [
    "The intruders planted a shortcut in the user's Startup folder that relaunched the loader at every sign-in.",
    "A value added under the HKCU Run key pointed at a DLL hidden in the roaming profile.",
    "After reboot the implant came back because a RunOnce entry re-registered it each time.",
    "The malware copied itself into AppData and wrote a registry autostart entry named like a driver updater.",
    "Operators kept access on the kiosk by registering their dropper as a logon program through the registry.",
];

fn numbered() -> String {
    POOL.iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A sandbox over small TRAM data, one call for 5 sentences of T1027, against `url`.
fn sandbox(url: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\n\
             [augment]\nkind = \"synthetic\"\ngenerator = \"remote\"\nk = 1\nper_technique = 5\nper_call = 5\n\
             [augment.targets]\nlist = [\"T1027\"]\n\n\
             [[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\n\
             max_tokens = 64\nmax_retries = 2\nbackoff_s = 0.05\nmax_backoff_s = 0.2\n"
        ),
    );
    (s, m)
}

fn generate(s: &Sandbox, m: &Path) -> Output {
    s.cmd(&[
        "generate",
        m.to_str().unwrap(),
        "--out",
        s.path("synthetic.jsonl").to_str().unwrap(),
    ])
}

fn rows(s: &Sandbox) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path("synthetic.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn texts(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn think_reasoning_is_never_a_sentence() {
    let think = "<think>\nOkay, the user wants five sentences about this technique.\n\
        1. First I should recall what the technique means in ATT&CK terms.\n\
        2. Then I need to vary the actors and the tools in each sentence.\n\
        3. Finally I must number them and keep each under forty words.\n</think>\n\n";
    let answer = format!("{think}{}", numbered());
    let server = llm_server::start(move |_, _| Reply::ok(&answer));
    let (s, m) = sandbox(&server.url);
    let o = generate(&s, &m);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(texts(&rows(&s)), POOL);
    // Not even parsed and rejected: the run's cache holds no filtered line of reasoning.
    let filtered = s.files_under("cache/entries/filter");
    assert!(!filtered.is_empty(), "the filter stage wrote its entry");
    for f in filtered {
        let body = std::fs::read_to_string(&f).unwrap_or_default();
        for r in [
            "Okay, the user",
            "I should recall",
            "vary the actors",
            "number them",
        ] {
            assert!(!body.contains(r), "{r} in {}", f.display());
        }
    }
}

#[test]
fn a_response_without_id_object_created_usage_or_index_is_used() {
    let body = serde_json::json!({
        "model": "test-model",
        "choices": [{"message": {"role": "assistant", "content": numbered()}, "finish_reason": "stop"}]
    })
    .to_string();
    let server = llm_server::start(move |_, _| Reply::raw(&body));
    let (s, m) = sandbox(&server.url);
    let o = generate(&s, &m);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(texts(&rows(&s)), POOL);
    assert!(
        stderr(&o).contains("the server sent no token usage; tokens are estimated"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn null_content_cut_off_by_length_names_it_and_says_to_raise_max_tokens() {
    let body = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "reasoning_content": "Okay, the user wants sentences about this technique. Let me think about"},
            "finish_reason": "length"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 256, "total_tokens": 356}
    })
    .to_string();
    let server = llm_server::start(move |_, _| Reply::raw(&body));
    let (s, m) = sandbox(&server.url);
    let o = generate(&s, &m);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        server.requests().len(),
        1,
        "not retried: the same call is cut off again"
    );
    let why = "the answer was cut off before any text (finish_reason=length: the model spent all max_tokens = 64 tokens, e.g. on reasoning); raise the generator's `max_tokens`";
    let err = stderr(&o);
    assert!(
        err.contains(&format!("T1027 cluster 0 sample 0 failed: {why}")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "FAILED k1-cluster-guided-remote-n5: 0 of 1 LLM calls succeeded (1 failed, 0 skipped over budget); last error: {why}"
        )),
        "{err}"
    );
    assert!(!err.contains("no text content"), "{err}");
    assert_eq!(
        std::fs::read_to_string(s.path("synthetic.jsonl")).unwrap(),
        ""
    );
}

#[test]
fn an_error_object_inside_a_200_answer_is_an_error_naming_the_servers_message() {
    let body = serde_json::json!({"error": {"code": 400,
        "message": "the request exceeds the available context size. try increasing the context size or enable context shift",
        "type": "exceed_context_size_error", "n_prompt_tokens": 1407, "n_ctx": 256}})
    .to_string();
    let server = llm_server::start(move |_, _| Reply::raw(&body));
    let (s, m) = sandbox(&server.url);
    let o = generate(&s, &m);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("T1027 cluster 0 sample 0 failed: the server answered HTTP 200 with an error (type exceed_context_size_error, code 400): the request exceeds the available context size. try increasing the context size or enable context shift"),
        "{err}"
    );
    assert_eq!(cache_entries(&s, "llm-call"), 0, "an error is not cached");
}

#[test]
fn a_context_error_500_that_outlasts_its_retries_names_the_servers_message_and_what_to_raise() {
    // llama-server's shape: HTTP 500 with a numeric `code`, which async-openai's typed error
    // does not read (the field saw the raw JSON as the message, with no advice).
    let server = llm_server::start(|_, _| {
        Reply::status(
            500,
            r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#,
        )
    });
    let (s, m) = sandbox(&server.url);
    let o = generate(&s, &m);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 3, "1 try + max_retries = 2");
    let err = stderr(&o);
    assert!(
        err.contains("T1027 cluster 0 sample 0 failed: HTTP 500: the server answered with an error (type server_error, code 500): Context size has been exceeded; the prompt and `max_tokens` do not fit the model's context on the server: raise the server's context (llama-server `-c`, Ollama `num_ctx`, vLLM `--max-model-len`), or lower this generator's `max_tokens` or `augment.per_call`"),
        "{err}"
    );
    assert!(!err.contains(r#"{"error""#), "no raw JSON: {err}");
}

#[test]
fn run_reports_the_cut_off_answer_in_the_failed_cell() {
    let body = serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "length"}]
    })
    .to_string();
    let server = llm_server::start(move |_, _| Reply::raw(&body));
    let (s, m) = sandbox(&server.url);
    let o = s.cmd(&[
        "run",
        m.to_str().unwrap(),
        "--out",
        s.path("results/r").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let row = &read_csv_rows(&s.path("results/r/summary.csv"))[0];
    assert_eq!(row["status"], "failed");
    assert!(
        row["error"].contains("finish_reason=length")
            && row["error"].contains("raise the generator's `max_tokens`"),
        "{}",
        row["error"]
    );
}

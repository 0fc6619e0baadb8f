//! End-to-end: synthetic data generation with the real binary on real TRAM rows — the `local`
//! provider with the real SmolLM2 GGUF, the `openai` provider against an OpenAI-compatible server
//! the test starts on 127.0.0.1, and `replay`.

mod common;
use common::llm_server::{self, Reply};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-SECRET-9f8e7d6c";
const SMALL: &str =
    "[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\n";

/// A manifest over small TRAM data with one target technique (T1027), `augment` settings and a
/// generator table appended.
fn sandbox(augment: &str, generator: &str) -> (Sandbox, PathBuf) {
    sandbox_targets(augment, "list = [\"T1027\"]", generator)
}

/// [`sandbox`] with another `[augment.targets]` rule.
fn sandbox_targets(augment: &str, targets: &str, generator: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n{SMALL}\n[augment]\n{augment}\n[augment.targets]\n{targets}\n\n{generator}"
        ),
    );
    (s, m)
}

/// An `openai` generator pointed at `url`.
fn remote(url: &str, extra: &str) -> String {
    format!(
        "[[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\napi_key_env = \"TEST_LLM_KEY\"\ntemperature = 0.7\ntop_p = 0.9\nmax_tokens = 64\nseed = 5\nmax_retries = 2\nbackoff_s = 0.05\nmax_backoff_s = 0.2\n{extra}\n"
    )
}

const ONE_CALL: &str =
    "kind = \"synthetic\"\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 3";
const THREE_CALLS: &str =
    "kind = \"synthetic\"\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 1";

fn run(s: &Sandbox, m: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        m.to_str().unwrap(),
        "--out",
        s.path(out).to_str().unwrap().to_string().leak(),
    ];
    args.extend_from_slice(extra);
    s.cmd_env(&args, &[("TEST_LLM_KEY", KEY)])
}

fn run_ok(s: &Sandbox, m: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let o = run(s, m, out, extra);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    s.path(out)
}

/// The synthetic cell's row of summary.csv.
fn synthetic_row(run_dir: &Path) -> std::collections::BTreeMap<String, String> {
    read_csv_rows(&run_dir.join("summary.csv"))
        .into_iter()
        .find(|r| r["augment"] == "synthetic")
        .expect("a synthetic cell")
}

#[test]
fn openai_request_shape_auth_and_the_key_stays_secret() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let (s, m) = sandbox(ONE_CALL, &remote(&server.url, ""));
    let o = run(&s, &m, "results/r", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(r.body["model"], "test-model");
    assert_eq!(r.body["messages"][0]["role"], "user");
    let prompt = r.prompt();
    // The technique by name and description; its ID and "MITRE ATT&CK" stay out of the prompt,
    // since a model shown them writes them into its sentences.
    assert!(!prompt.contains("T1027"), "{prompt}");
    assert!(!prompt.contains("MITRE"), "{prompt}");
    assert!(
        prompt.contains("how adversaries use Obfuscated Files or Information for defense-evasion."),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("Answer with a numbered list of 3 new sentences and nothing else."),
        "{prompt}"
    );
    assert!((r.body["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!((r.body["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(r.body["max_tokens"], 64);
    assert_eq!(r.body["seed"], 5);

    let run_dir = s.path("results/r");
    let row = synthetic_row(&run_dir);
    assert_eq!(row["k"], "1");
    assert_eq!(row["generator"], "remote");
    assert_eq!(row["synthetic_kept"], "3");
    assert_eq!(row["llm_tokens"], "120");
    let cell = run_dir.join("cells").join(&row["cell"]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(cell.join("synthetic.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["technique"], "T1027");
        assert_eq!(l["kept"], true);
        assert_eq!(l["prompt_key"].as_str().unwrap().len(), 64);
        assert!(l["filters_passed"].as_array().unwrap().len() >= 8);
    }
    // The key is in no result, cache entry, log or message.
    for f in s
        .files_under("results")
        .into_iter()
        .chain(s.files_under("cache"))
    {
        let body = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains(KEY),
            "the API key leaked into {}",
            f.display()
        );
    }
    assert!(!stderr(&o).contains(KEY) && !stdout(&o).contains(KEY));
}

/// A baseline and a synthetic cell: the synthetic cell is paired with the baseline on the same
/// test sentences; the interval is recomputed here from the two predictions.jsonl files
/// (`synthcti::stats`, the `[study]` settings) and must be the one in intervals.csv; every
/// macro average runs over the same recorded class set L.
#[test]
fn augmented_cells_get_a_paired_interval_over_the_recorded_class_set() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let aug = "kind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 3\n[study]\nresamples = 200\nseed = 3";
    let (s, m) = sandbox(aug, &remote(&server.url, ""));
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    let rows = read_csv_rows(&run_dir.join("intervals.csv"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let cell = |name: &str| -> serde_json::Value {
        let p = run_dir.join("cells").join(name).join("metrics.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (base, synth) = (cell(&row["baseline"]), cell(&row["augmented"]));
    assert_eq!(base["cell"]["augment"], "none");
    assert_eq!(synth["cell"]["augment"], "synthetic");
    // L: the 4 classes of the small TRAM rows, all in the test split, identical in both cells.
    let l = base["metrics"]["macro_classes"].as_array().unwrap().clone();
    assert_eq!(l.len(), 4, "{l:?}");
    assert_eq!(synth["metrics"]["macro_classes"].as_array().unwrap(), &l);
    assert_eq!(synth["target_classes"], serde_json::json!(["T1027"]));
    assert_eq!(row["classes"], "4");
    assert_eq!(row["target_classes"], "1");

    let preds = |name: &str| -> Vec<(String, String)> {
        let p = run_dir.join("cells").join(name).join("predictions.jsonl");
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["gold"].as_str().unwrap().into(),
                    v["pred"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let (bp, ap) = (preds(&row["baseline"]), preds(&row["augmented"]));
    let mut names: Vec<String> = l.iter().map(|c| c.as_str().unwrap().to_string()).collect();
    for (g, p) in bp.iter().chain(&ap) {
        for c in [g, p] {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    let ix = |c: &String| names.iter().position(|n| n == c).unwrap();
    let gold: Vec<usize> = bp.iter().map(|(g, _)| ix(g)).collect();
    let b: Vec<usize> = bp.iter().map(|(_, p)| ix(p)).collect();
    let a: Vec<usize> = ap.iter().map(|(_, p)| ix(p)).collect();
    let labels: Vec<usize> = (0..l.len()).collect();
    let pair = synthcti::stats::Paired {
        gold: &gold,
        baseline: &b,
        augmented: &a,
    };
    let boot = synthcti::stats::Bootstrap {
        resamples: 200,
        seed: 3,
    };
    let t = vec![ix(&"T1027".to_string())];
    let ivs = synthcti::stats::pooled_deltas(&[pair], &[&labels, &t], boot);
    let (iv, it) = (ivs[0], ivs[1]);
    assert_eq!(iv, synthcti::stats::paired_delta(pair, &labels, boot));
    let f = |x: f64| format!("{x:.4}");
    assert_eq!(row["delta_macro_f1"], f(iv.delta));
    assert_eq!(row["delta_lo"], f(iv.lo));
    assert_eq!(row["delta_hi"], f(iv.hi));
    assert!(iv.lo <= iv.delta && iv.delta <= iv.hi, "{iv:?}");
    // The macro-F1 in metrics.json is the one over L.
    let base_f1 = synthcti::stats::macro_f1_over(&gold, &b, &labels);
    assert!((base["metrics"]["macro_f1"].as_f64().unwrap() - base_f1).abs() < 1e-12);
    assert_eq!(row["delta_target_macro_f1"], f(it.delta));
    assert_eq!(row["delta_target_lo"], f(it.lo));

    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(
        md.contains("## Paired comparison: augmented − baseline"),
        "{md}"
    );
    assert!(md.contains("200 resamples, seed 3"), "{md}");
    assert!(
        md.contains(&format!("{:+.4} [{:+.4}, {:+.4}]", iv.delta, iv.lo, iv.hi)),
        "{md}"
    );

    // `report` rebuilds the same intervals from disk; records of an older synthcti (no
    // `macro_classes`) get no interval rather than a made-up [0, 0].
    let before = std::fs::read_to_string(run_dir.join("intervals.csv")).unwrap();
    let o = s.cmd(&["report", run_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(run_dir.join("intervals.csv")).unwrap(),
        before
    );
    for name in [&row["baseline"], &row["augmented"]] {
        let p = run_dir.join("cells").join(name).join("metrics.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["metrics"]
            .as_object_mut()
            .unwrap()
            .remove("macro_classes");
        std::fs::write(&p, v.to_string()).unwrap();
    }
    let o = s.cmd(&["report", run_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(read_csv_rows(&run_dir.join("intervals.csv")).is_empty());
    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(md.contains("No augmented cell has a baseline"), "{md}");
}

#[test]
fn openai_429_then_200_waits_as_retry_after_says() {
    let server = llm_server::start(|n, _| {
        if n == 0 {
            Reply::status(
                429,
                r#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}"#,
            )
            .header("Retry-After", "1")
        } else {
            Reply::sentences(3, n)
        }
    });
    let (s, m) = sandbox(ONE_CALL, &remote(&server.url, ""));
    let t = Instant::now();
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.requests().len(), 2);
    let log = run_log(&run_dir);
    assert!(
        log.contains("HTTP 429, retry 1/2 in 1.00s (Retry-After)"),
        "{log}"
    );
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "3");
}

/// Two replicates generate apart: the log's generate lines, `timings.json` and the synthetic data
/// table of `summary.md` name each replicate's chain, not one label twice.
#[test]
fn each_replicates_chain_is_named_apart_in_the_log_timings_and_summary() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let (s, m) = sandbox(ONE_CALL, &remote(&server.url, ""));
    let run_dir = run_ok(&s, &m, "results/r", &["--set", "experiment.replicates=2"]);
    assert_eq!(server.requests().len(), 2, "one call per replicate");
    let log = run_log(&run_dir);
    for r in 0..2 {
        assert!(
            log.contains(&format!(
                "generate r{r}-k1-cluster-guided-remote-n3: 1 calls for 1 techniques"
            )),
            "{log}"
        );
    }
    let timings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(run_dir.join("timings.json")).unwrap()).unwrap();
    let chains: Vec<&str> = timings
        .iter()
        .filter(|t| t["stage"] == "synthesize")
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        chains,
        [
            "r0-k1-cluster-guided-remote-n3",
            "r1-k1-cluster-guided-remote-n3"
        ]
    );
    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(
        md.contains("| replicate | k | template | generator | per technique |"),
        "{md}"
    );
    for r in 0..2 {
        assert!(
            md.contains(&format!(
                "| {r} | 1 | cluster-guided | remote | 3 | 1 | 3 | 3 |"
            )),
            "{md}"
        );
    }
}

#[test]
fn openai_repeated_500s_give_up_after_the_cap_and_a_rerun_retries() {
    let server = llm_server::start(|_, _| {
        Reply::status(
            500,
            r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
        )
    });
    let (s, m) = sandbox(ONE_CALL, &remote(&server.url, ""));
    let o = run(&s, &m, "results/r1", &[]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "no answer, no result: {}",
        stderr(&o)
    );
    let run_dir = s.path("results/r1");
    assert_eq!(server.requests().len(), 3, "1 try + max_retries = 2");
    let log = run_log(&run_dir);
    assert!(log.contains("HTTP 500, retry 1/2"), "{log}");
    assert!(log.contains("HTTP 500, giving up after 2 retries"), "{log}");
    assert!(log.contains("T1027 cluster 0 sample 0 failed"), "{log}");
    assert!(
        log.contains("0 of 1 LLM calls succeeded (1 failed, 0 skipped over budget); last error: HTTP 500: the server answered with an error (type server_error): boom. Check the generator `remote`"),
        "{log}"
    );
    assert_eq!(
        read_csv_rows(&run_dir.join("summary.csv"))[0]["status"],
        "failed"
    );
    assert_eq!(
        cache_entries(&s, "llm-call"),
        0,
        "a failed call is not cached"
    );

    // The endpoint recovers: the failed call is made again, and now kept.
    let good = llm_server::start(|n, _| Reply::sentences(3, n));
    let run_dir = run_ok(
        &s,
        &m,
        "results/r2",
        &["--set", &format!("generator.base_url={}", good.url)],
    );
    assert_eq!(good.requests().len(), 1);
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "3");
}

#[test]
fn openai_timeout_is_retried() {
    let server = llm_server::start(|n, _| {
        if n == 0 {
            Reply::sentences(3, n).delayed(Duration::from_secs(4))
        } else {
            Reply::sentences(3, n)
        }
    });
    let (s, m) = sandbox(ONE_CALL, &remote(&server.url, "timeout_s = 1"));
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    let log = run_log(&run_dir);
    assert!(log.contains("timed out after 1.0s, retry 1/2"), "{log}");
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "3");
}

#[test]
fn openai_malformed_and_truncated_bodies_fail_their_call_not_the_run() {
    let full = Reply::sentences(1, 9).body;
    let server = llm_server::start(move |n, _| match n {
        0 => Reply::raw("this is not json"),
        1 => Reply::raw(&full[..full.len() / 2]),
        _ => Reply::sentences(1, n),
    });
    let (s, m) = sandbox(THREE_CALLS, &remote(&server.url, "concurrency = 1"));
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    assert_eq!(server.requests().len(), 3);
    let log = run_log(&run_dir);
    assert_eq!(log.matches("malformed response body").count(), 2, "{log}");
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "1");
    assert_eq!(
        cache_entries(&s, "llm-call"),
        1,
        "only the good answer is cached"
    );
}

#[test]
fn openai_answer_without_usable_sentences_is_logged() {
    let server = llm_server::start(|n, _| {
        if n == 0 {
            Reply::ok("Sure! Here you go:")
        } else {
            Reply::sentences(1, n)
        }
    });
    let (s, m) = sandbox(THREE_CALLS, &remote(&server.url, "concurrency = 1"));
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    let log = run_log(&run_dir);
    assert!(
        log.contains("T1027: 1 of 3 answers had no usable sentence"),
        "{log}"
    );
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "2");
}

#[test]
fn openai_budget_stops_spending() {
    let server = llm_server::start(|n, _| Reply::sentences(1, n));
    let (s, m) = sandbox(
        THREE_CALLS,
        &remote(&server.url, "concurrency = 1\nbudget_calls = 1"),
    );
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    assert_eq!(server.requests().len(), 1);
    let log = run_log(&run_dir);
    assert_eq!(log.matches("call budget of 1 reached").count(), 2, "{log}");
    let row = synthetic_row(&run_dir);
    assert_eq!(row["synthetic_kept"], "1");

    let server = llm_server::start(|n, _| Reply::sentences(1, n));
    let (s, m) = sandbox(
        THREE_CALLS,
        &remote(&server.url, "concurrency = 1\nbudget_tokens = 200"),
    );
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    // Each answer costs 120 tokens: the second call passes (120 < 200), the third does not.
    assert_eq!(server.requests().len(), 2);
    assert!(run_log(&run_dir).contains("token budget of 200 reached"));
}

#[test]
fn a_killed_generation_resumes_without_repeating_finished_calls() {
    let server =
        llm_server::start(|n, _| Reply::sentences(1, n).delayed(Duration::from_millis(400)));
    let plan =
        "kind = \"synthetic\"\ngenerator = \"remote\"\nk = 1\nper_technique = 8\nper_call = 1";
    let (s, m) = sandbox(plan, &remote(&server.url, "concurrency = 1"));
    let mut child = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--out",
            s.path("results/killed").to_str().unwrap(),
        ])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .env("TEST_LLM_KEY", KEY)
        .current_dir(s.path(""))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while cache_entries(&s, "llm-call") < 3 {
        assert!(t.elapsed() < Duration::from_secs(120), "no call finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = cache_entries(&s, "llm-call");
    assert!(finished < 8, "killed too late to test anything");

    let again = llm_server::start(|n, _| Reply::sentences(1, n + 100));
    let run_dir = run_ok(
        &s,
        &m,
        "results/resumed",
        &["--set", &format!("generator.base_url={}", again.url)],
    );
    assert_eq!(
        again.requests().len(),
        8 - finished,
        "finished calls must not be made again"
    );
    let log = run_log(&run_dir);
    assert!(
        log.contains(&format!("{} made, {finished} cached", 8 - finished)),
        "{log}"
    );
    assert!(s.files_under("cache/tmp").is_empty());
}

#[test]
fn replay_answers_from_the_cache_and_a_miss_names_the_prompt() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let replay = "[[generator]]\nname = \"again\"\nprovider = \"replay\"\nof = \"remote\"\n";
    let (s, m) = sandbox(ONE_CALL, &(remote(&server.url, "") + replay));
    run_ok(&s, &m, "results/first", &[]);
    assert_eq!(server.requests().len(), 1);

    let run_dir = run_ok(
        &s,
        &m,
        "results/replayed",
        &["--set", "augment.generator=again"],
    );
    assert_eq!(server.requests().len(), 1, "a replay makes no call");
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "3");

    // A prompt that was never sent: the zero-shot template.
    let o = run(
        &s,
        &m,
        "results/miss",
        &[
            "--set",
            "augment.generator=again",
            "--set",
            "augment.template=zero-shot",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let log = run_log(&s.path("results/miss"));
    assert!(log.contains("no cached answer"), "{log}");
    assert!(log.contains("T1027 cluster 0 sample 0"), "{log}");
    assert!(
        log.contains("how adversaries use Obfuscated Files or Information"),
        "{log}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn local_smollm2_writes_real_text_and_a_warm_rerun_makes_no_call() {
    let generator = format!(
        "[[generator]]\nname = \"smollm2\"\nprovider = \"local\"\nmodel = \"{}\"\nmax_tokens = 64\nthreads = 2\ncontext = 1024\n",
        smollm2().display()
    );
    // 64 tokens: room for one sentence (under 24, both answers' only item was cut off, and the
    // cut-off filter removed it). Unconstrained, SmolLM2-135M often writes the technique's ID
    // (the prompt names it) or an opening such as "Here is…"; this test is about the provider
    // and the call cache, so the attack-id and meta filters (tested in filter.rs and junk.rs)
    // are off here: the cell must keep what the model wrote.
    let (s, m) = sandbox(
        "kind = [\"none\", \"synthetic\"]\nk = 2\nper_technique = 2\nper_call = 1\n[augment.filter]\nattack_ids = false\nmeta = false",
        &generator,
    );
    let run_dir = run_ok(&s, &m, "results/cold", &[]);
    let rows = read_csv_rows(&run_dir.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    let none = rows.iter().find(|r| r["augment"] == "none").unwrap();
    assert_eq!(none["k"], "");
    let row = synthetic_row(&run_dir);
    assert_eq!(row["k"], "2");
    assert_eq!(row["generator"], "smollm2");
    assert_eq!(row["llm_calls"], "2");
    let log = run_log(&run_dir);
    assert!(log.contains("2 calls: 2 made, 0 cached"), "{log}");
    // Real generated text is in the call cache.
    assert_eq!(cache_entries(&s, "llm-call"), 2);
    let answers: Vec<String> = s
        .files_under("cache/entries/llm-call")
        .into_iter()
        .filter(|p| p.ends_with("answer.json"))
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            assert!(v["completion_tokens"].as_u64().unwrap() <= 64);
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        answers.iter().all(|a| a.chars().any(char::is_alphabetic)),
        "{answers:?}"
    );

    let t = Instant::now();
    let warm = run_ok(&s, &m, "results/warm", &[]);
    let log = run_log(&warm);
    assert!(!log.contains("made"), "a warm rerun makes no call: {log}");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(
        std::fs::read_to_string(run_dir.join("synthetic.csv")).unwrap(),
        std::fs::read_to_string(warm.join("synthetic.csv")).unwrap()
    );
}

#[test]
fn plan_lists_targets_and_says_where_k_is_clipped() {
    let (s, m) = sandbox(
        "kind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = [1, 64]",
        &remote("http://127.0.0.1:9/v1", ""),
    );
    let o = s.cmd_env(
        &["plan", m.to_str().unwrap(), "--json"],
        &[("TEST_LLM_KEY", KEY)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["cells"].as_array().unwrap().len(), 3);
    let notes: Vec<&str> = plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("1 target techniques") && n.contains("T1027")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("T1027: k clipped from 64 to")),
        "{notes:?}"
    );
    let synthetic = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["augment"] == "synthetic")
        .unwrap();
    let stages: Vec<&str> = synthetic["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "load", "split", "cluster", "generate", "filter", "train", "evaluate"
        ]
    );
}

#[test]
fn clusters_can_come_from_minilm_embeddings() {
    let minilm = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let server = llm_server::start(|n, _| Reply::sentences(2, n));
    let (s, m) = sandbox(
        &format!(
            "kind = \"synthetic\"\ngenerator = \"remote\"\nk = 2\nper_technique = 4\nper_call = 2\nembedding = \"encoder\"\nencoder = \"{}\"",
            minilm.display()
        ),
        &remote(&server.url, ""),
    );
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    assert_eq!(server.requests().len(), 2, "one call per cluster");
    let prompts: Vec<String> = server.requests().iter().map(|r| r.prompt()).collect();
    assert_ne!(
        prompts[0], prompts[1],
        "each cluster shows its own examples"
    );
    // The target's train sentences were embedded (and cached) for the clustering.
    let embedded = s
        .files_under("cache/embeddings")
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "f32"))
        .count();
    assert!(embedded >= 20, "{embedded}");
    assert_eq!(synthetic_row(&run_dir)["synthetic_kept"], "4");
}

/// summary.csv's rows by status: (the ok rows, the failed rows).
type Rows = Vec<std::collections::BTreeMap<String, String>>;
fn rows_by_status(run_dir: &Path) -> (Rows, Rows) {
    read_csv_rows(&run_dir.join("summary.csv"))
        .into_iter()
        .partition(|r| r["status"] == "ok")
}

#[test]
fn every_call_404_fails_the_augmented_cell_and_keeps_the_baseline() {
    // Ollama's answer for a model that is not pulled.
    let server = llm_server::start(|_, _| Reply::not_found("test-model"));
    let (s, m) = sandbox(
        "kind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 1",
        &remote(&server.url, "concurrency = 1"),
    );
    let o = run(&s, &m, "results/r", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 3, "a 404 is not retried");
    let run_dir = s.path("results/r");
    let why = "its synthetic data (k1-cluster-guided-remote-n3) failed: 0 of 3 LLM calls succeeded (3 failed, 0 skipped over budget); last error: HTTP 404: API error: model \"test-model\" not found, try pulling it first. Check the generator `remote` (its model, `base_url`, key and budget) and rerun: failed calls are not cached, so a rerun makes them again";
    let (ok, failed) = rows_by_status(&run_dir);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["augment"], "none");
    assert_eq!(ok[0]["error"], "");
    let baseline_f1 = &ok[0]["macro_f1"];
    assert!(baseline_f1.parse::<f64>().unwrap() > 0.0, "{baseline_f1}");
    assert_eq!(failed.len(), 1);
    let cell = &failed[0]["cell"];
    assert!(cell.starts_with("fasttext-synthetic-"), "{cell}");
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["error"], why);
    // Not a result: no figures, so nothing reads as the baseline's macro-F1.
    for col in ["macro_f1", "accuracy", "synthetic_kept", "llm_tokens"] {
        assert_eq!(failed[0][col], "", "{col}");
    }
    let dir = run_dir.join("cells").join(cell);
    assert_eq!(std::fs::read_to_string(dir.join("error.txt")).unwrap(), why);
    assert!(!dir.join("metrics.json").exists());
    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("## Failed cells\n\n- `{cell}`: {why}\n")),
        "{md}"
    );
    assert_eq!(
        md.matches(cell.as_str()).count(),
        1,
        "only in the failed list, not in the table: {md}"
    );
    assert!(
        stdout(&o).contains(&format!("FAILED {cell}: {why}")),
        "{}",
        stdout(&o)
    );
    let log = run_log(&run_dir);
    assert!(
        log.contains(
            "synthetic data k1-cluster-guided-remote-n3 failed: 0 of 3 LLM calls succeeded"
        ),
        "{log}"
    );
}

#[test]
fn answers_the_filters_remove_entirely_fail_the_augmented_cell() {
    // A preamble (malformed) and the prompt's own real examples (duplicates of train sentences).
    let server = llm_server::start(|_, r| {
        let prompt = r.prompt();
        let examples: Vec<&str> = prompt
            .lines()
            .filter_map(|l| l.strip_prefix("- "))
            .collect();
        let mut text = String::from("Here are the sentences:\n");
        for (i, e) in examples.iter().enumerate() {
            text.push_str(&format!("{}. {e}\n", i + 1));
        }
        Reply::ok(&text)
    });
    let (s, m) = sandbox(
        // TRAM's short T1027 sentences ("Obfuscated PowerShell script") pass `min_words = 1`.
        &format!("{ONE_CALL}\nrepresentatives = 2\n[augment.filter]\nmin_words = 1"),
        &remote(&server.url, ""),
    );
    let o = run(&s, &m, "results/r", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 1);
    let run_dir = s.path("results/r");
    let why = "its synthetic data (k1-cluster-guided-remote-n3) failed: the filters removed every sentence parsed from the answers (3 sentences from 1 answered call: malformed 1, real-duplicate 2); the cell's synthetic.jsonl names the filter that removed each; change the template or the generator, or loosen `[augment.filter]`";
    let (ok, failed) = rows_by_status(&run_dir);
    assert!(ok.is_empty());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], why);
    let dir = run_dir.join("cells").join(&failed[0]["cell"]);
    assert_eq!(std::fs::read_to_string(dir.join("error.txt")).unwrap(), why);
    let rejected: Vec<String> = std::fs::read_to_string(dir.join("synthetic.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["kept"], false);
            v["rejected_by"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(rejected, ["malformed", "real-duplicate", "real-duplicate"]);
    // The per-technique counts are still written.
    let csv = read_csv_rows(&run_dir.join("synthetic.csv"));
    assert_eq!(csv.len(), 1);
    assert_eq!(csv[0]["removed_malformed"], "1");
    assert_eq!(csv[0]["removed_real-duplicate"], "2");
    assert_eq!(csv[0]["kept"], "0");
}

#[test]
fn a_target_rule_that_selects_nothing_stops_before_any_work() {
    // Validation, not a failed cell: the rule is a manifest mistake that the data shows before a
    // call or a training, and every synthetic cell would fail the same way.
    let (s, m) = sandbox_targets(
        "kind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\nk = 1\nper_technique = 3",
        "below = 1",
        &remote("http://127.0.0.1:9/v1", ""),
    );
    let why = format!(
        "error: {}, key `augment.targets`: the rule (train count < 1) selects none of the 4 techniques of the train split; the rarest is T1059.003 with 25, so the synthetic cells would get no data; raise `below`, use `quantile`, or `list` techniques that are in the data",
        m.display()
    );
    let o = run(&s, &m, "results/r", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().last(), Some(why.as_str()));
    assert!(s.files_under("results").is_empty(), "no run folder");
    assert_eq!(cache_entries(&s, "train"), 0, "nothing trained");
    let o = s.cmd_env(&["plan", m.to_str().unwrap()], &[("TEST_LLM_KEY", KEY)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().last(), Some(why.as_str()));
}

/// A budget of 100 tokens against a server that reports no usage: the first call's estimate
/// (characters / 4 of the prompt and of the answer) passes it, so the other two are not made —
/// with 4 calls allowed in flight, which must not all be sent before any usage is known.
fn budget_holds_without_usage(reply: fn(Reply) -> Reply) {
    let server = llm_server::start(move |n, _| reply(Reply::sentences(1, n)));
    let (s, m) = sandbox(
        THREE_CALLS,
        &remote(&server.url, "concurrency = 4\nbudget_tokens = 100"),
    );
    let run_dir = run_ok(&s, &m, "results/r", &[]);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "the estimate stops the next calls");
    let prompt = reqs[0].prompt();
    let answer = Reply::sentences(1, 0).text();
    let tokens = prompt.chars().count().div_ceil(4) + answer.chars().count().div_ceil(4);
    assert!(tokens > 100, "{tokens}");
    let log = run_log(&run_dir);
    assert!(
        log.contains("generate remote: T1027 cluster 0 sample 0: the server sent no token usage; tokens are estimated as characters / 4 (rounded up) of the prompt and the answer, and counted against the budget"),
        "{log}"
    );
    assert_eq!(
        log.matches(&format!(
            "skipped: token budget of 100 reached ({tokens} tokens spent, {tokens} of them estimated: the server sent no usage)"
        ))
        .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "1 made, 0 cached, 0 failed, 2 skipped; {} prompt + {} completion tokens, {tokens} of them estimated (no usage from the server for 1 of the 1 answers)",
            prompt.chars().count().div_ceil(4),
            answer.chars().count().div_ceil(4)
        )),
        "{log}"
    );
    let row = synthetic_row(&run_dir);
    assert_eq!(row["status"], "ok", "a partial generation is a result");
    assert_eq!(row["synthetic_kept"], "1");
    assert_eq!(row["llm_tokens"], tokens.to_string());
    assert_eq!(row["llm_tokens_estimated"], tokens.to_string());
    let md = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(md.contains(&format!("({tokens} estimated) |")), "{md}");
    // The cached answer says its counts are estimates.
    let answers: Vec<serde_json::Value> = s
        .files_under("cache/entries/llm-call")
        .into_iter()
        .filter(|p| p.ends_with("answer.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["usage_estimated"], true);
    assert_eq!(
        answers[0]["prompt_tokens"],
        prompt.chars().count().div_ceil(4)
    );
}

#[test]
fn token_budget_holds_when_the_usage_field_is_absent() {
    budget_holds_without_usage(Reply::without_usage);
}

#[test]
fn token_budget_holds_when_usage_is_null() {
    budget_holds_without_usage(Reply::null_usage);
}

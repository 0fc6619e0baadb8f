//! End-to-end: `synthcti generate MANIFEST [--out FILE]` writes the synthetic data set alone, with
//! provenance, and trains nothing — against an OpenAI-compatible server on 127.0.0.1.

mod common;
use common::llm_server::{self, Reply};
use common::*;
use std::path::PathBuf;

fn sandbox(url: &str, kind: &str) -> (Sandbox, PathBuf) {
    sandbox_with(url, kind, 3, "")
}

/// [`sandbox`] asking for `per_technique` sentences (3 per call), with generator settings added.
fn sandbox_with(
    url: &str,
    kind: &str,
    per_technique: usize,
    generator: &str,
) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\n\
             [augment]\nkind = {kind}\ngenerator = \"remote\"\nk = 1\nper_technique = {per_technique}\nper_call = 3\n\
             [augment.targets]\nlist = [\"T1027\"]\n\n\
             [[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\n\
             max_tokens = 64\nmax_retries = 0\n{generator}\n"
        ),
    );
    (s, m)
}

#[test]
fn generate_writes_kept_sentences_with_provenance_and_trains_nothing() {
    // One junk line per filter family beside three good sentences.
    let answer = "1. The operators packed the loader with a custom crypter to hide it from antivirus.\n\
        2. Here is a list of more sentences from the threat report.\n\
        3. Strings inside the implant were encrypted with RC4 and decrypted only in memory.\n\
        4. The dropper used technique T1027 to obfuscate its payload on disk.\n\
        5. A PowerShell stage was hidden behind several layers of string concatenation.";
    let server = llm_server::start(move |_, _| Reply::ok(answer));
    let (s, m) = sandbox(&server.url, "[\"none\", \"synthetic\"]");
    let out = s.path("synthetic.jsonl");
    let o = s.cmd(&[
        "generate",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("3 synthetic sentences: {}", out.display())));
    assert_eq!(server.requests().len(), 1);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "The operators packed the loader with a custom crypter to hide it from antivirus.",
            "Strings inside the implant were encrypted with RC4 and decrypted only in memory.",
            "A PowerShell stage was hidden behind several layers of string concatenation."
        ]
    );
    let call_keys: Vec<String> = s
        .files_under("cache/entries/llm-call")
        .into_iter()
        .filter(|p| p.ends_with("answer.json"))
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(call_keys.len(), 1);
    for r in &rows {
        let o = r.as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "call_key",
                "cluster",
                "filters_passed",
                "generator",
                "k",
                "model",
                "prompt_key",
                "provider",
                "replicate",
                "seed",
                "split_seed",
                "technique",
                "template",
                "text"
            ]
        );
        assert_eq!(r["technique"], "T1027");
        assert_eq!(r["cluster"], 0);
        assert_eq!(r["k"], 1);
        assert_eq!(r["template"], "cluster-guided");
        assert_eq!(r["generator"], "remote");
        assert_eq!(r["provider"], "openai");
        assert_eq!(r["model"], "test-model");
        assert_eq!(
            (
                r["replicate"].as_u64(),
                r["split_seed"].as_u64(),
                r["seed"].as_u64()
            ),
            (Some(0), Some(7), Some(0))
        );
        assert_eq!(r["prompt_key"].as_str().unwrap().len(), 64);
        assert!(
            call_keys[0].contains(r["call_key"].as_str().unwrap()),
            "{} vs {:?}",
            r["call_key"],
            call_keys
        );
        assert_eq!(
            r["filters_passed"],
            serde_json::json!([
                "empty",
                "malformed",
                "cut-off",
                "overlong",
                "attack-id",
                "meta",
                "repetition",
                "duplicate",
                "real-duplicate",
                "near-duplicate",
                "near-real",
                "leakage",
                "quota"
            ])
        );
    }
    assert_eq!(cache_entries(&s, "train"), 0, "nothing trained");
    assert!(s.files_under("results").is_empty(), "no run folder");

    // Again, to standard output, from the cache: no new call, the same lines, and a log that
    // says where the calls and the filter's verdicts came from.
    let first_log = stderr(&o);
    let o = s.cmd(&["generate", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(stdout(&o), std::fs::read_to_string(&out).unwrap());
    let line = |log: &str, prefix: &str| -> String {
        log.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {log}"))
            .to_string()
    };
    let warm = stderr(&o);
    assert_eq!(
        line(&warm, "filter "),
        format!("{} (from the cache)", line(&first_log, "filter "))
    );
    // "generate X: 1 calls: 1 made, …; P prompt + C completion tokens (…)" the first time.
    let made = first_log
        .lines()
        .find(|l| l.starts_with("generate ") && l.contains(" made, "))
        .unwrap_or_else(|| panic!("no made line in {first_log}"));
    let (head, rest) = made.split_once(": 1 calls: 1 made, ").expect("a made line");
    let tokens = rest.split("; ").nth(1).unwrap().split(" (").next().unwrap();
    assert!(tokens.ends_with(" completion tokens"), "{made}");
    // A remote model has no load time in the stage.
    assert!(
        made.contains(" completion tokens/s over the stage's ") && !made.contains("model load"),
        "{made}"
    );
    assert_eq!(
        line(&warm, "generate "),
        format!("{head}: 1 calls for 1 techniques, {tokens} (from the cache)")
    );
}

#[test]
fn generate_without_a_synthetic_cell_or_with_a_missing_out_folder_stops_before_any_call() {
    let server = llm_server::start(|_, _| Reply::sentences(3, 0));
    let (s, m) = sandbox(&server.url, "\"none\"");
    let o = s.cmd(&["generate", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).lines().last(),
        Some(
            "error: the grid has no synthetic cell, so there is nothing to generate; add \"synthetic\" to `augment.kind`"
        )
    );
    let (s, m) = sandbox(&server.url, "\"synthetic\"");
    let out = s.path("no/such/dir/x.jsonl");
    let o = s.cmd(&[
        "generate",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).lines().last().unwrap(),
        format!(
            "error: --out {}: the folder {} does not exist; create it or write elsewhere",
            out.display(),
            out.parent().unwrap().display()
        )
    );
    assert!(server.requests().is_empty());
}

#[test]
fn structured_openai_asks_for_exactly_the_items_and_still_reads_a_plain_list() {
    let json = serde_json::json!({"sentences": [
        "The operators packed the loader with a custom crypter to hide it from antivirus.",
        "Strings inside the implant were encrypted with RC4 and decrypted only in memory.",
        "A PowerShell stage was hidden behind several layers of string concatenation."
    ]})
    .to_string();
    // The second call's endpoint ignores `response_format` and answers a numbered list.
    let server = llm_server::start(move |n, _| {
        if n == 0 {
            Reply::ok(&json)
        } else {
            Reply::ok(
                "1. The dropper stored its payload as an XOR-encoded blob inside a PNG image.\n\
                 2. Analysts saw base64 chunks of the script reassembled only at run time.\n\
                 3. The backdoor renamed its imports to frustrate static analysis tools.",
            )
        }
    });
    let (s, m) = sandbox_with(
        &server.url,
        "\"synthetic\"",
        6,
        "concurrency = 1\nstructured = true\nitem_chars = 200",
    );
    let out = s.path("synthetic.jsonl");
    let o = s.cmd(&[
        "generate",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.body["response_format"],
            serde_json::json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "sentences",
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {"sentences": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 200},
                            "minItems": 3,
                            "maxItems": 3
                        }},
                        "required": ["sentences"],
                        "additionalProperties": false
                    }
                }
            })
        );
    }
    let kept = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(kept, 6, "3 from the JSON answer, 3 from the plain list");

    // An unstructured generator sends no response_format.
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let (s, m) = sandbox(&server.url, "\"synthetic\"");
    let o = s.cmd(&["generate", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.requests()[0].body.get("response_format").is_none());
}

/// With `experiment.replicates = 3`, `generate` writes every replicate's chain — each on its own
/// split and generator seed, the replicate named in each line — and replicate 0's lines are
/// those of a one-replicate manifest (the same calls, from the cache).
#[test]
fn generate_writes_every_replicates_chain_with_its_replicate() {
    let server = llm_server::start(|n, _| Reply::sentences(3, n));
    let (s, m) = sandbox(&server.url, "\"synthetic\"");
    let out = s.path("synthetic.jsonl");
    let o = s.cmd(&[
        "generate",
        m.to_str().unwrap(),
        "--set",
        "experiment.replicates=3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("9 synthetic sentences: {}", out.display())));
    // One call per replicate: each has its own seed, so its own call key.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    let seeds: Vec<u64> = reqs
        .iter()
        .map(|r| r.body["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [0, 1, 2]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let prov: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["replicate"].as_u64().unwrap(),
                r["split_seed"].as_u64().unwrap(),
                r["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for r in 0..3u64 {
        expected.extend([(r, 7 + r, r); 3]);
    }
    assert_eq!(prov, expected);
    let call_keys: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["call_key"].as_str().unwrap())
        .collect();
    assert_eq!(call_keys.len(), 3, "one call per replicate");
    // Each replicate's split differs, so its clusters' prompts do too.
    let prompts: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["prompt_key"].as_str().unwrap())
        .collect();
    assert_eq!(prompts.len(), 3);
    assert_eq!(cache_entries(&s, "split"), 3);
    assert_eq!(cache_entries(&s, "train"), 0, "nothing trained");

    // Replicate 0 is the manifest as written: a one-replicate generate makes no new call and
    // writes replicate 0's lines.
    let o = s.cmd(&["generate", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 3);
    let first: String = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stdout(&o), first);
}

#[test]
fn top_up_asks_each_cluster_again_for_what_the_filter_left_missing() {
    // 3 sentences asked in one call; the filter drops two of the answer's three (a meta-sentence
    // and a literal technique ID); one top-up round asks that cluster for the 2 it lacks.
    let first = "1. The operators packed the loader with a custom crypter to hide it from antivirus.\n\
        2. Here is a list of more sentences from the threat report.\n\
        3. The dropper used technique T1027 to obfuscate its payload on disk.";
    let again = "1. Strings inside the implant were encrypted with RC4 and decrypted only in memory.\n\
        2. A PowerShell stage was hidden behind several layers of string concatenation.";
    let server = llm_server::start(move |n, _| Reply::ok(if n == 0 { first } else { again }));
    let (s, m) = sandbox(&server.url, "\"synthetic\"");
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", m.to_str().unwrap(), "--quiet"];
        args.extend_from_slice(extra);
        let o = s.cmd(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].to_string())
            .collect::<Vec<_>>()
    };
    // Without top-up: one call, one sentence kept of 3.
    assert_eq!(generate(&[]).len(), 1);
    assert_eq!(server.requests().len(), 1);

    let texts = generate(&["--set", "augment.top_up=1"]);
    assert_eq!(
        texts,
        [
            "\"The operators packed the loader with a custom crypter to hide it from antivirus.\"",
            "\"Strings inside the implant were encrypted with RC4 and decrypted only in memory.\"",
            "\"A PowerShell stage was hidden behind several layers of string concatenation.\""
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the first call came from the cache");
    let prompt = requests[1].prompt();
    assert!(
        prompt.contains("numbered list of 2 new sentences"),
        "the top-up asks for what is missing: {prompt}"
    );

    assert_eq!(cache_entries(&s, "top-up"), 1);

    // A second round finds nothing missing and asks nothing (an entry with no calls).
    assert_eq!(generate(&["--set", "augment.top_up=2"]), texts);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(cache_entries(&s, "top-up"), 2);

    // The round is a stage of its own: without the per-call cache, a rerun still makes no call,
    // and `plan` lists each round and the filter after it, as cached, before the cells.
    std::fs::remove_dir_all(s.path("cache/entries/llm-call")).unwrap();
    assert_eq!(generate(&["--set", "augment.top_up=2"]), texts);
    assert_eq!(server.requests().len(), 2);
    let o = s.cmd(&[
        "plan",
        m.to_str().unwrap(),
        "--json",
        "--set",
        "augment.top_up=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages = plan_stages(&plan, 0);
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "load", "split", "cluster", "generate", "filter", "top-up", "filter", "top-up",
            "filter", "train", "evaluate"
        ]
    );
    assert!(stages[..9].iter().all(|(_, cached)| *cached), "{stages:?}");
}

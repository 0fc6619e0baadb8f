//! Local generation speed (run by `bash benches/generate.sh` beside llama.cpp's own
//! `llama-bench` and `llama-batched-bench`, built from the same llama.cpp release):
//! - one stream: SmolLM2-135M-Instruct Q4_1, 2 threads, the shipped `cluster-guided` prompt
//!   rendered for a real TRAM technique (its first three sentences as examples, 7 items asked,
//!   the technique whose prompt is nearest the real prompts' median length),
//!   exactly 128 new tokens (end of generation ignored, as the peers decode a fixed count),
//!   temperature 0.8 / top-p 0.95 / top-k 40 — decoding tokens/s (the
//!   tokens after the prompt, over the time after the prompt's evaluation) and end to end;
//! - parallel sequences: B samples of that prompt in one batch (the prompt evaluated once, its
//!   KV copied into each sequence's stream; `Session::generate_batch`), total tokens/s over
//!   decoding and end to end.
//!
//! Prints one JSON line per measurement (medians of RUNS).
//! Usage: cargo bench --bench generate -- [RUNS] [B,B,…]   (default 3 runs; batches 2,4,8,16)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;

use synthcti::data::attack::Catalog;
use synthcti::llm::local::{LocalModel, Request, Sampling};
use synthcti::prompt::{PromptTemplate, PromptVars, clean_description};

/// The median prompt length of experiments/tram.toml's calls (168 calls of one generation of
/// its 3 replicates with one top-up round, while the meta filter was being finished; SmolLM2's
/// chat template; the template without a persona; range 118–334).
const REAL_PROMPT_TOKENS: usize = 216;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let batches: Vec<u32> = args
        .get(1)
        .map(|a| {
            a.split(',')
                .map(|b| b.parse().expect("batch sizes"))
                .collect()
        })
        .unwrap_or_else(|| vec![2, 4, 8, 16]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::var("SYNTHCTI_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data"));

    let model = LocalModel::load(
        &root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        2,
        1024,
    )
    .expect("SmolLM2 GGUF in models/ (`just models`)");

    // A real prompt of the real prompts' length: the shipped template rendered as
    // experiments/tram.toml renders it (7 sentences asked, 3 example sentences, cluster 1 of 3)
    // for each TRAM technique with its first three sentences; the one nearest REAL_PROMPT_TOKENS.
    let catalog = Catalog::load(&data.join("attack/enterprise-attack-techniques-18.1.json"))
        .expect("the ATT&CK bundle");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(data.join("tram/single_label.json")).expect("TRAM single_label.json"),
    )
    .unwrap();
    let mut by_label: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for r in &rows {
        if let (Some(label), Some(text)) = (r["label"].as_str(), r["text"].as_str()) {
            by_label.entry(label).or_default().push(text.to_string());
        }
    }
    let template =
        PromptTemplate::resolve("cluster-guided", &root.join("templates")).expect("template");
    let probe = model.session().unwrap();
    let (technique, prompt, _) = by_label
        .iter()
        .filter(|(_, texts)| texts.len() >= 3)
        .filter_map(|(label, texts)| {
            let tech = catalog.get(label)?;
            let (description, full_description) = clean_description(&tech.description);
            let prompt = template
                .render(&PromptVars {
                    technique_id: tech.id.clone(),
                    technique_name: tech.name.clone(),
                    description,
                    full_description,
                    tactics: tech.tactics.clone(),
                    examples: texts[..3].to_vec(),
                    n: 7,
                    cluster: 0,
                    clusters: 3,
                })
                .unwrap();
            let len = probe.prompt_len(&prompt).unwrap();
            Some((*label, prompt, len))
        })
        .min_by_key(|(_, _, len)| len.abs_diff(REAL_PROMPT_TOKENS))
        .expect("a TRAM technique with three sentences");
    drop(probe);
    let sampling = |seed| Sampling {
        temperature: 0.8,
        top_p: 0.95,
        top_k: 40,
        max_tokens: 128,
        seed,
        repeat: None,
        item_decay: None,
        // Every call decodes 128 tokens, as llama-bench's tg128 and batched-bench's -ntg 128.
        ignore_eos: true,
    };

    let mut s = model.session().unwrap();
    // One warm-up call (page cache, thread pool).
    let warm = s.generate(&prompt, sampling(0)).unwrap();
    let (mut dec, mut e2e, mut toks) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let a = s.generate(&prompt, sampling(r as u32 + 1)).unwrap();
        dec.push(a.completion_tokens as f64 / a.decode_seconds.unwrap());
        e2e.push(a.completion_tokens as f64 / a.seconds);
        toks.push(a.completion_tokens as f64);
    }
    println!(
        "{}",
        serde_json::json!({"impl": "synthcti", "what": "single", "technique": technique,
            "prompt_tokens": warm.prompt_tokens,
            "runs": runs, "new_tokens": median(toks), "decode_tok_s": median(dec.clone()),
            "end_to_end_tok_s": median(e2e), "all_decode": dec})
    );
    drop(s);

    for &b in &batches {
        let mut s = model.session_for(b).unwrap();
        let (mut dec, mut e2e, mut toks) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..=runs {
            let reqs: Vec<Request> = (0..b)
                .map(|i| Request {
                    prompt: &prompt,
                    sampling: sampling(1000 * r as u32 + i + 1),
                    grammar: None,
                })
                .collect();
            let started = std::time::Instant::now();
            let answers: Vec<_> = s
                .generate_batch(&reqs)
                .unwrap()
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let wall = started.elapsed().as_secs_f64();
            if r == 0 {
                continue; // warm-up
            }
            let total: u64 = answers.iter().map(|a| a.completion_tokens).sum();
            // Each answer's times are its own: the batch decodes from the first sequence's
            // first token to the last one's end, which the longest decode spans (the prompts
            // are evaluated one after another, the first before any decoding).
            let decode = answers
                .iter()
                .map(|a| a.decode_seconds.unwrap())
                .fold(0.0, f64::max);
            dec.push(total as f64 / decode);
            e2e.push(total as f64 / wall);
            toks.push(total as f64);
        }
        println!(
            "{}",
            serde_json::json!({"impl": "synthcti", "what": "parallel", "batch": b,
                "prompt_tokens": warm.prompt_tokens, "runs": runs, "new_tokens_total": median(toks),
                "decode_tok_s": median(dec.clone()), "end_to_end_tok_s": median(e2e),
                "all_decode": dec})
        );
    }
}

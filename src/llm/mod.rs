//! LLM providers and the per-call cache.
//!
//! Every call is one cache entry (stage `llm-call`) whose key covers the provider kind, the model
//! (its id for a remote model, the BLAKE3 of the file for a GGUF), every sampling parameter, a
//! local model's context size (not its thread count), the rendered prompt and a sample index. An
//! entry is written only once the whole answer is in, into a temporary folder renamed into place,
//! so a run killed mid-generation repeats no finished call and trusts no partial answer. API keys
//! are never part of a key, an entry, a log or an error.

pub mod config;
pub mod local;
pub mod openai;
pub mod openai_answer;
pub mod structured;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, StageId};
use crate::error::{Error, Result};
use crate::llm::config::{GeneratorConfig, ProviderKind};
use crate::progress::Progress;

/// Version 2: the identity has `context`; an answer says whether its token counts are estimated.
pub const CALL_VERSION: u32 = 2;

/// Characters per token of the estimate used when a server reports no token usage: OpenAI's rule
/// of thumb for English text.
pub const CHARS_PER_TOKEN: usize = 4;

/// The tokens of a text when the server does not count them: its characters / [`CHARS_PER_TOKEN`],
/// rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(CHARS_PER_TOKEN) as u64
}

/// What identifies an answer, besides the prompt and sample index: the call key's parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// `local` or `openai` (a replay takes the identity of the generator it replays).
    pub provider: String,
    /// Remote model id, or `blake3:<hex>` of the GGUF file.
    pub model: String,
    pub temperature: f64,
    pub top_p: f64,
    /// Local models only (OpenAI-compatible APIs have no top-k); 0 elsewhere.
    pub top_k: u32,
    pub max_tokens: u32,
    pub seed: u64,
    /// Local models only: the context window in tokens, which bounds the prompt and the answer
    /// (a prompt that fills it fails, an answer that reaches it is cut); 0 elsewhere.
    pub context: u32,
    /// Constrained output (the generator's `structured = true`): the longest list item in
    /// characters. Absent otherwise, so the keys of unconstrained generators are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<structured::Shape>,
    /// Local models decoding several sequences in one batch (`parallel` > 1): the batch's
    /// size, since batched matrix products round differently from one sequence's. Absent
    /// otherwise, so the keys of one-sequence generators are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// Local models decoding several sequences in one batch: how their KV cache is laid out —
    /// `per-sequence`, one stream per sequence (see `local::LocalModel::session_for`), whose
    /// attention rounds differently from the unified cache that answers without this field
    /// were decoded in. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<String>,
    /// Local structured generators: how the grammar steers sampling — `pick-then-check`, the
    /// chain's pick checked against the grammar and re-picked among what it admits only when
    /// rejected (llama.cpp's `common_sampler`; see `local::CallSampler`). Absent otherwise;
    /// answers sampled grammar-first (synthcti before this field) had no such field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar_sampling: Option<String>,
    /// Local structured generators: which list grammar the answer is decoded under —
    /// `one-sentence-per-item`, each item a single sentence ([`structured::list_grammar`]).
    /// Absent otherwise; answers decoded under the first grammar (items of any number of
    /// sentences, synthcti before this field) had no such field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// Local generators with `repeat_penalty` ≠ 1: the penalty and the tokens it looks back
    /// over. Absent otherwise, so other keys are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<RepeatPenalty>,
    /// Local structured generators with `item_decay_start` > 0: the period's length penalty.
    /// Absent otherwise, so other keys are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_decay: Option<ItemDecay>,
    /// Local generators with `banned_words`: the words, lower case, sorted, each once (the ban
    /// is case-insensitive, so `You` and `you` are one key). Absent otherwise, so other keys are
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_words: Option<Vec<String>>,
}

/// The exponential length penalty of a local structured generator's list items (part of its
/// identity): Hugging Face transformers' `ExponentialDecayLengthPenalty` (`generate`'s
/// `exponential_decay_length_penalty = (start_index, decay_factor)`), counted in characters of
/// the current item and applied to the token `.` instead of end-of-sequence.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ItemDecay {
    /// Characters of an item after which the period is favoured.
    pub start: usize,
    /// Growth per character over `start` (> 1).
    pub factor: f64,
}

/// llama.cpp's repetition penalty of a local generator (part of its identity).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RepeatPenalty {
    /// Divides the logit of a recently generated token (> 1 discourages repeats).
    pub penalty: f64,
    /// Generated tokens looked back over.
    pub last_n: u32,
}

/// A generator ready to use: its identity and how to reach it.
#[derive(Debug, Clone)]
pub struct Generator {
    pub name: String,
    /// The provider that answers: `replay` answers from the cache only.
    pub provider: ProviderKind,
    pub identity: Identity,
    /// The configuration that makes calls (for a replay: the replayed generator's).
    pub config: GeneratorConfig,
    /// `local`: the GGUF path.
    pub model_path: Option<PathBuf>,
    /// `local` with `parallel` > 1 and `cache_ram_mib` > 0: prompts' KV states kept in memory
    /// across calls (see [`local::PromptStates`]); shared by clones. The pipeline gives each
    /// generation a store of its own for its first and top-up rounds
    /// ([`Generator::with_fresh_prompt_states`]). One sequence keeps none, so that its answers never depend on the calls
    /// before them.
    pub prompt_states: Option<std::sync::Arc<local::PromptStates>>,
}

impl Generator {
    /// Resolve a generator of the manifest: a replay takes the identity of the one it names; a
    /// local model is identified by the hash of its file (or `model = "blake3:<hex>"`, which only a
    /// replay can use).
    pub fn resolve(name: &str, all: &[GeneratorConfig]) -> Result<Self> {
        let cfg = all
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| Error::config(format!("no [[generator]] named `{name}`")))?;
        let (source, provider) = match cfg.provider {
            ProviderKind::Replay => {
                let of = cfg.of.as_deref().unwrap_or_default();
                let src = all.iter().find(|g| g.name == of).ok_or_else(|| {
                    Error::config(format!(
                        "generator `{name}`: `of = \"{of}\"` names no [[generator]]"
                    ))
                })?;
                (src, ProviderKind::Replay)
            }
            p => (cfg, p),
        };
        let (model, model_path) = match source.provider {
            ProviderKind::Local => {
                if let Some(h) = source.model.strip_prefix("blake3:") {
                    if provider != ProviderKind::Replay {
                        return Err(Error::config(format!(
                            "generator `{}`: `model = \"blake3:…\"` names a model by hash, which only a replay can use; give the path of the GGUF file",
                            source.name
                        )));
                    }
                    (format!("blake3:{h}"), None)
                } else {
                    let p = PathBuf::from(&source.model);
                    let h = crate::hash::input_hash(&p).map_err(|e| {
                        Error::config(format!(
                            "generator `{}`: cannot read the model file {} ({e}); run `just models` to fetch the default SmolLM2 GGUF into models/, or set `model` to the path of a GGUF file",
                            source.name,
                            p.display()
                        ))
                    })?;
                    (format!("blake3:{h}"), Some(p))
                }
            }
            ProviderKind::Openai => (source.model.clone(), None),
            ProviderKind::Replay => {
                return Err(Error::config(format!(
                    "generator `{name}` replays `{}`, which is itself a replay; name the generator that made the calls",
                    source.name
                )));
            }
        };
        Ok(Self {
            name: name.to_string(),
            provider,
            identity: Identity {
                provider: source.provider.as_str().to_string(),
                model,
                temperature: source.temperature,
                top_p: source.top_p,
                top_k: if source.provider == ProviderKind::Local {
                    source.top_k
                } else {
                    0
                },
                max_tokens: source.max_tokens,
                seed: source.seed,
                context: if source.provider == ProviderKind::Local {
                    source.context
                } else {
                    0
                },
                structured: source.structured.then_some(structured::Shape {
                    item_chars: source.item_chars,
                }),
                parallel: (source.provider == ProviderKind::Local && source.parallel > 1)
                    .then_some(source.parallel),
                kv_cache: (source.provider == ProviderKind::Local && source.parallel > 1)
                    .then(|| "per-sequence".to_string()),
                grammar_sampling: (source.provider == ProviderKind::Local && source.structured)
                    .then(|| "pick-then-check".to_string()),
                grammar: (source.provider == ProviderKind::Local && source.structured)
                    .then(|| structured::LIST_GRAMMAR.to_string()),
                repeat_penalty: (source.provider == ProviderKind::Local
                    && source.repeat_penalty != 1.0)
                    .then_some(RepeatPenalty {
                        penalty: source.repeat_penalty,
                        last_n: source.repeat_last_n,
                    }),
                item_decay: (source.provider == ProviderKind::Local
                    && source.structured
                    && source.item_decay_start > 0)
                    .then_some(ItemDecay {
                        start: source.item_decay_start,
                        factor: source.item_decay_factor,
                    }),
                banned_words: (source.provider == ProviderKind::Local
                    && !source.banned_words.is_empty())
                .then(|| {
                    source
                        .banned_words
                        .iter()
                        .map(|w| w.to_lowercase())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect()
                }),
            },
            config: source.clone(),
            prompt_states: (provider == ProviderKind::Local
                && source.parallel > 1
                && source.cache_ram_mib > 0)
                .then(|| std::sync::Arc::new(local::PromptStates::new(source.cache_ram_mib))),
            model_path,
        })
    }

    /// This generator with an empty store of prompt states of its own (when it keeps any): one
    /// generation and its top-up rounds share a store, and no other generation sees it, so that
    /// what a generation's calls answer never depends on another generation run before it in the
    /// same process (a replicate alone or after the others, a job array's task or one process).
    pub fn with_fresh_prompt_states(&self) -> Self {
        let mut g = self.clone();
        if g.prompt_states.is_some() {
            g.prompt_states = Some(std::sync::Arc::new(local::PromptStates::new(
                g.config.cache_ram_mib,
            )));
        }
        g
    }

    /// The cache id of one call.
    /// The cache key of one call: `items` (the sentences the prompt asks for) is part of it only
    /// for a structured generator, whose grammar or schema admits exactly that many.
    pub fn call_id(&self, prompt: &str, sample: u32, items: usize) -> StageId {
        StageId::of(
            &CallParams {
                identity: &self.identity,
                prompt,
                sample,
                items: self.identity.structured.map(|_| items),
            },
            &[],
        )
    }

    /// A short description for logs: `smollm2 (local SmolLM2-135M-Instruct.Q4_1.gguf)`.
    pub fn describe(&self) -> String {
        let model = match &self.model_path {
            Some(p) => p
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            None => self.identity.model.clone(),
        };
        format!("{} ({} {model})", self.name, self.provider.as_str())
    }
}

/// One LLM call's parameters, which are exactly its cache key: the generator's identity (model
/// by content, sampling settings, context), the prompt, and the sample index.
#[derive(Debug, Serialize)]
pub struct CallParams<'a> {
    pub identity: &'a Identity,
    pub prompt: &'a str,
    pub sample: u32,
    /// Structured generators only: the list items the output is constrained to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
}

impl crate::cache::StageParams for CallParams<'_> {
    const STAGE: &'static str = "llm-call";
    fn version(&self) -> u32 {
        CALL_VERSION
    }
}

/// A finished answer, as cached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The server reported no token usage, so both counts are [`estimate_tokens`] of the prompt
    /// and of the answer's text.
    pub usage_estimated: bool,
    /// Why generation stopped: `stop`, `length`, …
    pub finish_reason: String,
    /// Wall time of the call, and of its token generation alone (local only).
    pub seconds: f64,
    #[serde(default)]
    pub decode_seconds: Option<f64>,
    /// Local only: how many sequences the session decodes together (`parallel`; absent: one).
    /// `seconds` and `decode_seconds` are then this call's own, from its prompt's evaluation and
    /// from its first sampled token to its end, overlapping the other calls in flight (answers
    /// cached before continuous batching carry their batch's times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batched: Option<u32>,
}

/// One call to make.
#[derive(Debug, Clone)]
pub struct CallJob {
    pub id: StageId,
    pub prompt: String,
    /// For logs: `T1001 cluster 0 sample 1`.
    pub label: String,
    /// The sentences the prompt asks for (what a structured generator constrains the answer to).
    pub items: usize,
}

/// What became of a call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Answered now.
    Done { answer: Answer },
    /// Answered from the cache.
    Cached { answer: Answer },
    /// Gave up (after retries); a rerun tries again.
    Failed { error: String },
    /// Not made: the run's budget was spent.
    Skipped { reason: String },
}

impl Outcome {
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Done { answer } | Outcome::Cached { answer } => Some(answer),
            _ => None,
        }
    }
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::Cached { .. } => "cached",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
        }
    }
}

/// A per-run spending limit of one generator: calls made and tokens used (counted by the server,
/// or estimated where it sent no usage).
#[derive(Debug, Default)]
pub struct Budget {
    pub max_calls: Option<u64>,
    pub max_tokens: Option<u64>,
    calls: AtomicU64,
    tokens: AtomicU64,
    /// The part of `tokens` that is estimated.
    estimated: AtomicU64,
    /// Calls in flight and the upper bound of their tokens (see [`Budget::try_start`]).
    in_flight: Mutex<(u64, u64)>,
}

/// Whether a call may start now (see [`Budget::try_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Start it; report its answer with [`Budget::spend`] or its failure with
    /// [`Budget::release`], passing the same cost.
    Go,
    /// Calls in flight may use up what is left: try again when one of them has finished.
    Wait,
    /// The budget is spent: skip this call, for this reason.
    Stop(String),
}

impl Budget {
    pub fn new(max_calls: Option<u64>, max_tokens: Option<u64>) -> Self {
        Self {
            max_calls,
            max_tokens,
            ..Default::default()
        }
    }

    /// The most tokens a call can use: its prompt (estimated as characters / 4) and `max_tokens`
    /// of answer.
    pub fn call_cost(prompt: &str, max_tokens: u32) -> u64 {
        estimate_tokens(prompt) + max_tokens as u64
    }

    /// May a call of at most `cost` tokens start? With a token budget, a call starts only while
    /// the tokens spent plus the upper bound of every call in flight (this one included) stay
    /// within the budget — or, when nothing is in flight, while any budget is left. So calls in
    /// flight at once never overrun it together, whatever the concurrency: the budget is passed
    /// by at most the one call that started last, as when calls run one at a time.
    pub fn try_start(&self, cost: u64) -> Start {
        let mut flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.max_tokens {
            let spent = self.tokens.load(Ordering::SeqCst);
            if spent >= t {
                let estimated = self.estimated.load(Ordering::SeqCst);
                return Start::Stop(if estimated > 0 {
                    format!(
                        "token budget of {t} reached ({spent} tokens spent, {estimated} of them estimated: the server sent no usage)"
                    )
                } else {
                    format!("token budget of {t} reached")
                });
            }
            if flight.0 > 0 && spent + flight.1 + cost > t {
                return Start::Wait;
            }
        }
        let n = self.calls.load(Ordering::SeqCst);
        if let Some(m) = self.max_calls
            && n >= m
        {
            return Start::Stop(format!("call budget of {m} reached"));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        flight.0 += 1;
        flight.1 += cost;
        Start::Go
    }

    /// Count an answer's tokens against the budget; `cost` is what [`Budget::try_start`] was
    /// given for it.
    pub fn spend(&self, answer: &Answer, cost: u64) {
        let tokens = answer.prompt_tokens + answer.completion_tokens;
        self.tokens.fetch_add(tokens, Ordering::SeqCst);
        if answer.usage_estimated {
            self.estimated.fetch_add(tokens, Ordering::SeqCst);
        }
        self.release(cost);
    }

    /// A call that started ended without an answer (it failed): it no longer holds `cost`.
    pub fn release(&self, cost: u64) {
        let mut flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        flight.0 = flight.0.saturating_sub(1);
        flight.1 = flight.1.saturating_sub(cost);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }
}

/// Running totals for the progress bar: done / cached / failed and tokens per second.
pub struct Tally {
    pub bar: indicatif::ProgressBar,
    started: Instant,
    counts: Mutex<(u64, u64, u64, u64)>, // done, cached, failed, completion tokens
}

impl Tally {
    pub fn new(progress: &Progress, total: usize, what: &str) -> Self {
        Self {
            bar: progress.bar(total as u64, what),
            started: Instant::now(),
            counts: Mutex::new((0, 0, 0, 0)),
        }
    }
    pub fn record(&self, o: &Outcome) {
        let mut c = self.counts.lock().expect("tally");
        match o {
            Outcome::Done { answer } => {
                c.0 += 1;
                c.3 += answer.completion_tokens;
            }
            Outcome::Cached { .. } => c.1 += 1,
            Outcome::Failed { .. } | Outcome::Skipped { .. } => c.2 += 1,
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.inc(1);
        self.bar.set_message(format!(
            "{} done · {} cached · {} failed · {:.0} tok/s",
            c.0,
            c.1,
            c.2,
            c.3 as f64 / secs
        ));
    }
}

/// Read a cached answer.
pub fn cached_answer(cache: &Cache, id: &StageId) -> Result<Option<Answer>> {
    match cache.get(id)? {
        Some(e) => Ok(Some(e.read_json("answer.json")?)),
        None => Ok(None),
    }
}

/// Store a finished answer (atomically; see [`Cache::get_or_compute`]).
pub fn store_answer(cache: &Cache, id: &StageId, answer: &Answer) -> Result<()> {
    cache.get_or_compute(id, |w| w.write_json("answer.json", answer))?;
    Ok(())
}

/// Make the calls (cached ones are read, not repeated) and return their outcomes in order.
///
/// A replay generator answers only from the cache: a miss is an error naming the prompt. Failed
/// calls and calls over budget do not stop the others; each leaves a line in the run log.
pub fn run_calls(
    generator: &Generator,
    jobs: &[CallJob],
    cache: &Cache,
    budget: &Budget,
    progress: &Progress,
    what: &str,
) -> Result<Vec<Outcome>> {
    let tally = Tally::new(progress, jobs.len(), what);
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut pending = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match cached_answer(cache, &job.id)? {
            Some(answer) => {
                let o = Outcome::Cached { answer };
                tally.record(&o);
                outcomes.insert(i, o);
            }
            None => pending.push(i),
        }
    }
    if !pending.is_empty() {
        match generator.provider {
            ProviderKind::Replay => {
                tally.bar.finish_and_clear();
                let job = &jobs[pending[0]];
                return Err(Error::data(format!(
                    "replay generator `{}`: no cached answer for {} of the {} prompts; the first is {} (call key {}):\n{}\nRun the manifest once with generator `{}` to make these calls, or share its cache folder",
                    generator.name,
                    pending.len(),
                    jobs.len(),
                    job.label,
                    job.id.short(),
                    preview(&job.prompt, 300),
                    generator.config.name
                )));
            }
            ProviderKind::Local => {
                local::run(
                    generator,
                    jobs,
                    &pending,
                    cache,
                    budget,
                    progress,
                    &tally,
                    &mut outcomes,
                )?;
            }
            ProviderKind::Openai => {
                openai::run(
                    generator,
                    jobs,
                    &pending,
                    cache,
                    budget,
                    progress,
                    &tally,
                    &mut outcomes,
                )?;
            }
        }
    }
    tally.bar.finish_and_clear();
    Ok((0..jobs.len())
        .map(|i| {
            outcomes.remove(&i).unwrap_or(Outcome::Failed {
                error: "not run".into(),
            })
        })
        .collect())
}

/// The first `n` characters of a text, on one line.
pub fn preview(text: &str, n: usize) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= n {
        one
    } else {
        one.chars().take(n).collect::<String>() + "…"
    }
}

/// Where the default model lives, for messages.
pub fn default_model_hint() -> &'static Path {
    Path::new(crate::llm::config::DEFAULT_GGUF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tokens: u64, usage_estimated: bool) -> Answer {
        Answer {
            text: String::new(),
            prompt_tokens: tokens,
            completion_tokens: 0,
            usage_estimated,
            finish_reason: "stop".into(),
            seconds: 0.0,
            decode_seconds: None,
            batched: None,
        }
    }

    #[test]
    fn budget_stops_at_calls_and_tokens() {
        let b = Budget::new(Some(2), None);
        assert_eq!(b.try_start(10), Start::Go);
        assert_eq!(b.try_start(10), Start::Go);
        assert!(matches!(b.try_start(10), Start::Stop(why) if why.contains("call budget of 2")));
        let t = Budget::new(None, Some(100));
        assert_eq!(t.try_start(50), Start::Go);
        t.spend(&answer(120, false), 50);
        assert_eq!(
            t.try_start(50),
            Start::Stop("token budget of 100 reached".into())
        );
        let e = Budget::new(None, Some(100));
        assert_eq!(e.try_start(40), Start::Go);
        e.spend(&answer(30, false), 40);
        assert_eq!(e.try_start(40), Start::Go);
        e.spend(&answer(90, true), 40);
        assert_eq!(
            e.try_start(40),
            Start::Stop(
                "token budget of 100 reached (120 tokens spent, 90 of them estimated: the server sent no usage)".into()
            )
        );
    }

    /// Several calls in flight never overrun a token budget together: a call waits while the
    /// ones in flight could use up what is left (the concurrency-4 case of openai-quirks, where
    /// four calls were sent before any usage came back).
    #[test]
    fn calls_in_flight_do_not_overrun_a_token_budget_together() {
        let b = Budget::new(None, Some(100));
        // A prompt of ~100 tokens with max_tokens 64: each call may use 164.
        let cost = Budget::call_cost(&"x".repeat(400), 64);
        assert_eq!(cost, 164);
        assert_eq!(
            b.try_start(cost),
            Start::Go,
            "nothing in flight: the first call starts"
        );
        assert_eq!(b.try_start(cost), Start::Wait);
        assert_eq!(b.try_start(cost), Start::Wait);
        b.spend(&answer(396, true), cost);
        assert!(matches!(b.try_start(cost), Start::Stop(_)));
        assert_eq!(b.calls(), 1);
        // A roomy budget lets calls run side by side while their upper bounds fit.
        let roomy = Budget::new(None, Some(400));
        assert_eq!(roomy.try_start(164), Start::Go);
        assert_eq!(roomy.try_start(164), Start::Go);
        assert_eq!(roomy.try_start(164), Start::Wait, "3 × 164 > 400");
        roomy.release(164); // a failed call gives its share back
        assert_eq!(roomy.try_start(164), Start::Go);
    }

    #[test]
    fn estimated_tokens_are_characters_over_four_rounded_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        // Characters, not bytes: four 2-byte letters are one token.
        assert_eq!(estimate_tokens("éééé"), 1);
    }

    #[test]
    fn parallel_local_generators_keep_prompt_states_unless_told_not_to() {
        // A GGUF is hashed on resolve; any file stands in for one here.
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        let local = GeneratorConfig {
            name: "x".into(),
            model: gguf.display().to_string(),
            parallel: 4,
            ..Default::default()
        };
        let states = |g: &GeneratorConfig| {
            Generator::resolve("x", std::slice::from_ref(g))
                .unwrap()
                .prompt_states
                .map(|s| format!("{s:?}"))
        };
        assert_eq!(
            states(&local).as_deref(),
            Some(
                "PromptStates { limit: 536870912, use: PromptStatesUse { prompts: 0, bytes: 0, restored: 0, restored_tokens: 0 } }"
            ),
            "512 MiB by default"
        );
        let off = GeneratorConfig {
            cache_ram_mib: 0,
            ..local.clone()
        };
        assert_eq!(states(&off), None);
        // One sequence: every call from an empty cache, whatever ran before it.
        let one = GeneratorConfig {
            parallel: 1,
            ..local.clone()
        };
        assert_eq!(states(&one), None);
        let remote = GeneratorConfig {
            provider: ProviderKind::Openai,
            model: "m".into(),
            ..local.clone()
        };
        assert_eq!(states(&remote), None);
        // Clones share one store (a top-up round finds the first round's prompts); each
        // generation starts one of its own.
        let g = Generator::resolve("x", std::slice::from_ref(&local)).unwrap();
        let store = |g: &Generator| g.prompt_states.clone().unwrap();
        assert!(std::sync::Arc::ptr_eq(&store(&g), &store(&g.clone())));
        let fresh = g.with_fresh_prompt_states();
        assert!(!std::sync::Arc::ptr_eq(&store(&g), &store(&fresh)));
        assert_eq!(format!("{:?}", store(&fresh)), format!("{:?}", store(&g)));
        let none = Generator::resolve("x", std::slice::from_ref(&one)).unwrap();
        assert!(none.with_fresh_prompt_states().prompt_states.is_none());
    }

    #[test]
    fn call_key_covers_the_local_context_but_not_the_threads() {
        let g = GeneratorConfig {
            name: "x".into(),
            provider: ProviderKind::Local,
            // A replay names a local model by hash, so no GGUF file has to be read.
            model: "blake3:00ff".into(),
            context: 2048,
            threads: 2,
            ..Default::default()
        };
        let resolve = |g: &GeneratorConfig| {
            let replay = GeneratorConfig {
                name: "r".into(),
                provider: ProviderKind::Replay,
                of: Some("x".into()),
                ..Default::default()
            };
            Generator::resolve("r", &[g.clone(), replay]).unwrap()
        };
        let key = |g: &GeneratorConfig| resolve(g).call_id("p", 0, 5).key;
        let base = key(&g);
        let other_context = key(&GeneratorConfig {
            context: 4096,
            ..g.clone()
        });
        let other_threads = key(&GeneratorConfig {
            threads: 8,
            ..g.clone()
        });
        assert_ne!(base, other_context, "the context size is in the call key");
        assert_eq!(base, other_threads, "the thread count is not");
        let other_cache_ram = key(&GeneratorConfig {
            cache_ram_mib: 0,
            ..g.clone()
        });
        assert_eq!(base, other_cache_ram, "nor the memory for prompt states");
        // Batched decoding rounds differently, so the batch size is in the key, and a
        // one-sequence generator keeps the key it had before `parallel` existed.
        let one = key(&GeneratorConfig {
            parallel: 1,
            ..g.clone()
        });
        let four = key(&GeneratorConfig {
            parallel: 4,
            ..g.clone()
        });
        assert_eq!(base, one);
        assert_ne!(base, four, "the batch size is in the call key");
        // The per-sequence KV streams are named beside the batch size, so answers decoded in the
        // unified cache of earlier versions are not taken for theirs.
        let identity = |parallel| {
            let local = GeneratorConfig {
                parallel,
                ..g.clone()
            };
            serde_json::to_value(resolve(&local).identity).unwrap()
        };
        assert_eq!(identity(4)["kv_cache"], "per-sequence");
        assert!(identity(1).get("kv_cache").is_none());
        assert_ne!(
            four,
            key(&GeneratorConfig {
                parallel: 8,
                ..g.clone()
            })
        );
    }

    #[test]
    fn banned_words_are_in_the_call_key_once_each_whatever_their_case_or_order() {
        let g = GeneratorConfig {
            name: "x".into(),
            provider: ProviderKind::Local,
            model: "blake3:00ff".into(),
            ..Default::default()
        };
        let resolve = |words: &[&str]| {
            let local = GeneratorConfig {
                banned_words: words.iter().map(|w| w.to_string()).collect(),
                ..g.clone()
            };
            let replay = GeneratorConfig {
                name: "r".into(),
                provider: ProviderKind::Replay,
                of: Some("x".into()),
                ..Default::default()
            };
            Generator::resolve("r", &[local, replay]).unwrap()
        };
        let key = |words: &[&str]| resolve(words).call_id("p", 0, 5).key;
        // No ban: the key of a generator from before the setting existed.
        assert!(
            serde_json::to_value(&resolve(&[]).identity)
                .unwrap()
                .get("banned_words")
                .is_none()
        );
        assert_eq!(
            resolve(&["You", "sentence", "you"]).identity.banned_words,
            Some(vec!["sentence".to_string(), "you".to_string()])
        );
        assert_eq!(key(&["You", "sentence"]), key(&["sentence", "you", "YOU"]));
        assert_ne!(key(&[]), key(&["you"]));
        assert_ne!(key(&["you"]), key(&["you", "your"]));
    }

    #[test]
    fn structured_output_is_in_the_call_key_and_leaves_other_keys_unchanged() {
        let g = GeneratorConfig {
            name: "x".into(),
            provider: ProviderKind::Openai,
            model: "m".into(),
            ..Default::default()
        };
        let plain = Generator::resolve("x", std::slice::from_ref(&g)).unwrap();
        // The key's JSON of an unconstrained generator is what it was before `structured`
        // existed (no `items`, no `structured`), so its cached calls stay valid.
        let json = serde_json::to_value(CallParams {
            identity: &plain.identity,
            prompt: "p",
            sample: 0,
            items: plain.identity.structured.map(|_| 5),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "identity": {"provider": "openai", "model": "m", "temperature": 0.8, "top_p": 0.95,
                    "top_k": 0, "max_tokens": 256, "seed": 0, "context": 0},
                "prompt": "p", "sample": 0
            })
        );
        assert_eq!(plain.call_id("p", 0, 5).key, plain.call_id("p", 0, 3).key);
        let s = |item_chars| {
            Generator::resolve(
                "x",
                &[GeneratorConfig {
                    structured: true,
                    item_chars,
                    ..g.clone()
                }],
            )
            .unwrap()
        };
        let st = s(300);
        assert_eq!(
            st.identity.structured,
            Some(structured::Shape { item_chars: 300 })
        );
        assert_ne!(plain.call_id("p", 0, 5).key, st.call_id("p", 0, 5).key);
        assert_ne!(st.call_id("p", 0, 5).key, st.call_id("p", 0, 3).key);
        assert_ne!(st.call_id("p", 0, 5).key, s(200).call_id("p", 0, 5).key);
        // A remote endpoint samples as it does; only a local structured generator names how
        // its grammar steers sampling (tested with a real GGUF in `local::tests`).
        assert_eq!(st.identity.grammar_sampling, None);
    }

    #[test]
    fn call_key_covers_prompt_sample_and_sampling() {
        let mut g = GeneratorConfig {
            name: "x".into(),
            provider: ProviderKind::Openai,
            model: "m".into(),
            ..Default::default()
        };
        let a = Generator::resolve("x", std::slice::from_ref(&g)).unwrap();
        let k = |g: &Generator, p: &str, s| g.call_id(p, s, 5).key;
        assert_eq!(k(&a, "p", 0), k(&a, "p", 0));
        assert_ne!(k(&a, "p", 0), k(&a, "p", 1));
        assert_ne!(k(&a, "p", 0), k(&a, "q", 0));
        g.temperature = 0.1;
        let b = Generator::resolve("x", std::slice::from_ref(&g)).unwrap();
        assert_ne!(k(&a, "p", 0), k(&b, "p", 0));
        // Settings that cannot change an answer stay out of the key.
        g.temperature = a.identity.temperature;
        g.concurrency = 64;
        g.timeout_s = 1.0;
        g.api_key_env = Some("SOME_KEY".into());
        let c = Generator::resolve("x", std::slice::from_ref(&g)).unwrap();
        assert_eq!(k(&a, "p", 0), k(&c, "p", 0));
    }

    #[test]
    fn replay_takes_the_identity_of_what_it_replays() {
        let src = GeneratorConfig {
            name: "remote".into(),
            provider: ProviderKind::Openai,
            model: "gpt-x".into(),
            ..Default::default()
        };
        let rep = GeneratorConfig {
            name: "again".into(),
            provider: ProviderKind::Replay,
            of: Some("remote".into()),
            ..Default::default()
        };
        let all = [src, rep];
        let a = Generator::resolve("remote", &all).unwrap();
        let r = Generator::resolve("again", &all).unwrap();
        assert_eq!(r.provider, ProviderKind::Replay);
        assert_eq!(a.call_id("p", 3, 5).key, r.call_id("p", 3, 5).key);
    }
}

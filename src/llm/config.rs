//! The `[[generator]]` table: an LLM provider, its model and how to call it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// In-process GGUF inference with llama.cpp.
    Local,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    /// Answers only from the call cache of another generator.
    Replay,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Openai => "openai",
            ProviderKind::Replay => "replay",
        }
    }
}

/// The default GGUF: SmolLM2-135M-Instruct, fetched by `just models` into `models/`.
pub const DEFAULT_GGUF: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A `[[generator]]` table: an LLM and how to call it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// What `augment.generator` calls it.
    pub name: String,
    pub provider: ProviderKind,
    /// `local`: path of a GGUF file; `openai`: the model id.
    pub model: String,
    /// `replay`: the generator whose cached calls answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    pub temperature: f64,
    pub top_p: f64,
    /// `local`: sample among the k most likely tokens (0: all), before top-p; llama.cpp's default.
    pub top_k: u32,
    pub max_tokens: u32,
    pub seed: u64,
    /// `local`: CPU threads.
    pub threads: usize,
    /// `local`: context size in tokens (per sequence).
    pub context: u32,
    /// `local`: llama.cpp's repetition penalty (the `penalties` sampler, first in the chain): the
    /// logit of a token among the last `repeat_last_n` generated ones is divided by it (multiplied
    /// when negative). 1.0 is off; llama.cpp's `--repeat-penalty` default is 1.0, its long-time
    /// earlier default 1.1. Part of the call key when not 1.
    pub repeat_penalty: f64,
    /// `local`: how many of the last generated tokens `repeat_penalty` looks at.
    pub repeat_last_n: u32,
    /// `local`: calls decoded together as parallel sequences of one batch (1: one at a time).
    /// On a CPU a batch of n sequences costs little more per step than one, so total tokens/s
    /// grow with n; samples of one prompt share its evaluation. Part of the call key when > 1.
    pub parallel: u32,
    /// `local`: words the model may not write. Every vocabulary token that is one of them after
    /// a space, in any letter case (` you`, ` You`, ` YOU`), has its logit set to −∞ before
    /// sampling: Hugging Face transformers' `bad_words_ids` for one-token words, llama.cpp's
    /// `--logit-bias TOKEN-inf`. A word the model writes as several tokens is not banned (the log
    /// names it); a word at the very start of a line, with no space before it, is another token
    /// and is not banned either. For words the filter drops a sentence for anyway (the meta
    /// filter's first and second person, "sentence"): the model writes another word instead of a
    /// sentence that would be thrown away. Part of the call key when not empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub banned_words: Vec<String>,
    /// `local` with `parallel` > 1: MiB of host memory for prompts' KV states kept across the
    /// calls of one generation and its top-up rounds, so that a prompt beginning like one
    /// evaluated before (a top-up round asks a cluster's prompt again with another count)
    /// restores its cells instead of evaluating them again; llama-server's `--cache-ram` (its
    /// default is 8192). 0: off. Not part of the call key, as the prefix sharing between
    /// sequences is not: the restored cells are the ones evaluated before. One sequence keeps no
    /// states, so that its answers never depend on the calls before them.
    pub cache_ram_mib: u64,
    /// `openai`: base URL of the API (…/v1).
    pub base_url: String,
    /// `openai`: the environment variable holding the API key (unset: no key is sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// `openai`: calls in flight at once.
    pub concurrency: usize,
    /// `openai`: retries after the first attempt (429, 5xx, connection errors, timeouts).
    pub max_retries: u32,
    /// `openai`: seconds before an attempt times out.
    pub timeout_s: f64,
    /// `openai`: first backoff delay in seconds; doubles per retry, with jitter, up to `max_backoff_s`.
    pub backoff_s: f64,
    pub max_backoff_s: f64,
    /// Constrain the answer to exactly the asked number of list items, each one line of at most
    /// `item_chars` characters: `local` decodes under a llama.cpp GBNF grammar, `openai` asks for
    /// a JSON-schema structured answer (`response_format`; an endpoint that ignores it is parsed
    /// as plain text). Part of the call key when on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub structured: bool,
    /// With `structured`: the longest list item, in characters.
    pub item_chars: usize,
    /// `local` with `structured`: from this many characters of a list item on, the sentence's
    /// closing period is favoured more with every further character (`item_decay_factor`), so
    /// the model ends its sentence before the grammar cuts it at `item_chars`; 0: off. Part of
    /// the call key when on.
    pub item_decay_start: usize,
    /// The factor of `item_decay_start` per character over it: Hugging Face transformers'
    /// `ExponentialDecayLengthPenalty`, on the period instead of end-of-sequence (the period's
    /// logit `l` becomes `l + |l|·(factor^chars_over − 1)`).
    pub item_decay_factor: f64,
    /// Per run: stop calling after this many calls (cached answers are free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_calls: Option<u64>,
    /// Per run: stop calling once this many tokens (prompt + completion) were spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            name: "smollm2".into(),
            provider: ProviderKind::Local,
            model: DEFAULT_GGUF.into(),
            of: None,
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            max_tokens: 256,
            seed: 0,
            threads: 2,
            context: 2048,
            parallel: 1,
            cache_ram_mib: 512,
            banned_words: Vec::new(),
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: None,
            concurrency: 4,
            max_retries: 4,
            timeout_s: 60.0,
            backoff_s: 0.5,
            max_backoff_s: 30.0,
            structured: false,
            item_chars: 300,
            item_decay_start: 0,
            item_decay_factor: 1.03,
            budget_calls: None,
            budget_tokens: None,
        }
    }
}

//! The `local` provider: in-process GGUF inference with llama.cpp (the `llama-cpp-2` crate).
//!
//! The prompt is wrapped in the model's own chat template (read from the GGUF), tokenized with
//! the model's tokenizer, and sampled with top-p → temperature → a seeded distribution sampler.
//! Each call's seed is derived from the generator seed and the call key. With one sequence
//! (`parallel = 1`) every call starts from an empty cache, so an answer does not depend on which
//! calls ran before it. With parallel sequences, what a call is batched with and which prompt
//! cells it reuses (held in the KV cache, or restored from [`PromptStates`] kept in memory) change
//! how llama.cpp rounds, so a call can sample differently when the calls
//! around it differ (a resumed run, another budget); a cold run of the same plan makes the same
//! calls in the same order and gets the same answers.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::vocab::LlamaVocab;

use super::{Answer, Budget, CallJob, Generator, Outcome, Tally, store_answer};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor it loads to stderr; keep the terminal for our progress.
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("cannot initialise llama.cpp: {e}")))
}

/// Sampling settings of one call.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    /// 0: no top-k cut.
    pub top_k: u32,
    pub max_tokens: u32,
    pub seed: u32,
    /// llama.cpp's repetition penalty and its look-back in tokens; `None`: off.
    pub repeat: Option<(f32, u32)>,
    /// The exponential length penalty of list items ([`super::ItemDecay`]): from this many
    /// characters of the current item on, the period's logit grows by the factor per character;
    /// `None`: off.
    pub item_decay: Option<(usize, f32)>,
    /// llama.cpp's `--ignore-eos`: end-of-generation tokens are never sampled (their logits are
    /// set to −∞), so every call decodes `max_tokens` tokens, as `llama-bench` and
    /// `llama-batched-bench` do. For benchmarks; generation never sets it.
    pub ignore_eos: bool,
}

/// A loaded GGUF model.
pub struct LocalModel {
    model: LlamaModel,
    threads: i32,
    context: u32,
    path: String,
}

impl LocalModel {
    pub fn load(path: &Path, threads: usize, context: u32) -> Result<Self> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| {
                Error::data(format!(
                    "cannot load the GGUF model {}: {e}; is it a complete llama.cpp GGUF file? (`just models` fetches the default one)",
                    path.display()
                ))
            })?;
        Ok(Self {
            model,
            threads: threads.max(1) as i32,
            context,
            path: path.display().to_string(),
        })
    }

    /// The tokens of the vocabulary that are one of `words` after a space, in any letter case
    /// (for `you`: ` you`, ` You`, ` YOU` where the vocabulary has them), in token-id order,
    /// and the words that have no such token (the model writes them as several tokens, so a
    /// one-token ban cannot reach them). Compared as text: a token's piece (special tokens
    /// excluded) less its one leading space, lower-cased, against the word lower-cased.
    pub fn word_tokens(&self, words: &[String]) -> (Vec<LlamaToken>, Vec<String>) {
        let wanted: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let mut found = vec![false; wanted.len()];
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        for id in 0..self.model.n_vocab() {
            let t = LlamaToken(id);
            let piece = vocab.token_to_piece(t, false, None);
            let Some(word) = piece.strip_prefix(b" ") else {
                continue;
            };
            let Ok(word) = std::str::from_utf8(word) else {
                continue;
            };
            let word = word.to_lowercase();
            if let Some(i) = wanted.iter().position(|w| *w == word) {
                found[i] = true;
                tokens.push(t);
            }
        }
        let missing = wanted
            .into_iter()
            .zip(found)
            .filter(|(_, f)| !f)
            .map(|(w, _)| w)
            .collect();
        (tokens, missing)
    }

    /// A context for a series of calls, one sequence at a time.
    pub fn session(&self) -> Result<Session<'_>> {
        self.session_for(1)
    }

    /// A context for a series of calls that decodes up to `parallel` sequences together in one
    /// batch ([`Session::generate_batch`]). Each sequence has its own KV stream of `context`
    /// tokens (llama.cpp's `kv_unified = false`; llama.cpp rounds a stream up to a multiple of
    /// 256), so a token attends over its own sequence's cells only. In a unified cache every
    /// token attends over all sequences' cells under a mask, a cost that grows with `parallel`: on `experiments/tram.toml`'s first
    /// 37 calls (2 cores, completion tokens over the stage's time), a unified cache gave 103–107
    /// tokens/s at 4, 8 and 16 sequences, per-sequence streams 101–106 at 4, 122 at 8 and 126
    /// at 16.
    pub fn session_for(&self, parallel: u32) -> Result<Session<'_>> {
        let parallel = parallel.max(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.context * parallel))
            .with_n_batch(N_BATCH as u32)
            .with_n_seq_max(parallel)
            .with_kv_unified(false)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| Error::internal(format!("llama.cpp context for {}: {e}", self.path)))?;
        Ok(Session {
            model: self,
            ctx,
            parallel,
            slots: (0..parallel).map(|_| Slot::default()).collect(),
            shared_prefix_tokens: 0,
            states: None,
            copy_pending: false,
            banned_words: Vec::new(),
        })
    }
}

/// Tokens per `llama_decode` call while a prompt is evaluated.
const N_BATCH: usize = 512;

pub struct Session<'a> {
    model: &'a LocalModel,
    ctx: LlamaContext<'a>,
    /// The most sequences one batch decodes together.
    parallel: u32,
    /// One per sequence: what its KV cells hold, and the call in flight there.
    slots: Vec<Slot>,
    /// Prompt tokens not evaluated because a prompt held in the KV cache, or kept in
    /// [`PromptStates`], began with them (see [`Session::start`]), over the session's life.
    pub shared_prefix_tokens: u64,
    /// Prompt states kept beyond this session ([`Session::keep_prompts`]).
    states: Option<Arc<PromptStates>>,
    /// A stream copy (`copy_kv_cache_seq`) is queued: llama.cpp applies it at the next decode,
    /// over whatever the destination stream's buffers hold then, so no state is restored until
    /// a decode has run (a restore writes the buffers at once and the copy would overwrite it).
    /// [`Session::reset`] does not drop queued copies either.
    copy_pending: bool,
    /// Tokens no call of this session samples ([`Session::ban`]).
    banned_words: Vec<LlamaToken>,
}

/// Prompts' KV states kept in host memory across sessions: llama-server's host-memory prompt
/// cache (`--cache-ram`, llama.cpp PR #16391), for one generator. A session snapshots every prompt
/// it evaluates (`llama_state_seq_get_data_ext`: the sequence's cells, about 23 KB a token for
/// SmolLM2-135M); a later prompt that begins the same way, in this session or a later one (a
/// top-up round asks a cluster's prompt again with another count in its last line), restores the
/// longest such prefix into its sequence (`llama_state_seq_set_data_ext`) instead of evaluating it
/// again. The least recently used states go first when the states would pass the limit.
///
/// The restored cells are the ones evaluated before, so an answer is what it would be had the
/// prompt's cells stayed resident; which cells a prompt reuses changes how llama.cpp rounds, as
/// prefix sharing between sequences does (see the module docs). States restore only into a
/// context of the same shape (model, sequences per context); [`Session::start`] falls back to
/// evaluating the prompt when llama.cpp refuses one.
pub struct PromptStates {
    /// Bytes of states held at most; 0: nothing is kept.
    limit: usize,
    inner: Mutex<StatesInner>,
}

#[derive(Default)]
struct StatesInner {
    /// In insertion order; `used` orders them for eviction.
    entries: Vec<StoredPrompt>,
    bytes: usize,
    clock: u64,
    /// Prompts started from a restored state, and the prompt tokens that spared evaluating.
    restored: u64,
    restored_tokens: u64,
}

struct StoredPrompt {
    tokens: Vec<LlamaToken>,
    state: SeqState,
    used: u64,
}

impl StoredPrompt {
    /// What it holds in memory, as counted against the limit: the state and its tokens.
    fn bytes(&self) -> usize {
        self.state.byte_len() + self.tokens.len() * std::mem::size_of::<LlamaToken>()
    }
}

/// What a [`PromptStates`] holds and has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptStatesUse {
    pub prompts: usize,
    pub bytes: usize,
    pub restored: u64,
    pub restored_tokens: u64,
}

impl std::fmt::Debug for PromptStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptStates")
            .field("limit", &self.limit)
            .field("use", &self.usage())
            .finish()
    }
}

/// A stored prompt restores only when it spares more than this many tokens over the best
/// prefix a sequence already holds: a restore copies the whole stored prompt's cells.
const RESTORE_MIN_GAIN: usize = 8;

impl PromptStates {
    /// A store of at most `limit_mib` MiB of states (0: off).
    pub fn new(limit_mib: u64) -> Self {
        Self::with_limit(usize::try_from(limit_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX))
    }

    /// A store of at most `limit` bytes of states.
    fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(StatesInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatesInner> {
        // A panic elsewhere leaves the entries consistent (each change is one push or remove).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// States held, their bytes, and the prompts restored from them so far.
    pub fn usage(&self) -> PromptStatesUse {
        let g = self.lock();
        PromptStatesUse {
            prompts: g.entries.len(),
            bytes: g.bytes,
            restored: g.restored,
            restored_tokens: g.restored_tokens,
        }
    }

    /// The longest prefix of `tokens` a stored prompt holds, in tokens (0: none).
    fn longest(&self, tokens: &[LlamaToken]) -> usize {
        self.lock()
            .entries
            .iter()
            .map(|e| common_prefix(&e.tokens, tokens))
            .max()
            .unwrap_or(0)
    }

    /// Restore into sequence `seq` of `ctx` the earliest stored prompt sharing `shared` tokens with
    /// `tokens`; its cells replace the sequence's. False when none does or llama.cpp refuses.
    fn restore(
        &self,
        ctx: &mut LlamaContext<'_>,
        seq: i32,
        tokens: &[LlamaToken],
        shared: usize,
    ) -> bool {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        let Some(i) = g
            .entries
            .iter()
            .position(|e| common_prefix(&e.tokens, tokens) >= shared)
        else {
            return false;
        };
        if ctx.state_seq_set(&g.entries[i].state, seq).is_err() {
            // A state llama.cpp refuses once it refuses again: dropped.
            let e = g.entries.remove(i);
            g.bytes -= e.bytes();
            return false;
        }
        g.entries[i].used = now;
        g.restored += 1;
        g.restored_tokens += shared as u64;
        true
    }

    /// Whether a state for exactly these tokens is held (marking it used).
    fn holds(&self, tokens: &[LlamaToken]) -> bool {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        match g.entries.iter_mut().find(|e| e.tokens == tokens) {
            Some(e) => {
                e.used = now;
                true
            }
            None => false,
        }
    }

    /// Keep the state of a prompt's tokens, dropping the least recently used states while the
    /// total would pass the limit. A state larger than the limit is not kept.
    fn insert(&self, tokens: Vec<LlamaToken>, state: SeqState) {
        let entry = StoredPrompt {
            tokens,
            state,
            used: 0,
        };
        let size = entry.bytes();
        if size > self.limit {
            return;
        }
        let mut g = self.lock();
        while g.bytes + size > self.limit {
            let Some(oldest) = (0..g.entries.len()).min_by_key(|&i| g.entries[i].used) else {
                break;
            };
            let e = g.entries.remove(oldest);
            g.bytes -= e.bytes();
        }
        g.clock += 1;
        let used = g.clock;
        g.bytes += size;
        g.entries.push(StoredPrompt { used, ..entry });
    }
}

/// One call of a batch: a user message, its sampling, and an optional GBNF grammar.
#[derive(Debug, Clone, Copy)]
pub struct Request<'p> {
    pub prompt: &'p str,
    pub sampling: Sampling,
    pub grammar: Option<&'p str>,
}

/// A sequence being decoded in a batch.
struct Stream {
    sampler: CallSampler,
    prompt_tokens: usize,
    /// Position of the next token in this sequence.
    pos: usize,
    max_new: usize,
    out: Vec<u8>,
    generated: u64,
    /// The sampled token still to be decoded; `None` once the sequence has finished.
    next: Option<LlamaToken>,
    finish: &'static str,
    /// Batch index of this sequence's logits in the last decode.
    logits_at: i32,
    /// When the call started (its prompt's evaluation) and when its decoding started.
    started: Instant,
    decode_started: Instant,
}

/// One sequence of a session's KV cache.
#[derive(Default)]
struct Slot {
    /// The prompt whose cells (positions `0..len`) this sequence holds, to share with later
    /// prompts that begin the same way.
    resident: Vec<LlamaToken>,
    /// The call it decodes; `None`: free.
    stream: Option<Stream>,
}

impl Session<'_> {
    /// Snapshot every prompt this session evaluates into `states`, and start a prompt from the
    /// longest prefix held there when it is more than `RESTORE_MIN_GAIN` (8) tokens longer than
    /// the longest prefix a sequence of the KV cache holds (see [`PromptStates`]).
    pub fn keep_prompts(&mut self, states: Arc<PromptStates>) {
        self.states = Some(states);
    }

    /// Never sample these tokens in any call of this session (their logits are set to −∞, as
    /// for [`Sampling::ignore_eos`]); the `banned_words` of a generator, through
    /// [`LocalModel::word_tokens`].
    pub fn ban(&mut self, tokens: Vec<LlamaToken>) {
        self.banned_words = tokens;
    }

    /// Answer one user message.
    pub fn generate(&mut self, prompt: &str, s: Sampling) -> Result<Answer> {
        self.generate_with(prompt, s, None)
    }

    /// Answer one user message, decoding under a GBNF `grammar` (llama.cpp's grammar sampler,
    /// root rule `root`) when one is given: only tokens the grammar admits are sampled, and the
    /// answer ends when the grammar is complete. Errors: a grammar llama.cpp cannot parse.
    pub fn generate_with(
        &mut self,
        prompt: &str,
        s: Sampling,
        grammar: Option<&str>,
    ) -> Result<Answer> {
        // One sequence from an empty cache: the same prompt evaluation and token-by-token decode
        // as parallel calls, alone in its batch.
        self.reset();
        self.start(
            0,
            &Request {
                prompt,
                sampling: s,
                grammar,
            },
        )?;
        loop {
            if let Some((_, answer)) = self.step()?.pop() {
                return Ok(answer);
            }
        }
    }

    /// Tokens of `prompt` as a call evaluates it: one user message under the model's chat
    /// template, with the assistant's turn opened. Errors as [`Session::start`]'s for the prompt.
    pub fn prompt_len(&self, prompt: &str) -> Result<usize> {
        self.prompt_tokens(prompt).map(|t| t.len())
    }

    /// The prompt wrapped in the model's chat template, as tokens. Errors: a GGUF without a chat
    /// template; a prompt that leaves no room in one sequence's share of the context.
    fn prompt_tokens(&self, prompt: &str) -> Result<Vec<LlamaToken>> {
        let model = &self.model.model;
        let template = model
            .chat_template(None)
            .map_err(|e| fail("chat template (the GGUF has none?)", e.to_string()))?;
        let msg = LlamaChatMessage::new("user".into(), prompt.into())
            .map_err(|e| fail("message", e.to_string()))?;
        let text = model
            .apply_chat_template(&template, &[msg], true)
            .map_err(|e| fail("applying the chat template", e.to_string()))?;
        let tokens = model.vocab().tokenize(text.as_bytes(), false, true);
        let n_ctx = self.ctx.n_ctx() as usize / self.parallel as usize;
        if tokens.len() + 1 >= n_ctx {
            return Err(Error::config(format!(
                "the prompt has {} tokens but the context holds {n_ctx}; raise the generator's `context` or shorten the template",
                tokens.len()
            )));
        }
        Ok(tokens)
    }

    /// The sampler of one call: top-k → top-p → temperature → a seeded distribution sampler
    /// (greedy at temperature 0), and the grammar when one is given (see [`CallSampler`]).
    fn sampler(&self, s: Sampling, grammar: Option<&str>) -> Result<CallSampler> {
        let grammar = grammar
            .map(|g| {
                LlamaSampler::grammar(&self.model.model, g, "root")
                    .map_err(|e| fail("grammar", format!("{e:?}")))
            })
            .transpose()?;
        let mut chain = Vec::new();
        // llama.cpp's order: penalties first, on the raw logits.
        if let Some((penalty, last_n)) = s.repeat {
            chain.push(LlamaSampler::penalties(
                self.model.model.n_vocab(),
                last_n as i32,
                penalty,
                0.0,
                0.0,
            ));
        }
        let chain = if s.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
            LlamaSampler::chain_simple(chain)
        } else {
            // llama.cpp's own order: top-k first keeps top-p from sorting the whole vocabulary
            // at every token.
            if s.top_k > 0 {
                chain.push(LlamaSampler::top_k(s.top_k as i32));
            }
            chain.push(LlamaSampler::top_p(s.top_p, 1));
            chain.push(LlamaSampler::temp(s.temperature));
            chain.push(LlamaSampler::dist(s.seed));
            LlamaSampler::chain_simple(chain)
        };
        let item_decay = match s.item_decay {
            Some((start, factor)) => {
                let period = self.model.model.vocab().tokenize(b".", false, false);
                let [period] = period[..] else {
                    return Err(fail(
                        "item length penalty",
                        format!("`.` is {} tokens for this model, not one", period.len()),
                    ));
                };
                Some((start, factor, period))
            }
            None => None,
        };
        let mut banned = self.banned_words.clone();
        if s.ignore_eos {
            let vocab = self.model.model.vocab();
            banned.extend(
                (0..self.model.model.n_vocab())
                    .map(LlamaToken)
                    .filter(|&t| vocab.is_eog(t)),
            );
        }
        Ok(CallSampler {
            chain,
            grammar,
            item_decay,
            banned,
        })
    }

    /// Answer several calls at once, as parallel sequences of one batch (llama.cpp's
    /// `batched` / `parallel` examples), from an empty KV cache: each request starts in its own
    /// sequence ([`Session::start`]), then every unfinished sequence gets one token per
    /// `llama_decode` ([`Session::step`]) until all have finished. On a CPU one decode of n
    /// tokens costs little more than one of a single token, so total tokens/s grow with n.
    ///
    /// At most the session's `parallel` requests. One result per request, in order: a prompt
    /// that does not fit fails alone. A sequence's tokens can differ from what
    /// [`Session::generate_with`] samples for the same seed (batched matrix products round
    /// differently), which is why `parallel` is part of the call key.
    pub fn generate_batch(&mut self, reqs: &[Request<'_>]) -> Result<Vec<Result<Answer>>> {
        if reqs.len() > self.parallel as usize {
            return Err(Error::internal(format!(
                "{} requests for a session of {} sequences",
                reqs.len(),
                self.parallel
            )));
        }
        if reqs.len() <= 1 {
            return Ok(reqs
                .iter()
                .map(|r| self.generate_with(r.prompt, r.sampling, r.grammar))
                .collect());
        }
        self.reset();
        let mut results: Vec<Option<Result<Answer>>> = (0..reqs.len()).map(|_| None).collect();
        for (i, r) in reqs.iter().enumerate() {
            if let Err(e) = self.start(i, r) {
                results[i] = Some(Err(e));
            }
        }
        // Which request each slot decodes (compaction moves them).
        let mut request_in: Vec<usize> = (0..self.slots.len()).collect();
        while self.busy() > 0 {
            for (from, to) in self.compact()? {
                request_in[to] = request_in[from];
            }
            for (slot, answer) in self.step()? {
                results[request_in[slot]] = Some(Ok(answer));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect())
    }

    /// Forget every sequence: the KV cache emptied, no call in flight.
    pub fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        for s in &mut self.slots {
            *s = Slot::default();
        }
    }

    /// Calls in flight (started, not yet returned by [`Session::step`]).
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.stream.is_some()).count()
    }

    /// The lowest sequence slot with no call in flight, if any.
    pub fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.stream.is_none())
    }

    /// Move the calls in flight down into the free slots below them, the highest into the
    /// lowest, until the busy slots are `0..busy()`. Returns the moves, `(from, to)`.
    ///
    /// With one KV stream per sequence, llama.cpp decodes in one pass only sequences with
    /// consecutive ids (`split_equal`): a batch of slots 0, 2 and 5 is three passes of one token,
    /// the cost of three single streams. Gaps open when calls finish and no call is left to
    /// take their slots (the end of a round, a budget that makes calls wait). A move copies
    /// the sequence's stream (`llama_memory_seq_cp`, at the next decode) and frees the old one.
    /// Errors: llama.cpp refusing the copy or the removal.
    pub fn compact(&mut self) -> Result<Vec<(usize, usize)>> {
        let mut moves = Vec::new();
        while let Some(to) = self.free_slot() {
            let Some(from) = self.slots.iter().rposition(|s| s.stream.is_some()) else {
                break;
            };
            if from < to {
                break;
            }
            // The copy replaces what the free slot held.
            self.ctx
                .copy_kv_cache_seq(from as i32, to as i32, None, None)
                .map_err(|e| fail("moving a sequence", e.to_string()))?;
            self.copy_pending = true;
            self.remove_cells(from, 0, "moving a sequence")?;
            let moved = std::mem::take(&mut self.slots[from]);
            self.slots[to] = moved;
            moves.push((from, to));
        }
        Ok(moves)
    }

    /// Drop the cells of sequence `slot` from position `from` on (all of them from 0). Errors:
    /// llama.cpp refusing the removal; `what` names the operation.
    fn remove_cells(&mut self, slot: usize, from: usize, what: &str) -> Result<()> {
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(slot as u32), Some(from as u32), None)
            .map_err(|e| fail(what, e.to_string()))?;
        if removed {
            Ok(())
        } else {
            Err(fail(what, "partial removal refused".into()))
        }
    }

    /// Start a call in sequence slot `slot` (one with no call in flight): its prompt is
    /// evaluated and its first token sampled, so the next [`Session::step`] decodes it with the
    /// others (continuous batching, as llama.cpp's server does: a sequence that finishes frees its
    /// slot for the next call while the others go on).
    ///
    /// The longest token prefix the prompt shares with the prompt any slot holds (calls for one
    /// technique share everything up to their example sentences; samples of one prompt share it
    /// all) is not evaluated again: the sequence holding it is copied into this slot's KV stream
    /// (`llama_memory_seq_cp`) and the cells after the prefix dropped, or, when the slot itself
    /// holds it, only the cells after it are dropped. At least the last token is evaluated, for
    /// its logits. Errors: a prompt that does not fit one sequence's share of the context; a grammar llama.cpp cannot parse; a
    /// failed decode (the slot is then emptied).
    pub fn start(&mut self, slot: usize, r: &Request<'_>) -> Result<()> {
        assert!(
            self.slots[slot].stream.is_none(),
            "slot {slot} has a call in flight"
        );
        let started = Instant::now();
        let tokens = self.prompt_tokens(r.prompt)?;
        let sampler = self.sampler(r.sampling, r.grammar)?;
        let last = tokens.len() - 1;
        // The slot holding the longest shared prefix; on a tie this slot, then the lowest.
        let (from, shared) = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, common_prefix(&s.resident, &tokens)))
            .max_by_key(|&(i, n)| (n, i == slot, std::cmp::Reverse(i)))
            .expect("a session has at least one slot");
        let mut shared = shared.min(last);
        let seq = slot as i32;
        // A longer prefix kept in host memory, unless a queued stream copy could overwrite it:
        // its cells replace this slot's (when llama.cpp refuses the state it may have removed
        // them already, so this slot's own prefix is taken as gone).
        let stored = self
            .states
            .as_ref()
            .map_or(0, |st| st.longest(&tokens).min(last));
        let mut restored = false;
        if stored > shared + RESTORE_MIN_GAIN
            && !self.copy_pending
            && let Some(st) = &self.states
        {
            restored = st.restore(&mut self.ctx, seq, &tokens, stored);
            if restored {
                shared = stored;
            } else if from == slot {
                shared = 0;
            }
        }
        if !restored && from != slot && shared > 0 {
            // Across KV streams llama.cpp copies a whole sequence, replacing what this slot held
            // (its buffers at the next decode); the cells from the shared prefix on are then
            // dropped below.
            self.ctx
                .copy_kv_cache_seq(from as i32, seq, None, None)
                .map_err(|e| fail("sharing a prompt prefix", e.to_string()))?;
            self.copy_pending = true;
        }
        // This slot's cells from the shared prefix on (all of them when it shares nothing).
        self.remove_cells(slot, shared, "freeing a sequence")?;
        self.slots[slot].resident.clear();
        self.shared_prefix_tokens += shared as u64;
        let mut batch = LlamaBatch::new(N_BATCH, 1);
        for (ci, chunk) in tokens[shared..].chunks(N_BATCH).enumerate() {
            batch.clear();
            for (j, t) in chunk.iter().enumerate() {
                let pos = shared + ci * N_BATCH + j;
                batch
                    .add(*t, pos as i32, &[seq], pos == last)
                    .map_err(|e| fail("batch", e.to_string()))?;
            }
            if let Err(e) = self.ctx.decode(&mut batch) {
                let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                return Err(fail("prompt decode", e.to_string()));
            }
            self.copy_pending = false;
        }
        // The prompt's cells, for later prompts that begin the same way (once per prompt).
        if let Some(states) = &self.states
            && states.limit > 0
            && !states.holds(&tokens)
            && let Ok(state) = self.ctx.state_seq_get(seq, LlamaStateSeqFlags::empty())
        {
            states.insert(tokens.clone(), state);
        }
        let n_ctx = self.ctx.n_ctx() as usize / self.parallel as usize;
        let mut st = Stream {
            sampler,
            prompt_tokens: tokens.len(),
            pos: tokens.len(),
            max_new: (r.sampling.max_tokens as usize).min(n_ctx - tokens.len()),
            out: Vec::new(),
            generated: 0,
            next: None,
            finish: "length",
            logits_at: batch.n_tokens() - 1,
            started,
            decode_started: Instant::now(),
        };
        let vocab = self.model.model.vocab();
        st.step_at(&self.ctx, &vocab);
        self.slots[slot] = Slot {
            resident: tokens,
            stream: Some(st),
        };
        Ok(())
    }

    /// One `llama_decode` of the next token of every unfinished call, then one sampled token
    /// each. Returns the calls that have finished (end of generation or `max_tokens`), with their
    /// slots, which are free again. Errors: a failed decode (every call in flight is lost; call
    /// [`Session::reset`]).
    pub fn step(&mut self) -> Result<Vec<(usize, Answer)>> {
        let mut batch = LlamaBatch::new(self.parallel as usize, self.parallel as i32);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(st) = &mut slot.stream else { continue };
            let Some(tok) = st.next else { continue };
            batch
                .add(tok, st.pos as i32, &[i as i32], true)
                .map_err(|e| fail("batch", e.to_string()))?;
            st.logits_at = batch.n_tokens() - 1;
            st.pos += 1;
        }
        if batch.n_tokens() > 0 {
            self.ctx
                .decode(&mut batch)
                .map_err(|e| fail("decode", e.to_string()))?;
            self.copy_pending = false;
            let vocab = self.model.model.vocab();
            for slot in &mut self.slots {
                if let Some(st) = &mut slot.stream
                    && st.next.is_some()
                {
                    st.step_at(&self.ctx, &vocab);
                }
            }
        }
        let parallel = self.parallel;
        Ok(self
            .slots
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.stream.as_ref().is_some_and(|st| st.next.is_none()))
            .map(|(i, s)| {
                let st = s.stream.take().expect("filtered on a stream");
                (
                    i,
                    Answer {
                        text: String::from_utf8_lossy(&st.out).into_owned(),
                        prompt_tokens: st.prompt_tokens as u64,
                        completion_tokens: st.generated,
                        usage_estimated: false,
                        finish_reason: st.finish.into(),
                        seconds: st.started.elapsed().as_secs_f64(),
                        decode_seconds: Some(st.decode_started.elapsed().as_secs_f64()),
                        batched: (parallel > 1).then_some(parallel),
                    },
                )
            })
            .collect())
    }
}

fn fail(what: &str, e: String) -> Error {
    Error::internal(format!("llama.cpp {what}: {e}"))
}

impl Stream {
    /// Sample this sequence's next token from its logits in the last decode (for the first
    /// token, the decode of its prompt).
    fn step_at(&mut self, ctx: &LlamaContext<'_>, vocab: &LlamaVocab<'_>) {
        let tok = self.sampler.sample(ctx, vocab, self.logits_at, &self.out);
        self.take(tok, vocab);
    }

    /// Record a sampled token: end of generation, the token budget reached, or one more token
    /// to decode.
    fn take(&mut self, tok: LlamaToken, vocab: &LlamaVocab<'_>) {
        self.next = None;
        if vocab.is_eog(tok) {
            self.finish = "stop";
            return;
        }
        self.generated += 1;
        self.out.extend(vocab.token_to_piece(tok, false, None));
        if (self.generated as usize) < self.max_new {
            self.next = Some(tok);
        }
    }
}

/// One call's sampling, llama.cpp's `common_sampler_sample` with `grammar_first = false`: the
/// chain picks a token from the raw logits, and only that token is checked against the grammar;
/// when the grammar rejects it, the grammar masks the whole vocabulary and the chain picks again
/// from what it admits. Under greedy decoding the token is the one a grammar-first chain would
/// pick; when sampling, a token the grammar admits keeps the chance the unmasked distribution
/// gives it, and the rejected mass goes to the re-pick (llama.cpp's behaviour too). Checking one
/// candidate instead of every token of the vocabulary (49,152 for SmolLM2) at every step is
/// what keeps constrained decoding near the speed of free decoding.
///
/// With an item length penalty, the period's raw logit is raised first (see [`decayed`]).
struct CallSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// The item length penalty's start (characters), factor and the period token.
    item_decay: Option<(usize, f32, LlamaToken)>,
    /// Tokens never sampled ([`Session::ban`], [`Sampling::ignore_eos`]).
    banned: Vec<LlamaToken>,
}

/// Characters of the list item being written: those after the answer's last newline, less a
/// leading `N. ` marker.
fn item_chars(out: &[u8]) -> usize {
    let line = out
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(out, |i| &out[i + 1..]);
    let line = String::from_utf8_lossy(line);
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    let body = match line[digits..].strip_prefix(". ") {
        Some(rest) if digits > 0 => rest,
        _ => &line,
    };
    body.chars().count()
}

/// The bytes after the last white space of `text` (all of it when there is none).
fn last_word(text: &[u8]) -> &[u8] {
    text.iter()
        .rposition(|b| b.is_ascii_whitespace())
        .map_or(text, |i| &text[i + 1..])
}

/// Abbreviations whose period does not end a sentence (lower case, without the period).
const ABBREVIATIONS: &[&str] = &[
    "inc", "ltd", "corp", "co", "etc", "no", "nos", "vs", "approx", "fig", "dr", "mr", "mrs", "ms",
    "jr", "sr", "st", "ver", "vol",
];

/// Whether the answer so far ends with a period that closes a sentence: after a word of at least
/// two characters that holds no period of its own and is not an abbreviation, so "e.g.", "i.e.",
/// "U.S.", "Inc." and "No." do not end an item.
fn ends_a_sentence(out: &[u8]) -> bool {
    let Some(body) = out.strip_suffix(b".") else {
        return false;
    };
    let word = String::from_utf8_lossy(last_word(body)).to_lowercase();
    word.chars().count() >= 2 && !word.contains('.') && !ABBREVIATIONS.contains(&word.as_str())
}

/// Whether `piece`, sampled after the answer so far, begins a new sentence after one that
/// ended ([`ends_a_sentence`]): it starts with a space (which the grammar rejects inside an
/// item), or with a digit right after a word of letters ("masked.1": the next list number with
/// its newline left out, which the grammar admits as a word with a period inside, and from
/// which SmolLM2 under the length penalty ran on as "masked.1.1.1.2.1…" to `max_tokens`). A
/// period inside a word that is not all letters ("v2.1", "10.0.0.1") and a letter
/// ("evil.com", "payload.DLL") do not.
fn starts_a_new_sentence(out: &[u8], piece: &[u8]) -> bool {
    if !ends_a_sentence(out) {
        return false;
    }
    let word = last_word(&out[..out.len() - 1]);
    match piece.first() {
        Some(b' ') => true,
        Some(c) if c.is_ascii_digit() => word.iter().all(u8::is_ascii_alphabetic),
        _ => false,
    }
}

/// A logit raised by Hugging Face transformers' `ExponentialDecayLengthPenalty`:
/// `l + |l|·(factor^over − 1)` for `over` characters past the start (unchanged at 0).
fn decayed(logit: f32, factor: f32, over: usize) -> f32 {
    logit + logit.abs() * (factor.powi(over.min(i32::MAX as usize) as i32) - 1.0)
}

impl CallSampler {
    /// The raw logits at batch index `idx`, the period's raised when the item has run past the
    /// length penalty's start, the `banned` tokens' at −∞.
    fn logits(
        item_decay: Option<(usize, f32, LlamaToken)>,
        banned: &[LlamaToken],
        ctx: &LlamaContext<'_>,
        idx: i32,
        item_chars: usize,
    ) -> LlamaTokenDataArray {
        let mut cur = ctx.token_data_array_ith(idx);
        // The array is in token-id order.
        for t in banned {
            cur.data[t.0 as usize].set_logit(f32::NEG_INFINITY);
        }
        if let Some((start, factor, period)) = item_decay
            && item_chars > start
        {
            let d = &mut cur.data[period.0 as usize];
            debug_assert_eq!(d.id(), period);
            d.set_logit(decayed(d.logit(), factor, item_chars - start));
        }
        cur
    }

    /// Sample the next token from the logits at batch index `idx`, and advance the grammar.
    /// `out`: the answer so far.
    ///
    /// Under the list grammar, a pick that begins a new sentence right after a sentence's period
    /// ([`starts_a_new_sentence`]: the model ended its sentence and would begin another, which
    /// an item may not hold) ends the item instead: the newline, or after the last item the end
    /// of the answer, whichever the grammar admits. A masked re-pick there would continue the sentence
    /// with whatever the grammar still allows (`….The`, `….t.e.r`), which is junk. After an
    /// abbreviation ([`ends_a_sentence`]) and in an item still under the grammar's shortest
    /// (neither the newline nor the end admitted yet), the masked re-pick is what happens.
    fn sample(
        &mut self,
        ctx: &LlamaContext<'_>,
        vocab: &LlamaVocab<'_>,
        idx: i32,
        out: &[u8],
    ) -> LlamaToken {
        // Only the length penalty needs the item's length.
        let item_chars = if self.item_decay.is_some() {
            item_chars(out)
        } else {
            0
        };
        let decay = self.item_decay;
        let mut cur = Self::logits(self.item_decay, &self.banned, ctx, idx, item_chars);
        self.chain.apply(&mut cur);
        let mut tok = cur
            .selected_token()
            .expect("the chain ends in a selecting sampler");
        if let Some(g) = &mut self.grammar {
            let admits = |g: &mut LlamaSampler, t: LlamaToken| {
                let mut one =
                    LlamaTokenDataArray::new(vec![LlamaTokenData::new(t, 1.0, 0.0)], false);
                g.apply(&mut one);
                one.data[0].logit() != f32::NEG_INFINITY
            };
            // A new sentence after a sentence's period ends the item instead (the pick is
            // detokenized only after a period).
            let end = (ends_a_sentence(out)
                && starts_a_new_sentence(out, &vocab.token_to_piece(tok, false, None)))
            .then(|| {
                [vocab.nl(), vocab.eos()]
                    .into_iter()
                    .find(|&t| admits(g, t))
            })
            .flatten();
            if let Some(end) = end {
                tok = end;
            } else if !admits(g, tok) {
                let mut cur = Self::logits(decay, &self.banned, ctx, idx, item_chars);
                g.apply(&mut cur);
                self.chain.apply(&mut cur);
                tok = cur
                    .selected_token()
                    .expect("the chain ends in a selecting sampler");
            }
            g.accept(tok);
        }
        self.chain.accept(tok);
        tok
    }
}

/// How many leading tokens two prompts share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The seed of one call: the generator seed mixed with the call key.
pub fn call_seed(seed: u64, key: &str) -> u32 {
    let h = crate::hash::fnv1a(format!("{seed}:{key}").as_bytes());
    (h ^ (h >> 32)) as u32
}

/// Make the pending calls, in plan order, one model and one context: one after another, or with
/// `parallel` > 1 up to that many in flight as parallel sequences of one batch, a finished call's
/// sequence taken by the next pending call at once (continuous batching). The order in which
/// calls start and finish depends only on the pending calls, so a cold run of the same plan
/// decodes the same batches every time.
#[allow(clippy::too_many_arguments)]
pub fn run(
    generator: &Generator,
    jobs: &[CallJob],
    pending: &[usize],
    cache: &Cache,
    budget: &Budget,
    progress: &Progress,
    tally: &Tally,
    outcomes: &mut BTreeMap<usize, Outcome>,
) -> Result<()> {
    let path = generator
        .model_path
        .as_deref()
        .ok_or_else(|| Error::internal("local generator without a model path"))?;
    let cfg = &generator.config;
    let model = LocalModel::load(path, cfg.threads, cfg.context)?;
    let parallel = cfg.parallel.max(1);
    let mut session = model.session_for(parallel)?;
    let states = generator.prompt_states.clone();
    let before = states.as_ref().map(|s| s.usage());
    if let Some(s) = &states {
        session.keep_prompts(s.clone());
    }
    if let Some(words) = &generator.identity.banned_words {
        let (tokens, missing) = model.word_tokens(words);
        progress.log(format!(
            "generator {}: banned_words: {} tokens for {} words{}",
            generator.name,
            tokens.len(),
            words.len() - missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; not one token after a space in this model, so not banned: {}",
                    missing.join(", ")
                )
            }
        ));
        session.ban(tokens);
    }
    let grammars: Vec<Option<String>> = jobs
        .iter()
        .map(|job| {
            generator
                .identity
                .structured
                .map(|shape| super::structured::list_grammar(job.items, shape.item_chars))
        })
        .collect();
    let request = |i: usize| Request {
        prompt: &jobs[i].prompt,
        sampling: Sampling {
            temperature: cfg.temperature as f32,
            top_p: cfg.top_p as f32,
            top_k: cfg.top_k,
            max_tokens: cfg.max_tokens,
            seed: call_seed(cfg.seed, &jobs[i].id.key),
            repeat: generator
                .identity
                .repeat_penalty
                .map(|r| (r.penalty as f32, r.last_n)),
            item_decay: generator
                .identity
                .item_decay
                .map(|d| (d.start, d.factor as f32)),
            ignore_eos: false,
        },
        grammar: grammars[i].as_deref(),
    };
    let finish =
        |i: usize, cost: u64, answer: Result<Answer>, outcomes: &mut BTreeMap<usize, Outcome>| {
            let job = &jobs[i];
            let o = match answer {
                Ok(answer) => {
                    budget.spend(&answer, cost);
                    store_answer(cache, &job.id, &answer)?;
                    Outcome::Done { answer }
                }
                Err(e) => {
                    budget.release(cost);
                    progress.log(format!(
                        "generate {}: {} failed: {}",
                        generator.name, job.label, e.message
                    ));
                    Outcome::Failed { error: e.message }
                }
            };
            tally.record(&o);
            outcomes.insert(i, o);
            Ok::<(), Error>(())
        };
    let mut queue: std::collections::VecDeque<usize> = pending.iter().copied().collect();
    // The call in flight in each slot, with the share of the budget it holds.
    let mut in_flight: BTreeMap<usize, (usize, u64)> = BTreeMap::new();
    loop {
        // Fill the free slots. A call the budget cannot promise while others run waits for one
        // of them to finish.
        while let Some(&i) = queue.front() {
            // One sequence: one call at a time, each from an empty cache.
            let slot = if parallel > 1 {
                session.free_slot()
            } else {
                Some(0)
            };
            let Some(slot) = slot else { break };
            let cost = Budget::call_cost(&jobs[i].prompt, cfg.max_tokens);
            match budget.try_start(cost) {
                super::Start::Go => {
                    queue.pop_front();
                    if parallel == 1 {
                        let r = request(i);
                        let answer = session.generate_with(r.prompt, r.sampling, r.grammar);
                        finish(i, cost, answer, outcomes)?;
                    } else {
                        match session.start(slot, &request(i)) {
                            Ok(()) => {
                                in_flight.insert(slot, (i, cost));
                            }
                            Err(e) => finish(i, cost, Err(e), outcomes)?,
                        }
                    }
                }
                super::Start::Wait if !in_flight.is_empty() => break,
                super::Start::Wait => {
                    return Err(Error::internal(
                        "the budget says to wait with no call in flight",
                    ));
                }
                super::Start::Stop(why) => {
                    queue.pop_front();
                    progress.log(format!(
                        "generate {}: {} skipped: {why}",
                        generator.name, jobs[i].label
                    ));
                    let o = Outcome::Skipped { reason: why };
                    tally.record(&o);
                    outcomes.insert(i, o);
                }
            }
        }
        if in_flight.is_empty() {
            if queue.is_empty() {
                if let (Some(s), Some(before)) = (&states, before) {
                    let now = s.usage();
                    if now.restored > before.restored {
                        progress.log(format!(
                            "generate {}: {} prompts started from a prompt state kept in memory ({} tokens not evaluated again); {} states held, {:.0} MiB",
                            generator.name,
                            now.restored - before.restored,
                            now.restored_tokens - before.restored_tokens,
                            now.prompts,
                            now.bytes as f64 / (1u64 << 20) as f64
                        ));
                    }
                }
                return Ok(());
            }
            continue;
        }
        // A slot left free below a busy one splits the batch (see `Session::compact`).
        let stepped = session.compact().and_then(|moves| {
            for (from, to) in moves {
                let call = in_flight.remove(&from).expect("a call in flight there");
                in_flight.insert(to, call);
            }
            session.step()
        });
        match stepped {
            Ok(done) => {
                for (slot, answer) in done {
                    let (i, cost) = in_flight.remove(&slot).expect("a call in flight there");
                    finish(i, cost, Ok(answer), outcomes)?;
                }
            }
            Err(e) => {
                // Every call in flight is lost with the failed move or decode; the rest go on.
                for (_, (i, cost)) in std::mem::take(&mut in_flight) {
                    finish(i, cost, Err(e.clone()), outcomes)?;
                }
                session.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real SmolLM2 GGUF that `scripts/fetch-models.sh` puts in models/.
    fn smollm2() -> std::path::PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::llm::config::DEFAULT_GGUF);
        assert!(
            p.is_file(),
            "{} is missing; run scripts/fetch-models.sh (or `just models`) first",
            p.display()
        );
        p
    }

    #[test]
    fn a_local_structured_generator_names_its_grammar_sampling_in_the_call_key() {
        let resolve_with = |structured, repeat_penalty| {
            crate::llm::Generator::resolve(
                "g",
                &[crate::llm::GeneratorConfig {
                    name: "g".into(),
                    model: smollm2().display().to_string(),
                    structured,
                    repeat_penalty,
                    ..Default::default()
                }],
            )
            .unwrap()
        };
        let resolve = |structured| resolve_with(structured, 1.0);
        let (free, constrained) = (resolve(false), resolve(true));
        assert_eq!(free.identity.grammar_sampling, None);
        assert_eq!(
            constrained.identity.grammar_sampling.as_deref(),
            Some("pick-then-check")
        );
        let key = serde_json::to_value(&constrained.identity).unwrap();
        assert_eq!(key["grammar_sampling"], "pick-then-check");
        // The grammar is named (one sentence per item), so answers decoded under the first
        // grammar, which admitted any text per item, are not reused.
        assert_eq!(key["grammar"], "one-sentence-per-item");
        assert!(key.get("item_decay").is_none(), "off unless asked for");
        let steered = crate::llm::Generator::resolve(
            "g",
            &[crate::llm::GeneratorConfig {
                name: "g".into(),
                model: smollm2().display().to_string(),
                structured: true,
                item_decay_start: 120,
                item_decay_factor: 1.02,
                ..Default::default()
            }],
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&steered.identity).unwrap()["item_decay"],
            serde_json::json!({"start": 120, "factor": 1.02})
        );
        assert_ne!(
            constrained.call_id("p", 0, 5).key,
            steered.call_id("p", 0, 5).key
        );
        for field in ["grammar_sampling", "grammar"] {
            assert!(
                serde_json::to_value(&free.identity)
                    .unwrap()
                    .get(field)
                    .is_none()
            );
        }
        // The repetition penalty: in the key when on, absent when off (1.0).
        assert!(
            serde_json::to_value(&free.identity)
                .unwrap()
                .get("repeat_penalty")
                .is_none()
        );
        let penalized = resolve_with(false, 1.1);
        assert_eq!(
            serde_json::to_value(&penalized.identity).unwrap()["repeat_penalty"],
            serde_json::json!({"penalty": 1.1, "last_n": 64})
        );
        assert_ne!(
            free.call_id("p", 0, 5).key,
            penalized.call_id("p", 0, 5).key
        );
    }

    #[test]
    fn a_repetition_penalty_changes_what_is_sampled_and_stays_reproducible() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session().unwrap();
        let prompt = "Write the word malware twenty times, separated by spaces.";
        let base = sampling(3, 0.0, 48);
        let off = s.generate(prompt, base).unwrap();
        let on = Sampling {
            repeat: Some((1.5, 64)),
            item_decay: None,
            ..base
        };
        let a = s.generate(prompt, on).unwrap();
        let b = s.generate(prompt, on).unwrap();
        assert_eq!(a.text, b.text, "greedy with a penalty is deterministic");
        assert_ne!(a.text, off.text, "the penalty changed the greedy answer");
    }

    #[test]
    fn smollm2_under_the_list_grammar_writes_exactly_the_asked_items() {
        let model = LocalModel::load(&smollm2(), 2, 1024).unwrap();
        let mut s = model.session().unwrap();
        let grammar = crate::llm::structured::list_grammar(3, 80);
        for seed in [1, 2] {
            let a = s
                .generate_with(
                    "Write 3 short sentences about how malware hides its code from antivirus tools.",
                    Sampling {
                        temperature: 0.8,
                        top_p: 0.95,
                        top_k: 40,
                        max_tokens: 200,
                        seed,
                        repeat: None,
            item_decay: None,
                        ignore_eos: false,
                    },
                    Some(&grammar),
                )
                .unwrap();
            assert_eq!(a.finish_reason, "stop", "the grammar completed: {a:?}");
            let lines: Vec<&str> = a.text.lines().collect();
            assert_eq!(lines.len(), 3, "{a:?}");
            for (i, l) in lines.iter().enumerate() {
                let item = l
                    .strip_prefix(&format!("{}. ", i + 1))
                    .unwrap_or_else(|| panic!("{l}"));
                let n = item.chars().count();
                // One sentence: no period followed by a space; a period inside a word counts
                // with the character after it as one unit of the 80-character bound.
                let inner = item.matches('.').count() - 1;
                assert!(
                    (20..=80 + inner).contains(&n) && item.ends_with('.'),
                    "{n}: {item}"
                );
                assert!(!item.contains(". "), "{item}");
            }
            let parsed = crate::filter::parse_answer(&a.text);
            assert_eq!(parsed.len(), 3);
            assert!(parsed.iter().all(|c| c.problem.is_none()));
        }
    }

    #[test]
    fn ignore_eos_decodes_max_tokens_where_the_model_would_stop() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session().unwrap();
        let prompt = "Answer with one word, yes or no: is the sky blue?";
        let stops = s.generate(prompt, sampling(0, 0.0, 48)).unwrap();
        assert_eq!(stops.finish_reason, "stop", "{stops:?}");
        assert!(stops.completion_tokens < 48, "{stops:?}");
        let on = Sampling {
            ignore_eos: true,
            ..sampling(0, 0.0, 48)
        };
        let runs = s.generate(prompt, on).unwrap();
        assert_eq!(runs.finish_reason, "length", "{runs:?}");
        assert_eq!(runs.completion_tokens, 48, "{runs:?}");
        // Greedy: the same answer up to where the model stopped.
        assert!(runs.text.starts_with(&stops.text), "{stops:?} {runs:?}");
    }

    #[test]
    fn a_banned_word_is_every_case_of_its_token_after_a_space() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let words = ["You".to_string(), "sentence".into(), "qzxqzxqzx".into()];
        let (tokens, missing) = model.word_tokens(&words);
        assert_eq!(missing, ["qzxqzxqzx"]);
        let vocab = model.model.vocab();
        let mut pieces: Vec<String> = tokens
            .iter()
            .map(|&t| String::from_utf8(vocab.token_to_piece(t, false, None)).unwrap())
            .collect();
        pieces.sort();
        // Each spelling the vocabulary has as one token, and nothing else (not " your", not
        // "you" without the space, not " sentences").
        for piece in [" You", " you", " sentence"] {
            assert!(pieces.iter().any(|p| p == piece), "{piece:?} in {pieces:?}");
        }
        assert!(
            pieces
                .iter()
                .all(|p| [" you", " sentence"].contains(&p.to_lowercase().as_str())),
            "{pieces:?}"
        );
        // The tokens the tokenizer gives " You" and " sentence" are among them.
        for text in [" You", " sentence"] {
            let t = vocab.tokenize(text.as_bytes(), false, false);
            assert_eq!(t.len(), 1, "{text:?}");
            assert!(tokens.contains(&t[0]), "{text:?}");
        }
    }

    #[test]
    fn a_banned_word_is_never_sampled_and_the_model_writes_on_without_it() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session().unwrap();
        let prompt = "Finish this sentence of advice to a reader: \"To keep your accounts safe, you should\"";
        let free = s.generate(prompt, sampling(0, 0.0, 40)).unwrap();
        let addressed = |t: &str| {
            let t = t.to_lowercase();
            t.contains(" you ") || t.contains(" your ") || t.starts_with("you")
        };
        assert!(addressed(&free.text), "the prompt draws `you`: {free:?}");
        let (tokens, missing) = model.word_tokens(&["you".into(), "your".into()]);
        assert!(missing.is_empty());
        s.ban(tokens.clone());
        let banned = s.generate(prompt, sampling(0, 0.0, 40)).unwrap();
        assert!(banned.completion_tokens > 5, "{banned:?}");
        let vocab = model.model.vocab();
        let written = vocab.tokenize(banned.text.as_bytes(), false, false);
        assert!(
            !written.iter().any(|t| tokens.contains(t)),
            "{banned:?} holds a banned token"
        );
        assert_ne!(free.text, banned.text);
        // Greedy: the same answer up to the first banned token the free answer chose.
        let first = free.text.to_lowercase().find(" you").unwrap();
        assert_eq!(
            free.text[..first],
            banned.text[..first],
            "{free:?} {banned:?}"
        );
        // The session's other calls are banned too; an empty list lifts the ban.
        s.ban(Vec::new());
        assert_eq!(
            s.generate(prompt, sampling(0, 0.0, 40)).unwrap().text,
            free.text
        );
    }

    #[test]
    fn smollm2_writes_a_few_real_tokens_reproducibly() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session().unwrap();
        let sampling = Sampling {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            max_tokens: 8,
            seed: 7,
            repeat: None,
            item_decay: None,
            ignore_eos: false,
        };
        let prompt = "Name one technique adversaries use to hide malware.";
        let a = s.generate(prompt, sampling).unwrap();
        assert!(a.completion_tokens > 0 && a.completion_tokens <= 8, "{a:?}");
        assert!(
            a.prompt_tokens > 10,
            "the chat template wraps the prompt: {a:?}"
        );
        assert!(a.text.chars().any(char::is_alphabetic), "{a:?}");
        // Same prompt, same seed, same answer (the context is cleared between calls).
        let b = s.generate(prompt, sampling).unwrap();
        assert_eq!(a.text, b.text);
        let greedy = Sampling {
            temperature: 0.0,
            ..sampling
        };
        let g1 = s.generate(prompt, greedy).unwrap();
        let g2 = s.generate(prompt, greedy).unwrap();
        assert_eq!(g1.text, g2.text);
    }

    #[test]
    fn a_prompt_longer_than_the_context_is_a_clear_error() {
        let model = LocalModel::load(&smollm2(), 2, 128).unwrap();
        let mut s = model.session().unwrap();
        let long = "word ".repeat(400);
        let e = s
            .generate(
                &long,
                Sampling {
                    temperature: 0.0,
                    top_p: 1.0,
                    top_k: 0,
                    max_tokens: 4,
                    seed: 0,
                    repeat: None,
                    item_decay: None,
                    ignore_eos: false,
                },
            )
            .unwrap_err();
        assert!(
            e.message.contains("raise the generator's `context`"),
            "{}",
            e.message
        );
    }

    fn sampling(seed: u32, temperature: f32, max_tokens: u32) -> Sampling {
        Sampling {
            temperature,
            top_p: 0.95,
            top_k: 40,
            max_tokens,
            seed,
            repeat: None,
            item_decay: None,
            ignore_eos: false,
        }
    }

    /// What the prompts of several tests share.
    const HEAD: &str = "You are a threat intelligence analyst. The behaviour: adversaries hide files and directories so that users do not see them. ";

    /// A prompt asking for a list of `n` tools: two counts differ only near the end, as a
    /// cluster's first-round and top-up prompts do.
    fn asking(n: usize) -> String {
        format!("{HEAD}Answer with a numbered list of {n} tools that do this.")
    }

    /// A call of `prompt` decoded greedily (seed 1), at most `max_tokens`, no grammar.
    fn greedy(prompt: &str, max_tokens: u32) -> Request<'_> {
        Request {
            prompt,
            sampling: sampling(1, 0.0, max_tokens),
            grammar: None,
        }
    }

    #[test]
    fn parallel_sequences_answer_each_call_as_asked() {
        let model = LocalModel::load(&smollm2(), 2, 1024).unwrap();
        let mut s = model.session_for(4).unwrap();
        let grammar = crate::llm::structured::list_grammar(3, 80);
        let prompt =
            "Write 3 short sentences about how malware hides its code from antivirus tools.";
        let other = "Write 2 short sentences about phishing e-mails with malicious attachments.";
        let g2 = crate::llm::structured::list_grammar(2, 80);
        // Three samples of one prompt (its evaluation shared) and one other prompt.
        let reqs: Vec<Request> = [1, 2, 3]
            .into_iter()
            .map(|seed| Request {
                prompt,
                sampling: sampling(seed, 0.8, 200),
                grammar: Some(&grammar),
            })
            .chain([Request {
                prompt: other,
                sampling: sampling(4, 0.8, 200),
                grammar: Some(&g2),
            }])
            .collect();
        let answers: Vec<Answer> = s
            .generate_batch(&reqs)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for (a, want) in answers.iter().zip([3, 3, 3, 2]) {
            assert_eq!(a.finish_reason, "stop", "the grammar completed: {a:?}");
            assert_eq!(a.batched, Some(4));
            let parsed = crate::filter::parse_answer(&a.text);
            assert_eq!(parsed.len(), want, "{a:?}");
            assert!(parsed.iter().all(|c| c.problem.is_none()), "{a:?}");
        }
        assert_eq!(answers[0].prompt_tokens, answers[1].prompt_tokens);
        assert!(answers[3].prompt_tokens != answers[0].prompt_tokens);
        // Different seeds sample different lists from the shared prompt.
        assert_ne!(answers[0].text, answers[1].text);
        // The same batch again gives the same answers (the cache is cleared between batches).
        let again: Vec<String> = s
            .generate_batch(&reqs)
            .unwrap()
            .into_iter()
            .map(|a| a.unwrap().text)
            .collect();
        let first: Vec<String> = answers.iter().map(|a| a.text.clone()).collect();
        assert_eq!(again, first);
    }

    #[test]
    fn a_prompt_sharing_a_prefix_with_an_earlier_one_reuses_its_cells() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session_for(2).unwrap();
        let head = HEAD;
        let a = format!("{head}Name one tool that does this.");
        let b = format!("{head}Name one operating system where this happens.");
        let req = |prompt| greedy(prompt, 16);
        let mixed = s.generate_batch(&[req(&a), req(&b)]).unwrap();
        let shared = s.shared_prefix_tokens;
        // The chat template's opening and the whole head, at least.
        assert!(shared > 20, "{shared} tokens shared");
        // The same prompt alone, from an empty cache (two greedy samples of it: the second
        // shares all of the first but its last token, evaluated again for its logits).
        let alone = s.generate_batch(&[req(&b), req(&b)]).unwrap();
        assert_eq!(
            s.shared_prefix_tokens,
            shared + alone[0].as_ref().unwrap().prompt_tokens - 1,
            "the second sample shares the first's prompt"
        );
        let text = |r: &Result<Answer>| r.as_ref().unwrap().text.clone();
        assert_eq!(
            text(&mixed[1]),
            text(&alone[0]),
            "the copied cells hold what evaluation would"
        );
        assert_ne!(text(&mixed[0]), text(&mixed[1]));
    }

    #[test]
    fn a_prompt_kept_in_memory_restores_in_a_later_session_as_evaluation_would() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let states = Arc::new(PromptStates::new(64));
        let (first, again) = (asking(3), asking(2));
        let text = |r: &Result<Answer>| r.as_ref().unwrap().text.clone();
        // A first round: two samples of one prompt, one state kept.
        {
            let mut s = model.session_for(2).unwrap();
            s.keep_prompts(states.clone());
            s.generate_batch(&[greedy(&first, 4), greedy(&first, 4)])
                .unwrap();
        }
        let kept = states.usage();
        assert_eq!((kept.prompts, kept.restored), (1, 0));
        // A later round in a new context asks the prompt again with another count: everything
        // before the count comes from the kept state.
        let mut s = model.session_for(2).unwrap();
        s.keep_prompts(states.clone());
        let (a, b) = (
            s.prompt_tokens(&first).unwrap(),
            s.prompt_tokens(&again).unwrap(),
        );
        let restored = s.generate_batch(&[greedy(&again, 16)]).unwrap();
        let u = states.usage();
        assert_eq!(u.restored, 1);
        assert_eq!(u.restored_tokens, common_prefix(&a, &b) as u64);
        assert!(u.restored_tokens > 25, "{} tokens", u.restored_tokens);
        assert_eq!(u.prompts, 2, "the new prompt is kept too");
        // The same prompt evaluated whole, in a session that keeps nothing.
        let plain = model
            .session_for(2)
            .unwrap()
            .generate_batch(&[greedy(&again, 16)])
            .unwrap();
        assert_eq!(
            text(&restored[0]),
            text(&plain[0]),
            "the restored cells hold what evaluation would"
        );
        assert_eq!(states.usage().restored, 1);
    }

    #[test]
    fn the_least_recently_used_prompt_state_goes_first_at_the_limit() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let head = HEAD;
        let prompt =
            |i: usize, n: usize| format!("{head}Case {i}. Answer with a list of {n} tools.");
        let tokens = |p: &str| model.session().unwrap().prompt_tokens(p).unwrap();
        // Tokens a prompt was spared by a restore.
        let run = |states: &Arc<PromptStates>, p: &str| {
            let before = states.usage().restored_tokens;
            let mut s = model.session().unwrap();
            s.keep_prompts(states.clone());
            s.generate_with(p, sampling(1, 0.0, 1), None).unwrap();
            states.usage().restored_tokens - before
        };
        // The size of one state, from a store without limit.
        let sized = Arc::new(PromptStates::new(64));
        run(&sized, &prompt(1, 3));
        let one = sized.usage().bytes;
        // Room for two states of about that size (the prompts differ by a digit), not three.
        let states = Arc::new(PromptStates::with_limit(one * 5 / 2));
        assert_eq!(run(&states, &prompt(1, 3)), 0);
        // Case 2 begins as case 1 up to its number.
        let head_len = common_prefix(&tokens(&prompt(1, 3)), &tokens(&prompt(2, 3)));
        assert_eq!(run(&states, &prompt(2, 3)), head_len as u64);
        // Case 1 again: all but its last token restored (evaluated for its logits), and used,
        // not stored twice.
        let n1 = tokens(&prompt(1, 3)).len();
        assert_eq!(run(&states, &prompt(1, 3)), (n1 - 1) as u64);
        assert_eq!(states.usage().prompts, 2);
        // A third prompt evicts case 2, the least recently used.
        run(&states, &prompt(3, 3));
        assert_eq!(states.usage().prompts, 2);
        let to_count =
            |i: usize| common_prefix(&tokens(&prompt(i, 3)), &tokens(&prompt(i, 2))) as u64;
        assert_eq!(run(&states, &prompt(1, 2)), to_count(1), "case 1 is held");
        assert_eq!(
            run(&states, &prompt(2, 2)),
            head_len as u64,
            "case 2 is gone: only the head is restored"
        );
        assert!(to_count(2) > head_len as u64);
        // Off: nothing kept.
        let off = Arc::new(PromptStates::new(0));
        run(&off, &prompt(1, 3));
        assert_eq!(off.usage().prompts, 0);
    }

    /// A store holding `first`, from a session of its own.
    fn states_holding(model: &LocalModel, first: &str) -> Arc<PromptStates> {
        let states = Arc::new(PromptStates::new(64));
        let mut s = model.session_for(2).unwrap();
        s.keep_prompts(states.clone());
        s.generate_batch(&[greedy(first, 1)]).unwrap();
        assert_eq!(states.usage().prompts, 1);
        states
    }

    #[test]
    fn a_kept_prompt_restores_into_a_slot_while_another_call_decodes() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let (first, again) = (asking(3), asking(2));
        let other = "Name one malware family.";
        let states = states_holding(&model, &first);
        let mut s = model.session_for(2).unwrap();
        s.keep_prompts(states.clone());
        s.start(0, &greedy(other, 24)).unwrap();
        s.step().unwrap();
        // Slot 1 starts from the kept state while slot 0 is mid-answer.
        s.start(1, &greedy(&again, 6)).unwrap();
        assert_eq!(states.usage().restored, 1);
        let mut answers = BTreeMap::new();
        while s.busy() > 0 {
            answers.extend(s.step().unwrap());
        }
        // The same two calls in a session that keeps nothing: each answer as there.
        let plain = model
            .session_for(2)
            .unwrap()
            .generate_batch(&[greedy(other, 24), greedy(&again, 6)])
            .unwrap();
        assert_eq!(answers[&1].text, plain[1].as_ref().unwrap().text);
        assert_eq!(answers[&0].text, plain[0].as_ref().unwrap().text);
        assert_eq!(
            answers[&1].prompt_tokens,
            plain[1].as_ref().unwrap().prompt_tokens
        );
    }

    #[test]
    fn no_state_is_restored_under_a_queued_stream_copy() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let (first, again) = (asking(3), asking(2));
        let states = states_holding(&model, &first);
        let mut s = model.session_for(2).unwrap();
        s.keep_prompts(states.clone());
        // A call in slot 1 moved down into slot 0: the copy of its stream waits for a decode,
        // and emptying the session does not cancel it (llama.cpp zeroes the buffers, so the
        // copy would write zeros over a state restored into slot 0 now).
        s.start(1, &greedy("Name one malware family.", 24)).unwrap();
        assert_eq!(s.compact().unwrap(), vec![(1, 0)]);
        s.reset();
        let answer = s.generate_with(&again, sampling(1, 0.0, 8), None).unwrap();
        let alone = model
            .session()
            .unwrap()
            .generate_with(&again, sampling(1, 0.0, 8), None)
            .unwrap();
        assert_eq!(answer.text, alone.text, "the prompt's cells are its own");
        assert_eq!(states.usage().restored, 0, "evaluated, not restored");
        // Once a decode has run, restoring works again.
        let next = s.generate_with(&again, sampling(1, 0.0, 8), None).unwrap();
        assert_eq!(states.usage().restored, 1);
        assert_eq!(next.text, alone.text);
    }

    #[test]
    fn a_finished_sequence_takes_the_next_call_while_the_others_decode() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session_for(2).unwrap();
        let head = HEAD;
        let (a, b, c) = (
            format!("{head}Name one tool that does this."),
            "Name one malware family.".to_string(),
            format!("{head}Name one operating system where this happens."),
        );
        let req = greedy;
        s.start(0, &req(&a, 2)).unwrap();
        s.start(1, &req(&b, 24)).unwrap();
        assert_eq!((s.busy(), s.free_slot()), (2, None));
        let mut steps = 0;
        let first = loop {
            steps += 1;
            let done = s.step().unwrap();
            if !done.is_empty() {
                break done;
            }
        };
        assert_eq!(first.len(), 1, "the short call finishes first: {first:?}");
        assert_eq!(first[0].0, 0);
        assert!(first[0].1.completion_tokens <= 2 && steps <= 2, "{first:?}");
        // Slot 0 is free while slot 1 decodes; the next call takes it, reusing the cells of
        // the prompt that slot still holds (the same head).
        assert_eq!(s.free_slot(), Some(0));
        let before = s.shared_prefix_tokens;
        s.start(0, &req(&c, 4)).unwrap();
        assert!(s.shared_prefix_tokens - before > 20, "the head is shared");
        let mut answers = BTreeMap::new();
        while s.busy() > 0 {
            answers.extend(s.step().unwrap());
        }
        assert_eq!(answers.len(), 2);
        assert!(answers[&0].completion_tokens <= 4);
        assert!(answers[&1].completion_tokens > 2, "{:?}", answers[&1]);
        // The same call alone, from an empty cache: the reused cells held what evaluation would.
        let alone = s.generate_batch(&[req(&c, 4), req(&b, 1)]).unwrap();
        assert_eq!(alone[0].as_ref().unwrap().text, answers[&0].text);
    }

    #[test]
    fn calls_moved_into_lower_free_slots_decode_on_from_their_own_cells() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session_for(4).unwrap();
        let head = HEAD;
        let (a, c, d) = (
            format!("{head}Name one tool that does this."),
            format!("{head}Name one operating system where this happens."),
            "Name one malware family and say what it does.".to_string(),
        );
        let req = greedy;
        s.start(0, &req(&a, 1)).unwrap();
        s.start(1, &req("Name one malware family.", 1)).unwrap();
        s.start(2, &req(&c, 24)).unwrap();
        s.start(3, &req(&d, 24)).unwrap();
        // Nothing to move while no slot below a busy one is free.
        assert_eq!(s.compact().unwrap(), vec![]);
        let mut done = BTreeMap::new();
        while s.busy() > 2 {
            done.extend(s.step().unwrap());
        }
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        // The highest into the lowest, until the busy slots are 0 and 1.
        assert_eq!(s.compact().unwrap(), vec![(3, 0), (2, 1)]);
        assert_eq!((s.busy(), s.free_slot()), (2, Some(2)));
        assert_eq!(s.compact().unwrap(), vec![]);
        let mut moved = BTreeMap::new();
        while s.busy() > 0 {
            moved.extend(s.step().unwrap());
        }
        assert!(moved[&0].completion_tokens > 4, "{:?}", moved[&0]);
        assert!(moved[&1].completion_tokens > 4, "{:?}", moved[&1]);
        // The same calls from an empty cache: each moved stream held what it had decoded.
        let alone = s.generate_batch(&[req(&d, 24), req(&c, 24)]).unwrap();
        assert_eq!(alone[0].as_ref().unwrap().text, moved[&0].text);
        assert_eq!(alone[1].as_ref().unwrap().text, moved[&1].text);
        assert_ne!(moved[&0].text, moved[&1].text);
    }

    #[test]
    fn calls_that_finish_early_leave_gaps_and_every_answer_reaches_its_own_call() {
        // One-item answers between six-item ones (the list grammar ends each answer after its
        // items): when the short calls finish, no call is left to take their slots, so the long
        // calls are moved down (`Session::compact`) and must still be stored under their own
        // call keys.
        let cfg = crate::llm::GeneratorConfig {
            name: "g".into(),
            model: smollm2().display().to_string(),
            temperature: 0.0,
            max_tokens: 200,
            context: 512,
            parallel: 4,
            structured: true,
            item_chars: 40,
            ..Default::default()
        };
        let generator = crate::llm::Generator::resolve("g", &[cfg]).unwrap();
        // Slots 0 and 2 finish first, while slots 1 and 3 decode on; slot 3 is then moved
        // into slot 0.
        let asks = [
            ("phishing", 1),
            ("ransomware", 6),
            ("keyloggers", 1),
            ("botnets", 6),
        ];
        let prompts: Vec<String> = asks
            .iter()
            .map(|(topic, n)| {
                format!("Answer with a numbered list of {n} short sentences about {topic}.")
            })
            .collect();
        let jobs: Vec<crate::llm::CallJob> = prompts
            .iter()
            .zip(asks)
            .enumerate()
            .map(|(i, (p, (_, n)))| crate::llm::CallJob {
                id: generator.call_id(p, 0, n),
                prompt: p.clone(),
                label: format!("call {i}"),
                items: n,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let outcomes = crate::llm::run_calls(
            &generator,
            &jobs,
            &cache,
            &Budget::new(None, None),
            &Progress::new(true),
            "test",
        )
        .unwrap();
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let s = model.session().unwrap();
        let answers: Vec<&Answer> = outcomes.iter().map(|o| o.answer().unwrap()).collect();
        for (p, a) in prompts.iter().zip(&answers) {
            assert_eq!(
                a.prompt_tokens as usize,
                s.prompt_len(p).unwrap(),
                "{p}: {a:?}"
            );
        }
        // Each answer has its own call's items, and the long calls ran on after the short ones.
        for ((_, n), a) in asks.iter().zip(&answers) {
            assert_eq!(a.finish_reason, "stop", "{a:?}");
            assert_eq!(
                a.text.lines().filter(|l| !l.trim().is_empty()).count(),
                *n,
                "{a:?}"
            );
        }
        let longest_short = answers[0]
            .completion_tokens
            .max(answers[2].completion_tokens);
        for i in [1, 3] {
            assert!(
                answers[i].completion_tokens > 2 * longest_short,
                "{answers:?}"
            );
        }
        // What the cache holds under each call key is that call's answer.
        for (job, a) in jobs.iter().zip(&answers) {
            let cached = crate::llm::cached_answer(&cache, &job.id).unwrap().unwrap();
            assert_eq!(
                (&cached.text, cached.prompt_tokens, cached.completion_tokens),
                (&a.text, a.prompt_tokens, a.completion_tokens)
            );
        }
    }

    #[test]
    fn parallel_greedy_samples_of_one_prompt_agree_and_stop_at_max_tokens() {
        let model = LocalModel::load(&smollm2(), 2, 512).unwrap();
        let mut s = model.session_for(3).unwrap();
        let prompt = "Name one technique adversaries use to hide malware.";
        let reqs = [1, 2, 3].map(|seed| Request {
            prompt,
            sampling: sampling(seed, 0.0, 12),
            grammar: None,
        });
        let a: Vec<Answer> = s
            .generate_batch(&reqs)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(a[0].text, a[1].text);
        assert_eq!(a[1].text, a[2].text);
        for x in &a {
            assert!(x.completion_tokens <= 12, "{x:?}");
            if x.finish_reason == "length" {
                assert_eq!(x.completion_tokens, 12, "{x:?}");
            }
        }
    }

    #[test]
    fn a_prompt_too_long_for_its_share_of_the_context_fails_alone() {
        let model = LocalModel::load(&smollm2(), 2, 128).unwrap();
        let mut s = model.session_for(2).unwrap();
        let long = "word ".repeat(400);
        let r = s
            .generate_batch(&[
                Request {
                    prompt: &long,
                    sampling: sampling(1, 0.0, 4),
                    grammar: None,
                },
                Request {
                    prompt: "Name one malware family.",
                    sampling: sampling(2, 0.0, 4),
                    grammar: None,
                },
            ])
            .unwrap();
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.message.contains("raise the generator's `context`"),
            "{}",
            e.message
        );
        assert!(r[1].as_ref().unwrap().completion_tokens > 0);
    }

    #[test]
    fn the_current_item_is_counted_after_its_list_marker() {
        assert_eq!(item_chars(b""), 0);
        assert_eq!(item_chars(b"1. "), 0);
        assert_eq!(item_chars(b"1. The loader"), 10);
        assert_eq!(item_chars(b"1. The loader ran.\n12. It wrote"), 8);
        assert_eq!(item_chars(b"1. First.\n"), 0);
        // Characters, not bytes; a line without a marker counts whole.
        assert_eq!(item_chars("1. Über".as_bytes()), 4);
        assert_eq!(item_chars(b"2023 was"), 8);
    }

    #[test]
    fn a_period_after_a_word_ends_a_sentence_and_after_an_abbreviation_does_not() {
        assert!(ends_a_sentence(b"1. The loader ran."));
        assert!(ends_a_sentence(b"1. It wrote evil.dll into the folder."));
        for abbreviation in ["e.g.", "i.e.", "U.S.", "Inc.", "No.", "etc."] {
            let out = format!("1. Browsers, {abbreviation}");
            assert!(!ends_a_sentence(out.as_bytes()), "{abbreviation}");
        }
        assert!(!ends_a_sentence(b"1. The loader ran"));
        assert!(!ends_a_sentence(b""));
    }

    #[test]
    fn a_space_or_digit_after_a_sentence_begins_a_new_one() {
        let ended = b"1. The thread can be masked.";
        assert!(starts_a_new_sentence(ended, b" The"));
        assert!(starts_a_new_sentence(ended, b"1"));
        assert!(!starts_a_new_sentence(ended, b"com"));
        assert!(!starts_a_new_sentence(b"1. It loaded payload.", b"DLL"));
        assert!(!starts_a_new_sentence(b"1. It fetched v2.", b"1"));
        assert!(!starts_a_new_sentence(b"1. It beaconed to 10.", b"0"));
        assert!(!starts_a_new_sentence(b"1. Browsers, e.g.", b" Chrome"));
        assert!(!starts_a_new_sentence(b"1. The thread", b" can"));
    }

    #[test]
    fn the_period_penalty_is_transformers_exponential_decay() {
        // l + |l|·(f^over − 1): no change at the start, then growth by the factor per character
        // (a positive logit is multiplied; a negative one rises towards and past 0).
        assert_eq!(decayed(10.0, 1.02, 0), 10.0);
        assert!((decayed(10.0, 1.02, 1) - 10.2).abs() < 1e-5);
        assert!((decayed(10.0, 1.02, 50) - 10.0 * 1.02f32.powi(50)).abs() < 1e-3);
        assert!((decayed(-2.0, 1.5, 2) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn the_item_length_penalty_ends_smollm2_items_sooner() {
        let model = LocalModel::load(&smollm2(), 2, 1024).unwrap();
        let mut s = model.session().unwrap();
        let grammar = crate::llm::structured::list_grammar(3, 200);
        let prompt = "Write 3 long, detailed sentences about how malware hides its code from antivirus tools.";
        let mut mean_item = |item_decay| {
            let mut n = Vec::new();
            for seed in [1, 2, 3] {
                let a = s
                    .generate_with(
                        prompt,
                        Sampling {
                            item_decay,
                            ..sampling(seed, 0.8, 400)
                        },
                        Some(&grammar),
                    )
                    .unwrap();
                assert_eq!(a.finish_reason, "stop", "{a:?}");
                for c in crate::filter::parse_answer(&a.text) {
                    n.push(c.text.chars().count());
                }
            }
            assert_eq!(n.len(), 9);
            (
                n.iter().sum::<usize>() as f64 / 9.0,
                n.iter().copied().max().unwrap(),
            )
        };
        let (free, free_longest) = mean_item(None);
        let (steered, longest) = mean_item(Some((60, 1.03)));
        // 1.03 a character from 60 on: 1.03^40 ≈ 3.3 times the period's logit at 100 characters.
        // Measured: mean 113 → 70 characters, longest 181 → 82.
        assert!(longest < 120, "{longest} (free: {free_longest})");
        assert!(steered < 0.8 * free, "{steered} vs {free}");
    }

    #[test]
    fn call_seeds_differ_by_key_and_seed() {
        assert_ne!(call_seed(0, "a"), call_seed(0, "b"));
        assert_ne!(call_seed(0, "a"), call_seed(1, "a"));
        assert_eq!(call_seed(3, "a"), call_seed(3, "a"));
    }
}

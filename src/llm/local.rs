//! The `local` provider: in-process GGUF inference with llama.cpp (the `llama-cpp-2` crate).
//!
//! The prompt is wrapped in the model's own chat template (read from the GGUF), tokenized with
//! the model's tokenizer, and sampled with top-p → temperature → a seeded distribution sampler.
//! Each call's seed is derived from the generator seed and the call key, so an answer does not
//! depend on which calls ran before it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;

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

    /// A context for a series of calls.
    pub fn session(&self) -> Result<Session<'_>> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.context))
            .with_n_batch(512)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| Error::internal(format!("llama.cpp context for {}: {e}", self.path)))?;
        Ok(Session { model: self, ctx })
    }
}

pub struct Session<'a> {
    model: &'a LocalModel,
    ctx: LlamaContext<'a>,
}

impl Session<'_> {
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
        let started = Instant::now();
        let model = &self.model.model;
        let fail = |what: &str, e: String| Error::internal(format!("llama.cpp {what}: {e}"));
        let template = model
            .chat_template(None)
            .map_err(|e| fail("chat template (the GGUF has none?)", e.to_string()))?;
        let msg = LlamaChatMessage::new("user".into(), prompt.into())
            .map_err(|e| fail("message", e.to_string()))?;
        let text = model
            .apply_chat_template(&template, &[msg], true)
            .map_err(|e| fail("applying the chat template", e.to_string()))?;
        let vocab = model.vocab();
        let tokens = vocab.tokenize(text.as_bytes(), false, true);
        let n_ctx = self.ctx.n_ctx() as usize;
        if tokens.len() + 1 >= n_ctx {
            return Err(Error::config(format!(
                "the prompt has {} tokens but the context holds {n_ctx}; raise the generator's `context` or shorten the template",
                tokens.len()
            )));
        }
        let max_new = (s.max_tokens as usize).min(n_ctx - tokens.len());
        self.ctx.clear_kv_cache();
        let n_batch = 512usize;
        let mut batch = LlamaBatch::new(n_batch.max(1), 1);
        let last = tokens.len() - 1;
        for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
            batch.clear();
            for (j, t) in chunk.iter().enumerate() {
                let pos = ci * n_batch + j;
                batch
                    .add(*t, pos as i32, &[0], pos == last)
                    .map_err(|e| fail("batch", e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| fail("prompt decode", e.to_string()))?;
        }
        let decode_started = Instant::now();
        // The grammar masks the logits first; the usual samplers choose among what it admits.
        let mut chain = Vec::new();
        if let Some(g) = grammar {
            chain.push(
                LlamaSampler::grammar(model, g, "root")
                    .map_err(|e| fail("grammar", format!("{e:?}")))?,
            );
        }
        let mut sampler = if s.temperature <= 0.0 {
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
        let mut out: Vec<u8> = Vec::new();
        let mut generated = 0u64;
        let mut finish = "length";
        for pos in tokens.len()..tokens.len() + max_new {
            // `sample` also accepts the token (llama_sampler_sample does): accepting it again
            // would advance a grammar twice.
            let tok = sampler.sample(&self.ctx, batch.n_tokens() - 1);
            if vocab.is_eog(tok) {
                finish = "stop";
                break;
            }
            generated += 1;
            out.extend(vocab.token_to_piece(tok, false, None));
            batch.clear();
            batch
                .add(tok, pos as i32, &[0], true)
                .map_err(|e| fail("batch", e.to_string()))?;
            self.ctx
                .decode(&mut batch)
                .map_err(|e| fail("decode", e.to_string()))?;
        }
        Ok(Answer {
            text: String::from_utf8_lossy(&out).into_owned(),
            prompt_tokens: tokens.len() as u64,
            completion_tokens: generated,
            usage_estimated: false,
            finish_reason: finish.into(),
            seconds: started.elapsed().as_secs_f64(),
            decode_seconds: Some(decode_started.elapsed().as_secs_f64()),
        })
    }
}

/// The seed of one call: the generator seed mixed with the call key.
pub fn call_seed(seed: u64, key: &str) -> u32 {
    let h = crate::hash::fnv1a(format!("{seed}:{key}").as_bytes());
    (h ^ (h >> 32)) as u32
}

/// Make the pending calls one after another (one model, one context).
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
    let mut session = model.session()?;
    for &i in pending {
        let job = &jobs[i];
        // One call at a time: nothing is in flight, so the budget never says to wait.
        let cost = Budget::call_cost(&job.prompt, cfg.max_tokens);
        if let super::Start::Stop(why) = budget.try_start(cost) {
            progress.log(format!(
                "generate {}: {} skipped: {why}",
                generator.name, job.label
            ));
            let o = Outcome::Skipped { reason: why };
            tally.record(&o);
            outcomes.insert(i, o);
            continue;
        }
        let sampling = Sampling {
            temperature: cfg.temperature as f32,
            top_p: cfg.top_p as f32,
            top_k: cfg.top_k,
            max_tokens: cfg.max_tokens,
            seed: call_seed(cfg.seed, &job.id.key),
        };
        let grammar = generator
            .identity
            .structured
            .map(|shape| super::structured::list_grammar(job.items, shape.item_chars));
        let o = match session.generate_with(&job.prompt, sampling, grammar.as_deref()) {
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
    }
    Ok(())
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
                assert!((20..=80).contains(&n) && item.ends_with('.'), "{n}: {item}");
            }
            let parsed = crate::filter::parse_answer(&a.text);
            assert_eq!(parsed.len(), 3);
            assert!(parsed.iter().all(|c| c.problem.is_none()));
        }
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
                },
            )
            .unwrap_err();
        assert!(
            e.message.contains("raise the generator's `context`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn call_seeds_differ_by_key_and_seed() {
        assert_ne!(call_seed(0, "a"), call_seed(0, "b"));
        assert_ne!(call_seed(0, "a"), call_seed(1, "a"));
        assert_eq!(call_seed(3, "a"), call_seed(3, "a"));
    }
}

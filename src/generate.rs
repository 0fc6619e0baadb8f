//! The generate stage: one prompt per (target technique, cluster, batch of sentences), rendered
//! from the template and sent to the generator; answers come from the per-call cache when they
//! can.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::cluster::{Clusters, TechniqueClusters};
use crate::data::Catalog;
use crate::error::{Error, Result};
use crate::hash::blake3_hex;
use crate::llm::{CallJob, Generator, Identity, Outcome};
use crate::prompt::{PromptTemplate, PromptVars, clean_description};

/// Version 2: answers say whether their token counts are estimated (see [`crate::llm::Answer`]).
pub const GENERATE_VERSION: u32 = 2;

/// The generate stage's parameters, which are exactly its cache key (with the cluster stage's
/// key as its input): the generator by identity (model by content, sampling settings — not its
/// name, so a replay shares the entries of what it replays), the template by content hash, how
/// many sentences, and the ATT&CK bundle the prompts describe techniques from.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateParams<'a> {
    pub identity: &'a crate::llm::Identity,
    pub template: &'a str,
    pub per_technique: usize,
    pub count: CountMode,
    pub per_call: usize,
    pub attack: Option<&'a str>,
}

impl crate::cache::StageParams for GenerateParams<'_> {
    const STAGE: &'static str = "generate";
    fn version(&self) -> u32 {
        GENERATE_VERSION
    }
}

/// A top-up round's parameters (its cache key, with the generation before it and that
/// generation's filter entry as its inputs: what the filter kept decides what is asked). The
/// entry holds the round's calls.
#[derive(Debug, Clone, Serialize)]
pub struct TopUpParams {
    /// 1 for the first top-up round.
    pub round: usize,
}

impl crate::cache::StageParams for TopUpParams {
    const STAGE: &'static str = "top-up";
    fn version(&self) -> u32 {
        GENERATE_VERSION
    }
}

/// One call of the stage and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub technique: String,
    pub cluster: usize,
    pub sample: u32,
    /// Sentences this call asked for.
    pub requested: usize,
    /// BLAKE3 of the rendered prompt.
    pub prompt_key: String,
    /// The call's cache key.
    pub call_key: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What the generate stage produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    pub generator: String,
    pub identity: Identity,
    pub template: String,
    /// Sentences wanted per target technique.
    pub requested: BTreeMap<String, usize>,
    pub calls: Vec<CallRecord>,
}

/// Call totals of a generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub calls: usize,
    pub made: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Answers whose server sent no token usage, so that their tokens are estimated.
    pub estimated_answers: usize,
    /// The part of `prompt_tokens + completion_tokens` that is estimated (characters / 4).
    pub estimated_tokens: u64,
}

impl Usage {
    /// Calls answered, now or from the cache.
    pub fn answered(&self) -> usize {
        self.made + self.cached
    }

    /// Prompt + completion tokens.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl Generation {
    /// Every call answered (now or from the cache).
    pub fn complete(&self) -> bool {
        self.calls.iter().all(|c| c.outcome.answer().is_some())
    }

    /// Tokens are counted over every answer, cached ones included: what the data cost to make.
    pub fn usage(&self) -> Usage {
        let mut u = Usage {
            calls: self.calls.len(),
            ..Default::default()
        };
        for c in &self.calls {
            match &c.outcome {
                Outcome::Done { .. } => u.made += 1,
                Outcome::Cached { .. } => u.cached += 1,
                Outcome::Failed { .. } => u.failed += 1,
                Outcome::Skipped { .. } => u.skipped += 1,
            }
            if let Some(a) = c.outcome.answer() {
                u.prompt_tokens += a.prompt_tokens;
                u.completion_tokens += a.completion_tokens;
                if a.usage_estimated {
                    u.estimated_answers += 1;
                    u.estimated_tokens += a.prompt_tokens + a.completion_tokens;
                }
            }
        }
        u
    }

    /// Why this generation gives no sentence to train on before any parsing: no call was planned,
    /// or none was answered (with the figures and the last error). `None` when some call answered.
    pub fn unanswered(&self) -> Option<String> {
        let u = self.usage();
        if u.calls == 0 {
            let targets = self.requested.len();
            return Some(format!(
                "0 sentences were requested for its {targets} target techniques, so no LLM call was made (with `augment.count = \"up-to\"` each already has `per_technique` train sentences); raise `augment.per_technique` or set `augment.count = \"fixed\"`"
            ));
        }
        if u.answered() > 0 {
            return None;
        }
        let last = self.calls.iter().rev().find_map(|c| match &c.outcome {
            Outcome::Failed { error } => Some(format!("last error: {error}")),
            _ => None,
        });
        let last = last.or_else(|| {
            self.calls.iter().rev().find_map(|c| match &c.outcome {
                Outcome::Skipped { reason } => Some(format!("skipped: {reason}")),
                _ => None,
            })
        });
        Some(format!(
            "0 of {} LLM calls succeeded ({} failed, {} skipped over budget); {}. Check the generator `{}` (its model, `base_url`, key and budget) and rerun: failed calls are not cached, so a rerun makes them again",
            u.calls,
            u.failed,
            u.skipped,
            last.unwrap_or_default(),
            self.generator
        ))
    }
}

/// How many new sentences a target technique gets.
pub fn requested(t: &TechniqueClusters, per_technique: usize, count: CountMode) -> usize {
    match count {
        CountMode::Fixed => per_technique,
        CountMode::UpTo => per_technique.saturating_sub(t.train_count),
    }
}

/// A call to make, with where it belongs.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    pub technique: String,
    pub cluster: usize,
    pub sample: u32,
    pub requested: usize,
    pub prompt_key: String,
    pub job: CallJob,
}

/// Render every prompt: a technique's sentences are shared out over its clusters, and each
/// cluster's share is asked for `per_call` at a time. Identical prompts are told apart by their
/// sample index.
pub fn plan_calls(
    clusters: &Clusters,
    catalog: &Catalog,
    template: &PromptTemplate,
    generator: &Generator,
    per_technique: usize,
    count: CountMode,
    per_call: usize,
) -> Result<(Vec<PlannedCall>, BTreeMap<String, usize>)> {
    let mut calls = Vec::new();
    let mut wanted = BTreeMap::new();
    let mut planner = Planner {
        template,
        generator,
        per_call,
        samples: HashMap::new(),
    };
    for t in &clusters.targets {
        let r = requested(t, per_technique, count);
        wanted.insert(t.technique.clone(), r);
        if r == 0 || t.clusters.is_empty() {
            continue;
        }
        let tech = catalog.get(&t.technique).ok_or_else(|| {
            Error::data(format!(
                "technique {} is not in the ATT&CK bundle, so a prompt cannot name or describe it; use a bundle that has it (data.attack) or leave it out of the targets",
                t.technique
            ))
        })?;
        let description = clean_description(&tech.description);
        let k = t.clusters.len();
        for ci in 0..k {
            calls.extend(planner.cluster_calls(
                t,
                ci,
                cluster_share(r, k, ci),
                tech,
                &description,
            )?);
        }
    }
    Ok((calls, wanted))
}

/// Cluster `ci`'s share of a technique's `r` requested sentences over its `k` clusters: as even
/// as can be, the first `r % k` clusters one more.
fn cluster_share(r: usize, k: usize, ci: usize) -> usize {
    r / k + usize::from(ci < r % k)
}

/// The record of each planned call with its outcome (the same order).
pub fn records(planned: Vec<PlannedCall>, outcomes: Vec<Outcome>) -> Vec<CallRecord> {
    planned
        .into_iter()
        .zip(outcomes)
        .map(|(p, outcome)| CallRecord {
            technique: p.technique,
            cluster: p.cluster,
            sample: p.sample,
            requested: p.requested,
            prompt_key: p.prompt_key,
            call_key: p.job.id.key,
            outcome,
        })
        .collect()
}

/// What the calls of one plan share: the template, the generator, the sentences per call, and
/// how many calls each rendered prompt (by its BLAKE3, the calls' `prompt_key`) has had so far —
/// identical prompts are told apart by their sample index, which goes into the call key.
struct Planner<'a> {
    template: &'a PromptTemplate,
    generator: &'a Generator,
    per_call: usize,
    samples: HashMap<String, u32>,
}

impl Planner<'_> {
    /// The calls that ask for `share` sentences of cluster `ci` of technique `t`, `per_call` at
    /// a time. `description`: the technique's, as [`clean_description`] gives it.
    fn cluster_calls(
        &mut self,
        t: &TechniqueClusters,
        ci: usize,
        share: usize,
        tech: &crate::data::attack::Technique,
        description: &(String, String),
    ) -> Result<Vec<PlannedCall>> {
        let c = &t.clusters[ci];
        let k = t.clusters.len();
        let mut calls = Vec::new();
        let mut asked = 0;
        while asked < share {
            let n = self.per_call.min(share - asked);
            asked += n;
            let vars = PromptVars {
                technique_id: t.technique.clone(),
                technique_name: tech.name.clone(),
                description: description.0.clone(),
                full_description: description.1.clone(),
                tactics: tech.tactics.clone(),
                examples: c
                    .representatives
                    .iter()
                    .map(|&i| t.texts[i].clone())
                    .collect(),
                n,
                cluster: ci,
                clusters: k,
            };
            let prompt = self.template.render(&vars)?;
            let prompt_key = blake3_hex(prompt.as_bytes());
            let slot = self.samples.entry(prompt_key.clone()).or_insert(0);
            let sample = *slot;
            *slot += 1;
            let id = self.generator.call_id(&prompt, sample, n);
            calls.push(PlannedCall {
                technique: t.technique.clone(),
                cluster: ci,
                sample,
                requested: n,
                prompt_key,
                job: CallJob {
                    label: format!("{} cluster {ci} sample {sample}", t.technique),
                    id,
                    prompt,
                    items: n,
                },
            });
        }
        Ok(calls)
    }
}

/// Top-up calls (`augment.top_up`): for every cluster of a target technique, as many sentences
/// as its share of the technique's requested count (as [`plan_calls`] shares it out) exceeds the
/// sentences kept from it over all calls so far (and at most what the technique as a whole
/// lacks), asked again with the cluster's prompt asking for that many
/// (a later sample index, so a new call key and seed), `per_call` at a time. `kept` is the filter's
/// verdict on `generation`. Clusters with a call that went unanswered get none (the generation
/// is incomplete; a rerun retries the call first). Empty when every cluster kept its share.
pub fn plan_top_up(
    generation: &Generation,
    kept: &crate::filter::Synthetic,
    clusters: &Clusters,
    catalog: &Catalog,
    template: &PromptTemplate,
    generator: &Generator,
    per_call: usize,
) -> Result<Vec<PlannedCall>> {
    // Sample indices continue from the calls already made of each prompt: one asked n times
    // before takes n, n + 1, … (two clusters with the same prompt too: one count for all).
    let mut planner = Planner {
        template,
        generator,
        per_call,
        samples: HashMap::new(),
    };
    let mut unanswered: std::collections::HashSet<(&str, usize)> = Default::default();
    for c in &generation.calls {
        if c.outcome.answer().is_none() {
            unanswered.insert((c.technique.as_str(), c.cluster));
        }
        *planner.samples.entry(c.prompt_key.clone()).or_insert(0) += 1;
    }
    let mut got: HashMap<(&str, usize), usize> = HashMap::new();
    for s in kept.sentences.iter().filter(|s| s.kept) {
        *got.entry((s.technique.as_str(), s.cluster)).or_insert(0) += 1;
    }
    let mut calls = Vec::new();
    for t in &clusters.targets {
        let Some(tech) = catalog.get(&t.technique) else {
            continue;
        };
        let description = clean_description(&tech.description);
        let r = generation.requested.get(&t.technique).copied().unwrap_or(0);
        let k = t.clusters.len();
        // What the technique lacks: a cluster that over-delivered (a plain answer can hold more
        // items than asked) had its surplus cut by the quota, and is not made up for twice.
        let kept_t: usize = (0..k)
            .map(|ci| got.get(&(t.technique.as_str(), ci)).copied().unwrap_or(0))
            .sum();
        let mut lacking = r.saturating_sub(kept_t);
        for ci in 0..k {
            let key = (t.technique.as_str(), ci);
            // The cluster's share, as `plan_calls` gave it out, less what it kept.
            let short = cluster_share(r, k, ci)
                .saturating_sub(got.get(&key).copied().unwrap_or(0))
                .min(lacking);
            if short == 0 || unanswered.contains(&key) {
                continue;
            }
            lacking -= short;
            calls.extend(planner.cluster_calls(t, ci, short, tech, &description)?);
        }
    }
    Ok(calls)
}
/// How many sentences a target technique gets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CountMode {
    /// `per_technique` new sentences for every target technique.
    Fixed,
    /// Enough new sentences to bring the technique's train count up to `per_technique`.
    UpTo,
}

//! `synthcti generate`: the synthetic data set alone, as JSON lines with provenance — for people
//! who want the data, not the study.

use serde::Serialize;

use crate::filter::Synthetic;
use crate::manifest::{Manifest, SynthSpec};

/// One kept synthetic sentence with where it came from: a line of `synthcti generate`'s output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportRow<'a> {
    /// The sentence, as kept by the filters.
    pub text: &'a str,
    /// Its label: the ATT&CK technique it was written for.
    pub technique: &'a str,
    /// The cluster of real train sentences whose representatives were in the prompt.
    pub cluster: usize,
    /// `k` of the chain's clustering.
    pub k: usize,
    /// The prompt template's name.
    pub template: &'a str,
    /// BLAKE3 of the rendered prompt (hex).
    pub prompt_key: &'a str,
    /// The call's cache key (stage `llm-call`), which names the answer it was parsed from.
    pub call_key: &'a str,
    /// The `[[generator]]` name, its provider and model (model id, or GGUF path).
    pub generator: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// The filters it passed, in the order they apply.
    pub filters_passed: &'a [String],
    /// The replicate whose chain made it (`experiment.replicates`; 0 is the manifest as
    /// written), with that replicate's split seed and the generator's sampling seed.
    pub replicate: usize,
    pub split_seed: u64,
    pub seed: u64,
}

/// The kept sentences of one synthetic chain of replicate `r` as JSON lines (one [`ExportRow`]
/// each, `\n`-ended); `m` is the whole manifest (its replicate `r` is derived here).
pub fn jsonl(m: &Manifest, r: usize, spec: &SynthSpec, data: &Synthetic) -> String {
    let mr = m.replicate(r);
    let g = &mr.generators[&spec.generator];
    let mut out = String::new();
    for s in data.sentences.iter().filter(|s| s.kept) {
        let row = ExportRow {
            text: &s.text,
            technique: &s.technique,
            cluster: s.cluster,
            k: spec.k,
            template: &spec.template,
            prompt_key: &s.prompt_key,
            call_key: &s.call_key,
            generator: &spec.generator,
            provider: g.provider.as_str(),
            model: &g.config.model,
            filters_passed: &s.filters_passed,
            replicate: r,
            split_seed: mr.split.seed,
            seed: g.config.seed,
        };
        out.push_str(&serde_json::to_string(&row).expect("row serializes"));
        out.push('\n');
    }
    out
}

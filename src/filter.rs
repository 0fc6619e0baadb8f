//! The filter stage: answers parsed into sentences (numbered lists, bullet lists, JSON arrays,
//! plain lines), then filtered — empty, malformed, cut off, overlong, exact and near duplicates (among the
//! synthetic sentences and against the real train sentences), leakage (too similar to a test
//! sentence), optionally a reference classifier's disagreement, and the per-technique quota — with
//! counts of what each filter removed and diversity figures of what is kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::features::words;
use crate::generate::{Generation, Usage};
use crate::similarity::{SparseVec, Tfidf, cosine, nearest};

/// Version 2: the usage figures count estimated tokens ([`Usage`]).
/// Version 3: reasoning (`<think>…</think>`) is removed before parsing; the `attack-id`, `meta`
/// and `repetition` filters.
/// Version 5: the meta filter also finds the prompt's wording echoed back (sentence counts,
/// "numbered list", "one per line", the prompt's labels).
/// Version 8: the `cut-off` filter; the meta filter finds the prompt's frame (the word
/// "sentence", the persona, the report as the subject, the reader addressed), phrases as whole
/// words (6 and 7 were never released).
/// Version 10: the meta filter finds the first person singular and the second person, the
/// answer's own frame ("Another example of…", "…adding to the list", "This response…") and the
/// template's own wording echoed (9 was never released).
/// Version 12: the meta filter finds a reference to a text ("this report", "the third example",
/// "the following responses", "the author has…", "It describes how…", "…added to the report"),
/// and the template's wording echoed as bigrams, not trigrams (11 was never released).
/// Version 13: bigrams only given 200 train sentences or more, trigrams below; a text reference
/// after a guarded phrase that does not count is still found.
/// Version 14: the meta filter's patterns anchored at a sentence's start see it from its first
/// letter or digit ("“Another example…"), as its openings and text references already did.
/// Version 15: a list number glued to an item's start ("3.The malware…") or to its end ("…;
/// 2.", "…systems.” 5.") is stripped, and an item that then ends unfinished — on `;` or `,`,
/// or on a word no sentence ends with ("This is a type of.", "…but be able to.") — is `cut-off`.
/// Version 16: the meta filter finds a template's placeholder left in ("[insert name here]"),
/// other list items pointed at ("Another part of the list…") and "the answer is".
/// Version 18: the meta filter finds discourse about the writing (`junk::DISCOURSE`): questions,
/// pointers into the text ("As previously mentioned…"), details announced, the response or the
/// question as the subject, the document as the thing written, the writer's plans and
/// instructions to the writer. (17, a broader first draft, was never released.)
pub const FILTER_VERSION: u32 = 18;

/// The filter stage's parameters, which are exactly its cache key (inputs: the generation's key,
/// the split's key — train sentences for the real-duplicate filters, test sentences for the
/// leakage filter — and the reference classifier's key when it is used).
#[derive(Debug, Serialize)]
pub struct FilterParams<'a> {
    pub filter: &'a FilterConfig,
}

impl crate::cache::StageParams for FilterParams<'_> {
    const STAGE: &'static str = "filter";
    fn version(&self) -> u32 {
        FILTER_VERSION
    }
}

/// The filters, in the order they are applied.
pub const FILTERS: &[&str] = &[
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
    "reference",
    "quota",
];

/// A line of an answer, before filtering.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    /// Why the parser already knows it is not a sentence.
    pub problem: Option<&'static str>,
}

/// One synthetic sentence and its fate: a line of `synthetic.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SynthSentence {
    pub technique: String,
    pub text: String,
    pub cluster: usize,
    pub prompt_key: String,
    pub call_key: String,
    pub kept: bool,
    pub filters_passed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// For duplicates and leakage: the sentence it was too close to, and how close; for
    /// `attack-id` the reference found, for `meta` and `repetition` what was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similar_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// Per-technique counts and diversity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TechniqueStats {
    pub technique: String,
    pub train_count: usize,
    pub requested: usize,
    pub calls: usize,
    pub failed_calls: usize,
    /// Answers that gave no usable sentence at all.
    pub empty_answers: usize,
    pub parsed: usize,
    /// Filter name → sentences it removed.
    pub removed: BTreeMap<String, usize>,
    pub kept: usize,
    pub distinct_1: Option<f64>,
    pub distinct_2: Option<f64>,
    pub self_bleu: Option<f64>,
    /// Mean cosine similarity of kept sentences to the technique's real train sentences.
    pub mean_similarity_real: Option<f64>,
    /// Mean over kept sentences of the similarity to their nearest real train sentence.
    pub nearest_similarity_real: Option<f64>,
}

/// What the filter stage writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Synthetic {
    pub sentences: Vec<SynthSentence>,
    pub techniques: Vec<TechniqueStats>,
    pub kept: usize,
    pub usage: Usage,
}

impl Synthetic {
    /// The kept sentences as (text, technique).
    pub fn kept(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sentences
            .iter()
            .filter(|s| s.kept)
            .map(|s| (s.text.as_str(), s.technique.as_str()))
    }

    /// Why no sentence is left to train on, with the figures: the answers held none, or the
    /// filters removed every one (and which removed how many). `None` when some sentence is kept.
    pub fn nothing_kept(&self) -> Option<String> {
        if self.kept > 0 {
            return None;
        }
        let answers = self.usage.answered();
        if self.sentences.is_empty() {
            return Some(format!(
                "the answers held no sentence at all ({answers} answered {}); look at the answers in the cache (stage `llm-call`) and at the template",
                if answers == 1 { "call" } else { "calls" }
            ));
        }
        let mut removed: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.sentences {
            if let Some(f) = &s.rejected_by {
                *removed.entry(f.as_str()).or_insert(0) += 1;
            }
        }
        // In the order the filters apply.
        let by: Vec<String> = FILTERS
            .iter()
            .filter_map(|f| removed.get(f).map(|n| format!("{f} {n}")))
            .collect();
        Some(format!(
            "the filters removed every sentence parsed from the answers ({} sentences from {answers} answered {}: {}); the cell's synthetic.jsonl names the filter that removed each; change the template or the generator, or loosen `[augment.filter]`",
            self.sentences.len(),
            if answers == 1 { "call" } else { "calls" },
            by.join(", ")
        ))
    }

    pub fn jsonl(&self) -> String {
        let mut out = String::new();
        for s in &self.sentences {
            out.push_str(&serde_json::to_string(s).expect("sentence serializes"));
            out.push('\n');
        }
        out
    }
}

/// Strip a list marker (`1.`, `1)`, `(1)`, `-`, `*`, `•`, `+`); returns the rest if there was one.
fn strip_marker(line: &str) -> Option<&str> {
    let t = line.trim_start();
    for m in ["- ", "* ", "• ", "+ ", "– "] {
        if let Some(rest) = t.strip_prefix(m) {
            return Some(rest);
        }
    }
    let t2 = t.strip_prefix('(').unwrap_or(t);
    let digits = t2.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && digits <= 3 {
        let rest = &t2[digits..];
        for sep in [". ", ") ", ": ", ".\t", ")\t"] {
            if let Some(r) = rest.strip_prefix(sep) {
                return Some(r);
            }
        }
        if rest == "." || rest == ")" {
            return Some("");
        }
    }
    None
}

/// A list number glued to the start of an item's text, before a capital or a quote: "3.The
/// malware…" (SmolLM2 numbering inside an item).
static GLUED_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\d{1,2}[.)]([\p{Lu}"“])"#).expect("valid regex"));

/// The next list number written at the end of an item, after punctuation: "…vulnerabilities;
/// 2.", "…systems.” 5.", "…targets, 8." (the number of a list that went on inside the item).
/// Of the 36,975 distinct real sentences of TRAM and CTI-to-MITRE, 8 end so, 6 of them on an
/// introduction to a list ("…the following: 1.").
static TRAILING_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"([;,:"”])\s*\d{1,2}\.$"#).expect("valid regex"));

/// A sentence that stops on a word no sentence ends with: an article, a conjunction, "of",
/// "than", or "to" after a verb that wants an infinitive ("This is a type of.", "…but be able
/// to.", "…and/or."). Of the 36,975 distinct real sentences of TRAM and CTI-to-MITRE, 3 end so.
static UNFINISHED_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:of|the|a|an|and|or|nor|than|such as|(?:able|need|needs|needed|going|want|wants|designed|used|allowed|tries|tried|attempts) to)\.$",
    )
    .expect("valid regex")
});

/// Whether a tidied sentence ends unfinished: on `;` or `,` (what is left of "…; 2." once the
/// number is stripped) or on a word no sentence ends with ([`UNFINISHED_END`]).
fn ends_unfinished(t: &str) -> bool {
    t.ends_with([';', ',']) || UNFINISHED_END.is_match(t)
}

/// Tidy one sentence: outer quotes, Markdown emphasis, whitespace, and list numbers glued to its
/// start or end ([`GLUED_NUMBER`], [`TRAILING_NUMBER`]).
fn tidy(s: &str) -> String {
    let s = s.replace("**", "").replace("__", "");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = TRAILING_NUMBER.replace(s.trim(), "$1");
    let s = GLUED_NUMBER.replace(s.trim(), "$1");
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| {
            s.strip_prefix('\u{201c}')
                .and_then(|x| x.strip_suffix('\u{201d}'))
        })
        .unwrap_or(s);
    s.trim().to_string()
}

/// Parse an answer into candidate sentences, after removing a reasoning model's reasoning
/// ([`crate::junk::strip_reasoning`]): a JSON array (of strings, or of objects with a
/// `text`/`sentence` field), else a numbered or bullet list (lines outside the list — a preamble,
/// a closing remark — are malformed), else one sentence per non-empty line.
pub fn parse_answer(answer: &str) -> Vec<Candidate> {
    let answer = crate::junk::strip_reasoning(answer);
    let answer = answer.as_str();
    if let (Some(a), Some(b)) = (answer.find('['), answer.rfind(']'))
        && a < b
        && let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(&answer[a..=b])
        && !items.is_empty()
    {
        return items
            .iter()
            .map(|v| {
                let text = match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => o
                        .get("text")
                        .or_else(|| o.get("sentence"))
                        .and_then(|x| x.as_str())
                        .map(str::to_string),
                    _ => None,
                };
                match text {
                    Some(t) => Candidate {
                        text: tidy(&t),
                        problem: None,
                    },
                    None => Candidate {
                        text: v.to_string(),
                        problem: Some("malformed"),
                    },
                }
            })
            .collect();
    }
    let lines: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .collect();
    let listed = lines.iter().any(|l| strip_marker(l).is_some());
    lines
        .iter()
        .map(|l| match strip_marker(l) {
            Some(rest) => Candidate {
                text: tidy(rest),
                problem: None,
            },
            None if listed => Candidate {
                text: tidy(l),
                problem: Some("malformed"),
            },
            None => Candidate {
                text: tidy(l),
                problem: None,
            },
        })
        .collect()
}

/// Why a candidate is not a sentence, before any comparison. `cut_off`: the candidate did not end
/// where the model ended it ([`cut_off`]).
fn shape_problem(c: &Candidate, cut_off: bool, cfg: &FilterConfig) -> Option<&'static str> {
    let t = c.text.trim();
    if t.is_empty() {
        return Some("empty");
    }
    if c.problem.is_some()
        || t.ends_with(':')
        || t.contains("<|")
        || !t.chars().any(char::is_alphabetic)
        || words(t).len() < cfg.min_words
    {
        return Some("malformed");
    }
    if cut_off || ends_unfinished(t) {
        return Some("cut-off");
    }
    if t.chars().count() > cfg.max_chars {
        return Some("overlong");
    }
    None
}

/// Which candidates of one answer were cut off rather than ended by the model: under a structured
/// generator's shape, an item that reached its `item_chars` bound (the grammar or schema ends it
/// there, mid-word as often as not); and in an answer that stopped at `max_tokens`
/// (`finish_reason = "length"`), its last item. One flag per candidate, in order.
fn cut_off(
    cands: &[Candidate],
    answer: &crate::llm::Answer,
    shape: Option<crate::llm::structured::Shape>,
) -> Vec<bool> {
    let n = cands.len();
    cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // Counted as the grammar bounds an item: a period inside a word goes with the
            // character after it.
            let units = |t: &str| {
                let t = t.strip_suffix('.').unwrap_or(t);
                t.chars().count() - t.matches('.').count() + 1
            };
            shape.is_some_and(|s| units(&c.text) >= s.item_chars)
                || (answer.finish_reason == "length" && i + 1 == n)
        })
        .collect()
}

/// Which junk filter removes a well-shaped sentence: a literal ATT&CK reference, a meta-sentence,
/// a repeated n-gram (each when enabled), with what was found.
fn junk_problem(
    t: &str,
    cfg: &FilterConfig,
    instruction: &HashSet<Vec<String>>,
) -> Option<(&'static str, String)> {
    if cfg.attack_ids
        && let Some(m) = crate::junk::attack_reference(t)
    {
        return Some(("attack-id", m.to_string()));
    }
    if cfg.meta && crate::junk::is_meta(t) {
        return Some(("meta", "about the task or the list".into()));
    }
    if cfg.meta
        && let Some(g) = crate::junk::echoes(t, instruction)
    {
        return Some(("meta", format!("echoes the prompt: \"{g}\"")));
    }
    if let Some(g) = crate::junk::repeated_ngram(t, cfg.repeated_ngram) {
        return Some(("repetition", format!("repeats \"{g}\"")));
    }
    None
}

/// Text as compared for exact duplicates: lower case, words only.
fn normalized(t: &str) -> String {
    words(t).join(" ")
}

/// Fewer real train sentences than this, and the meta filter looks for the template's trigrams
/// ([`echo_ngram`]): a small train set lacks common bigrams of the template ("the threat", "for
/// the", "in the"), and bigrams would flag real-looking sentences wholesale (2.4% of TRAM's
/// held-out sentences against 50 train ones, 12.7% on the 36-sentence example in
/// examples/own-data; trigrams 0.6%).
const ECHO_BIGRAM_MIN_TRAIN: usize = 200;

/// The n of the template's n-grams the meta filter looks for (see [`FilterInput::template`]),
/// given `train` real train sentences. From [`ECHO_BIGRAM_MIN_TRAIN`] on: bigrams, which catch
/// the shipped template's frame taken up as a subject ("The report shows…", "It provides details
/// about how adversaries…", "…such as in real reports": TRAM's train sentences never say "the
/// report", "describes how" or "real reports"), and what trigrams catch ("A threat actor or its
/// malware may…" from "what a threat actor or its malware did"). Of TRAM's distinct
/// single-label sentences split at random, 0.30% of 1,349 held-out ones hold a template bigram
/// missing from 200 to 2,000 train ones ("the same as", "adversaries use", "do not"), 0.07%
/// with 3,467 (trigrams: 0.05%, 0.05%). Below it: trigrams.
fn echo_ngram(train: usize) -> usize {
    if train >= ECHO_BIGRAM_MIN_TRAIN { 2 } else { 3 }
}

/// Inputs of the filter stage besides the generation.
pub struct FilterInput<'a> {
    /// Real train sentences: (text, technique).
    pub train: &'a [(String, String)],
    /// Test sentences: read only to detect leakage.
    pub test: &'a [String],
    /// The text of the template the prompts were rendered from: with the meta filter on, a
    /// sentence that holds a word bigram (trigram with fewer than [`ECHO_BIGRAM_MIN_TRAIN`]
    /// train sentences) of its own wording which no real train sentence holds
    /// ([`crate::junk::instruction_ngrams`]) is a meta-sentence. `None`: no such check.
    pub template: Option<&'a str>,
    /// Predicts a technique for each text (the reference classifier), when enabled.
    #[allow(clippy::type_complexity)]
    pub reference: Option<&'a dyn Fn(&[&str]) -> Vec<String>>,
}

/// Parse and filter a generation.
pub fn filter(generation: &Generation, input: &FilterInput, cfg: &FilterConfig) -> Synthetic {
    // Candidates in call order.
    let mut cands: Vec<(usize, Candidate, bool)> = Vec::new();
    let mut stats: BTreeMap<String, TechniqueStats> = BTreeMap::new();
    let train_counts = input.train.iter().fold(HashMap::new(), |mut m, (_, l)| {
        *m.entry(l.as_str()).or_insert(0usize) += 1;
        m
    });
    for (t, r) in &generation.requested {
        stats.insert(
            t.clone(),
            TechniqueStats {
                technique: t.clone(),
                train_count: train_counts.get(t.as_str()).copied().unwrap_or(0),
                requested: *r,
                ..Default::default()
            },
        );
    }
    for (ci, call) in generation.calls.iter().enumerate() {
        let st = stats.entry(call.technique.clone()).or_default();
        st.calls += 1;
        let Some(answer) = call.outcome.answer() else {
            st.failed_calls += 1;
            continue;
        };
        let parsed = parse_answer(&answer.text);
        let cut = cut_off(&parsed, answer, generation.identity.structured);
        if parsed
            .iter()
            .zip(&cut)
            .all(|(c, &cut)| shape_problem(c, cut, cfg).is_some())
        {
            st.empty_answers += 1;
        }
        for (c, cut) in parsed.into_iter().zip(cut) {
            cands.push((ci, c, cut));
        }
    }

    // The TF-IDF space is fitted on train and candidate sentences only: test sentences are mapped
    // into it for the leakage check but never shape its vocabulary or weights (no test leakage).
    let fit_texts: Vec<&str> = input
        .train
        .iter()
        .map(|x| x.0.as_str())
        .chain(cands.iter().map(|c| c.1.text.as_str()))
        .collect();
    let space = Tfidf::fit(&fit_texts);
    let train_vecs: Vec<SparseVec> = input.train.iter().map(|x| space.vector(&x.0)).collect();
    let test_vecs: Vec<SparseVec> = input.test.iter().map(|t| space.vector(t)).collect();
    let train_norm: HashSet<String> = input.train.iter().map(|x| normalized(&x.0)).collect();
    let instruction = match input.template {
        Some(t) if cfg.meta => {
            let real: Vec<&str> = input.train.iter().map(|x| x.0.as_str()).collect();
            crate::junk::instruction_ngrams(t, &real, echo_ngram(real.len()))
        }
        _ => HashSet::new(),
    };

    let mut seen: HashSet<String> = HashSet::new();
    let mut kept_vecs: Vec<SparseVec> = Vec::new();
    let mut kept_texts: Vec<String> = Vec::new();
    let mut out: Vec<SynthSentence> = Vec::new();
    for (ci, c, cut) in &cands {
        let call = &generation.calls[*ci];
        let mut s = SynthSentence {
            technique: call.technique.clone(),
            text: c.text.clone(),
            cluster: call.cluster,
            prompt_key: call.prompt_key.clone(),
            call_key: call.call_key.clone(),
            kept: false,
            filters_passed: Vec::new(),
            rejected_by: None,
            similar_to: None,
            similarity: None,
        };
        let reject = (|| {
            if let Some(p) = shape_problem(c, *cut, cfg) {
                return Some(p);
            }
            s.filters_passed
                .extend(["empty", "malformed", "cut-off", "overlong"].map(String::from));
            if let Some((f, why)) = junk_problem(&c.text, cfg, &instruction) {
                s.similar_to = Some(why);
                return Some(f);
            }
            s.filters_passed
                .extend(["attack-id", "meta", "repetition"].map(String::from));
            let norm = normalized(&c.text);
            if !seen.insert(norm.clone()) {
                return Some("duplicate");
            }
            s.filters_passed.push("duplicate".into());
            if train_norm.contains(&norm) {
                return Some("real-duplicate");
            }
            s.filters_passed.push("real-duplicate".into());
            let v = space.vector(&c.text);
            if let Some((i, sim)) = nearest(&v, &kept_vecs)
                && sim as f64 >= cfg.near_duplicate
            {
                s.similar_to = Some(kept_texts[i].clone());
                s.similarity = Some(sim);
                return Some("near-duplicate");
            }
            s.filters_passed.push("near-duplicate".into());
            if let Some((i, sim)) = nearest(&v, &train_vecs)
                && sim as f64 >= cfg.near_duplicate
            {
                s.similar_to = Some(input.train[i].0.clone());
                s.similarity = Some(sim);
                return Some("near-real");
            }
            s.filters_passed.push("near-real".into());
            if let Some((i, sim)) = nearest(&v, &test_vecs)
                && sim as f64 >= cfg.leakage
            {
                // The test sentence itself is not copied into the output.
                s.similar_to = Some(format!("test sentence #{i}"));
                s.similarity = Some(sim);
                return Some("leakage");
            }
            s.filters_passed.push("leakage".into());
            kept_vecs.push(v);
            kept_texts.push(c.text.clone());
            None
        })();
        s.rejected_by = reject.map(String::from);
        out.push(s);
    }

    // The reference classifier sees the survivors in one batch.
    if let Some(predict) = input.reference {
        let idx: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].rejected_by.is_none())
            .collect();
        let texts: Vec<&str> = idx.iter().map(|&i| out[i].text.as_str()).collect();
        let preds = if texts.is_empty() {
            Vec::new()
        } else {
            predict(&texts)
        };
        for (&i, p) in idx.iter().zip(preds) {
            if p != out[i].technique {
                out[i].rejected_by = Some("reference".into());
                out[i].similar_to = Some(format!("predicted {p}"));
            } else {
                out[i].filters_passed.push("reference".into());
            }
        }
    }

    // Quota: the first `requested` survivors of each technique.
    let mut taken: HashMap<String, usize> = HashMap::new();
    for s in &mut out {
        if s.rejected_by.is_some() {
            continue;
        }
        let want = generation.requested.get(&s.technique).copied().unwrap_or(0);
        let n = taken.entry(s.technique.clone()).or_insert(0);
        if *n >= want {
            s.rejected_by = Some("quota".into());
            continue;
        }
        *n += 1;
        s.filters_passed.push("quota".into());
        s.kept = true;
    }

    for s in &out {
        let st = stats.entry(s.technique.clone()).or_default();
        st.parsed += 1;
        match &s.rejected_by {
            Some(f) => *st.removed.entry(f.clone()).or_insert(0) += 1,
            None => st.kept += 1,
        }
    }
    // Diversity of what is kept, per technique.
    for st in stats.values_mut() {
        let kept: Vec<&str> = out
            .iter()
            .filter(|s| s.kept && s.technique == st.technique)
            .map(|s| s.text.as_str())
            .collect();
        if kept.is_empty() {
            continue;
        }
        st.distinct_1 = Some(distinct_n(&kept, 1));
        st.distinct_2 = Some(distinct_n(&kept, 2));
        st.self_bleu = self_bleu(&kept);
        let real: Vec<&SparseVec> = input
            .train
            .iter()
            .zip(&train_vecs)
            .filter(|((_, l), _)| *l == st.technique)
            .map(|(_, v)| v)
            .collect();
        if !real.is_empty() {
            let (mut mean, mut near) = (0.0f64, 0.0f64);
            for t in &kept {
                let v = space.vector(t);
                let sims: Vec<f64> = real.iter().map(|r| cosine(&v, r) as f64).collect();
                mean += sims.iter().sum::<f64>() / sims.len() as f64;
                near += sims.iter().cloned().fold(0.0, f64::max);
            }
            st.mean_similarity_real = Some(mean / kept.len() as f64);
            st.nearest_similarity_real = Some(near / kept.len() as f64);
        }
    }
    let kept = out.iter().filter(|s| s.kept).count();
    Synthetic {
        sentences: out,
        techniques: stats.into_values().collect(),
        kept,
        usage: generation.usage(),
    }
}

/// Distinct n-grams over all n-grams of the texts (distinct-n).
pub fn distinct_n(texts: &[&str], n: usize) -> f64 {
    let mut all = 0usize;
    let mut uniq: HashSet<Vec<String>> = HashSet::new();
    for t in texts {
        let w = words(t);
        for g in w.windows(n) {
            all += 1;
            uniq.insert(g.to_vec());
        }
    }
    if all == 0 {
        0.0
    } else {
        uniq.len() as f64 / all as f64
    }
}

/// BLEU-4 of `hyp` against `refs` (clipped n-gram precision, brevity penalty against the closest
/// reference length, and smoothing of empty orders by ε = 0.1, as NLTK's method 1).
pub fn bleu(hyp: &[String], refs: &[Vec<String>]) -> f64 {
    if hyp.is_empty() || refs.is_empty() {
        return 0.0;
    }
    let mut log_p = 0.0;
    for n in 1..=4 {
        let mut counts: HashMap<&[String], usize> = HashMap::new();
        for g in hyp.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
        let total: usize = counts.values().sum();
        if total == 0 {
            log_p += (0.1f64 / 1.0).ln() / 4.0;
            continue;
        }
        let mut clipped = 0usize;
        for (g, c) in &counts {
            let max_ref = refs
                .iter()
                .map(|r| r.windows(n).filter(|w| w == g).count())
                .max()
                .unwrap_or(0);
            clipped += (*c).min(max_ref);
        }
        let p = if clipped == 0 {
            0.1 / total as f64
        } else {
            clipped as f64 / total as f64
        };
        log_p += p.ln() / 4.0;
    }
    let h = hyp.len() as f64;
    let closest = refs
        .iter()
        .map(|r| r.len() as f64)
        .min_by(|a, b| (a - h).abs().total_cmp(&(b - h).abs()).then(a.total_cmp(b)))
        .unwrap_or(h);
    let bp = if h > closest {
        1.0
    } else {
        (1.0 - closest / h).exp()
    };
    bp * log_p.exp()
}

/// Mean BLEU-4 of each text against all the others (lower = more diverse).
pub fn self_bleu(texts: &[&str]) -> Option<f64> {
    if texts.len() < 2 {
        return None;
    }
    let toks: Vec<Vec<String>> = texts.iter().map(|t| words(t)).collect();
    let mut sum = 0.0;
    for i in 0..toks.len() {
        let refs: Vec<Vec<String>> = toks
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, t)| t.clone())
            .collect();
        sum += bleu(&toks[i], &refs);
    }
    Some(sum / toks.len() as f64)
}

/// The classifier of the `reference` filter (`augment.filter.reference_classifier`): trained on
/// the real train split only, it predicts a technique for each synthetic sentence that survived
/// the other filters, and a sentence it assigns to another technique is dropped.
///
/// Written as `"none"`, `"fasttext"` or `"encoder-frozen"`; the booleans of older manifests read
/// as `false` → `none` and `true` → `fasttext` (what they meant). Serialized (and so keyed) as
/// the name.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceClassifier {
    /// No reference filter.
    #[default]
    None,
    /// The default fastText configuration (`[[classifier]] kind = "fasttext"` with no other key).
    Fasttext,
    /// The default frozen-encoder configuration (`kind = "encoder-frozen"`: mean-pooled sentence
    /// embeddings → an MLP head) over `augment.encoder` (all-MiniLM-L6-v2 by default).
    EncoderFrozen,
}

impl ReferenceClassifier {
    /// The name as a manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Fasttext => "fasttext",
            Self::EncoderFrozen => "encoder-frozen",
        }
    }
}

impl<'de> Deserialize<'de> for ReferenceClassifier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ReferenceClassifier;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"none\", \"fasttext\" or \"encoder-frozen\" (or true / false)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    ReferenceClassifier::Fasttext
                } else {
                    ReferenceClassifier::None
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "none" => Ok(ReferenceClassifier::None),
                    "fasttext" => Ok(ReferenceClassifier::Fasttext),
                    "encoder-frozen" => Ok(ReferenceClassifier::EncoderFrozen),
                    other => Err(E::custom(format!(
                        "unknown reference classifier `{other}`; use \"none\", \"fasttext\" or \"encoder-frozen\" (true and false, from older manifests, read as \"fasttext\" and \"none\")"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The filters applied to parsed synthetic sentences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Fewer words than this is malformed.
    pub min_words: usize,
    /// More characters than this is overlong.
    pub max_chars: usize,
    /// Cosine similarity (TF-IDF of words and bigrams) at or above which two sentences are near
    /// duplicates (among synthetic sentences, and against the real train sentences).
    pub near_duplicate: f64,
    /// Similarity to any test sentence at or above which a synthetic sentence is dropped as leakage.
    pub leakage: f64,
    /// Drop sentences that a classifier trained on the real train split assigns to another
    /// technique (label fidelity): `none`, `fasttext` or `encoder-frozen`
    /// ([`ReferenceClassifier`]).
    pub reference_classifier: ReferenceClassifier,
    /// Drop sentences with a literal technique ID (`T1012`, `T1547.001`) or a `MITRE` / `ATT&CK`
    /// mention: a shortcut a classifier learns from synthetic sentences and never meets in a real
    /// report (dropped, not stripped: what is left around an ID rarely reads as a sentence).
    pub attack_ids: bool,
    /// Drop meta-sentences about the task or the list ("Here is a list of…", "Sure!", "Let's walk
    /// through…", "These sentences…").
    pub meta: bool,
    /// Drop a sentence in which some run of this many words occurs twice (degenerate repetition);
    /// 0: off.
    pub repeated_ngram: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            min_words: 5,
            max_chars: 400,
            near_duplicate: 0.9,
            leakage: 0.8,
            reference_classifier: ReferenceClassifier::None,
            attack_ids: true,
            meta: true,
            repeated_ngram: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::CallRecord;
    use crate::llm::{Answer, Identity, Outcome};

    fn texts(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn numbered_and_bullet_lists_drop_the_preamble() {
        let c = parse_answer(
            "Here are three sentences:\n1. The actor used PowerShell.\n2) A script ran.\n- \"Quoted one.\"\nHope this helps!",
        );
        assert_eq!(
            texts(&c),
            [
                "Here are three sentences:",
                "The actor used PowerShell.",
                "A script ran.",
                "Quoted one.",
                "Hope this helps!"
            ]
        );
        assert_eq!(c[0].problem, Some("malformed"));
        assert_eq!(c[1].problem, None);
        assert_eq!(c[4].problem, Some("malformed"));
    }

    #[test]
    fn json_arrays_and_plain_lines() {
        let c = parse_answer("```json\n[\"One sentence here.\", {\"text\": \"Two.\"}, 3]\n```");
        assert_eq!(texts(&c), ["One sentence here.", "Two.", "3"]);
        assert_eq!(c[2].problem, Some("malformed"));
        let p = parse_answer("First line.\n\nSecond line.");
        assert_eq!(texts(&p), ["First line.", "Second line."]);
        assert!(p.iter().all(|c| c.problem.is_none()));
        assert!(parse_answer("").is_empty());
    }

    fn make_generation(answers: &[&str]) -> Generation {
        Generation {
            generator: "g".into(),
            identity: Identity {
                provider: "local".into(),
                model: "m".into(),
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                max_tokens: 10,
                seed: 0,
                context: 512,
                structured: None,
                parallel: None,
                kv_cache: None,
                grammar_sampling: None,
                grammar: None,
                item_decay: None,
                repeat_penalty: None,
                banned_words: None,
            },
            template: "t".into(),
            requested: [("T1".to_string(), 3usize)].into_iter().collect(),
            calls: answers
                .iter()
                .enumerate()
                .map(|(i, a)| CallRecord {
                    technique: "T1".into(),
                    cluster: 0,
                    sample: i as u32,
                    requested: 3,
                    prompt_key: "p".into(),
                    call_key: format!("c{i}"),
                    outcome: Outcome::Done {
                        answer: Answer {
                            text: a.to_string(),
                            prompt_tokens: 1,
                            completion_tokens: 1,
                            usage_estimated: false,
                            finish_reason: "stop".into(),
                            seconds: 0.0,
                            decode_seconds: None,
                            batched: None,
                        },
                    },
                })
                .collect(),
        }
    }

    fn run_filter(answers: &[&str], cfg: &FilterConfig) -> Synthetic {
        filter(
            &make_generation(answers),
            &FilterInput {
                train: &[],
                test: &[],
                template: None,
                reference: None,
            },
            cfg,
        )
    }

    #[test]
    fn the_echo_is_of_bigrams_given_enough_train_sentences() {
        let generation = make_generation(&[
            "1. The report shows a threat actor using HackTool to bypass UAC.\n2. Attackers staged archives in a recycle bin folder before exfiltration.",
        ]);
        let template = "A threat report describes how adversaries use {{ technique_name }}.\nWrite new sentences for the report in which an adversary does the same:\n{% for e in examples %}- {{ e }}\n{% endfor %}";
        let train = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| {
                    (
                        format!(
                            "The loader number {i} queried the registry key for installed software."
                        ),
                        "T1".to_string(),
                    )
                })
                .collect()
        };
        let run = |train: &[(String, String)]| {
            filter(
                &generation,
                &FilterInput {
                    train,
                    test: &[],
                    template: Some(template),
                    reference: None,
                },
                &FilterConfig::default(),
            )
        };
        let enough = run(&train(ECHO_BIGRAM_MIN_TRAIN));
        assert_eq!(enough.sentences[0].rejected_by.as_deref(), Some("meta"));
        assert_eq!(
            enough.sentences[0].similar_to.as_deref(),
            Some("echoes the prompt: \"the report\"")
        );
        assert!(enough.sentences[1].kept, "{:?}", enough.sentences[1]);
        // One train sentence fewer: trigrams, and "the report shows" is not the template's.
        let few = run(&train(ECHO_BIGRAM_MIN_TRAIN - 1));
        assert!(few.sentences[0].kept, "{:?}", few.sentences[0]);
        assert!(few.sentences[1].kept, "{:?}", few.sentences[1]);
    }

    #[test]
    fn a_sentence_echoing_the_templates_wording_is_meta() {
        let generation = make_generation(&[
            "1. A threat actor or its malware may query the registry for installed software.\n2. The loader queried the Uninstall registry key for installed software.",
        ]);
        let template = "Say what a threat actor or its malware did:\n{% for e in examples %}- {{ e }}\n{% endfor %}";
        let train = vec![(
            "The group's malware queried the registry.".to_string(),
            "T1".to_string(),
        )];
        let run = |template| {
            filter(
                &generation,
                &FilterInput {
                    train: &train,
                    test: &[],
                    template,
                    reference: None,
                },
                &FilterConfig::default(),
            )
        };
        let out = run(Some(template));
        let first = &out.sentences[0];
        assert_eq!(first.rejected_by.as_deref(), Some("meta"));
        assert_eq!(
            first.similar_to.as_deref(),
            Some("echoes the prompt: \"a threat actor\"")
        );
        assert!(out.sentences[1].kept, "{:?}", out.sentences[1]);
        // Without the template, or with the meta filter off, the first one stays.
        assert!(run(None).sentences[0].kept);
        let off = FilterConfig {
            meta: false,
            ..FilterConfig::default()
        };
        let out = filter(
            &generation,
            &FilterInput {
                train: &train,
                test: &[],
                template: Some(template),
                reference: None,
            },
            &off,
        );
        assert!(out.sentences[0].kept);
    }

    /// The similarity space is fitted without test sentences: the same candidates against the same
    /// train sentences get the same similarities whatever the test split holds.
    #[test]
    fn test_sentences_do_not_shape_the_similarity_space() {
        let train = vec![
            (
                "The actor dumped credentials from LSASS memory with a custom tool.".to_string(),
                "T1".to_string(),
            ),
            (
                "Scheduled tasks were created to keep the implant running.".to_string(),
                "T2".to_string(),
            ),
        ];
        let answer = "1. The group dumped credentials from LSASS memory with a new tool.\n\
            2. Persistence came from scheduled tasks that restart the implant daily.";
        let cfg = FilterConfig {
            near_duplicate: 0.2,
            ..FilterConfig::default()
        };
        let sims = |test: &[String]| -> Vec<Option<f32>> {
            filter(
                &make_generation(&[answer]),
                &FilterInput {
                    train: &train,
                    test,
                    template: None,
                    reference: None,
                },
                &cfg,
            )
            .sentences
            .iter()
            .map(|x| x.similarity)
            .collect()
        };
        let without = sims(&[]);
        assert!(without.iter().any(|s| s.is_some()), "{without:?}");
        let with = sims(&[
            "Credentials were dumped from memory by the actor.".to_string(),
            "The tool dumped LSASS memory.".to_string(),
            "Tasks, tasks and more scheduled tasks.".to_string(),
        ]);
        assert_eq!(without, with);
    }

    /// The kept sentences read by hand on tram.toml with SmolLM2-135M (issue 11), each removed by
    /// its filter and counted per technique.
    #[test]
    fn literal_ids_meta_sentences_and_repetition_from_the_field_are_removed_and_counted() {
        let answer = "1. Here is a list of 19 more sentences from the threat report that use this technique.\n\
            2. To better understand these techniques, let's walk through a scenario where the attacker gains access.\n\
            3. The attacker used a technique called T1012 (Minecraft) to query the registry keys.\n\
            4. The deployment tool was abused as MITRE ATT&CK technique T1072 describes it.\n\
            5. The new loader is different from the way of normal malware and is different from the way of normal malware.\n\
            6. The operators queried the registry for installed security products before moving on.";
        let s = run_filter(&[answer], &FilterConfig::default());
        let by: Vec<(Option<&str>, Option<&str>)> = s
            .sentences
            .iter()
            .map(|x| (x.rejected_by.as_deref(), x.similar_to.as_deref()))
            .collect();
        assert_eq!(
            by,
            [
                (Some("meta"), Some("about the task or the list")),
                (Some("meta"), Some("about the task or the list")),
                (Some("attack-id"), Some("T1012")),
                (Some("attack-id"), Some("MITRE")),
                (
                    Some("repetition"),
                    Some("repeats \"is different from the\"")
                ),
                (None, None),
            ]
        );
        let st = &s.techniques[0];
        assert_eq!(st.removed.get("meta"), Some(&2));
        assert_eq!(st.removed.get("attack-id"), Some(&2));
        assert_eq!(st.removed.get("repetition"), Some(&1));
        assert_eq!((st.parsed, st.kept), (6, 1));
        assert_eq!(
            s.sentences[5].filters_passed,
            [
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
            ]
        );
    }

    #[test]
    fn the_junk_filters_can_each_be_turned_off() {
        let answer = "1. The attacker used a technique called T1012 (Minecraft) to query the registry keys.\n\
            2. Let's walk through how the attacker moved laterally across the domain.\n\
            3. The new loader is different from the way of normal malware and is different from the way of normal malware.";
        let cfg = FilterConfig {
            attack_ids: false,
            meta: false,
            repeated_ngram: 0,
            ..FilterConfig::default()
        };
        let s = run_filter(&[answer], &cfg);
        assert_eq!(s.kept, 3);
        assert!(s.techniques[0].removed.is_empty());
    }

    #[test]
    fn reasoning_in_think_tags_is_never_a_sentence() {
        // fake_openai.py's `think` model (shared/cases/openai-quirks): numbered reasoning lines.
        let answer = "<think>\nOkay, the user wants five sentences about this technique.\n\
            1. First I should recall what the technique means in ATT&CK terms.\n\
            2. Then I need to vary the actors and the tools in each sentence.\n\
            3. Finally I must number them and keep each under forty words.\n</think>\n\n\
            1. A value added under the HKCU Run key pointed at a DLL hidden in the roaming profile.\n\
            2. After reboot the implant came back because a RunOnce entry re-registered it each time.";
        assert_eq!(
            texts(&parse_answer(answer)),
            [
                "A value added under the HKCU Run key pointed at a DLL hidden in the roaming profile.",
                "After reboot the implant came back because a RunOnce entry re-registered it each time."
            ]
        );
    }

    #[test]
    fn each_filter_removes_what_it_should_and_counts_it() {
        let train = vec![
            (
                "the group used a custom backdoor over https".to_string(),
                "T1".to_string(),
            ),
            (
                "phishing emails carried malicious word documents".to_string(),
                "T2".to_string(),
            ),
        ];
        let test = vec!["apt28 exfiltrated the archive over an encrypted ftp channel".to_string()];
        let g = make_generation(&[
            "1. The operators staged tools in a hidden directory on the server.\n\
             2. The operators staged tools in a hidden directory on the server.\n\
             3. The group used a custom backdoor over HTTPS.\n\
             4. Too short.\n\
             5. APT28 exfiltrated the archive over an encrypted FTP channel today.",
            "Sure:\n1. Attackers renamed their loader to look like a Windows update binary.\n\
             2. The implant beaconed to its controller every ten minutes over DNS.\n\
             3. A scheduled task relaunched the implant whenever the host rebooted.\n\
             4. The actors compressed stolen files with a password before sending them out.",
            "",
        ]);
        let cfg = FilterConfig::default();
        let s = filter(
            &g,
            &FilterInput {
                train: &train,
                test: &test,
                template: None,
                reference: None,
            },
            &cfg,
        );
        let st = &s.techniques[0];
        assert_eq!(st.removed.get("duplicate"), Some(&1));
        assert_eq!(st.removed.get("real-duplicate"), Some(&1));
        assert_eq!(st.removed.get("malformed"), Some(&2)); // "Too short." and "Sure:"
        assert_eq!(st.removed.get("leakage"), Some(&1));
        assert_eq!(st.removed.get("quota"), Some(&2));
        assert_eq!(st.kept, 3);
        assert_eq!(s.kept, 3);
        assert_eq!(st.empty_answers, 1);
        let leak = s
            .sentences
            .iter()
            .find(|x| x.rejected_by.as_deref() == Some("leakage"))
            .unwrap();
        assert!(!leak.similar_to.as_ref().unwrap().contains("apt28"));
        assert!(st.distinct_1.unwrap() > 0.5);
        assert!(st.self_bleu.unwrap() < 0.5);
        let kept = s.sentences.iter().find(|x| x.kept).unwrap();
        assert_eq!(kept.filters_passed.len(), FILTERS.len() - 1); // all but `reference`
    }

    #[test]
    fn items_cut_at_the_grammar_bound_or_by_max_tokens_are_cut_off() {
        let cfg = FilterConfig::default();
        let input = FilterInput {
            train: &[],
            test: &[],
            template: None,
            reference: None,
        };
        // Under a structured shape of 60 characters: an item of 60 was cut by the grammar there
        // (mid-word), one of 59 ended where the model ended it.
        let at_bound = "The loader copied itself into the startup folder of the vic.";
        let under = "The loader copied itself into the startup folder of a vict.";
        assert_eq!((at_bound.len(), under.len()), (60, 59));
        let mut g = make_generation(&[&format!("1. {at_bound}\n2. {under}")]);
        g.identity.structured = Some(crate::llm::structured::Shape { item_chars: 60 });
        let s = filter(&g, &input, &cfg);
        assert_eq!(s.techniques[0].removed.get("cut-off"), Some(&1));
        let cut = s.sentences.iter().find(|x| x.text == at_bound).unwrap();
        assert_eq!(cut.rejected_by.as_deref(), Some("cut-off"));
        assert!(
            cut.filters_passed.is_empty(),
            "a shape filter, as empty and malformed"
        );
        assert!(s.sentences.iter().any(|x| x.text == under && x.kept));
        // The same items, unstructured: nothing bounds them, so nothing is cut off.
        g.identity.structured = None;
        let s = filter(&g, &input, &cfg);
        assert_eq!(s.techniques[0].removed.get("cut-off"), None);
        assert_eq!(s.kept, 2);
        // An answer that stopped at max_tokens: its last item is cut off, the others are not.
        let mut g = make_generation(&[
            "1. Attackers renamed their loader to look like a Windows update.\n\
             2. The implant beaconed to its controller every ten minutes over",
        ]);
        if let Outcome::Done { answer } = &mut g.calls[0].outcome {
            answer.finish_reason = "length".into();
        }
        let s = filter(&g, &input, &cfg);
        assert_eq!(s.techniques[0].removed.get("cut-off"), Some(&1));
        assert_eq!(s.kept, 1);
        assert!(s.sentences[1].text.ends_with("over"));
        assert_eq!(s.sentences[1].rejected_by.as_deref(), Some("cut-off"));
    }

    #[test]
    fn list_numbers_glued_to_an_item_are_stripped_and_an_unfinished_item_is_cut_off() {
        // Shapes SmolLM2 wrote under the list grammar (tram.toml, a fresh reader's count: about
        // 16 of 222 kept sentences carried such a number, about 20 ended unfinished).
        let s = run_filter(
            &[
                "1. 3.The malware read the registry value of the Run key to find its loader.\n\
               2. Malicious software can exploit various vulnerabilities for enhanced capabilities; 2.\n\
               3. \"A threat actor can access the compromised machine using a remote tool.\" 5.\n\
               4. In 2018 an attack created a server using software called brallon. This is a type of.\n\
               5. A threat actor may delete a file from a hidden directory but be able to.\n\
               6. The backdoor checks for the existence of avghookx.dll and exits, and/or.\n\
               7. Adversaries exploited SMB in multiple targets, and then moved laterally,",
            ],
            &FilterConfig::default(),
        );
        let verdict = |start: &str| {
            let x = s
                .sentences
                .iter()
                .find(|x| x.text.starts_with(start))
                .unwrap_or_else(|| panic!("{start}: {:?}", s.sentences));
            (x.text.clone(), x.rejected_by.clone())
        };
        assert_eq!(
            verdict("The malware read"),
            (
                "The malware read the registry value of the Run key to find its loader.".into(),
                None
            )
        );
        assert_eq!(
            verdict("Malicious software"),
            (
                "Malicious software can exploit various vulnerabilities for enhanced capabilities;"
                    .into(),
                Some("cut-off".into())
            )
        );
        assert_eq!(
            verdict("A threat actor can"),
            (
                "A threat actor can access the compromised machine using a remote tool.".into(),
                None
            )
        );
        for start in [
            "In 2018",
            "A threat actor may",
            "The backdoor",
            "Adversaries exploited",
        ] {
            assert_eq!(verdict(start).1.as_deref(), Some("cut-off"), "{start}");
        }
        assert_eq!(s.techniques[0].removed.get("cut-off"), Some(&5));
        // Real sentences that end on a number or a stranded preposition stay whole and kept.
        let real = [
            "The campaign compromised 2.5 million hosts across 40 countries in 2016.",
            "The group registered the domains that it later purchased certificates for.",
            "The guarantee is that the binary has not been tampered with.",
            "The attacker used the exploit against version 5.",
            "The dropper is signed, and the payload is detected by 3 of 60 engines.",
        ];
        let s = run_filter(
            &[&real
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{}. {t}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")],
            &FilterConfig::default(),
        );
        let texts: Vec<&str> = s.sentences.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(texts, real);
        assert_eq!(
            s.techniques[0].removed.get("cut-off"),
            None,
            "{:?}",
            s.sentences
        );
    }

    #[test]
    fn reference_classifier_drops_disagreements() {
        let train = vec![("a real sentence about things".to_string(), "T1".to_string())];
        let g = make_generation(&[
            "1. The operators staged tools in a hidden directory.\n2. Phishing mail carried a malicious attachment.",
        ]);
        let predict = |ts: &[&str]| -> Vec<String> {
            ts.iter()
                .map(|t| if t.contains("Phishing") { "T2" } else { "T1" }.to_string())
                .collect()
        };
        let s = filter(
            &g,
            &FilterInput {
                train: &train,
                test: &[],
                template: None,
                reference: Some(&predict),
            },
            &FilterConfig::default(),
        );
        assert_eq!(s.kept, 1);
        assert_eq!(s.techniques[0].removed.get("reference"), Some(&1));
    }

    /// `reference_classifier` as manifests write it: the three names, and the booleans of older
    /// manifests read as what they meant; anything else is an error naming the valid values.
    #[test]
    fn reference_classifier_reads_names_and_old_booleans() {
        let read = |v: &str| {
            toml::from_str::<FilterConfig>(&format!("reference_classifier = {v}"))
                .map(|c| c.reference_classifier)
                .map_err(|e| e.to_string())
        };
        assert_eq!(read("\"none\""), Ok(ReferenceClassifier::None));
        assert_eq!(read("\"fasttext\""), Ok(ReferenceClassifier::Fasttext));
        assert_eq!(
            read("\"encoder-frozen\""),
            Ok(ReferenceClassifier::EncoderFrozen)
        );
        assert_eq!(read("false"), Ok(ReferenceClassifier::None));
        assert_eq!(read("true"), Ok(ReferenceClassifier::Fasttext));
        let bad = read("\"svm\"").unwrap_err();
        assert!(
            bad.contains(
                "unknown reference classifier `svm`; use \"none\", \"fasttext\" or \"encoder-frozen\""
            ),
            "{bad}"
        );
        let bad = read("3").unwrap_err();
        assert!(
            bad.contains("expected \"none\", \"fasttext\" or \"encoder-frozen\" (or true / false)"),
            "{bad}"
        );
        // The validated form is the name, which is also what the cache key holds.
        for (r, name) in [
            (ReferenceClassifier::None, "\"none\""),
            (ReferenceClassifier::Fasttext, "\"fasttext\""),
            (ReferenceClassifier::EncoderFrozen, "\"encoder-frozen\""),
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), name);
            assert_eq!(format!("\"{}\"", r.as_str()), name);
        }
    }

    #[test]
    fn bleu_and_distinct_n() {
        let w = |s: &str| words(s);
        assert!((bleu(&w("a b c d e"), &[w("a b c d e")]) - 1.0).abs() < 1e-9);
        assert!(bleu(&w("a b c d e"), &[w("v w x y z")]) < 0.05);
        assert_eq!(distinct_n(&["a a a a"], 1), 0.25);
        assert_eq!(distinct_n(&["a b", "a b"], 2), 0.5);
        assert!(self_bleu(&["only one"]).is_none());
    }
}

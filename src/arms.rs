//! The cheap arms beside `synthetic`, so "LLM sentences help" is measured against what costs
//! nothing: `oversample` (the targets' own real train sentences, repeated) and
//! `attack-description` (the sentences of each target technique's ATT&CK description). Each is a
//! stage of its own: its [`OversampleParams`] / [`DescriptionParams`] are its cache key, its
//! input the split's key, its output the sentences ([`Added`]) an augmented cell trains on
//! besides the real train split.
//!
//! Both arms use the target techniques of `[augment.targets]` on the train split, as the
//! synthetic arm does (`cluster::select_targets`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{TargetConfig, select_targets};
use crate::data::Catalog;
use crate::generate::CountMode;

/// Version of the oversample stage's output.
pub const OVERSAMPLE_VERSION: u32 = 1;
/// Version of the attack-description stage's output.
pub const DESCRIPTION_VERSION: u32 = 1;

/// The `oversample` stage's parameters (input: the split's key).
#[derive(Debug, Serialize)]
pub struct OversampleParams<'a> {
    pub targets: &'a TargetConfig,
    /// Sentences per target technique, read as the synthetic arm reads `per_technique`.
    pub per_technique: usize,
    pub count: CountMode,
}

impl crate::cache::StageParams for OversampleParams<'_> {
    const STAGE: &'static str = "oversample";
    fn version(&self) -> u32 {
        OVERSAMPLE_VERSION
    }
}

/// The `attack-description` stage's parameters (input: the split's key): the targets and the
/// ATT&CK bundle, by content.
#[derive(Debug, Serialize)]
pub struct DescriptionParams<'a> {
    pub targets: &'a TargetConfig,
    /// `blake3` of the ATT&CK bundle file.
    pub attack: &'a str,
}

impl crate::cache::StageParams for DescriptionParams<'_> {
    const STAGE: &'static str = "attack-description";
    fn version(&self) -> u32 {
        DESCRIPTION_VERSION
    }
}

/// The sentences an arm adds to the real train split.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Added {
    /// (text, technique), in target order, then in the order they were made.
    pub sentences: Vec<(String, String)>,
    /// Sentences added per target technique (0 for a target that got none).
    pub per_technique: BTreeMap<String, usize>,
    /// The target rule as `cluster::select_targets` describes it.
    pub rule: String,
}

impl Added {
    /// The added sentences as (text, technique) borrowed.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sentences.iter().map(|(t, l)| (t.as_str(), l.as_str()))
    }
}

fn train_counts(train: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, l) in train {
        *counts.entry(l.clone()).or_insert(0) += 1;
    }
    counts
}

/// `oversample`: for each target technique, its real train sentences (`train`, as (text,
/// technique), in split order) repeated in that order, cycling, until `per_technique` were added
/// (`count = "fixed"`), or until the technique has `per_technique` train sentences (`"up-to"`;
/// none when it has that many already). This is the count the synthetic arm *requests*
/// (`generate::requested`), not what its filters kept: the arm needs no LLM run, is the same for
/// every synthetic chain of a grid, and matches the synthetic arm exactly whenever its filters
/// keep the quota.
pub fn oversample(
    train: &[(String, String)],
    targets: &TargetConfig,
    per_technique: usize,
    count: CountMode,
) -> Added {
    let counts = train_counts(train);
    let (ids, rule) = select_targets(&counts, targets);
    let mut out = Added {
        rule,
        ..Default::default()
    };
    for id in ids {
        let own: Vec<&String> = train
            .iter()
            .filter(|(_, l)| *l == id)
            .map(|(t, _)| t)
            .collect();
        let have = own.len();
        let n = match count {
            CountMode::Fixed => per_technique,
            CountMode::UpTo => per_technique.saturating_sub(have),
        };
        let n = if own.is_empty() { 0 } else { n };
        for t in own.iter().cycle().take(n) {
            out.sentences.push(((*t).clone(), id.clone()));
        }
        out.per_technique.insert(id, n);
    }
    out
}

/// `attack-description`: for each target technique, the sentences of its own ATT&CK description
/// (a sub-technique's, not its parent's): `(Citation: …)` markers removed, Markdown links reduced
/// to their text, deprecation notices left out (`prompt::clean_description`), then split by the
/// project's segmenter (`segment::sentences`). Every sentence is added, however many there are; a
/// target the bundle lacks gets none.
pub fn attack_description(
    train: &[(String, String)],
    targets: &TargetConfig,
    catalog: &Catalog,
) -> Added {
    let counts = train_counts(train);
    let (ids, rule) = select_targets(&counts, targets);
    let mut out = Added {
        rule,
        ..Default::default()
    };
    for id in ids {
        let sentences = catalog
            .get(&id)
            .map(|t| {
                let (_, whole) = crate::prompt::clean_description(&t.description);
                crate::segment::sentences(&whole)
            })
            .unwrap_or_default();
        out.per_technique.insert(id.clone(), sentences.len());
        out.sentences
            .extend(sentences.into_iter().map(|s| (s, id.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train() -> Vec<(String, String)> {
        let mut t = Vec::new();
        for i in 0..40 {
            t.push((format!("common sentence {i}"), "T1000".to_string()));
        }
        for s in ["rare a", "rare b", "rare c"] {
            t.push((s.to_string(), "T2000".to_string()));
        }
        t
    }

    fn below(n: usize) -> TargetConfig {
        TargetConfig {
            below: Some(n),
            ..Default::default()
        }
    }

    #[test]
    fn oversample_cycles_the_targets_train_sentences_to_the_requested_count() {
        let a = oversample(&train(), &below(30), 7, CountMode::Fixed);
        let texts: Vec<&str> = a.pairs().map(|(t, _)| t).collect();
        assert_eq!(
            texts,
            [
                "rare a", "rare b", "rare c", "rare a", "rare b", "rare c", "rare a"
            ]
        );
        assert!(a.pairs().all(|(_, l)| l == "T2000"));
        assert_eq!(a.per_technique, BTreeMap::from([("T2000".to_string(), 7)]));
    }

    #[test]
    fn oversample_up_to_fills_each_target_up_to_per_technique() {
        let a = oversample(&train(), &below(30), 5, CountMode::UpTo);
        assert_eq!(a.sentences.len(), 2);
        assert_eq!(a.per_technique["T2000"], 2);
        let none = oversample(&train(), &below(30), 3, CountMode::UpTo);
        assert!(none.sentences.is_empty());
    }

    #[test]
    fn attack_description_adds_the_cleaned_sentences_of_each_targets_own_description() {
        let objects: Vec<serde_json::Value> = serde_json::from_str(
            r#"[
            {"type": "attack-pattern", "id": "attack-pattern--1", "name": "Parent",
             "description": "Parent text. It is not used.",
             "external_references": [{"source_name": "mitre-attack", "external_id": "T2000"}],
             "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}]},
            {"type": "attack-pattern", "id": "attack-pattern--2", "name": "Child",
             "x_mitre_is_subtechnique": true,
             "description": "Adversaries may abuse [PowerShell](https://attack.mitre.org/techniques/T1059/001) commands.(Citation: TechNet PowerShell) They may run scripts from memory.\n\nThis is a second paragraph.",
             "external_references": [{"source_name": "mitre-attack", "external_id": "T2000.001"}],
             "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}]}
            ]"#,
        )
        .unwrap();
        let catalog = Catalog::from_objects(&objects).unwrap();
        let mut t = train();
        for (text, _) in t.iter_mut().filter(|(_, l)| l == "T2000") {
            *text = text.replace("rare", "sub");
        }
        for x in t.iter_mut().filter(|(_, l)| l == "T2000") {
            x.1 = "T2000.001".into();
        }
        let a = attack_description(&t, &below(30), &catalog);
        let texts: Vec<&str> = a.pairs().map(|(t, _)| t).collect();
        assert_eq!(
            texts,
            [
                "Adversaries may abuse PowerShell commands.",
                "They may run scripts from memory.",
                "This is a second paragraph."
            ]
        );
        assert!(a.pairs().all(|(_, l)| l == "T2000.001"));
        assert_eq!(a.per_technique["T2000.001"], 3);
    }

    #[test]
    fn a_target_the_bundle_lacks_gets_no_description_sentence() {
        let a = attack_description(&train(), &below(30), &Catalog::default());
        assert!(a.sentences.is_empty());
        assert_eq!(a.per_technique["T2000"], 0);
    }
}

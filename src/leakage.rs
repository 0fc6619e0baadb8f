//! How far the test split is from the sentences a model trains on, a property of the dataset
//! and the split: how many test sentences have an exact duplicate (same text after lower-casing
//! and collapsing white space) or a near duplicate (TF-IDF cosine ≥ [`NEAR`] over words and word
//! bigrams, `similarity::Tfidf` fitted on the train and validation sentences only) among the
//! train and validation sentences. Each run writes it per replicate to `leakage.json` and
//! `summary.md` states it: a gain measured on test sentences that are copies of train sentences
//! is a gain in memorising.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::similarity::{Tfidf, cosine};
use crate::split::Split;

/// The cosine at or above which a test sentence counts as a near duplicate of a train sentence
/// (the filter's `near_duplicate` default).
pub const NEAR: f32 = 0.9;

/// The overlap of one split's test sentences with its train + validation sentences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Overlap {
    /// Test sentences.
    pub test: usize,
    /// Test sentences with an identical train/validation sentence (normalized text).
    pub exact: usize,
    /// … of which the train copy carries the same label.
    pub exact_same_label: usize,
    /// Test sentences without an exact duplicate whose nearest train/validation sentence has
    /// cosine ≥ `threshold`.
    pub near: usize,
    /// The near-duplicate threshold used.
    pub threshold: f32,
}

impl Overlap {
    /// One line for the run log and summary.md.
    pub fn sentence(&self, replicate: usize, replicates: usize) -> String {
        let pct = |n: usize| 100.0 * n as f64 / self.test.max(1) as f64;
        format!(
            "{}{} of {} test sentences ({:.1}%) have an exact duplicate in train + validation ({} with the same label), {} more ({:.1}%) a near duplicate (TF-IDF cosine ≥ {})",
            if replicates > 1 {
                format!("replicate {replicate}: ")
            } else {
                String::new()
            },
            self.exact,
            self.test,
            pct(self.exact),
            self.exact_same_label,
            self.near,
            pct(self.near),
            self.threshold
        )
    }
}

fn normalize(t: &str) -> String {
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The overlap of `s.test` with `s.train` + `s.validation`.
pub fn overlap(ds: &Dataset, s: &Split, threshold: f32) -> Overlap {
    let seen: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
    let texts: Vec<&str> = seen.iter().map(|&i| ds.examples[i].text.as_str()).collect();
    let mut exact_map: std::collections::HashMap<String, Vec<&str>> = Default::default();
    for &i in &seen {
        let e = &ds.examples[i];
        exact_map
            .entry(normalize(&e.text))
            .or_default()
            .push(e.label.as_str());
    }
    let tfidf = Tfidf::fit(&texts);
    let vecs: Vec<_> = texts.iter().map(|t| tfidf.vector(t)).collect();
    // An inverted index: a test vector is compared only with the sentences it shares a term with.
    let mut postings: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for (j, v) in vecs.iter().enumerate() {
        for (t, _) in v {
            postings.entry(*t).or_default().push(j as u32);
        }
    }
    let mut out = Overlap {
        test: s.test.len(),
        exact: 0,
        exact_same_label: 0,
        near: 0,
        threshold,
    };
    for &i in &s.test {
        let e = &ds.examples[i];
        if let Some(labels) = exact_map.get(&normalize(&e.text)) {
            out.exact += 1;
            if labels.contains(&e.label.as_str()) {
                out.exact_same_label += 1;
            }
            continue;
        }
        let v = tfidf.vector(&e.text);
        let mut cands: Vec<u32> = v
            .iter()
            .filter_map(|(t, _)| postings.get(t))
            .flatten()
            .copied()
            .collect();
        cands.sort_unstable();
        cands.dedup();
        if cands
            .iter()
            .any(|&j| cosine(&v, &vecs[j as usize]) >= threshold)
        {
            out.near += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Example;

    fn ds(rows: &[(&str, &str)]) -> Dataset {
        Dataset {
            examples: rows
                .iter()
                .enumerate()
                .map(|(i, (t, l))| Example {
                    text: t.to_string(),
                    label: l.to_string(),
                    labels: Vec::new(),
                    group: None,
                    row: i + 1,
                })
                .collect(),
            stats: Default::default(),
            multi_label: false,
        }
    }

    #[test]
    fn exact_near_and_distinct_test_sentences_are_counted_apart() {
        let d = ds(&[
            (
                "The actor used PowerShell to download a payload from the server",
                "T1059",
            ),
            (
                "Credentials were dumped from LSASS memory with Mimikatz",
                "T1003",
            ),
            (
                "Scheduled tasks kept the implant running after reboot",
                "T1053",
            ),
            // test: an exact copy (case and spaces differ), a near copy, a new sentence
            (
                "the actor used  PowerShell to download a payload from the server",
                "T1105",
            ),
            (
                "Credentials were dumped from LSASS memory with Mimikatz today",
                "T1003",
            ),
            ("Phishing emails carried a malicious attachment", "T1566"),
        ]);
        let s = Split {
            train: vec![0, 1],
            validation: vec![2],
            test: vec![3, 4, 5],
            ..Default::default()
        };
        let o = overlap(&d, &s, 0.9);
        assert_eq!(
            o,
            Overlap {
                test: 3,
                exact: 1,
                exact_same_label: 0,
                near: 1,
                threshold: 0.9
            }
        );
        // At a threshold of 1, the near copy no longer counts.
        assert_eq!(overlap(&d, &s, 1.0).near, 0);
    }
}

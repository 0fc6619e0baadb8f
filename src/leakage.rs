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
    let postings = prefix_index(&tfidf, &vecs, threshold);
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

/// An inverted index (term → train sentences) that holds, of each train vector, only the prefix
/// of its terms a vector at cosine ≥ `threshold` must share: prefix filtering (Bayardo, Ma and
/// Srikant 2007, "Scaling up all pairs similarity search"). Terms are taken rarest first (highest
/// IDF, then term id); a vector is indexed under its terms until the squared weight of the terms
/// left falls below `threshold`² (less a margin of 1e-3 for rounding). A vector u sharing none
/// of the indexed terms of v has cosine(u, v) ≤ ‖v's rest‖ · ‖u‖ < `threshold` (Cauchy–Schwarz,
/// both vectors of norm 1), so the candidates are all the vectors that can reach the threshold,
/// and the common words that every sentence shares stay out of the index.
fn prefix_index(
    tfidf: &Tfidf,
    vecs: &[crate::similarity::SparseVec],
    threshold: f32,
) -> std::collections::HashMap<u32, Vec<u32>> {
    let bound = (threshold - 1e-3).max(0.0);
    let mut postings: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for (j, v) in vecs.iter().enumerate() {
        let mut terms: Vec<(u32, f32)> = v.clone();
        terms.sort_by(|a, b| {
            tfidf
                .idf(b.0)
                .total_cmp(&tfidf.idf(a.0))
                .then(a.0.cmp(&b.0))
        });
        let mut rest: f32 = v.iter().map(|x| x.1 * x.1).sum();
        for (t, w) in terms {
            postings.entry(t).or_default().push(j as u32);
            rest -= w * w;
            if bound > 0.0 && rest < bound * bound {
                break;
            }
        }
    }
    postings
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

    /// The prefix index misses no pair: on 400 generated sentences (common words in all of
    /// them, test sentences that copy a train sentence with one word changed, dropped or added,
    /// and unrelated ones) the near-duplicate count equals a brute-force comparison with every
    /// train sentence, at several thresholds.
    #[test]
    fn the_prefix_index_counts_what_brute_force_counts() {
        let words: Vec<String> = (0..120).map(|i| format!("w{i}")).collect();
        let mut x: u64 = 12345;
        let mut next = |n: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as usize) % n
        };
        let mut rows: Vec<(String, String)> = Vec::new();
        for _ in 0..300 {
            let len = 4 + next(10);
            let mut t: Vec<&str> = vec!["the", "actor", "used"];
            t.extend((0..len).map(|_| words[next(words.len())].as_str()));
            rows.push((t.join(" "), format!("T{}", next(5))));
        }
        for k in 0..100 {
            let base = rows[next(300)].0.clone();
            let mut t: Vec<String> = base.split(' ').map(String::from).collect();
            match k % 4 {
                0 => {
                    let i = next(t.len());
                    t[i] = words[next(words.len())].clone();
                }
                1 => {
                    t.remove(next(t.len()));
                }
                2 => t.push(words[next(words.len())].clone()),
                _ => {
                    t = (0..8).map(|_| words[next(words.len())].clone()).collect();
                }
            }
            rows.push((t.join(" "), "T9".into()));
        }
        let refs: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let d = ds(&refs);
        let s = Split {
            train: (0..250).collect(),
            validation: (250..300).collect(),
            test: (300..400).collect(),
            ..Default::default()
        };
        let texts: Vec<&str> = (0..300).map(|i| d.examples[i].text.as_str()).collect();
        let tfidf = Tfidf::fit(&texts);
        let vecs: Vec<_> = texts.iter().map(|t| tfidf.vector(t)).collect();
        let exact: std::collections::HashSet<String> = texts.iter().map(|t| normalize(t)).collect();
        let mut seen_nonzero = false;
        for t in [0.3, 0.5, 0.7, 0.8, 0.9, 0.95] {
            let brute = s
                .test
                .iter()
                .filter(|&&i| !exact.contains(&normalize(&d.examples[i].text)))
                .filter(|&&i| {
                    let v = tfidf.vector(&d.examples[i].text);
                    vecs.iter().any(|w| cosine(&v, w) >= t)
                })
                .count();
            let o = overlap(&d, &s, t);
            assert_eq!(o.near, brute, "threshold {t}");
            seen_nonzero |= brute > 0 && brute < 100;
        }
        assert!(seen_nonzero);
    }
}

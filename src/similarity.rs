//! Sparse TF-IDF vectors over words and word bigrams, and their cosine similarity: what the
//! clustering stage embeds and what the filters compare (near duplicates, leakage).

use std::collections::HashMap;

use crate::features::words;

/// A sparse, L2-normalized vector: (term id, weight), sorted by term id.
pub type SparseVec = Vec<(u32, f32)>;

/// A vocabulary with smoothed IDF, fitted on a set of texts.
#[derive(Debug, Clone, Default)]
pub struct Tfidf {
    vocab: HashMap<String, u32>,
    idf: Vec<f32>,
}

fn terms(text: &str) -> Vec<String> {
    let ws = words(text);
    let mut out = ws.clone();
    for w in ws.windows(2) {
        out.push(format!("{} {}", w[0], w[1]));
    }
    out
}

impl Tfidf {
    /// Fit the vocabulary and IDF (`ln((1 + n) / (1 + df)) + 1`, as scikit-learn) on `texts`.
    pub fn fit<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        for t in texts {
            let mut seen: Vec<u32> = terms(t.as_ref())
                .into_iter()
                .map(|term| {
                    let next = vocab.len() as u32;
                    let id = *vocab.entry(term).or_insert(next);
                    if id as usize == df.len() {
                        df.push(0);
                    }
                    id
                })
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                df[id as usize] += 1;
            }
        }
        let n = texts.len() as f32;
        let idf = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
            .collect();
        Self { vocab, idf }
    }

    pub fn len(&self) -> usize {
        self.idf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The IDF of term `id` (higher: rarer in the fitted texts). Panics on an id outside the
    /// vocabulary.
    pub fn idf(&self, id: u32) -> f32 {
        self.idf[id as usize]
    }

    /// The L2-normalized TF-IDF vector of `text`; terms outside the vocabulary are ignored.
    pub fn vector(&self, text: &str) -> SparseVec {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for t in terms(text) {
            if let Some(&id) = self.vocab.get(&t) {
                *counts.entry(id).or_insert(0.0) += 1.0;
            }
        }
        let mut v: SparseVec = counts
            .into_iter()
            .map(|(id, c)| (id, c * self.idf[id as usize]))
            .collect();
        v.sort_unstable_by_key(|x| x.0);
        let norm = v.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                x.1 /= norm;
            }
        }
        v
    }
}

/// Cosine similarity of two normalized sparse vectors.
pub fn cosine(a: &SparseVec, b: &SparseVec) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    s
}

/// The highest similarity of `v` to any of `others`, and which one (None when `others` is empty).
pub fn nearest(v: &SparseVec, others: &[SparseVec]) -> Option<(usize, f32)> {
    others
        .iter()
        .enumerate()
        .map(|(i, o)| (i, cosine(v, o)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_have_similarity_one_and_disjoint_zero() {
        let t = Tfidf::fit(&["the actor used powershell", "a dropper wrote files"]);
        let a = t.vector("The actor used PowerShell");
        let b = t.vector("the actor used powershell");
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-6);
        let c = t.vector("a dropper wrote files");
        assert_eq!(cosine(&a, &c), 0.0);
        let (i, s) = nearest(&a, &[c.clone(), b.clone()]).unwrap();
        assert_eq!(i, 1);
        assert!(s > 0.99);
    }

    #[test]
    fn rarer_terms_weigh_more() {
        let t = Tfidf::fit(&["the malware", "the loader", "the dropper"]);
        let v = t.vector("the malware");
        let w_the = v.iter().find(|x| x.0 == t.vocab["the"]).unwrap().1;
        let w_mal = v.iter().find(|x| x.0 == t.vocab["malware"]).unwrap().1;
        assert!(w_mal > w_the);
    }
}

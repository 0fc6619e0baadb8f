//! Sparse TF-IDF features of word n-grams and character n-grams inside word boundaries, as
//! scikit-learn's `TfidfVectorizer` computes them (`analyzer="word"` with the default token
//! pattern `(?u)\b\w\w+\b`, and `analyzer="char_wb"`), one L2-normalised block per analyzer,
//! blocks side by side (a `FeatureUnion` of the two vectorizers).
//!
//! Weights: `tf × idf` with `tf = 1 + ln(count)` when sublinear (else the count) and the smoothed
//! `idf = ln((1 + n) / (1 + df)) + 1` over the `n` fitted texts; each block's row is then scaled
//! to unit L2 norm. Texts are lowercased first. No dense matrix is ever built.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Which terms a block extracts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Analyzer {
    /// Word n-grams of lengths `min..=max` over tokens of two or more word characters.
    Word { min: usize, max: usize },
    /// Character n-grams of lengths `min..=max` of each whitespace-separated word padded with
    /// one space on each side (a word shorter than `n` counts once, whole).
    CharWb { min: usize, max: usize },
}

impl Analyzer {
    /// Call `f` with every term of `text` (already lowercased), repeats included.
    pub fn terms(&self, text: &str, f: &mut impl FnMut(&str)) {
        match *self {
            Analyzer::Word { min, max } => {
                let tokens: Vec<&str> = text
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|t| t.chars().nth(1).is_some())
                    .collect();
                let mut buf = String::new();
                for n in min..=max {
                    if n == 1 {
                        tokens.iter().for_each(|t| f(t));
                        continue;
                    }
                    for w in tokens.windows(n) {
                        buf.clear();
                        for (i, t) in w.iter().enumerate() {
                            if i > 0 {
                                buf.push(' ');
                            }
                            buf.push_str(t);
                        }
                        f(&buf);
                    }
                }
            }
            Analyzer::CharWb { min, max } => {
                let mut padded = String::new();
                let mut bounds: Vec<usize> = Vec::new();
                for word in text.split_whitespace() {
                    padded.clear();
                    padded.push(' ');
                    padded.push_str(word);
                    padded.push(' ');
                    bounds.clear();
                    bounds.extend(padded.char_indices().map(|(i, _)| i));
                    bounds.push(padded.len());
                    let len = bounds.len() - 1;
                    for n in min..=max {
                        if n >= len {
                            // scikit-learn: a word of n characters or fewer (padded) is counted
                            // once, whole, and its longer n-grams are skipped.
                            f(&padded);
                            break;
                        }
                        for s in 0..=len - n {
                            f(&padded[bounds[s]..bounds[s + n]]);
                        }
                    }
                }
            }
        }
    }
}

/// One fitted block: its vocabulary (term → column within the block) and the idf per column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    pub analyzer: Analyzer,
    /// Terms in column order (sorted, as scikit-learn numbers them).
    pub terms: Vec<String>,
    pub idf: Vec<f32>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

/// Feature caps and weighting of every block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Keep terms found in at least this many texts.
    pub min_df: usize,
    /// Keep at most this many terms per block, the most frequent over the texts (0: all).
    pub max_features: usize,
    pub sublinear_tf: bool,
}

/// A fitted vectorizer: blocks side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vectorizer {
    pub blocks: Vec<Block>,
    pub sublinear_tf: bool,
}

/// Rows of a sparse matrix in compressed sparse row form: row `i` holds columns
/// `indices[indptr[i]..indptr[i + 1]]` (ascending) with `values` beside them.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
    pub cols: usize,
}

impl Csr {
    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }
    /// Row `i`'s (columns, values).
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let r = self.indptr[i]..self.indptr[i + 1];
        (&self.indices[r.clone()], &self.values[r])
    }
}

impl Block {
    fn rebuild_index(&mut self) {
        self.index = self
            .terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
    }
}

impl Vectorizer {
    /// Learn each analyzer's vocabulary and idf from `texts`.
    pub fn fit(texts: &[&str], analyzers: &[Analyzer], opt: FitOptions) -> Self {
        let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
        let n = lower.len() as f64;
        let blocks = analyzers
            .iter()
            .map(|&analyzer| {
                // term → (texts containing it, total count, last text seen)
                let mut stats: HashMap<String, (usize, usize, usize)> = HashMap::new();
                for (d, text) in lower.iter().enumerate() {
                    analyzer.terms(text, &mut |t| match stats.get_mut(t) {
                        Some(s) => {
                            s.1 += 1;
                            if s.2 != d {
                                s.0 += 1;
                                s.2 = d;
                            }
                        }
                        None => {
                            stats.insert(t.to_string(), (1, 1, d));
                        }
                    });
                }
                let mut kept: Vec<(String, usize, usize)> = stats
                    .into_iter()
                    .filter(|(_, s)| s.0 >= opt.min_df.max(1))
                    .map(|(t, s)| (t, s.0, s.1))
                    .collect();
                if opt.max_features > 0 && kept.len() > opt.max_features {
                    kept.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
                    kept.truncate(opt.max_features);
                }
                kept.sort_by(|a, b| a.0.cmp(&b.0));
                let idf = kept
                    .iter()
                    .map(|(_, df, _)| (((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0) as f32)
                    .collect();
                let mut b = Block {
                    analyzer,
                    terms: kept.into_iter().map(|(t, _, _)| t).collect(),
                    idf,
                    index: HashMap::new(),
                };
                b.rebuild_index();
                b
            })
            .collect();
        Self {
            blocks,
            sublinear_tf: opt.sublinear_tf,
        }
    }

    /// Columns in all: the blocks' vocabularies together.
    pub fn cols(&self) -> usize {
        self.blocks.iter().map(|b| b.terms.len()).sum()
    }

    /// Restore the term lookup after deserializing.
    pub fn reindex(&mut self) {
        self.blocks.iter_mut().for_each(Block::rebuild_index);
    }

    /// The TF-IDF rows of `texts`; terms outside the vocabulary are ignored.
    pub fn transform(&self, texts: &[&str]) -> Csr {
        let mut out = Csr {
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
            cols: self.cols(),
        };
        let mut counts: HashMap<u32, u32> = HashMap::new();
        let mut row: Vec<(u32, f32)> = Vec::new();
        for text in texts {
            let text = text.to_lowercase();
            let mut offset = 0u32;
            for b in &self.blocks {
                counts.clear();
                b.analyzer.terms(&text, &mut |t| {
                    if let Some(&j) = b.index.get(t) {
                        *counts.entry(j).or_insert(0) += 1;
                    }
                });
                row.clear();
                row.extend(counts.iter().map(|(&j, &c)| {
                    let tf = if self.sublinear_tf {
                        1.0 + (c as f32).ln()
                    } else {
                        c as f32
                    };
                    (j, tf * b.idf[j as usize])
                }));
                row.sort_unstable_by_key(|x| x.0);
                let norm = row.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt();
                for &(j, v) in &row {
                    out.indices.push(offset + j);
                    out.values.push(if norm > 0.0 { v / norm } else { v });
                }
                offset += b.terms.len() as u32;
            }
            out.indptr.push(out.indices.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(a: Analyzer, text: &str) -> Vec<String> {
        let mut v = Vec::new();
        a.terms(text, &mut |t| v.push(t.to_string()));
        v
    }

    #[test]
    fn word_terms_follow_scikit_learns_token_pattern() {
        // `(?u)\b\w\w+\b`: one-character tokens are dropped; bigrams join the kept tokens.
        let t = terms(Analyzer::Word { min: 1, max: 2 }, "a cmd.exe runs_it x 42");
        assert_eq!(
            t,
            [
                "cmd",
                "exe",
                "runs_it",
                "42",
                "cmd exe",
                "exe runs_it",
                "runs_it 42"
            ]
        );
    }

    #[test]
    fn char_wb_terms_pad_words_and_count_a_short_word_once() {
        // scikit-learn: TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4))
        //   .build_analyzer()("ab xyz") ==
        // [' a', 'ab', 'b ', ' ab', 'ab ', ' ab ', ' x', 'xy', 'yz', 'z ', ' xy', 'xyz', 'yz ',
        //  ' xyz', 'xyz ']
        let t = terms(Analyzer::CharWb { min: 2, max: 4 }, "ab  xyz");
        assert_eq!(
            t,
            [
                " a", "ab", "b ", " ab", "ab ", " ab ", " x", "xy", "yz", "z ", " xy", "xyz",
                "yz ", " xyz", "xyz "
            ]
        );
        // "é" is one character, not two bytes.
        assert_eq!(terms(Analyzer::CharWb { min: 3, max: 3 }, "é"), [" é "]);
        assert_eq!(
            terms(Analyzer::CharWb { min: 2, max: 5 }, "é"),
            [" é", "é ", " é "]
        );
    }

    #[test]
    fn rows_are_sublinear_tfidf_with_unit_norm_per_block() {
        let texts = ["run run cmd", "cmd shell", "shell"];
        let opt = FitOptions {
            min_df: 1,
            max_features: 0,
            sublinear_tf: true,
        };
        let v = Vectorizer::fit(&texts, &[Analyzer::Word { min: 1, max: 1 }], opt);
        assert_eq!(v.blocks[0].terms, ["cmd", "run", "shell"]);
        // idf = ln(4 / (1 + df)) + 1
        let idf: Vec<f32> = v.blocks[0].idf.clone();
        assert!((idf[0] - ((4.0f32 / 3.0).ln() + 1.0)).abs() < 1e-6);
        assert!((idf[1] - (2.0f32.ln() + 1.0)).abs() < 1e-6);
        let m = v.transform(&["RUN run cmd unseen"]);
        let (cols, vals) = m.row(0);
        assert_eq!(cols, [0, 1]);
        let (a, b) = (idf[0], (1.0 + 2.0f32.ln()) * idf[1]);
        let norm = (a * a + b * b).sqrt();
        assert!((vals[0] - a / norm).abs() < 1e-6, "{vals:?}");
        assert!((vals[1] - b / norm).abs() < 1e-6, "{vals:?}");
    }

    #[test]
    fn caps_keep_the_most_frequent_terms_and_those_in_enough_texts() {
        let texts = ["aa bb bb cc", "bb cc", "cc dd"];
        let a = [Analyzer::Word { min: 1, max: 1 }];
        let capped = Vectorizer::fit(
            &texts,
            &a,
            FitOptions {
                min_df: 1,
                max_features: 2,
                sublinear_tf: true,
            },
        );
        assert_eq!(capped.blocks[0].terms, ["bb", "cc"]);
        let min_df = Vectorizer::fit(
            &texts,
            &a,
            FitOptions {
                min_df: 2,
                max_features: 0,
                sublinear_tf: true,
            },
        );
        assert_eq!(min_df.blocks[0].terms, ["bb", "cc"]);
    }

    #[test]
    fn blocks_sit_side_by_side_each_with_unit_norm() {
        let texts = ["ab cd", "cd ef"];
        let v = Vectorizer::fit(
            &texts,
            &[
                Analyzer::Word { min: 1, max: 1 },
                Analyzer::CharWb { min: 2, max: 2 },
            ],
            FitOptions {
                min_df: 1,
                max_features: 0,
                sublinear_tf: false,
            },
        );
        let m = v.transform(&["ab"]);
        let (cols, vals) = m.row(0);
        assert_eq!(m.cols, 3 + v.blocks[1].terms.len());
        assert_eq!(cols[0], 0);
        assert!(cols[1..].iter().all(|&c| c >= 3));
        let sq: f32 = vals.iter().map(|x| x * x).sum();
        assert!((sq - 2.0).abs() < 1e-5, "{sq}");
    }
}

//! fastText-style features: hashed word n-grams and character n-grams of each word.
//!
//! Text is lower-cased and split into words (runs of letters, digits and `_`). Word n-grams
//! 1..=`word_ngrams` and the character n-grams `minn..=maxn` of each word wrapped in `<` `>` are
//! hashed with FNV-1a into `buckets` buckets (word and character n-grams share the buckets but
//! are salted apart). A text becomes the bag (with repeats) of its bucket ids.

use crate::hash::fnv1a;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Featurizer {
    pub word_ngrams: usize,
    pub minn: usize,
    pub maxn: usize,
    pub buckets: usize,
}

pub fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

impl Featurizer {
    fn bucket(&self, salt: u8, s: &str) -> u32 {
        let mut buf = Vec::with_capacity(s.len() + 1);
        buf.push(salt);
        buf.extend_from_slice(s.as_bytes());
        (fnv1a(&buf) % self.buckets as u64) as u32
    }

    /// The bag of bucket ids of one text (may be empty for a text with no word).
    pub fn features(&self, text: &str) -> Vec<u32> {
        let ws = words(text);
        let mut out = Vec::new();
        for n in 1..=self.word_ngrams.max(1) {
            if ws.len() < n {
                break;
            }
            for win in ws.windows(n) {
                out.push(self.bucket(b'w', &win.join(" ")));
            }
        }
        if self.maxn > 0 {
            for w in &ws {
                let chars: Vec<char> = format!("<{w}>").chars().collect();
                for n in self.minn..=self.maxn {
                    if chars.len() < n {
                        break;
                    }
                    for win in chars.windows(n) {
                        let g: String = win.iter().collect();
                        // The whole word is already a word unigram.
                        if n == chars.len() {
                            continue;
                        }
                        out.push(self.bucket(b'c', &g));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_lowercase_and_split_on_punctuation() {
        assert_eq!(
            words("Mimikatz dumps LSASS.exe, via cmd_line!"),
            vec!["mimikatz", "dumps", "lsass", "exe", "via", "cmd_line"]
        );
    }

    #[test]
    fn counts_word_and_char_ngrams() {
        let f = Featurizer {
            word_ngrams: 2,
            minn: 2,
            maxn: 3,
            buckets: 1 << 20,
        };
        // words: "ab", "c" → unigrams 2 + bigram 1;
        // "<ab>" (4 chars): 2-grams 3, 3-grams 2; "<c>" (3 chars): 2-grams 2, 3-gram = whole → skipped.
        assert_eq!(f.features("ab c").len(), 3 + 3 + 2 + 2);
        assert_eq!(f.features("ab c"), f.features("AB, c"));
        assert!(f.features("").is_empty());
        let none = Featurizer {
            maxn: 0,
            minn: 0,
            ..f
        };
        assert_eq!(none.features("ab c").len(), 3);
    }

    #[test]
    fn buckets_bound_the_ids() {
        let f = Featurizer {
            word_ngrams: 1,
            minn: 1,
            maxn: 2,
            buckets: 7,
        };
        assert!(f.features("some longer text here").iter().all(|&b| b < 7));
    }
}

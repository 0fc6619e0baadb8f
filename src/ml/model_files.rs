//! Which files of a Hugging Face model folder (or Hub repository) synthcti reads, and the
//! tokenizer built from them.
//!
//! Real Hub repositories come in several layouts. A model needs `config.json`; a tokenizer, the
//! first of
//! - `tokenizer.json` (the `tokenizers` library's own file), else
//! - `vocab.json` + `merges.txt`: the byte-level BPE of GPT-2 and RoBERTa (SecureBERT's layout),
//!   else
//! - `vocab.txt`: BERT's WordPiece;
//!
//! and weights, `model.safetensors`, else `pytorch_model.bin` (read with burn-store's PyTorch
//! reader, see [`crate::ml::encoder::load_weights`]). `tokenizer_config.json` and
//! `special_tokens_map.json` are read too when the tokenizer is built from a vocabulary (special
//! tokens, WordPiece's `do_lower_case` / `strip_accents` / `tokenize_chinese_chars`, BPE's
//! `add_prefix_space` / `trim_offsets`). A model trained from scratch needs only the
//! tokenizer's files.
//!
//! The tokenizers built from a vocabulary are those transformers' converters build for its fast
//! tokenizers (`convert_slow_tokenizer.py`: `RobertaConverter`, `BertConverter`), so the token
//! ids are the same (tests/encoder_parity.rs checks them against transformers' own).

use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const BPE_VOCAB: &str = "vocab.json";
pub const BPE_MERGES: &str = "merges.txt";
pub const WORDPIECE_VOCAB: &str = "vocab.txt";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub const SAFETENSORS: &str = "model.safetensors";
pub const PYTORCH_BIN: &str = "pytorch_model.bin";

/// What a cell reads from a model: all of it, or (a transformer trained from scratch) the
/// tokenizer only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Tokenizer,
    Model,
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerFormat {
    /// `tokenizer.json`.
    Json,
    /// `vocab.json` + `merges.txt`: byte-level BPE (RoBERTa).
    ByteLevelBpe,
    /// `vocab.txt`: WordPiece (BERT).
    WordPiece,
}

/// Where the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `model.safetensors`.
    Safetensors,
    /// `pytorch_model.bin` (a `torch.save` zip of the state dict).
    PyTorch,
}

/// The files of one model, chosen by what a folder or repository has (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub tokenizer: TokenizerFormat,
    /// None for [`Need::Tokenizer`].
    pub weights: Option<WeightsFormat>,
    /// Whether `tokenizer_config.json` / `special_tokens_map.json` are read (present, and the
    /// tokenizer is built from a vocabulary).
    pub tokenizer_config: bool,
    pub special_tokens_map: bool,
}

/// What a model lacks, as messages say it.
pub fn wanted(need: Need) -> &'static str {
    match need {
        Need::Model => {
            "config.json, a tokenizer (tokenizer.json, or vocab.json + merges.txt, or vocab.txt) and weights (model.safetensors or pytorch_model.bin)"
        }
        Need::Tokenizer => "a tokenizer (tokenizer.json, or vocab.json + merges.txt, or vocab.txt)",
    }
}

impl Layout {
    /// The layout of a model whose files `has` says exist; Err lists what is missing (one entry
    /// per requirement: `config.json`, `tokenizer.json or vocab.json + merges.txt or
    /// vocab.txt`, `model.safetensors or pytorch_model.bin`).
    pub fn resolve(
        need: Need,
        has: impl Fn(&str) -> bool,
    ) -> std::result::Result<Self, Vec<String>> {
        let mut missing = Vec::new();
        if need == Need::Model && !has(CONFIG) {
            missing.push(CONFIG.to_string());
        }
        let tokenizer = if has(TOKENIZER_JSON) {
            Some(TokenizerFormat::Json)
        } else if has(BPE_VOCAB) && has(BPE_MERGES) {
            Some(TokenizerFormat::ByteLevelBpe)
        } else if has(WORDPIECE_VOCAB) {
            Some(TokenizerFormat::WordPiece)
        } else {
            missing.push(match (has(BPE_VOCAB), has(BPE_MERGES)) {
                (true, false) => format!("{BPE_MERGES} (beside {BPE_VOCAB})"),
                (false, true) => format!("{BPE_VOCAB} (beside {BPE_MERGES})"),
                _ => format!("{TOKENIZER_JSON} or {BPE_VOCAB} + {BPE_MERGES} or {WORDPIECE_VOCAB}"),
            });
            None
        };
        let weights = match need {
            Need::Tokenizer => None,
            Need::Model if has(SAFETENSORS) => Some(WeightsFormat::Safetensors),
            Need::Model if has(PYTORCH_BIN) => Some(WeightsFormat::PyTorch),
            Need::Model => {
                missing.push(format!("{SAFETENSORS} or {PYTORCH_BIN}"));
                None
            }
        };
        let Some(tokenizer) = tokenizer else {
            return Err(missing);
        };
        if !missing.is_empty() {
            return Err(missing);
        }
        let from_vocab = tokenizer != TokenizerFormat::Json;
        Ok(Self {
            tokenizer,
            weights,
            tokenizer_config: from_vocab && has(TOKENIZER_CONFIG),
            special_tokens_map: from_vocab && has(SPECIAL_TOKENS_MAP),
        })
    }

    /// The layout of a folder.
    ///
    /// # Errors
    /// Data (exit 3): the folder does not exist, or lacks files (named, with what a folder needs).
    pub fn of_dir(dir: &Path, need: Need) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::data(format!(
                "model folder {} does not exist; run scripts/fetch-models.sh (all-MiniLM-L6-v2 lands in models/all-MiniLM-L6-v2) or give the path of a Hugging Face model folder",
                dir.display()
            )));
        }
        Self::resolve(need, |f| dir.join(f).is_file()).map_err(|missing| {
            Error::data(format!(
                "model folder {} lacks {}; a model folder needs {}",
                dir.display(),
                missing.join("; "),
                wanted(need)
            ))
        })
    }

    /// The tokenizer's files, in a fixed order.
    pub fn tokenizer_files(&self) -> Vec<&'static str> {
        let mut out = match self.tokenizer {
            TokenizerFormat::Json => vec![TOKENIZER_JSON],
            TokenizerFormat::ByteLevelBpe => vec![BPE_VOCAB, BPE_MERGES],
            TokenizerFormat::WordPiece => vec![WORDPIECE_VOCAB],
        };
        if self.tokenizer_config {
            out.push(TOKENIZER_CONFIG);
        }
        if self.special_tokens_map {
            out.push(SPECIAL_TOKENS_MAP);
        }
        out
    }

    /// The weights file, if the layout has weights.
    pub fn weights_file(&self) -> Option<&'static str> {
        self.weights.map(|w| match w {
            WeightsFormat::Safetensors => SAFETENSORS,
            WeightsFormat::PyTorch => PYTORCH_BIN,
        })
    }

    /// Every file read, in a fixed order: config, tokenizer, weights. For the layout of
    /// `config.json`, `tokenizer.json`, `model.safetensors` that is exactly those three, so cache
    /// keys computed before other layouts were read stay the same.
    pub fn files(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.weights.is_some() {
            out.push(CONFIG);
        }
        out.extend(self.tokenizer_files());
        out.extend(self.weights_file());
        out
    }
}

/// The tokenizer of a model folder, built as its [`Layout`] says (no padding or truncation set).
///
/// # Errors
/// Data (exit 3): a file is missing or malformed (named).
pub fn tokenizer(dir: &Path) -> Result<Tokenizer> {
    let layout = Layout::of_dir(dir, Need::Tokenizer)?;
    let path = |f: &str| dir.join(f);
    let bad = |f: &str, e: &dyn std::fmt::Display| {
        Error::data(format!("cannot read tokenizer {}: {e}", path(f).display()))
    };
    match layout.tokenizer {
        TokenizerFormat::Json => {
            Tokenizer::from_file(path(TOKENIZER_JSON)).map_err(|e| bad(TOKENIZER_JSON, &e))
        }
        TokenizerFormat::ByteLevelBpe => {
            let settings = TokenizerSettings::read(dir, &layout)?;
            byte_level_bpe(&path(BPE_VOCAB), &path(BPE_MERGES), &settings)
                .map_err(|e| bad(BPE_VOCAB, &e))
        }
        TokenizerFormat::WordPiece => {
            let settings = TokenizerSettings::read(dir, &layout)?;
            wordpiece(&path(WORDPIECE_VOCAB), &settings).map_err(|e| bad(WORDPIECE_VOCAB, &e))
        }
    }
}

/// What `tokenizer_config.json` and `special_tokens_map.json` say (the latter wins for special
/// tokens, as in transformers). Absent keys keep the defaults of transformers' `RobertaTokenizer`
/// / `BertTokenizer`.
#[derive(Debug, Clone, Default)]
struct TokenizerSettings {
    config: serde_json::Map<String, Value>,
    specials: serde_json::Map<String, Value>,
}

impl TokenizerSettings {
    fn read(dir: &Path, layout: &Layout) -> Result<Self> {
        let obj = |f: &str, present: bool| -> Result<serde_json::Map<String, Value>> {
            if !present {
                return Ok(Default::default());
            }
            let p = dir.join(f);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Error::data(format!("cannot read {}: {e}", p.display())))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(Error::data(format!("{} is not a JSON object", p.display()))),
                Err(e) => Err(Error::data(format!("{} is not JSON: {e}", p.display()))),
            }
        };
        Ok(Self {
            config: obj(TOKENIZER_CONFIG, layout.tokenizer_config)?,
            specials: obj(SPECIAL_TOKENS_MAP, layout.special_tokens_map)?,
        })
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.config
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// A special token (`bos_token`, …): a string or an `AddedToken` object (`content`,
    /// `lstrip`, `rstrip`, `single_word`, `normalized`).
    fn special(&self, key: &str, default: &str) -> AddedToken {
        let v = self.specials.get(key).or_else(|| self.config.get(key));
        match v {
            Some(Value::Object(o)) => {
                let b = |k: &str| o.get(k).and_then(Value::as_bool);
                let content = o.get("content").and_then(Value::as_str).unwrap_or(default);
                let mut t = AddedToken::from(content, true)
                    .lstrip(b("lstrip").unwrap_or(false))
                    .rstrip(b("rstrip").unwrap_or(false))
                    .single_word(b("single_word").unwrap_or(false));
                if let Some(n) = b("normalized") {
                    t = t.normalized(n);
                }
                t
            }
            Some(Value::String(s)) => AddedToken::from(s.as_str(), true),
            _ => AddedToken::from(default, true),
        }
    }
}

/// The id of a special token in the vocabulary.
fn special_id(tok: &Tokenizer, t: &AddedToken) -> std::result::Result<u32, String> {
    tok.token_to_id(&t.content)
        .ok_or_else(|| format!("the special token `{}` is not in the vocabulary", t.content))
}

/// RoBERTa's tokenizer from `vocab.json` + `merges.txt`, as transformers' `RobertaConverter`
/// builds it: byte-level BPE, the ByteLevel pre-tokenizer and decoder (`add_prefix_space` from
/// `tokenizer_config.json`, default false), `<s> $A </s>` (`<s> $A </s> </s> $B </s>` for pairs),
/// `<mask>` stripping the space before it. `do_lower_case` is ignored, as transformers' fast
/// `RobertaTokenizer` ignores it (5.24 checked: "The" stays "The").
fn byte_level_bpe(
    vocab: &Path,
    merges: &Path,
    s: &TokenizerSettings,
) -> std::result::Result<Tokenizer, String> {
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| e.to_string())?;
    let mut tok = Tokenizer::new(bpe);
    let add_prefix_space = s.flag("add_prefix_space", false);
    let trim_offsets = s.flag("trim_offsets", true);
    tok.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, trim_offsets, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mask = {
        let m = s.special("mask_token", "<mask>");
        // RobertaTokenizer's `<mask>` is AddedToken(lstrip=True) unless the files say otherwise.
        let explicit = matches!(
            s.specials
                .get("mask_token")
                .or_else(|| s.config.get("mask_token")),
            Some(Value::Object(_))
        );
        if explicit { m } else { m.lstrip(true) }
    };
    let specials = [
        s.special("bos_token", "<s>"),
        s.special("pad_token", "<pad>"),
        s.special("eos_token", "</s>"),
        s.special("unk_token", "<unk>"),
        s.special("sep_token", "</s>"),
        s.special("cls_token", "<s>"),
        mask,
    ];
    let sep = s.special("sep_token", "</s>");
    let cls = s.special("cls_token", "<s>");
    let sep_id = special_id(&tok, &sep)?;
    let cls_id = special_id(&tok, &cls)?;
    tok.with_post_processor(Some(
        RobertaProcessing::new((sep.content.clone(), sep_id), (cls.content.clone(), cls_id))
            .trim_offsets(trim_offsets)
            .add_prefix_space(add_prefix_space),
    ));
    add_specials(&mut tok, &specials)?;
    Ok(tok)
}

/// BERT's tokenizer from `vocab.txt`, as transformers' `BertConverter` builds it: WordPiece
/// (`##` continuation, `[UNK]`, 100 characters a word at most), the BERT normalizer
/// (`do_lower_case` default true, `tokenize_chinese_chars` default true, `strip_accents`
/// following lowercasing unless set), the BERT pre-tokenizer, `[CLS] $A [SEP]`.
fn wordpiece(vocab: &Path, s: &TokenizerSettings) -> std::result::Result<Tokenizer, String> {
    let unk = s.special("unk_token", "[UNK]");
    let wp = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk.content.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| e.to_string())?;
    let mut tok = Tokenizer::new(wp);
    let strip_accents = s.config.get("strip_accents").and_then(Value::as_bool);
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        s.flag("tokenize_chinese_chars", true),
        strip_accents,
        s.flag("do_lower_case", true),
    )))
    .map_err(|e| e.to_string())?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let sep = s.special("sep_token", "[SEP]");
    let cls = s.special("cls_token", "[CLS]");
    let sep_id = special_id(&tok, &sep)?;
    let cls_id = special_id(&tok, &cls)?;
    tok.with_post_processor(Some(BertProcessing::new(
        (sep.content.clone(), sep_id),
        (cls.content.clone(), cls_id),
    )));
    let specials = [
        s.special("pad_token", "[PAD]"),
        unk,
        cls,
        sep,
        s.special("mask_token", "[MASK]"),
    ];
    add_specials(&mut tok, &specials)?;
    Ok(tok)
}

/// The special tokens that are in the vocabulary, matched whole in the text (as transformers
/// registers them); each once.
fn add_specials(tok: &mut Tokenizer, specials: &[AddedToken]) -> std::result::Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut add = Vec::new();
    for t in specials {
        if seen.contains(&t.content.as_str()) || tok.token_to_id(&t.content).is_none() {
            continue;
        }
        seen.push(&t.content);
        add.push(t.clone());
    }
    tok.add_special_tokens(add).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(need: Need, files: &[&str]) -> std::result::Result<Layout, Vec<String>> {
        Layout::resolve(need, |f| files.contains(&f))
    }

    #[test]
    fn the_standard_layout_reads_exactly_its_three_files() {
        let l = layout(
            Need::Model,
            &[
                CONFIG,
                TOKENIZER_JSON,
                SAFETENSORS,
                PYTORCH_BIN,
                BPE_VOCAB,
                BPE_MERGES,
                TOKENIZER_CONFIG,
            ],
        )
        .unwrap();
        assert_eq!(l.files(), vec![CONFIG, TOKENIZER_JSON, SAFETENSORS]);
    }

    #[test]
    fn securebert_s_layout_reads_bpe_files_and_the_pytorch_weights() {
        let l = layout(
            Need::Model,
            &[
                CONFIG,
                BPE_VOCAB,
                BPE_MERGES,
                TOKENIZER_CONFIG,
                SPECIAL_TOKENS_MAP,
                PYTORCH_BIN,
            ],
        )
        .unwrap();
        assert_eq!(
            l.files(),
            vec![
                CONFIG,
                BPE_VOCAB,
                BPE_MERGES,
                TOKENIZER_CONFIG,
                SPECIAL_TOKENS_MAP,
                PYTORCH_BIN
            ]
        );
        assert_eq!(l.weights, Some(WeightsFormat::PyTorch));
    }

    #[test]
    fn a_vocab_txt_is_wordpiece_and_a_tokenizer_only_need_skips_config_and_weights() {
        let l = layout(Need::Tokenizer, &[WORDPIECE_VOCAB]).unwrap();
        assert_eq!(l.files(), vec![WORDPIECE_VOCAB]);
        let l = layout(Need::Model, &[CONFIG, WORDPIECE_VOCAB, SAFETENSORS]).unwrap();
        assert_eq!(l.tokenizer, TokenizerFormat::WordPiece);
    }

    #[test]
    fn each_missing_requirement_is_named() {
        assert_eq!(
            layout(Need::Model, &[]).unwrap_err(),
            vec![
                "config.json".to_string(),
                "tokenizer.json or vocab.json + merges.txt or vocab.txt".into(),
                "model.safetensors or pytorch_model.bin".into()
            ]
        );
        assert_eq!(
            layout(Need::Model, &[CONFIG, BPE_VOCAB, PYTORCH_BIN]).unwrap_err(),
            vec!["merges.txt (beside vocab.json)".to_string()]
        );
        assert_eq!(
            layout(Need::Tokenizer, &[CONFIG, SAFETENSORS]).unwrap_err(),
            vec!["tokenizer.json or vocab.json + merges.txt or vocab.txt".to_string()]
        );
    }

    /// A copy of a fixture's tokenizer files with `tokenizer_config.json` replaced.
    fn with_tokenizer_config(fixture: &str, files: &[&str], config: &str) -> tempfile::TempDir {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders")
            .join(fixture);
        let tmp = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
        }
        std::fs::write(tmp.path().join(TOKENIZER_CONFIG), config).unwrap();
        tmp
    }

    fn tokens(dir: &Path, text: &str) -> Vec<String> {
        tokenizer(dir)
            .unwrap()
            .encode(text, true)
            .unwrap()
            .get_tokens()
            .to_vec()
    }

    // The expected tokens below are transformers 5.24's (AutoTokenizer on the same files).

    #[test]
    fn add_prefix_space_from_tokenizer_config_marks_the_first_word() {
        let files = [BPE_VOCAB, BPE_MERGES];
        let off = with_tokenizer_config("roberta-securebert", &files, "{}");
        let on = with_tokenizer_config(
            "roberta-securebert",
            &files,
            r#"{"add_prefix_space": true}"#,
        );
        assert_eq!(
            tokens(off.path(), "the APT"),
            ["<s>", "the", "ĠA", "P", "T", "</s>"]
        );
        assert_eq!(
            tokens(on.path(), "the APT"),
            ["<s>", "Ġthe", "ĠA", "P", "T", "</s>"]
        );
    }

    #[test]
    fn do_lower_case_does_not_lowercase_byte_level_bpe_as_in_transformers() {
        let files = [BPE_VOCAB, BPE_MERGES];
        let dir = with_tokenizer_config("roberta-securebert", &files, r#"{"do_lower_case": true}"#);
        assert_eq!(
            tokens(dir.path(), "The APT"),
            ["<s>", "The", "ĠA", "P", "T", "</s>"]
        );
    }

    #[test]
    fn do_lower_case_from_tokenizer_config_lowercases_wordpiece() {
        let files = [WORDPIECE_VOCAB];
        let cased = with_tokenizer_config("bert-vocab", &files, r#"{"do_lower_case": false}"#);
        // BertTokenizer's default is uncased, and uncased strips accents.
        let uncased = with_tokenizer_config("bert-vocab", &files, "{}");
        assert_eq!(tokens(cased.path(), "The"), ["[CLS]", "The", "[SEP]"]);
        assert_eq!(
            tokens(uncased.path(), "The café"),
            ["[CLS]", "the", "c", "##a", "##f", "##e", "[SEP]"]
        );
    }

    #[test]
    fn a_special_token_missing_from_the_vocabulary_is_named() {
        let files = [BPE_VOCAB, BPE_MERGES];
        let dir = with_tokenizer_config("roberta-securebert", &files, r#"{"cls_token": "<cls>"}"#);
        let e = tokenizer(dir.path()).unwrap_err();
        assert!(
            e.message
                .contains("vocab.json: the special token `<cls>` is not in the vocabulary"),
            "{}",
            e.message
        );
    }
}

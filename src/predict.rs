//! `synthcti predict MODEL_DIR INPUT…`: techniques for new reports with an exported model.
//!
//! Each input is read and cut into sentences ([`crate::segment`]); every sentence gets its
//! top-k classes with calibrated scores ([`crate::calibrate`], the exported temperature), and the
//! techniques whose score reaches the threshold (the exported one, or `--threshold`). Per
//! document, each technique that some sentence reached the threshold with is listed with its best
//! score and its evidence sentences (best first). Outputs: JSON, JSONL (a document a line),
//! Markdown, CSV, and an ATT&CK Navigator layer ([`crate::navigator`]) over all documents.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::calibrate;
use crate::error::Result;
use crate::export::Exported;
use crate::ml::Device;
use crate::navigator::{self, LayerTechnique};
use crate::segment::Document;

/// How many evidence sentences a document-level technique keeps.
pub const EVIDENCE: usize = 3;

/// A class with its calibrated score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassScore {
    pub technique: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub score: f32,
}

/// One sentence's prediction.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SentencePrediction {
    /// Position in the document (0-based).
    pub index: usize,
    pub text: String,
    /// The top-k classes, highest score first.
    pub top: Vec<ClassScore>,
    /// Those of `top` at or above the threshold (empty: the sentence gets no technique).
    pub techniques: Vec<String>,
}

/// A sentence that supports a document-level technique.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub index: usize,
    pub text: String,
    pub score: f32,
}

/// A technique found in a document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DocTechnique {
    pub technique: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub tactics: Vec<String>,
    /// The best calibrated score among its sentences.
    pub score: f32,
    /// How many sentences reached the threshold with it.
    pub sentences: usize,
    /// Up to [`EVIDENCE`] of them, best first.
    pub evidence: Vec<Evidence>,
}

/// One document's predictions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DocPrediction {
    pub document: String,
    /// Techniques above threshold, best score first.
    pub techniques: Vec<DocTechnique>,
    pub sentences: Vec<SentencePrediction>,
}

/// What the model and threshold were (written at the top of JSON output).
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub model: String,
    pub classifier: String,
    pub temperature: f64,
    pub threshold: f64,
    pub top_k: usize,
}

/// Predict `docs` with `model`: `top_k` classes per sentence, techniques at or above
/// `threshold` (a calibrated score in [0, 1]). The sentence texts of all documents go to the
/// model in one batch.
pub fn predict(
    model: &Exported,
    docs: &[Document],
    top_k: usize,
    threshold: f64,
    device: &Device,
) -> Result<Vec<DocPrediction>> {
    let per_doc: Vec<Vec<String>> = docs
        .iter()
        .map(|d| crate::segment::sentences(&d.text))
        .collect();
    let all: Vec<&str> = per_doc.iter().flatten().map(String::as_str).collect();
    let probs = model.model.probabilities(&all, device)?;
    let classes = &model.meta.classes;
    let mut rows = probs.into_iter();
    let mut out = Vec::with_capacity(docs.len());
    for (doc, sents) in docs.iter().zip(per_doc) {
        let mut sentences = Vec::with_capacity(sents.len());
        let mut found: BTreeMap<usize, Vec<Evidence>> = BTreeMap::new();
        for (index, text) in sents.into_iter().enumerate() {
            let row = rows.next().expect("a row per sentence");
            // A multi-label model's scores are used as they are: sigmoid scores are not a
            // distribution, and a softmax with `none` has T = 1.
            let q = if model.meta.multi_label {
                row
            } else {
                calibrate::scale(&row, model.meta.temperature)
            };
            let mut order: Vec<usize> = (0..q.len()).collect();
            order.sort_by(|&a, &b| q[b].total_cmp(&q[a]).then(a.cmp(&b)));
            order.truncate(top_k.max(1));
            let mut techniques = Vec::new();
            for &k in &order {
                if q[k] as f64 >= threshold && classes[k].id != "none" {
                    techniques.push(classes[k].id.clone());
                    found.entry(k).or_default().push(Evidence {
                        index,
                        text: text.clone(),
                        score: q[k],
                    });
                }
            }
            let top = order
                .iter()
                .map(|&k| ClassScore {
                    technique: classes[k].id.clone(),
                    name: classes[k].name.clone(),
                    score: q[k],
                })
                .collect();
            sentences.push(SentencePrediction {
                index,
                text,
                top,
                techniques,
            });
        }
        let mut techniques: Vec<DocTechnique> = found
            .into_iter()
            .map(|(k, mut ev)| {
                ev.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
                let n = ev.len();
                ev.truncate(EVIDENCE);
                DocTechnique {
                    technique: classes[k].id.clone(),
                    name: classes[k].name.clone(),
                    tactics: classes[k].tactics.clone(),
                    score: ev[0].score,
                    sentences: n,
                    evidence: ev,
                }
            })
            .collect();
        techniques.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.technique.cmp(&b.technique))
        });
        out.push(DocPrediction {
            document: doc.id.clone(),
            techniques,
            sentences,
        });
    }
    Ok(out)
}

/// Output formats of `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object: the model and threshold, then every document.
    Json,
    /// A JSON object per document, one a line.
    Jsonl,
    /// A table of techniques per document with evidence.
    Md,
    /// A row per (document, technique, evidence sentence).
    Csv,
    /// An ATT&CK Navigator layer (format 4.5) over all documents.
    Navigator,
}

/// Render predictions in `format`.
pub fn render(format: Format, info: &RunInfo, docs: &[DocPrediction]) -> String {
    match format {
        Format::Json => {
            let v = serde_json::json!({"model": info, "documents": docs});
            serde_json::to_string_pretty(&v).expect("predictions serialize") + "\n"
        }
        Format::Jsonl => docs
            .iter()
            .map(|d| serde_json::to_string(d).expect("predictions serialize") + "\n")
            .collect(),
        Format::Md => markdown(info, docs),
        Format::Csv => csv(docs),
        Format::Navigator => {
            let layer = navigator_layer(info, docs);
            serde_json::to_string_pretty(&layer).expect("layer serializes") + "\n"
        }
    }
}

fn markdown(info: &RunInfo, docs: &[DocPrediction]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# ATT&CK techniques\n\nModel `{}` ({}), calibrated score threshold {:.3}.\n",
        info.model, info.classifier, info.threshold
    );
    for d in docs {
        let n = d.sentences.len();
        let with = d
            .sentences
            .iter()
            .filter(|x| !x.techniques.is_empty())
            .count();
        let _ = writeln!(
            s,
            "## {}\n\n{n} sentences, {with} with a technique.\n",
            d.document
        );
        if d.techniques.is_empty() {
            s.push_str("No technique reached the threshold.\n\n");
            continue;
        }
        s.push_str(
            "| technique | name | score | sentences | best evidence |\n|---|---|---|---|---|\n",
        );
        for t in &d.techniques {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {} | {} |",
                t.technique,
                t.name.as_deref().unwrap_or("").replace('|', "\\|"),
                t.score,
                t.sentences,
                t.evidence[0].text.replace('|', "\\|")
            );
        }
        s.push('\n');
    }
    s
}

fn csv(docs: &[DocPrediction]) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "document",
        "technique",
        "name",
        "score",
        "sentence_index",
        "sentence_score",
        "sentence",
    ])
    .expect("csv to memory");
    for d in docs {
        for t in &d.techniques {
            for e in &t.evidence {
                w.write_record([
                    d.document.as_str(),
                    &t.technique,
                    t.name.as_deref().unwrap_or(""),
                    &format!("{:.4}", t.score),
                    &e.index.to_string(),
                    &format!("{:.4}", e.score),
                    &e.text,
                ])
                .expect("csv to memory");
            }
        }
    }
    String::from_utf8(w.into_inner().expect("csv to memory")).expect("csv is UTF-8")
}

/// One Navigator layer over all documents: per technique the best score of any document and,
/// as its comment, the evidence sentences (with their document when there are several).
pub fn navigator_layer(info: &RunInfo, docs: &[DocPrediction]) -> serde_json::Value {
    let mut best: BTreeMap<&str, (f32, Vec<String>)> = BTreeMap::new();
    for d in docs {
        for t in &d.techniques {
            let e = best.entry(&t.technique).or_insert((0.0, Vec::new()));
            e.0 = e.0.max(t.score);
            for ev in &t.evidence {
                e.1.push(if docs.len() > 1 {
                    format!("[{}] {} ({:.2})", d.document, ev.text, ev.score)
                } else {
                    format!("{} ({:.2})", ev.text, ev.score)
                });
            }
        }
    }
    let techniques: Vec<LayerTechnique> = best
        .into_iter()
        .map(|(id, (score, ev))| LayerTechnique {
            id: id.to_string(),
            score: score as f64,
            comment: ev.join("\n"),
        })
        .collect();
    let names: Vec<&str> = docs.iter().map(|d| d.document.as_str()).collect();
    navigator::layer(
        &format!("synthcti: {}", names.join(", ")),
        &format!(
            "Techniques predicted by synthcti model `{}` ({}) at calibrated threshold {:.3}; score = 100 × the best sentence's calibrated score.",
            info.model, info.classifier, info.threshold
        ),
        None,
        &techniques,
    )
}

/// What `synthcti predict` was given.
pub struct CliOptions<'a> {
    pub model_dir: &'a std::path::Path,
    pub inputs: &'a [std::path::PathBuf],
    pub format: Format,
    pub out: Option<&'a std::path::Path>,
    pub top_k: usize,
    pub threshold: Option<f64>,
    pub text_field: &'a str,
}

/// `synthcti predict`: check the options (exit 2), read every input (exit 3 on a bad one)
/// before loading the model, predict, and write the output.
pub fn run_cli(o: &CliOptions) -> Result<()> {
    use crate::error::{Error, ErrorKind, IoContext};
    if let Some(t) = o.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Error::config(format!(
            "--threshold {t} is out of range: a calibrated score in [0, 1]"
        )));
    }
    if o.top_k == 0 {
        return Err(Error::config("--top-k 0: give at least 1"));
    }
    let mut docs = Vec::new();
    for p in o.inputs {
        docs.extend(crate::segment::read_inputs(p, o.text_field)?);
    }
    let device = Device::flex();
    let model = Exported::load(o.model_dir, &device)?;
    let threshold = o.threshold.unwrap_or(model.meta.threshold.threshold);
    let preds = predict(&model, &docs, o.top_k, threshold, &device)?;
    let info = RunInfo {
        model: model.meta.cell.clone(),
        classifier: model.meta.classifier.as_str().to_string(),
        temperature: model.meta.temperature,
        threshold,
        top_k: o.top_k,
    };
    let body = render(o.format, &info, &preds);
    match o.out {
        Some(p) => std::fs::write(p, body)
            .io_ctx(ErrorKind::Internal, || format!("writing {}", p.display())),
        None => {
            print!("{body}");
            Ok(())
        }
    }
}

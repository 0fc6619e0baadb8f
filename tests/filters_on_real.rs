//! What the meta filter costs on real report sentences: every distinct sentence of TRAM (single-
//! and multi-label) and CTI-to-MITRE (both files) is a sentence a report does contain, so each
//! one the filter flags is a real shape the synthetic data can no longer have.

mod common;

use std::collections::BTreeSet;

use synthcti::junk::is_meta;

/// The distinct trimmed sentences of the four real files.
fn real_sentences() -> BTreeSet<String> {
    let data = common::shared_data();
    let mut out = BTreeSet::new();
    let single: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("tram/single_label.json")).unwrap(),
    )
    .unwrap();
    for r in single.as_array().unwrap() {
        out.insert(r["text"].as_str().unwrap().trim().to_string());
    }
    let multi = std::fs::read_to_string(data.join("tram/multi_label_reconstructed.jsonl")).unwrap();
    for line in multi.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        out.insert(r["text"].as_str().unwrap().trim().to_string());
    }
    for file in ["cti-to-mitre/dataset.csv", "cti-to-mitre/dataset_tram.csv"] {
        let mut rd = csv::Reader::from_path(data.join(file)).unwrap();
        let col = rd
            .headers()
            .unwrap()
            .iter()
            .position(|h| h == "sentence")
            .unwrap();
        for r in rd.records() {
            out.insert(r.unwrap()[col].trim().to_string());
        }
    }
    out
}

#[test]
fn the_meta_filter_flags_few_real_report_sentences() {
    let real = real_sentences();
    assert_eq!(real.len(), 36_967);
    let flagged = real.iter().filter(|s| is_meta(s)).count();
    // The figure `junk`'s docs and the README quote; a change to the patterns changes it, and
    // then the docs with it.
    assert_eq!(
        flagged,
        960,
        "meta flags {flagged} of {} real sentences",
        real.len()
    );
}

//! Readers for each publisher format, down to (text, label, group) rows.

use std::path::Path;

use serde_json::Value;

use super::labels::Normalizer;
use super::{Example, LoadStats, LongText};
use crate::data::config::{DataConfig, DataKind, MultiLabelPolicy, NegativePolicy};
use crate::error::{Error, Result};

pub struct RawRows {
    pub rows: Vec<Example>,
    pub stats: LoadStats,
}

/// A text longer than this many characters is reported (kept, with a warning naming its line):
/// a whole document in one cell, or a broken quote that swallowed the rows after it. The longest
/// sentence of the shipped datasets has 11,212 characters (a table in TRAM's multi-label rows);
/// the others stay under 1,800.
pub const LONG_TEXT_CHARS: usize = 10_000;

/// The label negatives get when `data.negatives = "keep"`.
pub const NEGATIVE_LABEL: &str = "none";

fn json_error(path: &Path, e: &serde_json::Error) -> Error {
    let hint = if e.is_eof() {
        "the file ends in the middle of a value: it is truncated. Download it again (`synthcti data pull`)"
    } else {
        "fix the file or download it again (`synthcti data pull`)"
    };
    Error::data(format!(
        "{} is not valid JSON at line {}, column {}: {e}; {hint}",
        path.display(),
        e.line(),
        e.column()
    ))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::data(format!("cannot read {}: {e}", path.display())))
}

/// The UTF-8 byte-order mark some editors (Excel, Notepad) write at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A file's bytes without a leading UTF-8 byte-order mark.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// The 1-based line that byte `offset` of `bytes` is on.
pub fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// The text of a file that must be UTF-8 (a leading byte-order mark is dropped); an error names
/// the line (not the byte offset) of the first invalid byte.
fn read_text(path: &Path) -> Result<String> {
    let mut bytes = read_bytes(path)?;
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Error::data(format!(
            "{} line {}: not UTF-8 text; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            path.display(),
            line_of(e.as_bytes(), at)
        ))
    })
}

/// The 1-based line where each item of a top-level JSON array starts (strings and nesting
/// skipped), so errors about an item name its line. Empty when the text is not an array.
pub fn array_item_lines(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut depth, mut line, mut in_str, mut esc) = (0usize, 1usize, false, false);
    let mut want_item = false;
    for &c in b {
        if c == b'\n' {
            line += 1;
        }
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        if depth == 1 && want_item && !c.is_ascii_whitespace() && c != b']' {
            out.push(line);
            want_item = false;
        }
        match c {
            b'"' => in_str = true,
            b'[' if depth == 0 => {
                depth = 1;
                want_item = true;
            }
            b'{' if depth == 0 => return Vec::new(),
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => want_item = true,
            _ => {}
        }
    }
    out
}

/// Read the rows of `path` in the format `cfg` names; every label value goes through `norm`
/// (ATT&CK spelling, revoked IDs mapped) before the negative and multi-label policies.
pub fn read(cfg: &DataConfig, path: &Path, norm: &Normalizer) -> Result<RawRows> {
    let label = cfg
        .label
        .clone()
        .unwrap_or_else(|| cfg.kind.default_label().into());
    let text_f = cfg
        .text_field
        .clone()
        .unwrap_or_else(|| cfg.kind.default_text().into());
    let group = cfg
        .group_field
        .clone()
        .unwrap_or_else(|| "doc_title".into());
    match cfg.kind {
        DataKind::TramSingle => {
            let text = read_text(path)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| json_error(path, &e))?;
            let arr = v.as_array().ok_or_else(|| {
                Error::data(format!(
                    "{} should be a JSON array of {{\"text\",\"label\",\"doc_title\"}} objects (TRAM single_label.json), but its top level is not an array",
                    path.display()
                ))
            })?;
            let lines = array_item_lines(&text);
            let objs = arr
                .iter()
                .enumerate()
                .map(|(i, o)| (lines.get(i).copied().unwrap_or(0), o));
            objects_to_rows(cfg, norm, path, objs, &text_f, &label, &group)
        }
        DataKind::Jsonl | DataKind::TramMulti => {
            let s = read_text(path)?;
            let mut objs = Vec::new();
            for (i, line) in s.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    Error::data(format!(
                        "{} line {}: not a JSON object ({e}){}",
                        path.display(),
                        i + 1,
                        if e.is_eof() {
                            "; the line is cut short: is the file truncated?"
                        } else {
                            ""
                        }
                    ))
                })?;
                objs.push((i + 1, v));
            }
            objects_to_rows(
                cfg,
                norm,
                path,
                objs.iter().map(|(i, o)| (*i, o)),
                &text_f,
                &label,
                &group,
            )
        }
        DataKind::TramBootstrap => read_bootstrap(cfg, norm, path),
        DataKind::CtiToMitre | DataKind::Csv => read_csv(cfg, norm, path, &text_f, &label, &group),
    }
}

/// The label values of a JSON field (a string, a list of strings, or null), as written; the
/// normalizer splits, respells and maps them.
fn labels_of(v: Option<&Value>) -> Option<Vec<String>> {
    let Some(v) = v else {
        // No label field: a row without a label, as null is.
        return Some(vec![]);
    };
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        Value::Null => Some(vec![]),
        Value::Number(n) => Some(vec![n.to_string()]),
        _ => None,
    }
}

fn fields_of(o: &Value) -> String {
    o.as_object()
        .map(|m| {
            m.keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "(not an object)".into())
}

/// Shared by every format: normalize the label values as written, then apply the negative and
/// multi-label policies, counting respelled and mapped labels of the rows kept.
#[allow(clippy::too_many_arguments)]
fn push_row(
    cfg: &DataConfig,
    norm: &Normalizer,
    stats: &mut LoadStats,
    rows: &mut Vec<Example>,
    line: usize,
    text: &str,
    values: &[String],
    group: Option<String>,
) {
    stats.rows_read += 1;
    let text = text.trim();
    if text.is_empty() {
        stats.empty_texts += 1;
        return;
    }
    let chars = text.chars().count();
    if chars > LONG_TEXT_CHARS {
        stats.long_texts += 1;
        if stats.long_text_rows.len() < 5 {
            stats.long_text_rows.push(LongText {
                row: stats.rows_read,
                line,
                chars,
            });
        }
    }
    let mut labels = norm.row(values);
    if cfg.multi_label == MultiLabelPolicy::Keep && labels.len() > 1 {
        for label in &labels {
            count_spelling(stats, label);
        }
        let mut ids: Vec<String> = labels.into_iter().map(|l| l.id).collect();
        ids.sort();
        ids.dedup();
        rows.push(Example {
            text: text.to_string(),
            label: ids.join("+"),
            group,
            row: stats.rows_read,
            labels: ids,
        });
        return;
    }
    let label = match labels.len() {
        0 => match cfg.negatives {
            NegativePolicy::Drop => {
                stats.negatives_dropped += 1;
                return;
            }
            NegativePolicy::Keep => {
                rows.push(Example {
                    text: text.to_string(),
                    label: NEGATIVE_LABEL.to_string(),
                    group,
                    row: stats.rows_read,
                    labels: Vec::new(),
                });
                return;
            }
        },
        1 => labels.remove(0),
        _ => match cfg.multi_label {
            MultiLabelPolicy::Drop => {
                stats.multi_label_dropped += 1;
                return;
            }
            MultiLabelPolicy::First | MultiLabelPolicy::Keep => {
                stats.multi_label_first += 1;
                labels.remove(0)
            }
        },
    };
    count_spelling(stats, &label);
    let labels = if cfg.multi_label == MultiLabelPolicy::Keep {
        vec![label.id.clone()]
    } else {
        Vec::new()
    };
    rows.push(Example {
        text: text.to_string(),
        label: label.id,
        group,
        row: stats.rows_read,
        labels,
    });
}

/// Count a kept label that was respelled or mapped from a revoked ID.
fn count_spelling(stats: &mut LoadStats, label: &super::labels::Label) {
    if label.respelled() {
        stats
            .labels_normalized
            .entry(label.written.clone())
            .or_insert_with(|| (label.spelled.clone(), 0))
            .1 += 1;
    }
    if label.mapped() {
        stats
            .revoked_mapped
            .entry(label.spelled.clone())
            .or_insert_with(|| (label.id.clone(), 0))
            .1 += 1;
    }
}

fn objects_to_rows<'a>(
    cfg: &DataConfig,
    norm: &Normalizer,
    path: &Path,
    objs: impl Iterator<Item = (usize, &'a Value)>,
    text_f: &str,
    label_f: &str,
    group_f: &str,
) -> Result<RawRows> {
    let mut stats = LoadStats::default();
    let mut rows = Vec::new();
    // The first row without the label field: an error when no row has it (a wrong `data.label`).
    let mut first_missing: Option<(String, String)> = None;
    for (n, (line, o)) in objs.enumerate() {
        let place = if line > 0 {
            format!("{} line {line}", path.display())
        } else {
            format!("{} item {}", path.display(), n + 1)
        };
        let Some(obj) = o.as_object() else {
            return Err(Error::data(format!("{place}: expected a JSON object")));
        };
        let Some(text) = obj.get(text_f).and_then(|t| t.as_str()) else {
            return Err(Error::data(format!(
                "{place}: text field `{text_f}` not found; the fields there are {}. Set `data.text_field`",
                fields_of(o)
            )));
        };
        if !obj.contains_key(label_f) {
            // A row without the field is a row without a label: `data.negatives` decides.
            stats.label_field_missing += 1;
            if first_missing.is_none() {
                first_missing = Some((place.clone(), fields_of(o)));
            }
        }
        let labels = labels_of(obj.get(label_f)).ok_or_else(|| {
            Error::data(format!(
                "{place}: label field `{label_f}` must be a string or a list of strings"
            ))
        })?;
        let group = obj
            .get(group_f)
            .and_then(|g| g.as_str())
            .map(str::to_string);
        push_row(cfg, norm, &mut stats, &mut rows, line, text, &labels, group);
    }
    if let Some((place, fields)) = first_missing
        && stats.label_field_missing == stats.rows_read
    {
        return Err(Error::data(format!(
            "{place}: label field `{label_f}` not found in any row; the fields there are {fields}. Set `data.label` to one of them"
        )));
    }
    Ok(RawRows { rows, stats })
}

fn read_bootstrap(cfg: &DataConfig, norm: &Normalizer, path: &Path) -> Result<RawRows> {
    let v: Value = serde_json::from_str(&read_text(path)?).map_err(|e| json_error(path, &e))?;
    let sentences = v.get("sentences").and_then(|s| s.as_array()).ok_or_else(|| {
        Error::data(format!(
            "{} should be a TRAM report object with a `sentences` array (bootstrap-training-data.json); it has {}",
            path.display(),
            fields_of(&v)
        ))
    })?;
    let group = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
    let mut stats = LoadStats::default();
    let mut rows = Vec::new();
    for (i, s) in sentences.iter().enumerate() {
        let text = s
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::data(format!("{} sentences[{i}]: no `text`", path.display())))?;
        let labels: Vec<String> = s
            .get("mappings")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("attack_id")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        push_row(
            cfg,
            norm,
            &mut stats,
            &mut rows,
            0,
            text,
            &labels,
            group.clone(),
        );
    }
    Ok(RawRows { rows, stats })
}

/// Find a broken quote: a quoted field that never closes, or whose closing quote is followed by
/// something other than a delimiter or a line end (its quote was closed by a later row's quote).
/// Returns the 1-based line where that field opens.
fn broken_quote(bytes: &[u8]) -> Option<usize> {
    let mut line = 1;
    let mut in_quotes = false;
    let mut open_line = 0;
    let mut at_field_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                    if !matches!(bytes.get(i + 1), None | Some(b',' | b'\n' | b'\r')) {
                        return Some(open_line);
                    }
                }
            }
        } else if b == b'"' && at_field_start {
            in_quotes = true;
            open_line = line;
        }
        if b == b'\n' {
            line += 1;
        }
        at_field_start = !in_quotes && (b == b',' || b == b'\n' || (at_field_start && b == b'\r'));
        i += 1;
    }
    in_quotes.then_some(open_line)
}

/// A CSV reader's error as the line of the row (the csv crate's byte offset left out).
fn csv_error(path: &Path, e: &csv::Error) -> Error {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let what = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not UTF-8 text; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            err.field() + 1
        ),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "this row has {len} fields where the header has {expected_len}; quote fields that hold the delimiter (`,`)"
        ),
        _ => format!("malformed CSV row ({e}); check that row's fields and quoting"),
    };
    Error::data(format!("{} line {line}: {what}", path.display()))
}

fn read_csv(
    cfg: &DataConfig,
    norm: &Normalizer,
    path: &Path,
    text_f: &str,
    label_f: &str,
    group_f: &str,
) -> Result<RawRows> {
    let bytes = read_bytes(path)?;
    let bytes = strip_bom(&bytes);
    if let Some(line) = broken_quote(bytes) {
        return Err(Error::data(format!(
            "{} line {line}: a quoted field opens here and is not closed where the field ends (a broken quote); close it, and double every `\"` inside a quoted field as `\"\"`",
            path.display()
        )));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| {
            Error::data(format!(
                "{}: cannot read the header row: {e}",
                path.display()
            ))
        })?
        .clone();
    let col = |name: &str, what: &str, key: &str| -> Result<usize> {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::data(format!(
                "{}: {what} column `{name}` not found; the header has {}. Set `{key}` to one of them",
                path.display(),
                headers
                    .iter()
                    .map(|h| format!("`{h}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let ti = col(text_f, "text", "data.text_field")?;
    let li = col(label_f, "label", "data.label")?;
    let gi = headers.iter().position(|h| h == group_f);
    let mut stats = LoadStats::default();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, &e))?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        let labels: Vec<String> = rec.get(li).map(str::to_string).into_iter().collect();
        let group = gi.and_then(|g| rec.get(g)).map(str::to_string);
        push_row(
            cfg,
            norm,
            &mut stats,
            &mut rows,
            line,
            rec.get(ti).unwrap_or(""),
            &labels,
            group,
        );
    }
    Ok(RawRows { rows, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_broken_quote() {
        assert_eq!(broken_quote(b"a,b\n1,\"ok\"\n"), None);
        assert_eq!(broken_quote(b"a,b\n1,\"he said \"\"hi\"\"\"\n"), None);
        assert_eq!(broken_quote(b"a,b\n1,\"multi\nline\"\n"), None);
        assert_eq!(broken_quote(b"a,b\n1,ok\n2,\"broken\n3,x\n"), Some(3));
        // Closed by a later row's quote: the closing quote is followed by text.
        assert_eq!(broken_quote(b"a,b\n2,\"broken\n3,\"x\" y\n"), Some(2));
        // A stray quote inside an unquoted field is literal, as in RFC 4180 readers.
        assert_eq!(broken_quote(b"a,b\n1,5\" disk\n"), None);
    }
}

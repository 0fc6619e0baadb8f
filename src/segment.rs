//! Documents for `predict`: reading `.txt`, `.md`, `.html` and JSONL inputs into plain text, and
//! cutting the text into sentences in a way that survives CTI prose.
//!
//! Sentence boundaries come from the Unicode text-segmentation rules (UAX #29, through the
//! `unicode-segmentation` crate), which already keep together what CTI text is full of: IP
//! addresses and versions (`10.0.0.1`, `v2.4.1`: a full stop before a digit), domains and file
//! names (`evil.com`, `cmd.exe`, `C:\Windows\System32\CMD.EXE`: a full stop before a letter with
//! no space) and hashes. Two things UAX #29 gets wrong on such text are fixed here:
//!
//! - a break with no space after it (UAX #29 ends a sentence at `?` even inside
//!   `a.php?id=1`) is undone: in CTI text that is a URL, a path or a version, not a sentence end;
//! - a known abbreviation (`e.g.`, `i.e.`, `etc.`, `vs.`, `Fig.`, `No.`, …) followed by a capital
//!   ends a UAX #29 sentence; such a break is undone ([`ABBREVIATIONS`]);
//! - hard-wrapped lines are joined, while bullet and numbered list items, headings and
//!   blank-line paragraphs stay units of their own (a list item without a full stop is still a
//!   sentence).

use std::path::Path;

use unicode_segmentation::UnicodeSegmentation;

use crate::error::{Error, Result};

/// Abbreviations after which a full stop does not end a sentence (lower-cased, without the
/// final full stop).
pub const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "cf", "al", "fig", "figs", "no", "nos", "approx", "incl", "inc",
    "ltd", "corp", "co", "mr", "mrs", "ms", "dr", "prof", "st", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.k.a", "aka", "ver", "vol",
    "sec", "ref", "resp", "esp", "viz",
];

/// One input document: where it came from and its plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file name, or `file:line` / the record's `id` for a JSONL record.
    pub id: String,
    pub text: String,
}

/// Read a `predict` input: `.txt` and `.md` as they are, `.html`/`.htm` rendered to text
/// (html2text without decoration: each paragraph, heading or list item a unit of its own, links their text), `.jsonl` one document per line
/// from the string field `text_field` (the document id from an `id` or `doc_title` field, else
/// `file:line`).
///
/// Errors (exit 3) name the file and, for JSONL, the line: an unknown extension, an unreadable
/// file, a line that is not a JSON object or lacks the text field.
pub fn read_inputs(path: &Path, text_field: &str) -> Result<Vec<Document>> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bytes = std::fs::read(path).map_err(|e| Error::data(format!("cannot read {name}: {e}")))?;
    let utf8 = |bytes: &[u8], name: &str| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::data(format!("{name} is not UTF-8 text")))
    };
    match ext.as_str() {
        "txt" | "md" | "markdown" => Ok(vec![Document {
            text: utf8(&bytes, &name)?,
            id: name,
        }]),
        "html" | "htm" => {
            // No decoration (no `[link]` brackets, footnotes or bullets inside the sentences);
            // at this width nothing wraps, so each rendered line is a block element (a paragraph,
            // heading or list item) and becomes a unit of its own.
            let text = html2text::from_read_with_decorator(
                &bytes[..],
                100_000,
                html2text::render::TrivialDecorator::new(),
            )
            .map_err(|e| Error::data(format!("cannot read {name} as HTML: {e}")))?;
            let text = text.lines().collect::<Vec<_>>().join("\n\n");
            Ok(vec![Document { id: name, text }])
        }
        "jsonl" => {
            let mut docs = Vec::new();
            for (i, line) in utf8(&bytes, &name)?.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("{name}:{}", i + 1);
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| Error::data(format!("{at}: not a JSON object ({e})")))?;
                let text = v.get(text_field).and_then(|t| t.as_str()).ok_or_else(|| {
                    Error::data(format!(
                        "{at}: no string field `{text_field}` (choose the field with --text-field)"
                    ))
                })?;
                let id = ["id", "doc_title"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
                    .unwrap_or(at);
                docs.push(Document {
                    id,
                    text: text.to_string(),
                });
            }
            Ok(docs)
        }
        _ => Err(Error::data(format!(
            "{name}: unsupported input type `.{ext}`; predict reads .txt, .md, .html (.htm) and .jsonl"
        ))),
    }
}

/// A line that starts a unit of its own: a bullet (`-`, `*`, `+`, `•`), a numbered item (`1.`,
/// `2)`), a Markdown heading or a table row. Returns the line without its marker.
fn list_item(line: &str) -> Option<&str> {
    let t = line.trim_start();
    for m in ["- ", "* ", "+ ", "• ", "· ", "‣ ", "– "] {
        if let Some(rest) = t.strip_prefix(m) {
            return Some(rest);
        }
    }
    if t.starts_with('#') {
        return Some(t.trim_start_matches('#').trim_start());
    }
    if t.starts_with('|') {
        return Some(t);
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &t[digits..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(r);
        }
    }
    None
}

/// Blocks of text that no sentence crosses: paragraphs (blank-line separated) with their
/// hard-wrapped lines joined, and each list item, heading or table row on its own.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.trim().is_empty() {
            out.push(std::mem::take(cur));
        }
        cur.clear();
    };
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
        } else if let Some(item) = list_item(line) {
            flush(&mut cur, &mut out);
            cur.push_str(item.trim());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(line.trim());
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// True when `piece` (a UAX #29 sentence) ends in a known abbreviation, so the break after it is
/// not a sentence end.
fn ends_in_abbreviation(piece: &str) -> bool {
    let t = piece.trim_end();
    let Some(body) = t.strip_suffix('.') else {
        return false;
    };
    let word = body
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '"')
        .next()
        .unwrap_or("");
    let word = word.to_lowercase();
    ABBREVIATIONS.contains(&word.as_str())
}

/// The sentences of a text, trimmed, in order; empty pieces and pieces with no letter or digit
/// (a rule line, a lone bullet) are left out.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in blocks(text) {
        let mut pending = String::new();
        for piece in block.unicode_sentences() {
            pending.push_str(piece);
            // A break with no space after it is inside a token (`a.php?id=1`, `2.Next`).
            let glued = !piece.ends_with(char::is_whitespace);
            if !glued && !ends_in_abbreviation(&pending) {
                push_sentence(&mut out, &pending);
                pending.clear();
            }
        }
        push_sentence(&mut out, &pending);
    }
    out
}

fn push_sentence(out: &mut Vec<String>, s: &str) {
    let s = s.trim();
    if s.chars().any(char::is_alphanumeric) {
        out.push(s.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A passage in the style of the TRAM reports, with what trips naive splitters.
    const CTI: &str = "The actor used Mimikatz (v2.2.0) to dump LSASS memory, e.g. with \
sekurlsa::logonpasswords. It then connected to 185.141.63.120 over port 443 and to \
update.microsoft-cdn.com for tasking.\n\
The dropper wrote C:\\Windows\\Temp\\svchost.exe and ran it via cmd.exe /c start. Its SHA256 \
is 3f786850e387550fdab836ed7e6dc881de23001b4c2b2b4a6c2ad8b7c3f9b1e4.\n\
\n\
Observed techniques:\n\
- Spearphishing attachments with macro-enabled .docm files\n\
- PowerShell download cradles, i.e. IEX (New-Object Net.WebClient).DownloadString\n\
1. Persistence through a Run key\n\
\n\
Fig. 3 shows the C2 protocol. The beacon, cf. Section 4.2, sleeps 60 s.";

    #[test]
    fn cti_text_is_cut_where_sentences_end_and_nowhere_else() {
        let got = sentences(CTI);
        assert_eq!(
            got,
            vec![
                "The actor used Mimikatz (v2.2.0) to dump LSASS memory, e.g. with sekurlsa::logonpasswords.",
                "It then connected to 185.141.63.120 over port 443 and to update.microsoft-cdn.com for tasking.",
                "The dropper wrote C:\\Windows\\Temp\\svchost.exe and ran it via cmd.exe /c start.",
                "Its SHA256 is 3f786850e387550fdab836ed7e6dc881de23001b4c2b2b4a6c2ad8b7c3f9b1e4.",
                "Observed techniques:",
                "Spearphishing attachments with macro-enabled .docm files",
                "PowerShell download cradles, i.e. IEX (New-Object Net.WebClient).DownloadString",
                "Persistence through a Run key",
                "Fig. 3 shows the C2 protocol.",
                "The beacon, cf. Section 4.2, sleeps 60 s.",
            ]
        );
    }

    #[test]
    fn an_abbreviation_before_a_capital_does_not_end_a_sentence() {
        assert_eq!(
            sentences("Tools, e.g. Cobalt Strike, were staged. APT29 (a.k.a. Cozy Bear) did it."),
            vec![
                "Tools, e.g. Cobalt Strike, were staged.",
                "APT29 (a.k.a. Cozy Bear) did it."
            ]
        );
    }

    #[test]
    fn hard_wrapped_lines_are_joined_and_paragraphs_are_not() {
        assert_eq!(
            sentences("The loader decrypts\nits payload with RC4\n\nNext paragraph here."),
            vec![
                "The loader decrypts its payload with RC4",
                "Next paragraph here."
            ]
        );
    }

    #[test]
    fn defanged_indicators_and_urls_stay_whole() {
        assert_eq!(
            sentences("It beacons to hxxp://evil[.]com/a.php?id=1. Then 10.0.0.1:8080 is used."),
            vec![
                "It beacons to hxxp://evil[.]com/a.php?id=1.",
                "Then 10.0.0.1:8080 is used."
            ]
        );
    }

    #[test]
    fn html_lists_and_paragraphs_become_sentences() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.html");
        std::fs::write(
            &p,
            "<html><body><h1>Report</h1><p>The implant uses <a href=\"https://x.test/r\">rundll32.exe</a> to load its DLL. It \
             persists.</p><ul><li>Scheduled task</li><li>Registry Run key</li></ul></body></html>",
        )
        .unwrap();
        let docs = read_inputs(&p, "text").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            sentences(&docs[0].text),
            vec![
                "Report",
                "The implant uses rundll32.exe to load its DLL.",
                "It persists.",
                "Scheduled task",
                "Registry Run key"
            ]
        );
    }

    #[test]
    fn jsonl_records_are_documents_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"body\":\"One. Two.\"}\n\n{\"body\":\"Three.\"}\n",
        )
        .unwrap();
        let docs = read_inputs(&p, "body").unwrap();
        assert_eq!(docs[0].id, "a");
        assert_eq!(docs[1].id, format!("{}:3", p.display()));
        assert_eq!(docs[1].text, "Three.");
        let e = read_inputs(&p, "text").unwrap_err();
        assert!(
            e.message.contains(":1: no string field `text`"),
            "{}",
            e.message
        );
        std::fs::write(&p, "not json\n").unwrap();
        assert!(
            read_inputs(&p, "body")
                .unwrap_err()
                .message
                .contains(":1: not a JSON object")
        );
    }

    #[test]
    fn an_unknown_extension_is_rejected_naming_the_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.pdf");
        std::fs::write(&p, "x").unwrap();
        let e = read_inputs(&p, "text").unwrap_err();
        assert!(
            e.message.contains("unsupported input type `.pdf`"),
            "{}",
            e.message
        );
        assert_eq!(e.exit_code(), 3);
    }
}

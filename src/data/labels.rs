//! Technique IDs as ATT&CK writes them, before anything else in the load stage.
//!
//! Publishers and users write one technique several ways: `t1059.001`, ` T1059.001 `,
//! `["T1059.001"]` (a JSON list, or a string that looks like one), the revoked `T1574.002` for
//! today's `T1574.001`, and several IDs in one cell (`T1059.001;T1105`). Every loader hands the
//! values it read to [`Normalizer::row`], which returns one label per technique in ATT&CK's own
//! spelling, mapped through the catalog's `revoked-by` relationships. Only values that look like
//! technique IDs (`T` and four digits, optionally `.` and three digits) are touched: any other
//! label (a `none` class, a user's own names) is only trimmed.

use super::Catalog;

/// Whether `s` is a technique ID exactly as ATT&CK writes it: `T1059` or `T1059.001`.
pub fn is_technique_id(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..5]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..9]),
        _ => false,
    }
}

/// ATT&CK's spelling of `s` if it is a technique ID once trimmed and upper-cased
/// (`" t1059.001 "` → `T1059.001`); `None` for anything else.
pub fn technique_id(s: &str) -> Option<String> {
    let id = s.trim().to_ascii_uppercase();
    is_technique_id(&id).then_some(id)
}

/// The labels one written value holds. A value that is a technique ID in any spelling gives that
/// ID; a list written in a string (`["T1059.001"]`, `['T1059.001', 'T1105']`), a quoted ID, or
/// IDs joined by `;`, `,`, `|` or spaces give each ID, when every part is an ID; anything else is
/// one label, trimmed. An empty value (or an empty list) gives none.
pub fn split_value(raw: &str) -> Vec<String> {
    let t = raw.trim();
    if t.is_empty() {
        return Vec::new();
    }
    if let Some(id) = technique_id(t) {
        return vec![id];
    }
    let (inner, bracketed) = match t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => (inner, true),
        None => (t, false),
    };
    let parts: Vec<&str> = inner
        .split(|c: char| matches!(c, ';' | ',' | '|') || c.is_whitespace())
        .map(|p| p.trim_matches(|c: char| c == '"' || c == '\''))
        .filter(|p| !p.is_empty())
        .collect();
    if bracketed && parts.is_empty() {
        return Vec::new();
    }
    if !parts.is_empty() && parts.iter().all(|p| technique_id(p).is_some()) {
        return parts.iter().filter_map(|p| technique_id(p)).collect();
    }
    vec![t.to_string()]
}

/// One label of a row, and how it came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label the row gets: ATT&CK's spelling, mapped through `revoked-by`.
    pub id: String,
    /// The value as the file writes it (a whole cell, or one item of a JSON list).
    pub written: String,
    /// ATT&CK's spelling before the revoked-by mapping.
    pub spelled: String,
    /// Whether it is a technique ID (anything else is left as written, trimmed).
    pub is_technique: bool,
}

impl Label {
    /// The spelling changed: a technique ID written with other case, spaces or brackets, as the
    /// only ID of its value.
    pub fn respelled(&self) -> bool {
        self.is_technique && self.spelled != self.written
    }
    /// The ID was revoked and is now `id`.
    pub fn mapped(&self) -> bool {
        self.id != self.spelled
    }
}

/// Respells and maps labels; with no catalog, revoked IDs stay as written (respelled).
#[derive(Debug, Clone, Copy, Default)]
pub struct Normalizer<'a> {
    catalog: Option<&'a Catalog>,
}

impl<'a> Normalizer<'a> {
    /// A normalizer that maps revoked IDs through `catalog` when there is one.
    pub fn new(catalog: Option<&'a Catalog>) -> Self {
        Self { catalog }
    }

    /// The technique that stands today for an ID in ATT&CK's spelling.
    pub fn map(&self, id: &str) -> String {
        match self.catalog {
            Some(c) => c.resolve(id),
            None => id.to_string(),
        }
    }

    /// The labels of one row from the values a loader read (one string cell, or the items of a
    /// JSON list): each value split ([`split_value`]), respelled and mapped; a technique reached
    /// twice (`["T1574.002", "T1574.001"]`) counts once, first place kept.
    pub fn row(&self, values: &[String]) -> Vec<Label> {
        let mut out: Vec<Label> = Vec::new();
        for v in values {
            let parts = split_value(v);
            let single = parts.len() == 1;
            for p in parts {
                let is_technique = is_technique_id(&p);
                let id = if is_technique {
                    self.map(&p)
                } else {
                    p.clone()
                };
                if out.iter().any(|l| l.id == id) {
                    continue;
                }
                out.push(Label {
                    id,
                    // A part of a several-ID value has no spelling of its own to report.
                    written: if single { v.clone() } else { p.clone() },
                    spelled: p,
                    is_technique,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &str) -> Vec<String> {
        split_value(v)
    }

    #[test]
    fn technique_ids_in_every_spelling() {
        for s in [
            "T1059.001",
            "t1059.001",
            " T1059.001 ",
            "\tt1059.001\n",
            "[\"T1059.001\"]",
            "['t1059.001']",
            "[T1059.001]",
            " [ \"T1059.001\" ] ",
            "\"T1059.001\"",
            "T1059.001;",
        ] {
            assert_eq!(ids(s), vec!["T1059.001"], "{s:?}");
        }
        assert_eq!(ids("t1105"), vec!["T1105"]);
        assert!(is_technique_id("T1105") && is_technique_id("T1059.001"));
        assert!(
            !is_technique_id("t1105") && !is_technique_id("T105") && !is_technique_id("T1059.01")
        );
    }

    #[test]
    fn several_ids_in_one_value_are_split() {
        assert_eq!(ids("T1059.001;T1105"), vec!["T1059.001", "T1105"]);
        assert_eq!(ids("T1105, T1027"), vec!["T1105", "T1027"]);
        assert_eq!(ids("t1105|T1027"), vec!["T1105", "T1027"]);
        assert_eq!(ids("T1105 T1027"), vec!["T1105", "T1027"]);
        assert_eq!(ids("[\"T1105\", \"t1027\"]"), vec!["T1105", "T1027"]);
        assert_eq!(ids("[]"), Vec::<String>::new());
        assert_eq!(ids("   "), Vec::<String>::new());
    }

    #[test]
    fn labels_that_are_not_technique_ids_are_only_trimmed() {
        assert_eq!(ids("none"), vec!["none"]);
        assert_eq!(ids(" benign "), vec!["benign"]);
        assert_eq!(ids("Command, Scripting"), vec!["Command, Scripting"]);
        assert_eq!(ids("T1059.001; phishing"), vec!["T1059.001; phishing"]);
        assert_eq!(ids("[\"benign\"]"), vec!["[\"benign\"]"]);
        assert_eq!(ids("TA0002"), vec!["TA0002"]);
        assert_eq!(ids("T1"), vec!["T1"]);
    }

    #[test]
    fn a_row_is_respelled_mapped_and_deduplicated() {
        let objs: Vec<serde_json::Value> = serde_json::from_str(
            r#"[
            {"type":"attack-pattern","id":"a","name":"Old","revoked":true,"external_references":[{"source_name":"mitre-attack","external_id":"T1574.002"}]},
            {"type":"attack-pattern","id":"b","name":"New","external_references":[{"source_name":"mitre-attack","external_id":"T1574.001"}]},
            {"type":"relationship","relationship_type":"revoked-by","source_ref":"a","target_ref":"b"}
        ]"#,
        )
        .unwrap();
        let cat = Catalog::from_objects(&objs).unwrap();
        let n = Normalizer::new(Some(&cat));
        let row = n.row(&["t1574.002".to_string()]);
        assert_eq!(
            row,
            vec![Label {
                id: "T1574.001".into(),
                written: "t1574.002".into(),
                spelled: "T1574.002".into(),
                is_technique: true,
            }]
        );
        assert!(row[0].respelled() && row[0].mapped());
        // Two spellings of one technique are one label.
        let row = n.row(&["T1574.002".into(), " T1574.001".into()]);
        assert_eq!(row.len(), 1);
        assert!(!row[0].respelled() && row[0].mapped());
        // Without a catalog nothing is mapped, only respelled.
        let row = Normalizer::new(None).row(&[" t1574.002 ".into()]);
        assert_eq!(row[0].id, "T1574.002");
        assert!(row[0].respelled() && !row[0].mapped());
        // Parts of a several-ID value are not respellings of the value.
        let row = n.row(&["t1059.001;T1105".into()]);
        assert_eq!(
            row.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            ["T1059.001", "T1105"]
        );
        assert!(row.iter().all(|l| !l.respelled()));
        // Other labels stay as they are.
        let row = n.row(&[" none ".into()]);
        assert_eq!(row[0].id, "none");
        assert!(!row[0].is_technique && !row[0].respelled());
    }
}

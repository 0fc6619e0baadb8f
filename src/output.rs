//! Tabular command output in the form the user asks for (`--format table|csv|json`), and
//! writing to stdout that ends quietly when the reader has gone (`synthcti plan … | head -1`).

use std::io::Write;

/// How a command prints a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array of objects, one per row, keyed by column name.
    Json,
}

/// A table: column names and rows of cells (each row as long as `columns`).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => {
                let mut b = tabled::builder::Builder::default();
                b.push_record(self.columns.clone());
                for r in &self.rows {
                    b.push_record(r.clone());
                }
                let mut t = b.build();
                t.with(tabled::settings::Style::blank());
                format!("{t}\n")
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(&self.columns).expect("csv to memory");
                for r in &self.rows {
                    w.write_record(r).expect("csv to memory");
                }
                String::from_utf8(w.into_inner().expect("csv to memory")).expect("utf8")
            }
            Format::Json => {
                let rows: Vec<serde_json::Map<String, serde_json::Value>> = self
                    .rows
                    .iter()
                    .map(|r| {
                        self.columns
                            .iter()
                            .cloned()
                            .zip(r.iter().map(|v| serde_json::Value::String(v.clone())))
                            .collect()
                    })
                    .collect();
                let mut s = serde_json::to_string_pretty(&rows).expect("json");
                s.push('\n');
                s
            }
        }
    }
}

/// Write `text` to stdout. A closed pipe (the reader exited, as `head` does) ends the process
/// quietly with status 0, as Unix tools do, instead of a panic; other write errors are returned.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Table {
        let mut t = Table::new(&["id", "note"]);
        t.rows.push(vec!["a".into(), "x, y".into()]);
        t
    }

    #[test]
    fn csv_quotes_and_json_keys_by_column() {
        assert_eq!(t().render(Format::Csv), "id,note\na,\"x, y\"\n");
        let v: serde_json::Value = serde_json::from_str(&t().render(Format::Json)).unwrap();
        assert_eq!(v, serde_json::json!([{"id": "a", "note": "x, y"}]));
        let table = t().render(Format::Table);
        assert!(table.lines().next().unwrap().contains("id"), "{table}");
        assert!(table.contains("x, y"), "{table}");
    }
}

//! Relative paths in a manifest resolve against the manifest's own folder.
//!
//! A manifest is read as the file it is, wherever the command runs: `data.file`, `data.dir`,
//! every `[[classifier]]` `model`, a local `[[generator]]` `model`, `augment.encoder`,
//! `augment.templates_dir`, a template given as a path (`augment.template = "my.j2"`) and each
//! `[[evaluate]]` `file` are joined to the manifest's folder before anything else reads them (as Cargo reads `path =` in a
//! `Cargo.toml`). Values given by `--set` or a `SYNTHCTI_*` variable are not: they resolve
//! against the current folder, as any path on a command line does. `data.attack` stays relative
//! to the data folder, where the publishers' files live; an `[[evaluate]]` `file` written
//! `data:PATH` does too ([`DATA_PREFIX`]), so a manifest can name a publisher's file wherever the
//! data folder is.
//!
//! A model the manifest leaves out (the default `models/all-MiniLM-L6-v2`, or the default
//! SmolLM2 GGUF) is looked for in `models/` of the manifest's folder and then of each folder
//! above it, the first that exists winning; so `experiments/*.toml` finds the checkout's
//! `models/` from any current folder. Paths that exist are written canonically (absolute,
//! without `..`), so cell names — which hash a classifier's settings — do not depend on the
//! folder a command runs in. Cache keys never depended on it: models, templates and data files
//! enter a key by their content's hash.

use std::path::{Path, PathBuf};

use crate::ml::config::{ClassifierConfig, KINDS};

/// The prefix of an `[[evaluate]]` `file` relative to the data folder (`data:cti-to-mitre/x.csv`);
/// left as written by [`resolve`] and joined to the data folder by
/// [`crate::external::EvalSetConfig::path`].
pub const DATA_PREFIX: &str = "data:";

/// `rel` joined to `base` (unchanged when absolute), canonical when it exists.
pub fn against(base: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    joined.canonicalize().unwrap_or(joined)
}

/// The folder a manifest's relative paths resolve against: the manifest's own folder (`.` for a
/// bare file name).
pub fn manifest_base(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A default model path (`models/…`, relative) found from `base`: in `base` or the first folder
/// above it that has it; `base`'s own when none has (so a "not found" names the manifest's
/// folder).
pub fn default_model(base: &Path, rel: &str) -> PathBuf {
    let start = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    start
        .ancestors()
        .map(|a| a.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| start.join(rel))
}

fn set_str(t: &mut toml::Table, key: &str, base: &Path) {
    if let Some(toml::Value::String(s)) = t.get(key)
        && !s.is_empty()
    {
        let p = against(base, s);
        t.insert(key.into(), toml::Value::String(p.display().to_string()));
    }
}

/// A string or a list of strings (a grid), each resolved.
fn set_str_or_list(t: &mut toml::Table, key: &str, base: &Path, is_path: impl Fn(&str) -> bool) {
    let fix = |s: &str| {
        if is_path(s) {
            against(base, s).display().to_string()
        } else {
            s.to_string()
        }
    };
    match t.get_mut(key) {
        Some(toml::Value::String(s)) => *s = fix(s),
        Some(toml::Value::Array(a)) => {
            for v in a.iter_mut() {
                if let toml::Value::String(s) = v {
                    *s = fix(s);
                }
            }
        }
        _ => {}
    }
}

/// Whether a template value names a file (as [`crate::prompt::PromptTemplate::resolve`] reads it).
fn template_is_path(s: &str) -> bool {
    s.ends_with(".j2") || s.contains('/') || s.contains('\\')
}

/// Resolve the relative paths of a manifest's own table against `base` (its folder), and put the
/// default model paths found from `base` where the manifest leaves them out. Runs before any
/// override is layered on, so overrides keep their values as written.
pub fn resolve(table: &mut toml::Table, base: &Path) {
    if let Some(toml::Value::Table(d)) = table.get_mut("data") {
        set_str(d, "file", base);
        set_str(d, "dir", base);
    }
    let augment = table
        .entry("augment")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(a) = augment {
        if a.contains_key("templates_dir") {
            set_str(a, "templates_dir", base);
        } else {
            a.insert(
                "templates_dir".into(),
                toml::Value::String(base.join("templates").display().to_string()),
            );
        }
        set_str_or_list(a, "template", base, template_is_path);
        if a.contains_key("encoder") {
            set_str(a, "encoder", base);
        } else {
            let p = default_model(base, crate::ml::params::DEFAULT_ENCODER);
            a.insert(
                "encoder".into(),
                toml::Value::String(p.display().to_string()),
            );
        }
    }
    if let Some(toml::Value::Array(sets)) = table.get_mut("evaluate") {
        for e in sets.iter_mut() {
            let toml::Value::Table(e) = e else { continue };
            if e.get("file")
                .and_then(|f| f.as_str())
                .is_some_and(|f| !f.starts_with(DATA_PREFIX))
            {
                set_str(e, "file", base);
            }
        }
    }
    if let Some(toml::Value::Array(cs)) = table.get_mut("classifier") {
        for c in cs.iter_mut() {
            let toml::Value::Table(c) = c else { continue };
            if c.contains_key("model") {
                // `owner/name` that is no folder here is a Hugging Face id (see `hub`).
                set_str_or_list(c, "model", base, |s| {
                    !crate::hub::is_hub_id(s) || base.join(s).exists()
                });
                continue;
            }
            let kind = c.get("kind").and_then(|k| k.as_str()).unwrap_or("fasttext");
            let has_model = KINDS.iter().any(|k| {
                k.as_str() == kind
                    && ClassifierConfig::field_names(*k)
                        .iter()
                        .any(|f| f == "model")
            });
            if has_model {
                let p = default_model(base, crate::ml::params::DEFAULT_ENCODER);
                c.insert("model".into(), toml::Value::String(p.display().to_string()));
            }
        }
    }
    if !table.contains_key("generator") {
        // The default generator (SmolLM2, local), with its model found from `base`.
        table.insert(
            "generator".into(),
            toml::Value::Array(vec![toml::Value::Table(toml::Table::new())]),
        );
    }
    if let Some(toml::Value::Array(gs)) = table.get_mut("generator") {
        for g in gs.iter_mut() {
            let toml::Value::Table(g) = g else { continue };
            let provider = g
                .get("provider")
                .and_then(|p| p.as_str())
                .unwrap_or("local");
            if provider != "local" {
                continue;
            }
            match g.get("model").and_then(|m| m.as_str()) {
                Some(m) if m.starts_with("blake3:") => {}
                Some(_) => set_str(g, "model", base),
                None => {
                    let p = default_model(base, crate::llm::config::DEFAULT_GGUF);
                    g.insert("model".into(), toml::Value::String(p.display().to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_manifest_folder_and_defaults_are_found_above_it() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("models/all-MiniLM-L6-v2")).unwrap();
        std::fs::create_dir_all(root.join("exp/sub")).unwrap();
        std::fs::write(root.join("exp/mine.csv"), "text,label\n").unwrap();
        let base = root.join("exp");
        let mut t: toml::Table = r#"
            [data]
            kind = "csv"
            file = "mine.csv"
            [augment]
            template = ["zero-shot", "sub/my.j2"]
            [[classifier]]
            kind = "encoder-frozen"
            [[classifier]]
            kind = "transformer"
            model = ["../models/all-MiniLM-L6-v2", "/abs/model"]
            [[classifier]]
            kind = "fasttext"
            [[generator]]
            name = "remote"
            provider = "openai"
            model = "gpt-4o-mini"
            [[generator]]
            name = "mine"
            model = "sub/x.gguf"
            [[evaluate]]
            name = "here"
            file = "mine.csv"
            [[evaluate]]
            name = "publisher"
            file = "data:cti-to-mitre/dataset_tram.csv"
            [[evaluate]]
            name = "abs"
            file = "/abs/set.csv"
        "#
        .parse()
        .unwrap();
        resolve(&mut t, &base);
        let s = |v: &toml::Value| v.as_str().unwrap().to_string();
        let minilm = root.join("models/all-MiniLM-L6-v2").display().to_string();
        assert_eq!(
            s(&t["data"]["file"]),
            root.join("exp/mine.csv").display().to_string()
        );
        assert_eq!(
            s(&t["augment"]["templates_dir"]),
            base.join("templates").display().to_string()
        );
        assert_eq!(s(&t["augment"]["template"][0]), "zero-shot");
        assert_eq!(
            s(&t["augment"]["template"][1]),
            base.join("sub/my.j2").display().to_string()
        );
        assert_eq!(s(&t["augment"]["encoder"]), minilm);
        assert_eq!(s(&t["classifier"][0]["model"]), minilm);
        assert_eq!(s(&t["classifier"][1]["model"][0]), minilm, "canonical");
        assert_eq!(s(&t["classifier"][1]["model"][1]), "/abs/model");
        assert!(
            t["classifier"][2].get("model").is_none(),
            "fastText has none"
        );
        assert_eq!(s(&t["generator"][0]["model"]), "gpt-4o-mini", "a model id");
        assert_eq!(
            s(&t["generator"][1]["model"]),
            base.join("sub/x.gguf").display().to_string()
        );
        assert_eq!(
            s(&t["evaluate"][0]["file"]),
            root.join("exp/mine.csv").display().to_string()
        );
        assert_eq!(
            s(&t["evaluate"][1]["file"]),
            "data:cti-to-mitre/dataset_tram.csv",
            "left for the data folder"
        );
        assert_eq!(s(&t["evaluate"][2]["file"]), "/abs/set.csv");
    }
}

//! The prompt stage: minijinja templates from `templates/`, checked before any call.
//!
//! A template may use only the variables in [`VARIABLES`]; one that names anything else fails at
//! manifest validation, before a single LLM call. Rendering is strict as well: an undefined value
//! is an error, never an empty string.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::blake3_hex;

/// The variables a template can use, with what they hold.
pub const VARIABLES: &[(&str, &str)] = &[
    ("technique_id", "ATT&CK ID, e.g. T1059.001"),
    ("technique_name", "ATT&CK name, e.g. PowerShell"),
    (
        "description",
        "first paragraph of the ATT&CK description, citations removed",
    ),
    (
        "full_description",
        "whole ATT&CK description, citations removed",
    ),
    ("tactics", "list of tactic names, e.g. [\"execution\"]"),
    (
        "examples",
        "list of representative real train sentences of the cluster (empty for k = 0 prompts)",
    ),
    ("n", "how many sentences this call should write"),
    ("cluster", "index of the cluster, from 0"),
    ("clusters", "number of clusters of the technique"),
];

/// Globals minijinja itself provides, allowed in templates.
const BUILTIN_GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "loop"];

/// The templates shipped with synthcti; a file of the same name in the templates folder wins.
const SHIPPED: &[(&str, &str)] = &[
    (
        "cluster-guided",
        include_str!("../templates/cluster-guided.j2"),
    ),
    ("zero-shot", include_str!("../templates/zero-shot.j2")),
];

/// A template that parsed and uses only known variables.
#[derive(Debug, Clone, Serialize)]
pub struct PromptTemplate {
    /// As the manifest names it.
    pub name: String,
    /// Where the text came from: a file path, or `shipped`.
    pub origin: String,
    pub text: String,
    /// BLAKE3 of the text: what the generate stage's key covers.
    pub hash: String,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Serialize)]
pub struct PromptVars {
    pub technique_id: String,
    pub technique_name: String,
    pub description: String,
    pub full_description: String,
    pub tactics: Vec<String>,
    pub examples: Vec<String>,
    pub n: usize,
    pub cluster: usize,
    pub clusters: usize,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .build()
            .expect("valid syntax config"),
    );
    env
}

impl PromptTemplate {
    /// Resolve `name` (a name in `dir` as `<name>.j2`, a shipped template, or a path to a `.j2`
    /// file) and check it.
    pub fn resolve(name: &str, dir: &Path) -> Result<Self> {
        let is_path = name.ends_with(".j2") || name.contains('/') || name.contains('\\');
        let (origin, text) = if is_path {
            let p = PathBuf::from(name);
            let text = std::fs::read_to_string(&p).map_err(|e| {
                Error::config(format!(
                    "template {}: cannot read it ({e}); give a path to a .j2 file or one of the names {}",
                    p.display(),
                    shipped_names()
                ))
            })?;
            (p.display().to_string(), text)
        } else {
            let p = dir.join(format!("{name}.j2"));
            if p.is_file() {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    Error::config(format!("template {}: cannot read it: {e}", p.display()))
                })?;
                (p.display().to_string(), text)
            } else if let Some((_, t)) = SHIPPED.iter().find(|(n, _)| *n == name) {
                ("shipped".to_string(), t.to_string())
            } else {
                return Err(Error::config(format!(
                    "template `{name}` not found: no {} and no shipped template of that name; shipped: {}",
                    p.display(),
                    shipped_names()
                )));
            }
        };
        let t = Self {
            name: name.to_string(),
            hash: blake3_hex(text.as_bytes()),
            origin,
            text,
        };
        t.check()?;
        Ok(t)
    }

    /// Parse the template and compare the variables it reads with [`VARIABLES`].
    pub fn check(&self) -> Result<()> {
        let env = env();
        let tmpl = env.template_from_str(&self.text).map_err(|e| {
            Error::config(format!(
                "template `{}` ({}) does not parse: {e}",
                self.name, self.origin
            ))
        })?;
        let known: BTreeSet<&str> = VARIABLES
            .iter()
            .map(|(n, _)| *n)
            .chain(BUILTIN_GLOBALS.iter().copied())
            .collect();
        let mut unknown: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !known.contains(v.as_str()))
            .collect();
        unknown.sort();
        if !unknown.is_empty() {
            return Err(Error::config(format!(
                "template `{}` ({}) uses unknown variable{} {}; the variables are: {}",
                self.name,
                self.origin,
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                VARIABLES
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    pub fn render(&self, vars: &PromptVars) -> Result<String> {
        let env = env();
        let tmpl = env
            .template_from_str(&self.text)
            .map_err(|e| Error::config(format!("template `{}`: {e}", self.name)))?;
        let out = tmpl
            .render(minijinja::value::Value::from(minijinja::value::Serde(vars)))
            .map_err(|e| {
                Error::config(format!(
                    "template `{}` ({}) failed to render for {}: {e}",
                    self.name, self.origin, vars.technique_id
                ))
            })?;
        Ok(out.trim().to_string())
    }
}

fn shipped_names() -> String {
    SHIPPED
        .iter()
        .map(|(n, _)| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a paragraph of an ATT&CK description is a deprecation notice (`**This technique has
/// been deprecated and should no longer be used.**`, `This technique is deprecated due to …`):
/// it says nothing about what adversaries do, so it never reaches a prompt.
pub fn is_deprecation_notice(paragraph: &str) -> bool {
    let t = paragraph
        .trim()
        .trim_matches(|c: char| c == '*' || c == '_')
        .trim()
        .to_lowercase();
    let first_sentence = t.split(". ").next().unwrap_or_default();
    ["this technique", "this sub-technique", "this subtechnique"]
        .iter()
        .any(|p| t.starts_with(p))
        && [
            "been deprecated",
            "is deprecated",
            "was deprecated",
            "is now deprecated",
        ]
        .iter()
        .any(|p| first_sentence.contains(p))
}

/// ATT&CK descriptions carry `(Citation: …)` markers and Markdown links; prompts get plain text.
/// Deprecation notices are left out, so a description that is only a notice is no description
/// (empty strings). Returns (first paragraph, whole text).
pub fn clean_description(raw: &str) -> (String, String) {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find("(Citation:") {
        out.push_str(&rest[..i]);
        match rest[i..].find(')') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // [text](url) → text
    let mut plain = String::with_capacity(out.len());
    let mut s = out.as_str();
    while let Some(i) = s.find('[') {
        let after = &s[i + 1..];
        match (after.find("]("), after.find(']')) {
            (Some(j), Some(k)) if j == k => {
                let link_rest = &after[j + 2..];
                if let Some(close) = link_rest.find(')') {
                    plain.push_str(&s[..i]);
                    plain.push_str(&after[..j]);
                    s = &link_rest[close + 1..];
                    continue;
                }
                plain.push_str(&s[..=i]);
                s = after;
            }
            _ => {
                plain.push_str(&s[..=i]);
                s = after;
            }
        }
    }
    plain.push_str(s);
    let tidy = |t: &str| {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" .", ".")
            .replace(" ,", ",")
    };
    let kept: Vec<&str> = plain
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty() && !is_deprecation_notice(p))
        .collect();
    let first = kept.first().copied().unwrap_or("");
    (tidy(first), tidy(&kept.join("\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> PromptVars {
        PromptVars {
            technique_id: "T1059.001".into(),
            technique_name: "PowerShell".into(),
            description: "Adversaries may abuse PowerShell.".into(),
            full_description: "Adversaries may abuse PowerShell. More.".into(),
            tactics: vec!["execution".into()],
            examples: vec!["APT29 used PowerShell to run code.".into()],
            n: 4,
            cluster: 0,
            clusters: 2,
        }
    }

    #[test]
    fn shipped_templates_check_and_render() {
        let dir = tempfile::tempdir().unwrap();
        let t = PromptTemplate::resolve("cluster-guided", dir.path()).unwrap();
        assert_eq!(t.origin, "shipped");
        let out = t.render(&vars()).unwrap();
        // The technique by name and description, never by ID or framework: a model shown them
        // writes them into its sentences.
        assert!(
            out.contains(
                "A threat report describes how adversaries use PowerShell for execution. Adversaries may abuse PowerShell."
            ),
            "{out}"
        );
        assert!(!out.contains("T1059"), "{out}");
        assert!(!out.contains("MITRE"), "{out}");
        assert!(
            out.contains("- APT29 used PowerShell to run code."),
            "{out}"
        );
        assert!(out.contains("a numbered list of 4 new sentences"), "{out}");
        let z = PromptTemplate::resolve("zero-shot", dir.path()).unwrap();
        let out = z.render(&vars()).unwrap();
        assert!(!out.contains("APT29"), "zero-shot shows no examples: {out}");
        assert!(!out.contains("T1059") && !out.contains("MITRE"), "{out}");
    }

    #[test]
    fn unknown_variable_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.j2"),
            "Write {{ n }} about {{ technique_nme }}",
        )
        .unwrap();
        let err = PromptTemplate::resolve("bad", dir.path()).unwrap_err();
        assert!(err.message.contains("`technique_nme`"), "{}", err.message);
        assert!(err.message.contains("`technique_name`"), "{}", err.message);
    }

    #[test]
    fn loop_variables_are_not_unknown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ok.j2"),
            "{% for e in examples %}{{ loop.index }}. {{ e }}{% endfor %}{% set x = n %}{{ x }}",
        )
        .unwrap();
        PromptTemplate::resolve("ok", dir.path()).unwrap();
    }

    #[test]
    fn a_file_in_the_folder_overrides_the_shipped_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zero-shot.j2"), "Only {{ n }}.").unwrap();
        let t = PromptTemplate::resolve("zero-shot", dir.path()).unwrap();
        assert_eq!(t.render(&vars()).unwrap(), "Only 4.");
        assert!(PromptTemplate::resolve("nope", dir.path()).is_err());
    }

    #[test]
    fn deprecation_notices_never_reach_a_prompt() {
        // T1064 in ATT&CK v18.1: a notice, then the old description.
        let (first, full) = clean_description(
            "**This technique has been deprecated. Please use [Command and Scripting Interpreter](https://attack.mitre.org/techniques/T1059) where appropriate.**\n\nAdversaries may use scripts to aid in operations.(Citation: X)",
        );
        assert_eq!(first, "Adversaries may use scripts to aid in operations.");
        assert_eq!(full, "Adversaries may use scripts to aid in operations.");
        // T1053.004: the notice is plain text, several sentences long.
        let (first, _) = clean_description(
            "This technique is deprecated due to the inaccurate usage. The report cited did not provide technical detail.\n\nAdversaries may abuse the Launchd daemon.",
        );
        assert_eq!(first, "Adversaries may abuse the Launchd daemon.");
        // Only a notice: no description at all.
        assert_eq!(
            clean_description(
                "**This technique has been deprecated and should no longer be used.**"
            ),
            (String::new(), String::new())
        );
        // A description that mentions deprecation in passing is a description.
        assert!(!is_deprecation_notice(
            "Adversaries may use deprecated protocols such as SSLv3."
        ));
        assert!(!is_deprecation_notice(
            "This technique covers deprecated APIs. Adversaries call them."
        ));
    }

    #[test]
    fn citations_and_links_are_removed() {
        let (first, full) = clean_description(
            "Adversaries may abuse [PowerShell](https://attack.mitre.org/techniques/T1059/001) commands.(Citation: TechNet PowerShell)\n\nSecond paragraph.(Citation: X)",
        );
        assert_eq!(first, "Adversaries may abuse PowerShell commands.");
        assert_eq!(
            full,
            "Adversaries may abuse PowerShell commands. Second paragraph."
        );
    }
}

//! Snapshots (insta) of what a user reads: `synthcti plan` for a small manifest — its cells and
//! every stage's cache key, so a change of any key shows in review — and the `summary.md` a run
//! of it writes. Paths of the temporary sandbox and training times are masked.
//!
//! Update after a deliberate change: `INSTA_UPDATE=always cargo test --test snapshots` (or
//! `cargo insta review`), then read the diff.

mod common;
use common::*;

/// Two fastText cells (dim 8 and 16) over 40 rows of each of four TRAM classes.
fn small() -> (Sandbox, std::path::PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = [8, 16]\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n",
    );
    (s, m)
}

fn settings(s: &Sandbox) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let root = s.dir.path().canonicalize().unwrap();
    settings.add_filter(&regex_escape(&root.display().to_string()), "[SANDBOX]");
    settings.add_filter(
        &regex_escape(&s.dir.path().display().to_string()),
        "[SANDBOX]",
    );
    // Training time: a measurement, not a result.
    settings.add_filter(r"\| \d+\.\d\d +\|\n", "| [s]     |\n");
    // Wall times of the cost section; the digest of a manifest that holds the sandbox's paths.
    settings.add_filter(r"\d+\.\d s\b", "[s]");
    settings.add_filter(
        r"sha256 [0-9a-f]{16}…; synthcti",
        "sha256 [DIGEST]…; synthcti",
    );
    settings
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn plan_of_a_small_manifest() {
    let (s, m) = small();
    let o = s.cmd(&["plan", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    settings(&s).bind(|| insta::assert_snapshot!("plan", stdout(&o)));
}

#[test]
fn summary_md_of_a_small_run() {
    let (s, m) = small();
    let out = s.path("results/r");
    s.run_ok(&m, &out, &["-q"]);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    settings(&s).bind(|| insta::assert_snapshot!("summary_md", md));
}

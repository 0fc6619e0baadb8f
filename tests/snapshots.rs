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

/// `[[evaluate]]` sets: each cell lists an `external` stage per set (its key, cached or not),
/// after its train and evaluate stages; after a run all of them are cached.
#[test]
fn plan_lists_the_external_stage_of_each_cell_and_set() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    s.write(
        "data/ext.csv",
        "label,text\nT1059,uses a shell to run commands\nT1105,downloads a tool\n",
    );
    s.write(
        "ext2.csv",
        "label,text\nT1059,runs a script\nT1105,fetches a payload\n",
    );
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = [8, 16]\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n\n[[evaluate]]\nname = \"in_data\"\nfile = \"data:ext.csv\"\nkind = \"csv\"\n\n[[evaluate]]\nname = \"beside\"\nfile = \"ext2.csv\"\nkind = \"csv\"\n",
    );
    let before = s.cmd(&["plan", m.to_str().unwrap()]);
    assert!(before.status.success(), "{}", stderr(&before));
    settings(&s).bind(|| insta::assert_snapshot!("plan_external", stdout(&before)));
    s.run_ok(&m, &s.path("results/r"), &["-q"]);
    let after = stdout(&s.cmd(&["plan", m.to_str().unwrap()]));
    let external: Vec<&str> = after.lines().filter(|l| l.contains("external")).collect();
    assert_eq!(external.len(), 4, "{after}");
    assert!(external.iter().all(|l| l.contains("cached")), "{after}");
}

//! Every bad input the foundation issue lists: a clear one-paragraph error, a non-zero exit
//! code, and nothing half-written in results/ or the cache.

mod common;
use common::*;

fn tram_sandbox() -> Sandbox {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(30));
    s
}

#[test]
fn typo_in_a_key_names_file_key_and_valid_keys() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\ntset_fraction = 0.2\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("m.toml"), "{e}");
    assert!(e.contains("tset_fraction"), "{e}");
    assert!(e.contains("`test_fraction`"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn wrong_type_names_the_key_and_the_expected_type() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\nseed = \"forty-two\"\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("split.seed"), "{e}");
    assert!(e.contains("forty-two") && e.contains("u64"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn negative_test_fraction_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\ntest_fraction = -0.2\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("split.test_fraction") && e.contains("> 0 and < 1"),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn test_fraction_above_one_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "");
    let o = s.cmd(&[
        "run",
        m.to_str().unwrap(),
        "--set",
        "split.test_fraction=1.5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("split.test_fraction") && e.contains("1.5"),
        "{e}"
    );
    assert!(
        e.contains("--set split.test_fraction=1.5"),
        "the source of the value is named: {e}"
    );
    s.assert_nothing_written();
}

#[test]
fn missing_data_file_says_which_publisher_file_and_how_to_get_it() {
    let s = Sandbox::new();
    let m = s.manifest("kind = \"tram-single\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("single_label.json") && e.contains("center-for-threat-informed-defense/tram"),
        "{e}"
    );
    assert!(e.contains("synthcti data pull"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn unknown_dataset_kind_lists_the_valid_kinds() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-singel\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("data.kind") && e.contains("tram-singel"), "{e}");
    assert!(e.contains("cti-to-mitre") && e.contains("jsonl"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn label_field_that_does_not_exist_lists_the_fields() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"\nlabel = \"technique\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("`technique` not found") && e.contains("`label`"),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn csv_label_column_that_does_not_exist_lists_the_header() {
    let s = Sandbox::new();
    s.write("data/mine.csv", "text,technique\nsome text here,T1059\n");
    let m = s.manifest("kind = \"csv\"\nfile = \"mine.csv\"\nlabel = \"label\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("`label` not found") && e.contains("`technique`"),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn dataset_empty_after_filtering() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"\nmin_examples = 1000", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("remain after filtering") && e.contains("min_examples"),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn csv_row_with_a_broken_quote_names_the_line() {
    let s = Sandbox::new();
    let real = std::fs::read_to_string(shared_data().join("cti-to-mitre/dataset.csv")).unwrap();
    let mut lines: Vec<String> = real.lines().take(200).map(str::to_string).collect();
    // Line 51 (1-based): a sentence whose opening quote never closes.
    lines[50] =
        "50,T1003,T1003.008,/etc/passwd and /etc/shadow,\"Adversaries may read /etc/shadow".into();
    s.write("data/cti-to-mitre/dataset.csv", &(lines.join("\n") + "\n"));
    let m = s.manifest("kind = \"cti-to-mitre\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains("line 51") && e.contains("broken quote"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn truncated_json_file_says_truncated_and_where() {
    let s = Sandbox::new();
    let full = small_tram_rows(30);
    s.write("data/tram/single_label.json", &full[..full.len() * 2 / 3]);
    let m = s.manifest("kind = \"tram-single\"", "");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains("truncated") && e.contains("line"), "{e}");
    s.assert_nothing_written();
}

#[test]
fn manifest_that_is_not_toml_names_the_line() {
    let s = tram_sandbox();
    let m = s.write("m.toml", "[experiment\nname = \"x\"\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not valid TOML") && stderr(&o).contains("line 1"),
        "{}",
        stderr(&o)
    );
    s.assert_nothing_written();
}

#[test]
fn unknown_environment_override_is_named() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "");
    let o = bin()
        .args(["plan", m.to_str().unwrap()])
        .env("SYNTHCTI_CACHE_DIR", s.path("cache"))
        .env("SYNTHCTI_SPLIT__SEEED", "3")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("SYNTHCTI_SPLIT__SEEED") && e.contains("seeed"),
        "{e}"
    );
}

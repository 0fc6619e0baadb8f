//! Every bad input the foundation issue lists: a clear one-paragraph error, a non-zero exit
//! code, and nothing half-written in results/ or the cache.

mod common;
use common::*;
use std::path::Path;

fn tram_sandbox() -> Sandbox {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(30));
    s
}

/// `synthcti run MANIFEST EXTRA…` must exit with `code`, say every one of `needles` on stderr,
/// and leave nothing in results/ or the cache.
fn assert_rejected(s: &Sandbox, m: &Path, extra: &[&str], code: i32, needles: &[&str]) {
    let mut args = vec!["run", m.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = s.cmd(&args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
    assert_eq!(e.trim().lines().count(), 1, "one paragraph: {e}");
    s.assert_nothing_written();
}

#[test]
fn typo_in_a_key_names_file_key_and_valid_keys() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\ntset_fraction = 0.2\n");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["m.toml", "tset_fraction", "`test_fraction`"],
    );
}

#[test]
fn wrong_type_names_the_key_and_the_expected_type() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\nseed = \"forty-two\"\n");
    assert_rejected(&s, &m, &[], 2, &["split.seed", "forty-two", "u64"]);
}

#[test]
fn negative_test_fraction_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[split]\ntest_fraction = -0.2\n");
    assert_rejected(&s, &m, &[], 2, &["split.test_fraction", "> 0 and < 1"]);
}

#[test]
fn test_fraction_above_one_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "");
    // The source of the value is named: here the command line.
    assert_rejected(
        &s,
        &m,
        &["--set", "split.test_fraction=1.5"],
        2,
        &[
            "split.test_fraction",
            "1.5",
            "--set split.test_fraction=1.5",
        ],
    );
}

#[test]
fn zero_bootstrap_resamples_are_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[study]\nresamples = 0\n");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["m.toml", "study.resamples", "0 resamples; use 1 to 1000000"],
    );
}

#[test]
fn too_many_bootstrap_resamples_are_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "");
    assert_rejected(
        &s,
        &m,
        &["--set", "study.resamples=2000000"],
        2,
        &[
            "study.resamples",
            "2000000 resamples; use 1 to 1000000",
            "--set study.resamples=2000000",
        ],
    );
}

#[test]
fn unknown_study_key_lists_the_valid_keys() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"", "[study]\nresample = 100\n");
    assert_rejected(&s, &m, &[], 2, &["resample", "`resamples`", "`seed`"]);
}

#[test]
fn missing_data_file_says_which_publisher_file_and_how_to_get_it() {
    let s = Sandbox::new();
    let m = s.manifest("kind = \"tram-single\"", "");
    assert_rejected(
        &s,
        &m,
        &[],
        3,
        &[
            "single_label.json",
            "center-for-threat-informed-defense/tram",
            "synthcti data pull",
        ],
    );
}

#[test]
fn unknown_dataset_kind_lists_the_valid_kinds() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-singel\"", "");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["data.kind", "tram-singel", "cti-to-mitre", "jsonl"],
    );
}

#[test]
fn label_field_that_does_not_exist_lists_the_fields() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"\nlabel = \"technique\"", "");
    assert_rejected(&s, &m, &[], 3, &["`technique` not found", "`label`"]);
}

#[test]
fn csv_label_column_that_does_not_exist_lists_the_header() {
    let s = Sandbox::new();
    s.write("data/mine.csv", "text,technique\nsome text here,T1059\n");
    let m = s.manifest(
        "kind = \"csv\"\nfile = \"data/mine.csv\"\nlabel = \"label\"",
        "",
    );
    assert_rejected(&s, &m, &[], 3, &["`label` not found", "`technique`"]);
}

#[test]
fn dataset_empty_after_filtering() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"\nmin_examples = 1000", "");
    assert_rejected(&s, &m, &[], 3, &["remain after filtering", "min_examples"]);
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
    assert_rejected(&s, &m, &[], 3, &["line 51", "broken quote"]);
}

#[test]
fn truncated_json_file_says_truncated_and_where() {
    let s = Sandbox::new();
    let full = small_tram_rows(30);
    s.write("data/tram/single_label.json", &full[..full.len() * 2 / 3]);
    let m = s.manifest("kind = \"tram-single\"", "");
    assert_rejected(&s, &m, &[], 3, &["truncated", "line"]);
}

#[test]
fn manifest_that_is_not_toml_names_the_line() {
    let s = tram_sandbox();
    let m = s.write("m.toml", "[experiment\nname = \"x\"\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("not valid TOML") && e.contains("line 1"), "{e}");
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

// ---------------------------------------------------------------------------------------------
// Synthetic generation: rejected at validation, before any LLM call or training.

/// A manifest with a synthetic cell and `extra` (augment keys, generator tables) appended.
fn synthetic_sandbox(augment: &str, generator: &str) -> (Sandbox, std::path::PathBuf) {
    let s = tram_sandbox();
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!("[augment]\nkind = [\"none\", \"synthetic\"]\n{augment}\n{generator}"),
    );
    (s, m)
}

const REMOTE: &str = "[[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";

#[test]
fn template_with_an_unknown_variable_fails_before_any_call() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"\ntemplate = \"mine\"\ntemplates_dir = \"tpl\"",
        REMOTE,
    );
    s.write(
        "tpl/mine.j2",
        "Write {{ n }} sentences about {{ technique }}.",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.template",
            "unknown variable `technique`",
            "`technique_id`",
        ],
    );
}

#[test]
fn template_that_does_not_exist_is_named() {
    let (s, m) = synthetic_sandbox("generator = \"remote\"\ntemplate = \"nope\"", REMOTE);
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["template `nope` not found", "`cluster-guided`"],
    );
}

#[test]
fn generator_that_is_not_defined_is_named() {
    let (s, m) = synthetic_sandbox("generator = \"gpt\"", REMOTE);
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.generator",
            "no [[generator]] named `gpt`",
            "`remote`",
        ],
    );
}

#[test]
fn parallel_sequences_on_an_openai_generator_point_to_concurrency() {
    let (s, m) = synthetic_sandbox("generator = \"remote\"", &format!("{REMOTE}parallel = 4\n"));
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.parallel",
            "`local` generators",
            "`concurrency`",
        ],
    );
}

#[test]
fn parallel_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nparallel = 0\n",
    );
    assert_rejected(&s, &m, &[], 2, &["generator.0.parallel", "out of range"]);
}

#[test]
fn repeat_penalty_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nrepeat_penalty = 0.0\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.repeat_penalty", "out of range", "1 is off"],
    );
}

#[test]
fn repeat_penalty_on_an_openai_generator_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"",
        &format!("{REMOTE}repeat_penalty = 1.1\n"),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.repeat_penalty", "`local` generators"],
    );
}

#[test]
fn banned_words_on_an_openai_generator_are_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"",
        &format!("{REMOTE}banned_words = [\"you\"]\n"),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.banned_words",
            "`local` generators",
            "token ids",
        ],
    );
}

#[test]
fn a_banned_word_with_a_space_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nbanned_words = [\"you\", \"this list\"]\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.banned_words",
            "entry 1, \"this list\", is not a word",
        ],
    );
}

#[test]
fn an_empty_banned_word_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nbanned_words = [\"\"]\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.banned_words",
            "entry 0, \"\", is not a word",
            "1 to 40 characters",
        ],
    );
}

#[test]
fn item_decay_on_an_unstructured_generator_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nitem_decay_start = 100\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.item_decay_start", "`structured = true`"],
    );
}

#[test]
fn item_decay_on_an_openai_generator_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"",
        &format!("{REMOTE}structured = true\nitem_decay_start = 100\n"),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.item_decay_start", "`local` generators"],
    );
}

#[test]
fn item_decay_start_at_or_past_item_chars_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nstructured = true\nitem_chars = 200\nitem_decay_start = 200\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.item_decay_start",
            "not below `item_chars` (200)",
        ],
    );
}

#[test]
fn item_decay_factor_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nstructured = true\nitem_decay_start = 100\nitem_decay_factor = 1.0\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.item_decay_factor", "out of range", "> 1"],
    );
}

#[test]
fn item_chars_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nstructured = true\nitem_chars = 5\n",
    );
    assert_rejected(&s, &m, &[], 2, &["generator.0.item_chars", "out of range"]);
}

#[test]
fn missing_gguf_file_says_how_to_get_it() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\nmodel = \"models/none.gguf\"\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.0.model", "models/none.gguf", "just models"],
    );
}

#[test]
fn unset_api_key_variable_is_named_and_no_key_is_guessed() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"",
        &format!("{REMOTE}api_key_env = \"NO_SUCH_KEY_VARIABLE\"\n"),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "generator.0.api_key_env",
            "NO_SUCH_KEY_VARIABLE",
            "is not set",
        ],
    );
}

#[test]
fn two_target_rules_at_once_are_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"\n[augment.targets]\nbelow = 10\nquantile = 0.2",
        REMOTE,
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["augment.targets", "one of `below`, `quantile` or `list`"],
    );
}

#[test]
fn replay_without_a_source_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"again\"",
        &format!("{REMOTE}[[generator]]\nname = \"again\"\nprovider = \"replay\"\n"),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["generator.1.of", "replay generator needs `of`"],
    );
}

#[test]
fn k_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox("generator = \"remote\"\nk = [3, 0]", REMOTE);
    assert_rejected(&s, &m, &[], 2, &["augment.k", "between 1 and 64"]);
}

// ---------------------------------------------------------------------------------------------
// Target techniques that resolve to nothing: rejected at validation, naming the ID and why.

/// A synthetic manifest whose `[augment.targets]` lists `list` (TOML array body).
fn target_list_sandbox(list: &str) -> (Sandbox, std::path::PathBuf) {
    synthetic_sandbox(
        &format!("generator = \"remote\"\n[augment.targets]\nlist = [{list}]"),
        REMOTE,
    )
}

#[test]
fn target_list_id_absent_from_the_catalog_is_rejected() {
    let (s, m) = target_list_sandbox("\"T1027\", \" t9999 \"");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "key `augment.targets.list`",
            "` t9999 `",
            "T9999 is not in the enterprise catalog (another domain?)",
        ],
    );
}

#[test]
fn target_list_deprecated_id_is_rejected() {
    // T1064 (Scripting) is deprecated in ATT&CK v18.1.
    let (s, m) = target_list_sandbox("\"T1064\"");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["augment.targets.list", "`T1064`", "deprecated in ATT&CK"],
    );
}

#[test]
fn target_list_id_without_examples_in_the_data_is_rejected() {
    // The sandbox's rows are T1027, T1059.003, T1105 and T1071.001 only.
    let (s, m) = target_list_sandbox("\"T1027\", \"t1059.001\"");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.targets.list",
            "`t1059.001` (T1059.001) has no examples in the data",
            "no row of",
            "4 classes, e.g. T1027, T1059.003, T1071.001, T1105",
        ],
    );
}

#[test]
fn target_list_id_revoked_without_successor_is_rejected() {
    let s = tram_sandbox();
    let technique = |stix: &str, id: &str, extra: &str| {
        format!(
            r#"{{"type":"attack-pattern","id":"{stix}","name":"{id}","x_mitre_domains":["enterprise-attack"]{extra},"external_references":[{{"source_name":"mitre-attack","external_id":"{id}"}}]}}"#
        )
    };
    s.write(
        "data/attack/mini.json",
        &format!(
            r#"{{"type":"bundle","objects":[{},{},{},{},{}]}}"#,
            technique("a", "T1027", ""),
            technique("b", "T1059.003", ""),
            technique("c", "T1105", ""),
            technique("d", "T1071.001", ""),
            technique("e", "T1002", r#","revoked":true"#),
        ),
    );
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"attack/mini.json\"",
        &format!(
            "[augment]\nkind = [\"none\", \"synthetic\"]\ngenerator = \"remote\"\n[augment.targets]\nlist = [\"T1002\"]\n{REMOTE}"
        ),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.targets.list",
            "`T1002`",
            "revoked in ATT&CK with no successor",
        ],
    );
}

#[test]
fn target_list_entry_that_is_not_a_technique_id_is_rejected() {
    let (s, m) = target_list_sandbox("\"PowerShell\"");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["augment.targets.list", "`PowerShell` is not a technique ID"],
    );
}

#[test]
fn exclude_entry_that_is_not_a_technique_id_is_rejected() {
    let s = tram_sandbox();
    let m = s.manifest("kind = \"tram-single\"\nexclude = [\"T1027\", \"T10\"]", "");
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["data.exclude", "`T10` is not a technique ID"],
    );
}

#[test]
fn linear_c_of_zero_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest(
        "kind = \"tram-single\"",
        "[[classifier]]\nkind = \"linear\"\nc = 0.0\n",
    );
    assert_rejected(&s, &m, &[], 2, &["classifier.0.c", "> 0 and < 1000000"]);
}

#[test]
fn linear_character_ngrams_must_be_ordered() {
    let s = tram_sandbox();
    let m = s.manifest(
        "kind = \"tram-single\"",
        "[[classifier]]\nkind = \"linear\"\nminn = 6\nmaxn = 3\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["classifier.0.minn", "need 1 <= minn <= maxn"],
    );
}

#[test]
fn linear_min_df_of_zero_is_out_of_range() {
    let s = tram_sandbox();
    let m = s.manifest(
        "kind = \"tram-single\"",
        "[[classifier]]\nkind = \"linear\"\nmin_df = 0\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["classifier.0.min_df", "between 1 and 1000000"],
    );
}

#[test]
fn a_fasttext_key_on_a_linear_classifier_names_both() {
    let s = tram_sandbox();
    let m = s.manifest(
        "kind = \"tram-single\"",
        "[[classifier]]\nkind = \"linear\"\ndim = 8\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "`dim` does not apply to a `linear` classifier",
            "`max_features`",
        ],
    );
}

/// A `[[evaluate]]` table on the TRAM sandbox (its data folder is `data/`).
fn with_evaluate(s: &Sandbox, table: &str) -> std::path::PathBuf {
    s.write(
        "data/ext.csv",
        "label,text\nT1059,uses a shell\nT1105,downloads a tool\n",
    );
    s.manifest(
        "kind = \"tram-single\"",
        &format!("[[evaluate]]\n{table}\n"),
    )
}

#[test]
fn external_set_with_a_missing_file_names_it() {
    let s = tram_sandbox();
    let m = with_evaluate(&s, "name = \"ext\"\nfile = \"nope.csv\"\nkind = \"csv\"");
    assert_rejected(
        &s,
        &m,
        &[],
        3,
        &["[[evaluate]] `ext`", "evaluate.0.file", "nope.csv"],
    );
}

/// The file sits in the data folder but the manifest names it as if relative to it (the old
/// reading): the error says how to write it.
#[test]
fn external_set_relative_to_the_data_folder_is_told_to_use_the_data_prefix() {
    let s = tram_sandbox();
    let m = with_evaluate(&s, "name = \"ext\"\nfile = \"ext.csv\"\nkind = \"csv\"");
    assert_rejected(
        &s,
        &m,
        &[],
        3,
        &[
            "evaluate.0.file",
            "resolves against the manifest's folder",
            "file = \"data:ext.csv\"",
        ],
    );
}

#[test]
fn external_set_with_an_unknown_field_lists_the_valid_ones() {
    let s = tram_sandbox();
    let m = with_evaluate(
        &s,
        "name = \"ext\"\nfile = \"data:ext.csv\"\nkind = \"csv\"\nlabel_field = \"label\"",
    );
    assert_rejected(&s, &m, &[], 2, &["label_field", "`unknown_labels`"]);
}

#[test]
fn external_set_with_an_unknown_policy_lists_the_valid_ones() {
    let s = tram_sandbox();
    let m = with_evaluate(
        &s,
        "name = \"ext\"\nfile = \"data:ext.csv\"\nkind = \"csv\"\nunknown_labels = \"ignore\"",
    );
    assert_rejected(&s, &m, &[], 2, &["ignore", "`skip`", "`error`"]);
}

#[test]
fn multi_label_data_cannot_take_synthetic_cells() {
    let s = Sandbox::new();
    s.write(
        "data/tram/multi_label_reconstructed.jsonl",
        "{\"text\":\"a\",\"labels_tram50\":[\"T1059\"],\"doc_title\":\"d\"}\n",
    );
    let m = s.manifest(
        "kind = \"tram-multi\"\nmulti_label = \"keep\"",
        "[augment]\nkind = [\"none\", \"synthetic\"]\n",
    );
    assert_rejected(&s, &m, &[], 2, &["augment.kind", "multi-label"]);
}

#[test]
fn unknown_reference_classifier_lists_the_valid_ones() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"\n[augment.filter]\nreference_classifier = \"svm\"",
        REMOTE,
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.filter.reference_classifier",
            "unknown reference classifier `svm`",
            "\"none\", \"fasttext\" or \"encoder-frozen\"",
        ],
    );
}

#[test]
fn encoder_frozen_reference_without_its_encoder_folder_is_named() {
    let (s, m) = synthetic_sandbox(
        "generator = \"remote\"\nencoder = \"no-such-model\"\n[augment.filter]\nreference_classifier = \"encoder-frozen\"",
        REMOTE,
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "augment.filter.reference_classifier",
            "`augment.encoder`",
            "no-such-model",
            "\"fasttext\"",
        ],
    );
}

#[test]
fn sigmoid_heads_refuse_a_classifier_kind_without_one() {
    let s = Sandbox::new();
    s.write(
        "data/tram/multi_label_reconstructed.jsonl",
        "{\"text\":\"a\",\"labels_tram50\":[\"T1059\"],\"doc_title\":\"d\"}\n",
    );
    let m = s.manifest(
        "kind = \"tram-multi\"\nmulti_label = \"keep\"\nmulti_label_head = \"sigmoid\"",
        &format!(
            "[[classifier]]\nkind = \"fasttext\"\n[[classifier]]\nkind = \"encoder-finetune\"\nmodel = \"{}\"\n",
            minilm().display()
        ),
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &[
            "data.multi_label_head",
            "`encoder-finetune`",
            "multi_label_head = \"none-class\"",
        ],
    );
}

#[test]
fn an_unknown_multi_label_head_lists_the_heads() {
    let s = Sandbox::new();
    s.write(
        "data/tram/multi_label_reconstructed.jsonl",
        "{\"text\":\"a\",\"labels_tram50\":[\"T1059\"],\"doc_title\":\"d\"}\n",
    );
    let m = s.manifest(
        "kind = \"tram-multi\"\nmulti_label = \"keep\"\nmulti_label_head = \"softmax\"",
        "",
    );
    assert_rejected(&s, &m, &[], 2, &["softmax", "`none-class`", "`sigmoid`"]);
}

#[test]
fn top_up_out_of_range_is_rejected() {
    let (s, m) = synthetic_sandbox(
        "generator = \"tiny\"\ntop_up = 9",
        "[[generator]]\nname = \"tiny\"\nprovider = \"local\"\n",
    );
    assert_rejected(
        &s,
        &m,
        &[],
        2,
        &["augment.top_up", "out of range", "between 0 and 5"],
    );
}

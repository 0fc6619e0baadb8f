//! End-to-end: a study with replicates and the cheap arms — each replicate has its own split
//! (written to `split/r<r>/`), the arms add sentences through their own cached stages, and the
//! tables group (configuration, arm) over replicates with mean ± sd and pooled intervals.

mod common;
use common::*;

const FASTTEXT: &str = "[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n";

/// Four TRAM classes, two replicates, the baseline and both cheap arms for T1105.
fn study_manifest(s: &Sandbox) -> std::path::PathBuf {
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\nvalidation_min = 1\n[augment]\nkind = [\"none\", \"oversample\", \"attack-description\"]\nper_technique = 12\n[augment.targets]\nlist = [\"T1105\"]\n{FASTTEXT}"
        ),
    );
    // `experiment.replicates = 2` in the [experiment] table the sandbox writes.
    let body = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        body.replacen("name = \"t\"\n", "name = \"t\"\nreplicates = 2\n", 1),
    )
    .unwrap();
    m
}

#[test]
fn replicates_and_cheap_arms_make_grouped_tables_and_pooled_intervals() {
    let s = Sandbox::new();
    let m = study_manifest(&s);
    let out = s.path("results/r");
    s.run_ok(&m, &out, &["-q"]);

    // Six cells: 3 arms × 2 replicates, each replicate with its own split seed and split files.
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 6);
    let got: Vec<(String, String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["replicate"].clone(),
                r["split_seed"].clone(),
                r["seed"].clone(),
                r["augment"].clone(),
                r["config"].clone(),
            )
        })
        .collect();
    for (i, (rep, split_seed, seed, _, config)) in got.iter().enumerate() {
        let r = i / 3;
        assert_eq!(rep, &r.to_string());
        assert_eq!(split_seed, &(7 + r).to_string());
        assert_eq!(seed, &(42 + r).to_string());
        assert_eq!(config, "fasttext");
    }
    // Oversample adds per_technique (12) repeated T1105 sentences; the description adds its
    // sentences; the baseline adds none.
    let added: Vec<&str> = rows.iter().map(|r| r["added"].as_str()).collect();
    assert_eq!(added[0], "0");
    assert_eq!(added[1], "12");
    assert!(added[2].parse::<usize>().unwrap() > 0, "{added:?}");
    let test0 = std::fs::read_to_string(out.join("split/test.jsonl")).unwrap();
    let test1 = std::fs::read_to_string(out.join("split/r1/test.jsonl")).unwrap();
    assert_ne!(test0, test1, "each replicate has its own split");

    // The arms are stages of their own, one entry per replicate's split.
    assert_eq!(cache_entries(&s, "oversample"), 2);
    assert_eq!(cache_entries(&s, "attack-description"), 2);

    // Leakage per replicate, stated in summary.md.
    let leakage: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("leakage.json")).unwrap()).unwrap();
    assert_eq!(leakage.len(), 2);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for section in [
        "## Main results",
        "## Test sentences seen in training",
        "## Pooled over replicates",
        "## Paired comparison",
    ] {
        assert!(md.contains(section), "no {section} in\n{md}");
    }
    // One row per configuration and arm, over both replicates.
    assert!(md.contains("| fasttext, none | 2 |"), "{md}");
    assert!(md.contains("| fasttext, attack-description | 2 |"), "{md}");

    // One interval row per replicate and arm; one pooled row per arm over both replicates.
    let iv = read_csv_rows(&out.join("intervals.csv"));
    assert_eq!(iv.len(), 4);
    assert!(iv.iter().all(|r| r["config"] == "fasttext"));
    let pooled = read_csv_rows(&out.join("intervals_pooled.csv"));
    assert_eq!(pooled.len(), 2);
    for p in &pooled {
        assert_eq!(p["n"], "2");
        let f = |k: &str| p[k].parse::<f64>().unwrap();
        // The pooled point is the mean of the replicates' deltas, inside its interval.
        assert!((f("pooled_delta") - f("delta_mean")).abs() < 1e-3, "{p:?}");
        assert!(f("pooled_lo") <= f("pooled_delta") && f("pooled_delta") <= f("pooled_hi"));
        let reps: Vec<f64> = iv
            .iter()
            .filter(|r| r["arm"] == p["arm"])
            .map(|r| r["delta_macro_f1"].parse::<f64>().unwrap())
            .collect();
        assert_eq!(reps.len(), 2);
        assert!((f("delta_mean") - (reps[0] + reps[1]) / 2.0).abs() < 1e-3);
    }
    let agg = read_csv_rows(&out.join("aggregate.csv"));
    let arms: Vec<&str> = agg.iter().map(|r| r["arm"].as_str()).collect();
    assert_eq!(arms, ["none", "oversample (n12)", "attack-description"]);
    assert!(agg.iter().all(|r| r["n"] == "2"));

    // A rerun trains nothing and writes the same tables.
    let out2 = s.path("results/r2");
    let o = s.run_ok(&m, &out2, &[]);
    assert!(
        stderr(&o).contains("0 trained, 6 from cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(out2.join("intervals_pooled.csv")).unwrap(),
        std::fs::read_to_string(out.join("intervals_pooled.csv")).unwrap()
    );
}

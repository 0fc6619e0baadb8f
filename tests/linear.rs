//! End-to-end: the `linear` classifier (TF-IDF n-grams + linear SVM) trains, evaluates, sweeps
//! its settings as grid axes and comes back from the cache, on a small slice of real TRAM data.

mod common;
use common::*;

#[test]
fn linear_cells_train_sweep_and_come_back_from_the_cache() {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[split]\nseed = 7\n[[classifier]]\nkind = \"linear\"\nc = [0.5, 1.0]\nmax_features = 5000\n",
    );
    let out = s.path("results/first");
    s.run_ok(&m, &out, &[]);
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (r, c) in rows.iter().zip(["0.5", "1.0"]) {
        assert_eq!(r["classifier"], "linear");
        assert!(
            r["cell"].starts_with(&format!("linear-C{c}-")),
            "{}",
            r["cell"]
        );
        // Four well-separated techniques of real TRAM sentences: far above chance (0.25).
        let f1: f64 = r["macro_f1"].parse().unwrap();
        assert!(f1 > 0.6, "{r:?}");
        assert_eq!(r["lr"], "", "a linear cell has no learning rate");
    }
    let resolved = std::fs::read_to_string(out.join("manifest.resolved.toml")).unwrap();
    for key in [
        "sublinear_tf = true",
        "word_ngrams = 2",
        "maxn = 5",
        "tol = 0.0001",
    ] {
        assert!(resolved.contains(key), "{key} missing from {resolved}");
    }
    assert!(run_log(&out).contains("2 trained, 0 from cache"));

    // Again: both cells load from the cache and predict the same.
    let out2 = s.path("results/second");
    s.run_ok(&m, &out2, &[]);
    assert!(run_log(&out2).contains("0 trained, 2 from cache"));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.csv")).unwrap(),
        std::fs::read_to_string(out2.join("summary.csv")).unwrap()
    );
    for r in &rows {
        let p = |o: &std::path::Path| {
            std::fs::read_to_string(o.join("cells").join(&r["cell"]).join("predictions.jsonl"))
                .unwrap()
        };
        assert_eq!(p(&out), p(&out2));
    }
}

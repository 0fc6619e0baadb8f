//! Cost of the study statistics (issue 10 target: ≤ 2 s for a run of 40 cells × 1,000 resamples).
//!
//! 40 comparisons shaped like TRAM's (1,018 test sentences, 50 classes in L, 12 target
//! techniques; predictions right 70% of the time, drawn with a fixed seed), each with the two
//! intervals a comparison reports (over L and over the targets, from the same 1,000 resamples),
//! then pooled as `study::study` pools them: consecutive groups of 3 comparisons are one
//! (configuration, arm) over 3 replicates, each group's two pooled intervals drawn with
//! `pooled_deltas_each` (a bootstrap inside every replicate, 1,000 resamples).
//! Prints one JSON line: the median over RUNS of the wall time of all 40 comparisons and the
//! pooling, and of the pooling alone.
//! Usage: cargo bench --bench stats -- [RUNS]   (default 5)

use std::time::Instant;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use synthcti::stats::{Bootstrap, Paired, pooled_deltas, pooled_deltas_each};

const CELLS: usize = 40;
const TEST: usize = 1018;
const CLASSES: usize = 50;
const TARGETS: usize = 12;
const REPLICATES: usize = 3;

fn predictions(rng: &mut Xoshiro256PlusPlus, gold: &[usize]) -> Vec<usize> {
    gold.iter()
        .map(|&g| {
            if rng.gen_bool(0.7) {
                g
            } else {
                rng.gen_range(0..CLASSES)
            }
        })
        .collect()
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let gold: Vec<usize> = (0..TEST).map(|i| i % CLASSES).collect();
    let preds: Vec<(Vec<usize>, Vec<usize>)> = (0..CELLS)
        .map(|_| (predictions(&mut rng, &gold), predictions(&mut rng, &gold)))
        .collect();
    let labels: Vec<usize> = (0..CLASSES).collect();
    let targets: Vec<usize> = (CLASSES - TARGETS..CLASSES).collect();
    let b = Bootstrap {
        resamples: 1000,
        seed: 0,
    };
    let mut times = Vec::new();
    let mut pooled_times = Vec::new();
    let mut check = 0.0;
    for _ in 0..runs {
        let t = Instant::now();
        for (base, aug) in &preds {
            let p = Paired {
                gold: &gold,
                baseline: base,
                augmented: aug,
            };
            // Both intervals of a comparison from the same resamples, as `study::compare` does.
            let ivs = pooled_deltas(&[p], &[&labels, &targets], b);
            check += ivs[0].hi + ivs[1].hi;
        }
        let tp = Instant::now();
        for group in preds.chunks(REPLICATES) {
            let reps: Vec<Paired> = group
                .iter()
                .map(|(base, aug)| Paired {
                    gold: &gold,
                    baseline: base,
                    augmented: aug,
                })
                .collect();
            let sets: Vec<Vec<&[usize]>> = reps
                .iter()
                .map(|_| vec![labels.as_slice(), targets.as_slice()])
                .collect();
            let ivs = pooled_deltas_each(&reps, &sets, b);
            check += ivs[0].hi + ivs[1].hi;
        }
        pooled_times.push(tp.elapsed().as_secs_f64());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    pooled_times.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"stats\",\"cells\":{CELLS},\"replicates\":{REPLICATES},\"resamples\":1000,\"test\":{TEST},\"classes\":{CLASSES},\"intervals_per_cell\":2,\"runs\":{runs},\"median_s\":{:.3},\"min_s\":{:.3},\"max_s\":{:.3},\"pooled_median_s\":{:.3},\"target_s\":2.0,\"checksum\":{check:.4}}}",
        times[runs / 2],
        times[0],
        times[runs - 1],
        pooled_times[runs / 2]
    );
}

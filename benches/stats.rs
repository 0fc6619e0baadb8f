//! Cost of the study statistics (issue 10 target: ≤ 2 s for a run of 40 cells × 1,000 resamples).
//!
//! 40 comparisons shaped like TRAM's (1,018 test sentences, 50 classes in L, 12 target
//! techniques; predictions right 70% of the time, drawn with a fixed seed), each with the two
//! intervals a comparison reports (over L and over the targets, from the same 1,000 resamples),
//! then pooled as `study::study` pools them: consecutive groups of 3 comparisons are one
//! (configuration, arm) over 3 replicates, each group's two pooled intervals drawn with a
//! bootstrap inside every replicate (1,000 resamples). As `study::study` does, the 40
//! comparisons are one `pooled_deltas_many` call (parallel across comparisons, rayon) and the
//! pooled groups another.
//! Prints one JSON line: the median over RUNS of the wall time and of the process's CPU time
//! (user + sys, from /proc/self/stat) of all 40 comparisons and the pooling, the pooling's wall
//! time alone, and rayon's thread count (`RAYON_NUM_THREADS=1` gives the one-thread figure).
//! The checksum (sum of the intervals' upper bounds) is the same whatever the thread count.
//! Usage: cargo bench --bench stats -- [RUNS]   (default 5)

use std::time::Instant;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use synthcti::stats::{Bootstrap, Job, Paired, pooled_deltas_many};

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

/// CPU seconds (user + sys) this process has used so far, from /proc/self/stat (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th of them, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
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
    let mut cpu_times = Vec::new();
    let mut pooled_times = Vec::new();
    let mut check = 0.0;
    fn paired<'a>(gold: &'a [usize], (base, aug): &'a (Vec<usize>, Vec<usize>)) -> Paired<'a> {
        Paired {
            gold,
            baseline: base,
            augmented: aug,
        }
    }
    let two: Vec<&[usize]> = vec![&labels, &targets];
    // Both intervals of a comparison from the same resamples, as `study::study` does.
    let comparisons: Vec<Job> = preds
        .iter()
        .map(|p| Job {
            reps: vec![paired(&gold, p)],
            label_sets: vec![two.clone()],
        })
        .collect();
    let pooled: Vec<Job> = preds
        .chunks(REPLICATES)
        .map(|group| Job {
            reps: group.iter().map(|p| paired(&gold, p)).collect(),
            label_sets: group.iter().map(|_| two.clone()).collect(),
        })
        .collect();
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds());
        for ivs in pooled_deltas_many(&comparisons, b) {
            check += ivs[0].hi + ivs[1].hi;
        }
        let tp = Instant::now();
        for ivs in pooled_deltas_many(&pooled, b) {
            check += ivs[0].hi + ivs[1].hi;
        }
        pooled_times.push(tp.elapsed().as_secs_f64());
        times.push(t.elapsed().as_secs_f64());
        cpu_times.push(cpu_seconds() - c);
    }
    times.sort_by(f64::total_cmp);
    pooled_times.sort_by(f64::total_cmp);
    cpu_times.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"stats\",\"cells\":{CELLS},\"replicates\":{REPLICATES},\"resamples\":1000,\"test\":{TEST},\"classes\":{CLASSES},\"intervals_per_cell\":2,\"threads\":{},\"runs\":{runs},\"median_s\":{:.3},\"min_s\":{:.3},\"max_s\":{:.3},\"cpu_median_s\":{:.3},\"pooled_median_s\":{:.3},\"target_s\":2.0,\"checksum\":{:.4}}}",
        rayon::current_num_threads(),
        times[runs / 2],
        times[0],
        times[runs - 1],
        cpu_times[runs / 2],
        pooled_times[runs / 2],
        check / runs as f64
    );
}

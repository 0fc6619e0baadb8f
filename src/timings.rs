//! Wall time per stage of a run, recorded as the run goes and written as `timings.json` in the
//! run folder, so `summary.md`'s cost section (and `synthcti report`) can read it back.
//!
//! A time is what this run spent, not what the cached result once cost: a stage answered from
//! the cache takes milliseconds here. The training time a model took when it was trained is in
//! each cell's `metrics.json` (`train_seconds`).

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, IoContext, Result};

/// The file in a run folder.
pub const FILE: &str = "timings.json";

/// One timed step: a stage (`load`, `split`, `cluster`, `synthesize`, `cell`, `report`) and
/// what it worked on (a chain's label, a cell's name; empty for run-wide stages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    #[serde(default)]
    pub what: String,
    /// Wall-clock seconds in this run.
    pub seconds: f64,
    /// Whether the step's result came from the cache (`None` when the step does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
}

/// Collects [`StageTime`]s from any thread.
#[derive(Debug, Default)]
pub struct Timer {
    times: Mutex<Vec<StageTime>>,
}

impl Timer {
    /// Run `f` and record its wall time under `stage` and `what`.
    pub fn time<T>(&self, stage: &str, what: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.record(stage, what, t.elapsed().as_secs_f64(), None);
        out
    }

    /// Record a time measured elsewhere.
    pub fn record(&self, stage: &str, what: &str, seconds: f64, cached: Option<bool>) {
        self.times.lock().expect("timer").push(StageTime {
            stage: stage.into(),
            what: what.into(),
            seconds,
            cached,
        });
    }

    /// Everything recorded, in the order recorded.
    pub fn times(&self) -> Vec<StageTime> {
        self.times.lock().expect("timer").clone()
    }

    /// Write `timings.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(FILE);
        std::fs::write(
            &p,
            serde_json::to_vec_pretty(&self.times()).expect("timings serialize"),
        )
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}", p.display())
        })
    }
}

/// The times of a run folder; empty when it has no (readable) `timings.json` (runs of an older
/// synthcti).
pub fn read(dir: &Path) -> Vec<StageTime> {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Per stage, in order of first appearance: (stage, steps, steps from the cache, seconds).
pub fn by_stage(times: &[StageTime]) -> Vec<(String, usize, usize, f64)> {
    let mut out: Vec<(String, usize, usize, f64)> = Vec::new();
    for t in times {
        let i = match out.iter().position(|o| o.0 == t.stage) {
            Some(i) => i,
            None => {
                out.push((t.stage.clone(), 0, 0, 0.0));
                out.len() - 1
            }
        };
        out[i].1 += 1;
        out[i].2 += usize::from(t.cached == Some(true));
        out[i].3 += t.seconds;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_summed_per_stage_in_order_and_round_trip() {
        let t = Timer::default();
        let x = t.time("load", "", || 7);
        assert_eq!(x, 7);
        t.record("cell", "a", 2.0, Some(false));
        t.record("cell", "b", 0.5, Some(true));
        let by = by_stage(&t.times());
        assert_eq!(by.len(), 2);
        assert_eq!((by[0].0.as_str(), by[0].1, by[0].2), ("load", 1, 0));
        assert_eq!(by[1], ("cell".to_string(), 2, 1, 2.5));
        let d = tempfile::tempdir().unwrap();
        t.write(d.path()).unwrap();
        assert_eq!(read(d.path()), t.times());
        assert!(read(&d.path().join("nowhere")).is_empty());
    }
}

//! The cache as a thing users manage: `synthcti cache ls` (entries by stage, size, last use) and
//! `synthcti cache gc` (entries no run folder references, or unused for N days; `--dry-run`).
//!
//! Only stage entries (`<cache>/entries/<stage>/<key>/`) are listed and collected, plus lock files
//! nobody holds and leftovers of dead writers in `tmp/`. An entry's last use is its
//! `entry.json`'s modification time, which every read of the entry refreshes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::output::Table;

/// One stage entry on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryInfo {
    pub stage: String,
    pub key: String,
    pub dir: PathBuf,
    /// Bytes of all its files.
    pub bytes: u64,
    /// When it was computed (RFC 3339, from entry.json).
    pub created: String,
    /// When it was last read or written.
    pub last_used: SystemTime,
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every complete entry of the cache, by stage then key.
pub fn entries(cache: &Cache) -> Vec<EntryInfo> {
    let mut out = Vec::new();
    for stage in sorted_dirs(&cache.root().join("entries")) {
        for dir in sorted_dirs(&stage) {
            let meta_path = dir.join("entry.json");
            let Ok(md) = fs::metadata(&meta_path) else {
                continue;
            };
            let created = fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::cache::EntryMeta>(&b).ok())
                .map(|m| m.created)
                .unwrap_or_default();
            out.push(EntryInfo {
                stage: stage
                    .file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                key: dir
                    .file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                bytes: dir_bytes(&dir),
                created,
                last_used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                dir,
            });
        }
    }
    out
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The entries as a table: stage, key (16 hex digits, as `plan` shows it), bytes, created,
/// last_used.
pub fn table(entries: &[EntryInfo]) -> Table {
    let mut t = Table::new(&["stage", "key", "bytes", "created", "last_used"]);
    for e in entries {
        t.rows.push(vec![
            e.stage.clone(),
            e.key.get(..16).unwrap_or(&e.key).to_string(),
            e.bytes.to_string(),
            e.created.clone(),
            rfc3339(e.last_used),
        ]);
    }
    t
}

/// The stage keys the run folders under `results` name in their `plan.json` (every stage of
/// every cell), searched to any depth so `--out` folders inside are found too.
pub fn referenced_keys(results: &[PathBuf]) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, keys: &mut BTreeSet<String>) {
        let plan = dir.join("plan.json");
        if let Ok(b) = fs::read(&plan)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
        {
            for c in v["cells"].as_array().into_iter().flatten() {
                for s in c["stages"].as_array().into_iter().flatten() {
                    if let Some(k) = s["key"].as_str() {
                        keys.insert(k.to_string());
                    }
                }
            }
        }
        for d in sorted_dirs(dir) {
            walk(&d, keys);
        }
    }
    let mut keys = BTreeSet::new();
    for r in results {
        if !r.is_dir() {
            return Err(Error::config(format!(
                "results folder {} does not exist; `cache gc` keeps the entries the run folders there reference, so pass the folders your runs are in with --results (the manifests' `experiment.output_dir`), or use --older-than DAYS",
                r.display()
            )));
        }
        walk(r, &mut keys);
    }
    Ok(keys)
}

/// Which entries `gc` removes.
#[derive(Debug, Clone)]
pub enum GcRule {
    /// Entries no `plan.json` under these folders names.
    Unreferenced(Vec<PathBuf>),
    /// Entries not used for this long.
    OlderThan(Duration),
}

/// What `gc` removed (or, in a dry run, would remove).
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<EntryInfo>,
    pub bytes: u64,
    /// Entries kept because a run holds their lock now.
    pub busy: usize,
    pub stale_locks: usize,
}

/// Remove the entries `rule` selects, and the lock files nobody holds; with `dry_run` nothing is
/// removed. An entry whose key a live run holds locked is left alone.
pub fn gc(cache: &Cache, rule: &GcRule, dry_run: bool) -> Result<GcReport> {
    let keep = match rule {
        GcRule::Unreferenced(results) => Some(referenced_keys(results)?),
        GcRule::OlderThan(_) => None,
    };
    let now = SystemTime::now();
    let mut report = GcReport::default();
    for e in entries(cache) {
        let selected = match (rule, &keep) {
            (GcRule::Unreferenced(_), Some(keep)) => !keep.contains(&e.key),
            (GcRule::OlderThan(age), _) => {
                now.duration_since(e.last_used).unwrap_or_default() > *age
            }
            _ => false,
        };
        if !selected {
            continue;
        }
        if matches!(cache.lock_state(&e.key), crate::cache::LockState::Live(_)) {
            report.busy += 1;
            continue;
        }
        if !dry_run {
            // Out of sight first (one rename), then deleted: a reader never sees half an entry.
            let aside =
                cache
                    .root()
                    .join("tmp")
                    .join(format!("gc-{}-{}", e.key, std::process::id()));
            fs::create_dir_all(cache.root().join("tmp"))
                .io_ctx(ErrorKind::Cache, || cache.root().display().to_string())?;
            fs::rename(&e.dir, &aside).io_ctx(ErrorKind::Cache, || {
                format!("cannot remove {}", e.dir.display())
            })?;
            fs::remove_dir_all(&aside).io_ctx(ErrorKind::Cache, || {
                format!("cannot remove {}", aside.display())
            })?;
        }
        report.bytes += e.bytes;
        report.removed.push(e);
    }
    // Lock files nobody holds any more: their holder died (on this host), their heartbeat is
    // older than the lease (on any host), or an older version left them.
    if let Ok(rd) = fs::read_dir(cache.root().join("locks")) {
        for item in rd.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            let free = match name.strip_suffix(".lock") {
                Some(key) => matches!(cache.lock_state(key), crate::cache::LockState::Stale { .. }),
                // A lock renamed aside by a breaker that died before deleting it.
                None => name.contains(".stale-"),
            };
            if free {
                report.stale_locks += 1;
                if !dry_run {
                    let _ = fs::remove_file(item.path());
                }
            }
        }
    }
    if !dry_run {
        cache.sweep_tmp();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{StageId, StageParams};
    use serde::Serialize;

    #[derive(Serialize)]
    struct P(u32);
    impl StageParams for P {
        const STAGE: &'static str = "test";
        fn version(&self) -> u32 {
            1
        }
    }

    fn entry(cache: &Cache, n: u32) -> StageId {
        let id = StageId::of(&P(n), &[]);
        cache
            .get_or_compute(&id, |w| w.write("x", &vec![7u8; 100 + n as usize]))
            .unwrap();
        id
    }

    #[test]
    fn gc_removes_only_unreferenced_entries_and_a_dry_run_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let kept = entry(&cache, 1);
        let dropped = entry(&cache, 2);
        assert_eq!(entries(&cache).len(), 2);
        let results = dir.path().join("results/exp/run1");
        fs::create_dir_all(&results).unwrap();
        fs::write(
            results.join("plan.json"),
            serde_json::json!({"cells": [{"stages": [{"stage": "test", "key": kept.key}]}]})
                .to_string(),
        )
        .unwrap();
        let rule = GcRule::Unreferenced(vec![dir.path().join("results")]);
        let dry = gc(&cache, &rule, true).unwrap();
        assert_eq!(dry.removed.len(), 1);
        assert_eq!(dry.removed[0].key, dropped.key);
        let meta_len = fs::metadata(dry.removed[0].dir.join("entry.json"))
            .unwrap()
            .len();
        assert_eq!(dry.bytes, 102 + meta_len, "the file `x` and entry.json");
        assert_eq!(entries(&cache).len(), 2, "a dry run removes nothing");
        let r = gc(&cache, &rule, false).unwrap();
        assert_eq!(r.removed.len(), 1);
        let left: Vec<String> = entries(&cache).into_iter().map(|e| e.key).collect();
        assert_eq!(left, vec![kept.key.clone()]);
        assert!(cache.get(&kept).unwrap().is_some());
    }

    #[test]
    fn gc_older_than_uses_last_use_and_no_lock_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let old = entry(&cache, 1);
        let fresh = entry(&cache, 2);
        let meta = cache
            .root()
            .join("entries/test")
            .join(&old.key)
            .join("entry.json");
        let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
        fs::File::options()
            .write(true)
            .open(&meta)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let locks: Vec<_> = fs::read_dir(cache.root().join("locks")).unwrap().collect();
        assert!(locks.is_empty(), "a computed entry leaves no lock file");
        let r = gc(
            &cache,
            &GcRule::OlderThan(Duration::from_secs(86_400)),
            false,
        )
        .unwrap();
        assert_eq!(
            r.removed.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            vec![old.key]
        );
        // Reading an entry counts as a use.
        assert!(cache.get(&fresh).unwrap().is_some());
        let e = entries(&cache);
        assert_eq!(e.len(), 1);
        assert!(
            SystemTime::now().duration_since(e[0].last_used).unwrap() < Duration::from_secs(60)
        );
    }

    #[test]
    fn gc_without_the_results_folder_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        entry(&cache, 1);
        let e = gc(
            &cache,
            &GcRule::Unreferenced(vec![dir.path().join("nope")]),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("--results"), "{}", e.message);
        assert_eq!(entries(&cache).len(), 1);
    }
}

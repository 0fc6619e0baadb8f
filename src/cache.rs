//! The content-addressed stage cache.
//!
//! Layout under the cache root:
//!
//! ```text
//! <root>/entries/<stage>/<key>/entry.json   # what made it: stage, version, params, inputs, file hashes
//! <root>/entries/<stage>/<key>/<files>      # the stage's outputs
//! <root>/locks/<key>.lock                   # one lock per key (advisory, released on exit or crash)
//! <root>/tmp/                               # entries being written; renamed into place when complete
//! ```
//!
//! An entry is written into `tmp/` and renamed into place only once all its files and its
//! `entry.json` are on disk, so a crash never leaves an entry a later run believes. On read, every
//! file is checked against the hash recorded in `entry.json`; an entry that fails is moved aside to
//! `<root>/corrupt/` and recomputed. Two runs sharing a cache take the key's lock, so the second
//! waits for the first and then reads its entry instead of computing it again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::{blake3_hex, file_hash};

/// Where the cache lives: `SYNTHCTI_CACHE_DIR`, else the user's cache folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNTHCTI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("synthcti")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryMeta {
    pub stage: String,
    pub version: u32,
    pub key: String,
    pub params: serde_json::Value,
    pub inputs: Vec<String>,
    /// file name → BLAKE3 of its content
    pub files: BTreeMap<String, String>,
    pub created: String,
}

/// Where the cache's events (lock waits, corrupt entries) go: the run log, or stderr.
pub type CacheLog = std::sync::Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
    log: CacheLog,
    /// Opened for a dry run: nothing is created, moved or written.
    read_only: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("root", &self.root).finish()
    }
}

/// Who holds a lock: written into the lock file by its holder, read by whoever waits for it.
fn holder_line(stage: &str) -> String {
    format!(
        "host {} pid {} stage {stage} since {}",
        hostname(),
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// This machine's name (Linux: /proc/sys/kernel/hostname; else $HOSTNAME).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The parameters of a pipeline stage: exactly what enters its cache key beside the keys of its
/// inputs, serialized as canonical JSON. Implemented once per stage, beside the stage's code, so
/// a stage's name, version and parameter type are bound together and a key cannot be built from
/// anything else ([`StageId::of`]).
pub trait StageParams: Serialize {
    /// The stage's name: the cache folder its entries live in.
    const STAGE: &'static str;
    /// The version of the stage's code; bumped whenever the same parameters and inputs would
    /// give a different output.
    fn version(&self) -> u32;
}

/// A stage's identity: what goes into its key.
#[derive(Debug, Clone)]
pub struct StageId {
    pub stage: &'static str,
    pub version: u32,
    pub params: serde_json::Value,
    pub inputs: Vec<String>,
    pub key: String,
}

impl StageId {
    /// The id of the stage `P` belongs to, for these parameters and the keys of its inputs.
    pub fn of<P: StageParams>(params: &P, inputs: &[&str]) -> Self {
        Self::new(P::STAGE, params.version(), params, inputs)
    }

    fn new<P: Serialize>(stage: &'static str, version: u32, params: &P, inputs: &[&str]) -> Self {
        let params = serde_json::to_value(params).expect("stage params serialize");
        let key = crate::hash::stage_key(stage, version, &params, inputs);
        Self {
            stage,
            version,
            params,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            key,
        }
    }
    pub fn short(&self) -> &str {
        &self.key[..12]
    }
}

/// A writable folder for a stage's outputs, renamed into the cache on commit.
pub struct EntryWriter {
    dir: PathBuf,
}

impl EntryWriter {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        fs::write(self.dir.join(name), bytes)
            .io_ctx(ErrorKind::Cache, || format!("writing cache file {name}"))
    }
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
        self.write(name, &bytes)
    }
}

/// A finished entry: read its files.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub meta: EntryMeta,
}

impl Entry {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        fs::read(self.dir.join(name)).io_ctx(ErrorKind::Cache, || {
            format!("reading cache file {}", self.dir.join(name).display())
        })
    }
    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::cache(format!(
                "cache file {} is not what this version of synthcti wrote ({e}); delete the folder {} to recompute it",
                name,
                self.dir.display()
            ))
        })
    }
}

/// Whether a lookup found the entry or had to compute it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Computed,
}

impl Cache {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["entries", "locks", "tmp"] {
            fs::create_dir_all(root.join(sub)).io_ctx(ErrorKind::Cache, || {
                format!(
                    "cannot create the cache folder {} (set SYNTHCTI_CACHE_DIR to a writable folder)",
                    root.join(sub).display()
                )
            })?;
        }
        Ok(Self {
            root,
            log: std::sync::Arc::new(|line| eprintln!("{line}")),
            read_only: false,
        })
    }

    /// The cache for a dry run (`synthcti plan`): entries are looked up, nothing is created,
    /// moved aside or written (a missing folder is an empty cache), and computing is an error.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            log: std::sync::Arc::new(|line| eprintln!("{line}")),
            read_only: true,
        }
    }

    /// Send the cache's events (lock waits, corrupt entries) to `log` instead of stderr.
    pub fn with_log(mut self, log: CacheLog) -> Self {
        self.log = log;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_dir(&self, id: &StageId) -> PathBuf {
        self.root.join("entries").join(id.stage).join(&id.key)
    }

    /// True when a complete entry exists (without verifying file hashes; for `plan`).
    pub fn contains(&self, id: &StageId) -> bool {
        self.entry_dir(id).join("entry.json").is_file()
    }

    /// Read a complete, verified entry, or None. A corrupt entry is moved aside.
    pub fn get(&self, id: &StageId) -> Result<Option<Entry>> {
        self.get_key(id.stage, &id.key)
    }

    /// [`Cache::get`] by a stage name and key recorded earlier (a cell's `train_key`).
    pub fn get_key(&self, stage: &str, key: &str) -> Result<Option<Entry>> {
        let dir = self.root.join("entries").join(stage).join(key);
        let meta_path = dir.join("entry.json");
        if !meta_path.is_file() {
            return Ok(None);
        }
        match self.verify(&dir) {
            Ok(meta) => {
                if !self.read_only {
                    // Last use, for `synthcti cache ls` and `cache gc --older-than`.
                    let _ = fs::File::options()
                        .write(true)
                        .open(&meta_path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                }
                Ok(Some(Entry { dir, meta }))
            }
            Err(_) if self.read_only => Ok(None),
            Err(why) => {
                let aside = self
                    .root
                    .join("corrupt")
                    .join(format!("{stage}-{key}-{}", std::process::id()));
                let _ = fs::create_dir_all(self.root.join("corrupt"));
                (self.log)(format!(
                    "warning: cache entry {} ({stage}) is corrupt ({why}); moved to {} and recomputing",
                    &key[..key.len().min(12)],
                    aside.display()
                ));
                let _ = fs::rename(&dir, &aside);
                Ok(None)
            }
        }
    }

    fn verify(&self, dir: &Path) -> std::result::Result<EntryMeta, String> {
        let bytes = fs::read(dir.join("entry.json")).map_err(|e| e.to_string())?;
        let meta: EntryMeta =
            serde_json::from_slice(&bytes).map_err(|e| format!("entry.json: {e}"))?;
        for (name, want) in &meta.files {
            let got = file_hash(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            if &got != want {
                return Err(format!("{name} does not match its recorded hash"));
            }
        }
        Ok(meta)
    }

    /// Return the entry for `id`, computing it with `compute` under the key's lock if needed.
    pub fn get_or_compute(
        &self,
        id: &StageId,
        compute: impl FnOnce(&EntryWriter) -> Result<()>,
    ) -> Result<(Entry, Outcome)> {
        if let Some(e) = self.get(id)? {
            return Ok((e, Outcome::Hit));
        }
        if self.read_only {
            return Err(Error::internal(format!(
                "{} {} would be computed in a dry run",
                id.stage,
                id.short()
            )));
        }
        let lock_path = self.root.join("locks").join(format!("{}.lock", id.key));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .io_ctx(ErrorKind::Cache, || {
                format!("cannot open cache lock {}", lock_path.display())
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = holder.trim();
                (self.log)(format!(
                    "cache: waiting for {} {} ({}), held by {}",
                    id.stage,
                    id.short(),
                    lock_path.display(),
                    if holder.is_empty() {
                        "another process"
                    } else {
                        holder
                    }
                ));
                lock.lock().io_ctx(ErrorKind::Cache, || {
                    format!("cannot lock {}", lock_path.display())
                })?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).io_ctx(ErrorKind::Cache, || {
                    format!("cannot lock {}", lock_path.display())
                });
            }
        }
        {
            use std::io::Write;
            let mut f = &lock;
            let _ = f.set_len(0);
            let _ = f.write_all(holder_line(id.stage).as_bytes());
        }
        // Somebody may have finished it while we waited.
        if let Some(e) = self.get(id)? {
            return Ok((e, Outcome::Hit));
        }
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}-{}",
            id.key,
            std::process::id(),
            blake3_hex(format!("{:?}", std::time::SystemTime::now()).as_bytes())
                .get(..8)
                .unwrap_or("0")
        ));
        fs::create_dir_all(&tmp).io_ctx(ErrorKind::Cache, || {
            format!("cannot create {}", tmp.display())
        })?;
        let writer = EntryWriter { dir: tmp.clone() };
        if let Err(e) = compute(&writer) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let mut files = BTreeMap::new();
        for item in fs::read_dir(&tmp).io_ctx(ErrorKind::Cache, || tmp.display().to_string())? {
            let item = item.io_ctx(ErrorKind::Cache, || tmp.display().to_string())?;
            let name = item.file_name().to_string_lossy().to_string();
            let h = file_hash(&item.path())
                .io_ctx(ErrorKind::Cache, || item.path().display().to_string())?;
            files.insert(name, h);
        }
        let meta = EntryMeta {
            stage: id.stage.to_string(),
            version: id.version,
            key: id.key.clone(),
            params: id.params.clone(),
            inputs: id.inputs.clone(),
            files,
            created: chrono::Utc::now().to_rfc3339(),
        };
        writer.write_json("entry.json", &meta)?;
        let dest = self.entry_dir(id);
        fs::create_dir_all(dest.parent().expect("entry has a parent"))
            .io_ctx(ErrorKind::Cache, || dest.display().to_string())?;
        fs::rename(&tmp, &dest).io_ctx(ErrorKind::Cache, || {
            format!("cannot move cache entry into {}", dest.display())
        })?;
        // The entry exists, so the lock file has done its work: anyone who waits on it, or
        // makes a new one, finds the entry on its check after locking. (A failed compute keeps
        // its lock file, so two later writers cannot both compute; `cache gc` removes it.)
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        Ok((Entry { dir: dest, meta }, Outcome::Computed))
    }

    /// Remove leftovers of writers that died. Liveness is decided by the key's lock, not by a
    /// process id: a writer holds its key's lock for as long as its temporary folder exists, so a
    /// folder whose lock can be taken belongs to nobody — also when the cache is shared between
    /// machines and the writer ran on another one.
    pub fn sweep_tmp(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for item in rd.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            let Some(key) = name.split('-').next().filter(|k| !k.is_empty()) else {
                continue;
            };
            let lock_path = self.root.join("locks").join(format!("{key}.lock"));
            let lock = match fs::OpenOptions::new().write(true).open(&lock_path) {
                Ok(f) => Some(f),
                // No lock file: no writer ever held this key here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => continue,
            };
            match &lock {
                Some(f) if f.try_lock().is_err() => continue, // a live writer
                _ => {
                    let _ = fs::remove_dir_all(item.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> StageId {
        StageId::new("test", 1, &serde_json::json!({"n": n}), &[])
    }

    #[test]
    fn computes_once_then_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut calls = 0;
        let (e, o) = cache
            .get_or_compute(&id(1), |w| {
                calls += 1;
                w.write("out.txt", b"hello")
            })
            .unwrap();
        assert_eq!(o, Outcome::Computed);
        assert_eq!(e.read("out.txt").unwrap(), b"hello");
        let (_, o) = cache
            .get_or_compute(&id(1), |_| panic!("must not recompute"))
            .unwrap();
        assert_eq!(o, Outcome::Hit);
        assert_eq!(calls, 1);
    }

    #[test]
    fn failed_compute_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let r = cache.get_or_compute(&id(2), |w| {
            w.write("half.txt", b"partial")?;
            Err(Error::data("boom"))
        });
        assert!(r.is_err());
        assert!(!cache.contains(&id(2)));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_entry_is_detected_and_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let (e, _) = cache
            .get_or_compute(&id(3), |w| w.write("out.txt", b"good"))
            .unwrap();
        fs::write(e.path("out.txt"), b"bad!").unwrap();
        let (e2, o) = cache
            .get_or_compute(&id(3), |w| w.write("out.txt", b"good"))
            .unwrap();
        assert_eq!(o, Outcome::Computed);
        assert_eq!(e2.read("out.txt").unwrap(), b"good");
        assert!(dir.path().join("corrupt").read_dir().unwrap().count() == 1);
    }

    #[test]
    fn a_lock_wait_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let waiting = Cache::open(dir.path())
            .unwrap()
            .with_log(std::sync::Arc::new(move |l| sink.lock().unwrap().push(l)));
        let holder = Cache::open(dir.path()).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                holder
                    .get_or_compute(&id(5), |w| {
                        started_tx.send(()).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        w.write("out.txt", b"x")
                    })
                    .unwrap();
            });
            started_rx.recv().unwrap();
            let (_, o) = waiting
                .get_or_compute(&id(5), |_| panic!("the holder computes it"))
                .unwrap();
            assert_eq!(o, Outcome::Hit);
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let want = format!(
            "held by host {} pid {} stage test since ",
            hostname(),
            std::process::id()
        );
        assert!(
            lines[0].starts_with("cache: waiting for test "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(&want), "{}", lines[0]);
    }

    #[test]
    fn the_sweep_decides_liveness_by_the_lock_not_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        // pid 1 always runs, but nobody holds key a's lock: the folder is an orphan (its writer
        // may have been another machine's pid 1).
        let orphan = dir
            .path()
            .join("tmp")
            .join(format!("{}-1-abcd", "a".repeat(64)));
        fs::create_dir_all(&orphan).unwrap();
        fs::write(
            dir.path()
                .join("locks")
                .join(format!("{}.lock", "a".repeat(64))),
            "",
        )
        .unwrap();
        // Key b's lock is held (by another open file, as another process would): live work.
        let live = dir
            .path()
            .join("tmp")
            .join(format!("{}-999999-abcd", "b".repeat(64)));
        fs::create_dir_all(&live).unwrap();
        let held = fs::File::create(
            dir.path()
                .join("locks")
                .join(format!("{}.lock", "b".repeat(64))),
        )
        .unwrap();
        held.lock().unwrap();
        // No lock file at all: never locked here, an orphan.
        let no_lock = dir
            .path()
            .join("tmp")
            .join(format!("{}-2-abcd", "c".repeat(64)));
        fs::create_dir_all(&no_lock).unwrap();
        cache.sweep_tmp();
        assert!(!orphan.exists());
        assert!(live.exists(), "a folder whose lock is held is live work");
        assert!(!no_lock.exists());
        drop(held);
        cache.sweep_tmp();
        assert!(!live.exists());
    }

    #[test]
    fn concurrent_writers_compute_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let root = root.clone();
                let counter = counter.clone();
                s.spawn(move || {
                    let cache = Cache::open(root).unwrap();
                    cache
                        .get_or_compute(&id(4), |w| {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            w.write("out.txt", b"x")
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

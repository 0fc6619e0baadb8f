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

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
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
    pub fn new<P: Serialize>(
        stage: &'static str,
        version: u32,
        params: &P,
        inputs: &[&str],
    ) -> Self {
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
        Ok(Self { root })
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
        let dir = self.entry_dir(id);
        let meta_path = dir.join("entry.json");
        if !meta_path.is_file() {
            return Ok(None);
        }
        match self.verify(&dir) {
            Ok(meta) => Ok(Some(Entry { dir, meta })),
            Err(why) => {
                let aside = self.root.join("corrupt").join(format!(
                    "{}-{}-{}",
                    id.stage,
                    id.key,
                    std::process::id()
                ));
                let _ = fs::create_dir_all(self.root.join("corrupt"));
                eprintln!(
                    "warning: cache entry {} ({}) is corrupt ({why}); moved to {} and recomputing",
                    id.short(),
                    id.stage,
                    aside.display()
                );
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
        let lock_path = self.root.join("locks").join(format!("{}.lock", id.key));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .io_ctx(ErrorKind::Cache, || {
                format!("cannot open cache lock {}", lock_path.display())
            })?;
        lock.lock().io_ctx(ErrorKind::Cache, || {
            format!("cannot lock {}", lock_path.display())
        })?;
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
        drop(lock);
        Ok((Entry { dir: dest, meta }, Outcome::Computed))
    }

    /// Remove leftovers of writers that died (their pid no longer runs).
    pub fn sweep_tmp(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for item in rd.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !pid_alive(pid)
            {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
}

/// Whether a process with this id is running (Linux: /proc; elsewhere assume it is).
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.is_dir() {
        proc.join(pid.to_string()).exists()
    } else {
        true
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

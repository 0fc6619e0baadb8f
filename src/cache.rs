//! The content-addressed stage cache.
//!
//! Layout under the cache root:
//!
//! ```text
//! <root>/entries/<stage>/<key>/entry.json   # what made it: stage, version, params, inputs, file hashes
//! <root>/entries/<stage>/<key>/<files>      # the stage's outputs
//! <root>/locks/<key>.lock                   # one lock per key: holder and heartbeat (see below)
//! <root>/tmp/                               # entries being written; renamed into place when complete
//! ```
//!
//! An entry is written into `tmp/` and renamed into place only once all its files and its
//! `entry.json` are on disk, so a crash never leaves an entry a later run believes. On read, every
//! file is checked against the hash recorded in `entry.json`; an entry that fails is moved aside to
//! `<root>/corrupt/` and recomputed. Two runs sharing a cache take the key's lock, so the second
//! waits for the first and then reads its entry instead of computing it again.
//!
//! ## Locks that hold between machines
//!
//! The cache may sit on NFS and be shared by the tasks of a Slurm job array on several nodes,
//! where `flock` is not reliable. A key's lock is therefore a file created with `O_EXCL`
//! (`create_new`, atomic on NFSv3 and later), holding `host H pid P stage S since T`; while it
//! computes, its holder touches the file's modification time every [`HEARTBEAT`] (a heartbeat).
//! A waiter polls until the file is gone. A lock is stale — its holder died — when
//! - its holder is on this host and its pid no longer runs (decided at once), or
//! - its heartbeat is older than the lease ([`DEFAULT_LEASE`]), whichever host holds it.
//!
//! A pid is never judged on another host (the same number there means nothing here), so the
//! stale sweep ([`Cache::sweep_tmp`]) never removes another host's live work. A stale lock is
//! broken by renaming it aside (one rename wins) and checking it is the lock that was judged.
//! The lease assumes the hosts' clocks agree to well under a minute (NTP), as Slurm itself does,
//! and is longer than NFS's attribute cache (`actimeo`, 60 s at most by default).

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
    /// The host name written into lock files and compared with theirs (tests simulate hosts).
    host: String,
    /// See [`DEFAULT_LEASE`].
    lease: std::time::Duration,
    heartbeat: std::time::Duration,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("root", &self.root).finish()
    }
}

/// Who holds a lock: written into the lock file by its holder, read by whoever waits for it.
fn holder_line(host: &str, stage: &str) -> String {
    format!(
        "host {host} pid {} stage {stage} since {}",
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// How long a lock's heartbeat may be silent before the lock is taken as abandoned.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(120);
/// How often a holder touches its lock (a quarter of the default lease's margin over NFS's
/// attribute cache).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether a process runs on this host (Linux: /proc/PID; elsewhere assumed running).
fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// The host and pid of a lock file's holder line (`host H pid P stage …`).
fn parse_holder(line: &str) -> Option<(&str, u32)> {
    let mut it = line.split_whitespace();
    (it.next()? == "host").then_some(())?;
    let host = it.next()?;
    (it.next()? == "pid").then_some(())?;
    let pid = it.next()?.parse().ok()?;
    Some((host, pid))
}

/// What a key's lock file says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No lock file.
    Free,
    /// Held: the holder line (maybe empty right after creation).
    Live(String),
    /// Abandoned: its holder died (why, and the holder line).
    Stale { holder: String, why: String },
}

/// A lock this process holds: a heartbeat thread touches the file until it is dropped, and the
/// drop removes the file (when it is still this holder's).
struct HeldLock {
    path: PathBuf,
    holder: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        if fs::read_to_string(&self.path).is_ok_and(|c| c.trim() == self.holder) {
            let _ = fs::remove_file(&self.path);
        }
    }
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
            host: hostname(),
            lease: DEFAULT_LEASE,
            heartbeat: HEARTBEAT,
        })
    }

    /// The cache for a dry run (`synthcti plan`): entries are looked up, nothing is created,
    /// moved aside or written (a missing folder is an empty cache), and computing is an error.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            log: std::sync::Arc::new(|line| eprintln!("{line}")),
            read_only: true,
            host: hostname(),
            lease: DEFAULT_LEASE,
            heartbeat: HEARTBEAT,
        }
    }

    /// Name this process's host `host` in lock files (the tests simulate two machines).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// A lock whose heartbeat is silent for `lease` is stale; holders beat every `heartbeat`.
    pub fn with_lease(
        mut self,
        lease: std::time::Duration,
        heartbeat: std::time::Duration,
    ) -> Self {
        self.lease = lease;
        self.heartbeat = heartbeat;
        self
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// The state of a key's lock: free, live, or stale (its holder on this host is gone, or its
    /// heartbeat is older than the lease — never a pid judged on another host).
    pub fn lock_state(&self, key: &str) -> LockState {
        let path = self.lock_path(key);
        let Ok(meta) = fs::metadata(&path) else {
            return LockState::Free;
        };
        let holder = fs::read_to_string(&path)
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Some((host, pid)) = parse_holder(&holder)
            && host == self.host
            && !pid_alive(pid)
        {
            return LockState::Stale {
                why: format!("process {pid} no longer runs on {host}"),
                holder,
            };
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age > self.lease {
            return LockState::Stale {
                why: format!(
                    "no heartbeat for {:.0}s (lease {:.0}s)",
                    age.as_secs_f64(),
                    self.lease.as_secs_f64()
                ),
                holder,
            };
        }
        LockState::Live(holder)
    }

    /// Break a stale lock: rename it aside (one breaker wins) and delete it, unless what was
    /// renamed is not the lock judged stale (a new holder's), which is put back.
    fn break_lock(&self, key: &str, judged: &str) {
        let path = self.lock_path(key);
        let aside = self.root.join("locks").join(format!(
            "{key}.stale-{}-{}-{}",
            self.host,
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        if fs::rename(&path, &aside).is_err() {
            return; // somebody else broke it, or its holder finished
        }
        let got = fs::read_to_string(&aside).unwrap_or_default();
        if got.trim() != judged {
            // A fresh lock taken since the judgement: give it back (fails only if yet another
            // holder has taken the name, which then holds it).
            let _ = fs::hard_link(&aside, &path);
        }
        let _ = fs::remove_file(&aside);
    }

    /// Take a key's lock, waiting while another process (on any host) holds it; a stale lock is
    /// broken. The holder line is written into the file, and a heartbeat keeps it fresh.
    fn acquire(&self, id: &StageId) -> Result<HeldLock> {
        let path = self.lock_path(&id.key);
        let mut waited = false;
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let holder = holder_line(&self.host, id.stage);
                    f.write_all(holder.as_bytes())
                        .and_then(|_| f.flush())
                        .io_ctx(ErrorKind::Cache, || {
                            format!("cannot write cache lock {}", path.display())
                        })?;
                    let (stop, stopped) = std::sync::mpsc::channel::<()>();
                    let every = self.heartbeat;
                    let beat = std::thread::spawn(move || {
                        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                            stopped.recv_timeout(every)
                        {
                            let _ = f.set_modified(std::time::SystemTime::now());
                        }
                    });
                    return Ok(HeldLock {
                        path,
                        holder,
                        stop: Some(stop),
                        beat: Some(beat),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match self.lock_state(&id.key) {
                        LockState::Free => continue,
                        LockState::Stale { holder, why } => {
                            (self.log)(format!(
                                "cache: the lock of {} {} ({}) is stale ({why}); taking it over",
                                id.stage,
                                id.short(),
                                if holder.is_empty() {
                                    "no holder line"
                                } else {
                                    &holder
                                }
                            ));
                            self.break_lock(&id.key, &holder);
                            continue;
                        }
                        LockState::Live(holder) => {
                            if !waited {
                                (self.log)(format!(
                                    "cache: waiting for {} {} ({}), held by {}",
                                    id.stage,
                                    id.short(),
                                    path.display(),
                                    if holder.is_empty() {
                                        "another process"
                                    } else {
                                        &holder
                                    }
                                ));
                                waited = true;
                            }
                        }
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(250));
                }
                Err(e) => {
                    return Err(e).io_ctx(ErrorKind::Cache, || {
                        format!("cannot create cache lock {}", path.display())
                    });
                }
            }
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
        let lock = self.acquire(id)?;
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
        // The entry exists, so the lock has done its work: anyone who waits on it, or takes it
        // next, finds the entry on its check after locking. (A failed compute drops its lock too,
        // after removing its temporary folder.)
        drop(lock);
        Ok((Entry { dir: dest, meta }, Outcome::Computed))
    }

    /// Remove leftovers of writers that died. Liveness is decided by the key's lock, not by a
    /// process id on another host: a writer holds its key's lock for as long as its temporary
    /// folder exists, so a folder whose lock is free or stale ([`Cache::lock_state`]) belongs to
    /// nobody, and one whose lock is live is left alone — also when the writer is another machine.
    pub fn sweep_tmp(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for item in rd.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            let Some(key) = name.split('-').next().filter(|k| !k.is_empty()) else {
                continue;
            };
            if matches!(self.lock_state(key), LockState::Live(_)) {
                continue;
            }
            let _ = fs::remove_dir_all(item.path());
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

    /// A lock file as another process left it: `holder` inside, last heartbeat `age` ago.
    fn plant_lock(root: &Path, key: &str, holder: &str, age: std::time::Duration) {
        let p = root.join("locks").join(format!("{key}.lock"));
        fs::write(&p, holder).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    /// A pid that runs on no host of the test (above Linux's pid_max).
    const NO_PID: u32 = 4_194_305;

    #[test]
    fn the_sweep_never_removes_another_hosts_live_work() {
        let dir = tempfile::tempdir().unwrap();
        let lease = std::time::Duration::from_secs(60);
        let b = Cache::open(dir.path())
            .unwrap()
            .with_host("node-b")
            .with_lease(lease, lease / 4);
        let tmp = |key: &str| {
            let p = dir.path().join("tmp").join(format!("{key}-{NO_PID}-abcd"));
            fs::create_dir_all(&p).unwrap();
            p
        };
        let (ka, kb, kc, kd) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        // node-a's writer, whose pid does not run here but whose heartbeat is fresh: live work.
        let live = tmp(&ka);
        let holder = format!("host node-a pid {NO_PID} stage train since 2026-01-01T00:00:00Z");
        plant_lock(dir.path(), &ka, &holder, std::time::Duration::from_secs(5));
        // node-a's writer whose heartbeat stopped longer than the lease ago: dead.
        let dead = tmp(&kb);
        plant_lock(dir.path(), &kb, &holder, lease * 2);
        // node-b's own writer (this host) whose process is gone: dead at once.
        let mine = tmp(&kc);
        plant_lock(
            dir.path(),
            &kc,
            &format!("host node-b pid {NO_PID} stage train since 2026-01-01T00:00:00Z"),
            std::time::Duration::ZERO,
        );
        // No lock file at all: never locked, an orphan.
        let orphan = tmp(&kd);
        b.sweep_tmp();
        assert!(live.exists(), "another host's fresh lock is live work");
        assert!(!dead.exists());
        assert!(!mine.exists());
        assert!(!orphan.exists());
        assert!(matches!(b.lock_state(&ka), LockState::Live(h) if h == holder));
        // The same folder seen from node-a: its own pid does not run, so it is its dead writer's.
        let a = Cache::open(dir.path()).unwrap().with_host("node-a");
        assert!(matches!(a.lock_state(&ka), LockState::Stale { .. }));
    }

    #[test]
    fn a_waiter_on_another_host_waits_while_the_heartbeat_beats() {
        let dir = tempfile::tempdir().unwrap();
        // A lease shorter than the computation: only the heartbeat keeps the lock alive.
        let lease = std::time::Duration::from_millis(300);
        let beat = std::time::Duration::from_millis(50);
        let a = Cache::open(dir.path())
            .unwrap()
            .with_host("node-a")
            .with_lease(lease, beat);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let b = Cache::open(dir.path())
            .unwrap()
            .with_host("node-b")
            .with_lease(lease, beat)
            .with_log(std::sync::Arc::new(move |l| sink.lock().unwrap().push(l)));
        let computed = std::sync::atomic::AtomicUsize::new(0);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                a.get_or_compute(&id(7), |w| {
                    started_tx.send(()).unwrap();
                    computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(lease * 4);
                    w.write("out.txt", b"a")
                })
                .unwrap();
            });
            started_rx.recv().unwrap();
            let (e, o) = b
                .get_or_compute(&id(7), |w| {
                    computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    w.write("out.txt", b"b")
                })
                .unwrap();
            assert_eq!(o, Outcome::Hit);
            assert_eq!(e.read("out.txt").unwrap(), b"a");
        });
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 1);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("held by host node-a pid "),
            "{}",
            lines[0]
        );
        assert!(
            fs::read_dir(dir.path().join("locks"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_lock_whose_heartbeat_stopped_is_taken_over_after_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let lease = std::time::Duration::from_millis(400);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let b = Cache::open(dir.path())
            .unwrap()
            .with_host("node-b")
            .with_lease(lease, lease / 4)
            .with_log(std::sync::Arc::new(move |l| sink.lock().unwrap().push(l)));
        // node-a died while computing id(8): its lock stays, its heartbeat stops now.
        let key = id(8).key;
        plant_lock(
            dir.path(),
            &key,
            &format!(
                "host node-a pid {} stage test since 2026-01-01T00:00:00Z",
                std::process::id()
            ),
            std::time::Duration::ZERO,
        );
        let t = std::time::Instant::now();
        let (_, o) = b
            .get_or_compute(&id(8), |w| w.write("out.txt", b"b"))
            .unwrap();
        assert_eq!(o, Outcome::Computed);
        // Not before the lease (a pid on another host is never judged), not much after.
        assert!(t.elapsed() >= lease, "{:?}", t.elapsed());
        assert!(t.elapsed() < lease * 4, "{:?}", t.elapsed());
        let lines = lines.lock().unwrap();
        assert!(
            lines[0].starts_with("cache: waiting for test "),
            "{lines:?}"
        );
        assert!(lines[1].contains("is stale (no heartbeat for"), "{lines:?}");
        assert!(
            fs::read_dir(dir.path().join("locks"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap().with_host("node-a");
        plant_lock(
            dir.path(),
            &id(9).key,
            &format!("host node-a pid {NO_PID} stage test since 2026-01-01T00:00:00Z"),
            std::time::Duration::ZERO,
        );
        let t = std::time::Instant::now();
        let (_, o) = cache
            .get_or_compute(&id(9), |w| w.write("out.txt", b"x"))
            .unwrap();
        assert_eq!(o, Outcome::Computed);
        assert!(t.elapsed() < DEFAULT_LEASE / 10, "{:?}", t.elapsed());
    }

    #[test]
    fn breaking_a_stale_lock_never_removes_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap().with_host("node-b");
        let key = "e".repeat(64);
        // Judged stale with one holder line, but by the time of the break a new holder has it.
        let fresh = "host node-c pid 7 stage test since 2026-01-01T00:00:01Z";
        plant_lock(dir.path(), &key, fresh, std::time::Duration::ZERO);
        cache.break_lock(
            &key,
            "host node-a pid 7 stage test since 2026-01-01T00:00:00Z",
        );
        let p = dir.path().join("locks").join(format!("{key}.lock"));
        assert_eq!(fs::read_to_string(&p).unwrap(), fresh);
        assert_eq!(fs::read_dir(dir.path().join("locks")).unwrap().count(), 1);
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

//! Canonical serialization and stable hashing.
//!
//! A cache key must not depend on field order, map iteration order or how a number happens to be
//! printed, and never on Rust's `Hash`. Values are converted to `serde_json::Value`, objects are
//! written with sorted keys, floats in a fixed shortest round-trip form, and the bytes hashed with
//! BLAKE3.

use serde::Serialize;
use serde_json::Value;

/// Serialize `value` canonically: sorted object keys, no whitespace, integral floats written as
/// integers so that `1.0` and `1` hash alike.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> String {
    let v = serde_json::to_value(value).expect("canonical_json: value must serialize to JSON");
    let mut out = String::new();
    write_canonical(&v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    // Rust's Display for f64 is the shortest string that round-trips.
                    out.push_str(&format!("{f}"));
                }
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("string")),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("key"));
                out.push(':');
                write_canonical(&m[*k], out);
            }
            out.push('}');
        }
    }
}

/// Hex BLAKE3 of some bytes.
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Hex BLAKE3 of a file's content, streamed.
pub fn file_hash(path: &std::path::Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Where [`hash_by_stat`] keeps what it learnt, and whether this process may add to it.
static STAT_MEMO: std::sync::OnceLock<(std::path::PathBuf, bool)> = std::sync::OnceLock::new();

/// Remember content hashes of big inputs (models, datasets) in `dir` (the cache's `stat/`
/// folder), so a later command with the same files skips hashing them; `writable = false` reads
/// the memo without adding to it (`plan` writes nothing). Set once per process.
pub fn use_stat_memo(dir: std::path::PathBuf, writable: bool) {
    let _ = STAT_MEMO.set((dir, writable));
}

/// What a file looked like when hashed: its path (canonical), length, modification and change
/// times (nanoseconds) and inode. Any change to the file changes one of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    path: String,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

#[cfg(unix)]
fn stamp(path: &std::path::Path) -> Option<(Stamp, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let canon = path.canonicalize().ok()?;
    let m = std::fs::metadata(&canon).ok()?;
    Some((
        Stamp {
            path: canon.display().to_string(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        },
        m.modified().ok()?,
    ))
}

#[cfg(not(unix))]
fn stamp(_: &std::path::Path) -> Option<(Stamp, std::time::SystemTime)> {
    None
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Memo {
    tag: String,
    stamps: Vec<Stamp>,
    hash: String,
}

/// The hash `compute` gives for the files `paths`, memoized by their stat data (path, size,
/// times, inode) as git's index and DVC's state database do: when every file still has the
/// stamp it had when hashed, the remembered hash is returned without reading them. `tag` names
/// what is hashed (a file's bytes, a model folder's files), so two hashes of the same files
/// never mix. A file modified within the last 2 seconds is not memoized (its time could still
/// equal that of a later change, git's "racy" case). Without [`use_stat_memo`], or when a file
/// cannot be stat'ed, `compute` runs.
pub fn hash_by_stat<E>(
    tag: &str,
    paths: &[std::path::PathBuf],
    compute: impl FnOnce() -> Result<String, E>,
) -> Result<String, E> {
    let Some((dir, writable)) = STAT_MEMO.get() else {
        return compute();
    };
    let Some(stamped): Option<Vec<(Stamp, std::time::SystemTime)>> =
        paths.iter().map(|p| stamp(p)).collect()
    else {
        return compute();
    };
    let stamps: Vec<Stamp> = stamped.iter().map(|s| s.0.clone()).collect();
    let id = blake3_hex(
        canonical_json(&(tag, &stamps.iter().map(|s| &s.path).collect::<Vec<_>>())).as_bytes(),
    );
    let file = dir.join(format!("{}.json", &id[..32]));
    if let Ok(bytes) = std::fs::read(&file)
        && let Ok(m) = serde_json::from_slice::<Memo>(&bytes)
        && m.tag == tag
        && m.stamps == stamps
    {
        return Ok(m.hash);
    }
    let hash = compute()?;
    let settled = stamped.iter().all(|(_, t)| {
        t.elapsed()
            .is_ok_and(|age| age >= std::time::Duration::from_secs(2))
    });
    if *writable && settled {
        let memo = Memo {
            tag: tag.to_string(),
            stamps,
            hash: hash.clone(),
        };
        PENDING.lock().expect("memo").push((file, memo));
    }
    Ok(hash)
}

/// Memos learnt by this process, written by [`flush_stat_memo`].
static PENDING: std::sync::Mutex<Vec<(std::path::PathBuf, Memo)>> =
    std::sync::Mutex::new(Vec::new());

/// Write what [`hash_by_stat`] learnt into the memo folder (each file to a temporary name, then
/// renamed). Called once a command got past its checks, so input that is refused leaves nothing
/// in the cache folder.
pub fn flush_stat_memo() {
    let Some((dir, true)) = STAT_MEMO.get() else {
        return;
    };
    let pending = std::mem::take(&mut *PENDING.lock().expect("memo"));
    if pending.is_empty() || std::fs::create_dir_all(dir).is_err() {
        return;
    }
    for (file, memo) in pending {
        let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&tmp, serde_json::to_vec(&memo).expect("memo serializes")).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
}

/// [`file_hash`] through [`hash_by_stat`]: for inputs that are big and rarely change (datasets,
/// ATT&CK bundles, GGUF files). Cache entries are verified with [`file_hash`] itself.
pub fn input_hash(path: &std::path::Path) -> std::io::Result<String> {
    hash_by_stat("file", &[path.to_path_buf()], || file_hash(path))
}

/// The cache key of a stage: hash of (stage name, stage version, canonical params, input keys).
pub fn stage_key<P: Serialize + ?Sized>(
    stage: &str,
    version: u32,
    params: &P,
    inputs: &[&str],
) -> String {
    let doc = serde_json::json!({
        "stage": stage,
        "version": version,
        "params": serde_json::to_value(params).expect("params serialize"),
        "inputs": inputs,
    });
    blake3_hex(canonical_json(&doc).as_bytes())
}

/// A small deterministic PRNG (SplitMix64): identical streams on every machine and Rust version.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), without modulo bias worth caring about for n << 2^64.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

/// FNV-1a 64-bit: the feature hash. Stable, fast, and the same everywhere.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_normalizes_numbers() {
        let a = serde_json::json!({"b": 1.0, "a": [1, 2.5], "c": {"z": true, "y": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":[1,2.5],"b":1,"c":{"y":null,"z":true}}"#
        );
    }

    #[test]
    fn stage_key_is_stable_and_sensitive() {
        let k1 = stage_key("split", 1, &serde_json::json!({"seed": 42}), &["abc"]);
        let k2 = stage_key("split", 1, &serde_json::json!({"seed": 42.0}), &["abc"]);
        assert_eq!(k1, k2);
        // A fixed value (BLAKE3 of `{"inputs":["abc"],"params":{"seed":42},"stage":"split",
        // "version":1}`, computed independently with Python's blake3): changing the hashing
        // scheme must be a deliberate, visible change.
        assert_eq!(
            k1,
            "854d252c19eb7eab7e66bcd22b8e0bf1b1324eb140991f5657a3bc5762088741"
        );
        assert_ne!(
            k1,
            stage_key("split", 2, &serde_json::json!({"seed": 42}), &["abc"])
        );
        assert_ne!(
            k1,
            stage_key("split", 1, &serde_json::json!({"seed": 43}), &["abc"])
        );
        assert_ne!(
            k1,
            stage_key("split", 1, &serde_json::json!({"seed": 42}), &["abd"])
        );
    }

    #[test]
    fn splitmix_stream_is_fixed() {
        // Values from an independent Python implementation of the same generator (SplitMix64
        // of `seed ^ 0x5DEECE66D1CE4E5B`): splits and shuffles are pinned to them on every
        // machine.
        let mut r = SplitMix64::new(42);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x021a_94bb_b760_1313,
                0x6013_a441_a459_c79c,
                0x12f3_7771_cb32_2fc9
            ]
        );
        let mut xs: Vec<u32> = (0..10).collect();
        SplitMix64::new(7).shuffle(&mut xs);
        assert_eq!(xs, [1, 2, 4, 5, 7, 6, 9, 3, 0, 8]);
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}

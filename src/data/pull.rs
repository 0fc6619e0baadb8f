//! `synthcti data pull`: download the publishers' files at pinned commits and check their sha256.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One publisher file.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    /// Which set it belongs to (`--only`).
    pub set: &'static str,
    /// Where it goes in the data folder (and its path on a mirror).
    pub dest: &'static str,
    pub url: &'static str,
    /// Pinned sha256; `None` for a file whose upstream bytes were not pinned.
    pub sha256: Option<&'static str>,
}

pub const FILES: &[Remote] = &[
    Remote {
        set: "tram",
        dest: "tram/single_label.json",
        url: "https://raw.githubusercontent.com/center-for-threat-informed-defense/tram/f29793d8/data/tram2-data/single_label.json",
        sha256: Some("7f9966dd8647e777e28e02aa08d7a38499f4b6ba5682a2366508a7b63b82cc0f"),
    },
    Remote {
        set: "tram",
        dest: "tram/bootstrap-training-data.json",
        url: "https://raw.githubusercontent.com/center-for-threat-informed-defense/tram/f29793d8/data/training/bootstrap-training-data.json",
        sha256: Some("73029c363b059da6448ab09c71e6a5b7be5f19aa0e0404f1a01e811a64ae29e9"),
    },
    Remote {
        set: "tram",
        dest: "tram/LICENSE.txt",
        url: "https://raw.githubusercontent.com/center-for-threat-informed-defense/tram/f29793d8/LICENSE.txt",
        sha256: Some("c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    },
    Remote {
        set: "cti-to-mitre",
        dest: "cti-to-mitre/dataset.csv",
        url: "https://raw.githubusercontent.com/dessertlab/cti-to-mitre-with-nlp/c7ff78db/data/dataset.csv",
        sha256: Some("f4f88303720457b90610da21ff1179fc5dab63d84ad1d770172dddc96fbef022"),
    },
    Remote {
        set: "cti-to-mitre",
        dest: "cti-to-mitre/dataset_tram.csv",
        url: "https://raw.githubusercontent.com/dessertlab/cti-to-mitre-with-nlp/c7ff78db/data/dataset_tram.csv",
        sha256: Some("fe4cd13c8f0ccd036058b0e666cf4016a1920b20d19faa6ba7f99c0406bd4d0c"),
    },
    Remote {
        set: "cti-to-mitre",
        dest: "cti-to-mitre/LICENSE",
        url: "https://raw.githubusercontent.com/dessertlab/cti-to-mitre-with-nlp/c7ff78db/LICENSE",
        sha256: Some("7abe19ec9bb73b36141b999b861d24ad855e808bafe0f81e84cce28556f6c297"),
    },
    Remote {
        set: "attack",
        dest: "attack/enterprise-attack.json",
        url: "https://raw.githubusercontent.com/mitre/cti/ATT%26CK-v18.1/enterprise-attack/enterprise-attack.json",
        sha256: None,
    },
];

pub fn sets() -> Vec<&'static str> {
    let mut s: Vec<&str> = FILES.iter().map(|f| f.set).collect();
    s.dedup();
    s
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    AlreadyPresent,
    Downloaded { sha256: String, verified: bool },
}

/// Fetch one file into `dir`, via `mirror` (base URL holding the data folder's layout) if given.
pub fn pull_one(r: &Remote, dir: &Path, mirror: Option<&str>) -> Result<Pulled> {
    let dest = dir.join(r.dest);
    if let Some(want) = r.sha256
        && dest.is_file()
        && sha256_file(&dest).ok().as_deref() == Some(want)
    {
        return Ok(Pulled::AlreadyPresent);
    }
    let url = match mirror {
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), r.dest),
        None => r.url.to_string(),
    };
    let parent = dest.parent().expect("dest has a parent");
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::download(format!("cannot create {}: {e}", parent.display())))?;
    let mut resp = ureq::get(&url)
        .call()
        .map_err(|e| Error::download(format!("downloading {url}: {e}")))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| Error::download(format!("cannot write in {}: {e}", parent.display())))?;
    let mut hasher = Sha256::new();
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::download(format!("downloading {url}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::download(format!("writing {}: {e}", dest.display())))?;
    }
    let got = format!("{:x}", hasher.finalize());
    if let Some(want) = r.sha256
        && got != want
    {
        return Err(Error::download(format!(
            "{url}: sha256 {got} does not match the pinned {want}; the file was not saved. The source may have changed or the download was corrupted: try again, or check the mirror"
        )));
    }
    tmp.persist(&dest)
        .map_err(|e| Error::download(format!("cannot save {}: {e}", dest.display())))?;
    Ok(Pulled::Downloaded {
        sha256: got,
        verified: r.sha256.is_some(),
    })
}

/// `synthcti data pull`: fetch the files of the sets in `only` (every set when empty) into `dir`,
/// via `mirror` if given, verifying pinned SHA-256 checksums; one line per file on stdout.
///
/// # Errors
/// An unknown set name (before any download), or the first file that could not be fetched
/// (after trying every file).
pub fn pull(dir: &Path, only: &[String], mirror: Option<&str>) -> Result<()> {
    let known = sets();
    for o in only {
        if !known.contains(&o.as_str()) {
            return Err(Error::config(format!(
                "--only {o}: unknown set; valid: {}",
                known.join(", ")
            )));
        }
    }
    let mut failures = Vec::new();
    for r in FILES
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| o == r.set))
    {
        match pull_one(r, dir, mirror) {
            Ok(Pulled::AlreadyPresent) => {
                println!("ok        {} (already present, sha256 verified)", r.dest)
            }
            Ok(Pulled::Downloaded {
                sha256,
                verified: true,
            }) => {
                println!("verified  {} sha256 {sha256}", r.dest)
            }
            Ok(Pulled::Downloaded {
                sha256,
                verified: false,
            }) => println!(
                "fetched   {} sha256 {sha256} (no pinned checksum for this file)",
                r.dest
            ),
            Err(e) => {
                eprintln!("error: {}", e.message);
                failures.push(e);
            }
        }
    }
    match failures.into_iter().next() {
        Some(e) => Err(Error::download(format!(
            "some files were not downloaded (first: {})",
            e.message
        ))),
        None => {
            println!("data folder: {}", dir.display());
            Ok(())
        }
    }
}

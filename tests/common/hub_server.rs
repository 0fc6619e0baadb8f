//! A Hugging Face Hub on 127.0.0.1 for the tests of models by id: it serves local model folders
//! in the Hub's URL layout, as `hf-hub` 0.5 (`api::sync`) reads it, and records every request.
//!
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: `{"sha", "siblings": [{"rfilename"}]}`, or
//!   404 (`X-Error-Code: RevisionNotFound` / `RepositoryNotFound`).
//! - `GET /{owner}/{name}/resolve/{rev}/{file}` with `Range`: 206 with `x-repo-commit`, `etag`
//!   and `Content-Range`; a `.safetensors` or `.bin` file (LFS on the Hub) is a 302 to `/cdn/{sha256}`
//!   carrying `x-linked-etag`, `x-linked-size` and `x-repo-commit`, as the Hub redirects to its
//!   CDN; a file the repository lacks is 404 (`X-Error-Code: EntryNotFound`).
//!
//! A revision is served when it is `main` or the repository's commit sha.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// One repository: an id, a commit sha, and the files of a local folder it serves.
#[derive(Clone, Debug)]
pub struct HubRepo {
    pub id: String,
    pub sha: String,
    pub dir: PathBuf,
    pub files: Vec<String>,
}

impl HubRepo {
    /// Serve `files` of `dir` as `id` at commit `sha`.
    pub fn new(id: &str, sha: &str, dir: &Path, files: &[&str]) -> Self {
        Self {
            id: id.into(),
            sha: sha.into(),
            dir: dir.to_path_buf(),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// The files a synthcti encoder reads.
pub const MODEL_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];

pub struct HubServer {
    /// The endpoint, for `HF_ENDPOINT`.
    pub url: String,
    /// `GET path` of every request, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl HubServer {
    pub fn start(repos: Vec<HubRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        let repos = Arc::new(repos);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (reqs, repos) = (reqs.clone(), repos.clone());
                std::thread::spawn(move || serve(stream, &repos, &reqs, addr));
            }
        });
        Self {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Stop accepting connections: later requests fail to connect.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn not_found(code: &str) -> Answer {
    Answer {
        status: 404,
        headers: vec![("X-Error-Code".into(), code.into())],
        body: format!("{{\"error\":\"{code}\"}}").into_bytes(),
    }
}

/// `bytes` answered for a `Range: bytes=a-` / `bytes=a-b` request (200 without one).
fn ranged(bytes: &[u8], range: Option<&str>, mut headers: Vec<(String, String)>) -> Answer {
    let Some(r) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Answer {
            status: 200,
            headers,
            body: bytes.to_vec(),
        };
    };
    let (a, b) = r.split_once('-').unwrap();
    let a: usize = a.parse().unwrap();
    let b: usize = if b.is_empty() {
        bytes.len().saturating_sub(1)
    } else {
        b.parse().unwrap()
    };
    let b = b.min(bytes.len().saturating_sub(1));
    headers.push((
        "Content-Range".into(),
        format!("bytes {a}-{b}/{}", bytes.len()),
    ));
    Answer {
        status: 206,
        headers,
        body: bytes.get(a..=b).unwrap_or_default().to_vec(),
    }
}

fn answer(
    path: &str,
    range: Option<&str>,
    repos: &[HubRepo],
    addr: std::net::SocketAddr,
) -> Answer {
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.split_once("/revision/") else {
            return not_found("RepositoryNotFound");
        };
        let Some(repo) = repos.iter().find(|r| r.id == id) else {
            return not_found("RepositoryNotFound");
        };
        if rev != "main" && rev != repo.sha {
            return not_found("RevisionNotFound");
        }
        let body = serde_json::json!({
            "id": repo.id,
            "sha": repo.sha,
            "siblings": repo.files.iter().map(|f| serde_json::json!({"rfilename": f})).collect::<Vec<_>>(),
        });
        return Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        };
    }
    if let Some(hash) = path.strip_prefix("/cdn/") {
        for repo in repos {
            for f in &repo.files {
                let bytes = std::fs::read(repo.dir.join(f)).unwrap();
                if sha256(&bytes) == hash {
                    return ranged(&bytes, range, Vec::new());
                }
            }
        }
        return not_found("EntryNotFound");
    }
    // /{owner}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        return not_found("RepositoryNotFound");
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let (rev, file) = (parts[3], parts[4]);
    let Some(repo) = repos.iter().find(|r| r.id == id) else {
        return not_found("RepositoryNotFound");
    };
    if rev != "main" && rev != repo.sha {
        return not_found("RevisionNotFound");
    }
    if !repo.files.iter().any(|f| f == file) {
        return not_found("EntryNotFound");
    }
    let bytes = std::fs::read(repo.dir.join(file)).unwrap();
    let hash = sha256(&bytes);
    let commit = ("x-repo-commit".to_string(), repo.sha.clone());
    if file.ends_with(".safetensors") || file.ends_with(".bin") {
        return Answer {
            status: 302,
            headers: vec![
                commit,
                ("x-linked-etag".into(), format!("\"{hash}\"")),
                ("x-linked-size".into(), bytes.len().to_string()),
                ("Location".into(), format!("http://{addr}/cdn/{hash}")),
            ],
            body: Vec::new(),
        };
    }
    ranged(
        &bytes,
        range,
        vec![commit, ("etag".into(), format!("\"{}\"", &hash[..40]))],
    )
}

fn serve(
    stream: TcpStream,
    repos: &[HubRepo],
    reqs: &Mutex<Vec<String>>,
    addr: std::net::SocketAddr,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    reqs.lock().unwrap().push(format!("{method} {path}"));
    let a = answer(&path, range.as_deref(), repos, addr);
    let mut out = stream;
    let reason = match a.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", a.status);
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        a.body.len()
    ));
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&a.body);
    let _ = out.flush();
}

//! An OpenAI-compatible chat-completions server on 127.0.0.1 for the `openai` provider's tests:
//! each request is recorded and answered as the test's script says (status, headers, body, delay).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
}

impl Recorded {
    /// The user message of a chat request.
    pub fn prompt(&self) -> String {
        self.body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// A chat completion whose message is `text`.
    pub fn ok(text: &str) -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000u32,
            "model": "test-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        });
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    /// A numbered list of `n` plausible CTI sentences; different `salt`s give different ones
    /// (up to 7 × 7 distinct sentences).
    pub fn sentences(n: usize, salt: usize) -> Self {
        let actors = [
            "APT29", "FIN7", "Lazarus", "Turla", "APT41", "Kimsuky", "Sandworm",
        ];
        let forms = [
            "{a} packed its loader with a custom crypter so that antivirus engines could not read the code.",
            "The {a} payload stored its configuration as an XOR-encoded blob appended to a PNG image.",
            "Analysts found that {a} split the malicious script into base64 chunks reassembled at run time.",
            "Strings inside the {a} implant were encrypted with RC4 and decrypted only in memory.",
            "{a} operators hid PowerShell commands behind several layers of string concatenation and escaping.",
            "A dropper used by {a} compressed and encrypted the second stage before writing it to disk.",
            "The {a} backdoor renamed its API calls and obfuscated control flow to frustrate reverse engineers.",
        ];
        let text = (0..n)
            .map(|i| {
                let k = salt * n + i;
                let form = forms[k % forms.len()];
                let a = actors[(k / forms.len()) % actors.len()];
                format!("{}. {}", i + 1, form.replace("{a}", a))
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self::ok(&text)
    }
    pub fn status(code: u16, body: &str) -> Self {
        Self {
            status: code,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn raw(body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    /// What Ollama's `/v1` answers for a model that is not pulled: HTTP 404 with an error object.
    pub fn not_found(model: &str) -> Self {
        let body = serde_json::json!({"error": {
            "message": format!("model \"{model}\" not found, try pulling it first"),
            "type": "api_error", "param": null, "code": null
        }});
        Self::status(404, &body.to_string())
    }
    /// The same completion without its `usage` field, as some servers send it.
    pub fn without_usage(self) -> Self {
        self.map_body(|b| {
            b.as_object_mut().unwrap().remove("usage");
        })
    }
    /// The same completion with `"usage": null`.
    pub fn null_usage(self) -> Self {
        self.map_body(|b| b["usage"] = serde_json::Value::Null)
    }
    /// The message text of a completion.
    pub fn text(&self) -> String {
        let b: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        b["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn map_body(mut self, f: impl FnOnce(&mut serde_json::Value)) -> Self {
        let mut b: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        f(&mut b);
        self.body = b.to_string();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

pub struct Server {
    /// Base URL, ending in `/v1`.
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

type Script = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// Start a server; `script(n, request)` answers the n-th request (from 0).
pub fn start(script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests: Arc<Mutex<Vec<Recorded>>> = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Script> = Arc::new(script);
    let reqs = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let reqs = reqs.clone();
            let script = script.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let rec = Recorded {
                    method,
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                };
                let n = {
                    let mut r = reqs.lock().unwrap();
                    r.push(rec.clone());
                    r.len() - 1
                };
                let reply = script(n, &rec);
                std::thread::sleep(reply.delay);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(reply.body.as_bytes());
                let _ = stream.flush();
            });
        }
    });
    Server {
        url: format!("http://{addr}/v1"),
        requests,
    }
}

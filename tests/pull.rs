//! `synthcti data pull` against an HTTP server the test starts on 127.0.0.1, serving a folder
//! laid out like the data folder.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

/// `synthcti data pull --dir DEST --mirror URL --only SET…`
fn pull(s: &Sandbox, dest: &std::path::Path, url: &str, sets: &[&str]) -> std::process::Output {
    let mut args = vec![
        "data",
        "pull",
        "--dir",
        dest.to_str().unwrap(),
        "--mirror",
        url,
    ];
    for set in sets {
        args.extend_from_slice(&["--only", set]);
    }
    s.cmd(&args)
}

/// A minimal static file server; answers until the test process ends.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let file = root.join(&path);
            let (status, body) = match std::fs::read(&file) {
                Ok(b) if !path.contains("..") => ("200 OK", b),
                _ => ("404 Not Found", b"not found".to_vec()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn pull_downloads_and_verifies_the_publishers_files() {
    let url = serve(shared_data());
    let s = Sandbox::new();
    let dest = s.path("pulled");
    let o = pull(&s, &dest, &url, &["tram", "cti-to-mitre"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("verified  tram/single_label.json sha256 7f9966dd"),
        "{out}"
    );
    assert!(
        out.contains("verified  cti-to-mitre/dataset.csv sha256 f4f88303"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(dest.join("tram/single_label.json")).unwrap(),
        std::fs::read(shared_data().join("tram/single_label.json")).unwrap()
    );
    // A second pull finds the files in place and downloads nothing.
    let o = pull(&s, &dest, &url, &["tram"]);
    assert!(stdout(&o).contains("already present"), "{}", stdout(&o));
}

#[test]
fn pull_rejects_a_file_whose_checksum_does_not_match() {
    let s = Sandbox::new();
    let fake = s.path("mirror");
    std::fs::create_dir_all(fake.join("tram")).unwrap();
    let mut body = std::fs::read(shared_data().join("tram/single_label.json")).unwrap();
    body[100] ^= 1;
    std::fs::write(fake.join("tram/single_label.json"), body).unwrap();
    let url = serve(fake);
    let dest = s.path("pulled");
    let o = pull(&s, &dest, &url, &["tram"]);
    assert_eq!(o.status.code(), Some(6));
    let e = stderr(&o);
    assert!(e.contains("does not match the pinned 7f9966dd"), "{e}");
    assert!(
        !dest.join("tram/single_label.json").exists(),
        "a bad file is not saved"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dest.join("tram")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file is left: {leftovers:?}"
    );
}

#[test]
fn pull_with_an_unknown_set_is_a_usage_error() {
    let s = Sandbox::new();
    let o = s.cmd(&[
        "data",
        "pull",
        "--dir",
        s.path("d").to_str().unwrap(),
        "--only",
        "mitre",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("tram, cti-to-mitre, attack"),
        "{}",
        stderr(&o)
    );
}

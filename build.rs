//! Build-time provenance: the git commit the binary is built from, as `SYNTHCTI_GIT_COMMIT`
//! (`git describe --always --dirty --abbrev=12`), or `unknown` outside a git checkout or
//! without git (a source tarball, `cargo install` from a copy), so the build never fails on it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["describe", "--always", "--dirty", "--abbrev=12"])
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SYNTHCTI_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout); a worktree's git dir is found by git.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

//! Models by Hugging Face id: a classifier's `model` names either a local folder or a Hub
//! repository (`albert/albert-base-v2`), resolved at a `revision` into the standard Hugging Face
//! cache with the [`hf_hub`] crate (its synchronous API over ureq 3).
//!
//! **Folder or id.** A `model` value is a folder when it exists on disk (file or folder), or when
//! it looks like a path (`./x`, `../x`, `/x`, `~/x`, `x/`, a backslash, or more than one `/`).
//! Otherwise a value of the form `owner/name` (letters, digits, `.`, `_`, `-`) is a Hub id; any
//! other value is a folder that does not exist. So `models/all-MiniLM-L6-v2` is the folder when
//! it is there and the Hub id `models/all-MiniLM-L6-v2` when it is not — errors about a Hub id
//! say so and tell how to write the folder instead (`./models/all-MiniLM-L6-v2`).
//!
//! **Where files go.** The cache is the one the Python `huggingface_hub` library uses:
//! `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
//! `models--owner--name/{blobs,refs,snapshots/<commit>}`. `HF_ENDPOINT` replaces
//! `https://huggingface.co`; `HF_TOKEN` (else the token file `$HF_HOME/token`) is sent as a bearer
//! token; `HF_HUB_OFFLINE=1` forbids any request: ids must then be in the cache.
//!
//! **Resolution.** [`fetch`] asks the Hub for the revision's commit and file list
//! (`/api/models/<id>/revision/<revision>`), chooses the files by what the repository has
//! ([`crate::ml::model_files::Layout`]: `config.json`; `tokenizer.json`, else `vocab.json` +
//! `merges.txt`, else `vocab.txt`; `model.safetensors`, else `pytorch_model.bin`), then
//! downloads each one at that commit (so the files of one resolution come from one commit) and
//! records `refs/<revision>`. [`cached`] reads the cache only. Either returns the snapshot folder,
//! which is then an ordinary model folder: cache keys hash its files' content
//! ([`crate::ml::encoder::identity`]), exactly as for a local folder, so the same weights give
//! the same keys whether they came from a folder or from the Hub, and an id whose branch moves to
//! new weights gets new keys.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::ml::model_files::{Layout, Need, wanted};

/// The revision used when the manifest names none: the default branch. Pin a commit sha for
/// results that can be reproduced.
pub const DEFAULT_REVISION: &str = "main";

/// What a classifier's `model` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A local model folder (it may not exist; validation says so).
    Folder(PathBuf),
    /// A Hugging Face Hub repository id, `owner/name`.
    Hub(String),
}

/// Whether `s` has the shape of a Hub id: `owner/name`, each part of letters, digits, `.`, `_`
/// and `-`, not starting with `.` or `-`.
pub(crate) fn is_hub_id(s: &str) -> bool {
    let Some((owner, name)) = s.split_once('/') else {
        return false;
    };
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    part(owner) && part(name)
}

impl ModelRef {
    /// Read a `model` value by the rule of the module docs (an existing path wins).
    pub fn parse(model: &str) -> Self {
        let p = Path::new(model);
        let path_like = model.starts_with(['.', '/', '~'])
            || model.ends_with('/')
            || model.contains('\\')
            || model.matches('/').count() != 1;
        if p.exists() || path_like || !is_hub_id(model) {
            ModelRef::Folder(p.to_path_buf())
        } else {
            ModelRef::Hub(model.to_string())
        }
    }

    pub fn is_hub(&self) -> bool {
        matches!(self, ModelRef::Hub(_))
    }
}

/// The Hub settings of the environment.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// The hub cache folder (`…/huggingface/hub`).
    pub cache: PathBuf,
    /// The Hub's base URL, without a trailing `/`.
    pub endpoint: String,
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: no request at all.
    pub offline: bool,
}

impl HubEnv {
    /// Read `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`HubEnv::from_env`] over any variable source (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            dirs::home_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
                .join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = var("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            cache,
            endpoint,
            token,
            offline,
        }
    }

    /// The cache folder of one repository.
    fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache
            .join(format!("models--{}", id.replace('/', "--")))
    }
}

/// The snapshot folder of `id` at `revision` when the cache has one (whatever files it holds).
/// A revision is a branch or tag (through `refs/<revision>`) or a full commit sha.
pub fn snapshot(env: &HubEnv, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = env.repo_dir(id);
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .ok()
        .map(|c| c.trim().to_string())
        .or_else(|| is_commit(revision).then(|| revision.to_string()))?;
    let snap = repo.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// The snapshot folder of `id` at `revision` when it holds the files of `need` in one of the
/// layouts [`Layout`] reads.
pub fn cached(env: &HubEnv, id: &str, revision: &str, need: Need) -> Option<PathBuf> {
    let snap = snapshot(env, id, revision)?;
    Layout::resolve(need, |f| snap.join(f).is_file())
        .ok()
        .map(|_| snap)
}

/// Whether a revision is a full commit sha (40 hex digits).
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// `id @ revision`, as messages name a Hub model.
fn named(id: &str, revision: &str) -> String {
    format!("Hugging Face model `{id}` at revision `{revision}`")
}

/// What a message adds when the id could have been meant as a folder.
fn folder_hint(id: &str) -> String {
    format!(
        " (`{id}` is not a folder here, so it is read as a Hub id; for a local folder write `./{id}`)"
    )
}

/// The snapshot folder of `id` at `revision` with the files of `need`, downloaded into the cache
/// when it is not there yet (unless `HF_HUB_OFFLINE` is set). The files are chosen by what the
/// repository has ([`Layout`]); a whole model's `config.json` is checked once downloaded
/// ([`crate::ml::encoder::check_config`]).
///
/// # Errors
/// Config (exit 2) when the repository or revision does not exist or lacks files of `need`, when
/// its config.json is not one synthcti runs, or when offline and not cached; Download (exit 6) when the Hub cannot be reached, refuses access
/// (private or gated: set `HF_TOKEN`), or a download fails. Each names the id, the revision and
/// the file where one is at fault, and what to do.
pub fn fetch(env: &HubEnv, id: &str, revision: &str, need: Need) -> Result<PathBuf> {
    let what = named(id, revision);
    if let Some(dir) = cached(env, id, revision, need) {
        return Ok(dir);
    }
    if env.offline {
        let missing: Vec<String> = match snapshot(env, id, revision) {
            Some(snap) => Layout::resolve(need, |f| snap.join(f).is_file())
                .err()
                .unwrap_or_default(),
            None => vec![wanted(need).to_string()],
        };
        return Err(Error::config(format!(
            "{what} is not in the Hugging Face cache {} ({} missing) and HF_HUB_OFFLINE is set; download it once with network access (unset HF_HUB_OFFLINE), point HF_HOME at a cache that has it, or give a local model folder{}",
            env.cache.display(),
            missing.join("; "),
            folder_hint(id)
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(env.cache.clone()))
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_retries(2)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Download,
                format!("cannot set up the Hub client: {e}"),
            )
        })?;
    let repo = hf_hub::Repo::with_revision(
        id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    let info = api
        .repo(repo.clone())
        .info()
        .map_err(|e| hub_error(env, &what, id, None, &e))?;
    let have: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let layout = Layout::resolve(need, |f| have.contains(&f)).map_err(|missing| {
        Error::config(format!(
            "{what} (commit {}) has no {}; synthcti reads {} from a model repository. Choose a revision that has them (e.g. a `refs/pr/N` conversion branch), or convert the model and give its local folder",
            info.sha,
            missing.join("; "),
            wanted(need)
        ))
    })?;
    let at_commit =
        hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, info.sha.clone());
    for f in layout.files() {
        api.repo(at_commit.clone())
            .get(f)
            .map_err(|e| hub_error(env, &what, id, Some(f), &e))?;
    }
    hf_hub::Cache::new(env.cache.clone())
        .repo(repo)
        .create_ref(&info.sha)
        .map_err(|e| {
            Error::cache(format!(
                "cannot record {what} in {}: {e}",
                env.repo_dir(id).display()
            ))
        })?;
    // Checked once recorded, so the cache keeps what was downloaded and `plan` names the fault
    // from then on, offline too.
    if need == Need::Model {
        let snap = env.repo_dir(id).join("snapshots").join(&info.sha);
        crate::ml::encoder::read_config(&snap).map_err(|e| {
            Error::config(format!(
                "{what} (commit {}): {}; synthcti runs BERT, RoBERTa, XLM-RoBERTa and ALBERT encoders",
                info.sha, e.message
            ))
        })?;
    }
    cached(env, id, revision, need).ok_or_else(|| {
        Error::new(
            ErrorKind::Download,
            format!(
                "{what}: the download finished but {} lacks the files; remove that folder and retry",
                env.repo_dir(id).display()
            ),
        )
    })
}

/// A Hub client error as a message: what failed, and what to do.
fn hub_error(
    env: &HubEnv,
    what: &str,
    id: &str,
    file: Option<&str>,
    e: &hf_hub::api::sync::ApiError,
) -> Error {
    use hf_hub::api::sync::ApiError;
    let status = match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::StatusCode(s) => Some(*s),
            _ => None,
        },
        ApiError::TooManyRetries(inner) => match inner.as_ref() {
            ApiError::RequestError(r) => match r.as_ref() {
                ureq::Error::StatusCode(s) => Some(*s),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let of = file.map(|f| format!(" file {f}")).unwrap_or_default();
    match status {
        Some(401 | 403) => Error::new(
            ErrorKind::Download,
            format!(
                "{what}{of}: access refused (HTTP {}) by {}; the repository is private or gated: set HF_TOKEN to a token with access (and accept the model's terms on its page)",
                status.unwrap_or_default(),
                env.endpoint
            ),
        ),
        Some(404) => Error::config(match file {
            None => format!(
                "{what}: no such repository or revision on {} (HTTP 404); check the id and that `revision` names a branch, tag or commit of it{}{}",
                env.endpoint,
                if env.token.is_none() {
                    "; a private repository also answers 404 without HF_TOKEN"
                } else {
                    ""
                },
                folder_hint(id)
            ),
            Some(f) => format!(
                "{what}: file {f} not found on {} (HTTP 404); check the revision, or give a local model folder",
                env.endpoint
            ),
        }),
        _ => Error::new(
            ErrorKind::Download,
            format!(
                "{what}{of}: cannot download from {}: {e}; check the network or HF_ENDPOINT, or work offline (HF_HUB_OFFLINE=1) from a cache (HF_HOME) that has the model{}",
                env.endpoint,
                folder_hint(id)
            ),
        ),
    }
}

/// What a classifier kind reads from its model: the whole model, or (trained from scratch) the
/// tokenizer only.
pub fn need_for(kind: crate::ml::params::ClassifierKind) -> Need {
    if kind == crate::ml::params::ClassifierKind::Transformer {
        Need::Tokenizer
    } else {
        Need::Model
    }
}

/// The local folder of a cell's model: the folder it names, or the cached snapshot of its Hub id
/// (which [`fetch_all`] downloaded before any work).
///
/// # Errors
/// A Hub id that is not in the cache: names it and says that `synthcti run` downloads it.
pub fn model_dir(p: &crate::ml::params::EncoderParams) -> Result<PathBuf> {
    match ModelRef::parse(&p.model) {
        ModelRef::Folder(dir) => Ok(dir),
        ModelRef::Hub(id) => {
            let revision = p.revision.as_deref().unwrap_or(DEFAULT_REVISION);
            let env = HubEnv::from_env();
            snapshot(&env, &id, revision).ok_or_else(|| {
                Error::data(format!(
                    "{} is not downloaded into {}; `synthcti run` downloads it before any work",
                    named(&id, revision),
                    env.cache.display()
                ))
            })
        }
    }
}

/// A Hub model a manifest's cells use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HubModel {
    pub id: String,
    pub revision: String,
    /// What the cells read from it (the most any of them reads).
    pub need: Need,
}

/// The Hub models of `cells`, each (id, revision) once, in order.
pub fn models_of(cells: &[crate::manifest::CellSpec]) -> Vec<HubModel> {
    let mut out: Vec<HubModel> = Vec::new();
    for c in cells {
        let Some(p) = c.params.encoder() else {
            continue;
        };
        let ModelRef::Hub(id) = ModelRef::parse(&p.model) else {
            continue;
        };
        let revision = p
            .revision
            .clone()
            .unwrap_or_else(|| DEFAULT_REVISION.into());
        let need = need_for(c.classifier);
        match out
            .iter_mut()
            .find(|m| m.id == id && m.revision == revision)
        {
            Some(m) => m.need = m.need.max(need),
            None => out.push(HubModel { id, revision, need }),
        }
    }
    out
}

/// Download what `cells` need from the Hub (a no-op for what the cache has); `run` calls it after
/// validation and before any work, so a bad id, revision or file stops the run at once.
///
/// # Errors
/// The first model that cannot be resolved, as [`fetch`] says.
pub fn fetch_all(cells: &[crate::manifest::CellSpec]) -> Result<()> {
    let env = HubEnv::from_env();
    for m in models_of(cells) {
        fetch(&env, &m.id, &m.revision, m.need)?;
    }
    Ok(())
}

/// What `synthcti plan` says about the Hub models of `cells` (it never downloads): one note per
/// model that is not in the cache, and one per model whose revision is a moving branch or tag.
pub fn plan_notes(cells: &[crate::manifest::CellSpec]) -> Vec<String> {
    let env = HubEnv::from_env();
    let mut notes = Vec::new();
    for m in models_of(cells) {
        let what = named(&m.id, &m.revision);
        match cached(&env, &m.id, &m.revision, m.need) {
            None => notes.push(format!(
                "model not downloaded: {what} is not in {}; `synthcti run` downloads it{} (the train keys of its cells are computed from its files once it is)",
                env.cache.display(),
                if env.offline {
                    ", but HF_HUB_OFFLINE is set"
                } else {
                    ""
                }
            )),
            Some(dir) => notes.push(format!("{what}: {}", dir.display())),
        }
        if !is_commit(&m.revision) {
            notes.push(format!(
                "{what} is not pinned: the branch or tag may move to other weights; set `revision` to a commit sha to reproduce results"
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_slash_name_that_is_no_folder_is_a_hub_id() {
        assert_eq!(
            ModelRef::parse("albert/albert-base-v2"),
            ModelRef::Hub("albert/albert-base-v2".into())
        );
        assert!(ModelRef::parse("ehsanaghaei/SecureBERT").is_hub());
        assert!(ModelRef::parse("sentence-transformers/all-MiniLM-L6-v2").is_hub());
    }

    #[test]
    fn paths_and_existing_folders_are_folders() {
        for p in [
            "./albert/albert-base-v2",
            "../x/y",
            "/models/x",
            "~/models/x",
            "models/x/",
            "a/b/c",
            "single-name",
            "a\\b",
            ".hidden/x",
        ] {
            assert_eq!(ModelRef::parse(p), ModelRef::Folder(p.into()), "{p}");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("owner/name")).unwrap();
        let abs = d.path().join("owner/name");
        assert!(!ModelRef::parse(abs.to_str().unwrap()).is_hub());
    }

    fn env_of(vars: &[(&str, &str)]) -> HubEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubEnv::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_environment_sets_cache_endpoint_token_and_offline() {
        let e = env_of(&[
            ("HF_HOME", "/tmp/hfh"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_x"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(e.cache, PathBuf::from("/tmp/hfh/hub"));
        assert_eq!(e.endpoint, "http://127.0.0.1:9");
        assert_eq!(e.token.as_deref(), Some("hf_x"));
        assert!(e.offline);
        let e = env_of(&[("HF_HUB_CACHE", "/c"), ("HF_HUB_OFFLINE", "0")]);
        assert_eq!(e.cache, PathBuf::from("/c"));
        assert_eq!(e.endpoint, "https://huggingface.co");
        assert!(!e.offline);
    }

    #[test]
    fn the_cache_is_read_through_refs_or_a_commit_sha() {
        let d = tempfile::tempdir().unwrap();
        let e = env_of(&[("HF_HUB_CACHE", d.path().to_str().unwrap())]);
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let snap = d.path().join("models--o--n/snapshots").join(sha);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("vocab.txt"), "[PAD]").unwrap();
        assert_eq!(cached(&e, "o/n", sha, Need::Tokenizer), Some(snap.clone()));
        assert_eq!(cached(&e, "o/n", "main", Need::Tokenizer), None);
        std::fs::create_dir_all(d.path().join("models--o--n/refs")).unwrap();
        std::fs::write(d.path().join("models--o--n/refs/main"), sha).unwrap();
        assert_eq!(
            cached(&e, "o/n", "main", Need::Tokenizer),
            Some(snap.clone())
        );
        // A whole model needs config.json and weights too; either weights file will do.
        assert_eq!(cached(&e, "o/n", "main", Need::Model), None);
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("pytorch_model.bin"), "").unwrap();
        assert_eq!(cached(&e, "o/n", "main", Need::Model), Some(snap.clone()));
    }

    #[test]
    fn offline_and_not_cached_names_the_id_revision_files_and_the_way_out() {
        let d = tempfile::tempdir().unwrap();
        let e = env_of(&[
            ("HF_HUB_CACHE", d.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        let err = fetch(&e, "o/n", "v1", Need::Model).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.message
                .contains("Hugging Face model `o/n` at revision `v1`"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("(config.json, a tokenizer (tokenizer.json, or vocab.json + merges.txt, or vocab.txt) and weights (model.safetensors or pytorch_model.bin) missing) and HF_HUB_OFFLINE is set"),
            "{}",
            err.message
        );
    }
}

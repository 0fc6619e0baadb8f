//! One error type for the whole tool, and the exit codes it maps to: [`ErrorKind::exit_code`]
//! and [`EXIT_CODES_HELP`] (shown by `--help`, mirrored in the README) are the one place they are
//! defined.

use std::fmt;

/// The exit codes and environment variables, as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  internal error (a bug, or an I/O failure outside the cache and data folders)
  2  usage or manifest error: bad flag, unknown key, wrong type, value out of range
  3  data error: a dataset file is missing, malformed, or empty after filtering
  4  the run finished but one or more cells failed (--keep-going) or were skipped (--fail-fast);
     an augmented cell that got no synthetic sentence is a failed cell
  5  cache error: the cache folder cannot be written or locked
  6  download error: a file could not be fetched or its checksum does not match

Environment:
  SYNTHCTI_DATA_DIR   data folder (same as `data.dir`)
  SYNTHCTI_CACHE_DIR  stage cache folder (default: the user's cache dir + /synthcti)
  SYNTHCTI_<KEY>      any manifest key, `__` for nesting: SYNTHCTI_SPLIT__SEED=7
  HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE
                      models given by Hugging Face id: cache, mirror, token, offline";

/// What went wrong, coarsely; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Internal,
    Config,
    Data,
    CellsFailed,
    Cache,
    Download,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Config => 2,
            ErrorKind::Data => 3,
            ErrorKind::CellsFailed => 4,
            ErrorKind::Cache => 5,
            ErrorKind::Download => 6,
        }
    }
}

/// An error with a message meant for a person: what, where, and how to fix it.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }
    pub fn cache(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cache, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn download(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Download, message)
    }
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
    /// Prefix the message with more context, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Attach a path to an I/O error, keeping a chosen kind.
pub trait IoContext<T> {
    fn io_ctx(self, kind: ErrorKind, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_ctx(self, kind: ErrorKind, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, format!("{}: {e}", what())))
    }
}

//! Progress bars (indicatif), drawn only when stderr is a terminal, and the run log.
//!
//! The run log is written as the run goes: once [`Progress::log_to`] names a file, every line
//! logged before is written to it and every later line is appended and flushed at once, so a
//! killed run leaves its log.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    log: Arc<Mutex<RunLog>>,
    quiet: bool,
}

#[derive(Default)]
struct RunLog {
    lines: Vec<String>,
    file: Option<std::fs::File>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            log: Arc::new(Mutex::new(RunLog::default())),
            quiet,
        }
    }

    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new(len));
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:<40!} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    pub fn spinner(&self, what: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})").expect("valid"),
        );
        pb.set_prefix(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// A line for the run log, also shown on stderr.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        if !self.quiet {
            self.multi.suspend(|| eprintln!("{line}"));
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &mut log.file {
            // A log line that cannot be written must not fail the run; the lines stay in memory.
            let _ = writeln!(f, "{line}").and_then(|_| f.flush());
        }
        log.lines.push(line);
    }

    /// From now on, append every line to `path` as it is logged (the lines so far first).
    pub fn log_to(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        for line in &log.lines {
            writeln!(f, "{line}")?;
        }
        f.flush()?;
        log.file = Some(f);
        Ok(())
    }

    pub fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_gets_earlier_and_later_lines_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let p = Progress::new(true);
        p.log("before");
        let path = dir.path().join("run.log");
        p.log_to(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "before\n");
        p.log("after");
        // On disk already, with the run still going.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "before\nafter\n");
        assert_eq!(p.lines(), ["before", "after"]);
    }
}

//! Progress bars (indicatif), drawn only when stderr is a terminal, and the run log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    log: Arc<Mutex<Vec<String>>>,
    quiet: bool,
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
            log: Arc::new(Mutex::new(Vec::new())),
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
        self.log.lock().expect("log lock").push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

//! `[executor]`: where a grid's cells run — in this process (`local`, the default) or as a
//! Slurm job array over a shared stage cache (`slurm`, see [`crate::slurm`]).
//!
//! ```toml
//! [executor]
//! kind = "slurm"
//! [executor.slurm]            # every job: the generation job and each classifier kind's array
//! partition = "cpu"
//! account = "lab"
//! cpus = 2
//! mem = "8G"
//! time = "01:00:00"
//! sbatch_args = ["--qos=short"]
//! [executor.resources.encoder-finetune]   # a classifier kind's array (or `generate`)
//! partition = "gpu"
//! gres = "gpu:1"
//! ```
//!
//! The raw form is checked once ([`ExecutorConfig::check`]) before any work: formats of `mem`,
//! `time` and `gres`, kinds that exist. What only the cluster knows (does the partition exist,
//! may this account use it) is asked of `sbatch --test-only` before anything is submitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::ClassifierKind;

/// `executor.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// Cells run in this process, `--jobs` at a time.
    #[default]
    Local,
    /// Cells run as a Slurm job array; the stage cache must be on a shared file system.
    Slurm,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
    fn is_local(&self) -> bool {
        *self == ExecutorKind::Local
    }
}

/// What one Slurm job asks for; every field is optional (Slurm's defaults apply), and a kind's
/// table overrides `[executor.slurm]` field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmResources {
    /// `--partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--cpus-per-task`, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem`: a number with an optional unit K, M, G or T (`4G`, `500M`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// `--time`: minutes, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--gres`, such as `gpu:1` or `gpu:a100:2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// Further `sbatch` flags, each one argument (`--qos=short`, `--constraint=avx2`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
}

impl SlurmResources {
    /// `self` with `over`'s fields where `over` sets them (its `sbatch_args` after these).
    pub fn merged(&self, over: &SlurmResources) -> SlurmResources {
        SlurmResources {
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            account: over.account.clone().or_else(|| self.account.clone()),
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            gres: over.gres.clone().or_else(|| self.gres.clone()),
            sbatch_args: self
                .sbatch_args
                .iter()
                .chain(&over.sbatch_args)
                .cloned()
                .collect(),
        }
    }

    /// The `sbatch` arguments these resources mean.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = &self.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(p) = &self.account {
            a.push(format!("--account={p}"));
        }
        if let Some(c) = self.cpus {
            a.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            a.push(format!("--mem={m}"));
        }
        if let Some(t) = &self.time {
            a.push(format!("--time={t}"));
        }
        if let Some(g) = &self.gres {
            a.push(format!("--gres={g}"));
        }
        a.extend(self.sbatch_args.iter().cloned());
        a
    }

    /// Check the formats; `key` names the table in the messages (`executor.slurm`).
    fn check(&self, key: &str) -> Result<(), (String, String)> {
        let err = |field: &str, msg: String| Err((format!("{key}.{field}"), msg));
        if self.cpus == Some(0) {
            return err("cpus", "must be at least 1".into());
        }
        if let Some(m) = &self.mem
            && !valid_mem(m)
        {
            return err(
                "mem",
                format!(
                    "`{m}` is not a memory size; write a number with an optional unit K, M, G or T, such as \"4G\""
                ),
            );
        }
        if let Some(t) = &self.time
            && !valid_time(t)
        {
            return err(
                "time",
                format!(
                    "`{t}` is not a Slurm time limit; write minutes, \"HH:MM:SS\" or \"D-HH:MM:SS\", such as \"02:00:00\""
                ),
            );
        }
        if let Some(g) = &self.gres
            && !valid_gres(g)
        {
            return err(
                "gres",
                format!(
                    "`{g}` is not a generic resource; write name[:type]:count, such as \"gpu:1\" or \"gpu:a100:2\""
                ),
            );
        }
        for (name, v) in [("partition", &self.partition), ("account", &self.account)] {
            if let Some(v) = v
                && (v.is_empty() || v.contains(char::is_whitespace))
            {
                return err(name, format!("`{v}` is not a Slurm {name} name"));
            }
        }
        if let Some(a) = self.sbatch_args.iter().find(|a| !a.starts_with('-')) {
            return err(
                "sbatch_args",
                format!(
                    "`{a}` is not an sbatch flag; give each flag with its value as one string, such as \"--qos=short\""
                ),
            );
        }
        Ok(())
    }
}

fn valid_mem(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= m.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn valid_time(t: &str) -> bool {
    let nums = |s: &str, max_parts: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= max_parts
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if t == "UNLIMITED" || t == "INFINITE" {
        return true;
    }
    match t.split_once('-') {
        Some((days, rest)) => {
            !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) && nums(rest, 3)
        }
        None => nums(t, 3),
    }
}

fn valid_gres(g: &str) -> bool {
    g.split(',').all(|one| {
        let parts: Vec<&str> = one.split(':').collect();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [name] => name_ok(name),
            // `gpu:2`, or a type without a count (`gpu:a100`).
            [name, n] => name_ok(name) && name_ok(n),
            [name, ty, n] => {
                name_ok(name)
                    && name_ok(ty)
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
            }
            _ => false,
        }
    })
}

/// `[executor]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    #[serde(skip_serializing_if = "ExecutorKind::is_local")]
    pub kind: ExecutorKind,
    /// Resources of every Slurm job.
    #[serde(skip_serializing_if = "is_default")]
    pub slurm: SlurmResources,
    /// Per job kind: a classifier kind (`fasttext`, `encoder-finetune`, …) or `generate`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, SlurmResources>,
    /// Seconds between two looks at the queue while `synthcti run` waits (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<f64>,
}

fn is_default(r: &SlurmResources) -> bool {
    *r == SlurmResources::default()
}

/// The job that makes the synthetic data several cells share.
pub const GENERATE_JOB: &str = "generate";

/// `[executor]`, checked.
#[derive(Debug, Clone, Default)]
pub struct Executor {
    pub kind: ExecutorKind,
    pub slurm: SlurmResources,
    pub resources: BTreeMap<String, SlurmResources>,
    pub poll: std::time::Duration,
}

impl Executor {
    /// The resources of a job kind: `[executor.slurm]` overridden by `[executor.resources.<kind>]`.
    pub fn resources_for(&self, job: &str) -> SlurmResources {
        match self.resources.get(job) {
            Some(over) => self.slurm.merged(over),
            None => self.slurm.clone(),
        }
    }
}

impl ExecutorConfig {
    /// The default: local, nothing set.
    pub fn is_default(&self) -> bool {
        *self == ExecutorConfig::default()
    }

    /// Check every format and kind name; errors are (key, message).
    pub fn check(&self) -> Result<Executor, (String, String)> {
        self.slurm.check("executor.slurm")?;
        let kinds = [
            ClassifierKind::Fasttext,
            ClassifierKind::EncoderFrozen,
            ClassifierKind::EncoderFinetune,
            ClassifierKind::Transformer,
            ClassifierKind::Linear,
        ];
        for (job, r) in &self.resources {
            if job != GENERATE_JOB && !kinds.iter().any(|k| k.as_str() == job) {
                return Err((
                    format!("executor.resources.{job}"),
                    format!(
                        "`{job}` is not a job kind; use a classifier kind ({}) or `{GENERATE_JOB}`",
                        kinds.map(|k| format!("`{}`", k.as_str())).join(", ")
                    ),
                ));
            }
            r.check(&format!("executor.resources.{job}"))?;
        }
        let poll = self.poll_seconds.unwrap_or(1.0);
        if !(poll > 0.0 && poll <= 600.0) {
            return Err((
                "executor.poll_seconds".into(),
                format!("{poll} is out of range; it must be > 0 and at most 600, e.g. 1"),
            ));
        }
        Ok(Executor {
            kind: self.kind,
            slurm: self.slurm.clone(),
            resources: self.resources.clone(),
            poll: std::time::Duration::from_secs_f64(poll),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for ok in ["4G", "500M", "1024", "2t"] {
            assert!(valid_mem(ok), "{ok}");
        }
        for bad in ["", "G", "4GB", "four", "4 G"] {
            assert!(!valid_mem(bad), "{bad}");
        }
        for ok in ["30", "30:00", "02:00:00", "1-00", "1-12:00", "2-00:00:00"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "2h", "1:2:3:4", "-1", "1-"] {
            assert!(!valid_time(bad), "{bad}");
        }
        for ok in ["gpu:1", "gpu:a100:2", "gpu", "gpu:1,shard:2"] {
            assert!(valid_gres(ok), "{ok}");
        }
        for bad in ["", "gpu:", "gpu:a100:x", ":1"] {
            assert!(!valid_gres(bad), "{bad}");
        }
    }

    #[test]
    fn a_kind_overrides_the_defaults_field_by_field() {
        let cfg: ExecutorConfig = toml::from_str(
            r#"
kind = "slurm"
[slurm]
partition = "cpu"
mem = "4G"
sbatch_args = ["--qos=short"]
[resources.encoder-finetune]
partition = "gpu"
gres = "gpu:1"
sbatch_args = ["--constraint=a100"]
"#,
        )
        .unwrap();
        let ex = cfg.check().unwrap();
        assert_eq!(
            ex.resources_for("encoder-finetune").args(),
            [
                "--partition=gpu",
                "--mem=4G",
                "--gres=gpu:1",
                "--qos=short",
                "--constraint=a100"
            ]
        );
        assert_eq!(
            ex.resources_for("fasttext").args(),
            ["--partition=cpu", "--mem=4G", "--qos=short"]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |body: &str| {
            toml::from_str::<ExecutorConfig>(body)
                .unwrap()
                .check()
                .unwrap_err()
        };
        assert_eq!(
            bad("[slurm]\nmem = \"4GB\"").0,
            "executor.slurm.mem".to_string()
        );
        assert_eq!(
            bad("[resources.fasttext]\ntime = \"2h\"").0,
            "executor.resources.fasttext.time"
        );
        assert_eq!(
            bad("[resources.bert]\ncpus = 1").0,
            "executor.resources.bert"
        );
        assert_eq!(bad("[slurm]\ncpus = 0").0, "executor.slurm.cpus");
        assert_eq!(
            bad("[slurm]\nsbatch_args = [\"short\"]").0,
            "executor.slurm.sbatch_args"
        );
        assert_eq!(bad("poll_seconds = 0").0, "executor.poll_seconds");
    }
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use synthcti::cache::{Cache, default_cache_dir};
use synthcti::data::pull;
use synthcti::executor::ExecutorKind;
use synthcti::manifest::{self, SetArg};
use synthcti::output::{Format, emit};
use synthcti::pipeline::{self, RunOptions};
use synthcti::{Error, ErrorKind, cache_admin, report, runs, slurm};

// burn's CPU backend allocates and frees megabyte tensors at every layer; glibc's malloc hands
// them back to the OS each time, so every use page-faults anew. mimalloc keeps them for reuse
// (MiniLM-sized matrix products measured 25-40% faster on the 2-core CI machine).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = synthcti::error::EXIT_CODES_HELP;

/// Reproduce and extend SynthCTI: classify CTI sentences into MITRE ATT&CK techniques, with and
/// without synthetic data, from a declarative TOML manifest.
#[derive(Parser)]
#[command(name = "synthcti", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every cell of a manifest's grid and write the comparison tables.
    ///
    /// Each stage (load, split, train, evaluate) runs once per distinct input through the
    /// content-addressed cache: running the same manifest again trains nothing.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Only the synthetic data: every synthetic chain of the grid (generate and filter, through
    /// the cache), written as JSON lines with provenance; nothing is trained.
    ///
    /// Every replicate's chains (`experiment.replicates`), each with its own split and generator
    /// seed. Each line: text, technique, cluster, k, template, prompt_key, call_key, generator,
    /// provider, model, filters_passed, replicate, split_seed, seed. Exits 4 when a chain has no
    /// sentence (after writing the others).
    #[command(after_help = EXIT_CODES)]
    Generate(GenerateArgs),
    /// Dry run: list every cell, every stage's cache key, and whether it is cached.
    #[command(after_help = EXIT_CODES)]
    Plan(PlanArgs),
    /// Rebuild summary.md, summary.csv, intervals.csv, per_class.csv, per_class_delta.csv and
    /// plots/ of a run folder from its cells.
    #[command(after_help = EXIT_CODES)]
    Report {
        /// A run folder, such as results/tram/20261129-101500
        run_dir: PathBuf,
    },
    /// Two run folders side by side, cell by cell (matched by configuration): macro-F1 of each
    /// and the delta B − A with a 95% paired bootstrap interval where both cells were scored on
    /// the same test sentences; "not comparable" with the reason otherwise.
    #[command(after_help = EXIT_CODES)]
    Compare {
        /// The first run folder (A), such as results/tram/20261129-101500
        run_a: PathBuf,
        /// The second run folder (B)
        run_b: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Export a trained cell as a self-contained model folder (weights, classes with ATT&CK
    /// names, calibrated threshold, test metrics, model card).
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Predict ATT&CK techniques for reports (.txt, .md, .html, .jsonl) with an exported model.
    #[command(after_help = EXIT_CODES)]
    Predict(PredictArgs),
    /// Datasets: download the publishers' files.
    #[command(subcommand)]
    Data(DataCommand),
    /// List past runs: id, start, cells, best macro-F1, status (running, killed, failed,
    /// complete). `<results>/<experiment>/latest` links to the last complete run.
    #[command(after_help = EXIT_CODES)]
    Runs {
        /// Only this experiment's runs
        experiment: Option<String>,
        /// The results folder (the manifests' `experiment.output_dir`)
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The stage cache: list entries, remove the ones no run needs.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// One task of a Slurm run (written into the job scripts by `run --executor slurm`).
    #[command(hide = true)]
    Task {
        /// The run folder's slurm/tasks.json
        plan: PathBuf,
        /// The array index: which cell of the task list
        #[arg(long, required_unless_present = "prepare")]
        index: Option<usize>,
        /// The generation job: the synthetic data the submitted cells share
        #[arg(long, conflicts_with = "index")]
        prepare: bool,
    },
    /// Print a shell completion script: `synthcti completions bash > ~/.local/share/bash-completion/completions/synthcti`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries by stage: key, size in bytes, when computed, when last used.
    Ls {
        /// Stage cache folder [env: SYNTHCTI_CACHE_DIR] [default: user cache dir/synthcti]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove the entries no run folder's plan.json references (the default), or those not used
    /// for N days (--older-than); lock files nobody holds go too.
    Gc {
        /// Stage cache folder [env: SYNTHCTI_CACHE_DIR] [default: user cache dir/synthcti]
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Folders whose run folders' entries are kept (repeatable)
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: Vec<PathBuf>,
        /// Instead: remove the entries not used for this many days
        #[arg(long, value_name = "DAYS")]
        older_than: Option<f64>,
        /// Print what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
struct ManifestArgs {
    /// The experiment manifest (TOML), such as experiments/tram.toml
    manifest: PathBuf,
    /// Override a manifest key: --set split.seed=7, --set 'experiment.seeds=[1,2,3]'.
    /// Values are TOML; applied after the file and SYNTHCTI_* variables.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Stage cache folder [env: SYNTHCTI_CACHE_DIR] [default: user cache dir/synthcti]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where models train: cpu, or cuda (a build with `--features cuda`); the same as
    /// `--set experiment.backend=…`
    #[arg(long, value_name = "BACKEND", value_parser = ["cpu", "cuda"])]
    backend: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    m: ManifestArgs,
    /// Results folder [default: <experiment.output_dir>/<experiment>/<run-id>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Cells trained at the same time
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Go on with the other cells when one fails (the default); exit 4 at the end
    #[arg(long, conflicts_with = "fail_fast")]
    keep_going: bool,
    /// Stop starting cells after the first failure
    #[arg(long)]
    fail_fast: bool,
    /// Print only the final table and the run folder
    #[arg(long, short)]
    quiet: bool,
    /// Where the cells run: local (this process, --jobs at a time) or slurm (a job array over
    /// a shared cache); the same as `--set executor.kind=…`
    #[arg(long, value_name = "KIND", value_parser = ["local", "slurm"])]
    executor: Option<String>,
    /// With the Slurm executor: return once the jobs are submitted; `synthcti report RUN_DIR`
    /// collects the results later
    #[arg(long)]
    detach: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    m: ManifestArgs,
    /// Write the JSON lines here [default: standard output]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print only errors
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    m: ManifestArgs,
    /// Print the plan as JSON (the same as --format json)
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print one row per cell and stage: table, csv or json [default: the plan as text]
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Args)]
struct ExportArgs {
    /// A run folder, such as results/tram/20261129-101500
    run_dir: PathBuf,
    /// A cell of that run (a folder name under RUN_DIR/cells)
    cell: String,
    /// The model folder to write (new or empty)
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Stage cache folder the run used [env: SYNTHCTI_CACHE_DIR] [default: user cache dir/synthcti]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// ATT&CK STIX bundle for technique names and tactics [default: the run manifest's]
    #[arg(long, value_name = "FILE")]
    attack: Option<PathBuf>,
}

#[derive(Args)]
struct PredictArgs {
    /// A folder written by `synthcti export`
    model_dir: PathBuf,
    /// Reports: .txt, .md, .html/.htm, or .jsonl (a document a line)
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    format: synthcti::predict::Format,
    /// Write here instead of standard output
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Classes listed per sentence
    #[arg(long, default_value_t = 3, value_name = "K")]
    top_k: usize,
    /// Calibrated score a technique needs, in [0, 1] [default: the model's, chosen on validation]
    #[arg(long, value_name = "P")]
    threshold: Option<f64>,
    /// The text field of .jsonl inputs
    #[arg(long, default_value = "text", value_name = "FIELD")]
    text_field: String,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the publishers' files at pinned commits and verify their sha256.
    ///
    /// Files: TRAM single_label.json and bootstrap-training-data.json (commit f29793d8),
    /// CTI-to-MITRE dataset.csv and dataset_tram.csv (commit c7ff78db), and ATT&CK
    /// enterprise-attack.json (tag ATT&CK-v18.1, not pinned by checksum).
    Pull {
        /// Data folder to fill [default: SYNTHCTI_DATA_DIR, else ./data]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only these sets: tram, cti-to-mitre, attack (repeatable)
        #[arg(long, value_name = "SET")]
        only: Vec<String>,
        /// Fetch from a mirror with the data folder's layout instead of the publishers
        #[arg(long, value_name = "URL", env = "SYNTHCTI_DATA_MIRROR")]
        mirror: Option<String>,
    },
}

fn open_cache(dir: Option<PathBuf>) -> Result<Cache, Error> {
    Cache::open(dir.unwrap_or_else(default_cache_dir))
}

/// Read and validate the manifest; big inputs are hashed through the cache's stat memo
/// (`<cache>/stat/`), which `plan` reads without adding to (`writable = false`).
fn load_manifest(a: &ManifestArgs, writable: bool) -> Result<manifest::Manifest, Error> {
    let root = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    synthcti::hash::use_stat_memo(root.join("stat"), writable);
    let mut sets = a
        .set
        .iter()
        .map(|s| SetArg::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(b) = &a.backend {
        sets.push(SetArg::parse(&format!("experiment.backend={b}"))?);
    }
    let m = manifest::load(&a.manifest, &sets)?;
    for w in &m.warnings {
        eprintln!("warning: {w}");
    }
    Ok(m)
}

fn out(text: impl AsRef<str>) -> Result<(), Error> {
    emit(text.as_ref())
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot write to stdout: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn real_main(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Run(mut a) => {
            if let Some(kind) = &a.executor {
                a.m.set.push(format!("executor.kind=\"{kind}\""));
            }
            let m = load_manifest(&a.m, true)?;
            // Models named by Hugging Face id are downloaded (or found in the cache) before any
            // work, so a bad id, revision or file stops the run here.
            synthcti::hub::fetch_all(&m.cells)?;
            let opts = RunOptions {
                out: a.out,
                jobs: a.jobs,
                fail_fast: a.fail_fast,
                quiet: a.quiet,
                task: false,
            };
            let outcome = match m.executor.kind {
                ExecutorKind::Local => {
                    if a.detach {
                        return Err(Error::config(
                            "--detach needs the Slurm executor (`--executor slurm`); a local run works in this process",
                        ));
                    }
                    let cache = open_cache(a.m.cache_dir.clone())?;
                    pipeline::run(&m, &cache, &opts)?
                }
                ExecutorKind::Slurm => {
                    let explicit =
                        a.m.cache_dir.is_some() || std::env::var_os("SYNTHCTI_CACHE_DIR").is_some();
                    // The cache is opened by the tasks; here it is only read.
                    let cache = Cache::open_read_only(
                        a.m.cache_dir.clone().unwrap_or_else(default_cache_dir),
                    );
                    let mut sets = a.m.set.clone();
                    if let Some(b) = &a.m.backend {
                        sets.push(format!("experiment.backend=\"{b}\""));
                    }
                    match slurm::run(&m, &cache, &opts, &sets, explicit, a.detach)? {
                        slurm::SlurmOutcome::Finished(o) => o,
                        slurm::SlurmOutcome::Detached { run_dir, jobs } => {
                            out(format!(
                                "submitted: {}\nresults: {}\n`synthcti report {}` collects them once the jobs end\n",
                                jobs.iter()
                                    .map(|j| format!("{} job {}", j.kind, j.job_id))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                run_dir.display(),
                                run_dir.display()
                            ))?;
                            return Ok(0);
                        }
                    }
                }
            };
            let mut text = format!("{}\n", report::terminal_table(&outcome.results));
            for (name, why) in &outcome.failed {
                text.push_str(&format!("FAILED {name}: {why}\n"));
            }
            text.push_str(&format!("results: {}\n", outcome.run_dir.display()));
            out(text)?;
            if outcome.failed.is_empty() {
                Ok(0)
            } else {
                Ok(ErrorKind::CellsFailed.exit_code())
            }
        }
        Command::Generate(a) => {
            let m = load_manifest(&a.m, true)?;
            if let Some(dir) = a.out.as_ref().and_then(|f| f.parent())
                && !dir.as_os_str().is_empty()
                && !dir.is_dir()
            {
                return Err(Error::config(format!(
                    "--out {}: the folder {} does not exist; create it or write elsewhere",
                    a.out.as_ref().expect("out is set").display(),
                    dir.display()
                )));
            }
            let cache = open_cache(a.m.cache_dir.clone())?;
            let progress = synthcti::progress::Progress::new(a.quiet);
            let chains = pipeline::synthesize_only(&m, &cache, &progress)?;
            let mut body = String::new();
            let mut failed = 0;
            for (rep, spec, r) in &chains {
                match r {
                    Ok(data) => body.push_str(&synthcti::synth_export::jsonl(&m, *rep, spec, data)),
                    Err(why) => {
                        failed += 1;
                        let of = if m.replicates() > 1 {
                            format!(" (replicate {rep})")
                        } else {
                            String::new()
                        };
                        eprintln!("FAILED {}{of}: {why}", pipeline::spec_label(spec));
                    }
                }
            }
            let rows = body.lines().count();
            match &a.out {
                Some(f) => {
                    std::fs::write(f, &body).map_err(|e| {
                        Error::internal(format!("cannot write {}: {e}", f.display()))
                    })?;
                    eprintln!("{rows} synthetic sentences: {}", f.display());
                }
                None => print!("{body}"),
            }
            Ok(if failed == 0 {
                0
            } else {
                ErrorKind::CellsFailed.exit_code()
            })
        }
        Command::Plan(a) => {
            let m = load_manifest(&a.m, false)?;
            // A dry run: nothing is written to the cache.
            let cache =
                Cache::open_read_only(a.m.cache_dir.clone().unwrap_or_else(default_cache_dir));
            let plan = pipeline::dry_run(&m, &cache)?;
            match (a.json, a.format) {
                (true, _) => out(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&plan).expect("plan serializes")
                ))?,
                (false, None) => out(plan.render())?,
                (false, Some(f)) => out(pipeline_table(&plan).render(f))?,
            }
            Ok(0)
        }
        Command::Task {
            plan,
            index,
            prepare,
        } => slurm::task(&plan, index, prepare),
        Command::Report { run_dir } => {
            let (results, failed) = if slurm::is_slurm_run(&run_dir) {
                let o = slurm::collect_report(&run_dir)?;
                (o.results, o.failed)
            } else {
                report::rebuild(&run_dir)?
            };
            let mut text = format!("{}\n", report::terminal_table(&results));
            for (name, why) in &failed {
                text.push_str(&format!("FAILED {name}: {why}\n"));
            }
            text.push_str(&format!(
                "rewrote {}/summary.md, summary.csv, intervals.csv, per_class.csv, per_class_delta.csv, plots/\n",
                run_dir.display()
            ));
            out(text)?;
            Ok(0)
        }
        Command::Compare {
            run_a,
            run_b,
            format,
        } => {
            let rows = synthcti::compare::compare(&run_a, &run_b)?;
            out(synthcti::compare::table(&rows).render(format))?;
            Ok(0)
        }
        Command::Export(a) => {
            let cache = open_cache(a.cache_dir)?;
            let meta = synthcti::export::export(
                &a.run_dir,
                &a.cell,
                &synthcti::export::ExportOptions {
                    cache: &cache,
                    to: &a.to,
                    attack: a.attack.as_deref(),
                },
            )?;
            println!("{}", synthcti::export::summary_line(&meta, &a.to));
            Ok(0)
        }
        Command::Predict(a) => {
            synthcti::predict::run_cli(&synthcti::predict::CliOptions {
                model_dir: &a.model_dir,
                inputs: &a.inputs,
                format: a.format,
                out: a.out.as_deref(),
                top_k: a.top_k,
                threshold: a.threshold,
                text_field: &a.text_field,
            })?;
            Ok(0)
        }
        Command::Data(DataCommand::Pull { dir, only, mirror }) => {
            let dir = dir
                .or_else(|| std::env::var_os("SYNTHCTI_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("data"));
            pull::pull(&dir, &only, mirror.as_deref())?;
            Ok(0)
        }
        Command::Runs {
            experiment,
            results,
            format,
        } => {
            let list = runs::list(&results, experiment.as_deref())?;
            out(runs::table(&list).render(format))?;
            Ok(0)
        }
        Command::Cache(CacheCommand::Ls { cache_dir, format }) => {
            let cache = Cache::open_read_only(cache_dir.unwrap_or_else(default_cache_dir));
            out(cache_admin::table(&cache_admin::entries(&cache)).render(format))?;
            Ok(0)
        }
        Command::Cache(CacheCommand::Gc {
            cache_dir,
            results,
            older_than,
            dry_run,
        }) => {
            let rule = match older_than {
                Some(d) if !(d >= 0.0 && d.is_finite()) => {
                    return Err(Error::config(format!(
                        "--older-than {d}: give a number of days, 0 or more, such as 30"
                    )));
                }
                Some(d) => {
                    cache_admin::GcRule::OlderThan(std::time::Duration::from_secs_f64(d * 86_400.0))
                }
                None => cache_admin::GcRule::Unreferenced(results),
            };
            let cache = open_cache(cache_dir)?;
            let r = cache_admin::gc(&cache, &rule, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            let mut text = String::new();
            for e in &r.removed {
                text.push_str(&format!(
                    "{verb} {} {} ({} bytes)\n",
                    e.stage, e.key, e.bytes
                ));
            }
            text.push_str(&format!(
                "{verb} {} entries ({} bytes) and {} unheld lock files; {} entries in use by a running run kept\n",
                r.removed.len(),
                r.bytes,
                r.stale_locks,
                r.busy
            ));
            out(text)?;
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "synthcti", &mut buf);
            out(String::from_utf8_lossy(&buf))?;
            Ok(0)
        }
    }
}

/// The plan as rows: cell, classifier, augment, seed, synthetic settings, stage, key, cached.
fn pipeline_table(plan: &pipeline::Plan) -> synthcti::output::Table {
    let mut t = synthcti::output::Table::new(&[
        "cell",
        "classifier",
        "augment",
        "seed",
        "synthetic",
        "stage",
        "key",
        "cached",
    ]);
    for c in &plan.cells {
        for st in &c.stages {
            t.rows.push(vec![
                c.cell.clone(),
                c.classifier.clone(),
                c.augment.clone(),
                c.seed.to_string(),
                c.synthetic
                    .as_ref()
                    .map(pipeline::spec_label)
                    .unwrap_or_default(),
                match &st.set {
                    Some(n) => format!("{} ({n})", st.stage),
                    None => st.stage.clone(),
                },
                st.key.clone(),
                st.cached.to_string(),
            ]);
        }
    }
    t
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use synthcti::cache::{Cache, default_cache_dir};
use synthcti::data::pull;
use synthcti::manifest::{self, SetArg};
use synthcti::pipeline::{self, RunOptions};
use synthcti::{Error, ErrorKind, report};

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
    /// Dry run: list every cell, every stage's cache key, and whether it is cached.
    #[command(after_help = EXIT_CODES)]
    Plan(PlanArgs),
    /// Rebuild summary.md, summary.csv and per_class.csv of a run folder from its cells.
    #[command(after_help = EXIT_CODES)]
    Report {
        /// A run folder, such as results/tram/20261129-101500
        run_dir: PathBuf,
    },
    /// Datasets: download the publishers' files.
    #[command(subcommand)]
    Data(DataCommand),
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
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    m: ManifestArgs,
    /// Print the plan as JSON
    #[arg(long)]
    json: bool,
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

fn load_manifest(a: &ManifestArgs) -> Result<manifest::Manifest, Error> {
    let mut sets = a
        .set
        .iter()
        .map(|s| SetArg::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(b) = &a.backend {
        sets.push(SetArg::parse(&format!("experiment.backend={b}"))?);
    }
    manifest::load(&a.manifest, &sets)
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
        Command::Run(a) => {
            let m = load_manifest(&a.m)?;
            let cache = open_cache(a.m.cache_dir.clone())?;
            let out = pipeline::run(
                &m,
                &cache,
                &RunOptions {
                    out: a.out,
                    jobs: a.jobs,
                    fail_fast: a.fail_fast,
                    quiet: a.quiet,
                },
            )?;
            println!("{}", report::terminal_table(&out.results));
            for (name, why) in &out.failed {
                println!("FAILED {name}: {why}");
            }
            println!("results: {}", out.run_dir.display());
            if out.failed.is_empty() {
                Ok(0)
            } else {
                Ok(ErrorKind::CellsFailed.exit_code())
            }
        }
        Command::Plan(a) => {
            let m = load_manifest(&a.m)?;
            // A dry run: nothing is written to the cache.
            let cache =
                Cache::open_read_only(a.m.cache_dir.clone().unwrap_or_else(default_cache_dir));
            let plan = pipeline::dry_run(&m, &cache)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).expect("plan serializes")
                );
            } else {
                print!("{}", plan.render());
            }
            Ok(0)
        }
        Command::Report { run_dir } => {
            let (results, failed) = report::rebuild(&run_dir)?;
            println!("{}", report::terminal_table(&results));
            for (name, why) in &failed {
                println!("FAILED {name}: {why}");
            }
            println!(
                "rewrote {}/summary.md, summary.csv, per_class.csv",
                run_dir.display()
            );
            Ok(0)
        }
        Command::Data(DataCommand::Pull { dir, only, mirror }) => {
            let dir = dir
                .or_else(|| std::env::var_os("SYNTHCTI_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("data"));
            pull::pull(&dir, &only, mirror.as_deref())?;
            Ok(0)
        }
    }
}

//! End-to-end: the Slurm executor on a real Slurm cluster started on this host
//! (scripts/slurm-test-cluster.sh: slurmctld and two slurmd, nodes n1 and n2, one CPU each), with
//! the real binary on small real TRAM data.
//!
//! One cluster serves every test of this binary; it is stopped when the binary exits. Set
//! SYNTHCTI_TEST_SLURM_CONF to a running cluster's slurm.conf to use that one instead. Without the
//! Slurm binaries the tests say so and pass, unless `CI` is set (CI installs slurm-wlm and munge).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cluster's slurm.conf, or None (with a message) when Slurm is not installed outside CI.
fn cluster() -> Option<&'static Path> {
    static CONF: OnceLock<Option<PathBuf>> = OnceLock::new();
    CONF.get_or_init(|| {
        if let Some(c) = std::env::var_os("SYNTHCTI_TEST_SLURM_CONF") {
            return Some(PathBuf::from(c));
        }
        let installed = ["slurmctld", "slurmd", "munged", "sbatch"].iter().all(|b| {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(b).is_file())
        });
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
            );
            eprintln!(
                "SKIPPED: the Slurm tests need slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("synthcti-slurm-test-{}", std::process::id()));
        let port = 7000 + (std::process::id() % 900) * 3;
        let o = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-test-cluster.sh"))
            .args(["start", dir.to_str().unwrap()])
            .env("SLURM_TEST_PORT_BASE", port.to_string())
            .env("SLURM_TEST_OWNER", std::process::id().to_string())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the test cluster did not start: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        Some(dir.join("slurm.conf"))
    })
    .as_deref()
}

/// One test at a time on the cluster: two nodes of one CPU each, so whether an array spreads
/// over both must not depend on another test's jobs.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! need_cluster {
    () => {
        match cluster() {
            Some(c) => (c, TURN.lock().unwrap_or_else(|e| e.into_inner())),
            None => return,
        }
    };
}

const SMALL: &str = "[[classifier]]\nkind = \"fasttext\"\ndim = [16, 32]\nbuckets = 65536\nepochs = 4\nbatch_size = 16\nlr = 0.05\n";

/// Four fastText cells (two sizes, two seeds) over small TRAM data.
fn four_cells() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &format!("[split]\nseed = 7\n{SMALL}"),
    );
    (s, m)
}

/// `synthcti ARGS` against the cluster.
fn slurm_cmd(s: &Sandbox, conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut e = vec![("SLURM_CONF", conf.to_str().unwrap())];
    e.extend_from_slice(env);
    s.cmd_env(args, &e)
}

fn run_slurm(s: &Sandbox, conf: &Path, m: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        m.to_str().unwrap(),
        "--executor",
        "slurm",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    slurm_cmd(s, conf, &args, &[])
}

/// summary.csv without the columns that measure time.
fn numbers(run_dir: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    read_csv_rows(&run_dir.join("summary.csv"))
        .into_iter()
        .map(|mut r| {
            r.remove("train_seconds");
            r
        })
        .collect()
}

fn task_results(run_dir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(run_dir.join("slurm/results"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|r| r["index"].as_u64());
    out
}

#[test]
fn a_grid_through_slurm_gives_the_numbers_of_a_local_run() {
    let (conf, _turn) = need_cluster!();
    let (s, m) = four_cells();
    let local = s.path("results/local");
    s.run_ok(&m, &local, &["--set", "experiment.seeds=[1,2]"]);
    // Its own cache: every stage is computed again, by the array's tasks.
    let (s2, m2) = four_cells();
    let remote = s2.path("results/slurm");
    let o = run_slurm(
        &s2,
        conf,
        &m2,
        &remote,
        &["--set", "experiment.seeds=[1,2]"],
    );
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let (a, b) = (numbers(&local), numbers(&remote));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "summary.csv differs between local and Slurm");
    // The same run folder as a local run, plus the tasks' logs and results.
    for f in [
        "manifest.resolved.toml",
        "plan.json",
        "summary.md",
        "per_class.csv",
        "run.log",
        "provenance.json",
        "split/train.jsonl",
        "split/test.jsonl",
    ] {
        assert!(remote.join(f).is_file(), "{f} missing");
    }
    for r in &a {
        let cell = remote.join("cells").join(&r["cell"]);
        assert!(cell.join("metrics.json").is_file(), "{}", cell.display());
        assert!(
            cell.join("predictions.jsonl").is_file(),
            "{}",
            cell.display()
        );
    }
    let results = task_results(&remote);
    assert_eq!(results.len(), 4);
    assert!(
        results
            .iter()
            .all(|r| r["ok"] == true && r["trained"] == true)
    );
    for i in 0..4 {
        assert!(remote.join(format!("slurm/logs/task-{i}.log")).is_file());
    }
    // Two nodes, one CPU each: the array spreads over both.
    let nodes: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n1", "n2"].into_iter().collect());
    let log = run_log(&remote);
    assert!(log.contains("slurm: job array "), "{log}");
    assert!(
        log.contains("4 cells: 4 trained, 0 from cache, 0 failed"),
        "{log}"
    );

    // Again: everything is cached, nothing is submitted, the numbers are the same.
    let again = s2.path("results/again");
    let o = run_slurm(&s2, conf, &m2, &again, &["--set", "experiment.seeds=[1,2]"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(numbers(&again), a);
    let log = run_log(&again);
    assert!(log.contains("slurm: 0 cells submitted, 4 cached"), "{log}");
    assert!(!log.contains("job array"), "{log}");
}

#[test]
fn tasks_that_need_the_same_stage_compute_it_once() {
    let (conf, _turn) = need_cluster!();
    let (s, m) = four_cells();
    let out = s.path("results/r");
    let o = run_slurm(&s, conf, &m, &out, &["--set", "experiment.seeds=[1,2]"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every task needs load and split; the cache's locks let one compute each, the others read it.
    let logs: Vec<String> = (0..4)
        .map(|i| std::fs::read_to_string(out.join(format!("slurm/logs/task-{i}.log"))).unwrap())
        .collect();
    for stage in ["load:", "split:"] {
        let lines: Vec<&str> = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.starts_with(stage))
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        let computed = lines
            .iter()
            .filter(|l| !l.ends_with("(from the cache)"))
            .count();
        assert_eq!(computed, 1, "{stage} computed {computed} times: {lines:?}");
    }
    assert_eq!(cache_entries(&s, "load"), 1);
    assert_eq!(cache_entries(&s, "split"), 1);
    assert_eq!(cache_entries(&s, "train"), 4);
}

#[test]
fn a_cancelled_task_fails_with_its_reason_and_resumes_on_the_next_run() {
    let (conf, _turn) = need_cluster!();
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(200));
    // Cell 0 is quick; cell 1 (dim 128, 150 epochs, no early stop) trains long enough to cancel.
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        "[[classifier]]\nkind = \"fasttext\"\ndim = 8\nepochs = 1\nmaxn = 0\nminn = 0\n\
         [[classifier]]\nkind = \"fasttext\"\ndim = 128\nepochs = 150\npatience = 0\n",
    );
    let first = s.path("results/first");
    let o = run_slurm(&s, conf, &m, &first, &["--detach"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("synthcti report"), "{}", stdout(&o));
    let tasks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("slurm/tasks.json")).unwrap()).unwrap();
    let job = tasks["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("plan.json")).unwrap()).unwrap();
    let long_cell = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["params"]["dim"] == 128)
        .unwrap()["cell"]
        .as_str()
        .unwrap()
        .to_string();
    let long = tasks["cells"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == long_cell.as_str())
        .unwrap();
    // Wait until the long cell trains (its entry is being written in the cache's tmp/).
    let start = Instant::now();
    let training = || {
        std::fs::read_dir(s.path("cache/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
            > 0
            && first.join(format!("slurm/logs/task-{long}.log")).is_file()
    };
    while !training() {
        assert!(start.elapsed() < Duration::from_secs(120), "never trained");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let o = Command::new("scancel")
        .arg(format!("{job}_{long}"))
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // `report` collects once the task has ended.
    let start = Instant::now();
    loop {
        let o = slurm_cmd(&s, conf, &["report", first.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        if !run_log(&first).contains("still ") || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let rows = read_csv_rows(&first.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    let failed = rows
        .iter()
        .find(|r| r["status"] != "ok")
        .expect("a failed row");
    assert_eq!(failed["cell"], long_cell.as_str());
    assert!(failed["error"].contains("CANCELLED"), "{}", failed["error"]);
    let log = run_log(&first);
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("slurm: task {long} ("))
                && l.contains("FAILED")
                && l.contains("CANCELLED")),
        "{log}"
    );
    // No half entry: one train entry (the quick cell's), nothing of the cancelled one.
    assert_eq!(cache_entries(&s, "train"), 1);

    // Again: only the missing cell is submitted, and the run completes.
    let second2 = s.path("results/second2");
    let o = run_slurm(&s, conf, &m, &second2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tasks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second2.join("slurm/tasks.json")).unwrap()).unwrap();
    assert_eq!(tasks["cells"].as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks["cells"][0], long_cell.as_str());
    let rows = read_csv_rows(&second2.join("summary.csv"));
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    assert_eq!(cache_entries(&s, "train"), 2);
}

#[test]
fn an_unknown_partition_fails_before_any_work() {
    let (conf, _turn) = need_cluster!();
    let (s, m) = four_cells();
    let o = run_slurm(
        &s,
        conf,
        &m,
        &s.path("results/r"),
        &["--set", "executor.slurm.partition=\"nosuchpartition\""],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("[executor.slurm]"), "{err}");
    assert!(err.contains("invalid partition"), "{err}");
    s.assert_nothing_written();
}

#[test]
fn sbatch_missing_from_path_fails_before_any_work() {
    let (s, m) = four_cells();
    let empty = s.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let o = s.cmd_env(
        &[
            "run",
            m.to_str().unwrap(),
            "--executor",
            "slurm",
            "--out",
            s.path("results/r").to_str().unwrap(),
        ],
        &[("PATH", empty.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`sbatch` is not on PATH"),
        "{}",
        stderr(&o)
    );
    s.assert_nothing_written();
}

#[test]
fn the_slurm_executor_needs_an_explicit_shared_cache() {
    let (s, m) = four_cells();
    let o = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--executor",
            "slurm",
            "--out",
            s.path("results/r").to_str().unwrap(),
        ])
        .env("HOME", s.path("home"))
        .env("XDG_CACHE_HOME", s.path("home/.cache"))
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    if !stderr(&o).contains("not on PATH") {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--cache-dir DIR"), "{}", stderr(&o));
    }
    s.assert_nothing_written();
}

#[test]
fn bad_resources_name_their_key_before_any_work() {
    let (s, m) = four_cells();
    for (set, key) in [
        ("executor.slurm.mem=\"4GB\"", "executor.slurm.mem"),
        (
            "executor.resources.fasttext.time=\"2h\"",
            "executor.resources.fasttext.time",
        ),
        ("executor.resources.bert.cpus=1", "executor.resources.bert"),
    ] {
        let o = s.cmd(&[
            "run",
            m.to_str().unwrap(),
            "--executor",
            "slurm",
            "--set",
            set,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("key `{key}`")),
            "{}",
            stderr(&o)
        );
        s.assert_nothing_written();
    }
}

#[test]
fn detach_needs_the_slurm_executor() {
    let (s, m) = four_cells();
    let o = s.cmd(&["run", m.to_str().unwrap(), "--detach"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--executor slurm"), "{}", stderr(&o));
    s.assert_nothing_written();
}

#[test]
fn the_llm_calls_cells_share_are_made_once_by_a_generation_job() {
    let (conf, _turn) = need_cluster!();
    let server = common::llm_server::start(|n, _| common::llm_server::Reply::sentences(3, n));
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    // Two seeds train on the same synthetic chain (k = 1, 3 calls of one sentence each).
    let m = s.manifest(
        &format!(
            "kind = \"tram-single\"\nattack = \"{}\"",
            attack_bundle().display()
        ),
        &format!(
            "[split]\nseed = 7\n[[classifier]]\nkind = \"fasttext\"\ndim = 16\nbuckets = 65536\nepochs = 4\nbatch_size = 16\n\
             [augment]\nkind = \"synthetic\"\ngenerator = \"remote\"\nk = 1\nper_technique = 3\nper_call = 1\n\
             [augment.targets]\nlist = [\"T1027\"]\n\n\
             [[generator]]\nname = \"remote\"\nprovider = \"openai\"\nmodel = \"test-model\"\nbase_url = \"{}\"\napi_key_env = \"TEST_LLM_KEY\"\nmax_retries = 2\nbackoff_s = 0.05\nmax_backoff_s = 0.2\n",
            server.url
        ),
    );
    let out = s.path("results/r");
    let args = vec![
        "run",
        m.to_str().unwrap(),
        "--executor",
        "slurm",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "experiment.seeds=[1,2]",
        "--quiet",
    ];
    let o = slurm_cmd(&s, conf, &args, &[("TEST_LLM_KEY", "sk-test-slurm")]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    assert_eq!(server.requests().len(), 3, "each call once");
    let tasks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("slurm/tasks.json")).unwrap()).unwrap();
    assert_eq!(tasks["jobs"][0]["kind"], "generate", "{tasks}");
    assert_eq!(tasks["jobs"][1]["kind"], "fasttext", "{tasks}");
    let gen_log = std::fs::read_to_string(out.join("slurm/logs/generate.log")).unwrap();
    assert!(gen_log.contains("3 made, 0 cached"), "{gen_log}");
    // The training tasks read the generation from the cache: no call of theirs.
    for i in 0..2 {
        let log = std::fs::read_to_string(out.join(format!("slurm/logs/task-{i}.log"))).unwrap();
        assert!(!log.contains(" made, "), "task {i} generated: {log}");
    }
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "ok" && r["augment"] == "synthetic"),
        "{rows:?}"
    );
}

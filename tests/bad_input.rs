//! The bad input corpus: malformed job files (`tests/bad_input/jobs/*.yaml`) and daemon configs
//! (`tests/bad_input/configs/*.yaml`), each with its exact expected error text in a sidecar
//! `<name>.expected`. Every job file goes through `jobkeeper validate` and through a running
//! daemon (committed over a running job's file: the running version is untouched, the daemon
//! keeps serving); every config goes through `jobkeeper run --config` (refused, nothing started).
//! No input may make the binary or the daemon panic.
//!
//! `JOBKEEPER_BLESS=1 cargo test --test bad_input` rewrites the `.expected` files from the real
//! output; read the diff before committing it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Longest a single run of the binary may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The envs, vars and channels the job files are checked against, the same for `validate
/// --config` and the running daemon (see [`DAEMON_EXTRA`]).
const VALIDATE_CONFIG: &str = "repo: {url: ./config-repo}\nstate_dir: state\ntimezone: UTC\n\
envs:\n  dev: {engine: local, vars: {WHO: world}}\n  prod:\n    engine: flink\n    \
flink: {url: \"http://127.0.0.1:9\"}\n    vars: {KAFKA: \"kafka:9092\"}\n\
alerts:\n  oncall: {webhook: {url: \"http://127.0.0.1:9/hook\", format: json}}\n";

/// Appended to `common::config` (whose `envs:` already holds `dev` with `WHO`).
const DAEMON_EXTRA: &str = "  prod:\n    engine: flink\n    flink: {url: \"http://127.0.0.1:9\"}\n    \
vars: {KAFKA: \"kafka:9092\"}\nalerts:\n  oncall: {webhook: {url: \"http://127.0.0.1:9/hook\", format: json}}\n";

/// A job file of 1 MiB + 1 byte (generated, not committed) and its expected error.
fn too_big() -> (Vec<u8>, String) {
    let mut bytes = b"env: dev\nparams: {command: [x]}\n# ".to_vec();
    bytes.resize(1024 * 1024 + 1, b'x');
    (
        bytes,
        "jobs/too-big.yaml:1:1: file is 1048577 bytes; a job file may be at most 1048576 bytes (1 MiB)\n"
            .to_string(),
    )
}

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad_input")
        .join(kind)
}

/// The corpus files of one kind: (file name, path), sorted.
fn corpus(kind: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(corpus_dir(kind))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn bless() -> bool {
    std::env::var_os("JOBKEEPER_BLESS").is_some_and(|v| v == "1")
}

fn expected_path(file: &Path) -> PathBuf {
    file.with_extension("expected")
}

/// What one run of the binary did.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `jobkeeper args...` in `cwd`, output to files, bounded by [`TIMEOUT`].
fn jobkeeper(cwd: &Path, args: &[&str]) -> Output {
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(args)
        .current_dir(cwd)
        .env_remove("JOBKEEPER_LOG")
        .env_remove("JOBKEEPER_TOKEN")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jobkeeper {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&fs::read(&out_path).unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&fs::read(&err_path).unwrap()).into_owned();
    Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Checks `actual` against the sidecar (or rewrites it with `JOBKEEPER_BLESS=1`); returns the
/// mismatch, if any.
fn compare(file: &Path, actual: &str) -> Option<String> {
    let exp = expected_path(file);
    if bless() {
        fs::write(&exp, actual).unwrap();
        return None;
    }
    let expected = fs::read_to_string(&exp).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{}:\n--- expected ---\n{expected}--- actual ---\n{actual}",
            file.display()
        )
    })
}

/// One bad job file through `jobkeeper validate jobs --config config.yaml`; returns stdout, or a
/// description of what was wrong with the run.
fn validate_one(name: &str, bytes: &[u8]) -> Result<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("jobs")).unwrap();
    fs::write(tmp.path().join("jobs").join(name), bytes).unwrap();
    fs::write(tmp.path().join("config.yaml"), VALIDATE_CONFIG).unwrap();
    let out = jobkeeper(tmp.path(), &["validate", "jobs", "--config", "config.yaml"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    if text.contains("panicked") {
        return Err(format!("{name}: panicked:\n{text}"));
    }
    if out.code != 1 || !out.stderr.starts_with("1 job file(s) checked: 1 invalid, ") {
        return Err(format!(
            "{name}: want exit 1 and one invalid file, got exit {}:\n{text}",
            out.code
        ));
    }
    for line in out.stdout.lines() {
        let rest = line
            .strip_prefix(&format!("jobs/{name}:"))
            .unwrap_or_else(|| panic!("{name}: line without its path: {line}"));
        let mut parts = rest.splitn(3, ':');
        let (l, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if l.parse::<u32>().is_err() || c.parse::<u32>().is_err() {
            return Err(format!("{name}: line without `path:line:col`: {line}"));
        }
    }
    Ok(out.stdout)
}

#[test]
fn every_bad_job_file_is_refused_by_validate_with_its_expected_errors() {
    let files = corpus("jobs");
    let configs = corpus("configs");
    assert!(
        files.len() + configs.len() + 1 >= 60,
        "the corpus has {} job files and {} configs",
        files.len(),
        configs.len()
    );
    let mut failures = Vec::new();
    for (name, path) in &files {
        match validate_one(name, &fs::read(path).unwrap()) {
            Ok(stdout) => failures.extend(compare(path, &stdout)),
            Err(e) => failures.push(e),
        }
    }
    let (bytes, expected) = too_big();
    match validate_one("too-big.yaml", &bytes) {
        Ok(stdout) if stdout == expected => {}
        Ok(stdout) => failures.push(format!("too-big.yaml: {stdout}")),
        Err(e) => failures.push(e),
    }
    assert!(
        failures.is_empty(),
        "{} of {} job files:\n{}",
        failures.len(),
        files.len() + 1,
        failures.join("\n")
    );
    println!("{} bad job files refused by validate", files.len() + 1);
}

#[test]
fn every_bad_config_stops_start_up_with_its_expected_errors() {
    let mut failures = Vec::new();
    let files = corpus("configs");
    for (name, path) in &files {
        let tmp = tempfile::tempdir().unwrap();
        fs::copy(path, tmp.path().join(name)).unwrap();
        let out = jobkeeper(tmp.path(), &["run", "--config", name]);
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains("panicked") {
            failures.push(format!("{name}: panicked:\n{text}"));
            continue;
        }
        if out.code != 1 || !out.stdout.is_empty() {
            failures.push(format!(
                "{name}: want exit 1 and nothing on stdout, got exit {}:\n{text}",
                out.code
            ));
            continue;
        }
        let first = out.stderr.lines().next().unwrap_or("");
        if !first.starts_with(&format!("{name}:")) {
            failures.push(format!(
                "{name}: the first error names no `file:line:col`: {first}"
            ));
        }
        // Nothing started: no store, no state folder.
        if tmp.path().join("state").exists() {
            failures.push(format!("{name}: a state folder was created"));
        }
        failures.extend(compare(path, &out.stderr));
    }
    assert!(
        failures.is_empty(),
        "{} of {} configs:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    println!("{} bad configs refused at start-up", files.len());
}

/// A file name that cannot be a job name: such a file is committed under its own name, not
/// over the running job's file.
fn is_name_case(expected: &str) -> bool {
    expected.contains(": job name ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_never_touch_the_running_version_nor_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(341));
    git.commit_push("a");
    let d = start(tmp.path(), &config(tmp.path(), &git, DAEMON_EXTRA)).await;
    let pid = d.running_pid("a").await;

    let mut cases: Vec<(String, Vec<u8>, String)> = corpus("jobs")
        .into_iter()
        .map(|(name, path)| {
            let expected = fs::read_to_string(expected_path(&path)).unwrap_or_default();
            (name, fs::read(&path).unwrap(), expected)
        })
        .collect();
    let (bytes, expected) = too_big();
    cases.push(("too-big.yaml".into(), bytes, expected));

    let mut invalid_events = 0;
    for (name, bytes, expected) in &cases {
        let stem = name.trim_end_matches(".yaml");
        let name_case = is_name_case(expected);
        let (rel, job) = if name_case {
            (format!("jobs/{name}"), stem.to_string())
        } else {
            ("jobs/a.yaml".to_string(), "a".to_string())
        };
        fs::write(git.work.join(&rel), bytes).unwrap();
        let id = git.commit_push(&format!("bad input: {name}"));
        wait_for(&format!("{name} applied"), Duration::from_secs(15), || {
            d.store.applied_commit().unwrap() == Some(id.clone())
        })
        .await;
        let row = d
            .job(&job)
            .unwrap_or_else(|| panic!("{name}: no job row for `{job}`"));
        let problems = row.invalid.clone().unwrap_or_default();
        // The same `path:line:col: message` lines as `validate`, for the file's path in the repo.
        for line in expected.lines() {
            let mut want = line.replacen(&format!("jobs/{name}"), &rel, 1);
            if name == "too-big.yaml" {
                // The daemon words the size limit its own way (the file is not even read).
                want = format!("{rel}:1:1: job file is 1048577 bytes");
            }
            assert!(
                problems.contains(&want),
                "{name}: the daemon recorded\n{problems}\nwant the line\n{want}"
            );
        }
        assert!(!problems.contains("panicked"), "{name}: {problems}");
        assert!(alive(pid), "{name}: the running version is untouched");
        assert_eq!(d.runs("a").len(), 1, "{name}: a was not restarted");
        assert_eq!(d.live_runs("a").len(), 1, "{name}");
        if name_case {
            assert_eq!(row.state, "invalid", "{name}");
            assert!(d.runs(&job).is_empty(), "{name}: nothing ran");
            git.remove(&rel);
        } else {
            invalid_events += 1;
            // Read past the helper's 100 events: the corpus makes more than 100 commits.
            let events = d.store.events(Some("a"), 1000).unwrap();
            let n = events.iter().filter(|e| e.kind == "invalid").count();
            assert_eq!(n, invalid_events, "{name}: one invalid event per commit");
        }
        assert_eq!(d.get("/healthz").await.0, 200, "{name}: daemon serving");
    }
    // Fixing the file applies it: the daemon still reconciles.
    git.write("jobs/a.yaml", &sleeper(342));
    git.commit_push("fix a");
    wait_for("a redeployed", Duration::from_secs(15), || !alive(pid)).await;
    let new = d.running_pid("a").await;
    assert!(cmdline(new).contains("sleep 342"));
    println!(
        "{} bad job files committed to a running daemon",
        cases.len()
    );
    let mut d = d;
    d.stop().await;
}

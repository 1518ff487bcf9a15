//! Exact-output tests of the `jobkeeper` binary: each test runs the real binary in a temporary
//! folder and pins its stdout, stderr and exit code.
//!
//! No test binds a port or starts a daemon that stays up: `run` is only given configs it must
//! refuse. Every run of the binary is bounded by [`TIMEOUT`], and no output may contain
//! "panicked" (malformed input must never crash the binary).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Longest a single run of the binary may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What one run of the binary did.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Pins the exit code, stdout and stderr exactly.
    #[track_caller]
    fn expect(&self, code: i32, stdout: &str, stderr: &str) {
        assert_eq!(
            (self.code, self.stdout.as_str(), self.stderr.as_str()),
            (code, stdout, stderr),
            "\n--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `jobkeeper args...` in `cwd` with its output sent to files (so a large output can never
/// block it), waiting at most [`TIMEOUT`].
#[track_caller]
fn jobkeeper(cwd: &Path, args: &[&str]) -> Output {
    let out_dir = TempDir::new().expect("tempdir");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(args)
        .current_dir(cwd)
        .env_remove("JOBKEEPER_LOG")
        .env_remove("JOBKEEPER_TOKEN")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jobkeeper {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&fs::read(&out_path).expect("stdout")).into_owned();
    let stderr = String::from_utf8_lossy(&fs::read(&err_path).expect("stderr")).into_owned();
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("panicked"),
            "jobkeeper {args:?} panicked:\n{text}"
        );
    }
    let code = status
        .code()
        .unwrap_or_else(|| panic!("jobkeeper {args:?} was killed by a signal: {status}"));
    Output {
        code,
        stdout,
        stderr,
    }
}

/// Writes `content` to `root/rel`, creating folders.
fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

fn tempdir() -> TempDir {
    TempDir::new().expect("tempdir")
}

/// The message every bad job name ends with.
const NAME_RULE: &str = "a job name is lowercase letters, digits, `.`, `_`, `-` and `/`, starts \
with a letter or digit, has no empty or `..` segment and is at most 128 characters";

/// A daemon config with a local env `dev` and a flink env `prod` (vars `KAFKA`), and one
/// alert channel `oncall`.
const CONFIG: &str = r#"repo: {url: ./config-repo}
state_dir: state
secrets_dir: secrets
timezone: UTC
envs:
  dev: {engine: local}
  prod:
    engine: flink
    flink: {url: "http://flink-jm:8081"}
    vars: {KAFKA: "kafka-prod:9092"}
alerts:
  oncall: {webhook: {url: "https://chat.example.com/hook", format: slack}}
"#;

/// Good job files, covering every field and the schedule syntaxes.
fn write_good_jobs(dir: &Path) {
    write(
        dir,
        "team-a/clicks.yaml",
        r#"# yaml-language-server: $schema=../../docs/job.schema.json
project:
  repo: https://git.example.com/data/clicks.git
  branch: main
  dir: jobs/clicks
  build: mvn -B -q package -DskipTests
  artifact: target/clicks-*.jar
  follow: true
env: prod
params:
  main_class: com.example.Clicks
  args: ["--topic", "clicks", "--brokers", "${var:KAFKA}", "--password", "${secret:kafka_pw}"]
  parallelism: 4
  conf: {taskmanager.numberOfTaskSlots: "2"}
restart: {attempts: 5, window: 1h, backoff: 10s, max_backoff: 5m}
upgrade: savepoint
alerts: [oncall]
suspend: false
"#,
    );
    write(
        dir,
        "reports/nightly.yml",
        "env: dev\nparams:\n  command: [./report.sh, --day, yesterday]\n  environment: {TZ: UTC}\n  \
         workdir: /srv/reports\nschedule: \"30 2 * * MON-FRI\"\noverlap: replace\ntimeout: 2h\n",
    );
    write(
        dir,
        "weekly.yaml",
        "env: dev\nparams: {command: [sleep, \"100\"]}\nschedule: \"0 0 0 * * 7\"\nsuspend: true\n",
    );
    write(
        dir,
        "daily.yaml",
        "env: dev\nparams: {command: [echo, \"{artifact}\"]}\nschedule: \"@daily\"\n",
    );
    write(
        dir,
        "heartbeat.yaml",
        "env: dev\nparams: {command: [sleep, \"5\"]}\n",
    );
    // Not job files: ignored.
    write(dir, "README.md", "# jobs\n");
    write(dir, "notes.txt", "env: [\n");
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn validate_good_folder() {
    let tmp = tempdir();
    write_good_jobs(&tmp.path().join("good"));
    jobkeeper(tmp.path(), &["validate", "good"]).expect(
        0,
        "",
        "5 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
}

#[test]
fn validate_good_folder_with_config() {
    let tmp = tempdir();
    write_good_jobs(&tmp.path().join("good"));
    write(tmp.path(), "config.yaml", CONFIG);
    jobkeeper(tmp.path(), &["validate", "good", "--config", "config.yaml"]).expect(
        0,
        "",
        "5 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
}

/// One broken file per kind of problem, each pinned to its `path:line:col: message`.
fn write_bad_jobs(dir: &Path) {
    write(
        dir,
        "unknown-field.yaml",
        "enviroment: dev\nparams: {command: [x]}\n",
    );
    write(dir, "wrong-type.yaml", "env: [prod]\n");
    write(
        dir,
        "bad-duration.yaml",
        "env: dev\ntimeout: 5 minutes please\n",
    );
    write(dir, "bad-cron.yaml", "env: dev\nschedule: \"61 2 * * *\"\n");
    write(
        dir,
        "duplicate-key.yaml",
        "env: dev\nparams: {}\nenv: prod\n",
    );
    write(
        dir,
        "not-utf8.yaml",
        b"env: dev\nparams: {workdir: \"ab\xff\"}\n",
    );
    write(dir, "too-big.yaml", vec![b'#'; 1024 * 1024 + 1]);
    write(dir, "empty.yaml", "");
    write(dir, "Bad_Name.yaml", "env: dev\n");
    write(dir, "UPPER/x.yaml", "env: dev\n");
    write(
        dir,
        "laughs.yaml",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n\
         b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
         c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
         d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
         e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    );
    write(
        dir,
        "deep.yaml",
        format!("env: {}{}\n", "[".repeat(100), "]".repeat(100)),
    );
    write(dir, "syntax.yaml", "env: dev\nparams: [\n");
    write(
        dir,
        "several.yml",
        "project:\n  repo: [x]\n  folow: true\nenv: dev\nparams:\n  args: \"--x\"\n  paralelism: 2\n\
         schedule: \"* * * *\"\noverlap: skip\n",
    );
    write(dir, "twice.yaml", "env: dev\n");
    write(dir, "twice.yml", "env: dev\n");
}

#[test]
fn validate_bad_folder_reports_every_problem_sorted_by_file() {
    let tmp = tempdir();
    write_bad_jobs(&tmp.path().join("bad"));
    let expected = [
        format!("bad/Bad_Name.yaml:1:1: job name `Bad_Name` contains `B`; {NAME_RULE}"),
        format!("bad/UPPER/x.yaml:1:1: job name `UPPER/x` contains `U`; {NAME_RULE}"),
        "bad/bad-cron.yaml:2:11: `schedule`: invalid cron `61 2 * * *`: minute `61` out of range in `61`; expected 0-59".into(),
        "bad/bad-duration.yaml:2:10: `timeout`: invalid duration `5 minutes please` (expected number at 10); expected a duration like `90s`, `5m` or `2h`".into(),
        "bad/deep.yaml:1:69: nesting deeper than 64 levels".into(),
        "bad/duplicate-key.yaml:3:1: duplicate key `env` (first defined at line 1, column 1)".into(),
        "bad/empty.yaml:1:1: the file is empty; expected a YAML mapping of fields".into(),
        "bad/laughs.yaml:4:36: aliases expand to more than 10000 nodes; write the values out or use fewer aliases".into(),
        "bad/not-utf8.yaml:2:22: invalid UTF-8 (byte 0xff); the file must be UTF-8 text".into(),
        "bad/several.yml:2:9: `project.repo`: expected a string, found a list".into(),
        "bad/several.yml:3:3: unknown field `folow` in `project`, did you mean `follow`?".into(),
        "bad/several.yml:6:9: `params.args`: expected a list, found a string".into(),
        "bad/several.yml:7:3: unknown field `paralelism` in `params`, did you mean `parallelism`?".into(),
        "bad/several.yml:8:11: `schedule`: invalid cron `* * * *`: expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found 4".into(),
        "bad/several.yml:9:10: `overlap`: unknown value `skip`; expected one of: forbid, replace, allow".into(),
        "bad/syntax.yaml:3:1: invalid YAML: while parsing a node, did not find expected node content".into(),
        "bad/too-big.yaml:1:1: file is 1048577 bytes; a job file may be at most 1048576 bytes (1 MiB)".into(),
        "bad/twice.yml:1:1: two files define the job `twice`: keep one of `twice.yaml` and `twice.yml`".into(),
        "bad/unknown-field.yaml:1:1: unknown field `enviroment`, did you mean `env`?".into(),
        "bad/wrong-type.yaml:1:6: `env`: expected a string, found a list".into(),
    ];
    let stdout: String = expected.iter().map(|l| format!("{l}\n")).collect();
    jobkeeper(tmp.path(), &["validate", "bad"]).expect(
        1,
        &stdout,
        "16 job file(s) checked: 15 invalid, 20 error(s)\n",
    );
}

#[test]
fn validate_with_config_checks_envs_vars_channels_and_engine_params() {
    let tmp = tempdir();
    write(tmp.path(), "config.yaml", CONFIG);
    let jobs = tmp.path().join("jobs");
    write(
        &jobs,
        "a-unknown-env.yaml",
        "env: staging\nparams: {command: [x]}\n",
    );
    write(
        &jobs,
        "b-unknown-var.yaml",
        "env: prod\nparams:\n  args: [\"--brokers\", \"${var:KAFKA_URL}\", \"${secret:pw}\"]\n  main_class: A\n",
    );
    write(
        &jobs,
        "c-unknown-channel.yaml",
        "env: prod\nalerts: [oncall, pager]\nparams: {main_class: A}\n",
    );
    write(
        &jobs,
        "d-no-command.yaml",
        "env: dev\nparams: {workdir: /tmp}\n",
    );
    write(
        &jobs,
        "e-fine.yaml",
        "env: prod\nparams: {main_class: A, args: [\"${var:KAFKA}\", \"${secret:pw}\"]}\nalerts: [oncall]\n",
    );
    let stdout = "\
jobs/a-unknown-env.yaml:1:6: unknown env `staging`; known envs: dev, prod
jobs/b-unknown-var.yaml:3:23: unknown var `KAFKA_URL` in `${var:KAFKA_URL}`; known vars of env `prod`: KAFKA
jobs/c-unknown-channel.yaml:2:18: unknown alert channel `pager`; known channels: oncall
jobs/d-no-command.yaml:2:9: env `dev` runs on the local engine, which needs `params.command` (the argv to run, e.g. `command: [\"./run.sh\"]`)
";
    // Default DIR is `./jobs`.
    jobkeeper(tmp.path(), &["validate", "--config", "config.yaml"]).expect(
        1,
        stdout,
        "5 job file(s) checked: 4 invalid, 4 error(s)\n",
    );
    // Without a config, the same files are fine: envs, vars and channels are not known.
    jobkeeper(tmp.path(), &["validate"]).expect(
        0,
        "",
        "5 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
    // A config without `secrets_dir`: every `${secret:..}` is refused where it is written.
    write(
        tmp.path(),
        "config.yaml",
        CONFIG.replace("secrets_dir: secrets\n", ""),
    );
    let out = jobkeeper(
        tmp.path(),
        &["validate", "jobs/e-fine.yaml", "--config", "config.yaml"],
    );
    out.expect(
        1,
        "jobs/e-fine.yaml:2:48: `${secret:pw}` needs `secrets_dir` in the daemon config, which sets none; add `secrets_dir: /etc/jobkeeper/secrets` with a file `pw` in it\n",
        "1 job file(s) checked: 1 invalid, 1 error(s)\n",
    );
}

#[test]
fn validate_with_a_bad_config_reports_the_config() {
    let tmp = tempdir();
    write_good_jobs(&tmp.path().join("jobs"));
    write(
        tmp.path(),
        "config.yaml",
        "repo: {url: ./r}\nstate_dir: state\nenvs:\n  dev: {engine: beam}\n",
    );
    jobkeeper(tmp.path(), &["validate", "--config", "config.yaml"]).expect(
        1,
        "",
        "config.yaml:4:17: `envs.dev.engine`: unknown engine `beam`; expected one of: local, flink, spark, yarn\n\
         error: the daemon config config.yaml has 1 problem(s)\n",
    );
    jobkeeper(tmp.path(), &["validate", "--config", "missing.yaml"]).expect(
        1,
        "",
        "missing.yaml:1:1: cannot read the daemon config: No such file or directory (os error 2)\n\
         error: the daemon config missing.yaml has 1 problem(s)\n",
    );
}

#[test]
fn validate_default_dir_is_jobs() {
    let tmp = tempdir();
    write(tmp.path(), "jobs/ok.yaml", "env: dev\n");
    write(
        tmp.path(),
        "jobs/team-a/bad.yaml",
        "env: dev\nsuspend: yes\n",
    );
    jobkeeper(tmp.path(), &["validate"]).expect(
        1,
        "jobs/team-a/bad.yaml:2:10: `suspend`: expected `true` or `false`, found a string\n",
        "2 job file(s) checked: 1 invalid, 1 error(s)\n",
    );
}

/// `validate --config` read `./jobs` whatever the config's `repo.path`; it reads that folder,
/// in the config's local repo, and takes one job file too.
#[test]
fn validate_with_config_reads_its_repo_path_and_takes_a_single_file() {
    let tmp = tempdir();
    write(
        tmp.path(),
        "config.yaml",
        CONFIG.replace(
            "repo: {url: ./config-repo}",
            "repo: {url: ./config-repo, path: pipelines}",
        ),
    );
    write(
        tmp.path(),
        "config-repo/pipelines/ok.yaml",
        "env: dev\nparams: {command: [x]}\n",
    );
    write(
        tmp.path(),
        "config-repo/pipelines/bad.yaml",
        "env: dev\nsuspend: yes\nparams: {command: [x]}\n",
    );
    jobkeeper(tmp.path(), &["validate", "--config", "config.yaml"]).expect(
        1,
        &format!(
            "{}/config-repo/pipelines/bad.yaml:2:10: `suspend`: expected `true` or `false`, found a string\n",
            tmp.path().display()
        ),
        "2 job file(s) checked: 1 invalid, 1 error(s)\n",
    );
    jobkeeper(tmp.path(), &["validate", "config-repo/pipelines/ok.yaml"]).expect(
        0,
        "",
        "1 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
}

/// With no `javac` on the build `PATH` (`build.path`: a real folder without one), `validate
/// --config` reports each SQL job whose env has no pre-built runner, at its `sql` or
/// `sql_file`; jar jobs, and SQL jobs on an env with a `sql_runner`, are fine.
#[test]
fn validate_without_javac_reports_sql_jobs_that_need_the_runner_built() {
    let tmp = tempdir();
    let nojdk = tmp.path().join("nojdk");
    fs::create_dir_all(&nojdk).unwrap();
    let config = CONFIG
        .replace(
            "timezone: UTC\n",
            &format!("timezone: UTC\nbuild: {{path: \"{}\"}}\n", nojdk.display()),
        )
        .replace(
            "  dev: {engine: local}\n",
            "  dev: {engine: local}\n  pre:\n    engine: flink\n    flink: {url: \"http://f:8081\", sql_runner: /opt/runner.jar}\n",
        );
    write(tmp.path(), "config.yaml", &config);
    let sql =
        "CREATE TABLE t (x INT) WITH ('connector' = 'datagen');\nINSERT INTO u SELECT x FROM t;\n";
    write(
        tmp.path(),
        "jobs/jar.yaml",
        "env: prod\nparams: {main_class: a.B}\n",
    );
    jobkeeper(tmp.path(), &["validate", "jobs", "--config", "config.yaml"]).expect(
        0,
        "",
        "1 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
    write(
        tmp.path(),
        "jobs/inline.yaml",
        format!(
            "# clicks\nenv: prod\nsql: |\n  {}",
            sql.replace('\n', "\n  ")
        ),
    );
    write(
        tmp.path(),
        "jobs/file.yaml",
        "env: prod\nsql_file: file.sql\n",
    );
    write(tmp.path(), "jobs/file.sql", sql);
    write(
        tmp.path(),
        "jobs/pre.yaml",
        "env: pre\nsql_file: file.sql\n",
    );
    let needs = format!(
        "env `prod` has no `sql_runner` and there is no `javac` to build the SQL runner: SQL jobs \
         need the SQL runner, built with `javac` and `jar` (a JDK 8 or later) found on the build \
         PATH ({}); install a JDK there (or add its `bin` folder to `build.path` in the daemon \
         config), or give a pre-built runner jar as `sql_runner: \
         /path/to/jobkeeper-sql-runner.jar` in the env's `flink:` block",
        nojdk.display()
    );
    jobkeeper(tmp.path(), &["validate", "jobs", "--config", "config.yaml"]).expect(
        1,
        &format!(
            "jobs/file.yaml:2:11: `sql_file`: {needs}\njobs/inline.yaml:4:3: `sql`: {needs}\n"
        ),
        "4 job file(s) checked: 2 invalid, 2 error(s)\n",
    );
}

#[test]
fn validate_missing_folder() {
    let tmp = tempdir();
    jobkeeper(tmp.path(), &["validate"]).expect(
        1,
        "",
        "error: cannot read the folder jobs: No such file or directory (os error 2)\n",
    );
    jobkeeper(tmp.path(), &["validate", "nowhere"]).expect(
        1,
        "",
        "error: cannot read the folder nowhere: No such file or directory (os error 2)\n",
    );
}

/// `validate --config FILE` on a host with no job folder (the packaged config's own hint, a
/// config repo that is remote) checks the daemon config alone; a bad config still fails, and a
/// folder named on the command line must exist.
#[test]
fn validate_with_only_a_config_checks_the_daemon_config_alone() {
    let tmp = tempdir();
    write(
        tmp.path(),
        "config.yaml",
        CONFIG.replace("./config-repo", "git@git.example.com:ops/jobs.git"),
    );
    jobkeeper(tmp.path(), &["validate", "--config", "config.yaml"]).expect(
        0,
        "",
        "the daemon config config.yaml is valid; no job folder jobs here, so no job file was \
         checked (name one: `jobkeeper validate DIR --config FILE`)\n",
    );
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.yaml");
    let out = jobkeeper(
        tmp.path(),
        &["validate", "--config", packaged.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{out:?}");
    write(
        tmp.path(),
        "bad.yaml",
        CONFIG.replace("engine: local", "engine: nomad"),
    );
    let out = jobkeeper(tmp.path(), &["validate", "--config", "bad.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nomad"), "{out:?}");
    jobkeeper(
        tmp.path(),
        &["validate", "nowhere", "--config", "config.yaml"],
    )
    .expect(
        1,
        "",
        "error: cannot read the folder nowhere: No such file or directory (os error 2)\n",
    );
}

/// The cluster example's `restart` and `sync` need a token: its config names a token file
/// that is there.
#[test]
fn the_cluster_example_names_a_token_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
    let text = fs::read_to_string(root.join("jobkeeper-flink.yaml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("api_token_file:"))
        .unwrap_or_else(|| panic!("no api_token_file in jobkeeper-flink.yaml"));
    let file = line["api_token_file:".len()..]
        .split('#')
        .next()
        .unwrap()
        .trim();
    let token = fs::read_to_string(root.join(file)).unwrap();
    assert!(!token.trim().is_empty());
}

// ---------------------------------------------------------------------------------------------
// plan

/// Runs git in `dir` with a fixed identity and no user or system config.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann Operator")
        .env("GIT_AUTHOR_EMAIL", "ann@example.com")
        .env("GIT_COMMITTER_NAME", "Ann Operator")
        .env("GIT_COMMITTER_EMAIL", "ann@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A config repo with two commits; the second adds, changes, renames, breaks and removes jobs.
fn plan_repo() -> (TempDir, PathBuf) {
    let tmp = tempdir();
    let repo = tmp.path().join("config-repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["-c", "init.defaultBranch=main", "init", "-q"]);
    let project = |branch: &str| {
        format!(
            "project: {{repo: /srv/git/clicks.git, branch: {branch}, build: make, artifact: \"out/*.jar\"}}\n\
             env: dev\nparams: {{command: [java, -jar, \"{{artifact}}\"]}}\n"
        )
    };
    write(
        &repo,
        "jobs/svc.yaml",
        "env: dev\nparams: {command: [sleep, \"5\"]}\n",
    );
    write(&repo, "jobs/built.yaml", project("main"));
    write(
        &repo,
        "jobs/quiet.yaml",
        "env: dev\nparams: {command: [x]}\nrestart: {attempts: 3}\n",
    );
    write(
        &repo,
        "jobs/old.yaml",
        "env: dev\nparams: {command: [gone]}\n",
    );
    write(
        &repo,
        "jobs/before.yaml",
        "env: dev\nparams: {command: [mv]}\n",
    );
    write(
        &repo,
        "jobs/broken.yaml",
        "env: dev\nparams: {command: [keep]}\n",
    );
    write(
        &repo,
        "jobs/comment.yaml",
        "env: dev\nparams: {command: [c]}\n",
    );
    write(&repo, "README.md", "config repo\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    write(
        &repo,
        "jobs/team-a/new.yaml",
        "env: dev\nparams: {command: [new]}\nschedule: \"@daily\"\n",
    );
    write(
        &repo,
        "jobs/svc.yaml",
        "env: dev\nparams: {command: [sleep, \"1\"]}\n",
    );
    write(&repo, "jobs/built.yaml", project("release"));
    write(
        &repo,
        "jobs/quiet.yaml",
        "env: dev\nparams: {command: [x]}\nrestart: {attempts: 5}\n",
    );
    fs::remove_file(repo.join("jobs/old.yaml")).expect("rm");
    git(&repo, &["mv", "jobs/before.yaml", "jobs/after.yaml"]);
    write(
        &repo,
        "jobs/broken.yaml",
        "env: dev\nparams: {command: [keep]}\ntimeout: soon\n",
    );
    write(
        &repo,
        "jobs/comment.yaml",
        "# only a comment\nenv: dev\nparams: {command: [c]}\n",
    );
    write(&repo, "jobs/notes.md", "not a job file\n");
    write(&repo, "README.md", "config repo, changed\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    (tmp, repo)
}

const PLAN_TEXT: &str = "\
add       after  (jobs/after.yaml)
          - new service job in env `dev`
remove    before  (jobs/before.yaml)
          - job file removed: the job is stopped, its history kept
invalid   broken  (jobs/broken.yaml)
          - job file is invalid: the previous version keeps running untouched
          jobs/broken.yaml:3:10: `timeout`: invalid duration `soon` (expected number at 0); expected a duration like `90s`, `5m` or `2h`
rebuild   built  (jobs/built.yaml)
          - project.branch: `main` → `release`
unchanged comment  (jobs/comment.yaml)
          - the file changed, not what it asks for (comments, layout or the order of keys)
remove    old  (jobs/old.yaml)
          - job file removed: the job is stopped, its history kept
in-place  quiet  (jobs/quiet.yaml)
          - restart changed
redeploy  svc  (jobs/svc.yaml)
          - params.command changed
add       team-a/new  (jobs/team-a/new.yaml)
          - new batch job in env `dev`
plan: 2 add, 1 rebuild, 1 redeploy, 1 in-place, 2 remove, 1 invalid, 1 unchanged
";

#[test]
fn plan_text() {
    let (_tmp, repo) = plan_repo();
    jobkeeper(&repo, &["plan", "--from", "HEAD~1", "--to", "HEAD"]).expect(1, PLAN_TEXT, "");
    jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "text",
        ],
    )
    .expect(1, PLAN_TEXT, "");
    // --repo from elsewhere gives the same plan.
    let parent = repo.parent().expect("parent");
    jobkeeper(
        parent,
        &[
            "plan",
            "--repo",
            "config-repo",
            "--from",
            "HEAD~1",
            "--to",
            "HEAD",
        ],
    )
    .expect(1, PLAN_TEXT, "");
}

#[test]
fn plan_markdown() {
    let (_tmp, repo) = plan_repo();
    let out = jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "markdown",
        ],
    );
    assert_eq!((out.code, out.stderr.as_str()), (1, ""), "{out:?}");
    for want in [
        "### jobkeeper plan `HEAD~1` → `HEAD`\n",
        "**2 add, 1 rebuild, 1 redeploy, 1 in-place, 2 remove, 1 invalid, 1 unchanged**\n",
        "| action | jobs |\n|---|---:|\n| ❌ invalid | 1 |\n| 🗑 remove | 2 |\n| redeploy | 1 |\n\
         | rebuild | 1 |\n| in-place | 1 |\n| add | 2 |\n| unchanged | 1 |\n\n<details open>",
        "<details><summary>add: 2 job(s)</summary>\n\n| job | why |\n|---|---|\n\
         | `after` | new service job in env `dev` |\n",
        "<details open><summary>🗑 remove: 2 job(s)</summary>\n\n| job | why |\n|---|---|\n\
         | `before` | job file removed: the job is stopped, its history kept |\n",
        "<details open><summary>❌ invalid: 1 job(s)</summary>\n\n| job | why |\n|---|---|\n\
         | `broken` | job file is invalid: the previous version keeps running untouched |\n",
        "| `built` | project.branch: `main` → `release` |\n",
        "| `quiet` | restart changed |\n",
        "| `svc` | params.command changed |\n",
        "| `comment` | the file changed, not what it asks for (comments, layout or the order of keys) |\n",
        "| `team-a/new` | new batch job in env `dev` |\n",
        "```\njobs/broken.yaml:3:10: `timeout`: invalid duration `soon` (expected number at 0); expected a duration like `90s`, `5m` or `2h`\n```\n",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
}

/// An 800-job change (every job of 40 teams' 20 pipelines redeployed, 30 files made invalid)
/// gives a markdown plan under 60,000 characters, GitHub's comment limit less room: counts
/// first, details per class, and, where it had to cut, what it left out and how to get it all.
#[test]
fn plan_markdown_of_800_jobs_fits_a_comment_and_says_what_it_left_out() {
    let tmp = tempdir();
    let repo = tmp.path().join("config-repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["-c", "init.defaultBranch=main", "init", "-q"]);
    let job = |team: u32, n: u32, version: u32| {
        format!(
            "env: dev\nparams:\n  command: [java, -cp, /opt/pipelines/team-{team:02}.jar, \
             com.example.team{team:02}.Pipeline{n:02}, --date, \"{{{{ds}}}}\", --v, \"{version}\"]\n\
             restart: {{attempts: {}}}\ntimeout: {}m\n",
            3 + version,
            30 + version
        )
    };
    for team in 0..40 {
        for n in 0..20 {
            write(
                &repo,
                &format!("jobs/team-{team:02}/pipeline-{n:02}.yaml"),
                job(team, n, 1),
            );
        }
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "800 jobs"]);
    for team in 0..40 {
        for n in 0..20 {
            let text = if team < 3 && n < 10 {
                format!("{}suspend: maybe\n", job(team, n, 2))
            } else {
                job(team, n, 2)
            };
            write(
                &repo,
                &format!("jobs/team-{team:02}/pipeline-{n:02}.yaml"),
                text,
            );
        }
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "every pipeline: v2"]);
    let out = jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "markdown",
        ],
    );
    assert_eq!((out.code, out.stderr.as_str()), (1, ""), "{out:?}");
    let md = &out.stdout;
    let chars = md.chars().count();
    assert!(chars < 60_000, "{chars} characters");
    // The counts come first, then the invalid files, open.
    let counts = "| action | jobs |\n|---|---:|\n| ❌ invalid | 30 |\n| redeploy | 770 |\n";
    let at = md
        .find(counts)
        .unwrap_or_else(|| panic!("no counts table:\n{md}"));
    assert!(at < md.find("<details").unwrap(), "{md}");
    assert!(
        md.contains("<details open><summary>❌ invalid: 30 job(s)</summary>"),
        "{md}"
    );
    assert!(md.contains("<details><summary>redeploy: 770 job(s)</summary>"));
    // Each `<details>` is closed.
    assert_eq!(
        md.matches("<details").count(),
        md.matches("</details>").count(),
        "{md}"
    );
    // Cut: the last line says how many of which class were left out and how to get them all.
    let shown = md.lines().filter(|l| l.starts_with("| `team-")).count();
    let last = md.lines().last().unwrap();
    let left = 800 - shown;
    assert!(left > 0 && shown > 100, "{shown} rows shown");
    assert!(
        last.starts_with("✂️ Cut to fit a comment (60000 characters): left out ")
            && last.contains(&format!("{left} redeploy"))
            && last.contains("`--format text`"),
        "{last}"
    );
    // Every invalid job is listed with its error, before any redeploy is cut.
    for team in 0..3 {
        for n in 0..10 {
            assert!(
                md.contains(&format!("| `team-{team:02}/pipeline-{n:02}` |")),
                "{team}/{n}"
            );
        }
    }
    assert_eq!(
        md.matches("`suspend`: expected `true` or `false`").count(),
        30,
        "{md}"
    );
    // The text format holds it all.
    let text = jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "text",
        ],
    );
    assert!(
        text.stdout.ends_with("plan: 770 redeploy, 30 invalid\n"),
        "{}",
        text.stdout
    );
}

/// The shipped CI templates post the markdown plan and print the whole plan as text in the
/// job's log, where the markdown's cut note points.
#[test]
fn the_ci_templates_post_the_markdown_and_log_the_text_plan() {
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci");
    for file in ["github-actions.yml", "gitlab-ci.yml"] {
        let text = fs::read_to_string(ci.join(file)).unwrap();
        let text_plan = text
            .find("--format text")
            .unwrap_or_else(|| panic!("{file}: no text plan"));
        let md_plan = text.find("--format markdown > plan.md").unwrap_or_else(|| {
            text.find("--format markdown\n      > plan.md")
                .expect("a markdown plan")
        });
        assert!(text_plan < md_plan, "{file}");
    }
}

#[test]
fn plan_json() {
    let (_tmp, repo) = plan_repo();
    let out = jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "json",
        ],
    );
    assert_eq!((out.code, out.stderr.as_str()), (1, ""), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan --format json");
    assert_eq!(v["from"], "HEAD~1");
    assert_eq!(v["to"], "HEAD");
    assert_eq!(v["invalid"], true);
    let items = v["items"].as_array().expect("items");
    let got: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["job"].as_str().expect("job"),
                i["action"].as_str().expect("action"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("after", "add"),
            ("before", "remove"),
            ("broken", "invalid"),
            ("built", "rebuild"),
            ("comment", "unchanged"),
            ("old", "remove"),
            ("quiet", "in-place"),
            ("svc", "redeploy"),
            ("team-a/new", "add"),
        ]
    );
    let broken = &items[2];
    assert_eq!(broken["path"], "jobs/broken.yaml");
    assert_eq!(
        broken["errors"],
        serde_json::json!([{
            "path": "jobs/broken.yaml",
            "line": 3,
            "column": 10,
            "message": "`timeout`: invalid duration `soon` (expected number at 0); expected a duration like `90s`, `5m` or `2h`"
        }])
    );
    assert_eq!(items[3]["reasons"][0], "project.branch: `main` → `release`");
    assert!(items[0].get("errors").is_none(), "{}", items[0]);
}

#[test]
fn plan_exits_zero_without_invalid_jobs() {
    let (_tmp, repo) = plan_repo();
    // --path narrows the plan to one folder; job names are relative to it.
    jobkeeper(
        &repo,
        &["plan", "--from", "HEAD~1", "--to", "HEAD", "--path", "jobs/team-a"],
    )
    .expect(
        0,
        "add       new  (jobs/team-a/new.yaml)\n          - new batch job in env `dev`\nplan: 1 add\n",
        "",
    );
    jobkeeper(&repo, &["plan", "--from", "HEAD", "--to", "HEAD"]).expect(
        0,
        "plan: no job changes\n",
        "",
    );
    jobkeeper(
        &repo,
        &[
            "plan",
            "--from",
            "HEAD~1",
            "--to",
            "HEAD",
            "--path",
            "elsewhere",
        ],
    )
    .expect(
        1,
        "",
        "error: the job folder `elsewhere` (at `HEAD~1` and at `HEAD`; give the right one with --path) not found in .\n",
    );
    // Backwards works too: the tree-to-tree diff needs no ancestry.
    let back = jobkeeper(
        &repo,
        &[
            "plan", "--from", "HEAD", "--to", "HEAD~1", "--format", "json",
        ],
    );
    assert_eq!(back.code, 0, "{back:?}");
    let v: serde_json::Value = serde_json::from_str(&back.stdout).expect("json");
    assert_eq!(v["invalid"], false);
}

#[test]
fn plan_with_config_checks_envs() {
    let (tmp, repo) = plan_repo();
    write(
        tmp.path(),
        "config.yaml",
        "repo: {url: ./config-repo}\nstate_dir: state\nenvs:\n  prod: {engine: flink, flink: {url: \"http://f:8081\"}}\n",
    );
    let out = jobkeeper(
        &repo,
        &[
            "plan",
            "--from",
            "HEAD~1",
            "--to",
            "HEAD",
            "--config",
            "../config.yaml",
            "--format",
            "json",
        ],
    );
    assert_eq!((out.code, out.stderr.as_str()), (1, ""), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let after = &v["items"][0];
    assert_eq!(after["action"], "invalid");
    assert_eq!(
        after["errors"][0]["message"],
        "unknown env `dev`; known envs: prod"
    );
}

/// The trial's finding: moving a job whose build takes its env's `${var:..}` was "redeploy"
/// without `--config` and "rebuild" with it. With the config the plan reads the vars and
/// says rebuild; without, it says redeploy and why it may be a rebuild.
#[test]
fn plan_classes_an_env_move_the_same_with_and_without_config_or_says_why_not() {
    let tmp = tempdir();
    let repo = tmp.path().join("config-repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["-c", "init.defaultBranch=main", "init", "-q"]);
    let job = |env: &str| {
        format!(
            "project: {{repo: ., branch: main, dir: p, build: \"sh build.sh ${{var:V}}\", \
             artifact: out/a.jar}}\nenv: {env}\nparams: {{command: [java, -jar, \"{{artifact}}\"]}}\n"
        )
    };
    write(&repo, "jobs/counter.yaml", job("new"));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    write(&repo, "jobs/counter.yaml", job("old"));
    git(&repo, &["commit", "-q", "-am", "move it"]);
    write(
        tmp.path(),
        "config.yaml",
        "repo: {url: ./config-repo}\nstate_dir: state\nenvs:\n  \
         new: {engine: local, vars: {V: \"2.3.0\"}}\n  old: {engine: local, vars: {V: \"1.20.3\"}}\n",
    );
    let json = |args: &[&str]| {
        let mut all = vec![
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "json",
        ];
        all.extend_from_slice(args);
        let out = jobkeeper(&repo, &all);
        assert_eq!(out.code, 0, "{out:?}");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        let item = v["items"][0].clone();
        let reasons: Vec<String> = item["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        (item["action"].as_str().unwrap().to_string(), reasons)
    };
    let (offline, why) = json(&[]);
    let (with_config, because) = json(&["--config", "../config.yaml"]);
    assert_eq!(with_config, "rebuild", "{because:?}");
    assert!(
        because.contains(&"project.build: `sh build.sh 2.3.0` → `sh build.sh 1.20.3`".to_string()),
        "{because:?}"
    );
    assert!(
        offline == with_config
            || why.iter().any(|r| r.starts_with(&format!(
                "may be a {with_config}: `project.build` uses `${{var:..}}`"
            ))),
        "{offline} without --config, {with_config} with it, and no word why: {why:?}"
    );
}

#[test]
fn plan_bad_rev_or_repo() {
    let (tmp, repo) = plan_repo();
    jobkeeper(&repo, &["plan", "--from", "nope", "--to", "HEAD"]).expect(
        1,
        "",
        "error: revision `nope` not found in .\n",
    );
    jobkeeper(&repo, &["plan", "--from", "HEAD", "--to", "v9.9"]).expect(
        1,
        "",
        "error: revision `v9.9` not found in .\n",
    );
    fs::create_dir_all(tmp.path().join("plain")).expect("mkdir");
    jobkeeper(
        tmp.path(),
        &[
            "plan", "--repo", "plain", "--from", "HEAD~1", "--to", "HEAD",
        ],
    )
    .expect(1, "", "error: git repository not found in plain\n");
    let out = jobkeeper(
        &repo,
        &["plan", "--from", "HEAD~1", "--to", "HEAD", "--path", "../x"],
    );
    assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{out:?}");
    assert_eq!(
        out.stderr.matches("should not start with `..`").count(),
        1,
        "the cause is shown once: {}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// schema

#[test]
fn schema_is_valid_closed_json_and_matches_the_committed_file() {
    let tmp = tempdir();
    let out = jobkeeper(tmp.path(), &["schema"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("schema is JSON");
    assert_eq!(v["additionalProperties"], false);
    // `env` may come from a folder's `_defaults.yaml`, whose schema is `$defs.defaults`.
    assert!(v.get("required").is_none(), "{v}");
    assert_eq!(v["$defs"]["defaults"]["additionalProperties"], false);
    for section in ["project", "params", "restart"] {
        assert_eq!(
            v["properties"][section]["additionalProperties"], false,
            "{section} is closed"
        );
    }
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/job.schema.json");
    let on_disk = fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == out.stdout,
        "docs/job.schema.json is stale; regenerate it with `cargo run -- schema > docs/job.schema.json`"
    );
}

// ---------------------------------------------------------------------------------------------
// run

#[test]
fn run_with_a_bad_config_reports_every_error_and_starts_nothing() {
    let tmp = tempdir();
    write(
        tmp.path(),
        "config.yaml",
        "\
repo: {url: ./r, pol: 5s}
state_dir: state
listen: localhost:7070
timezone: Mars/Olympus
build: {max_concurrent: 0}
envs:
  a: {engine: beam}
  b: {engine: local, alerts: [nobody]}
  c: {engine: flink}
alerts:
  hook: {webhook: {url: \"ftp://h\", format: teams}, on: [faild]}
",
    );
    jobkeeper(tmp.path(), &["run", "--config", "config.yaml"]).expect(
        1,
        "",
        "\
config.yaml:1:18: unknown field `pol` in `repo`, did you mean `poll`?
config.yaml:3:9: `listen`: invalid address `localhost:7070`; expected an IP address and port like `127.0.0.1:7070`
config.yaml:4:11: `timezone`: unknown time zone `Mars/Olympus`; expected an IANA name like `Europe/Berlin`, `Asia/Shanghai` or `UTC`
config.yaml:5:25: `build.max_concurrent`: expected a whole number from 1 to 1024, found 0
config.yaml:7:15: `envs.a.engine`: unknown engine `beam`; expected one of: local, flink, spark, yarn
config.yaml:8:31: unknown alert channel `nobody`; known channels: hook
config.yaml:9:6: env `c` uses engine flink and needs `flink: {url: http://...:8081}`
config.yaml:11:25: `alerts.hook.webhook.url`: `ftp://h` must start with `http://` or `https://`
config.yaml:11:44: `alerts.hook.webhook.format`: unknown format `teams`; expected one of: slack, dingtalk, feishu, wecom, json
config.yaml:11:57: unknown event `faild`, did you mean `failed`?
error: the daemon config config.yaml has 10 problem(s)
",
    );
    assert!(
        !tmp.path().join("state").exists(),
        "a refused config creates no state folder"
    );
}

#[test]
fn run_with_a_missing_config() {
    let tmp = tempdir();
    jobkeeper(tmp.path(), &["run", "--config", "nope.yaml"]).expect(
        1,
        "",
        "nope.yaml:1:1: cannot read the daemon config: No such file or directory (os error 2)\n\
         error: the daemon config nope.yaml has 1 problem(s)\n",
    );
}

// ---------------------------------------------------------------------------------------------
// usage errors

#[test]
fn usage_errors_exit_2() {
    let tmp = tempdir();
    for (args, first_line) in [
        (
            &["validate", "--bogus"][..],
            "error: unexpected argument '--bogus' found",
        ),
        (
            &["run", "--config", "c.yaml", "--bogus"][..],
            "error: unexpected argument '--bogus' found",
        ),
        (
            &["run"][..],
            "error: the following required arguments were not provided:",
        ),
        (
            &["plan", "--to", "HEAD"][..],
            "error: the following required arguments were not provided:",
        ),
        (
            &["plan", "--from", "a", "--to", "b", "--format", "yaml"][..],
            "error: invalid value 'yaml' for '--format <FORMAT>'",
        ),
        (
            &["run", "--config", "c.yaml", "--log-format", "xml"][..],
            "error: invalid value 'xml' for '--log-format <LOG_FORMAT>'",
        ),
        (
            &["schema", "extra"][..],
            "error: unexpected argument 'extra' found",
        ),
        (
            &["frobnicate"][..],
            "error: unrecognized subcommand 'frobnicate'",
        ),
    ] {
        let out = jobkeeper(tmp.path(), args);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.lines().next()),
            (2, "", Some(first_line)),
            "{args:?}: {out:?}"
        );
    }
    // No subcommand: usage on stderr, exit 2.
    let out = jobkeeper(tmp.path(), &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("Usage: jobkeeper <COMMAND>"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// malformed input never panics

/// Inputs no parser should choke on.
fn garbage() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00".to_vec(),
        (0u8..=255).collect(),
        b"\xef\xbb\xbfenv: dev\n".to_vec(),
        b"env: dev\nparams: {conf: {[a]: b}}".to_vec(),
        b"env: &e dev\nparams: {args: [*e, *e]}\nalerts: *e".to_vec(),
        b"env: *nope\n".to_vec(),
        b"{env: {env: {env: null}}}".to_vec(),
        b"env: dev\nschedule: \"@\"\n".to_vec(),
        b"env: dev\nschedule: \"0 0 31 2 *\"\n".to_vec(),
        b"env: dev\nschedule: \"* * * * * * * *\"\n".to_vec(),
        b"env: dev\nparams: {command: [\"${\", \"}${var:}\", \"${secret:}\"]}".to_vec(),
        b"!!str".to_vec(),
        b"? a\n".to_vec(),
        b"---\nenv: a\n---\nenv: b\n".to_vec(),
        b"env: dev\nparams: {parallelism: 99999999999999999999999}".to_vec(),
        b"env: dev\nrestart: {attempts: -1, backoff: 99999999999999999999y}".to_vec(),
        b"env: dev\ntimeout: 0s\n".to_vec(),
        b"\t\tenv: dev".to_vec(),
        b"env: \"unterminated\n".to_vec(),
        b"- [\n".to_vec(),
        b"%YAML 9.9\n---\nenv: dev\n".to_vec(),
        b"env: !!binary aGVsbG8=\n".to_vec(),
    ];
    inputs.push(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes());
    inputs.push(format!("{}x", "a: ".repeat(5000)).into_bytes());
    inputs.push("- ".repeat(5000).into_bytes());
    inputs.push(
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
         d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
            .as_bytes()
            .to_vec(),
    );
    inputs
}

#[test]
fn malformed_input_never_panics() {
    let tmp = tempdir();
    let inputs = garbage();
    let jobs = tmp.path().join("jobs");
    for (i, input) in inputs.iter().enumerate() {
        write(&jobs, &format!("g{i:02}.yaml"), input);
        write(tmp.path(), &format!("configs/c{i:02}.yaml"), input);
    }
    write(tmp.path(), "config.yaml", CONFIG);
    let out = jobkeeper(tmp.path(), &["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = jobkeeper(tmp.path(), &["validate", "--config", "config.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    for i in 0..inputs.len() {
        let config = format!("configs/c{i:02}.yaml");
        let out = jobkeeper(tmp.path(), &["run", "--config", &config]);
        assert_eq!(out.code, 1, "{config}: {out:?}");
        assert!(out.stderr.starts_with(&config), "{config}: {out:?}");
        let out = jobkeeper(tmp.path(), &["validate", "--config", &config]);
        assert_eq!(out.code, 1, "{config}: {out:?}");
    }
    assert!(!tmp.path().join("state").exists());

    // The same files in a repo, through plan.
    git(tmp.path(), &["-c", "init.defaultBranch=main", "init", "-q"]);
    write(tmp.path(), "jobs/ok.yaml", "env: dev\n");
    git(tmp.path(), &["add", "jobs/ok.yaml"]);
    git(tmp.path(), &["commit", "-q", "-m", "one"]);
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-q", "-m", "garbage"]);
    for format in ["text", "markdown", "json"] {
        let out = jobkeeper(
            tmp.path(),
            &[
                "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", format,
            ],
        );
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(out.stderr, "", "{out:?}");
    }
}

#[test]
fn the_bundled_examples_validate_against_their_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
    jobkeeper(&root, &["validate", "jobs", "--config", "jobkeeper.yaml"]).expect(
        0,
        "",
        "3 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
    jobkeeper(
        &root,
        &["validate", "jobs-flink", "--config", "jobkeeper-flink.yaml"],
    )
    .expect(0, "", "3 job file(s) checked: 0 invalid, 0 error(s)\n");
}

// ---------------------------------------------------------------------------------------------
// SQL jobs

/// A flink env for SQL job files.
const SQL_CONFIG: &str = "repo: {url: ./config-repo}\nstate_dir: state\ntimezone: UTC\n\
envs:\n  prod:\n    engine: flink\n    flink: {url: \"http://127.0.0.1:9\"}\n    vars: {RATE: \"5\"}\n";

#[test]
fn validate_places_sql_file_errors_in_the_sql_file() {
    let tmp = tempdir();
    write(tmp.path(), "config.yaml", SQL_CONFIG);
    write(
        tmp.path(),
        "jobs/a.yaml",
        "env: prod\nsql_file: ../sql/a.sql\n",
    );
    write(
        tmp.path(),
        "sql/a.sql",
        "CREATE TABLE t (x INT) WITH ('rows-per-second' = '${var:RATE}');\n\
         INSERT INTO u SELECT x FROM t WHERE x > ${var:MIN};\n\
         INSERT INTO u SELECT 'unclosed FROM t;\n",
    );
    jobkeeper(tmp.path(), &["validate", "jobs", "--config", "config.yaml"]).expect(
        1,
        "sql/a.sql:2:41: unknown var `MIN` in `${var:MIN}`; known vars of env `prod`: RATE\n\
         sql/a.sql:3:22: unclosed string: no closing `'`\n",
        "1 job file(s) checked: 1 invalid, 2 error(s)\n",
    );
    write(
        tmp.path(),
        "sql/a.sql",
        "INSERT INTO u SELECT x FROM t WHERE y = ';' -- a comment; here\n;\n",
    );
    jobkeeper(tmp.path(), &["validate", "jobs", "--config", "config.yaml"]).expect(
        0,
        "",
        "1 job file(s) checked: 0 invalid, 0 error(s)\n",
    );
}

#[test]
fn plan_names_the_jobs_whose_sql_file_changed() {
    let tmp = tempdir();
    let repo = tmp.path().join("config-repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["-c", "init.defaultBranch=main", "init", "-q"]);
    write(&repo, "jobs/a.yaml", "env: prod\nsql_file: a.sql\n");
    write(&repo, "jobs/b.yaml", "env: prod\nsql_file: b.sql\n");
    write(&repo, "jobs/a.sql", "INSERT INTO u SELECT 1;\n");
    write(&repo, "jobs/b.sql", "INSERT INTO u SELECT 2;\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two SQL jobs"]);
    write(&repo, "jobs/a.sql", "INSERT INTO u SELECT 3;\n");
    git(&repo, &["commit", "-q", "-am", "only a.sql changes"]);
    let out = jobkeeper(&repo, &["plan", "--from", "HEAD~1", "--to", "HEAD"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("jobs/a.yaml") && out.stdout.contains("sql_file changed"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("jobs/b.yaml"), "{out:?}");
    assert!(out.stdout.ends_with("plan: 1 redeploy\n"), "{out:?}");
}

#[test]
fn plan_names_a_follow_job_whose_project_folder_in_the_config_repo_changed() {
    let tmp = tempdir();
    let repo = tmp.path().join("config-repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["-c", "init.defaultBranch=main", "init", "-q"]);
    let job = |dir: &str| {
        format!(
            "env: dev\nproject:\n  repo: .\n  dir: {dir}\n  build: \"true\"\n  follow: true\nparams: {{command: [x]}}\n"
        )
    };
    write(&repo, "jobs/followed.yaml", job("proj"));
    write(&repo, "jobs/elsewhere.yaml", job("other"));
    write(
        &repo,
        "jobs/pinned.yaml",
        job("proj").replace("follow: true", "follow: false"),
    );
    write(&repo, "proj/src.txt", "v1\n");
    write(&repo, "other/src.txt", "v1\n");
    write(&repo, "projector/src.txt", "v1\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "three project jobs"]);
    write(&repo, "proj/src.txt", "v2\n");
    write(&repo, "projector/src.txt", "v2\n");
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-am",
            "only the proj folder (and a look-alike) changes",
        ],
    );
    let out = jobkeeper(&repo, &["plan", "--from", "HEAD~1", "--to", "HEAD"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("jobs/followed.yaml")
            && out
                .stdout
                .contains("project folder `proj` changed (`follow: true`)"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("elsewhere"), "{out:?}");
    assert!(
        !out.stdout.contains("pinned"),
        "a job that does not follow waits for its file: {out:?}"
    );
    assert!(out.stdout.ends_with("plan: 1 rebuild\n"), "{out:?}");
}

/// `status --url nonsense` said the daemon could not be reached ("builder error"); it is a usage
/// error naming the URL.
#[test]
fn a_url_that_is_not_one_is_a_usage_error() {
    let tmp = tempdir();
    jobkeeper(tmp.path(), &["status", "--url", "nonsense"]).expect(
        2,
        "",
        "error: `nonsense` is not a URL of a jobkeeper daemon; expected one like http://127.0.0.1:7070\n",
    );
}

//! Security checks end to end (SPEC "Security"): secrets stay out of everything the daemon
//! writes or serves; params never reach a shell; job names cannot leave the state folder; token
//! and webhook checks compare in constant time; the listener binds loopback unless configured;
//! bodies are size-limited; HTML is escaped.
//!
//! Covered elsewhere and not repeated here: a secret masked in `/logs` and absent from the API
//! for a running job, 401s for missing or wrong tokens and signatures, a 2 MiB GitHub hook
//! refused with 413, a commit subject with `<script>` escaped on `/` in a real browser
//! (`tests/api.rs`); job files named with `..`, absolute or `..` project dirs, artifacts and
//! secret names refused by `validate` and by a running daemon (`tests/bad_input.rs`).

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hmac::Mac;
use jobkeeper::store::Blocking;
use receivers::{HttpReceiver, free_port};

/// The secret's value: distinctive, so any copy of it is found.
const SECRET: &str = "Zebra-quartz-7f3a91-do-not-leak";
const TOKEN: &str = "api-token-for-security-tests";
const HOOK_SECRET: &str = "hook-secret-for-security-tests";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `jobkeeper` binary running `run --config`, its stdout and stderr in files.
struct Binary {
    child: Child,
    port: u16,
    out: PathBuf,
    err: PathBuf,
}

impl Binary {
    async fn start(root: &Path, config_text: &str) -> Binary {
        let port = free_port();
        let cfg = root.join("config.yaml");
        std::fs::write(
            &cfg,
            config_text.replace("LISTEN", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let (out, err) = (root.join("daemon.out"), root.join("daemon.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config"])
            .arg(&cfg)
            // Everything the daemon logs, debug lines included.
            .env("JOBKEEPER_LOG", "debug")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let b = Binary {
            child,
            port,
            out,
            err,
        };
        let t = Instant::now();
        loop {
            if let Ok(r) = client().get(b.url("/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "not ready: {}",
                b.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
            + &std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then waits (≤ 30 s) for a clean exit.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}: {}", self.log());
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// True for a run's own output file, `logs/<job>/<run id>.log`: what the run printed, as it
/// printed it (the run was given the secret; the daemon masks it when serving the file).
fn is_run_output(state: &Path, p: &Path) -> bool {
    p.strip_prefix(state.join("logs")).is_ok()
        && p.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.parse::<u64>().is_ok())
        && p.extension().is_some_and(|e| e == "log")
}

/// The files of the state folder holding the secret, the runs' own output aside.
fn leaks_in_state(state: &Path) -> Vec<PathBuf> {
    files_below(state)
        .into_iter()
        .filter(|p| !is_run_output(state, p))
        .filter(|p| std::fs::read(p).is_ok_and(|b| contains(&b, SECRET)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_never_appears_in_logs_store_api_page_or_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::fs::write(root.join("secrets/pw"), format!("{SECRET}\n")).unwrap();
    let git = Git::new(root, "config");
    // A running job printing the secret (argv and environment), one printing it and failing
    // (failed, restarted, gave_up: reasons are the last lines of its log), one whose program
    // cannot start with the secret in its path (deploy_failed: the error names the path).
    git.write(
        "jobs/talker.yaml",
        "env: dev\nparams:\n  command: [sh, -c, \"echo password ${secret:pw}; echo env $PW; exec sleep 600\"]\n  environment: {PW: \"${secret:pw}\"}\n",
    )
    .write(
        "jobs/leaky.yaml",
        "env: dev\nalerts: [oncall, chat]\nrestart: {attempts: 1, window: 1h, backoff: 0s}\nparams:\n  command: [sh, -c, \"echo the password is ${secret:pw}; echo \\\"$PW\\\" >&2; exit 3\"]\n  environment: {PW: \"${secret:pw}\"}\n",
    )
    .write(
        "jobs/badexe.yaml",
        "env: dev\nalerts: [oncall, chat]\nrestart: {attempts: 1, window: 1h, backoff: 0s}\nparams:\n  command: [\"/nonexistent/${secret:pw}/run\", \"--password=${secret:pw}\"]\n",
    );
    git.commit_push("three jobs with a secret");
    let json_hook = HttpReceiver::start().await;
    let slack_hook = HttpReceiver::start().await;
    let state = root.join("state");
    let cfg = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 1s}}\nstate_dir: {}\nlisten: LISTEN\n\
         secrets_dir: {}\nalerts_throttle: 1s\n\
         envs:\n  dev: {{engine: local}}\nalerts:\n  oncall:\n    webhook: {{url: \"{}\", format: json}}\n\
         \x20 chat:\n    webhook: {{url: \"{}\", format: slack}}\n",
        git.bare.display(),
        state.display(),
        root.join("secrets").display(),
        json_hook.url(),
        slack_hook.url()
    );
    let mut b = Binary::start(root, &cfg).await;
    let store = Blocking::open(&state.join("jobkeeper.db")).unwrap();
    // (A program that is not there is a spec problem: no restarts until a new commit.)
    let t = Instant::now();
    while !(store
        .job("leaky")
        .unwrap()
        .is_some_and(|row| row.state == "gave_up")
        && store
            .events(Some("badexe"), 10)
            .unwrap()
            .iter()
            .any(|e| e.kind == "deploy_failed"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "leaky did not give up or badexe did not fail: {:#?}\n{:#?}",
            store.jobs().unwrap(),
            store.events(None, 30).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let talker_log = || {
        store
            .runs("talker", 1)
            .unwrap()
            .first()
            .map(|r| state.join(format!("logs/talker/{}.log", r.id)))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    wait_for("talker printed", Duration::from_secs(10), || {
        talker_log().contains("env ")
    })
    .await;
    // The runs really got the secret (so its absence elsewhere means something).
    assert!(talker_log().contains(SECRET), "{}", talker_log());
    wait_for("alerts", Duration::from_secs(30), || {
        let events = |r: &HttpReceiver| {
            r.received()
                .iter()
                .map(|x| x.body.clone())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (j, s) = (events(&json_hook), events(&slack_hook));
        ["failed", "gave_up", "deploy_failed"]
            .iter()
            .all(|e| j.contains(&format!("\"event\":\"{e}\"")) && s.contains(e))
    })
    .await;

    // Everything served.
    let mut served = Vec::new();
    for path in [
        "/",
        "/metrics",
        "/api/v1/jobs",
        "/api/v1/jobs/talker",
        "/api/v1/jobs/leaky",
        "/api/v1/jobs/badexe",
        "/api/v1/jobs/talker/logs",
        "/api/v1/jobs/leaky/logs",
    ] {
        let (code, body) = b.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        served.push((path.to_string(), body));
    }
    for run in store.runs("leaky", 100).unwrap() {
        let path = format!("/api/v1/jobs/leaky/logs?run={}", run.id);
        let (code, body) = b.get(&path).await;
        assert_eq!(code, 200);
        assert!(body.contains("the password is ***"), "{path}: {body}");
        served.push((path, body));
    }
    let talker = &served
        .iter()
        .find(|(p, _)| p == "/api/v1/jobs/talker/logs")
        .unwrap()
        .1;
    assert_eq!(talker, "password ***\nenv ***\n");
    let (_, leaky) = b.get("/api/v1/jobs/leaky").await;
    assert!(leaky.contains("the password is ***"), "{leaky}");
    for (path, body) in &served {
        assert!(!body.contains(SECRET), "the secret in {path}:\n{body}");
    }
    // Every alert.
    let alerts: Vec<_> = json_hook
        .received()
        .into_iter()
        .chain(slack_hook.received())
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for a in &alerts {
        assert!(
            !a.body.contains(SECRET),
            "the secret in an alert: {}",
            a.body
        );
        assert!(!a.uri.contains(SECRET));
    }
    assert!(
        alerts.iter().any(|a| a.body.contains("***")),
        "a masked reason: {alerts:?}"
    );
    // The store (database, WAL, shared memory) and every other file of the state folder,
    // while the daemon runs...
    assert!(state.join("jobkeeper.db-wal").exists());
    assert_eq!(leaks_in_state(&state), Vec::<PathBuf>::new());
    // ... and after it stopped (the WAL checkpointed into the database).
    drop(store);
    b.stop();
    assert_eq!(leaks_in_state(&state), Vec::<PathBuf>::new());
    // The logs of ended runs were masked in place: no copy of the value is left on disk.
    let ended: Vec<PathBuf> = files_below(&state.join("logs/leaky"))
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| contains(&b, SECRET)))
        .collect();
    assert_eq!(ended, Vec::<PathBuf>::new());
    // The daemon's own log, debug lines included.
    let log = b.log();
    assert!(log.contains("local run started"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the secret in the daemon's log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_reach_the_program_verbatim_and_never_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    // The run's own script writes its arguments (and one variable) one per line; the arguments
    // after it are what a shell would act on.
    let evil = [
        "$(touch pwned1)",
        "; touch pwned2",
        "`touch pwned3`",
        "&& touch pwned4",
        "| touch pwned5",
        "> pwned6",
        "$HOME",
        "*",
        "'quoted' \"double\"",
        "a\\nb",
    ];
    let mut job = String::from(
        "env: dev\nparams:\n  environment: {EVIL: \"$(touch pwned7)\"}\n  command:\n    - sh\n    - -c\n    - 'printf \"%s\\n\" \"$@\" > argv.txt; printf \"%s\\n\" \"$EVIL\" >> argv.txt; exec sleep 600'\n    - argv0\n",
    );
    for a in evil {
        job.push_str(&format!("    - '{}'\n", a.replace('\'', "''")));
    }
    git.write("jobs/evil.yaml", &job);
    git.commit_push("arguments a shell would run");
    let mut d = start(root, &config(root, &git, "")).await;
    let pid = d.running_pid("evil").await;
    let argv_file = d.state_dir.join("logs/evil/argv.txt");
    wait_for("argv.txt", Duration::from_secs(10), || {
        std::fs::read_to_string(&argv_file).is_ok_and(|t| t.lines().count() > evil.len())
    })
    .await;
    let mut want: Vec<String> = evil.iter().map(|s| s.to_string()).collect();
    want.push("$(touch pwned7)".into());
    let got = std::fs::read_to_string(&argv_file).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), want, "{got}");
    // The process's argv is exactly the list (sh's `exec` replaced it with sleep's: read the
    // list from the file it wrote, and check the process is the one started, once its `exec`,
    // which follows the file's last write, is done).
    wait_for("sh to exec sleep", Duration::from_secs(10), || {
        cmdline(pid).starts_with("sleep 600")
    })
    .await;
    // Nothing anywhere ran a `touch`.
    let cwd = std::env::current_dir().unwrap();
    for dir in [root.to_path_buf(), cwd.clone()] {
        let pwned: Vec<_> = files_below(&dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pwned"))
            })
            .collect();
        assert!(pwned.is_empty(), "{pwned:?}");
    }
    d.stop().await;
}

/// Writes a tree object with these raw entries (mode, name, hex id) into `repo`, bypassing the
/// checks `git mktree` makes: a hostile config repo can hold anything.
fn raw_tree(repo: &Path, entries: &[(&str, &str, &str)]) -> String {
    use std::io::Write as _;
    let mut body = Vec::new();
    for (mode, name, id) in entries {
        body.extend_from_slice(mode.as_bytes());
        body.push(b' ');
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&hex::decode(id).unwrap());
    }
    let mut child = Command::new("git")
        .args(["hash-object", "-t", "tree", "--literally", "-w", "--stdin"])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn blob(repo: &Path, content: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .args(["hash-object", "-w", "--stdin"])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn job_names_that_could_leave_a_folder_are_refused() {
    use jobkeeper::spec::check_name;
    for bad in [
        "..",
        ".",
        "../etc",
        "a/../../etc",
        "a/..",
        "a/./b",
        "/etc/passwd",
        "a//b",
        "a/",
        "-rf",
        ".hidden",
        "a\\..\\b",
        "a\0b",
        "A",
        "~root",
        "a b",
    ] {
        assert!(check_name(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["a", "team-a/clicks", "a.b", "v1.2/x_y"] {
        check_name(good).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_config_tree_writes_nothing_outside_the_state_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/ok.yaml", &sleeper(600));
    let c1 = git.commit_push("ok");
    let mut d = start(root, &config(root, &git, "health: {interval: 200ms}\n")).await;
    d.running_pid("ok").await;
    let outside = |root: &Path| -> Vec<PathBuf> {
        files_below(root)
            .into_iter()
            .filter(|p| !p.starts_with(root.join("state")) && !p.starts_with(&git.bare))
            .filter(|p| !p.starts_with(&git.work))
            .collect()
    };
    let before = outside(root);

    // A commit whose `jobs` tree holds entries no git client would write: a folder named `..`
    // (a job `../escape`), `.` (`./dot`), files named `...yaml` (`..`) and `..yaml` (`.`), and
    // a name with a slash (`../../x`).
    let bare = &git.bare;
    let job = blob(bare, &sleeper(601));
    let ok = blob(bare, &sleeper(600));
    let inner = raw_tree(bare, &[("100644", "escape.yaml", &job)]);
    let jobs = raw_tree(
        bare,
        &[
            ("40000", ".", &inner),
            ("40000", "..", &inner),
            ("100644", "../../x.yaml", &job),
            ("100644", "...yaml", &job),
            ("100644", "..yaml", &job),
            ("100644", "ok.yaml", &ok),
        ],
    );
    let top = raw_tree(bare, &[("40000", "jobs", &jobs)]);
    let commit = git_in(
        bare,
        &["commit-tree", &top, "-p", &c1, "-m", "a hostile tree"],
    );
    git_in(bare, &["update-ref", "refs/heads/main", &commit]);

    // The daemon applies it, but runs nothing of it and writes nowhere else.
    wait_for(
        "the hostile commit applied",
        Duration::from_secs(20),
        || d.store.applied_commit().unwrap().as_deref() == Some(commit.as_str()),
    )
    .await;
    // Later sweeps: anything it would start had its chance.
    d.sweeps_pass(3, Duration::from_secs(20)).await;
    // Each hostile name is an invalid job of its own; the commit's valid job is untouched.
    let mut invalid: Vec<String> = events_of(&d.store, "invalid")
        .into_iter()
        .filter_map(|e| e.job)
        .collect();
    invalid.sort();
    assert_eq!(invalid, [".", "..", "../../x", "../escape", "./escape"]);
    let jobs: Vec<String> = d
        .store
        .jobs()
        .unwrap()
        .into_iter()
        .filter(|j| j.desired.is_some())
        .map(|j| j.name)
        .collect();
    assert_eq!(jobs, ["ok"], "{:#?}", d.store.events(None, 50).unwrap());
    let runs = d.store.live_runs().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        outside(root),
        before,
        "files written outside the state folder"
    );
    for p in files_below(&d.state_dir) {
        let canon = p.canonicalize().unwrap_or(p.clone());
        assert!(
            canon.starts_with(d.state_dir.canonicalize().unwrap()),
            "{p:?}"
        );
    }
    // Nor can the API read outside it.
    for path in [
        "/api/v1/jobs/..%2F..%2Fconfig.yaml/logs",
        "/api/v1/jobs/..%2Fescape/logs",
        "/api/v1/jobs/%2Fetc%2Fpasswd/logs",
        "/api/v1/jobs/ok/logs?run=..%2F..%2Fconfig",
    ] {
        let (code, body) = d.get(path).await;
        assert!(matches!(code, 400 | 404), "{path}: {code} {body}");
        assert!(!body.contains("repo:"), "{path}: {body}");
    }
    assert_eq!(d.get("/healthz").await.0, 200);
    d.stop().await;
}

/// The source of a function in one of the crate's files, from its signature to the next item.
fn function_source(file: &str, signature: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let start = text
        .find(signature)
        .unwrap_or_else(|| panic!("`{signature}` not in {file}"));
    let rest = &text[start..];
    let end = rest[1..].find("\n}\n").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

#[test]
fn token_and_webhook_checks_compare_in_constant_time() {
    use jobkeeper::http::api::constant_time_eq;
    use jobkeeper::http::hooks::github_signature_ok;
    // The helpers answer right.
    assert!(constant_time_eq(b"token", b"token"));
    assert!(!constant_time_eq(b"token", b"tokem"));
    assert!(!constant_time_eq(b"token", b"token2"));
    assert!(!constant_time_eq(b"", b"token"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
    mac.update(b"body");
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert!(github_signature_ok(b"k", b"body", &sig));
    assert!(!github_signature_ok(b"k", b"body2", &sig));

    // And the code uses them, not `==`: the API token, GitLab's token and GitHub's HMAC.
    let eq = function_source("src/http/api/post.rs", "pub fn constant_time_eq(");
    assert!(eq.contains(".ct_eq("), "{eq}");
    // Both the all-jobs token and each scoped token.
    let authorize = function_source("src/http/access.rs", "pub fn caller(");
    assert_eq!(
        authorize
            .matches("constant_time_eq(given.as_bytes(), token.as_bytes())")
            .count(),
        2,
        "{authorize}"
    );
    let github = function_source("src/http/hooks.rs", "pub fn github_signature_ok(");
    assert!(github.contains("mac.verify_slice(&given)"), "{github}");
    let gitlab = function_source("src/http/hooks.rs", "pub async fn gitlab(");
    assert!(
        gitlab.contains("constant_time_eq(token.trim().as_bytes(), secret)"),
        "{gitlab}"
    );
    for (name, src) in [
        ("authorize", &authorize),
        ("github_signature_ok", &github),
        ("gitlab", &gitlab),
    ] {
        for bad in [
            "== expected",
            "expected ==",
            "== secret",
            "secret ==",
            "== given",
            "given ==",
            "== token",
            "token ==",
        ] {
            assert!(!src.contains(bad), "{name} compares with `{bad}`:\n{src}");
        }
    }
}

/// The local addresses of the TCP sockets in LISTEN state that process `pid` holds.
fn listening_addrs(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A = LISTEN), ..., inode (field 10)
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_binds_loopback_unless_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The default, when `listen` is not set.
    let settings = jobkeeper::settings::parse(
        "config.yaml",
        b"repo: {url: /srv/jobs.git}\nstate_dir: /var/lib/jobkeeper\n",
        root,
    )
    .unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:7070");
    assert!(settings.listen.ip().is_loopback());

    // The daemon listens on that address only, and on nothing else.
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    git.commit_push("a");
    let cfg = format!(
        "repo: {{url: {}, poll: 1s}}\nstate_dir: {}\nlisten: LISTEN\nenvs:\n  dev: {{engine: local}}\n",
        git.bare.display(),
        root.join("state").display()
    );
    let mut b = Binary::start(root, &cfg).await;
    let addrs = listening_addrs(b.child.id());
    // 127.0.0.1 is 0100007F in /proc/net/tcp's little-endian hex.
    assert_eq!(addrs, [format!("0100007F:{:04X}", b.port)], "{addrs:?}");
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_and_markup_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    std::fs::write(root.join("hook"), HOOK_SECRET).unwrap();
    let git = Git::new(root, "config");
    // Markup in a failure reason (the program's path, shown as the reason on the page) and in
    // a file's error (an unknown field).
    git.write(
        "jobs/xss.yaml",
        "env: dev\nparams:\n  command: [\"/no/such/<script>alert(1)</script><img src=x onerror=alert(2)>\"]\n",
    )
    .write("jobs/bad.yaml", "env: dev\n\"<script>alert(3)</script>\": 1\nparams: {command: [\"true\"]}\n")
    .write("jobs/web.yaml", &sleeper(600));
    git.commit_push("jobs with markup in their reasons");
    let extra = format!(
        "api_token_file: {}\nwebhook_secret_file: {}\n",
        root.join("token").display(),
        root.join("hook").display()
    );
    let mut d = start(root, &config(root, &git, &extra)).await;
    d.running_pid("web").await;
    wait_for("xss deploy_failed", Duration::from_secs(20), || {
        d.has_event("xss", "deploy_failed")
    })
    .await;
    wait_for("bad invalid", Duration::from_secs(10), || {
        d.job("bad").is_some_and(|j| j.state == "invalid")
    })
    .await;
    let (code, html) = d.get("/").await;
    assert_eq!(code, 200);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    // The page's one script is its own, from its own origin; none comes from the data.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("<script src=\"/static/page.js\" defer></script>"));
    assert!(!html.contains("<img"), "{html}");

    // Bodies over 1 MiB (25 MiB for the two webhooks): 413 on every POST, token or not, with a
    // length or chunked.
    let big = vec![b'{'; 2 * 1024 * 1024];
    let hook_big = vec![b'{'; 26 * 1024 * 1024];
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(&hook_big);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let posts = [
        (
            "/api/v1/sync",
            vec![("Authorization", format!("Bearer {TOKEN}"))],
        ),
        ("/api/v1/sync", vec![]),
        (
            "/api/v1/jobs/web/restart",
            vec![("Authorization", format!("Bearer {TOKEN}"))],
        ),
        (
            "/hooks/github",
            vec![
                ("X-GitHub-Event", "push".to_string()),
                ("X-Hub-Signature-256", sig.clone()),
            ],
        ),
        (
            "/hooks/gitlab",
            vec![
                ("X-Gitlab-Event", "Push Hook".to_string()),
                ("X-Gitlab-Token", HOOK_SECRET.to_string()),
            ],
        ),
    ];
    for (path, headers) in &posts {
        let body = if path.starts_with("/hooks/") {
            &hook_big
        } else {
            &big
        };
        for chunked in [false, true] {
            let code = post_raw(d.addr, path, headers, body, chunked).await;
            assert_eq!(code, 413, "{path} (chunked: {chunked})");
        }
    }
    // Nothing was done: no sync, no restart.
    assert_eq!(d.runs("web").len(), 1);
    assert!(
        !d.store
            .events(None, 200)
            .unwrap()
            .iter()
            .any(|e| e.kind == "api_sync" || e.kind == "restart_requested")
    );
    assert_eq!(d.get("/healthz").await.0, 200);
    d.stop().await;
}

/// A POST over a raw connection, the body with `Content-Length` or chunked; the status code.
/// The server may answer and close before the whole body is sent: write errors are ignored.
async fn post_raw(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    chunked: bool,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    let send = async {
        s.write_all(head.as_bytes()).await?;
        if chunked {
            for c in body.chunks(64 * 1024) {
                s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
                s.write_all(c).await?;
                s.write_all(b"\r\n").await?;
            }
            s.write_all(b"0\r\n\r\n").await?;
        } else {
            s.write_all(body).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), send).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The daemon binary with `secrets_dir` (`root/secrets`, holding `pw` = [`SECRET`] and `key` =
/// `key`), the jobs of `jobs`, and alerts to `hook`.
struct WithSecrets {
    git: Git,
    b: Binary,
    store: Blocking,
    state: PathBuf,
    root: PathBuf,
}

/// A service printing the secret `pw` (given in its environment), then sleeping.
const TALKER: &str = "env: dev\nparams:\n  command: [sh, -c, \"echo password $PW; exec sleep 600\"]\n  environment: {PW: \"${secret:pw}\"}\n";

/// The daemon config of [`WithSecrets`] with `secrets_dir` `secrets`.
fn secrets_config(root: &Path, git: &Git, secrets: &str, hook: &str) -> String {
    format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 1s}}\nstate_dir: {}\nlisten: LISTEN\n\
         secrets_dir: {}\nalerts_throttle: 1s\n\
         envs:\n  dev: {{engine: local}}\nalerts:\n  oncall:\n    webhook: {{url: \"{hook}\", format: json}}\n",
        git.bare.display(),
        root.join("state").display(),
        root.join(secrets).display(),
    )
}

impl WithSecrets {
    async fn start(root: &Path, jobs: &[(&str, &str)], key: &str, hook: &str) -> WithSecrets {
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(root.join("secrets/pw"), format!("{SECRET}\n")).unwrap();
        std::fs::write(root.join("secrets/key"), key).unwrap();
        let git = Git::new(root, "config");
        for (path, text) in jobs {
            git.write(path, text);
        }
        git.commit_push("jobs with secrets");
        let cfg = secrets_config(root, &git, "secrets", hook);
        let b = Binary::start(root, &cfg).await;
        let state = root.join("state");
        let store = Blocking::open(&state.join("jobkeeper.db")).unwrap();
        WithSecrets {
            git,
            b,
            store,
            state,
            root: root.to_path_buf(),
        }
    }

    /// The first run of `job` once its log holds `text`.
    async fn run_printed(&self, job: &str, text: &str) -> i64 {
        let mut id = 0;
        wait_for(
            &format!("{job} printed {text:?}"),
            Duration::from_secs(20),
            || {
                let runs = self.store.runs(job, 1).unwrap();
                let Some(r) = runs.first() else { return false };
                id = r.id;
                std::fs::read_to_string(&r.log_path).is_ok_and(|l| l.contains(text))
            },
        )
        .await;
        id
    }

    fn run_state(&self, id: i64) -> String {
        self.store.run(id).unwrap().unwrap().state.to_string()
    }

    fn log_file(&self, id: i64) -> String {
        std::fs::read_to_string(self.store.run(id).unwrap().unwrap().log_path).unwrap()
    }
}

/// The rotated secret's file now holds another value while the run still runs with the old
/// one: its log is masked with the old one (the one it was given), on the API and the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_still_masks_the_log_of_the_run_that_was_given_it() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let w = WithSecrets::start(
        tmp.path(),
        &[("jobs/talker.yaml", TALKER)],
        "k",
        &hook.url(),
    )
    .await;
    let run = w.run_printed("talker", "password").await;
    std::fs::write(w.root.join("secrets/pw"), "the-new-value-after-rotation\n").unwrap();
    let (code, log) =
        w.b.get(&format!("/api/v1/jobs/talker/logs?run={run}"))
            .await;
    assert_eq!((code, log.as_str()), (200, "password ***\n"));
    let (code, page) = w.b.get("/jobs/talker").await;
    assert_eq!(code, 200);
    assert!(page.contains("password ***"), "{page}");
    assert!(!page.contains(SECRET), "{page}");
    assert_eq!(w.run_state(run), "running", "the run was not restarted");
}

/// What changes the job between a run and the reading of its log.
enum Change {
    /// The job file no longer uses the secret.
    SecretDropped,
    /// The job file is removed.
    JobRemoved,
}

/// Run 1 printed the secret; `change` is committed, which ends it; its log stays masked on
/// the API (never served in clear) and, once masked in place, on disk.
async fn an_ended_runs_log_stays_masked_after(change: Change) {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let w = WithSecrets::start(
        tmp.path(),
        &[("jobs/talker.yaml", TALKER)],
        "k",
        &hook.url(),
    )
    .await;
    let run = w.run_printed("talker", "password").await;
    match change {
        Change::SecretDropped => {
            w.git.write(
                "jobs/talker.yaml",
                "env: dev\nparams:\n  command: [sh, -c, \"echo version 2; exec sleep 600\"]\n",
            );
            w.git.commit_push("talker no longer uses the secret");
        }
        Change::JobRemoved => {
            w.git.remove("jobs/talker.yaml");
            w.git.commit_push("talker removed");
        }
    }
    wait_for("run 1 ended", Duration::from_secs(30), || {
        w.run_state(run) != "running"
    })
    .await;
    let (code, log) =
        w.b.get(&format!("/api/v1/jobs/talker/logs?run={run}"))
            .await;
    assert_eq!((code, log.as_str()), (200, "password ***\n"));
    wait_for("the log masked in place", Duration::from_secs(10), || {
        !w.log_file(run).contains(SECRET)
    })
    .await;
    assert_eq!(w.log_file(run), "password ***\n");
    let (code, log) =
        w.b.get(&format!("/api/v1/jobs/talker/logs?run={run}&tail=1"))
            .await;
    assert_eq!((code, log.as_str()), (200, "password ***\n"));
    let (_, page) = w.b.get("/jobs/talker").await;
    assert!(!page.contains(SECRET), "{page}");
    // No temporary file is left beside it.
    let dir = w.state.join("logs/talker");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert_eq!(names, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_dropped_from_the_job_file_leaves_its_runs_logs_masked() {
    an_ended_runs_log_stays_masked_after(Change::SecretDropped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_job_leaves_its_runs_logs_masked() {
    an_ended_runs_log_stays_masked_after(Change::JobRemoved).await;
}

/// A reload whose `secrets_dir` lacks the secret a running job was given is refused, with an
/// event naming the secret; the running config stays and the log stays masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moving_secrets_dir_away_from_a_running_jobs_secret_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let w = WithSecrets::start(
        tmp.path(),
        &[("jobs/talker.yaml", TALKER)],
        "k",
        &hook.url(),
    )
    .await;
    let run = w.run_printed("talker", "password").await;
    std::fs::create_dir_all(w.root.join("elsewhere")).unwrap();
    let moved = secrets_config(&w.root, &w.git, "elsewhere", &hook.url())
        .replace("LISTEN", &format!("127.0.0.1:{}", w.b.port));
    std::fs::write(w.root.join("config.yaml"), moved).unwrap();
    let reloads = || {
        w.store
            .events(None, 200)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str().starts_with("config_reload"))
            .collect::<Vec<_>>()
    };
    let pid = nix::unistd::Pid::from_raw(w.b.child.id() as i32);
    let t = Instant::now();
    let event = loop {
        // The daemon may not listen for SIGHUP yet right after it starts: send until it answers.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(e) = reloads().into_iter().next() {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no reload recorded");
    };
    assert_eq!(event.kind, "config_reload_refused", "{}", event.message);
    assert!(
        event.message.contains("secret `pw`") && event.message.contains("elsewhere/pw"),
        "{}",
        event.message
    );
    let (code, log) =
        w.b.get(&format!("/api/v1/jobs/talker/logs?run={run}"))
            .await;
    assert_eq!((code, log.as_str()), (200, "password ***\n"));
    assert_eq!(w.run_state(run), "running");
}

/// A PEM-like secret of 60 lines, printed whole between two other lines by a job that fails:
/// no line of it is in any cut of the log (`tail=N` for each N), in the stored `failed` event
/// (the last 20 lines of the log), in the webhook alert, or on the job page (the last 50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_secret_leaks_no_line_in_tails_events_alerts_or_the_page() {
    use sha2::Digest;
    let mut lines = vec!["-----BEGIN PRIVATE KEY-----".to_string()];
    for i in 0..58 {
        lines.push(hex::encode(sha2::Sha256::digest(format!("line {i}"))));
    }
    lines.push("-----END PRIVATE KEY-----".to_string());
    let key = lines.join("\n") + "\n";
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let job = "env: dev\nalerts: [oncall]\nrestart: {attempts: 1, window: 1h, backoff: 0s}\nparams:\n  command: [sh, -c, \"echo start; printf '%s\\\\n' \\\"$KEY\\\"; echo after; exit 3\"]\n  environment: {KEY: \"${secret:key}\"}\n";
    let w = WithSecrets::start(tmp.path(), &[("jobs/pem.yaml", job)], &key, &hook.url()).await;
    // Every place a line of the secret was found, so one run names every path that leaks.
    let found = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let leaks = |what: &str, text: &str| {
        if lines.iter().any(|l| text.contains(l.as_str())) {
            found.borrow_mut().insert(what.to_string());
        }
    };
    wait_for("gave up and alerted", Duration::from_secs(30), || {
        w.store
            .job("pem")
            .unwrap()
            .is_some_and(|r| r.state == "gave_up")
            && hook
                .received()
                .iter()
                .any(|r| r.body.contains("\"event\":\"failed\""))
    })
    .await;
    let runs = w.store.runs("pem", 10).unwrap();
    assert!(!runs.is_empty());
    // The run printed the secret (so its absence elsewhere means something).
    let printed = std::fs::read_to_string(&runs[0].log_path).unwrap_or_default();
    assert!(
        printed.starts_with("start\n") && printed.ends_with("after\n"),
        "{printed}"
    );
    for run in &runs {
        for n in 1..=64 {
            let (code, body) =
                w.b.get(&format!("/api/v1/jobs/pem/logs?run={}&tail={n}", run.id))
                    .await;
            assert_eq!(code, 200, "{body}");
            leaks(&format!("tail={n}"), &body);
        }
    }
    for e in w.store.events(Some("pem"), 100).unwrap() {
        leaks(&format!("event {}", e.kind), &e.message);
    }
    for a in hook.received() {
        leaks("an alert", &a.body);
    }
    let (code, page) = w.b.get("/jobs/pem").await;
    assert_eq!(code, 200);
    leaks("the job page", &page);
    let (_, api) = w.b.get("/api/v1/jobs/pem").await;
    leaks("the job's API", &api);
    assert_eq!(
        found.into_inner(),
        std::collections::BTreeSet::new(),
        "places showing a line of the secret"
    );
    let (_, whole) =
        w.b.get(&format!("/api/v1/jobs/pem/logs?run={}", runs[0].id))
            .await;
    assert_eq!(whole, "start\n***\nafter\n");
    assert!(
        w.store
            .events(Some("pem"), 100)
            .unwrap()
            .iter()
            .any(|e| e.kind == "failed" && e.message.contains("***")),
        "a masked failed event"
    );
    // Masked in place on disk once the runs ended.
    for run in &runs {
        wait_for("the log masked in place", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&run.log_path).unwrap_or_default();
            lines.iter().all(|l| !text.contains(l.as_str()))
        })
        .await;
    }
}

/// A daemon killed (SIGKILL) while its runs printed their secrets leaves their logs as written;
/// the next daemon masks each in place when its secret still has the value the run was given
/// (the keyed fingerprint recorded at submit matches), and withholds it (403, naming the
/// secret, never a value) when the secret was rotated meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_daemon_crash_a_log_is_masked_if_its_secret_matches_else_withheld() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let other = "env: dev\nparams:\n  command: [sh, -c, \"echo key $K; exec sleep 600\"]\n  environment: {K: \"${secret:key}\"}\n";
    let mut w = WithSecrets::start(
        tmp.path(),
        &[("jobs/talker.yaml", TALKER), ("jobs/other.yaml", other)],
        "first-key-value-1234\n",
        &hook.url(),
    )
    .await;
    let talker = w.run_printed("talker", "password").await;
    let rotated = w.run_printed("other", "key").await;
    let _ = w.b.child.kill();
    let _ = w.b.child.wait();
    assert!(w.log_file(talker).contains(SECRET));
    std::fs::write(w.root.join("secrets/key"), "second-key-value-5678\n").unwrap();
    let cfg = secrets_config(&w.root, &w.git, "secrets", &hook.url());
    w.b = Binary::start(&w.root, &cfg).await;
    // The previous daemon's runs are stopped, their logs looked at before anything starts.
    let (code, log) =
        w.b.get(&format!("/api/v1/jobs/talker/logs?run={talker}"))
            .await;
    assert_eq!((code, log.as_str()), (200, "password ***\n"));
    assert_eq!(w.log_file(talker), "password ***\n");
    let (code, why) =
        w.b.get(&format!("/api/v1/jobs/other/logs?run={rotated}"))
            .await;
    assert_eq!(code, 403, "{why}");
    assert!(why.contains("withheld") && why.contains("`key`"), "{why}");
    assert!(!why.contains("first-key-value") && !why.contains("second-key-value"));
    let (code, page) = w.b.get("/jobs/other").await;
    assert_eq!(code, 200);
    assert!(!page.contains("first-key-value-1234"), "{page}");
}

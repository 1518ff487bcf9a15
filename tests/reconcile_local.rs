//! End to end on the local engine: real git repos and pushes, the daemon in-process, real child
//! processes checked by PID.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_becomes_a_running_job_and_changes_redeploy_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(300))
        .write("jobs/team/b.yaml", &sleeper(301));
    let c1 = git.commit_push("add a and b");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;

    let pid_a = d.running_pid("a").await;
    let pid_b = d.running_pid("team/b").await;
    assert!(cmdline(pid_a).contains("sleep 300"), "{}", cmdline(pid_a));
    assert!(cmdline(pid_b).contains("sleep 301"));
    wait_for("ready", Duration::from_secs(5), || {
        d.store.applied_commit().unwrap() == Some(c1.clone())
    })
    .await;
    assert_eq!(d.get("/readyz").await.0, 200);
    assert_eq!(d.get("/healthz").await.0, 200);
    // The event is written after the run's row, by a store call of its own.
    wait_for("a deployed", Duration::from_secs(5), || {
        d.has_event("a", "deployed")
    })
    .await;
    let ev = d.events("a");
    let deployed = ev
        .iter()
        .find(|e| e.kind == "deployed")
        .expect("deployed event");
    assert_eq!(
        deployed.author.as_deref(),
        Some("Ann Operator <ann@example.com>")
    );
    assert_eq!(deployed.subject.as_deref(), Some("add a and b"));

    // Change a's params: a is redeployed, b is untouched.
    git.write("jobs/a.yaml", &sleeper(302));
    git.commit_push("a sleeps longer");
    wait_for("old a stopped", Duration::from_secs(15), || !alive(pid_a)).await;
    let new_a = d.running_pid("a").await;
    assert_ne!(new_a, pid_a);
    assert!(cmdline(new_a).contains("sleep 302"));
    assert!(alive(pid_b), "b must not be touched by a change to a");
    assert_eq!(d.runs("team/b").len(), 1);

    // A change only to `restart` applies in place: same process.
    git.write(
        "jobs/a.yaml",
        &format!("{}restart: {{attempts: 7}}\n", sleeper(302)),
    );
    let c3 = git.commit_push("more attempts for a");
    wait_for("c3 applied", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap() == Some(c3.clone())
    })
    .await;
    wait_for("in-place event", Duration::from_secs(10), || {
        d.has_event("a", "updated")
    })
    .await;
    assert!(alive(new_a));
    assert_eq!(d.live_runs("a").len(), 1);

    // Removal stops the job and keeps its history.
    git.remove("jobs/team/b.yaml");
    git.commit_push("remove b");
    wait_for("b stopped", Duration::from_secs(15), || !alive(pid_b)).await;
    wait_for("b state stopped", Duration::from_secs(5), || {
        d.job("team/b").unwrap().state == "stopped"
    })
    .await;
    assert_eq!(d.runs("team/b").len(), 1, "history kept");
    assert!(alive(new_a));
    let mut d = d;
    d.stop().await;
    assert!(!alive(new_a), "local runs stop with the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_one_broken_and_one_good_change_applies_the_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(300))
        .write("jobs/b.yaml", &sleeper(301));
    git.commit_push("two jobs");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid_a = d.running_pid("a").await;
    let pid_b = d.running_pid("b").await;

    git.write(
        "jobs/a.yaml",
        "env: dev\nparams:\n  command: [\"sleep\", \"303\"]\nrestrat: {}\n",
    );
    git.write("jobs/b.yaml", &sleeper(304));
    git.write(
        "jobs/c.yaml",
        "env: nowhere\nparams: {command: [\"true\"]}\n",
    );
    let c2 = git.commit_push("break a, change b, add a bad c");
    wait_for("b redeployed", Duration::from_secs(15), || !alive(pid_b)).await;
    let new_b = d.running_pid("b").await;
    assert!(cmdline(new_b).contains("sleep 304"));
    assert!(
        alive(pid_a),
        "the previous version of an invalid job keeps running"
    );
    assert_eq!(d.runs("a").len(), 1);

    let a = d.job("a").unwrap();
    let invalid = a.invalid.expect("a's problems recorded");
    assert!(
        invalid.contains("jobs/a.yaml:4:1: unknown field `restrat`"),
        "{invalid}"
    );
    assert_eq!(a.state, "running");
    let ev = d.events("a");
    let inv = ev
        .iter()
        .find(|e| e.kind == "invalid")
        .expect("invalid event");
    assert_eq!(inv.commit_id.as_deref(), Some(c2.as_str()));
    assert!(inv.message.contains("jobs/a.yaml:4:1"), "{}", inv.message);

    let c = d.job("c").unwrap();
    assert_eq!(c.state, "invalid");
    assert!(c.invalid.unwrap().contains("jobs/c.yaml:1:6"));
    assert!(d.runs("c").is_empty());

    // Fixing the file applies it.
    git.write("jobs/a.yaml", &sleeper(305));
    git.commit_push("fix a");
    wait_for("a redeployed", Duration::from_secs(15), || !alive(pid_a)).await;
    assert!(cmdline(d.running_pid("a").await).contains("sleep 305"));
    assert!(d.job("a").unwrap().invalid.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_push_and_rename_converge_to_the_new_tip() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(300));
    let base = git.commit_push("a");
    git.write("jobs/b.yaml", &sleeper(301));
    git.commit_push("b");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid_a = d.running_pid("a").await;
    let pid_b = d.running_pid("b").await;

    // Rewrite history: drop the commit that added b, rename a to c. Both jobs of two go, more
    // than `max_removals` (50%): the trailer lets the commit apply.
    git.git(&["reset", "-q", "--hard", &base]);
    git.git(&["mv", "jobs/a.yaml", "jobs/c.yaml"]);
    let tip = git.commit("rename a to c\n\nJobkeeper-Allow-Removals: history rewritten on purpose");
    git.force_push();
    wait_for("applied", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap() == Some(tip.clone())
    })
    .await;
    wait_for("a and b stopped", Duration::from_secs(15), || {
        !alive(pid_a) && !alive(pid_b)
    })
    .await;
    let pid_c = d.running_pid("c").await;
    assert!(cmdline(pid_c).contains("sleep 300"));
    wait_for("states", Duration::from_secs(5), || {
        d.job("a").unwrap().state == "stopped" && d.job("b").unwrap().state == "stopped"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_that_fail_time_out_or_match_wrong_artifacts_leave_the_running_version() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Git::new(tmp.path(), "app");
    project.write("app/run.sh", "echo started; exec sleep 300\n");
    project.commit_push("app");
    let git = Git::new(tmp.path(), "config");
    let job = |build: &str, artifact: &str| {
        format!(
            "project:\n  repo: {}\n  dir: app\n  build: {build}\n  artifact: \"{artifact}\"\nenv: dev\nparams:\n  command: [\"sh\", \"{{artifact}}\"]\n",
            project.bare.display()
        )
    };
    git.write(
        "jobs/app.yaml",
        &job("mkdir -p out && cp run.sh out/app-1.sh", "out/app-*.sh"),
    );
    git.commit_push("app job");
    let extra = "build: {max_concurrent: 1, timeout: 2s}\n";
    let d = start(tmp.path(), &config(tmp.path(), &git, extra)).await;
    let pid = d.running_pid("app").await;
    wait_for("sh execs sleep", Duration::from_secs(5), || {
        cmdline(pid).contains("sleep 300")
    })
    .await;
    let artifact = d.job("app").unwrap().artifact.expect("artifact recorded");
    let artifact = artifact.path.to_string_lossy();
    assert!(
        artifact.contains("/artifacts/") && artifact.contains("app-1.sh"),
        "{artifact}"
    );

    let cases = [
        (job("echo compiling; exit 7", "out/*.sh"), "compiling"),
        (job("sleep 30", "out/*.sh"), "timed out"),
        (job("mkdir -p out", "out/*.jar"), "out/*.jar"),
        (
            job("mkdir -p out && touch out/x.sh out/y.sh", "out/*.sh"),
            "out/x.sh",
        ),
    ];
    for (i, (spec, expect)) in cases.iter().enumerate() {
        let before = d
            .events("app")
            .iter()
            .filter(|e| e.kind == "build_failed")
            .count();
        git.write("jobs/app.yaml", spec);
        git.commit_push(&format!("case {i}"));
        wait_for(
            &format!("build_failed {i}"),
            Duration::from_secs(20),
            || {
                d.events("app")
                    .iter()
                    .filter(|e| e.kind == "build_failed")
                    .count()
                    > before
            },
        )
        .await;
        let ev = d
            .events("app")
            .into_iter()
            .find(|e| e.kind == "build_failed")
            .unwrap();
        assert!(ev.message.contains(expect), "case {i}: {}", ev.message);
        assert!(alive(pid), "case {i}: the running version is untouched");
        assert_eq!(d.live_runs("app").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_rebuilds_and_redeploys_when_the_project_branch_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Git::new(tmp.path(), "app");
    project.write("run.sh", "exec sleep 321\n");
    project.commit_push("v1");
    let git = Git::new(tmp.path(), "config");
    let job = |follow: bool| {
        format!(
            "project:\n  repo: {}\n  build: cp run.sh app.sh\n  artifact: app.sh\n  follow: {follow}\nenv: dev\nparams:\n  command: [\"sh\", \"{{artifact}}\"]\n",
            project.bare.display()
        )
    };
    git.write("jobs/followed.yaml", &job(true));
    git.write("jobs/pinned.yaml", &job(false));
    git.commit_push("two jobs on one project");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let followed = d.running_pid("followed").await;
    let pinned = d.running_pid("pinned").await;
    wait_for("sh execs sleep", Duration::from_secs(5), || {
        cmdline(followed).contains("sleep 321")
    })
    .await;

    project.write("run.sh", "exec sleep 322\n");
    let v2 = project.commit_push("v2");
    // The config repo is polled every second; each poll checks followed branches.
    wait_for("followed redeployed", Duration::from_secs(20), || {
        !alive(followed)
    })
    .await;
    let new = d.running_pid("followed").await;
    // `sh app.sh` execs `sleep`: give it a moment.
    wait_for("the new version runs", Duration::from_secs(5), || {
        cmdline(new).contains("sleep 322")
    })
    .await;
    let ev = d
        .events("followed")
        .into_iter()
        .find(|e| e.kind == "deployed")
        .unwrap();
    assert!(
        ev.message.contains(&format!("→ {}", &v2[..8])),
        "{}",
        ev.message
    );
    assert!(alive(pinned), "a job without follow keeps its build");
    assert_eq!(d.runs("pinned").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_job_files_never_touch_the_running_version_nor_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(331));
    git.commit_push("a");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid = d.running_pid("a").await;

    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
    let huge = format!("env: dev\n# {}\n", "x".repeat(1024 * 1024));
    let deep = format!("env: dev\nparams: {}{}\n", "[".repeat(500), "]".repeat(500));
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("syntax", b"env: [dev\n".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01, 0x80]),
        ("empty", Vec::new()),
        ("bomb", bomb.as_bytes().to_vec()),
        ("huge", huge.into_bytes()),
        ("deep", deep.into_bytes()),
        (
            "dupkey",
            b"env: dev\nenv: dev\nparams: {command: [x]}\n".to_vec(),
        ),
        (
            "types",
            b"env: 42\nparams: {command: sleep}\nrestart: {attempts: -1, backoff: soon}\n".to_vec(),
        ),
        (
            "secret",
            b"env: dev\nparams: {command: [\"${secret:../../etc/passwd}\"]}\n".to_vec(),
        ),
        (
            "var",
            b"env: dev\nparams: {command: [\"${var:NOPE}\"]}\n".to_vec(),
        ),
        (
            "cron",
            b"env: dev\nschedule: \"61 * * * *\"\nparams: {command: [x]}\n".to_vec(),
        ),
    ];
    for (i, (what, bytes)) in bad.iter().enumerate() {
        std::fs::write(git.work.join("jobs/a.yaml"), bytes).unwrap();
        let id = git.commit_push(&format!("break a: {what}"));
        wait_for(&format!("{what} applied"), Duration::from_secs(10), || {
            d.store.applied_commit().unwrap() == Some(id.clone())
        })
        .await;
        let a = d.job("a").unwrap();
        let problems = a.invalid.unwrap_or_default();
        assert!(problems.starts_with("jobs/a.yaml:"), "{what}: {problems}");
        assert!(alive(pid), "{what}: the running version is untouched");
        assert_eq!(d.runs("a").len(), 1, "{what}");
        assert_eq!(
            d.get("/healthz").await.0,
            200,
            "{what}: daemon still serving"
        );
        let invalid = d.events("a").iter().filter(|e| e.kind == "invalid").count();
        assert_eq!(invalid, i + 1, "{what}: one invalid event per commit");
    }
    // Names that cannot be job names are refused without touching anything.
    git.write("jobs/Bad Name.yaml", &sleeper(332));
    let id = git.commit_push("a bad name");
    wait_for("bad name applied", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap() == Some(id.clone())
    })
    .await;
    let bad = d.job("Bad Name").unwrap();
    assert_eq!(bad.state, "invalid");
    assert!(d.runs("Bad Name").is_empty());
    assert!(alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_stop_does_not_wait_for_a_long_build() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Git::new(tmp.path(), "slow");
    project.write("README", "slow build\n");
    project.commit_push("slow");
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/slow.yaml",
        &format!(
            "project:\n  repo: {}\n  build: sleep 60\nenv: dev\nparams:\n  command: [\"true\"]\n",
            project.bare.display()
        ),
    );
    git.commit_push("slow build");
    let mut d = start(
        tmp.path(),
        &config(tmp.path(), &git, "build: {timeout: 10m}\n"),
    )
    .await;
    wait_for("building", Duration::from_secs(10), || {
        d.job("slow").is_some_and(|j| j.state == "building")
    })
    .await;
    let t = std::time::Instant::now();
    d.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        t.elapsed()
    );
    assert!(
        !d.has_event("slow", "build_failed"),
        "a shutdown is not a build failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ignores_commits_outside_the_project_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let mono = Git::new(tmp.path(), "mono");
    mono.write("app/run.sh", "exec sleep 323\n")
        .write("other/README", "v1\n");
    mono.commit_push("v1");
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/app.yaml",
        &format!(
            "project:\n  repo: {}\n  dir: app\n  build: cp run.sh app.sh\n  artifact: app.sh\n  follow: true\nenv: dev\nparams:\n  command: [\"sh\", \"{{artifact}}\"]\n",
            mono.bare.display()
        ),
    );
    git.commit_push("app from a monorepo");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid = d.running_pid("app").await;
    // A commit elsewhere in the monorepo: no build, no redeploy (the config repo polls every 1 s).
    mono.write("other/README", "v2\n");
    mono.commit_push("elsewhere");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(alive(pid));
    assert_eq!(d.runs("app").len(), 1);
    assert_eq!(
        d.events("app").iter().filter(|e| e.kind == "built").count(),
        1
    );
    // A commit in the folder: rebuilt and redeployed.
    mono.write("app/run.sh", "exec sleep 324\n");
    mono.commit_push("app v2");
    wait_for("redeployed", Duration::from_secs(20), || !alive(pid)).await;
    let new = d.running_pid("app").await;
    wait_for("v2 runs", Duration::from_secs(5), || {
        cmdline(new).contains("sleep 324")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_runs_log_is_rotated_past_logs_max_size_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    // 300 KB of output, then quiet: past a 64 KiB limit.
    git.write(
        "jobs/chatty.yaml",
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"head -c 300000 /dev/zero | tr '\\\\0' x; echo; echo tail-line; sleep 600\"]\n",
    );
    git.commit_push("a chatty job");
    let d = start(
        tmp.path(),
        &config(tmp.path(), &git, "logs: {max_size: 64KiB}\n"),
    )
    .await;
    let pid = d.running_pid("chatty").await;
    let run = d.live_runs("chatty").remove(0);
    let log = std::path::PathBuf::from(&run.log_path);
    let old = jobkeeper::runlogs::rotated_path(&log);
    wait_for(
        "the log rotated",
        jobkeeper::runlogs::CHECK_INTERVAL * 3,
        || old.exists(),
    )
    .await;
    let kept = std::fs::read_to_string(&old).unwrap();
    assert!(
        kept.len() > 300_000 && kept.ends_with("tail-line\n"),
        "the older part keeps all that was written: {} bytes",
        kept.len()
    );
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    assert!(alive(pid), "the run goes on, untouched");
    assert_eq!(d.running_pid("chatty").await, pid);
}

//! Freeze windows end to end: the daemon in-process against a real git repo with real child
//! processes, with a window that opens every 30 seconds for 12 seconds. Each wait is bounded
//! and ends on a positive marker (the commit applied, an event, a new pid).

mod common;

use std::time::Duration;

use common::*;
use jobkeeper::freeze::{Freeze, FreezeWindow};
use jobkeeper::schedule::Schedule;

const WINDOW: &str = "*/30 * * * * *";
const WIDTH: Duration = Duration::from_secs(12);

fn freeze() -> Freeze {
    Freeze {
        windows: vec![FreezeWindow {
            schedule: Schedule::parse(WINDOW).unwrap(),
            duration: WIDTH,
            envs: vec!["dev".into()],
            reason: "test window".into(),
        }],
    }
}

/// Seconds the window stays open from now; 0 when it is closed.
fn open_for() -> i64 {
    let now = jobkeeper::freeze::now_in(chrono_tz::UTC);
    freeze()
        .open_for("dev", now)
        .map_or(0, |o| (o.until - now).num_seconds())
}

/// Waits (at most a minute) for a window with at least 9 s left.
/// Waits until no window is open now nor within the next 5 s, so that the daemon's first
/// apply of a test's jobs is not itself held.
async fn wait_for_a_closed_window() {
    wait_for("the freeze window closed", Duration::from_secs(60), || {
        let now = jobkeeper::freeze::now_in(chrono_tz::UTC);
        [0, 5].into_iter().all(|ahead| {
            freeze()
                .open_for("dev", now + chrono::Duration::seconds(ahead))
                .is_none()
        })
    })
    .await;
}

async fn wait_for_a_fresh_window() {
    wait_for("a freeze window opens", Duration::from_secs(60), || {
        open_for() >= 9
    })
    .await;
}

fn kill9(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_a_window_is_held_until_it_closes_while_restarts_go_on_and_an_override_applies_at_once()
 {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/p.yaml", &sleeper(330))
        .write("jobs/q.yaml", &sleeper(340));
    git.commit_push("two jobs");
    let extra = format!(
        "timezone: UTC\nfreeze:\n  - {{schedule: \"{WINDOW}\", duration: 12s, envs: [dev], reason: test window}}\n"
    );
    // The first commit may land inside a window too: wait for the jobs either way.
    wait_for_a_closed_window().await;
    let d = start(tmp.path(), &config(tmp.path(), &git, &extra)).await;
    let p = d.running_pid("p").await;
    let q = d.running_pid("q").await;
    assert!(!d.has_event("p", "held") && !d.has_event("q", "held"));

    wait_for_a_fresh_window().await;
    git.write("jobs/p.yaml", &sleeper(331));
    let c2 = git.commit_push("p sleeps longer");
    wait_for("c2 applied", Duration::from_secs(8), || {
        d.store.applied_commit().unwrap() == Some(c2.clone())
    })
    .await;
    assert!(open_for() > 0, "c2 was applied inside the window");
    assert!(d.has_event("p", "held"), "{:?}", d.events("p"));
    assert!(alive(p), "the running version goes on");
    let (code, body) = d.get("/api/v1/jobs/p").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let until = v["held"]["until"]
        .as_str()
        .expect("held in the API")
        .to_string();
    assert_eq!(v["held"]["reason"], "test window");

    // A failed run is restarted inside the window, with the running version.
    kill9(p);
    wait_for("p restarted in the window", Duration::from_secs(8), || {
        d.live_runs("p").iter().any(|r| pid_of(r) != p)
    })
    .await;
    assert!(open_for() > 0, "restarted while the window is open");
    let p2 = d.running_pid("p").await;
    assert!(cmdline(p2).contains("sleep 330"), "{}", cmdline(p2));

    // The window closes: the held change is applied.
    wait_for("released", Duration::from_secs(20), || {
        d.has_event("p", "released")
    })
    .await;
    wait_for("p on its new version", Duration::from_secs(15), || {
        !alive(p2)
    })
    .await;
    let p3 = d.running_pid("p").await;
    assert!(cmdline(p3).contains("sleep 331"));
    let released = d
        .events("p")
        .into_iter()
        .find(|e| e.kind == "released")
        .unwrap();
    let closed = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
    assert!(
        released.time >= closed.timestamp_millis(),
        "released at {} before the window closed at {until}",
        released.time
    );
    let (_, body) = d.get("/api/v1/jobs/p").await;
    assert!(!body.contains("\"held\":{"), "no longer held: {body}");

    // In the next window, a commit with the override trailer is applied at once.
    wait_for_a_fresh_window().await;
    git.write("jobs/q.yaml", &sleeper(341));
    git.git(&["add", "-A"]);
    git.git(&[
        "commit",
        "-q",
        "-m",
        "q now\n\nJobkeeper-Freeze-Override: INC-7 hotfix",
    ]);
    git.push();
    wait_for("q redeployed in the window", Duration::from_secs(8), || {
        !alive(q)
    })
    .await;
    assert!(open_for() > 0, "applied while the window is open");
    let q2 = d.running_pid("q").await;
    assert!(cmdline(q2).contains("sleep 341"));
    assert!(!d.has_event("q", "held"));
    let planned = d
        .events("q")
        .into_iter()
        .filter(|e| e.kind == "planned")
        .map(|e| e.message)
        .collect::<Vec<_>>();
    assert!(
        planned.iter().any(|m| m.contains(
            "freeze `test window` overridden by `Jobkeeper-Freeze-Override: INC-7 hotfix`"
        )),
        "{planned:?}"
    );
}

#[test]
fn plan_with_the_config_says_which_changes_a_window_open_now_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(1)).write(
        "jobs/b.yaml",
        "env: prod\nparams: {command: [sleep, \"2\"]}\n",
    );
    git.commit("two jobs");
    // A window open all the time, from the repo's own `_freeze.yaml`, for prod only.
    git.write(
        "jobs/_freeze.yaml",
        "freeze:\n  - {schedule: \"* * * * * *\", duration: 1h, envs: [prod], reason: audit}\n",
    )
    .write("jobs/a.yaml", &sleeper(3))
    .write(
        "jobs/b.yaml",
        "env: prod\nparams: {command: [sleep, \"4\"]}\n",
    );
    git.commit("freeze prod, change both");
    std::fs::write(
        tmp.path().join("config.yaml"),
        "repo: {url: ./config}\nstate_dir: state\ntimezone: UTC\nenvs:\n  dev: {engine: local}\n  prod: {engine: local}\n",
    )
    .unwrap();
    let plan = |from: &str| {
        let args = [
            "plan",
            "--repo",
            "config",
            "--from",
            from,
            "--to",
            "HEAD",
            "--config",
            "config.yaml",
        ];
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = plan("HEAD~1");
    let b = text.split("redeploy  b").nth(1).expect("b planned");
    assert!(b.contains("- held until 20"), "{text}");
    assert!(
        b.contains("(freeze: audit): applied when the window closes"),
        "{text}"
    );
    let a = text.split("redeploy  b").next().unwrap();
    assert!(!a.contains("held until"), "dev is not frozen: {text}");

    git.git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "now\n\nJobkeeper-Freeze-Override: audit done",
    ]);
    let text = plan("HEAD~2");
    assert!(
        text.contains(
            "freeze `audit` overridden by `Jobkeeper-Freeze-Override: audit done`: applied at once"
        ),
        "{text}"
    );
}

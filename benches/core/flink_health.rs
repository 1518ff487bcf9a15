//! `BENCH_ONLY=flink-health`: health beyond "running" on a real Flink cluster.
//!
//! - Detection latency against `health.interval`: `k` jobs whose checkpoints stop completing
//!   (`health.checkpoint_age`), from the moment the latest completed checkpoint (Flink's
//!   `/jobs/{id}/checkpoints`, `latest.completed.latest_ack_timestamp`) became older than the
//!   age to the `unhealthy` event; and `k` jobs Flink restarts again and again
//!   (`health.restarts`), from the failure that made the count (Flink's exception history) to
//!   the `unhealthy` event. One daemon per interval.
//! - REST requests per health sweep with 1 and `many` running jobs that check health, counted
//!   by the [`super::counting`] proxy in front of the cluster; and with `recorded` jobs against
//!   answers recorded from the cluster in the same run (the listener replays them and says so).

use std::path::Path;
use std::time::{Duration, Instant};

use jobkeeper::store::Blocking;

use super::counting::{SweepCount, Upstream, counting_proxy, per_sweep, recording_of};
use super::fleet::{self, cancel_all, counter_job, push, supervised};
use super::{make_repo, runtime, start_in_process};

/// Between two requests of one sweep there is less than this; between sweeps (1 s apart), more.
const GAP: Duration = Duration::from_millis(300);

/// The `health` of the jobs whose requests are counted: both checks on, neither firing.
const COUNTED_HEALTH: &str = "health: {restarts: {count: 3, window: 5m}, checkpoint_age: 1h}\n";

/// Detection latency with `health.interval` of `interval` s, over `k` jobs of each kind: rows.
fn latency(url: &str, lib: &str, k: usize, interval: u64) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = super::example_project(root, "flink-counter");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let cfg = fleet::config(root, &bare, url, &format!("{interval}s"));
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    let age = Duration::from_secs(15);
    let restarts = 3;
    let stale: Vec<String> = (0..k).map(|i| format!("stale-{i}")).collect();
    let flaky: Vec<String> = (0..k).map(|i| format!("flaky-{i}")).collect();
    for (i, name) in stale.iter().enumerate() {
        // After 100 + 30i records (5 s + 1.5i s at 20/s) each checkpoint takes 3 s, past its
        // 1 s timeout; Flink tolerates the failures, so the job stays RUNNING.
        std::fs::write(
            work.join(format!("jobs/{name}.yaml")),
            counter_job(
                &project,
                lib,
                &format!("\"--stallAfter\", \"{}\", \"--rate\", \"20\"", 100 + 30 * i),
                ", execution.checkpointing.timeout: \"1s\", \
                 execution.checkpointing.tolerable-failed-checkpoints: \"100000\"",
                &format!("health: {{checkpoint_age: {}s}}\n", age.as_secs()),
            ),
        )
        .unwrap();
    }
    for (i, name) in flaky.iter().enumerate() {
        // Throws after 20 + 5i records of each attempt; Flink restarts it 0.5 s later.
        std::fs::write(
            work.join(format!("jobs/{name}.yaml")),
            counter_job(
                &project,
                lib,
                &format!(
                    "\"--mode\", \"fail\", \"--failAfter\", \"{}\", \"--rate\", \"20\"",
                    20 + 5 * i
                ),
                ", restart-strategy.type: fixed-delay, \
                 restart-strategy.fixed-delay.attempts: \"100000\", \
                 restart-strategy.fixed-delay.delay: \"500ms\"",
                &format!("health: {{restarts: {{count: {restarts}, window: 5m}}}}\n"),
            ),
        )
        .unwrap();
    }
    let rt = runtime();
    let (checkpoints, restarted) = rt.block_on(async {
        let http = reqwest::Client::new();
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        push(&work, "jobs that turn unhealthy");
        let all: Vec<String> = stale.iter().chain(&flaky).cloned().collect();
        let t = Instant::now();
        // The first `unhealthy` event of each job, and the Flink job it was about.
        let mut seen: Vec<Option<(i64, String)>> = vec![None; all.len()];
        while seen.iter().any(Option::is_none) {
            for (i, name) in all.iter().enumerate() {
                if seen[i].is_some() {
                    continue;
                }
                seen[i] = first_unhealthy(&store, name);
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "not every job turned unhealthy: {:?}",
                all.iter()
                    .zip(&seen)
                    .filter(|(_, s)| s.is_none())
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        let (mut checkpoints, mut restarted) = (Vec::new(), Vec::new());
        for (i, (at, jid)) in seen.into_iter().map(Option::unwrap).enumerate() {
            if i < k {
                let stats = rest(&http, url, &format!("/jobs/{jid}/checkpoints")).await;
                let last = stats["latest"]["completed"]["latest_ack_timestamp"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("no completed checkpoint of {jid}: {stats}"));
                checkpoints.push(at - (last + age.as_millis() as i64));
            } else {
                let ex = rest(&http, url, &format!("/jobs/{jid}/exceptions")).await;
                let mut times: Vec<i64> = ex["exceptionHistory"]["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["timestamp"].as_i64())
                    .collect();
                times.sort_unstable();
                let made = *times
                    .get(restarts - 1)
                    .unwrap_or_else(|| panic!("fewer than {restarts} failures of {jid}: {ex}"));
                restarted.push(at - made);
            }
        }
        cancel_all(&http, url, Some(&store), &all, &[]).await;
        (checkpoints, restarted)
    });
    let row = |what: &str, mut v: Vec<i64>| {
        v.sort_unstable();
        let p50 = v[v.len() / 2];
        let max = *v.last().unwrap();
        let of = |x: i64| x as f64 / (interval as f64 * 1000.0);
        format!(
            "| flink-health: {what}, `health.interval` {interval}s, {} jobs | p50 {} ms · max {} ms · min {} ms (p50 {:.2}×, max {:.2}× the interval) | |",
            v.len(),
            p50,
            max,
            v[0],
            of(p50),
            of(max)
        )
    };
    vec![
        row(
            &format!(
                "latest completed checkpoint older than `checkpoint_age` {}s → `unhealthy`",
                age.as_secs()
            ),
            checkpoints,
        ),
        row(
            &format!("Flink's failure making {restarts} restarts within the window → `unhealthy`"),
            restarted,
        ),
    ]
}

/// The time (ms) and Flink job id of the first `unhealthy` event of `job`.
fn first_unhealthy(store: &Blocking, job: &str) -> Option<(i64, String)> {
    let events = store.events(Some(job), 200).ok()?;
    let e = events
        .iter()
        .filter(|e| e.kind == "unhealthy")
        .min_by_key(|e| e.id)?;
    let run = e.run_id?;
    let jid = store
        .runs(job, 100)
        .ok()?
        .into_iter()
        .find(|r| r.id == run)?
        .handle?
        .engine_id;
    Some((e.time, jid))
}

async fn rest(http: &reqwest::Client, url: &str, path: &str) -> serde_json::Value {
    http.get(format!("{url}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Requests per sweep with 1 and `many` real jobs checking health (through the proxy), then with
/// `recorded` jobs against the answers recorded meanwhile.
fn requests(url: &str, lib: &str, many: usize, recorded: usize, window: Duration) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = super::example_project(root, "flink-counter");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let rt = runtime();
    let settle = Duration::from_secs(3);
    let (one, all, answers, ids) = rt.block_on(async {
        let http = reqwest::Client::new();
        let (proxy, counter) = counting_proxy(Upstream::Cluster(url.to_string())).await;
        let cfg = fleet::config(root, &bare, &proxy, "1s");
        let settings = jobkeeper::settings::load(&cfg).unwrap();
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let names: Vec<String> = (0..many).map(|i| format!("checked-{i}")).collect();
        let write = |name: &str| {
            std::fs::write(
                work.join(format!("jobs/{name}.yaml")),
                counter_job(
                    &project,
                    lib,
                    &format!("\"--tag\", \"{name}\", \"--rate\", \"1\""),
                    "",
                    COUNTED_HEALTH,
                ),
            )
            .unwrap();
        };
        write(&names[0]);
        push(&work, "one job");
        supervised(&store, &names[..1], "deployed", Duration::from_secs(180)).await;
        tokio::time::sleep(settle).await;
        let one = per_sweep(&counter, window, GAP).await;
        for n in &names[1..] {
            write(n);
        }
        push(&work, "more jobs");
        supervised(&store, &names, "deployed", Duration::from_secs(300)).await;
        tokio::time::sleep(settle).await;
        let all = per_sweep(&counter, window, GAP).await;
        let answers = counter.answers();
        let ids: Vec<String> = store
            .live_runs()
            .unwrap()
            .into_iter()
            .filter_map(|r| Some(r.handle?.engine_id))
            .collect();
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        cancel_all(&http, url, Some(&store), &names, &[]).await;
        (one, all, answers, ids)
    });
    let replayed = replay(root, &project, lib, &answers, &ids, recorded, window);
    let row = |n: usize, c: &SweepCount, how: &str| {
        format!(
            "| flink-health: REST requests per health sweep, {n} running job{} checking health ({how}) | {c} | N + 1 = {} |",
            if n == 1 { "" } else { "s" },
            n + 1
        )
    };
    vec![
        row(1, &one, "real cluster"),
        row(many, &all, "real cluster"),
        row(
            recorded,
            &replayed,
            "answers recorded from the real cluster, replayed",
        ),
    ]
}

/// Requests per sweep of a daemon adopting `n` jobs of a recording made from `answers` (jobs
/// `ids`), replayed by the counting listener.
fn replay(
    root: &Path,
    project: &Path,
    lib: &str,
    answers: &std::collections::HashMap<String, super::counting::Answer>,
    ids: &[String],
    n: usize,
    window: Duration,
) -> SweepCount {
    let root = root.join("replay");
    std::fs::create_dir_all(&root).unwrap();
    let (recording, new_ids) = recording_of(answers, ids, n);
    let (bare, work) = make_repo(&root, 0, |_| String::new());
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("recorded-{i}")).collect();
    for (name, id) in names.iter().zip(&new_ids) {
        std::fs::write(
            work.join(format!("jobs/{name}.yaml")),
            counter_job(
                project,
                lib,
                "\"--rate\", \"1\"",
                "",
                &format!("adopt: \"{id}\"\n{COUNTED_HEALTH}"),
            ),
        )
        .unwrap();
    }
    let rt = runtime();
    rt.block_on(async {
        let (replay, counter) = counting_proxy(Upstream::Recording(recording)).await;
        let cfg = fleet::config(&root, &bare, &replay, "1s");
        let settings = jobkeeper::settings::load(&cfg).unwrap();
        let (cancel, daemon, store) = start_in_process(&root, settings).await;
        push(&work, "adopt the recorded jobs");
        supervised(&store, &names, "adopted", Duration::from_secs(300)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = per_sweep(&counter, window, GAP).await;
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        c
    })
}

/// The flink-health rows: latency for each of `intervals` (s) over `k` jobs of each kind (none
/// when `k` is 0), and requests per sweep for 1, `many` and `recorded` jobs, each counted over
/// `window`.
pub fn bench_flink_health(
    url: &str,
    lib: &str,
    k: usize,
    intervals: &[u64],
    (many, recorded): (usize, usize),
    window: Duration,
) -> Vec<String> {
    let mut rows = Vec::new();
    if k > 0 {
        for &i in intervals {
            rows.extend(latency(url, lib, k, i));
        }
    }
    rows.extend(requests(url, lib, many, recorded, window));
    rows
}

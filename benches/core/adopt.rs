//! `BENCH_ONLY=adopt`: taking over `n` Flink jobs started outside jobkeeper. `jobkeeper import`
//! over the cluster against one `GET /jobs/overview` (`curl`, also a process); one commit
//! adopting all `n` until each is recorded `running` with its `adopted` event, against one commit
//! submitting `n` new jobs until each is `running` (same daemon, same run); and the health loop's
//! requests to the cluster per sweep with no job, `n` unmanaged and `n` adopted, counted by the
//! [`super::counting`] proxy in front of the cluster.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::counting::{Upstream, counting_proxy, per_sweep};
use super::fleet::{self, all_running, cancel_all, counter_job, push, supervised};
use super::{make_repo, ms, percentile, runtime, start_in_process};

/// Between two requests of one sweep there is less than this; between sweeps (1 s apart), more.
const GAP: Duration = Duration::from_millis(300);

/// `window`: how long the requests of the health loop are counted, each time.
pub fn bench_adopt(
    url: &str,
    lib: &str,
    n: usize,
    samples: usize,
    window: Duration,
) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = fleet::built_counter(root, lib);
    let (bare, work) = make_repo(root, 0, |_| String::new());
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let (proxy, counter) = counting_proxy(Upstream::Cluster(url.to_string())).await;
        let cfg = fleet::config(root, &bare, &proxy, "1s");
        // The same daemon config with the cluster's own URL, for timing `import` without the
        // proxy's hop.
        let direct = root.join("direct.yaml");
        std::fs::write(
            &direct,
            std::fs::read_to_string(&cfg).unwrap().replace(&proxy, url),
        )
        .unwrap();
        let settings = jobkeeper::settings::load(&cfg).unwrap();
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = per_sweep(&counter, window, GAP).await;

        // Baseline: one commit submitting n new jobs (after a warm-up job that builds).
        let job = |args: String, extra: &str| counter_job(&project, lib, &args, "", extra);
        std::fs::write(
            work.join("jobs/warm.yaml"),
            job("\"--tag\", \"warm\", \"--rate\", \"1\"".into(), ""),
        )
        .unwrap();
        push(&work, "warm-up: the build");
        let warm = vec!["warm".to_string()];
        supervised(&store, &warm, "deployed", Duration::from_secs(180)).await;
        let fresh: Vec<String> = (0..n).map(|i| format!("fresh-{i}")).collect();
        for (i, name) in fresh.iter().enumerate() {
            std::fs::write(
                work.join(format!("jobs/{name}.yaml")),
                job(format!("\"--tag\", \"fresh-{i}\", \"--rate\", \"1\""), ""),
            )
            .unwrap();
        }
        let t0 = Instant::now();
        push(&work, "submit n new jobs");
        supervised(&store, &fresh, "deployed", Duration::from_secs(300)).await;
        let submit_all = t0.elapsed();
        // They go (not timed): stopped with a savepoint each.
        for name in fresh.iter().chain(&warm) {
            std::fs::remove_file(work.join(format!("jobs/{name}.yaml"))).unwrap();
        }
        push(
            &work,
            "remove them\n\nJobkeeper-Allow-Removals: the bench removes every job it made",
        );
        let t = Instant::now();
        while fresh
            .iter()
            .chain(&warm)
            .any(|n| store.job(n).ok().flatten().is_some_and(|j| j.state != "stopped"))
        {
            assert!(t.elapsed() < Duration::from_secs(300), "jobs did not stop");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // n jobs started outside jobkeeper.
        let jar_id = fleet::upload(&http, url, &project).await;
        let mut outside = Vec::new();
        for i in 0..n {
            let tag = format!("outside-{i}");
            outside.push(
                fleet::run_outside(&http, url, &jar_id, &["--tag", &tag, "--rate", "1"]).await,
            );
        }
        all_running(&http, url, &outside, Duration::from_secs(300)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let unmanaged = per_sweep(&counter, window, GAP).await;

        // `import` (the binary) against `curl` of `/jobs/overview`, alternately.
        let (mut import, mut floor) = (Vec::new(), Vec::new());
        let bin = env!("CARGO_BIN_EXE_jobkeeper");
        let run_import = |config: &std::path::Path, out: &std::path::Path| {
            let t0 = Instant::now();
            let o = Command::new(bin)
                .args(["import", "--config"])
                .arg(config)
                .args(["--env", "flink", "--out"])
                .arg(out)
                .output()
                .unwrap();
            let took = t0.elapsed();
            assert!(
                o.status.success(),
                "import: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let files = std::fs::read_dir(out).map_or(0, |d| d.count());
            assert_eq!(files, n, "import wrote {files} files, not {n}");
            took
        };
        for i in 0..samples {
            let t0 = Instant::now();
            let st = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", &format!("{url}/jobs/overview")])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            floor.push(t0.elapsed());
            import.push(run_import(&direct, &root.join(format!("imported-{i}"))));
        }
        // Once more through a counting proxy of its own, to count its requests.
        let (import_proxy, import_counter) = counting_proxy(Upstream::Cluster(url.to_string())).await;
        let counted = root.join("counted.yaml");
        std::fs::write(
            &counted,
            std::fs::read_to_string(&cfg).unwrap().replace(&proxy, &import_proxy),
        )
        .unwrap();
        run_import(&counted, &root.join("imported-counted"));
        let import_requests = import_counter.len();

        // One commit adopting all n (the project is built already).
        let names: Vec<String> = (0..n).map(|i| format!("adopted-{i}")).collect();
        for (i, id) in outside.iter().enumerate() {
            std::fs::write(
                work.join(format!("jobs/{}.yaml", names[i])),
                job(
                    format!("\"--tag\", \"outside-{i}\", \"--rate\", \"1\""),
                    &format!("adopt: \"{id}\"\n"),
                ),
            )
            .unwrap();
        }
        let t0 = Instant::now();
        push(&work, "adopt them all");
        supervised(&store, &names, "adopted", Duration::from_secs(300)).await;
        let adopt_all = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let adopted = per_sweep(&counter, window, GAP).await;
        // Nothing was submitted: the same job ids run, no other.
        let live: Vec<String> = store
            .live_runs()
            .unwrap()
            .into_iter()
            .filter_map(|r| Some(r.handle?.engine_id))
            .collect();
        assert!(outside.iter().all(|id| live.contains(id)), "{live:?}");

        cancel.cancel();
        daemon.await.unwrap().unwrap();
        let every: Vec<String> = names.iter().chain(&fresh).chain(&warm).cloned().collect();
        cancel_all(&http, url, Some(&store), &every, &outside).await;
        let _ = http.delete(format!("{url}/jars/{jar_id}")).send().await;

        import.sort();
        floor.sort();
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let (i50, f50) = (percentile(&import, 0.5), percentile(&floor, 0.5));
        vec![
            format!(
                "| adopt: `jobkeeper import` over a cluster with {n} jobs started outside jobkeeper (one file each), {samples} times | p50 {} · max {} · **{:.1}×** the baseline · {import_requests} requests to the cluster | |",
                ms(i50),
                ms(*import.last().unwrap()),
                ratio(i50, f50),
            ),
            format!(
                "| adopt baseline: `curl` of `GET /jobs/overview` on the same cluster, {samples} times | p50 {} · max {} · 1 request | |",
                ms(f50),
                ms(*floor.last().unwrap()),
            ),
            format!(
                "| adopt: one commit adopting {n} running jobs → each recorded `running` with its `adopted` event (build cached) | {} · **{:.2}×** the baseline | |",
                ms(adopt_all),
                ratio(adopt_all, submit_all),
            ),
            format!(
                "| adopt baseline: one commit submitting {n} new jobs → each `running` (build cached, jar uploaded) | {} | |",
                ms(submit_all),
            ),
            format!(
                "| adopt: the health loop's requests to the cluster per sweep, `health.interval` 1s, no job | {idle} | |"
            ),
            format!(
                "| same, {n} jobs started outside jobkeeper (unmanaged) | {unmanaged} | as many as with none |"
            ),
            format!("| same, the {n} jobs adopted (no `health` checks) | {adopted} | |"),
        ]
    })
}

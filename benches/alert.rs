//! Alert latency (`cargo bench --bench alert`): a local job fails → the alert email is accepted
//! by a real SMTP server (aiosmtpd) and → the JSON webhook is received by an HTTP listener,
//! over loopback, the daemon in-process. Prints a markdown table for docs/BENCHMARKS.md.
//!
//! Each sample is one new job that fails once (its commit pushed, the daemon polling every
//! 60 s and woken by the local-repo watcher); the failure moment is the wall-clock time the
//! job's process wrote just before exiting. Environment: `BENCH_FAILURES` (default 30).
//! Needs the venv made by `scripts/test.sh` (`JOBKEEPER_TEST_PYTHON` or `.venv/bin/python`).

#[path = "../tests/support/receivers.rs"]
mod receivers;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use receivers::{HttpReceiver, SmtpSink};
use tokio_util::sync::CancellationToken;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn since(t: SystemTime, from: SystemTime) -> Duration {
    t.duration_since(from).unwrap_or_default()
}

fn main() {
    let n: usize = std::env::var("BENCH_FAILURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            30
        } else {
            3
        });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bare = root.join("config.git");
    let work = root.join("config");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(
        root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "empty"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mail, hook) = rt.block_on(async {
        let smtp = SmtpSink::start(&root.join("mail"));
        let receiver = HttpReceiver::start().await;
        let cfg = format!(
            "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\n\
             listen: 127.0.0.1:0\nrestart: {{attempts: 3, window: 1h, backoff: 1h}}\n\
             alerts_throttle: 1h\nenvs:\n  dev: {{engine: local, alerts: [oncall]}}\n\
             alerts:\n  oncall:\n    email: {{smtp: \"{}\", starttls: false, \
             from: jobkeeper@example.com, to: [oncall@example.com]}}\n    \
             webhook: {{url: \"{}\", format: json}}\n    on: [failed]\n",
            bare.display(),
            root.join("state").display(),
            smtp.url(),
            receiver.url()
        );
        let settings = jobkeeper::settings::parse("config.yaml", cfg.as_bytes(), root).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cancel = CancellationToken::new();
        let daemon = tokio::spawn(jobkeeper::daemon::run(settings, listener, cancel.clone()));
        let mut mail = Vec::new();
        let mut hook = Vec::new();
        for i in 0..n {
            let stamp = root.join(format!("failed-{i}"));
            let job = format!(
                "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"date +%s.%N > {}; exit 3\"]\n",
                stamp.display()
            );
            std::fs::create_dir_all(work.join("jobs")).unwrap();
            std::fs::write(work.join(format!("jobs/job-{i:03}.yaml")), job).unwrap();
            git(&work, &["add", "-A"]);
            git(&work, &["commit", "-q", "-m", &format!("job {i}")]);
            git(&work, &["push", "-q", "origin", "HEAD:main"]);
            let name = format!("\"job-{i:03}\"");
            let subject = format!("dev/job-{i:03} failed");
            let start = Instant::now();
            loop {
                let got_hook = receiver
                    .received()
                    .into_iter()
                    .find(|r| r.body.contains(&name));
                let got_mail = smtp.messages().iter().position(|m| m.contains(&subject));
                if let (Some(h), Some(m), Ok(t)) =
                    (got_hook, got_mail, std::fs::read_to_string(&stamp))
                {
                    let secs: f64 = t.trim().parse().unwrap();
                    let failed = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
                    hook.push(since(h.wall, failed));
                    mail.push(since(smtp.received_at(m).unwrap(), failed));
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no alerts for job {i} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), daemon).await;
        (mail, hook)
    });
    let row = |what: &str, mut v: Vec<Duration>| {
        v.sort();
        format!(
            "| {what} ({} failures) | p50 {} · p99 {} | p99 ≤ 1 s |",
            v.len(),
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99))
        )
    };
    println!("| what | measured | goal |\n|---|---|---|");
    println!(
        "{}",
        row("job failure → alert email accepted by SMTP", mail)
    );
    println!("{}", row("job failure → alert webhook received", hook));
}

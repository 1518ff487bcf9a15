//! The listener under abuse (`cargo bench --bench listener`), on the default `http:` limits
//! (the config has no `http:` block), against the real `jobkeeper` binary: the figures of
//! docs/BENCHMARKS.md, "The listener under abuse". `tests/listener.rs` asserts the same limits
//! with the same helpers (`tests/support/listener.rs`).
//!
//! - 60 parallel 24 MiB webhook bodies with a wrong signature: the answers, the slowest, and
//!   the daemon's peak RSS before and after;
//! - 500 half-sent requests: how many the daemon closed within 30 s, and when;
//! - 2,000 idle connections under `prlimit --nofile=1024`: how many were closed at once, the
//!   daemon's descriptors, and how long a commit and its alert took meanwhile.
//!
//! `JOBKEEPER_LISTENER_DAEMON=<binary>` measures another build (one that knows no `http:`
//! block, since the config written has none). Run without `--bench` (`cargo test
//! --all-targets`), it is a smoke run of the first two parts on a few connections; the flood
//! needs a hard open-file limit of 4,096 and is what `tests/listener.rs
//! two_thousand_idle_connections_...` asserts.

#[path = "../tests/support/listener.rs"]
mod abuse;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/receivers.rs"]
mod receivers;

use std::time::Duration;

use abuse::slow_clients;
use abuse::{Binary, MIB, bad_signature_bodies, config, daemon_binary, flood_setup, idle_flood};
use common::{Git, sleeper};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("daemon: {}", daemon_binary().display());
        let (bodies, size, slow) = if full {
            (60, 24 * MIB, 500)
        } else {
            (2, MIB, 5)
        };
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let git = Git::new(root, "config");
        git.write("jobs/web.yaml", &sleeper(600));
        git.commit_push("a job");
        let b = Binary::start(root, &config(root, &git, ""), None).await;
        let r = bad_signature_bodies(&b, bodies, size).await;
        println!(
            "{bodies} parallel {} MiB bodies, wrong signature: answers {:?}, slowest {:.1} s; \
             peak RSS {:.0} MiB before, {:.0} MiB after",
            size / MIB,
            r.codes,
            r.slowest.as_secs_f64(),
            r.peak_before_mib,
            r.peak_mib
        );
        let s = slow_clients(b.addr(), slow, Duration::from_secs(30)).await;
        println!(
            "{slow} half-sent requests: {} opened, {} closed within 30 s{}",
            s.opened,
            s.closed_after.len(),
            match (s.closed_after.first(), s.closed_after.last()) {
                (Some(a), Some(z)) => format!(
                    ", {:.2}–{:.2} s after the last was sent",
                    a.as_secs_f64(),
                    z.as_secs_f64()
                ),
                _ => String::new(),
            }
        );
        drop(b);
        if !full {
            println!("note: the flood of 2,000 idle connections runs with --bench only");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (git, b, store, hook) = flood_setup(root, "").await;
        let f = idle_flood(&b, &git, &store, &hook, 2000, Duration::from_secs(30)).await;
        println!(
            "2,000 idle connections under nofile 1024: {} connected, {} closed within 20 s, \
             daemon fds {}; commit applied after {:?}, alert after {:?} (30 s wait)",
            f.connected, f.closed_at_once, f.fds, f.applied_after, f.alerted_after
        );
        println!(
            "daemon log lines naming \"Too many open files\": {}",
            b.log()
                .lines()
                .filter(|l| l.contains("Too many open files"))
                .count()
        );
    });
}

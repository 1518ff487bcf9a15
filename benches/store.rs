//! The store on its two backends, in the same sitting: SQLite (a file under a temp folder) and
//! PostgreSQL (`JOBKEEPER_TEST_POSTGRES_URL`, a schema of its own; `scripts/postgres.sh start`
//! gives one). For each: one commit applying 10,000 new jobs, the store opened again and the
//! 10,000-job list read (what a restart does first), the job counts, and event writes (each in
//! its own transaction, as the daemon writes them).
//!
//! `cargo bench --bench store` (release), or `--profile dev` for a quick look. Prints one table
//! with the Postgres/SQLite ratio of each row.

use std::time::{Duration, Instant};

use jobkeeper::event::EventKind;
use jobkeeper::store::postgres::{Target, TlsMode};
use jobkeeper::store::{Blocking, CommitRecord, DesiredUpdate, NewEvent};

/// The sizes: the full run (`cargo bench`), or a smoke run under `cargo test`.
#[derive(Clone, Copy)]
struct Size {
    jobs: usize,
    events: usize,
    samples: usize,
}

fn updates(jobs: usize) -> Vec<DesiredUpdate> {
    (0..jobs)
        .map(|i| {
            let name = format!("team-{}/job-{i:05}", i % 40);
            let yaml = format!("env: dev\nparams:\n  command: [\"sleep\", \"{i}\"]\n");
            let spec = jobkeeper::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default())
                .expect("a valid job");
            DesiredUpdate::Spec {
                path: format!("jobs/{name}.yaml"),
                name,
                spec: serde_json::to_string(&spec).unwrap(),
                hash: format!("hash-{i}"),
            }
        })
        .collect()
}

struct Figures {
    apply: Duration,
    reopen_list: Duration,
    counts_p50: Duration,
    events_per_s: f64,
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the measures on the store `open` opens (fresh and empty the first time).
fn measure(open: &dyn Fn() -> Blocking, size: Size) -> Figures {
    let Size {
        jobs,
        events,
        samples,
    } = size;
    let store = open();
    let commit = CommitRecord {
        id: "c1".into(),
        author: "Bench <b@example.com>".into(),
        subject: "10,000 jobs".into(),
    };
    let ups = updates(jobs);
    let t = Instant::now();
    store.apply_commit(&commit, &ups, &[]).unwrap();
    let apply = t.elapsed();
    drop(store);

    let t = Instant::now();
    let store = open();
    let list = store.job_list().unwrap();
    let reopen_list = t.elapsed();
    assert_eq!(list.len(), jobs);

    let counts: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            store.job_state_counts().unwrap();
            t.elapsed()
        })
        .collect();

    let t = Instant::now();
    for i in 0..events {
        let job = format!("team-{}/job-{:05}", i % 40, i);
        let message = format!("event {i}");
        store
            .event(&NewEvent {
                job: Some(&job),
                ..NewEvent::new(EventKind::Started, &message)
            })
            .unwrap();
    }
    let events_per_s = events as f64 / t.elapsed().as_secs_f64();
    Figures {
        apply,
        reopen_list,
        counts_p50: p50(counts),
        events_per_s,
    }
}

fn main() {
    let size = if std::env::args().any(|a| a == "--bench") {
        Size {
            jobs: 10_000,
            events: 2_000,
            samples: 15,
        }
    } else {
        // `cargo test` runs benches once: a smoke run.
        Size {
            jobs: 200,
            events: 50,
            samples: 3,
        }
    };
    let Size {
        jobs,
        events,
        samples,
    } = size;
    let Ok(url) = std::env::var("JOBKEEPER_TEST_POSTGRES_URL") else {
        eprintln!(
            "JOBKEEPER_TEST_POSTGRES_URL is not set: this bench compares SQLite with a real \
             PostgreSQL; start one with `scripts/postgres.sh start /tmp/jk-pg` and export its URL"
        );
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobkeeper.db");
    let sqlite = measure(&|| Blocking::open(&file).unwrap(), size);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("bench_{}", std::process::id());
    let admin = url.clone();
    let s = schema.clone();
    rt.block_on(async move {
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"
        ))
        .await
        .unwrap();
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = Target {
        url: format!("{url}{sep}options=-csearch_path%3D{schema}"),
        password: None,
        tls: TlsMode::Disable,
        pool: 8,
    };
    let handle = rt.handle().clone();
    let pg = measure(
        &|| Blocking::open_postgres(&target, handle.clone()).unwrap(),
        size,
    );

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
    println!("| store, {jobs} jobs | SQLite | PostgreSQL | Postgres / SQLite |");
    println!("|---|---|---|---|");
    println!(
        "| one commit applying {jobs} new jobs | {} | {} | {} |",
        ms(sqlite.apply),
        ms(pg.apply),
        ratio(pg.apply.as_secs_f64(), sqlite.apply.as_secs_f64())
    );
    println!(
        "| open again + list every job | {} | {} | {} |",
        ms(sqlite.reopen_list),
        ms(pg.reopen_list),
        ratio(
            pg.reopen_list.as_secs_f64(),
            sqlite.reopen_list.as_secs_f64()
        )
    );
    println!(
        "| job counts by state, p50 of {samples} | {} | {} | {} |",
        ms(sqlite.counts_p50),
        ms(pg.counts_p50),
        ratio(pg.counts_p50.as_secs_f64(), sqlite.counts_p50.as_secs_f64())
    );
    println!(
        "| event writes, one transaction each ({events}) | {:.0}/s | {:.0}/s | {} |",
        sqlite.events_per_s,
        pg.events_per_s,
        ratio(pg.events_per_s, sqlite.events_per_s)
    );
    rt.block_on(async move {
        if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = c
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    });
}

//! Tests of reading and checking the daemon config.

use super::*;
use crate::diag::render;
use crate::engine::EngineConfig;

fn ok(src: &str) -> Settings {
    match parse("config.yaml", src.as_bytes(), Path::new("/etc/jobkeeper")) {
        Ok(s) => s,
        Err(d) => panic!("{}", render(&d)),
    }
}

fn errors(src: &str) -> String {
    render(
        &parse("config.yaml", src.as_bytes(), Path::new("/etc/jobkeeper"))
            .expect_err("should fail"),
    )
}

const FULL: &str = r#"
repo:
  url: git@git.example.com:ops/jobs.git
  branch: prod
  path: deploy/jobs/
  poll: 1m
  ssh_key: keys/deploy_key
state_dir: /var/lib/jobkeeper
secrets_dir: secrets
listen: 0.0.0.0:8080
api_token_file: /etc/jobkeeper/api_token
webhook_secret_file: webhook_secret
timezone: Asia/Shanghai
build: {max_concurrent: 4, timeout: 1h, path: /opt/jdk/bin:/usr/bin:/bin}
health: {interval: 2s}
restart: {attempts: 5, window: 30m}
alerts_throttle: 10m
envs:
  dev:  {engine: local}
  prod:
    engine: flink
    flink: {url: "http://flink-jm:8081", savepoint_dir: "s3://bucket/savepoints"}
    vars: {KAFKA: "kafka-prod:9092", PORT: 9092}
    alerts: [oncall]
    restart: {attempts: 10}
  batch:
    engine: spark
    spark: {url: "http://spark:6066", master: "spark://spark:7077"}
alerts:
  oncall:
    email: {smtp: "smtp://mail.example.com:587", starttls: true, user: jobkeeper,
            password_file: /etc/jobkeeper/smtp_pw, from: jobkeeper@example.com, to: [oncall@example.com]}
  team-chat:
    webhook: {url: "https://chat.example.com/hook/abc", format: dingtalk}
    on: [failed, gave_up, build_failed, invalid]
"#;

#[test]
fn full_example() {
    let s = ok(FULL);
    assert_eq!(s.repo.url, "git@git.example.com:ops/jobs.git");
    assert_eq!(s.repo.branch, "prod");
    assert_eq!(s.repo.path, "deploy/jobs");
    assert_eq!(s.repo.poll, Duration::from_secs(60));
    assert_eq!(
        s.repo.ssh_key.as_deref(),
        Some(Path::new("/etc/jobkeeper/keys/deploy_key"))
    );
    assert_eq!(
        s.secrets_dir.as_deref(),
        Some(Path::new("/etc/jobkeeper/secrets"))
    );
    assert_eq!(
        s.webhook_secret_file.as_deref(),
        Some(Path::new("/etc/jobkeeper/webhook_secret"))
    );
    assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(s.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(s.build.max_concurrent, 4);
    assert_eq!(s.build.path, "/opt/jdk/bin:/usr/bin:/bin");
    assert_eq!(s.health.interval, Duration::from_secs(2));
    assert_eq!(s.restart.attempts, 5);
    assert_eq!(s.restart.window, Duration::from_secs(1800));
    assert_eq!(s.restart.backoff, Duration::from_secs(10));
    assert_eq!(s.alerts_throttle, Duration::from_secs(600));
    let prod = s.env("prod").expect("prod");
    assert_eq!(prod.engine.kind(), EngineKind::Flink);
    assert_eq!(prod.vars["PORT"], "9092");
    assert_eq!(prod.alerts, vec!["oncall"]);
    assert_eq!(
        s.restart_policy("prod", &RestartOverride::default())
            .attempts,
        10
    );
    let Some(EngineConfig::Spark(spark)) = s.env("batch").map(|e| &e.engine) else {
        panic!("batch is a spark env");
    };
    assert_eq!(spark.master, "spark://spark:7077");
    let email = s.alerts["oncall"].email.clone().expect("email");
    assert!(email.starttls);
    assert_eq!(email.to, vec!["oncall@example.com"]);
    assert!(s.channel_wants("oncall", EventKind::Failed));
    assert!(!s.channel_wants("oncall", EventKind::Deployed));
    assert!(s.channel_wants("team-chat", EventKind::Invalid));
    assert!(!s.channel_wants("team-chat", EventKind::Restarted));
}

#[test]
fn defaults() {
    let s = ok("repo: {url: ../jobs-repo}\nstate_dir: state\n");
    assert_eq!(s.repo.url, "/etc/jobkeeper/../jobs-repo");
    assert_eq!(s.repo.branch, "main");
    assert_eq!(s.repo.path, "jobs");
    assert_eq!(s.repo.poll, Duration::from_secs(30));
    assert_eq!(s.state_dir, Path::new("/etc/jobkeeper/state"));
    assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(s.timezone, host_timezone());
    assert_eq!(s.build.max_concurrent, 2);
    assert_eq!(s.build.timeout, Duration::from_secs(1800));
    assert_eq!(s.build.path, crate::build::BUILD_PATH);
    assert_eq!(s.health.interval, Duration::from_secs(5));
    assert_eq!(s.logs.max_size, DEFAULT_LOG_MAX_SIZE);
    assert_eq!(s.http, HttpSettings::default());
    assert_eq!(s.http.header_timeout, Duration::from_secs(10));
    assert_eq!(s.http.max_connections, 512);
    assert_eq!(s.restart, RestartPolicy::default());
    assert_eq!(s.alerts_throttle, Duration::from_secs(300));
    assert_eq!(s.max_removals, MaxRemovals::Percent(50));
    assert!(s.envs.is_empty() && s.alerts.is_empty());
}

#[test]
fn log_sizes_take_units_or_bytes_within_range() {
    let base = "repo: {url: r}\nstate_dir: s\n";
    for (text, bytes) in [
        ("16MiB", 16 << 20),
        ("\"500 MB\"", 500_000_000),
        ("1GiB", 1 << 30),
        ("1048576", 1 << 20),
    ] {
        let s = ok(&format!("{base}logs: {{max_size: {text}}}\n"));
        assert_eq!(s.logs.max_size, bytes, "{text}");
    }
    assert_eq!(
        errors(&format!("{base}logs: {{max_size: 1KiB}}\n")),
        "config.yaml:3:18: `logs.max_size`: `1KiB` is out of range; expected from 64.0 KiB to 1.0 TiB\n"
    );
    assert_eq!(
        errors(&format!("{base}logs: {{max_size: lots}}\n")),
        "config.yaml:3:18: `logs.max_size`: invalid size `lots`; expected a size like `64MiB`, `500MB` or `1GiB`\n"
    );
    assert_eq!(
        errors(&format!("{base}logs: {{max_sise: 1MiB}}\n")),
        "config.yaml:3:8: unknown field `max_sise` in `logs`, did you mean `max_size`?\n"
    );
}

#[test]
fn http_limits_are_read_and_checked_where_written() {
    let base = "repo: {url: r}\nstate_dir: s\n";
    let s = ok(&format!(
        "{base}http: {{header_timeout: 2s, idle_timeout: 30s, body_timeout: 5m, max_connections: 64, hook_buffer: 100MiB}}\n"
    ));
    assert_eq!(
        s.http,
        HttpSettings {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(300),
            max_connections: 64,
            hook_buffer: 100 << 20,
        }
    );
    assert_eq!(
        errors(&format!("{base}http: {{header_timeout: 0s}}\n")),
        "config.yaml:3:24: `http.header_timeout`: must be longer than zero\n"
    );
    assert_eq!(
        errors(&format!("{base}http: {{max_connections: 0}}\n")),
        "config.yaml:3:25: `http.max_connections`: expected a whole number from 1 to 1000000, found 0\n"
    );
    assert_eq!(
        errors(&format!("{base}http: {{hook_buffer: 1MiB}}\n")),
        "config.yaml:3:21: `http.hook_buffer`: `1MiB` is out of range; expected from 25.0 MiB to 1.0 TiB\n"
    );
    assert_eq!(
        errors(&format!("{base}http: {{idle_timeot: 1s}}\n")),
        "config.yaml:3:8: unknown field `idle_timeot` in `http`, did you mean `idle_timeout`?\n"
    );
}

#[test]
fn url_kinds() {
    assert!(is_remote_url("https://git.example.com/a.git"));
    assert!(is_remote_url("file:///srv/git/a.git"));
    assert!(is_remote_url("git@host:ops/jobs.git"));
    assert!(!is_remote_url("/srv/git/jobs.git"));
    assert!(!is_remote_url("./jobs"));
    assert!(!is_remote_url("dir/with:colon"));
}

#[test]
fn missing_required() {
    assert_eq!(
        errors("listen: 127.0.0.1:1\n"),
        "config.yaml:1:1: missing required field `repo` (where job files come from, e.g. `repo: {url: ...}`)\n\
             config.yaml:1:1: missing required field `state_dir` (a folder for the store, builds and logs, e.g. `/var/lib/jobkeeper`)\n"
    );
    assert_eq!(
        errors("repo: {branch: main}\nstate_dir: /s\n"),
        "config.yaml:1:7: missing required field `url` (a git URL, bare repo path or local work tree path)\n"
    );
}

#[test]
fn every_problem_reported_in_order() {
    let src = "\
repo: {url: /r, pol: 5s}
state_dir: /s
listen: localhost:7070
timezone: Mars/Olympus
build: {max_concurrent: 0, timeout: forever, path: \"/usr/bin:bin\"}
health: {interval: 0s}
envs:
  a: {engine: flink}
  b: {engine: spark, spark: {url: \"http://s:6066\"}}
  c: {engine: beam, alerts: [nobody]}
alerts:
  empty: {}
  hook: {webhook: {url: \"https://h\", format: teams}, on: [failed, faild, exploded]}
";
    assert_eq!(
        errors(src),
        "config.yaml:1:17: unknown field `pol` in `repo`, did you mean `poll`?\n\
             config.yaml:3:9: `listen`: invalid address `localhost:7070`; expected an IP address and port like `127.0.0.1:7070`\n\
             config.yaml:4:11: `timezone`: unknown time zone `Mars/Olympus`; expected an IANA name like `Europe/Berlin`, `Asia/Shanghai` or `UTC`\n\
             config.yaml:5:25: `build.max_concurrent`: expected a whole number from 1 to 1024, found 0\n\
             config.yaml:5:37: `build.timeout`: invalid duration `forever` (expected number at 0); expected a duration like `90s`, `5m` or `2h`\n\
             config.yaml:5:52: `build.path`: `bin` is not an absolute folder; expected `:`-separated absolute folders like `/opt/jdk/bin:/usr/bin:/bin`\n\
             config.yaml:6:20: `health.interval`: must be longer than zero\n\
             config.yaml:8:6: env `a` uses engine flink and needs `flink: {url: http://...:8081}`\n\
             config.yaml:9:29: missing required field `master` (the master URL, e.g. `spark://spark-master:7077`)\n\
             config.yaml:10:15: `envs.c.engine`: unknown engine `beam`; expected one of: local, flink, spark, yarn\n\
             config.yaml:10:30: unknown alert channel `nobody`; known channels: empty, hook\n\
             config.yaml:12:10: alert channel `empty` has neither `email` nor `webhook`; expected at least one\n\
             config.yaml:13:46: `alerts.hook.webhook.format`: unknown format `teams`; expected one of: slack, dingtalk, feishu, wecom, json\n\
             config.yaml:13:67: unknown event `faild`, did you mean `failed`?\n\
             config.yaml:13:74: unknown event `exploded`; expected one of: failed, restarted, gave_up, recovered, build_failed, deploy_failed, invalid, repo_unreachable, engine_unreachable, unhealthy, rolled_back, drift, started_empty, host_fault, commit_held, savepoint_failed, stray_killed, store_unreachable, leader_changed, deployed, succeeded\n"
    );
}

#[test]
fn load_reads_file_and_resolves_against_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "repo: {url: repo}\nstate_dir: state\n").expect("write");
    let s = load(&path).expect("valid");
    assert_eq!(s.state_dir, dir.path().join("state"));
    assert_eq!(s.repo.url, dir.path().join("repo").to_string_lossy());
    let missing = dir.path().join("nope.yaml");
    let e = render(&load(&missing).expect_err("missing"));
    assert!(
        e.contains("nope.yaml:1:1: cannot read the daemon config: "),
        "{e}"
    );
}

#[test]
fn garbage_never_panics() {
    for input in [
        &b"\xff"[..],
        b"",
        b"- a",
        b"repo: {url: [x]}\nstate_dir: {}\nenvs: [a]\nalerts: 3",
        b"envs: {? [a] : b}",
        b"envs: {x: {engine: flink, flink: [1]}}",
        b"alerts: {x: {email: {to: []}, on: {}}}",
    ] {
        let _ = parse("c.yaml", input, Path::new("."));
    }
}

#[test]
fn external_url_is_an_http_url_without_its_trailing_slash() {
    let base = "repo: {url: /srv/jobs.git}\nstate_dir: /var/lib/jobkeeper\n";
    let s = ok(&format!("{base}external_url: https://jk.example.com/\n"));
    assert_eq!(s.external_url.as_deref(), Some("https://jk.example.com"));
    assert_eq!(ok(base).external_url, None);
    assert_eq!(
        errors(&format!("{base}external_url: jk.example.com\n")),
        "config.yaml:3:15: `external_url`: `jk.example.com` is not an http(s) URL; expected one like `https://jobkeeper.ops.example.com`\n"
    );
}

#[test]
fn health_rollback_ready_within_and_drift_default_from_the_env_then_the_daemon() {
    let s = ok("repo: {url: /srv/jobs}\nstate_dir: /var/lib/jk\n\
         health: {interval: 1s, checkpoint_age: 10m}\nrollback: true\nready_within: 1m\n\
         envs:\n  dev: {engine: local}\n  \
         prod: {engine: local, health: {restarts: {count: 3, window: 5m}}, drift: warn, ready_within: 3m}\n");
    let job = crate::spec::GuardOverride {
        rollback: Some(false),
        ..Default::default()
    };
    let dev = s.guard("dev", &Default::default());
    assert_eq!(dev.checkpoint_age, Some(Duration::from_secs(600)));
    assert!(dev.rollback && dev.restarts.is_none());
    assert_eq!(dev.ready_within, Duration::from_secs(60));
    assert_eq!(dev.drift, crate::spec::Drift::Correct);
    let prod = s.guard("prod", &job);
    assert!(!prod.rollback);
    assert_eq!(prod.ready_within, Duration::from_secs(180));
    assert_eq!(prod.drift, crate::spec::Drift::Warn);
    assert_eq!(prod.restarts.map(|r| r.count), Some(3));
    assert_eq!(
        errors(
            "repo: {url: /srv/jobs}\nstate_dir: /x\nrollback: maybe\nready_within: 0s\n\
             drift: fix\nenvs:\n  a: {engine: local, health: {restarts: {count: 0}}}\n"
        ),
        "config.yaml:3:11: `rollback`: expected `true` or `false`, found a string\n\
         config.yaml:4:15: `ready_within`: must be longer than zero\n\
         config.yaml:5:8: `drift`: unknown value `fix`; expected one of: correct, warn\n\
         config.yaml:7:41: missing required field `window` (the window restarts are counted in, e.g. `10m`)\n\
         config.yaml:7:49: `envs.a.health.restarts.count`: expected a whole number from 1 to 4294967295, found 0\n"
    );
}

#[test]
fn a_spark_env_whose_workers_cannot_fetch_jars_is_refused() {
    let base = "repo: {url: /srv/jobs.git}\nstate_dir: /var/lib/jobkeeper\n";
    let env = |spark: &str| {
        format!(
            "envs:\n  batch:\n    engine: spark\n    spark: {{url: \"http://sm:6066\", master: \"spark://sm:7077\"{spark}}}\n"
        )
    };
    assert_eq!(
        errors(&format!("{base}{}", env(""))),
        "config.yaml:6:12: `envs.batch.spark`: the Spark workers of spark://sm:7077 run on other \
         hosts and fetch each jar from http://127.0.0.1:7070, taken from `listen` (no \
         `external_url` is set), which only this host reaches; set `external_url` (or \
         `envs.batch.spark.artifact_url`) to an address the workers reach, or \
         `envs.batch.spark.artifact_dir` to a folder every host mounts\n"
    );
    let e = errors(&format!(
        "{base}external_url: http://localhost:7070\n{}",
        env("")
    ));
    assert!(e.contains("taken from `external_url`"), "{e}");
    // Reachable: external_url, the env's own base, a shared folder.
    ok(&format!(
        "{base}external_url: http://jk.internal:7070\n{}",
        env("")
    ));
    let s = ok(&format!(
        "{base}{}",
        env(", artifact_url: \"http://10.1.2.3:7070/\"")
    ));
    let Some(EngineConfig::Spark(spark)) = s.env("batch").map(|e| &e.engine) else {
        panic!("batch is a spark env");
    };
    assert_eq!(spark.artifact_url.as_deref(), Some("http://10.1.2.3:7070"));
    let s = ok(&format!("{base}{}", env(", artifact_dir: /mnt/jars")));
    let Some(EngineConfig::Spark(spark)) = s.env("batch").map(|e| &e.engine) else {
        panic!("batch is a spark env");
    };
    assert_eq!(spark.artifact_dir.as_deref(), Some(Path::new("/mnt/jars")));
    assert_eq!(
        errors(&format!(
            "{base}{}",
            env(", artifact_dir: jars, artifact_url: \"ftp://x\"")
        )),
        "config.yaml:6:77: `envs.batch.spark.artifact_dir`: `jars` is not an absolute path; expected the folder every Spark host mounts, like `/mnt/shared/jobkeeper-jars`\n\
         config.yaml:6:97: `envs.batch.spark.artifact_url`: `ftp://x` is not an http(s) URL; expected the base the Spark workers reach the daemon at, like `http://jobkeeper.internal:7070`\n"
    );
    let e = errors(&format!(
        "{base}{}",
        env(", artifact_dir: /mnt/jars, artifact_url: \"http://10.1.2.3:7070\"")
    ));
    assert!(
        e.contains("set `artifact_url` or `artifact_dir`, not both"),
        "{e}"
    );
}

#[test]
fn retention_keeps_100_runs_and_30_days_unless_told() {
    let base = "repo: {url: /srv/jobs.git}\nstate_dir: /var/lib/jobkeeper\n";
    let r = ok(base).retention;
    assert_eq!((r.runs, r.age), (100, Duration::from_secs(30 * 86_400)));
    let r = ok(&format!("{base}retention: {{runs: 5, age: 1h}}\n")).retention;
    assert_eq!((r.runs, r.age), (5, Duration::from_secs(3600)));
    let r = ok(&format!("{base}retention: {{age: 2d}}\n")).retention;
    assert_eq!((r.runs, r.age), (100, Duration::from_secs(2 * 86_400)));
    let e = errors(&format!(
        "{base}retention: {{runs: 0, age: soon, keep: 1}}\n"
    ));
    assert!(
        e.contains("3:33: unknown field `keep` in `retention`"),
        "{e}"
    );
    assert!(e.contains("retention.runs"), "{e}");
    assert!(e.contains("retention.age"), "{e}");
}

#[test]
fn max_removals_is_a_percentage_or_a_count() {
    let base = "repo: {url: /r}\nstate_dir: /s\n";
    assert_eq!(
        ok(&format!("{base}max_removals: 20%\n")).max_removals,
        MaxRemovals::Percent(20)
    );
    assert_eq!(
        ok(&format!("{base}max_removals: 7\n")).max_removals,
        MaxRemovals::Count(7)
    );
    assert_eq!(
        errors(&format!("{base}max_removals: 150%\n")),
        "config.yaml:3:15: `max_removals`: expected a percentage from 0% to 100% (`50%`) or a \
         number of jobs (`20`), found `150%`\n"
    );
    assert!(errors(&format!("{base}max_removals: -1\n")).contains("`max_removals`"));
}

#[test]
fn env_folders_scoped_tokens_and_freeze_windows_are_read_and_checked() {
    let base = "repo: {url: /r}\nstate_dir: /s\ntimezone: UTC\n";
    let s = ok(&format!(
        "{base}envs:\n  prod: {{engine: local, folders: [\"payments/**\", \"risk/*\"]}}\n  dev: {{engine: local}}\n\
         api_tokens:\n  - {{file: token-payments, folders: [\"payments/**\"]}}\n\
         freeze:\n  - {{schedule: \"0 18 * * 5\", duration: 62h, envs: [prod], reason: weekend}}\n"
    ));
    use crate::spec::DaemonConfig as _;
    assert!(s.env_open_to("prod", "payments/eu/ledger"));
    assert!(s.env_open_to("prod", "risk/score"));
    assert!(
        !s.env_open_to("prod", "risk/deep/model"),
        "`*` stays in its folder"
    );
    assert!(!s.env_open_to("prod", "ads/clicks"));
    assert!(
        s.env_open_to("dev", "ads/clicks"),
        "no folders: open to all"
    );
    assert_eq!(
        s.api_tokens[0].file,
        Path::new("/etc/jobkeeper/token-payments")
    );
    assert!(s.api_tokens[0].covers("payments/a") && !s.api_tokens[0].covers("ads/a"));
    assert_eq!(token_name(&s.api_tokens[0].file), "token-payments");
    assert_eq!(s.freeze.len(), 1);

    let e = errors(&format!(
        "{base}envs:\n  prod: {{engine: local, folders: [\"[a\"]}}\n\
         api_tokens:\n  - {{file: t, folders: []}}\n  - {{folders: [a/*]}}\n\
         freeze:\n  - {{schedule: \"0 18 * * 5\"}}\n"
    ));
    assert_eq!(
        e,
        "config.yaml:5:34: `envs.prod.folders[0]`: `[a` is not a glob over job names: invalid range pattern\n\
         config.yaml:7:24: `api_tokens[0].folders`: a scoped token needs at least one glob; the all-jobs token is `api_token_file`\n\
         config.yaml:8:5: missing required field `file` (the file holding the token)\n\
         config.yaml:10:5: missing required field `duration` (how long the window stays open, e.g. `62h`)\n"
    );
}

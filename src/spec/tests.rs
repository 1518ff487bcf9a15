//! Tests of job file parsing, placeholders, names, secrets and the schema.

use std::path::Path;

use super::*;
use crate::diag::render;
use crate::settings::Settings;

const P: &str = "jobs/a.yaml";

fn settings() -> Settings {
    let cfg = r#"
repo: {url: "https://git.example.com/ops/jobs.git"}
state_dir: /var/lib/jobkeeper
secrets_dir: /etc/jobkeeper/secrets
timezone: UTC
envs:
  dev: {engine: local}
  prod:
    engine: flink
    flink: {url: "http://flink:8081"}
    vars: {KAFKA: "kafka-prod:9092", PORT: 9092}
alerts:
  oncall: {webhook: {url: "https://chat.example.com/hook", format: slack}}
"#;
    crate::settings::parse("config.yaml", cfg.as_bytes(), Path::new("/etc/jobkeeper"))
        .expect("test config is valid")
}

fn errors(src: &str) -> String {
    render(&parse_job(P, src.as_bytes(), Context::default()).expect_err("should fail"))
}

fn errors_with(src: &str) -> String {
    let s = settings();
    render(
        &parse_job(
            P,
            src.as_bytes(),
            Context {
                settings: Some(&s),
                files: None,
            },
        )
        .expect_err("should fail"),
    )
}

fn ok(src: &str) -> JobSpec {
    match parse_job(P, src.as_bytes(), Context::default()) {
        Ok(s) => s,
        Err(d) => panic!("{}", render(&d)),
    }
}

/// Found by fuzzing (`fuzz/`, target `job_file`): invalid UTF-8 after a lone `\r` (a line
/// break to YAML) was reported on the line before it, at a column past that line's end.
#[test]
fn invalid_utf8_after_a_carriage_return_is_on_the_next_line() {
    let d = utf8("f.yaml", b"env: dev\r\xe0").expect_err("not UTF-8");
    assert_eq!((d[0].line, d[0].column), (2, 1));
    let d = utf8("f.yaml", b"a\r\nb: \xff").expect_err("not UTF-8");
    assert_eq!((d[0].line, d[0].column), (2, 4));
}

#[test]
fn full_example() {
    let spec = ok(r#"
project:
  repo: https://git.example.com/data/clicks.git
  dir: jobs/clicks
  build: mvn -B -q package -DskipTests
  artifact: target/clicks-*.jar
  follow: true
env: prod
params:
  main_class: com.example.Clicks
  args: ["--topic", "clicks", "--brokers", "${var:KAFKA}", "--n", 5, "--password", "${secret:kafka_pw}"]
  parallelism: 4
  conf: {taskmanager.numberOfTaskSlots: "2", a.b: 3, c: true}
schedule: "30 2 * * *"
overlap: replace
timeout: 2h
restart: {attempts: 5, window: 1h, backoff: 10s, max_backoff: 5m}
upgrade: stateless
alerts: [oncall, team-chat]
suspend: false
"#);
    let p = spec.project.as_ref().expect("project");
    assert_eq!(p.branch, "main");
    assert_eq!(p.dir, "jobs/clicks");
    assert!(p.follow);
    assert_eq!(spec.env, "prod");
    assert_eq!(spec.params.args[3], "${var:KAFKA}");
    assert_eq!(spec.params.args[5], "5");
    assert_eq!(spec.params.conf["a.b"], "3");
    assert_eq!(spec.params.conf["c"], "true");
    assert_eq!(spec.params.parallelism, Some(4));
    assert!(spec.is_batch());
    assert_eq!(spec.overlap, Overlap::Replace);
    assert_eq!(spec.upgrade, Upgrade::Stateless);
    assert_eq!(spec.timeout, Some(Duration::from_secs(7200)));
    assert_eq!(spec.restart.attempts, Some(5));
    assert_eq!(spec.restart.max_backoff, Some(Duration::from_secs(300)));
    assert_eq!(
        spec.alerts.as_deref(),
        Some(&["oncall".to_string(), "team-chat".to_string()][..])
    );
    assert_eq!(secret_names(&spec.params), vec!["kafka_pw".to_string()]);
}

#[test]
fn minimal_service_job_defaults() {
    let spec = ok("env: dev\nparams: {command: [sleep, 100]}\n");
    assert!(!spec.is_batch());
    assert_eq!(spec.project, None);
    assert_eq!(spec.overlap, Overlap::Forbid);
    assert_eq!(spec.upgrade, Upgrade::Savepoint);
    assert_eq!(spec.params.command, vec!["sleep", "100"]);
    let p = ok("env: dev\nproject: {repo: ./code}\n")
        .project
        .expect("project");
    assert_eq!(
        (p.branch.as_str(), p.dir.as_str(), p.follow),
        ("main", "", false)
    );
}

#[test]
fn unknown_field_with_hint() {
    assert_eq!(
        errors("params: {command: [x]}\nenviroment: prod\n"),
        "jobs/a.yaml:2:1: unknown field `enviroment`, did you mean `env`?\n"
    );
    assert_eq!(
        errors("env: dev\nparams:\n  paralelism: 2\n  bogus: 1\n"),
        "jobs/a.yaml:3:3: unknown field `paralelism` in `params`, did you mean `parallelism`?\n\
             jobs/a.yaml:4:3: unknown field `bogus` in `params`; expected one of: main_class, args, parallelism, conf, command, environment, workdir\n"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        errors("env: [prod]\n"),
        "jobs/a.yaml:1:6: `env`: expected a string, found a list\n"
    );
    assert_eq!(
        errors("env: dev\nsuspend: yes\nparams: {parallelism: two, args: [a, {b: c}]}\n"),
        "jobs/a.yaml:2:10: `suspend`: expected `true` or `false`, found a string\n\
             jobs/a.yaml:3:23: `params.parallelism`: expected a whole number, found a string\n\
             jobs/a.yaml:3:38: `params.args[1]`: expected a string, number or boolean, found a mapping\n"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        errors("env: dev\ntimeout: 5 minutes please\nrestart: {backoff: 10}\n"),
        "jobs/a.yaml:2:10: `timeout`: invalid duration `5 minutes please` (expected number at 10); expected a duration like `90s`, `5m` or `2h`\n\
             jobs/a.yaml:3:20: `restart.backoff`: expected a duration like `90s`, `5m` or `2h`, found a number\n"
    );
}

#[test]
fn bad_cron() {
    assert_eq!(
        errors("env: dev\nschedule: \"61 2 * * *\"\n"),
        "jobs/a.yaml:2:11: `schedule`: invalid cron `61 2 * * *`: minute `61` out of range in `61`; expected 0-59\n"
    );
}

#[test]
fn bad_enums() {
    assert_eq!(
        errors("env: dev\noverlap: skip\nupgrade: savepoints\n"),
        "jobs/a.yaml:2:10: `overlap`: unknown value `skip`; expected one of: forbid, replace, allow\n\
             jobs/a.yaml:3:10: `upgrade`: unknown value `savepoints`; expected one of: savepoint, stateless, last-state\n"
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        errors("env: dev\nparams: {}\nenv: prod\n"),
        "jobs/a.yaml:3:1: duplicate key `env` (first defined at line 1, column 1)\n"
    );
}

#[test]
fn project_rules() {
    assert_eq!(
        errors("env: dev\nproject: {branch: dev}\n"),
        "jobs/a.yaml:2:10: missing required field `repo` (a git URL or a path to a local git repo)\n"
    );
    assert_eq!(
        errors("env: dev\nproject: {repo: x, dir: /abs}\n"),
        "jobs/a.yaml:2:25: `project.dir`: `/abs` is absolute; expected a folder inside the repo\n"
    );
    assert_eq!(
        errors("env: dev\nproject: {repo: x, dir: a/../../b}\n"),
        "jobs/a.yaml:2:25: `project.dir`: `a/../../b` contains `..`; expected a folder inside the repo\n"
    );
}

#[test]
fn missing_env() {
    assert_eq!(
        errors("params: {}\n"),
        "jobs/a.yaml:1:1: missing required field `env` (the env of the daemon config to run in, e.g. `env: prod`)\n"
    );
}

#[test]
fn unknown_env_with_settings() {
    assert_eq!(
        errors_with("env: staging\n"),
        "jobs/a.yaml:1:6: unknown env `staging`; known envs: dev, prod\n"
    );
}

#[test]
fn unknown_alert_channel_with_settings() {
    assert_eq!(
        errors_with("env: prod\nparams: {main_class: A}\nalerts: [oncall, pager]\n"),
        "jobs/a.yaml:3:18: unknown alert channel `pager`; known channels: oncall\n"
    );
}

#[test]
fn local_env_needs_command() {
    assert_eq!(
        errors_with("env: dev\nparams: {workdir: /tmp}\n"),
        "jobs/a.yaml:2:9: env `dev` runs on the local engine, which needs `params.command` (the argv to run, e.g. `command: [\"./run.sh\"]`)\n"
    );
}

#[test]
fn a_secret_with_a_daemon_config_that_has_no_secrets_dir_is_an_error_at_its_place() {
    let mut s = settings();
    s.secrets_dir = None;
    let ctx = Context {
        settings: Some(&s),
        files: None,
    };
    let src = "env: prod\nparams: {main_class: A, args: [\"${secret:pw}\"]}\n";
    let errors = render(&parse_job(P, src.as_bytes(), ctx).unwrap_err());
    assert_eq!(
        errors,
        "jobs/a.yaml:2:32: `${secret:pw}` needs `secrets_dir` in the daemon config, which sets none; add `secrets_dir: /etc/jobkeeper/secrets` with a file `pw` in it\n"
    );
    // Offline (no daemon config), a secret is only checked for its name.
    assert!(parse_job(P, src.as_bytes(), Context::default()).is_ok());
}

#[test]
fn vars_replaced_with_settings() {
    let s = settings();
    let ctx = Context {
        settings: Some(&s),
        files: None,
    };
    let src = "env: prod\nproject: {repo: \"https://x/${var:KAFKA}.git\"}\nparams: {main_class: A, args: [\"--b=${var:KAFKA}\", \"${var:PORT}\", \"${secret:pw}\"], conf: {k: \"${var:PORT}\"}}\n";
    let spec = parse_job(P, src.as_bytes(), ctx).expect("valid");
    assert_eq!(
        spec.params.args,
        vec!["--b=kafka-prod:9092", "9092", "${secret:pw}"]
    );
    assert_eq!(spec.params.conf["k"], "9092");
    assert_eq!(
        spec.project.map(|p| p.repo).as_deref(),
        Some("https://x/kafka-prod:9092.git")
    );
    // Without settings, vars stay as written.
    let spec = ok(src);
    assert_eq!(spec.params.args[0], "--b=${var:KAFKA}");
}

#[test]
fn unknown_var() {
    assert_eq!(
        errors_with(
            "env: prod\nparams:\n  args: [\"--x\", \"${var:KAFKA_URL}\"]\n  main_class: A\n"
        ),
        "jobs/a.yaml:3:17: unknown var `KAFKA_URL` in `${var:KAFKA_URL}`; known vars of env `prod`: KAFKA, PORT\n"
    );
}

#[test]
fn placeholder_forms() {
    assert_eq!(
        errors("env: dev\nparams:\n  command: [\"${env:HOME}\", \"${secret:a/b}\", \"${oops\"]\n"),
        "jobs/a.yaml:3:13: unknown placeholder `${env:HOME}`; expected `${var:NAME}` or `${secret:NAME}`\n\
             jobs/a.yaml:3:28: invalid secret name `a/b` in `${secret:a/b}`; expected letters, digits, `_`, `.` or `-`\n\
             jobs/a.yaml:3:45: unclosed `${` in `${oops`; expected `${var:NAME}` or `${secret:NAME}`\n"
    );
}

#[test]
fn oversize_file() {
    let big = vec![b'#'; MAX_JOB_FILE_BYTES + 1];
    assert_eq!(
        render(&parse_job(P, &big, Context::default()).expect_err("too big")),
        "jobs/a.yaml:1:1: file is 1048577 bytes; a job file may be at most 1048576 bytes (1 MiB)\n"
    );
}

#[test]
fn not_utf8() {
    assert_eq!(
        render(
            &parse_job(
                P,
                b"env: dev\nparams: {workdir: \"ab\xff\"}\n",
                Context::default()
            )
            .expect_err("bad")
        ),
        "jobs/a.yaml:2:22: invalid UTF-8 (byte 0xff); the file must be UTF-8 text\n"
    );
}

#[test]
fn empty_file() {
    assert_eq!(
        errors(""),
        "jobs/a.yaml:1:1: the file is empty; expected a YAML mapping of fields\n"
    );
    assert_eq!(
        errors("- a\n"),
        "jobs/a.yaml:1:1: expected a mapping of fields at the top level, found a list\n"
    );
}

#[test]
fn several_errors_in_file_order() {
    let src = "\
project:
  repo: [x]
  folow: true
env: staging
params:
  args: \"--x\"
schedule: \"* * * *\"
timeout: soon
alerts: [pager]
";
    assert_eq!(
        errors_with(src),
        "jobs/a.yaml:2:9: `project.repo`: expected a string, found a list\n\
             jobs/a.yaml:3:3: unknown field `folow` in `project`, did you mean `follow`?\n\
             jobs/a.yaml:4:6: unknown env `staging`; known envs: dev, prod\n\
             jobs/a.yaml:6:9: `params.args`: expected a list, found a string\n\
             jobs/a.yaml:7:11: `schedule`: invalid cron `* * * *`: expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found 4\n\
             jobs/a.yaml:8:10: `timeout`: invalid duration `soon` (expected number at 0); expected a duration like `90s`, `5m` or `2h`\n\
             jobs/a.yaml:9:10: unknown alert channel `pager`; known channels: oncall\n"
    );
}

#[test]
fn names() {
    assert_eq!(check_name("team-a/clicks"), Ok(()));
    assert_eq!(check_name("a.b_c-1/x2"), Ok(()));
    for bad in [
        "", "Team", "-a", "a//b", "a/../b", "a/", "/a", "a b", "a/./b",
    ] {
        assert!(check_name(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(check_name(&"a".repeat(128)).is_ok());
    let long = check_name(&"a".repeat(129)).expect_err("too long");
    assert!(
        long.to_string().contains("at most 128 characters"),
        "{long}"
    );
    assert_eq!(
        check_name("Clicks").map_err(|e| e.to_string()),
        Err("job name `Clicks` contains `C`; a job name is lowercase letters, digits, `.`, `_`, `-` and `/`, starts with a letter or digit, has no empty or `..` segment and is at most 128 characters".to_string())
    );
}

#[test]
fn secrets_resolved_and_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kafka_pw"), "s3cr3t\n").expect("write");
    std::fs::write(dir.path().join("token"), "tok").expect("write");
    let params = Params {
        args: vec!["--password".into(), "${secret:kafka_pw}".into()],
        environment: [("T".to_string(), "x-${secret:token}-y".to_string())].into(),
        ..Params::default()
    };
    assert_eq!(secret_names(&params), vec!["kafka_pw", "token"]);
    let r = resolve_secrets(&params, Some(dir.path())).expect("resolved");
    assert_eq!(r.args[1], "s3cr3t");
    assert_eq!(r.environment["T"], "x-tok-y");
    assert_eq!(
        mask_secrets(
            "pw=s3cr3t t=tok",
            &["tok".into(), "s3cr3t".into(), String::new()]
        ),
        "pw=*** t=***"
    );

    let missing = Params {
        args: vec!["${secret:nope}".into()],
        ..Params::default()
    };
    let e = resolve_secrets(&missing, Some(dir.path())).expect_err("missing");
    assert!(
        e.to_string().starts_with("secret `nope`: cannot read "),
        "{e}"
    );
    let e = resolve_secrets(&missing, None).expect_err("no dir");
    assert_eq!(
        e.to_string(),
        "secret `nope` is used but no `secrets_dir` is configured"
    );
    // An error never carries a secret's value.
    let e = resolve_secrets(&params, None).expect_err("no dir");
    assert!(!e.to_string().contains("s3cr3t"));
}

#[test]
fn a_multi_line_secret_is_masked_line_by_line_so_no_cut_shows_a_piece() {
    let pem = "-----BEGIN KEY-----\r\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n  6ppd1eDoxp9vQ7s\nab\n-----END KEY-----";
    let log = "start\nkey: -----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n\t6ppd1eDoxp9vQ7s tail\nab\nabc ab\n-----END KEY-----\n";
    let masked = mask_secrets(log, &[pem.to_string()]);
    assert_eq!(
        masked,
        "start\nkey: ***\n***\n\t*** tail\n***\nabc ab\n***\n"
    );
    // Every line of the masked text, taken alone (a `tail=1` cut), holds no line of the value
    // of MIN_PIECE_CHARS or more.
    for line in masked.lines() {
        for piece in pem.split('\n').map(str::trim) {
            if piece.chars().count() >= crate::spec::MIN_PIECE_CHARS {
                assert!(!line.contains(piece), "{line}");
            }
        }
    }
    // Written whole on one line, it is masked whole.
    assert_eq!(
        mask_secrets(&format!("x{pem}y"), &[pem.to_string()]),
        "x***y"
    );
}

#[test]
fn a_secret_in_project_is_an_error_at_its_place_and_one_in_command_a_warning() {
    let src = "env: dev\nproject:\n  repo: https://x/y.git\n  build: \"make TOKEN=${secret:tok}\"\nparams: {command: [run]}\n";
    assert_eq!(
        errors(src),
        "jobs/a.yaml:4:10: `${secret:tok}` in `project.build`: builds are not given secrets; use `${secret:..}` in `params` (e.g. `params.environment`) of the run instead\n"
    );
    let src = "env: dev\nparams:\n  command: [prog, \"--pw=${secret:pw}\"]\n  environment: {T: \"${secret:tok}\"}\n";
    ok(src);
    let w = crate::spec::command_secret_warnings(P, src.as_bytes());
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].line, w[0].column), (3, 19));
    assert!(
        w[0].message.starts_with("warning: `${secret:pw}` in `params.command[1]` is visible to every local user in /proc/<pid>/cmdline")
            && w[0].message.contains("`params.environment`"),
        "{}",
        w[0].message
    );
}

#[test]
fn schema_is_closed() {
    let s = json_schema();
    assert_eq!(s["additionalProperties"], false);
    // `env` may come from a `_defaults.yaml`: required of the merged file, not of the file.
    assert!(s.get("required").is_none());
    let d = &s["$defs"]["defaults"];
    assert_eq!(d["additionalProperties"], false);
    for f in JOB_FIELDS {
        let inherited = d["properties"].get(*f).is_some();
        assert_eq!(
            inherited,
            !NOT_DEFAULTS.contains(f),
            "{f} in the defaults schema"
        );
    }
    assert_eq!(s["properties"]["overlap"]["enum"][1], "replace");
    let props = s["properties"].as_object().expect("object");
    for f in JOB_FIELDS {
        assert!(props.contains_key(*f), "{f} missing from schema");
    }
    let params = s["properties"]["params"]["properties"]
        .as_object()
        .expect("object");
    for f in PARAMS_FIELDS {
        assert!(params.contains_key(*f), "{f} missing from schema");
    }
}

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00".to_vec(),
        (0u8..=255).collect(),
        b"env: dev\nparams: {conf: {[a]: b}}".to_vec(),
        b"env: &e dev\nparams: {args: [*e, *e]}\nalerts: *e".to_vec(),
        b"{env: {env: {env: null}}}".to_vec(),
        b"env: dev\nschedule: \"@\"\n".to_vec(),
        b"env: dev\nparams: {command: [\"${\", \"}${var:}\", \"${secret:}\"]}".to_vec(),
        b"!!str".to_vec(),
        b"? a\n".to_vec(),
        b"env: dev\nparams: {parallelism: 99999999999999999999999}".to_vec(),
        b"env: dev\nrestart: {attempts: -1}".to_vec(),
    ];
    inputs.push(format!("{}{}", "[".repeat(500), "]".repeat(500)).into_bytes());
    inputs.push("a: ".repeat(5000).into_bytes());
    for input in &inputs {
        let _ = parse_job(P, input, Context::default());
        let s = settings();
        let _ = parse_job(
            P,
            input,
            Context {
                settings: Some(&s),
                files: None,
            },
        );
    }
}

#[test]
fn sql_is_split_and_placed_in_the_job_file() {
    let s = settings();
    let ctx = Context {
        settings: Some(&s),
        files: None,
    };
    let src = "env: prod\nsql: |\n  SET 'parallelism.default' = '2';\n  CREATE TABLE t (x STRING) WITH ('k' = '${var:KAFKA}');\n  INSERT INTO u SELECT x FROM t;\n";
    let spec = parse_job(P, src.as_bytes(), ctx).expect("valid");
    let sql = spec.sql.expect("sql");
    assert_eq!(sql.file, None);
    assert_eq!(sql.path, P);
    let at: Vec<(usize, usize)> = sql.statements.iter().map(|s| (s.line, s.column)).collect();
    assert_eq!(at, vec![(3, 3), (4, 3), (5, 3)]);
    assert!(sql.statements[1].text.contains("'kafka-prod:9092'"));
    assert_eq!(
        sql.statements[0].kind,
        StatementKind::Set {
            key: "parallelism.default".into(),
            value: "2".into()
        }
    );
}

#[test]
fn health_rollback_ready_within_and_drift_are_read_and_checked() {
    let s = ok(
        "env: dev\nparams: {command: [x]}\nhealth: {checkpoint_age: 10m, restarts: {count: 5, window: 10m}}\n\
                rollback: true\nready_within: 2m\ndrift: warn\n",
    );
    assert_eq!(s.guard.checkpoint_age, Some(Duration::from_secs(600)));
    assert_eq!(
        s.guard.restarts.map(|r| (r.count, r.window)),
        Some((5, Duration::from_secs(600)))
    );
    assert_eq!(s.guard.rollback, Some(true));
    assert_eq!(s.guard.ready_within, Some(Duration::from_secs(120)));
    assert_eq!(s.guard.drift, Some(crate::spec::Drift::Warn));
    let plain = ok("env: dev\nparams: {command: [x]}\n");
    assert!(plain.guard.is_empty());
    assert!(!serde_json::to_string(&plain).unwrap().contains("guard"));
    assert_eq!(
        errors("env: dev\nparams: {command: [x]}\nhealth: {checkpoint_ag: 1m}\ndrift: undo\n"),
        "jobs/a.yaml:3:10: unknown field `checkpoint_ag` in `health`, did you mean `checkpoint_age`?\n\
         jobs/a.yaml:4:8: `drift`: unknown value `undo`; expected one of: correct, warn\n"
    );
}

#[test]
fn adopt_names_a_cluster_job_and_is_refused_on_a_local_env_or_empty() {
    let spec = ok("env: prod\nadopt: clicks-etl\nparams: {main_class: a.B}\n");
    assert_eq!(spec.adopt.as_deref(), Some("clicks-etl"));
    // Without `adopt`, the stored spec (and so its hash) is what it was before the field.
    let plain = ok("env: prod\nparams: {main_class: a.B}\n");
    assert!(!serde_json::to_string(&plain).unwrap().contains("adopt"));
    assert_eq!(
        errors_with("env: dev\nadopt: x\nparams: {command: [sleep, \"1\"]}\n"),
        "jobs/a.yaml:2:8: `adopt`: the env's engine is local; only flink and spark jobs running \
         on a cluster can be taken over\n"
    );
    assert_eq!(
        errors("env: prod\nadopt: \" \"\n"),
        "jobs/a.yaml:2:8: `adopt`: must not be empty; expected a Flink job id or name, or a Spark \
         driver id\n"
    );
}

#[test]
fn restore_is_refused_on_an_engine_without_state() {
    assert_eq!(
        errors_with(
            "env: dev\nrestore: file:///sp/savepoint-1\nparams: {command: [sleep, \"1\"]}\n"
        ),
        "jobs/a.yaml:2:10: `restore`: the env's engine is local, whose jobs have no savepoints \
         or checkpoints to start from; only flink and yarn jobs can be restored\n"
    );
}

#[test]
fn a_todo_line_left_by_import_makes_the_file_invalid_at_its_place() {
    let src = "adopt: abc\nenv: prod\n# TODO project: the git repo that builds this job's jar\n\
               params:\n  main_class: a.B\n  # TODO args: not known to the cluster\n";
    assert_eq!(
        errors(src),
        "jobs/a.yaml:3:1: unfinished job file: `# TODO project: the git repo that builds this \
         job's jar`; do what it says, then delete the line\n\
         jobs/a.yaml:6:3: unfinished job file: `# TODO args: not known to the cluster`; do what \
         it says, then delete the line\n"
    );
    // Other comments are fine.
    ok("env: prod # TODO-free\n# note: todo later\nparams: {main_class: a.B}\n");
}

//! Job files: `spec::parse_job` on arbitrary bytes, without and with a daemon config.
//!
//! Properties: no panic; an error names a place in the input; parsing is deterministic; a
//! daemon config only adds checks; a valid spec written back as a job file reads the same, and
//! survives the store's JSON; its plan renders; its `${secret:..}` names are all valid.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use jobkeeper::plan::{self, Action, Change};
use jobkeeper::schedule::Schedule;
use jobkeeper::settings::{self, Settings};
use jobkeeper::spec::{self, Context, JobSpec, SecretError};
use jobkeeper_fuzz::{assert_located, job_file};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "jobs/team-a/fuzz.yaml";

/// A daemon config with one env per engine, vars (one holding a placeholder) and a channel.
const CONFIG: &str = r#"
repo: {url: /srv/config.git, branch: main, path: jobs}
state_dir: /var/lib/jobkeeper
alerts:
  oncall:
    webhook: {url: "http://127.0.0.1:9/hook", format: json}
envs:
  dev:
    engine: local
    vars: {GREETING: hello, EMPTY: "", ROOT: /etc, PLACEHOLDER: "${secret:db}"}
  prod:
    engine: flink
    flink: {url: "http://127.0.0.1:8081"}
    vars: {TOPIC: clicks}
  batch:
    engine: spark
    spark: {url: "http://127.0.0.1:6066", master: "spark://127.0.0.1:7077"}
"#;

static SETTINGS: LazyLock<Settings> = LazyLock::new(|| {
    settings::parse("fuzz.yaml", CONFIG.as_bytes(), Path::new("/etc/jobkeeper"))
        .unwrap_or_else(|e| panic!("the fuzz config is invalid: {e:?}"))
});

fn plain(data: &[u8]) -> Result<JobSpec, Vec<jobkeeper::diag::Diagnostic>> {
    spec::parse_job(PATH, data, Context::default())
}

fn check_valid(spec: &JobSpec) {
    // Written back as a job file, it reads the same.
    let text = job_file(spec);
    match plain(text.as_bytes()) {
        Ok(again) => assert_eq!(&again, spec, "written back as:\n{text}"),
        Err(e) => panic!("written back as:\n{text}\nit is refused: {e:?}"),
    }
    // The store keeps applied specs as JSON.
    let json = serde_json::to_string(spec).expect("a spec serializes");
    let back: JobSpec = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the store could not read back {json}: {e}"));
    assert_eq!(&back, spec, "through the store's JSON");
    if let Some(s) = &spec.schedule {
        Schedule::parse(s).expect("a valid spec's schedule parses");
    }
    // The plan: unchanged against itself (saying why), added when new; every rendering works.
    let (action, reasons) = plan::diff_specs(spec, spec);
    assert_eq!(action, Action::Unchanged);
    let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    assert_eq!(reasons, [plan::UNCHANGED], "unchanged against itself");
    let changes = [Change::Upsert {
        name: "team-a/fuzz".into(),
        path: PATH.into(),
        spec: Ok(spec.clone()),
    }];
    let p = plan::plan(&BTreeMap::new(), &changes);
    assert_eq!(p.count(Action::Add), 1);
    let _ = plan::render_text(&p);
    let _ = plan::render_markdown(&p, "a", "b");
    let json = plan::render_json(&p, "a", "b");
    serde_json::from_str::<serde_json::Value>(&json).expect("the plan's JSON parses");
    // Secrets: every name was checked by the parser, so only the missing folder is reported.
    let names = spec::secret_names(&spec.params);
    match spec::resolve_secrets(&spec.params, None) {
        Ok(p) => assert!(names.is_empty() && p == spec.params),
        Err(SecretError::NoSecretsDir { name }) => assert!(names.contains(&name)),
        Err(e) => panic!("a valid spec's secrets: {e}"),
    }
    let shown = format!("{:?}", spec.params);
    let masked = spec::mask_secrets(&shown, &names);
    for n in &names {
        assert!(!masked.contains(n.as_str()), "`{n}` left in {masked}");
    }
}

fuzz_target!(|data: &[u8]| {
    let without = plain(data);
    assert_eq!(without, plain(data), "parsing is deterministic");
    let with = spec::parse_job(
        PATH,
        data,
        Context {
            settings: Some(&*SETTINGS),
            files: None,
        },
    );
    for result in [&without, &with] {
        if let Err(diags) = result {
            assert_located(PATH, data, diags);
        }
    }
    if let Ok(spec) = &with {
        assert!(
            without.is_ok(),
            "valid with a config, refused without: {without:?}"
        );
        check_valid(spec);
        let _ = SETTINGS.restart_policy(&spec.env, &spec.restart);
    }
    match &without {
        Ok(spec) => check_valid(spec),
        Err(diags) => {
            let changes = [Change::Upsert {
                name: "team-a/fuzz".into(),
                path: PATH.into(),
                spec: Err(diags.clone()),
            }];
            let p = plan::plan(&BTreeMap::new(), &changes);
            assert!(p.has_invalid());
            let _ = plan::render_text(&p);
            let _ = plan::render_markdown(&p, "a", "b");
        }
    }
});

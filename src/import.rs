//! `jobkeeper import --config FILE --env ENV [--out DIR]`: one job file per job running
//! unmanaged on an env's cluster, so a fleet started by other means can be taken over without a
//! restart.
//!
//! The cluster is asked once for its live jobs ([`crate::engine::Engine::live_jobs`]); those
//! whose engine ids the daemon's store records as live runs are managed and left out. Each of
//! the others gets a file holding `adopt` (its engine id), the env, and every field its engine
//! can tell ([`crate::engine::Engine::describe`]); what only the operator knows (above all the
//! `project` that builds the jar) is a `# TODO` line, which makes the file invalid until it is
//! completed ([`crate::spec::TODO_MARKER`]). A file that exists is never overwritten. File names
//! follow the job-name rules ([`file_name_for`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{ClusterJob, Engine, EngineError, JobDetails};
use crate::settings::Settings;
use crate::spec;

/// Why an import could not start.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No such env in the daemon config.
    #[error("unknown env `{env}`; known envs: {known}")]
    UnknownEnv {
        /// The env asked for.
        env: String,
        /// The config's envs.
        known: String,
    },
    /// The env runs no cluster.
    #[error("env `{0}` uses the local engine: nothing runs on a cluster to import")]
    Local(String),
    /// The cluster cannot be asked.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The engine cannot list its jobs.
    #[error("{location} cannot list its jobs{}", needs.map(|n| format!(" ({n})")).unwrap_or_default())]
    CannotList {
        /// The cluster.
        location: String,
        /// What the engine needs to list them, in its words.
        needs: Option<&'static str>,
    },
}

/// What happened to one unmanaged job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its file was written.
    Written(PathBuf),
    /// Its file exists: left as it is.
    Exists(PathBuf),
    /// No file could be written (a name that cannot become a job name, a write error).
    Failed(String),
}

/// One unmanaged job and what became of it.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The job as the cluster lists it.
    pub job: ClusterJob,
    /// What was done.
    pub outcome: Outcome,
}

/// The engine of env `env`, made as the daemon makes it.
pub(crate) fn engine_of(settings: &Settings, env: &str) -> Result<Arc<dyn Engine>, ImportError> {
    let Some(e) = settings.envs.get(env) else {
        let mut known: Vec<&str> = settings.envs.keys().map(String::as_str).collect();
        known.sort_unstable();
        return Err(ImportError::UnknownEnv {
            env: env.to_string(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        });
    };
    crate::engine::registry::for_reading(&settings.state_dir, &e.engine)?
        .ok_or_else(|| ImportError::Local(env.to_string()))
}

/// The engine ids the daemon's store records as live runs (none when it has no store yet).
fn managed_ids(settings: &Settings) -> HashSet<String> {
    let db = settings.state_dir.join("jobkeeper.db");
    if !db.exists() {
        return HashSet::new();
    }
    match crate::store::Blocking::open(&db).and_then(|s| s.live_runs()) {
        Ok(runs) => runs
            .into_iter()
            .filter_map(|r| r.handle.map(|h| h.engine_id))
            .collect(),
        Err(e) => {
            eprintln!(
                "warning: cannot read the daemon's store {} ({e}); every live job is taken for \
                 unmanaged (adopting a job that already is a run of another is refused)",
                db.display()
            );
            HashSet::new()
        }
    }
}

/// Writes a job file under `out` for each job running unmanaged on env `env`'s cluster.
pub async fn import(
    settings: &Settings,
    env: &str,
    out: &Path,
) -> Result<Vec<Imported>, ImportError> {
    let engine = engine_of(settings, env)?;
    if let Err(e @ EngineError::Refused(_)) = engine.probe().await {
        return Err(e.into());
    }
    let location = engine.location();
    let live = engine
        .live_jobs()
        .await?
        .ok_or_else(|| ImportError::CannotList {
            location: location.clone(),
            needs: engine.listing_needs(),
        })?;
    let managed = managed_ids(settings);
    let mut jobs: Vec<ClusterJob> = live
        .into_iter()
        .filter(|j| !managed.contains(&j.engine_id))
        .collect();
    jobs.sort_by(|a, b| (&a.name, &a.engine_id).cmp(&(&b.name, &b.engine_id)));
    let mut used: HashSet<String> = HashSet::new();
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = match file_name_for(&job.name) {
            Err(why) => Outcome::Failed(why.to_string()),
            Ok(name) => {
                let name = unique_name(name, &job.engine_id, &mut used);
                let path = out.join(format!("{name}.yaml"));
                let details = match engine.describe(&job).await {
                    Ok(d) => d,
                    Err(e) => JobDetails {
                        notes: vec![format!("the cluster could not tell more: {e}")],
                        ..JobDetails::default()
                    },
                };
                let text = render(&job, env, &location, &details);
                write_new(&path, &text)
            }
        };
        done.push(Imported { job, outcome });
    }
    Ok(done)
}

/// `name`, or, when an earlier job of this import took it, `name` with the end of the job's
/// engine id (the part that tells ids apart: Spark's `driver-20261203101500-0007` shares its
/// start with every driver of the month), then a count, until no earlier job has it.
fn unique_name(name: String, engine_id: &str, used: &mut HashSet<String>) -> String {
    if used.insert(name.clone()) {
        return name;
    }
    let alnum: Vec<char> = engine_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let short: String = alnum[alnum.len().saturating_sub(12)..].iter().collect();
    // 128 characters at most: 110 of the name, `-`, 12 of the id, and room for `-N`.
    let base = format!("{}-{short}", name.chars().take(110).collect::<String>());
    let mut candidate = base.clone();
    let mut n = 2;
    while !used.insert(candidate.clone()) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

/// Writes `text` to `path` unless a file is there already.
fn write_new(path: &Path, text: &str) -> Outcome {
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return Outcome::Failed(format!("cannot create {}: {e}", dir.display()));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match file {
        Ok(mut f) => {
            use std::io::Write;
            match f.write_all(text.as_bytes()) {
                Ok(()) => Outcome::Written(path.to_path_buf()),
                Err(e) => Outcome::Failed(format!("cannot write {}: {e}", path.display())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Outcome::Exists(path.to_path_buf())
        }
        Err(e) => Outcome::Failed(format!("cannot write {}: {e}", path.display())),
    }
}

/// Why no job name could be made of a cluster job's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    /// Nothing is left once the characters a job name may not hold are gone.
    #[error(
        "the name `{0}` has no letter or digit to make a job name of (a job name is lowercase \
         letters, digits, `.`, `_` and `-`); write its job file by hand"
    )]
    NoLetters(String),
    /// What is left still breaks the naming rules.
    #[error(transparent)]
    Name(#[from] spec::NameError),
}

/// The job name (and file name, less `.yaml`) for a cluster job's name: lowercase, every run of
/// characters a job name may not hold becomes one `-`, at most 128 characters; an error saying
/// why when nothing is left.
pub fn file_name_for(cluster_name: &str) -> Result<String, FileNameError> {
    let mut out = String::with_capacity(cluster_name.len());
    for c in cluster_name.chars().flat_map(char::to_lowercase) {
        let c = if matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches(['-', '.']);
    let mut name: String = trimmed.chars().take(128).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    if name.is_empty() {
        return Err(FileNameError::NoLetters(
            cluster_name.escape_debug().to_string(),
        ));
    }
    spec::check_name(&name)?;
    Ok(name)
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The job file of an unmanaged `job` of env `env`.
pub fn render(job: &ClusterJob, env: &str, location: &str, d: &JobDetails) -> String {
    let since = job
        .since_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| format!(" since {}", t.to_rfc3339()))
        .unwrap_or_default();
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by `jobkeeper import` for the job {} named {} ({}{since}) on\n# {location}.\n\
         # Complete each `# TODO` line and delete it: `jobkeeper validate` and the daemon refuse\n\
         # this file while one is left. What no engine records (the repo and build of the job's\n\
         # jar) is always one. On its first apply the daemon takes the job over as it runs\n\
         # (event `adopted`): nothing is stopped or submitted again.",
        job.engine_id,
        quoted(&job.name),
        job.state,
    );
    let _ = writeln!(y, "adopt: {}", quoted(&job.engine_id));
    let _ = writeln!(y, "env: {}", quoted(env));
    let _ = writeln!(
        y,
        "# TODO project: the repo, branch, build and artifact of this job's jar (jobkeeper needs \
         it to restart or upgrade the job; no engine records where a jar was built from)"
    );
    if let Some(jar) = &d.jar {
        let _ = writeln!(
            y,
            "# The cluster runs it from the jar {}: `project.artifact` is where the project's \
             build writes that jar.",
            quoted(jar)
        );
    }
    y.push_str("params:\n");
    match &d.main_class {
        Some(c) => {
            let _ = writeln!(y, "  main_class: {}", quoted(c));
        }
        None => {
            let why = d
                .main_class_missing
                .as_deref()
                .unwrap_or("the job's entry class (the cluster does not keep it)");
            let _ = writeln!(y, "  # TODO params.main_class: {}", one_line(why));
        }
    }
    match &d.args {
        Some(args) => {
            let list: Vec<String> = args.iter().map(|a| quoted(a)).collect();
            let _ = writeln!(y, "  args: [{}]", list.join(", "));
        }
        None => {
            let why = d
                .args_missing
                .as_deref()
                .unwrap_or("the job's program arguments (the cluster does not keep them)");
            let _ = writeln!(y, "  # TODO params.args: {}", one_line(why));
        }
    }
    if let Some(p) = d.parallelism {
        let _ = writeln!(y, "  parallelism: {p}");
    }
    if !d.conf.is_empty() {
        y.push_str("  conf:\n");
        for (k, v) in &d.conf {
            let _ = writeln!(y, "    {}: {}", quoted(k), quoted(v));
        }
    }
    for note in &d.notes {
        let _ = writeln!(y, "# TODO check {}", one_line(note));
    }
    y
}

/// `text` on one comment line: a line break in what a cluster told would end the comment.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Prints what an import did; the exit code: 1 when some job got no file for a reason other
/// than an existing one.
pub fn report(done: &[Imported], out: &Path) -> (String, bool) {
    let mut text = String::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in done {
        let who = format!("{} {}", quoted(&i.job.name), i.job.engine_id);
        match &i.outcome {
            Outcome::Written(p) => {
                *counts.entry("written").or_default() += 1;
                let _ = writeln!(text, "wrote {} ({who})", p.display());
            }
            Outcome::Exists(p) => {
                *counts.entry("skipped").or_default() += 1;
                let _ = writeln!(
                    text,
                    "skipped {who}: {} exists and is not overwritten",
                    p.display()
                );
            }
            Outcome::Failed(why) => {
                *counts.entry("failed").or_default() += 1;
                let _ = writeln!(text, "not imported {who}: {why}");
            }
        }
    }
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        text,
        "{} unmanaged job(s): {} written, {} skipped, {} not imported, in {}",
        done.len(),
        n("written"),
        n("skipped"),
        n("failed"),
        out.display()
    );
    if n("written") > 0 {
        text.push_str(
            "next: complete the `# TODO` lines, run `jobkeeper validate`, then commit the files\n",
        );
    }
    (text, n("failed") == 0)
}

/// How long `plan` waits for a cluster to list its jobs.
const PLAN_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Asks each env's cluster named by an `adopt` item of `plan` for its live jobs (one request
/// per env) and says in the item what the apply would take over, as the daemon matches it
/// ([`crate::reconcile::takeover::find`]). A cluster that does not answer leaves the item
/// "checked at apply".
pub async fn check_adoptions(plan: &mut crate::plan::Plan, settings: &Settings) {
    use std::collections::HashMap;
    let mut lists: HashMap<String, Option<(Vec<ClusterJob>, String)>> = HashMap::new();
    for item in &mut plan.items {
        if item.action != crate::plan::Action::Adopt {
            continue;
        }
        let Some((target, env)) = item
            .reasons
            .first()
            .and_then(crate::plan::Reason::adoption)
            .map(|(t, e)| (t.to_string(), e.to_string()))
        else {
            continue;
        };
        if !lists.contains_key(&env) {
            let listed = match engine_of(settings, &env) {
                Ok(engine) => {
                    let asked = tokio::time::timeout(PLAN_ASK_TIMEOUT, engine.live_jobs()).await;
                    match asked {
                        Ok(Ok(Some(live))) => Some((live, engine.location())),
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            lists.insert(env.clone(), listed);
        }
        let Some((live, location)) = &lists[&env] else {
            continue;
        };
        let found = crate::reconcile::takeover::find(&target, live, &HashMap::new(), location)
            .map(crate::reconcile::takeover::describe)
            .map_err(|e| e.to_string());
        crate::plan::checked_adoption(&mut item.reasons[0], found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_one_name_get_names_of_their_own() {
        let mut used = HashSet::new();
        let names: Vec<String> = [
            "driver-20261203101500-0007",
            "driver-20261203101502-0008",
            "driver-20261203101504-0009",
            "driver-20261203101504-0009",
        ]
        .iter()
        .map(|id| unique_name("totals".into(), id, &mut used))
        .collect();
        assert_eq!(
            names,
            [
                "totals",
                "totals-031015020008",
                "totals-031015040009",
                "totals-031015040009-2"
            ]
        );
        for n in &names {
            spec::check_name(n).unwrap();
        }
    }

    #[test]
    fn cluster_names_become_job_names_or_say_why_not() {
        assert_eq!(
            file_name_for("flink-counter ext1").unwrap(),
            "flink-counter-ext1"
        );
        assert_eq!(
            file_name_for("Clicks ETL (prod)").unwrap(),
            "clicks-etl-prod"
        );
        assert_eq!(file_name_for("example.Totals").unwrap(), "example.totals");
        assert_eq!(
            file_name_for("insert-into_default_catalog.default_database.sink").unwrap(),
            "insert-into_default_catalog.default_database.sink"
        );
        assert_eq!(file_name_for("a/../b").unwrap(), "a-.-b");
        assert_eq!(file_name_for("__x..y--").unwrap(), "x.y");
        assert_eq!(file_name_for(&"a".repeat(300)).unwrap().len(), 128);
        let e = file_name_for("数据 同步").unwrap_err();
        assert!(e.to_string().contains("no letter or digit"), "{e}");
        assert!(file_name_for("").is_err());
    }

    #[test]
    fn a_file_holds_adopt_what_the_engine_told_and_todo_lines() {
        let job = ClusterJob {
            engine_id: "c8e0".into(),
            name: "flink-counter \"x\"".into(),
            state: "RUNNING".into(),
            since_ms: Some(0),
        };
        let d = JobDetails {
            parallelism: Some(2),
            conf: BTreeMap::from([("execution.checkpointing.interval".into(), "500ms".into())]),
            ..JobDetails::default()
        };
        let text = render(&job, "prod", "flink cluster http://f", &d);
        assert!(text.contains("adopt: \"c8e0\"\nenv: \"prod\"\n"), "{text}");
        assert!(text.contains("  parallelism: 2\n"), "{text}");
        assert!(text.contains("    \"execution.checkpointing.interval\": \"500ms\"\n"));
        assert!(text.contains("named \"flink-counter \\\"x\\\"\""), "{text}");
        // Refused while the TODO lines are there; valid once they are completed.
        let diags =
            spec::parse_job("x.yaml", text.as_bytes(), spec::Context::default()).unwrap_err();
        assert_eq!(diags.len(), 3, "{diags:?}");
        let done: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with(spec::TODO_MARKER))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace(
                "params:\n",
                "params:\n  main_class: example.Counter\n  args: [\"--tag\", \"x\"]\n",
            );
        let spec = spec::parse_job("x.yaml", done.as_bytes(), spec::Context::default()).unwrap();
        assert_eq!(spec.adopt.as_deref(), Some("c8e0"));
        assert_eq!(spec.params.parallelism, Some(2));
    }

    #[test]
    fn a_file_names_the_jar_and_says_why_a_field_is_left() {
        let job = ClusterJob {
            engine_id: "c8e0".into(),
            name: "clicks".into(),
            state: "RUNNING".into(),
            since_ms: None,
        };
        let d = JobDetails {
            jar: Some("clicks-1.0.jar".into()),
            main_class_missing: Some("one of a.jar (x.A); b.jar (x.B)\nsecond line".into()),
            args_missing: Some("they could not be read from Flink".into()),
            ..JobDetails::default()
        };
        let text = render(&job, "prod", "flink cluster http://f", &d);
        assert!(
            text.contains("no engine records where a jar was built from)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# The cluster runs it from the jar \"clicks-1.0.jar\": `project.artifact`"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  # TODO params.main_class: one of a.jar (x.A); b.jar (x.B) second line\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  # TODO params.args: they could not be read from Flink\n"),
            "{text}"
        );
        let diags =
            spec::parse_job("x.yaml", text.as_bytes(), spec::Context::default()).unwrap_err();
        assert_eq!(diags.len(), 3, "{diags:?}");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/a.yaml");
        assert_eq!(write_new(&p, "one"), Outcome::Written(p.clone()));
        assert_eq!(write_new(&p, "two"), Outcome::Exists(p.clone()));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one");
    }
}

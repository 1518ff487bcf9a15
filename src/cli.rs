//! The command line: parses arguments, sets up logging, and calls into the library.
//!
//! Exit codes (SPEC): 0 ok, 1 errors found (invalid job files, a bad config, a failed daemon),
//! 2 usage error (clap's own), 3 daemon unreachable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{self, Remote};
use crate::console::{load_settings, stdout};
use crate::diag::{self, Diagnostic};
use crate::spec;

/// jobkeeper: runs batch and streaming jobs exactly as a git config repository says.
#[derive(Debug, Parser)]
#[command(name = "jobkeeper", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format of the daemon.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
}

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    /// Plain text.
    Text,
    /// A merge-request comment.
    Markdown,
    /// For programs.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The daemon config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
        /// Set by the daemon itself when it re-executes as a standby: why it stepped down.
        #[arg(long, hide = true, value_name = "WHY")]
        stepped_down: Option<String>,
    },
    /// Check every job file in DIR; one `path:line:col: message` per error.
    Validate {
        /// Folder of job files, or one job file (default: the config's `repo.path` with
        /// `--config`, else `jobs`). With `--config` and no such folder here, the daemon
        /// config alone is checked.
        dir: Option<PathBuf>,
        /// Also check envs, vars and alert channels against this daemon config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show what applying commit `to` after commit `from` does, per job.
    Plan {
        /// The config repo (a work tree or bare repo).
        #[arg(long, value_name = "DIR", default_value = ".")]
        repo: PathBuf,
        /// The commit applied now (branch, tag, commit id).
        #[arg(long, value_name = "REV")]
        from: String,
        /// The commit to apply.
        #[arg(long, value_name = "REV")]
        to: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Folder of job files in the repo (default: the config's `repo.path`, else `jobs`).
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// Also check envs, vars and alert channels against this daemon config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a job's file merged with its folders' `_defaults.yaml`, each value with its source.
    Show {
        /// The job's name (`team-a/clicks`).
        job: String,
        /// The config repo (a work tree or bare repo).
        #[arg(long, value_name = "DIR", default_value = ".")]
        repo: PathBuf,
        /// The commit to read (branch, tag, commit id).
        #[arg(long, value_name = "REV", default_value = "HEAD")]
        rev: String,
        /// Folder of job files in the repo.
        #[arg(long, value_name = "PATH", default_value = "jobs")]
        path: String,
    },
    /// Print the JSON Schema of the job file.
    Schema,
    /// Copy a SQLite store (a state folder's `jobkeeper.db`) into the PostgreSQL database the
    /// config's `store.postgres` names. Refuses a target that holds jobs.
    MigrateStore {
        /// The daemon config naming the Postgres store.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The state folder whose `jobkeeper.db` is copied.
        #[arg(long, value_name = "STATE_DIR")]
        from: PathBuf,
    },
    /// Internal: print a SPNEGO token for SERVICE as PRINCIPAL, with the credential cache and
    /// client keytab of the environment (`KRB5CCNAME`, `KRB5_CLIENT_KTNAME`); the daemon runs
    /// it for its YARN envs with `auth: kerberos`.
    #[command(name = "gss-token", hide = true)]
    GssToken {
        /// The client principal.
        #[arg(long)]
        principal: String,
        /// The service, `HTTP@host`.
        #[arg(long)]
        service: String,
    },
    /// The jobs of a running daemon: state, env, engine, commit, author, restarts, last event.
    Status {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        /// Which jobs.
        #[command(flatten)]
        filter: client::StatusFilter,
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask a running daemon to fetch the config repo and reconcile now.
    Sync {
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// Redeploy one job now (audited), clearing `gave_up`.
    Restart {
        /// The job's name (`team-a/clicks`).
        job: String,
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// Take a savepoint of a job's live run now (audited) and print its location.
    Savepoint {
        /// The job's name.
        job: String,
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// List a job's savepoints: time, kind, cause, run, location, disposed of or kept, and
    /// the one the current run started from.
    Savepoints {
        /// The job's name.
        job: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a run's log (default: the latest run) or the latest build's log.
    Logs {
        /// The job's name.
        job: String,
        /// A run id.
        #[arg(long, value_name = "ID", conflicts_with = "build")]
        run: Option<i64>,
        /// The latest build's log.
        #[arg(long)]
        build: bool,
        /// How many last lines.
        #[arg(long, value_name = "N", default_value_t = 200)]
        tail: usize,
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
    },
    /// Write a job file (with `adopt`) for each job running unmanaged on an env's cluster.
    Import {
        /// The daemon config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The env whose cluster is read.
        #[arg(long, value_name = "ENV")]
        env: String,
        /// Where the files go (default: the config's `repo.path`, below the current folder).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Send a test alert through one channel and say what the far end answered.
    TestAlert {
        /// The channel (a key of the config's `alerts:`).
        channel: String,
        /// The daemon config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause whose text the line
/// already holds (errors that print their source themselves would otherwise show it twice).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            log_format,
            stepped_down,
        } => run(&config, log_format, stepped_down),
        Command::Validate { dir, config } => validate(dir.as_deref(), config.as_deref()),
        Command::Plan {
            repo,
            from,
            to,
            format,
            path,
            config,
        } => plan(&repo, &from, &to, format, path, config.as_deref()),
        Command::Show {
            job,
            repo,
            rev,
            path,
        } => show(&repo, &job, &rev, &path),
        Command::MigrateStore { config, from } => migrate_store(&config, &from),
        Command::Schema => {
            stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&spec::json_schema())?
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::GssToken { principal, service } => {
            match crate::engine::yarn::gss::token(&principal, &service) {
                Ok(token) => {
                    stdout(&format!("{token}\n"))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::TestAlert { channel, config } => test_alert(&channel, &config),
        Command::Import { config, env, out } => import(&config, &env, out),
        Command::Status {
            json,
            filter,
            remote,
        } => client::status(&remote, json, &filter),
        Command::Sync { remote } => client::sync(&remote),
        Command::Restart { job, remote } => client::restart(&remote, &job),
        Command::Savepoint { job, remote } => client::savepoint(&remote, &job),
        Command::Savepoints { job, json, remote } => client::savepoints(&remote, &job, json),
        Command::Logs {
            job,
            run,
            build,
            tail,
            remote,
        } => client::logs(&remote, &job, run, build, tail),
    }
}

/// `upgrade: last-state` in a job whose `params.conf` does not retain checkpoints on
/// cancellation: every upgrade then takes a savepoint (the checkpoints go with the cancel).
fn last_state_warning(path: &str, job: &spec::JobSpec) -> Option<diag::Diagnostic> {
    use crate::engine::flink::{RETENTION_DEFAULT, RETENTION_KEY};
    if job.upgrade != spec::Upgrade::LastState {
        return None;
    }
    let set = job.params.conf.get(RETENTION_KEY)?;
    (set != RETENTION_DEFAULT).then(|| {
        diag::Diagnostic::file(
            path,
            format!(
                "warning: `upgrade: last-state` but `params.conf` sets `{RETENTION_KEY}: {set}`: \
                 checkpoints are not kept when the job is cancelled, so every upgrade takes a \
                 savepoint instead; set it to {RETENTION_DEFAULT} (the default jobkeeper submits)"
            ),
        )
    })
}

/// `jobkeeper show JOB --repo DIR [--rev REV]`: the merged file on stdout; 1 when the job is
/// missing or invalid (its problems on stderr).
fn show(repo: &Path, job: &str, rev: &str, path: &str) -> anyhow::Result<ExitCode> {
    match crate::show::show(repo, job, rev, path) {
        Ok(shown) => {
            stdout(&shown.text)?;
            if shown.errors.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprint!("{}", diag::render(&shown.errors));
                Ok(ExitCode::from(1))
            }
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `jobkeeper import --config FILE --env ENV [--out DIR]`: 0 when every unmanaged job has a
/// file (written now or before), 1 otherwise or on an error.
fn import(config: &Path, env: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = match load_settings(config)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let out = out.unwrap_or_else(|| PathBuf::from(&settings.repo.path));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(crate::import::import(&settings, env, &out)) {
        Ok(done) => {
            let (text, ok) = crate::import::report(&done, &out);
            stdout(&text)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `jobkeeper test-alert CHANNEL --config FILE`: one try per medium of the channel, no retry;
/// prints each far end's answer. 0 when every medium accepted it, 1 otherwise.
fn test_alert(channel: &str, config: &Path) -> anyhow::Result<ExitCode> {
    let settings = match load_settings(config)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let Some(ch) = settings.alerts.get(channel) else {
        let known: Vec<&str> = settings.alerts.keys().map(String::as_str).collect();
        eprintln!(
            "error: unknown alert channel `{channel}`; known channels: {}",
            if known.is_empty() {
                "none (the config has no `alerts:`)".to_string()
            } else {
                known.join(", ")
            }
        );
        return Ok(ExitCode::from(1));
    };
    let alert = crate::alert::Alert::test(&settings, channel);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ok = true;
    rt.block_on(async {
        for (target, notifier) in crate::alert::notifiers(channel, ch) {
            let limit = std::time::Duration::from_secs(20);
            match tokio::time::timeout(limit, notifier.send(&alert)).await {
                Ok(Ok(d)) => println!("{target}: sent: {}", d.answer),
                Ok(Err(e)) => {
                    ok = false;
                    println!("{target}: failed: {e}");
                }
                Err(_) => {
                    ok = false;
                    println!("{target}: failed: no answer within 20s");
                }
            }
        }
    });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Under systemd, journald stamps each line and reads its priority from `<N>`.
        LogFormat::Human if crate::systemd::logging_to_journal() => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false);
            builder
                .with_ansi(false)
                .event_format(crate::systemd::JournalFormat(inner))
                .init();
        }
        LogFormat::Human => builder.init(),
    }
}

fn run(
    config: &Path,
    log_format: LogFormat,
    stepped_down: Option<String>,
) -> anyhow::Result<ExitCode> {
    let settings = match load_settings(config)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    init_tracing(log_format);
    if let Some(why) = stepped_down {
        tracing::warn!("stepped down: {why}; starting again as a standby");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Another daemon on this state folder is the likelier reason its port is taken: say so first.
    crate::daemon::check_state_dir_free(&settings.state_dir)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let cancel = tokio_util::sync::CancellationToken::new();
        crate::daemon::spawn_signal_handler(cancel.clone());
        crate::daemon::run_with(settings, listener, cancel, Some(config.to_path_buf())).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `jobkeeper migrate-store --config FILE --from STATE_DIR`: 0 copied (the row counts on
/// stdout), 1 refused or failed (why on stderr).
fn migrate_store(config: &Path, from: &Path) -> anyhow::Result<ExitCode> {
    let settings = match load_settings(config)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let Some(pg) = &settings.store else {
        eprintln!(
            "{}: no `store.postgres`: migrate-store copies into the PostgreSQL store the config names",
            config.display()
        );
        return Ok(ExitCode::from(1));
    };
    let file = from.join("jobkeeper.db");
    if !file.is_file() {
        eprintln!("{}: no store there (no jobkeeper.db)", from.display());
        return Ok(ExitCode::from(1));
    }
    let target = pg.target()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let source = crate::store::Blocking::open(&file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let to = match crate::store::Blocking::open_postgres(&target, rt.handle().clone()) {
        Ok(to) => to,
        Err(e) => {
            eprintln!("cannot open {}: {e}", target.shown());
            return Ok(ExitCode::from(1));
        }
    };
    // The key of Spark jar URLs moves with the store: releases before kept it in the state
    // folder, and running drivers fetch their jars with it.
    if from
        .join(crate::engine::spark::artifacts::KEY_FILE)
        .is_file()
    {
        let key = crate::engine::spark::artifacts::Shelf::first_key(from)?;
        source.artifact_key(&key)?;
    }
    match source.copy_into(&to) {
        Ok(copied) => {
            let mut out = format!("copied {} into {}:\n", file.display(), target.shown());
            for (table, n) in copied {
                out.push_str(&format!("  {table:<12} {n}\n"));
            }
            stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Every `.yaml`/`.yml` file under `dir`, as paths relative to it, sorted.
fn job_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(root.join(rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let rel = rel.join(entry.file_name());
            if kind.is_dir() {
                walk(root, &rel, out)?;
            } else if kind.is_file() {
                let s = rel.to_string_lossy().replace('\\', "/");
                if spec::job_name_of(&s).is_some() {
                    out.push(s);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut out)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?;
    out.sort();
    Ok(out)
}

/// The problem of a SQL job (`spec`, read from `display` holding `src`) whose env would have to
/// build the SQL runner on a host without `javac` on the build `PATH`, placed at its `sql` or
/// `sql_file`; `javac` says whether the build `PATH` has one.
fn sql_runner_problem(
    settings: &crate::settings::Settings,
    javac: bool,
    display: &str,
    src: &[u8],
    spec: &spec::JobSpec,
) -> Option<Diagnostic> {
    use crate::build::sql_runner;
    spec.sql.as_ref()?;
    let env = settings.envs.get(&spec.env)?;
    if javac || !env.engine.kind().runs_sql() || env.engine.sql_runner().is_some() {
        return None;
    }
    let text = String::from_utf8_lossy(src);
    let (key, line, column) = spec::sql_field_place(&text).unwrap_or(("sql", 1, 1));
    Some(Diagnostic::new(
        display,
        line,
        column,
        format!(
            "`{key}`: env `{}` has no `sql_runner` and there is no `javac` to build the SQL \
             runner: {}",
            spec.env,
            sql_runner::needs_jdk(&settings.build.path)
        ),
    ))
}

/// The folder `validate` reads without one named: the config's `repo.path`, in its local repo
/// when `repo.url` is a folder here (else in the current folder, a clone of the config repo),
/// and `jobs` without a config.
fn default_jobs_dir(settings: Option<&crate::settings::Settings>) -> PathBuf {
    let Some(s) = settings else {
        return PathBuf::from("jobs");
    };
    let in_repo: PathBuf = Path::new(&s.repo.url)
        .join(&s.repo.path)
        .components()
        .collect();
    if crate::repo::is_local(&s.repo.url) && in_repo.is_dir() {
        in_repo
    } else {
        PathBuf::from(&s.repo.path)
    }
}

fn validate(dir: Option<&Path>, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = match config.map(load_settings).transpose()? {
        Some(Ok(s)) => Some(s),
        Some(Err(code)) => return Ok(code),
        None => None,
    };
    let named = dir.is_some();
    let dir = dir.map_or_else(|| default_jobs_dir(settings.as_ref()), Path::to_path_buf);
    // `validate --config FILE` where no job folder is (a daemon host whose config repo is
    // remote): the daemon config alone, which `load_settings` checked whole.
    if let (false, Some(path)) = (named, config)
        && !dir.exists()
    {
        eprintln!(
            "the daemon config {} is valid; no job folder {} here, so no job file was checked \
             (name one: `jobkeeper validate DIR --config FILE`)",
            path.display(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // One job file: checked on its own, named after its file.
    let (dir, files) = match (dir.is_file(), dir.parent(), dir.file_name()) {
        (true, Some(parent), Some(name)) => (
            parent.to_path_buf(),
            vec![name.to_string_lossy().into_owned()],
        ),
        _ => {
            let files = job_files(&dir)?;
            (dir, files)
        }
    };
    let dir = dir.as_path();
    let ctx = spec::Context {
        settings: settings.as_ref().map(|s| s as &dyn spec::DaemonConfig),
        files: Some(&spec::DiskFiles),
    };
    // A folder's `_defaults.yaml` (and the repo's `_freeze.yaml`) is checked once on its own,
    // and a defaults file is merged under each job below it: a problem of its own is reported
    // once, not for every job.
    let (folder_files, files): (Vec<String>, Vec<String>) =
        files.into_iter().partition(|rel| spec::is_folder_file(rel));
    let Checked {
        mut errors,
        warnings,
        stateful,
    } = check_files(dir, &files, settings.as_ref(), ctx);
    errors.splice(0..0, check_folder_files(dir, &folder_files));
    if let Some(s) = &settings {
        errors.extend(refused_moves(s, &stateful)?);
    }
    stdout(&diag::render(&errors))?;
    // Warnings leave the exit code as it is.
    stdout(&diag::render(&warnings))?;
    let bad: std::collections::BTreeSet<&str> = errors.iter().map(|d| d.path.as_str()).collect();
    let warned = if warnings.is_empty() {
        String::new()
    } else {
        format!(", {} warning(s)", warnings.len())
    };
    eprintln!(
        "{} job file(s) checked: {} invalid, {} error(s){warned}",
        files.len(),
        bad.len(),
        errors.len()
    );
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What [`check_files`] found.
struct Checked {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Jobs that keep their state across moves: (name, file, env).
    stateful: Vec<(String, String, String)>,
}

/// Each folder file (`_defaults.yaml`, `_freeze.yaml`) below `dir` checked on its own.
fn check_folder_files(dir: &Path, folder_files: &[String]) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for rel in folder_files {
        let display = dir.join(rel).to_string_lossy().into_owned();
        let parsed = if spec::defaults_folder(rel).is_some() {
            std::fs::read(dir.join(rel)).map(|b| spec::parse_defaults(&display, &b).err())
        } else if rel == spec::FREEZE_FILE {
            std::fs::read(dir.join(rel))
                .map(|b| crate::freeze::parse_freeze_file(&display, &b).err())
        } else {
            continue;
        };
        match parsed {
            Ok(problems) => errors.extend(problems.unwrap_or_default()),
            Err(e) => errors.push(Diagnostic::file(
                &display,
                format!("cannot read the file: {e}"),
            )),
        }
    }
    errors
}

/// Each of `files` (below `dir`) checked as the daemon reads it: its name, one file per job,
/// its parse (merged with its folders' defaults) against the daemon config when given, and its
/// SQL runner.
fn check_files(
    dir: &Path,
    files: &[String],
    settings: Option<&crate::settings::Settings>,
    ctx: spec::Context<'_>,
) -> Checked {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut warnings: Vec<Diagnostic> = Vec::new();
    let javac = settings.is_some_and(|s| crate::build::sql_runner::javac_in(&s.build.path));
    let folders = spec::Folders::new(Some(&spec::DiskFiles));
    let mut names = std::collections::BTreeSet::new();
    // Jobs that keep their state across moves: (name, file, env).
    let mut stateful: Vec<(String, String, String)> = Vec::new();
    for rel in files {
        let display = dir.join(rel).to_string_lossy().into_owned();
        let name = spec::job_name_of(rel).unwrap_or(rel);
        if let Err(msg) = spec::check_name(name) {
            errors.push(Diagnostic::file(&display, msg.to_string()));
            continue;
        }
        // As the daemon does (`changes::changes_of`): one job, one file.
        if !names.insert(name) {
            errors.push(Diagnostic::file(
                &display,
                format!(
                    "two files define the job `{name}`: keep one of `{name}.yaml` and `{name}.yml`"
                ),
            ));
            continue;
        }
        let Ok(layers) = folders.layers(&display, rel, name) else {
            continue; // the defaults file's own problems are reported by `check_folder_files`
        };
        match std::fs::read(dir.join(rel)) {
            Ok(bytes) => match spec::parse_job_in(&display, Some(name), &bytes, &layers, ctx) {
                Ok(job) => {
                    warnings.extend(spec::command_secret_warnings(&display, &bytes));
                    warnings.extend(last_state_warning(&display, &job));
                    if job.upgrade.keeps_state() {
                        stateful.push((name.to_string(), display.clone(), job.env.clone()));
                    }
                    errors.extend(
                        settings.and_then(|s| sql_runner_problem(s, javac, &display, &bytes, &job)),
                    );
                }
                Err(d) => errors.extend(d),
            },
            Err(e) => errors.push(Diagnostic::file(
                &display,
                format!("cannot read the file: {e}"),
            )),
        }
    }
    Checked {
        errors,
        warnings,
        stateful,
    }
}

/// `validate --config`: each stateful job (`stateful`: name, file, env) whose env differs from
/// the one the running daemon applied moves with its savepoint; one the new cluster cannot read
/// (an older Flink) is an error of its file. With no daemon answering there is nothing to
/// check; a cluster that does not answer leaves its moves unchecked, said on stderr.
fn refused_moves(
    settings: &crate::settings::Settings,
    stateful: &[(String, String, String)],
) -> anyhow::Result<Vec<Diagnostic>> {
    let clusters: std::collections::HashSet<String> = settings
        .envs
        .values()
        .filter(|e| e.engine.kind().keeps_state())
        .filter_map(|e| e.engine.cluster_url())
        .collect();
    if stateful.is_empty() || clusters.len() < 2 {
        return Ok(Vec::new()); // no cluster to move to
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let names: Vec<String> = stateful.iter().map(|(n, _, _)| n.clone()).collect();
    // Where the jobs run is known only to a running daemon; without one there is no move to
    // check (`plan --config` checks the moves of a commit without it).
    let Ok(applied) = rt.block_on(crate::moves::applied_envs(settings, &names)) else {
        return Ok(Vec::new());
    };
    let moves: Vec<(&str, &str, &str)> = stateful
        .iter()
        .filter_map(|(name, file, env)| {
            let old = applied.get(name)?;
            (old != env).then_some((file.as_str(), old.as_str(), env.as_str()))
        })
        .collect();
    let mut envs: Vec<&str> = moves.iter().flat_map(|(_, a, b)| [*a, *b]).collect();
    envs.sort_unstable();
    envs.dedup();
    let clusters = rt.block_on(crate::moves::env_clusters(settings, &envs));
    let mut out = Vec::new();
    for (file, old, new) in moves {
        match crate::moves::state_check(old, new, &clusters) {
            crate::moves::StateCheck::Fine => {}
            crate::moves::StateCheck::Refused(why) => out.push(Diagnostic::file(
                file,
                format!("env: `{old}` → `{new}` moves the job with its savepoint: {why}"),
            )),
            crate::moves::StateCheck::Unchecked(why) => {
                eprintln!("note: {file}: env `{old}` → `{new}`: {why}")
            }
        }
    }
    Ok(out)
}

fn plan(
    repo: &Path,
    from: &str,
    to: &str,
    format: PlanFormat,
    path: Option<String>,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let settings = match config.map(load_settings).transpose()? {
        Some(Ok(s)) => Some(s),
        Some(Err(code)) => return Ok(code),
        None => None,
    };
    let path = path
        .or_else(|| settings.as_ref().map(|s| s.repo.path.clone()))
        .unwrap_or_else(|| "jobs".to_string());
    let ctx = spec::Context {
        settings: settings.as_ref().map(|s| s as &dyn spec::DaemonConfig),
        files: None,
    };
    let max_removals = settings
        .as_ref()
        .map(|s| s.max_removals)
        .unwrap_or_default();
    let mut plan = crate::changes::plan_between(repo, from, to, &path, ctx, max_removals)?;
    if let Some(s) = &settings {
        // As the daemon holds them: the config's windows and `_freeze.yaml` at `to`.
        let tree = crate::repo::open_existing(repo)?;
        let to_id = tree.resolve_rev(to)?;
        let from_id = if from == crate::changes::EMPTY_TREE {
            None
        } else {
            Some(tree.resolve_rev(from)?)
        };
        let mut at_path = s.clone();
        at_path.repo.path = path.clone();
        let freeze = crate::sync::frozen::freeze_at(&tree, to_id, &at_path);
        let override_reason = tree
            .commits_since(from_id, to_id)?
            .iter()
            .find_map(|c| c.trailer(crate::freeze::OVERRIDE_TRAILER));
        crate::changes::mark_held(
            &mut plan,
            &tree,
            (from_id, to_id),
            &freeze,
            crate::freeze::now_in(s.timezone),
            override_reason.as_deref(),
        );
    }
    let envs = crate::moves::moved_envs(&plan);
    if !envs.is_empty() {
        let clusters = match &settings {
            Some(s) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(crate::moves::env_clusters(s, &envs)),
            None => std::collections::HashMap::new(),
        };
        crate::moves::describe_moves(&mut plan, &clusters);
    }
    if let Some(s) = &settings
        && plan.count(crate::plan::Action::Adopt) > 0
    {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::import::check_adoptions(&mut plan, s));
    }
    if let Some(s) = &settings {
        let jobs: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.hash.is_some())
            .map(|i| i.job.clone())
            .collect();
        if !jobs.is_empty() {
            match crate::client::refused_versions(s, &jobs)? {
                Ok(refused) => crate::plan::warn_refused(&mut plan, &refused),
                Err(why) => {
                    eprintln!("note: versions refused by a rollback were not checked: {why}")
                }
            }
        }
    }
    let out = match format {
        PlanFormat::Text => crate::plan::render_text(&plan),
        PlanFormat::Markdown => crate::plan::render_markdown(&plan, from, to),
        PlanFormat::Json => crate::plan::render_json(&plan, from, to),
    };
    stdout(&out)?;
    Ok(if plan.has_invalid() || plan.has_refused() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_warns_of_last_state_when_checkpoints_go_with_a_cancel() {
        let parse = |yaml: &str| {
            spec::parse_job("j.yaml", yaml.as_bytes(), spec::Context::default()).unwrap()
        };
        let warn = parse(
            "env: prod\nupgrade: last-state\nparams: {main_class: A, conf: \
             {execution.checkpointing.externalized-checkpoint-retention: DELETE_ON_CANCELLATION}}\n",
        );
        let d = last_state_warning("j.yaml", &warn).expect("a warning");
        assert!(
            d.message.contains("DELETE_ON_CANCELLATION") && d.message.contains("savepoint instead"),
            "{}",
            d.message
        );
        let fine = parse("env: prod\nupgrade: last-state\nparams: {main_class: A}\n");
        assert!(last_state_warning("j.yaml", &fine).is_none());
        let savepoint = parse(
            "env: prod\nparams: {main_class: A, conf: \
             {execution.checkpointing.externalized-checkpoint-retention: DELETE_ON_CANCELLATION}}\n",
        );
        assert!(last_state_warning("j.yaml", &savepoint).is_none());
    }
}

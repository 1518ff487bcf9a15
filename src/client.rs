//! The commands that talk to a running daemon over its HTTP API: `status`, `sync`, `restart`,
//! `logs`. Exit codes (SPEC): 0 ok, 1 the daemon answered with an error, 3 the daemon could not
//! be reached (connection refused, timeout).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::console::{load_settings, stdout};
use crate::http::api::JobsView;

/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The URL when neither `--url` nor `--config` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Exit code for "the daemon is unreachable".
const UNREACHABLE: u8 = 3;

/// How to reach a running daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The daemon's base URL (default: the config's `listen`, else http://127.0.0.1:7070).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The daemon config, to find `listen` (and `api_token_file`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A file holding the API token for `sync` and `restart` (else `JOBKEEPER_TOKEN`, else the
    /// config's `api_token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

struct Target {
    base: String,
    token: Option<String>,
}

fn target(remote: &Remote) -> anyhow::Result<Result<Target, ExitCode>> {
    let settings = match remote.config.as_deref() {
        Some(path) => match load_settings(path)? {
            Ok(s) => Some(s),
            Err(code) => return Ok(Err(code)),
        },
        None => None,
    };
    let base = match (&remote.url, &settings) {
        (Some(u), _) => u.clone(),
        (None, Some(s)) => {
            let mut addr = s.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
        (None, None) => DEFAULT_URL.to_string(),
    };
    let base = base.trim_end_matches('/').to_string();
    if !reqwest::Url::parse(&base)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    {
        eprintln!(
            "error: `{base}` is not a URL of a jobkeeper daemon; expected one like {DEFAULT_URL}"
        );
        return Ok(Err(ExitCode::from(2)));
    }
    let token_file = remote.token_file.clone().or_else(|| {
        std::env::var_os("JOBKEEPER_TOKEN")
            .is_none()
            .then(|| settings.as_ref().and_then(|s| s.api_token_file.clone()))
            .flatten()
    });
    let token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("JOBKEEPER_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    };
    Ok(Ok(Target { base, token }))
}

/// Why a running daemon could not be asked about its jobs.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No HTTP client could be made.
    #[error(transparent)]
    Client(reqwest::Error),
    /// The daemon did not answer.
    #[error("cannot reach the daemon at {base}: {source}")]
    Unreachable {
        /// The daemon's address.
        base: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The daemon answered with an error status.
    #[error("{url}: {status}")]
    Status {
        /// What was asked.
        url: String,
        /// Its answer.
        status: reqwest::StatusCode,
    },
    /// The answer was not a job's detail.
    #[error("{url}: not a job's detail: {source}")]
    NotADetail {
        /// What was asked.
        url: String,
        /// The error.
        source: reqwest::Error,
    },
}

/// The address of the daemon `settings` configures (loopback when it listens on every
/// address), as a URL base.
pub fn daemon_base(settings: &crate::settings::Settings) -> String {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Each of `jobs` as the daemon at `base` shows it (`GET /api/v1/jobs/{name}`), with its name; a
/// job the daemon does not know is left out.
pub async fn job_details(
    client: &reqwest::Client,
    base: &str,
    jobs: &[String],
) -> Result<Vec<(String, serde_json::Value)>, AskError> {
    let mut out = Vec::new();
    for job in jobs {
        let url = format!("{base}/api/v1/jobs/{}", encode_name(job));
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|source| AskError::Unreachable {
                base: base.to_string(),
                source,
            })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            return Err(AskError::Status {
                url,
                status: resp.status(),
            });
        }
        let detail = resp
            .json()
            .await
            .map_err(|source| AskError::NotADetail { url, source })?;
        out.push((job.clone(), detail));
    }
    Ok(out)
}

/// The versions a rollback refused, per job of `jobs`, as the daemon of `settings` (at its
/// `listen`) reports them; `Err` says why the daemon could not be asked.
pub fn refused_versions(
    settings: &crate::settings::Settings,
    jobs: &[String],
) -> anyhow::Result<Result<std::collections::BTreeMap<String, crate::plan::Refused>, AskError>> {
    let base = daemon_base(settings);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(AskError::Client)?;
        let mut out = std::collections::BTreeMap::new();
        for (job, detail) in job_details(&client, &base, jobs).await? {
            let v = &detail["versions"];
            let text = |k: &str| v[k].as_str().map(str::to_string);
            if let Some(hash) = text("refused_hash") {
                out.insert(
                    job,
                    crate::plan::Refused {
                        hash,
                        commit: text("refused_commit"),
                        reason: text("refused_reason"),
                    },
                );
            }
        }
        Ok(out)
    }))
}

/// A request's outcome: the body, or the exit code after an error was printed.
fn request(
    t: &Target,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Result<String, ExitCode>> {
    request_within(t, method, path, TIMEOUT)
}

/// [`request`], waiting at most `timeout` for the answer.
fn request_within(
    t: &Target,
    method: reqwest::Method,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Result<String, ExitCode>> {
    let url = format!("{}{path}", t.base);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        let mut req = client.request(method, &url);
        if let Some(token) = &t.token {
            req = req.bearer_auth(token);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "no answer in time".to_string()
                } else if e.is_connect() {
                    "connection refused or failed".to_string()
                } else {
                    e.to_string()
                };
                eprintln!(
                    "error: cannot reach the jobkeeper daemon at {}: {why} (is it running? see --url)",
                    t.base
                );
                return Ok(Err(ExitCode::from(UNREACHABLE)));
            }
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: the daemon at {} did not finish its answer: {e}", t.base);
                return Ok(Err(ExitCode::from(UNREACHABLE)));
            }
        };
        if status.is_success() {
            return Ok(Ok(body));
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        eprintln!("error: {url}: {status}: {message}");
        Ok(Err(ExitCode::from(1)))
    })
}

/// The path segment of a job name (`team-a/clicks` → `team-a%2Fclicks`).
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

macro_rules! ok_or_exit {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(code) => return Ok(code),
        }
    };
}

/// Which jobs `jobkeeper status` lists: each flag given narrows the list, as the same
/// parameter of `GET /api/v1/jobs` does.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusFilter {
    /// Only the jobs of this env.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Only the jobs in this folder of job names (`team-a`, `team-a/etl`).
    #[arg(long, value_name = "FOLDER")]
    pub folder: Option<String>,
    /// Only the jobs with a problem (a condition: invalid file, deploy failed, ...).
    #[arg(long)]
    pub problems: bool,
    /// Only the jobs in this state or with this condition (`running`, `invalid`,
    /// `deploy_failed`, ...).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

impl StatusFilter {
    /// The filters as query parameters of `GET /api/v1/jobs` (`&env=prod&folder=team-a`).
    pub fn query(&self) -> String {
        let mut q = String::new();
        if self.problems {
            q.push_str("&problem=1");
        }
        for (key, value) in [
            ("env", &self.env),
            ("folder", &self.folder),
            ("state", &self.state),
        ] {
            if let Some(v) = value {
                let _ = write!(q, "&{key}={}", crate::http::page::utf8_percent_encode(v));
            }
        }
        q
    }
}

/// `jobkeeper status [--json] [--env ENV] [--folder FOLDER] [--problems] [--state S]`.
pub fn status(remote: &Remote, json: bool, filter: &StatusFilter) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    // Every page of the list.
    let mut view: Option<JobsView> = None;
    let mut after = String::new();
    loop {
        let path = format!(
            "/api/v1/jobs?limit={}&after={}{}",
            crate::http::api::MAX_PAGE,
            crate::http::page::utf8_percent_encode(&after),
            filter.query()
        );
        let body = ok_or_exit!(request(&t, reqwest::Method::GET, &path));
        let page: JobsView = serde_json::from_str(&body)
            .with_context(|| format!("the daemon at {} answered something unexpected", t.base))?;
        let next = page.next.clone();
        match &mut view {
            Some(v) => v.jobs.extend(page.jobs),
            None => view = Some(page),
        }
        match next {
            Some(n) if n > after => after = n,
            _ => break,
        }
    }
    let Some(mut view) = view else {
        return Ok(ExitCode::SUCCESS);
    };
    view.next = None;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", status_table(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// A job's state as `status` shows it: beside its state, its conditions (`running (deploy
/// failed)`), the refused commit of a `rolled_back` job, and `held until <time>` while a
/// freeze window holds a change to it.
fn state_label(j: &crate::http::api::JobView) -> String {
    let mut words: Vec<String> = j
        .conditions
        .iter()
        .filter(|c| c.kind().as_str() != j.state)
        .map(|c| c.label().to_string())
        .collect();
    if let Some(c) = &j.refused_commit {
        words.push(format!("refused {}", c.chars().take(8).collect::<String>()));
    }
    if let Some(h) = &j.held {
        words.push(h.label());
    }
    if words.is_empty() {
        j.state.clone()
    } else {
        format!("{} ({})", j.state, words.join(", "))
    }
}

/// `text` as a terminal may show it: every control character (C0, DEL, C1: carriage return,
/// escape sequences, backspace) and every character that reorders or hides text (bidi overrides,
/// zero-width marks) is left out, a tab or line break becoming a space, so what the daemon
/// reports can neither move the cursor nor rewrite what was printed before it.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The columns of the `status` table.
const COLUMNS: usize = 8;

/// The name of a commit's author (`Ann Operator <ann@example.com>` → `Ann Operator`); the
/// address when there is no name.
fn author_name(author: &str) -> String {
    match author.split_once(" <") {
        Some((name, _)) if !name.trim().is_empty() => name.trim().to_string(),
        _ => author.trim().to_string(),
    }
}

/// One job's row of the `status` table, each cell [`printable`].
fn status_row(j: &crate::http::api::JobView) -> [String; COLUMNS] {
    let last = j.last_event.as_ref().map_or("-".to_string(), |e| {
        let msg = e.message.lines().next().unwrap_or("");
        let msg: String = if msg.chars().count() > 60 {
            format!("{}…", msg.chars().take(60).collect::<String>())
        } else {
            msg.to_string()
        };
        format!("{} {} {msg}", e.time.get(..19).unwrap_or(&e.time), e.kind)
    });
    [
        j.name.clone(),
        match &j.unreadable {
            Some(_) if j.state == crate::http::api::UNREADABLE => j.state.clone(),
            Some(_) => format!("{} (unreadable)", j.state),
            None => state_label(j),
        },
        j.env.clone().unwrap_or_else(|| "-".into()),
        j.engine_label().unwrap_or_else(|| "-".into()),
        j.running_label().unwrap_or_else(|| "-".into()),
        j.commit
            .as_ref()
            .map_or_else(|| "-".into(), |c| author_name(&c.author)),
        j.restarts.to_string(),
        last,
    ]
    .map(|cell| printable(&cell))
}

/// What the `status` table cannot hold on a line: every condition in full, where a job runs
/// when not where its file asks, and why a row is unreadable.
fn status_footer(out: &mut String, view: &JobsView) {
    // Every condition in full: a later event never hides one that still holds.
    for j in &view.jobs {
        for c in &j.conditions {
            let _ = writeln!(
                out,
                "{}: {}: {}",
                printable(&j.name),
                c.kind().as_str(),
                printable(&c.phrase())
            );
        }
        if let Some(place) = &j.place {
            let _ = writeln!(out, "{}: {}", printable(&j.name), printable(place));
        }
    }
    for j in &view.jobs {
        if let Some(why) = &j.unreadable {
            let _ = writeln!(
                out,
                "unreadable: {}: {}",
                printable(&j.name),
                printable(why)
            );
        }
    }
}

/// The table `jobkeeper status` prints; every field the daemon sent is [`printable`].
pub fn status_table(view: &JobsView) -> String {
    let mut out = String::new();
    match &view.applied_commit {
        Some(c) => {
            let _ = writeln!(
                out,
                "applied commit {} {} ({})",
                printable(&c.short),
                printable(&c.subject),
                printable(&c.author)
            );
        }
        None => out.push_str("no config commit applied yet\n"),
    }
    if let Some(l) = view.leader.as_ref().filter(|l| l.ha) {
        let _ = match (l.node.as_str(), l.this_daemon) {
            ("", _) => writeln!(out, "leader: none holds the lease now (epoch {})", l.epoch),
            (node, true) => writeln!(
                out,
                "leader: {} (the daemon asked), epoch {}, since {}",
                printable(node),
                l.epoch,
                printable(&l.since)
            ),
            (node, false) => writeln!(
                out,
                "leader: {} (the daemon asked is a standby), epoch {}, since {}",
                printable(node),
                l.epoch,
                printable(&l.since)
            ),
        };
    }
    let standby = view.leader.as_ref().is_some_and(|l| l.ha && !l.this_daemon);
    if !view.ready && !standby {
        out.push_str("the daemon is starting (not ready)\n");
    }
    let header = [
        "JOB",
        "STATE",
        "ENV",
        "ENGINE",
        "RUNNING",
        "AUTHOR",
        "RESTARTS",
        "LAST EVENT",
    ];
    let rows: Vec<[String; COLUMNS]> = view.jobs.iter().map(status_row).collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()).take(COLUMNS - 1) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; COLUMNS]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < COLUMNS - 1 {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            } else {
                l.push_str(c);
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header));
    for r in &rows {
        out.push_str(&line(r.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str("(no jobs)\n");
    }
    status_footer(&mut out, view);
    out
}

/// `jobkeeper sync`.
pub fn sync(remote: &Remote) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    ok_or_exit!(request(&t, reqwest::Method::POST, "/api/v1/sync"));
    println!("sync requested: the daemon fetches the config repo now");
    Ok(ExitCode::SUCCESS)
}

/// `jobkeeper restart JOB`.
pub fn restart(remote: &Remote, job: &str) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    let path = format!("/api/v1/jobs/{}/restart", encode_name(job));
    ok_or_exit!(request(&t, reqwest::Method::POST, &path));
    println!("restart of `{job}` requested");
    Ok(ExitCode::SUCCESS)
}

/// How long `jobkeeper savepoint` waits for the daemon's answer: longer than the daemon
/// waits for the savepoint before answering that it is under way.
const SAVEPOINT_WAIT: Duration = Duration::from_secs(15 * 60);

/// `jobkeeper savepoint JOB`: takes a savepoint now and prints its location; 1 when the job
/// has no live run or the engine could not take it.
pub fn savepoint(remote: &Remote, job: &str) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    let path = format!("/api/v1/jobs/{}/savepoint", encode_name(job));
    let body = ok_or_exit!(request_within(
        &t,
        reqwest::Method::POST,
        &path,
        SAVEPOINT_WAIT
    ));
    let v: serde_json::Value = serde_json::from_str(&body)?;
    match v["location"].as_str() {
        Some(location) => println!("{}", printable(location)),
        None => println!(
            "{}",
            printable(v["status"].as_str().unwrap_or("savepoint asked for"))
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `jobkeeper savepoints JOB [--json]`: a job's savepoints, newest first.
pub fn savepoints(remote: &Remote, job: &str, json: bool) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    let path = format!("/api/v1/jobs/{}/savepoints", encode_name(job));
    let body = ok_or_exit!(request(&t, reqwest::Method::GET, &path));
    if json {
        stdout(&body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let v: crate::http::savepoints::SavepointsView = serde_json::from_str(&body)?;
    stdout(&savepoints_table(&v))?;
    Ok(ExitCode::SUCCESS)
}

/// The text of `jobkeeper savepoints`: one line per savepoint, the current run's start marked.
pub fn savepoints_table(v: &crate::http::savepoints::SavepointsView) -> String {
    if v.savepoints.is_empty() {
        return format!("job `{}` has no savepoints\n", printable(&v.job));
    }
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
    };
    let mut out = format!(
        "{:<21} {:<10} {:<9} {:>6}  {:<28} LOCATION\n",
        "TIME", "KIND", "CAUSE", "RUN", "KEPT"
    );
    for s in &v.savepoints {
        let kept = match (s.disposed_at, s.current) {
            (Some(t), _) => format!("disposed {}", when(t)),
            (None, true) => "kept, current run's start".to_string(),
            (None, false) if s.dispose_failures > 0 => {
                format!("kept ({} failed disposals)", s.dispose_failures)
            }
            (None, false) => "kept".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<21} {:<10} {:<9} {:>6}  {:<28} {}",
            when(s.time),
            s.kind,
            s.cause.as_deref().unwrap_or("-"),
            s.run_id.map_or_else(|| "-".to_string(), |r| r.to_string()),
            kept,
            printable(&s.location)
        );
    }
    out
}

/// `jobkeeper logs JOB [--run ID | --build] [--tail N]`.
pub fn logs(
    remote: &Remote,
    job: &str,
    run: Option<i64>,
    build: bool,
    tail: usize,
) -> anyhow::Result<ExitCode> {
    let t = ok_or_exit!(target(remote));
    let mut path = format!("/api/v1/jobs/{}/logs?tail={tail}", encode_name(job));
    if build {
        path.push_str("&build=latest");
    } else if let Some(id) = run {
        let _ = write!(path, "&run={id}");
    }
    let body = ok_or_exit!(request(&t, reqwest::Method::GET, &path));
    stdout(&body)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_savepoints_table_marks_the_current_start_and_the_disposed() {
        use crate::http::savepoints::{SavepointView, SavepointsView};
        let sp = |id: i64, loc: &str| SavepointView {
            id,
            time: 1_796_000_000_000 + id,
            kind: "savepoint".into(),
            cause: Some("manual".into()),
            run_id: Some(7),
            location: loc.into(),
            cluster: None,
            disposed_at: None,
            dispose_failures: 0,
            dispose_error: None,
            current: false,
        };
        let mut gone = sp(1, "file:/sp/old");
        gone.disposed_at = Some(1_796_000_100_000);
        let mut failing = sp(2, "file:/sp/failing");
        failing.dispose_failures = 3;
        let mut current = sp(3, "file:/sp/now\x1b[2J");
        current.current = true;
        let v = SavepointsView {
            job: "a".into(),
            started_from: Some("file:/sp/now".into()),
            savepoints: vec![current, failing, gone],
        };
        let t = savepoints_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("TIME") && lines[0].ends_with("LOCATION"),
            "{t}"
        );
        assert!(lines[1].contains("kept, current run's start"), "{t}");
        assert!(
            lines[1].ends_with("file:/sp/now[2J"),
            "no escape reaches the terminal: {t}"
        );
        assert!(lines[2].contains("kept (3 failed disposals)"), "{t}");
        assert!(
            lines[3].contains("disposed 2026-") && lines[3].contains("manual"),
            "{t}"
        );
        let none = SavepointsView {
            job: "b".into(),
            started_from: None,
            savepoints: vec![],
        };
        assert_eq!(savepoints_table(&none), "job `b` has no savepoints\n");
    }
    use crate::condition::Condition;

    #[test]
    fn what_the_daemon_sent_cannot_steer_the_terminal() {
        assert_eq!(
            printable("fix\r\x1b[2K\x1b]0;pwned\x07LGTM\u{202e}txt\u{9b}31m\x08x\ty"),
            "fix [2K]0;pwnedLGTMtxt31mx y"
        );
        assert_eq!(printable("team-a/clicks é ✓"), "team-a/clicks é ✓");
    }

    #[test]
    fn an_author_is_shown_by_name() {
        assert_eq!(
            author_name("Ann Operator <ann@example.com>"),
            "Ann Operator"
        );
        assert_eq!(author_name("<bot@example.com>"), "<bot@example.com>");
        assert_eq!(author_name("ann"), "ann");
    }

    #[test]
    fn filters_become_query_parameters() {
        let f = StatusFilter {
            env: Some("prod eu".into()),
            folder: Some("team-a/etl".into()),
            ..StatusFilter::default()
        };
        assert_eq!(f.query(), "&env=prod%20eu&folder=team-a%2Fetl");
        let f = StatusFilter {
            problems: true,
            state: Some("deploy_failed".into()),
            ..StatusFilter::default()
        };
        assert_eq!(f.query(), "&problem=1&state=deploy_failed");
        assert_eq!(StatusFilter::default().query(), "");
    }

    #[test]
    fn names_with_folders_are_encoded() {
        assert_eq!(encode_name("team-a/clicks.v2"), "team-a%2Fclicks.v2");
    }

    #[test]
    fn a_running_job_whose_new_version_or_move_was_refused_says_so() {
        let job = |state: &str, conditions: Vec<Condition>, refused: Option<&str>| {
            let mut v: crate::http::api::JobView = serde_json::from_value(serde_json::json!({
                "name": "a", "state": state, "reason": null, "env": null, "engine": null,
                "path": "jobs/a.yaml", "commit": null, "restarts": 0, "last_event": null,
                "invalid": false,
            }))
            .unwrap();
            v.conditions = conditions;
            v.refused_commit = refused.map(str::to_string);
            v
        };
        let refused = Condition::DeployFailed {
            commit: None,
            reason: "refused".into(),
            moved: true,
            runs_elsewhere: None,
        };
        assert_eq!(
            state_label(&job("running", vec![refused.clone()], None)),
            "running (deploy failed)"
        );
        let build = Condition::BuildFailed {
            commit: None,
            reason: "exit 2".into(),
        };
        assert_eq!(
            state_label(&job("running", vec![build], None)),
            "running (build failed)"
        );
        assert_eq!(
            state_label(&job("failed", vec![refused], None)),
            "failed (deploy failed)"
        );
        assert_eq!(state_label(&job("running", vec![], None)), "running");
        let rolled = Condition::RolledBack {
            bad_commit: None,
            reason: None,
        };
        assert_eq!(
            state_label(&job("rolled_back", vec![rolled], Some("0123456789ab"))),
            "rolled_back (refused 01234567)"
        );
    }
}

#[cfg(test)]
mod leader_tests {
    use super::*;
    use crate::http::api::LeaderView;

    fn view(leader: Option<LeaderView>) -> JobsView {
        JobsView {
            ready: false,
            applied_commit: None,
            jobs: vec![],
            next: None,
            leader,
        }
    }

    #[test]
    fn status_names_the_leader_with_ha_and_a_standby_is_not_starting() {
        let standby = LeaderView {
            node: "ops-1".into(),
            epoch: 4,
            since: "2026-12-08T00:00:00Z".into(),
            this_daemon: false,
            ha: true,
        };
        let out = status_table(&view(Some(standby.clone())));
        assert!(
            out.contains(
                "leader: ops-1 (the daemon asked is a standby), epoch 4, since 2026-12-08T00:00:00Z"
            ),
            "{out}"
        );
        assert!(!out.contains("starting"), "{out}");
        let leading = LeaderView {
            this_daemon: true,
            ..standby.clone()
        };
        let out = status_table(&view(Some(leading)));
        assert!(
            out.contains("leader: ops-1 (the daemon asked), epoch 4"),
            "{out}"
        );
        assert!(out.contains("starting"), "{out}");
        let single = LeaderView {
            ha: false,
            this_daemon: true,
            ..standby
        };
        assert!(!status_table(&view(Some(single))).contains("leader:"));
    }
}

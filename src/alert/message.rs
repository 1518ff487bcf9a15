//! What an alert says: [`Alert`] built from a recorded event by [`alert_for`] (job, env,
//! engine, event, time, config commit, engine job id, attempt, reason clipped to its end), and
//! the links to a job's page it carries ([`job_link`]).

use std::net::SocketAddr;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::event::EventKind;
use crate::settings::Settings;
use crate::store::{EventRow, Store};

use super::route::{job_channels, job_spec};
use super::{DAEMON_EVENTS, MAX_REASON_CHARS, route};

/// A config commit as shown in an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertCommit {
    /// Full id.
    pub id: String,
    /// Short id (8 hex digits).
    pub short: String,
    /// Author, `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

/// What an alert says. Built from a recorded event by [`alert_for`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Job name, for job events.
    pub job: Option<String>,
    /// The job's env, when known.
    pub env: Option<String>,
    /// The env's engine, when known.
    pub engine: Option<String>,
    /// Alert event (`failed`, `gave_up`, ...; `test` from `jobkeeper test-alert`).
    pub event: EventKind,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The config commit it happened under.
    pub commit: Option<AlertCommit>,
    /// jobkeeper's run id, when about one run.
    pub run_id: Option<i64>,
    /// The engine's id of the run (pid, Flink job id, Spark submission id).
    pub engine_job_id: Option<String>,
    /// Restart attempt n of m, when known.
    pub attempt: Option<(u32, u32)>,
    /// Why: the last lines of the log, the engine's exception, the file's problems.
    pub reason: String,
    /// The status page of the job (or of the daemon).
    pub link: String,
    /// Repeats folded into this alert.
    pub repeats: u32,
    /// When the first folded repeat happened.
    pub repeats_since: Option<DateTime<Utc>>,
    /// The jobs an alert folding one commit's `invalid` events is about (0: one job, or none).
    pub jobs: usize,
    /// The event id in the store.
    pub event_id: i64,
}

impl Alert {
    /// `prod/clicks failed (attempt 2/5)`, with the folded repeats.
    pub fn title(&self) -> String {
        let mut t = match (&self.env, &self.job) {
            (Some(env), Some(job)) => format!("{env}/{job} {}", self.event),
            (None, Some(job)) => format!("{job} {}", self.event),
            _ if self.jobs > 1 => format!("{} jobs {}", self.jobs, self.event),
            _ => self.event.to_string(),
        };
        if let Some((n, m)) = self.attempt {
            t.push_str(&format!(" (attempt {n}/{m})"));
        }
        if let Some(more) = self.repeats_line() {
            t.push_str(&format!(", {more}"));
        }
        t
    }

    /// The email subject: `[jobkeeper] <title>`.
    pub fn subject(&self) -> String {
        format!("[jobkeeper] {}", self.title())
    }

    /// `3 more times since 10:02:03 UTC`, when repeats were folded in.
    pub fn repeats_line(&self) -> Option<String> {
        if self.repeats == 0 {
            return None;
        }
        let times = if self.repeats == 1 { "time" } else { "times" };
        Some(match self.repeats_since {
            Some(t) => format!(
                "{} more {times} since {}",
                self.repeats,
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => format!("{} more {times}", self.repeats),
        })
    }

    /// The facts as `(label, value)` pairs, in display order (only the known ones).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(job) = &self.job {
            f.push(("job", job.clone()));
        }
        if self.jobs > 1 {
            f.push(("jobs", self.jobs.to_string()));
        }
        if let Some(env) = &self.env {
            f.push(("env", env.clone()));
        }
        if let Some(engine) = &self.engine {
            f.push(("engine", engine.clone()));
        }
        f.push(("event", self.event.to_string()));
        f.push((
            "time",
            self.time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        ));
        if let Some(c) = &self.commit {
            f.push((
                "commit",
                format!("{} {} ({})", c.short, c.subject, c.author),
            ));
        }
        match (&self.engine_job_id, self.run_id) {
            (Some(id), Some(run)) => f.push(("engine job", format!("{id} (run {run})"))),
            (None, Some(run)) => f.push(("engine job", format!("run {run}"))),
            (Some(id), None) => f.push(("engine job", id.clone())),
            (None, None) => {}
        }
        if let Some((n, m)) = self.attempt {
            f.push(("attempt", format!("{n}/{m}")));
        }
        if let Some(more) = self.repeats_line() {
            f.push(("repeats", more));
        }
        f.push(("status", self.link.clone()));
        f
    }

    /// The plain-text body (email, Slack, Feishu).
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.title());
        for (k, v) in self.fields() {
            out.push_str(&format!("{:<11} {v}\n", format!("{k}:")));
        }
        if !self.reason.is_empty() {
            out.push_str("\nreason:\n");
            out.push_str(&self.reason);
            if !self.reason.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// A markdown body (DingTalk, WeCom).
    pub fn markdown(&self) -> String {
        let mut out = format!("### [jobkeeper] {}\n\n", self.title());
        for (k, v) in self.fields() {
            if k == "status" {
                out.push_str(&format!("- **{k}**: [{v}]({v})\n"));
            } else {
                out.push_str(&format!("- **{k}**: {v}\n"));
            }
        }
        if !self.reason.is_empty() {
            out.push_str("\n**reason**:\n\n```\n");
            out.push_str(self.reason.trim_end());
            out.push_str("\n```\n");
        }
        out
    }

    /// The alert `jobkeeper test-alert` sends.
    pub fn test(settings: &Settings, channel: &str) -> Alert {
        Alert {
            job: None,
            env: None,
            engine: None,
            event: EventKind::Test,
            time: Utc::now(),
            commit: None,
            run_id: None,
            engine_job_id: None,
            attempt: None,
            reason: format!(
                "A test alert from `jobkeeper test-alert {channel}`: this channel works."
            ),
            link: job_link(settings, None),
            repeats: 0,
            repeats_since: None,
            jobs: 0,
            event_id: 0,
        }
    }
}

/// The link of a job's page (`<external_url>/jobs/<job>`), or of the daemon's status page.
/// Without `external_url` it is built from `listen` (`http://<listen>/jobs/<job>`), an
/// unspecified address
/// (`0.0.0.0`) being replaced by the host's name.
pub fn job_link(settings: &Settings, job: Option<&str>) -> String {
    match &settings.external_url {
        Some(base) => {
            let base = base.trim_end_matches('/');
            match job {
                Some(job) => format!("{base}{}", job_path(job)),
                None => format!("{base}/"),
            }
        }
        None => status_link(settings.listen, job),
    }
}

/// The page of job `job`: `/jobs/<job>`, each segment of its name percent-encoded and its
/// slashes kept (the page answers at `/jobs/team-a/clicks` as at `/jobs/team-a%2Fclicks`).
pub(super) fn job_path(job: &str) -> String {
    crate::spec::job_path(job)
}

/// The link of a job's page (or of the status page) built from the `listen` address (see [`job_link`]).
pub fn status_link(listen: SocketAddr, job: Option<&str>) -> String {
    let host = if listen.ip().is_unspecified() {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        match name.trim() {
            "" => "localhost".to_string(),
            n => n.to_string(),
        }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    match job {
        Some(job) => format!("http://{host}:{}{}", listen.port(), job_path(job)),
        None => format!("http://{host}:{}/", listen.port()),
    }
}

/// Keeps the last [`MAX_REASON_CHARS`] characters of a reason.
pub(super) fn clip_reason(reason: &str) -> String {
    let count = reason.chars().count();
    if count <= MAX_REASON_CHARS {
        return reason.to_string();
    }
    let tail: String = reason.chars().skip(count - MAX_REASON_CHARS).collect();
    format!("…{tail}")
}

/// An alert for a recorded event, with the channels it goes to; `None` when the event is not
/// an alert event or no channel wants it. Reads the job, run and commit from the store.
pub async fn alert_for(
    settings: &Settings,
    store: &Store,
    ev: &EventRow,
) -> Option<(Alert, Vec<String>)> {
    if !ev.kind.is_alert() {
        return None;
    }
    let event = ev.kind;
    let mut attempt = ev.attempt.map(|a| (a.n, a.of));
    let spec = match ev.job.as_deref() {
        Some(j) => job_spec(store, j).await,
        None => None,
    };
    let channels = if DAEMON_EVENTS.contains(&ev.kind) || ev.job.is_none() {
        route(settings, None, event)
    } else {
        route(
            settings,
            job_channels(settings, spec.as_ref()).as_deref(),
            event,
        )
    };
    if channels.is_empty() {
        return None;
    }
    let env = spec.as_ref().map(|s| s.env.clone());
    let mut engine = env
        .as_deref()
        .and_then(|e| settings.env(e))
        .map(|e| e.engine.as_str().to_string());
    let mut engine_job_id = None;
    // What cannot be read is logged and counted; the alert goes out without it.
    let job = ev.job.as_deref();
    if let Some(run_id) = ev.run_id {
        if let Some(run) = store
            .read_or_log(job, "run, for its alert", store.run(run_id).await)
            .flatten()
        {
            engine = Some(run.engine.as_str().to_string());
            engine_job_id = run.handle.map(|h| h.engine_id);
        }
        if attempt.is_none() {
            // A failed run: the attempt is the one that started it.
            let read = store.run_attempt(run_id).await;
            attempt = store
                .read_or_log(job, "run's attempt, for its alert", read)
                .flatten()
                .map(|a| (a.n, a.of));
        }
    }
    let mut commit = None;
    if let Some(id) = ev.commit_id.as_deref() {
        let (author, subject) = match (&ev.author, &ev.subject) {
            (Some(a), Some(s)) => (a.clone(), s.clone()),
            _ => store
                .read_or_log(job, "commit, for its alert", store.commit(id).await)
                .flatten()
                .map(|c| (c.author, c.subject))
                .unwrap_or_default(),
        };
        commit = Some(AlertCommit {
            id: id.to_string(),
            short: id.chars().take(8).collect(),
            author,
            subject,
        });
    }
    let alert = Alert {
        job: ev.job.clone(),
        env,
        engine,
        event,
        time: Utc
            .timestamp_millis_opt(ev.time)
            .single()
            .unwrap_or_else(Utc::now),
        commit,
        run_id: ev.run_id,
        engine_job_id,
        attempt,
        reason: clip_reason(&ev.message),
        link: job_link(settings, ev.job.as_deref()),
        repeats: 0,
        repeats_since: None,
        jobs: 0,
        event_id: ev.id,
    };
    Some((alert, channels))
}

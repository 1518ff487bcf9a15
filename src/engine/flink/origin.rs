//! Which uploaded jar a running Flink job was started from, and with what entry class and
//! program args, as far as the cluster tells, for `jobkeeper import`.
//!
//! Flink does not record the jar, entry class or args of a job run through `POST
//! /jars/{id}/run` or the CLI on a session cluster: `GET /jobs/{id}/config` holds only the
//! execution config, `GET /jobs/{id}/plan` the operators, and `GET /jobs/{id}/jobmanager/config`
//! the cluster's own config (checked on 1.20.3 and 2.3.0). A cluster in application mode (one
//! cluster per job, as the Kubernetes operator runs them) does record them, in that config:
//! `pipeline.jars`, `$internal.application.main` and `$internal.application.program-args`
//! ([`application`]).
//!
//! Otherwise the job is matched to the jars `GET /jars` lists ([`uploaded`]), among those
//! uploaded before the job started ([`match_jar`]): the jar its config names; else the one whose
//! entry class the job's name or operator names hold; else the one whose name (less `.jar` and
//! a version) the job's name holds; else the only one. Jars that agree in name and entry
//! classes count as one (the same jar uploaded twice). When several differ, they are named.

use serde_json::Value;

/// An entry of `GET /jars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedJar {
    /// Its file name as uploaded (`clicks-etl-1.4.jar`).
    pub name: String,
    /// When it was uploaded (ms, the cluster's clock).
    pub uploaded_ms: Option<i64>,
    /// The entry classes its manifest names.
    pub entries: Vec<String>,
}

impl UploadedJar {
    /// `name (a.B, c.D)`, or `name (no entry class)`.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            format!("{} (no entry class)", self.name)
        } else {
            format!("{} ({})", self.name, self.entries.join(", "))
        }
    }
}

/// The jars of a `GET /jars` answer.
pub fn uploaded(body: &Value) -> Vec<UploadedJar> {
    body["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(UploadedJar {
                name: f["name"].as_str()?.to_string(),
                uploaded_ms: f["uploaded"].as_i64(),
                entries: f["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["name"].as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect()
}

/// What an application-mode cluster's config says of the program it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Application {
    /// `$internal.application.main`.
    pub main_class: Option<String>,
    /// `$internal.application.program-args`.
    pub args: Option<Vec<String>>,
    /// The file names of `pipeline.jars`.
    pub jars: Vec<String>,
}

/// The program named by a `GET /jobs/{id}/jobmanager/config` answer (`[{key, value}]`).
pub fn application(body: &Value) -> Application {
    let mut app = Application::default();
    for e in body.as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (e["key"].as_str(), e["value"].as_str()) else {
            continue;
        };
        match k {
            "$internal.application.main" if !v.is_empty() => app.main_class = Some(v.into()),
            "$internal.application.program-args" => app.args = Some(flink_list(v)),
            "pipeline.jars" => {
                app.jars = flink_list(v)
                    .iter()
                    .filter_map(|j| j.rsplit('/').next())
                    .filter(|j| !j.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    app
}

/// A list option as Flink writes it: items split at `;`, an item holding `;` or a quote in
/// quotes (`'` or `"`), a quote inside doubled.
pub fn flink_list(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut item = String::new();
    let mut chars = s.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                if chars.peek() == Some(&q) {
                    item.push(q);
                    chars.next();
                } else {
                    quote = None;
                }
            }
            Some(_) => item.push(c),
            None if (c == '\'' || c == '"') && item.is_empty() => quote = Some(c),
            None if c == ';' => out.push(std::mem::take(&mut item)),
            None => item.push(c),
        }
    }
    out.push(item);
    out
}

/// A jar matched to a job, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JarMatch {
    /// This jar (`how`: why it, in words for the job file).
    Found {
        /// The jar.
        jar: UploadedJar,
        /// Why this one.
        how: String,
    },
    /// Several differing jars fit as well as each other.
    Several(Vec<UploadedJar>),
    /// The cluster holds no jar uploaded before the job started.
    None,
}

/// The name of a jar less `.jar` and a trailing version (`clicks-etl-1.4.2-SNAPSHOT.jar` →
/// `clicks-etl`; a `-` and digits without a `.` stay: jobkeeper's `name-3fa2b1c9d0e4.jar`).
fn stem(name: &str) -> &str {
    let base = name.strip_suffix(".jar").unwrap_or(name);
    // A version: a `-` then digits and dots up to the next `-` or the end, at least one dot.
    let cut = base.char_indices().find(|&(i, c)| {
        let segment = base[i + 1..].split('-').next().unwrap_or_default();
        c == '-'
            && segment.starts_with(|d: char| d.is_ascii_digit())
            && segment.contains('.')
            && segment.chars().all(|d| d.is_ascii_digit() || d == '.')
    });
    match cut {
        Some((i, _)) if i > 0 => &base[..i],
        _ => base,
    }
}

/// `s` lowercase, each run of characters other than letters and digits one `-`.
fn normal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

/// The jar a job was started from: `job_name` and `operators` (its vertex names) as the cluster
/// shows them, `started_ms` its start, `named` the jar file names its config names.
pub fn match_jar(
    job_name: &str,
    operators: &[String],
    started_ms: Option<i64>,
    named: &[String],
    jars: &[UploadedJar],
) -> JarMatch {
    let before: Vec<&UploadedJar> = jars
        .iter()
        .filter(|j| match (j.uploaded_ms, started_ms) {
            (Some(u), Some(s)) => u <= s,
            _ => true,
        })
        .collect();
    if before.is_empty() {
        return JarMatch::None;
    }
    let holds_class = |j: &UploadedJar| {
        j.entries.iter().any(|e| {
            let simple = e.rsplit('.').next().unwrap_or(e);
            std::iter::once(job_name)
                .chain(operators.iter().map(String::as_str))
                .any(|n| n.contains(e.as_str()) || (simple.len() > 2 && n.contains(simple)))
        })
    };
    // Names compared lowercase, any run of other characters than letters and digits as one
    // `-` (`Clicks ETL` holds `clicks_etl.jar`); of several jars whose names the job's name
    // holds, the longest name is the closest.
    let lower = normal(job_name);
    let held = |j: &UploadedJar| {
        let s = normal(stem(&j.name));
        (s.len() > 2 && lower.contains(&s)).then_some(s.len())
    };
    let longest = before.iter().filter_map(|j| held(j)).max().unwrap_or(0);
    let holds_name = |j: &UploadedJar| held(j) == Some(longest);
    type Test<'a> = (&'a dyn Fn(&UploadedJar) -> bool, &'static str);
    let named_it = |j: &UploadedJar| named.contains(&j.name);
    let anyone = |_: &UploadedJar| true;
    let tests: [Test; 4] = [
        (
            &named_it,
            "the jar the job's config names (`pipeline.jars`)",
        ),
        (
            &holds_class,
            "the jar uploaded before the job started whose entry class the job's name or \
             operators name",
        ),
        (
            &holds_name,
            "the jar uploaded before the job started whose name the job's name holds (the \
             longest such)",
        ),
        (&anyone, "the only jar uploaded before the job started"),
    ];
    for (test, how) in tests {
        let fits: Vec<&UploadedJar> = before.iter().copied().filter(|j| test(j)).collect();
        let Some(first) = fits.first() else {
            continue;
        };
        if fits
            .iter()
            .all(|j| j.name == first.name && j.entries == first.entries)
        {
            return JarMatch::Found {
                jar: (*first).clone(),
                how: how.to_string(),
            };
        }
        return JarMatch::Several(fits.into_iter().cloned().collect());
    }
    JarMatch::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar(name: &str, at: i64, entries: &[&str]) -> UploadedJar {
        UploadedJar {
            name: name.into(),
            uploaded_ms: Some(at),
            entries: entries.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_jar_is_found_by_config_class_name_or_alone_and_never_after_the_start() {
        let a = jar("clicks-etl-1.4.2-SNAPSHOT.jar", 10, &["com.x.Clicks"]);
        let b = jar("orders.jar", 20, &["com.x.Orders"]);
        let late = jar("clicks-etl.jar", 200, &["com.x.Clicks"]);
        let all = [a.clone(), b.clone(), late.clone()];
        let found = |m: JarMatch| match m {
            JarMatch::Found { jar, how } => (jar.name, how),
            other => panic!("{other:?}"),
        };
        // Named in the config.
        let (n, how) = found(match_jar("x", &[], Some(100), &["orders.jar".into()], &all));
        assert_eq!(n, "orders.jar");
        assert!(how.contains("pipeline.jars"), "{how}");
        // An operator names the entry class.
        let ops = ["Source: Orders source".to_string()];
        let (n, how) = found(match_jar("x", &ops, Some(100), &[], &all));
        assert_eq!(n, "orders.jar");
        assert!(how.contains("entry class"), "{how}");
        // The job's name holds the jar's name, less its version; the jar uploaded after the
        // job started is not it.
        let (n, how) = found(match_jar("Clicks-ETL prod", &[], Some(100), &[], &all));
        assert_eq!(n, "clicks-etl-1.4.2-SNAPSHOT.jar");
        assert!(how.contains("name"), "{how}");
        // The longest name the job's name holds; `_` and ` ` count as `-`.
        let short = jar("flink-counter.jar", 30, &[]);
        let long = jar("flink_counter-eu-2.0.jar", 31, &["x.C"]);
        let (n, _) = found(match_jar(
            "Flink Counter eu",
            &[],
            Some(100),
            &[],
            &[short, long],
        ));
        assert_eq!(n, "flink_counter-eu-2.0.jar");
        // Nothing tells them apart: both named.
        assert_eq!(
            match_jar("job", &[], Some(100), &[], &all),
            JarMatch::Several(vec![a.clone(), b.clone()])
        );
        // Alone (the same jar uploaded twice is one).
        let twice = [
            a.clone(),
            jar("clicks-etl-1.4.2-SNAPSHOT.jar", 15, &["com.x.Clicks"]),
        ];
        let (n, how) = found(match_jar("job", &[], Some(100), &[], &twice));
        assert_eq!(n, a.name);
        assert!(how.contains("only jar"), "{how}");
        assert_eq!(
            match_jar("job", &[], Some(100), &[], &[late]),
            JarMatch::None
        );
        assert_eq!(match_jar("job", &[], None, &[], &[]), JarMatch::None);
    }

    #[test]
    fn stems_drop_a_version_not_a_digest() {
        assert_eq!(stem("clicks-etl-1.4.2.jar"), "clicks-etl");
        assert_eq!(
            stem("flink-counter-3fa2b1c9d0e4.jar"),
            "flink-counter-3fa2b1c9d0e4"
        );
        assert_eq!(stem("job.jar"), "job");
        assert_eq!(stem("job-57b5c524-1.0.jar"), "job-57b5c524");
        assert_eq!(stem("job-2.0.1-SNAPSHOT.jar"), "job");
        assert_eq!(stem("job-2.x.jar"), "job-2.x");
        assert_eq!(stem("1.0.jar"), "1.0");
    }

    #[test]
    fn application_mode_config_names_main_args_and_jars() {
        let body = serde_json::json!([
            {"key": "pipeline.jars", "value": "local:///opt/flink/usrlib/clicks-1.0.jar"},
            {"key": "$internal.application.main", "value": "com.x.Clicks"},
            {"key": "$internal.application.program-args", "value": "--topic;clicks;'a;b';\"say \"\"hi\"\"\";"},
            {"key": "rest.port", "value": "8081"},
        ]);
        let app = application(&body);
        assert_eq!(app.main_class.as_deref(), Some("com.x.Clicks"));
        assert_eq!(
            app.args.unwrap(),
            ["--topic", "clicks", "a;b", "say \"hi\"", ""]
        );
        assert_eq!(app.jars, ["clicks-1.0.jar"]);
        assert_eq!(application(&serde_json::json!([])), Application::default());
        assert_eq!(flink_list(""), Vec::<String>::new());
    }

    #[test]
    fn jars_are_read_from_the_listing() {
        let body = serde_json::json!({"files": [
            {"id": "u_a.jar", "name": "a.jar", "uploaded": 5, "entry": [{"name": "x.A", "description": null}]},
            {"id": "u_b.jar", "name": "b.jar", "uploaded": 6, "entry": []},
        ]});
        let jars = uploaded(&body);
        assert_eq!(jars[0], jar("a.jar", 5, &["x.A"]));
        assert_eq!(jars[1].describe(), "b.jar (no entry class)");
        assert_eq!(jars[0].describe(), "a.jar (x.A)");
    }
}

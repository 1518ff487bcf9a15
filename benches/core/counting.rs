//! Counting the daemon's REST requests to a Flink cluster: an HTTP listener on 127.0.0.1 in
//! front of a real cluster (it forwards each request and keeps every GET answer it saw), or in
//! place of one, replaying answers recorded from a real cluster (it says so in every answer's
//! `x-recorded` header). Either way it notes each request's time, method and path, so a bench
//! can cut the stream into health sweeps and count them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;

/// One request seen.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// Its method.
    pub method: String,
    /// Its path and query.
    pub path: String,
}

/// An answer: status, content type, body.
pub type Answer = (u16, String, Vec<u8>);

/// What the listener saw: every request, and the latest 200 answer to each GET path it
/// forwarded.
#[derive(Clone, Default)]
pub struct Counter {
    hits: Arc<Mutex<Vec<Hit>>>,
    seen: Arc<Mutex<HashMap<String, Answer>>>,
}

impl Counter {
    /// How many requests so far.
    pub fn len(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// The requests from the `from`-th on.
    pub fn since(&self, from: usize) -> Vec<Hit> {
        self.hits.lock().unwrap()[from..].to_vec()
    }

    /// The latest answers to GETs, by path and query (captured from the cluster).
    pub fn answers(&self) -> HashMap<String, Answer> {
        self.seen.lock().unwrap().clone()
    }
}

/// Where the listener's answers come from.
pub enum Upstream {
    /// A real cluster's REST URL: each request is forwarded.
    Cluster(String),
    /// Answers recorded from a real cluster, by path and query; anything else is a 404.
    Recording(HashMap<String, Answer>),
}

/// Starts the counting listener on a free loopback port: its URL and its counter.
pub async fn counting_proxy(upstream: Upstream) -> (String, Counter) {
    let counter = Counter::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = reqwest::Client::new();
    let upstream = Arc::new(upstream);
    let c = counter.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, upstream, c) = (http.clone(), upstream.clone(), c.clone());
        async move {
            let (parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            c.hits.lock().unwrap().push(Hit {
                at: Instant::now(),
                method: parts.method.to_string(),
                path: path.clone(),
            });
            let answer = match upstream.as_ref() {
                Upstream::Recording(recorded) => match recorded.get(&path) {
                    Some(a) => Some(a.clone()),
                    None => Some((
                        404,
                        "application/json".into(),
                        br#"{"errors":["not in the recording"]}"#.to_vec(),
                    )),
                },
                Upstream::Cluster(base) => {
                    let body = axum::body::to_bytes(body, 64 << 20)
                        .await
                        .unwrap_or_default();
                    let mut out = http.request(parts.method.clone(), format!("{base}{path}"));
                    if let Some(ct) = parts.headers.get("content-type") {
                        out = out.header("content-type", ct);
                    }
                    match out.body(body).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let ct = r
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("application/json")
                                .to_string();
                            let bytes = r.bytes().await.unwrap_or_default().to_vec();
                            if parts.method == "GET" && status == 200 {
                                c.seen
                                    .lock()
                                    .unwrap()
                                    .insert(path, (status, ct.clone(), bytes.clone()));
                            }
                            Some((status, ct, bytes))
                        }
                        Err(_) => None,
                    }
                }
            };
            let recorded = matches!(upstream.as_ref(), Upstream::Recording(_));
            match answer {
                Some((status, ct, bytes)) => {
                    let mut r = Response::builder()
                        .status(status)
                        .header("content-type", ct);
                    if recorded {
                        r = r.header("x-recorded", "answer recorded from a real Flink cluster");
                    }
                    r.body(Body::from(bytes)).unwrap()
                }
                None => Response::builder().status(502).body(Body::empty()).unwrap(),
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), counter)
}

/// The requests of `hits` cut into sweeps: runs of requests with less than `gap` between two
/// of them. The first and the last run are left out (a window's edges may cut them).
pub fn sweeps(hits: &[Hit], gap: Duration) -> Vec<Vec<Hit>> {
    let mut out: Vec<Vec<Hit>> = Vec::new();
    for h in hits {
        match out.last_mut() {
            Some(run) if h.at.duration_since(run.last().unwrap().at) < gap => run.push(h.clone()),
            _ => out.push(vec![h.clone()]),
        }
    }
    if out.len() <= 2 {
        return Vec::new();
    }
    out[1..out.len() - 1].to_vec()
}

/// A request's kind: its path with job ids as `{id}`, without the query.
pub fn kind(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| {
            if seg.len() == 32 && seg.chars().all(|c| c.is_ascii_hexdigit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Requests per sweep over `window` from now (after the daemon settled): the median sweep's
/// count, the least and the most, and the median sweep's requests by kind
/// (`GET /jobs/overview ×2, …`).
pub async fn per_sweep(counter: &Counter, window: Duration, gap: Duration) -> SweepCount {
    let from = counter.len();
    tokio::time::sleep(window).await;
    let all = sweeps(&counter.since(from), gap);
    assert!(
        !all.is_empty(),
        "no whole sweep seen within {window:?} (the health loop did not run?)"
    );
    let mut sizes: Vec<usize> = all.iter().map(Vec::len).collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    let example = all.iter().find(|s| s.len() == median).unwrap();
    let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
    for h in example {
        *by_kind
            .entry(format!("{} {}", h.method, kind(&h.path)))
            .or_default() += 1;
    }
    let kinds = by_kind
        .iter()
        .map(|(k, n)| format!("`{k}` ×{n}"))
        .collect::<Vec<_>>()
        .join(" + ");
    SweepCount {
        sweeps: all.len(),
        median,
        least: sizes[0],
        most: *sizes.last().unwrap(),
        kinds,
    }
}

/// Requests per sweep, over several sweeps.
pub struct SweepCount {
    /// Whole sweeps counted.
    pub sweeps: usize,
    /// The median sweep's requests.
    pub median: usize,
    /// The fewest in a sweep.
    pub least: usize,
    /// The most in a sweep.
    pub most: usize,
    /// The median sweep's requests by kind.
    pub kinds: String,
}

impl std::fmt::Display for SweepCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.least == self.most {
            write!(
                f,
                "{} ({}; {} sweeps)",
                self.median, self.kinds, self.sweeps
            )
        } else {
            write!(
                f,
                "{} (least {}, most {}; {}; {} sweeps)",
                self.median, self.least, self.most, self.kinds, self.sweeps
            )
        }
    }
}

/// A recording of `n` jobs made from `answers` captured in front of a real cluster: its
/// `/jobs/overview` cut to the jobs `ids` and repeated until there are `n` (each copy with a
/// new job id and name), each copy's answers (`/jobs/{id}`, its metrics) those of the job it
/// copies, and the cluster's `/config` and `/overview` as they were. Returns the recording and the new ids.
pub fn recording_of(
    answers: &HashMap<String, Answer>,
    ids: &[String],
    n: usize,
) -> (HashMap<String, Answer>, Vec<String>) {
    let (_, ct, overview) = answers
        .get("/jobs/overview")
        .expect("a /jobs/overview answer was captured");
    let overview: serde_json::Value = serde_json::from_slice(overview).unwrap();
    let source: Vec<&serde_json::Value> = overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| ids.iter().any(|id| j["jid"] == id.as_str()))
        .collect();
    assert!(!source.is_empty(), "none of the jobs is in the recording");
    let mut out = HashMap::new();
    for p in ["/config", "/overview"] {
        if let Some(a) = answers.get(p) {
            out.insert(p.to_string(), a.clone());
        }
    }
    let mut jobs = Vec::with_capacity(n);
    let mut new_ids = Vec::with_capacity(n);
    for i in 0..n {
        let src = source[i % source.len()];
        let src_id = src["jid"].as_str().unwrap();
        let id = format!("{:08x}{}", i + 1, &src_id[8..]);
        let mut job = src.clone();
        job["jid"] = id.clone().into();
        job["name"] = format!("{} copy {i}", src["name"].as_str().unwrap_or("job")).into();
        jobs.push(job);
        // Every answer about the job (its details, its metrics), its id changed to the copy's.
        for (path, (status, ct, body)) in answers {
            if path.starts_with(&format!("/jobs/{src_id}")) {
                let body = String::from_utf8_lossy(body).replace(src_id, &id);
                out.insert(
                    path.replace(src_id, &id),
                    (*status, ct.clone(), body.into_bytes()),
                );
            }
        }
        new_ids.push(id);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
    out.insert("/jobs/overview".into(), (200, ct.clone(), body));
    (out, new_ids)
}

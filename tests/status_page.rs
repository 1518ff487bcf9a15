//! The status page for hundreds of jobs, in a real headless Chromium driven over the DevTools
//! protocol (`--remote-debugging-pipe`): 800 jobs, one line each at 1400 px with long names cut
//! by an ellipsis (whole in the title), search by name as you type, sorting by every column,
//! no horizontal overflow. Screenshots go to `target/screenshots/`; `scripts/test.sh` copies
//! them to `$JOBKEEPER_ARTIFACTS/screenshots/` (default `target/artifacts`), which CI keeps.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

/// A DevTools protocol session with one page of a headless Chromium, over two FIFOs (the
/// browser reads commands on fd 3 and writes answers on fd 4, each message ending in NUL).
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next: u64,
    session: String,
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        let (cmd_in, cmd_out) = (dir.join("cdp-in"), dir.join("cdp-out"));
        for f in [&cmd_in, &cmd_out] {
            let ok = Command::new("mkfifo").arg(f).status().unwrap().success();
            assert!(ok, "mkfifo {}", f.display());
        }
        let profile = dir.join("profile");
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "exec chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
                 --disable-background-networking --disable-component-update --disable-sync \
                 --disable-dev-shm-usage --hide-scrollbars --window-size=1400,1000 \
                 --remote-debugging-pipe --user-data-dir=\"$2\" about:blank 3<\"$0\" 4>\"$1\"",
            )
            .arg(&cmd_in)
            .arg(&cmd_out)
            .arg(&profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium: the page tests need Debian's `chromium` package");
        // Both ends open together (a FIFO's open waits for its other end).
        let out_path = cmd_out.clone();
        let reader = std::thread::spawn(move || std::fs::File::open(out_path).unwrap());
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&cmd_in)
            .unwrap();
        let from = BufReader::new(reader.join().unwrap());
        let mut b = Browser {
            child,
            to,
            from,
            next: 0,
            session: String::new(),
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}), false);
        let target = target["targetId"].as_str().unwrap().to_string();
        let s = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            false,
        );
        b.session = s["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// Sends a command (to the page when `page`) and returns its result.
    fn call(&mut self, method: &str, params: Value, page: bool) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the pipe");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"] == json!(id) {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a script in the page (awaited when it is a promise).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            true,
        );
        assert!(r["exceptionDetails"].is_null(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expr` is true in the page.
    fn wait(&mut self, what: &str, expr: &str) {
        for _ in 0..300 {
            if self.eval(expr) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not within 30 s");
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}), true);
        self.wait(
            "the page loaded",
            "document.readyState === 'complete' && !!document.getElementById('q')",
        );
    }

    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                true,
            );
        }
    }

    fn screenshot(&mut self, file: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}), true);
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "a real PNG"
        );
        std::fs::write(file, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = Vec::new();
        let _ = self.from.get_mut().read_to_end(&mut rest);
    }
}

/// Where screenshots are kept: `target/screenshots/` (CI uploads the folder).
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The rows shown, as `[name, sort key of column col]`.
fn shown(b: &mut Browser, col: usize) -> Vec<(String, String)> {
    let v = b.eval(&format!(
        "Array.from(document.querySelectorAll('#jobs tbody tr')).filter(r => !r.hidden)\
         .map(r => [r.dataset.job, r.cells[{col}].dataset.v ?? r.cells[{col}].textContent.trim()])"
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_hundred_jobs_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    // 800 jobs: suspended ones in eight folders (every 50th with a long name), a few running,
    // a scheduled batch job and an invalid file.
    for i in 0..790 {
        let name = if i % 50 == 0 {
            format!(
                "team-{}/ingest-clickstream-sessions-enrichment-pipeline-{i:03}",
                i % 8
            )
        } else {
            format!("team-{}/hb-{i:03}", i % 8)
        };
        git.write(
            &format!("jobs/{name}.yaml"),
            &format!("env: dev\nsuspend: true\nparams: {{command: [sleep, \"{i}\"]}}\n"),
        );
    }
    for i in 0..7 {
        git.write(&format!("jobs/live/svc-{i}.yaml"), &sleeper(600 + i));
    }
    git.write(
        "jobs/live/nightly.yaml",
        "env: dev\nschedule: \"0 3 * * *\"\nparams: {command: [\"true\"]}\n",
    );
    git.write("jobs/broken/a.yaml", "env: dev\nparams: [not, a, mapping\n");
    git.write(
        "jobs/broken/b.yaml",
        "env: nowhere\nparams: {command: [\"true\"]}\n",
    );
    git.commit_push("800 jobs");
    let mut d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    wait_for("790 suspended", Duration::from_secs(180), || {
        d.store
            .job_state_counts()
            .unwrap()
            .iter()
            .any(|(s, n)| s.as_str() == "suspended" && *n == 790)
    })
    .await;
    for i in 0..7 {
        d.running_pid(&format!("live/svc-{i}")).await;
    }
    let (code, html) = d.get("/").await;
    assert_eq!(code, 200);
    assert_eq!(
        html.matches("<tr id=").count(),
        800,
        "every job on one page"
    );
    let base = format!("http://{}/", d.addr);
    let dir = tmp.path().to_path_buf();
    let shots = screenshots();

    tokio::task::spawn_blocking(move || {
        let mut b = Browser::start(&dir);
        b.open(&base);
        b.screenshot(&shots.join("status-800-jobs.png"));

        // One line per job: every row as tall as one line of text, long names cut, not wrapped.
        let rows = b.eval(
            "(() => { const rs = Array.from(document.querySelectorAll('#jobs tbody tr')); \
             const hs = rs.map(r => r.getBoundingClientRect().height); \
             const line = parseFloat(getComputedStyle(rs[0].cells[0]).lineHeight); \
             const cut = rs.filter(r => { const d = r.cells[0].firstElementChild; \
               return d.scrollWidth > d.clientWidth; }).map(r => r.dataset.job); \
             const titled = rs.every(r => r.cells[0].title === r.dataset.job); \
             const nowrap = rs.every(r => getComputedStyle(r.cells[0].firstElementChild).whiteSpace === 'nowrap' \
               && getComputedStyle(r.cells[0].firstElementChild).textOverflow === 'ellipsis'); \
             return {n: rs.length, max: Math.max(...hs), min: Math.min(...hs), line, cut, titled, nowrap, \
               overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth}; })()",
        );
        assert_eq!(rows["n"], json!(800), "{rows}");
        let (max, line) = (rows["max"].as_f64().unwrap(), rows["line"].as_f64().unwrap());
        assert!(max < 2.0 * line, "one line per job: {rows}");
        let min = rows["min"].as_f64().unwrap();
        assert!(max - min < 1.0, "every row the same height: {rows}");
        assert_eq!(rows["titled"], json!(true), "{rows}");
        assert_eq!(rows["nowrap"], json!(true), "{rows}");
        let cut = rows["cut"].as_array().unwrap();
        assert!(
            !cut.is_empty()
                && cut.iter().all(|n| n.as_str().unwrap().contains("enrichment-pipeline")),
            "the long names are cut by the ellipsis, the short ones whole: {rows}"
        );
        assert!(rows["overflow"].as_f64().unwrap() <= 0.0, "no horizontal overflow: {rows}");

        // The problems view first: every job with a condition (the two broken files), above
        // the list of all jobs.
        let problems = b.eval(
            "(() => { const t = document.getElementById('problem-jobs'); if (!t) return null; \
             return {names: Array.from(t.tBodies[0].rows).map(r => r.dataset.job), \
             first: !!(t.compareDocumentPosition(document.getElementById('jobs')) \
               & Node.DOCUMENT_POSITION_FOLLOWING)}; })()",
        );
        assert_eq!(
            problems["names"],
            json!(["broken/a", "broken/b"]),
            "{problems}"
        );
        assert_eq!(problems["first"], json!(true), "{problems}");

        // Search as you type: each key narrows the rows, and the URL keeps it.
        b.eval("document.getElementById('q').focus()");
        for (text, expect) in [("team-3", 99usize), ("team-3/hb-01", 2), ("enrichment", 16)] {
            b.eval("document.getElementById('q').value = ''");
            b.call("Input.insertText", json!({"text": text}), true);
            let names = shown(&mut b, 0);
            assert!(names.iter().all(|(n, _)| n.contains(text)), "{text}: {names:?}");
            assert_eq!(names.len(), expect, "{text}: {names:?}");
            let url = b.eval("location.search");
            assert!(url.as_str().unwrap().contains("q="), "{url}");
        }
        b.screenshot(&shots.join("status-800-jobs-search.png"));
        b.eval("document.getElementById('q').value = ''");
        b.call("Input.insertText", json!({"text": "e"}), true);
        b.eval(
            "(() => { const q = document.getElementById('q'); q.value = ''; \
             q.dispatchEvent(new Event('input')); })()",
        );
        assert_eq!(shown(&mut b, 0).len(), 800);

        // Sort by every column, up then down.
        let heads = b.eval(
            "Array.from(document.querySelectorAll('#jobs thead th')).map(t => t.dataset.col)",
        );
        let heads: Vec<String> = heads
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect();
        assert_eq!(heads.len(), 8);
        for (col, key) in heads.iter().enumerate() {
            for desc in [false, true] {
                b.click(&format!("#jobs th[data-col={key}]"));
                let keys: Vec<String> = shown(&mut b, col).into_iter().map(|(_, k)| k).collect();
                assert_eq!(keys.len(), 800);
                let filled: Vec<&String> = keys.iter().filter(|k| !k.is_empty() && *k != "–").collect();
                let numeric = key == "restarts";
                let ordered = filled.windows(2).all(|w| {
                    let c = if numeric {
                        w[0].parse::<f64>().unwrap().total_cmp(&w[1].parse::<f64>().unwrap())
                    } else {
                        w[0].cmp(w[1])
                    };
                    if desc { c.is_ge() } else { c.is_le() }
                });
                assert!(ordered, "sorted by {key} (desc {desc}): {keys:?}");
                let aria = b.eval(&format!(
                    "document.querySelector('#jobs th[data-col={key}]').getAttribute('aria-sort')"
                ));
                assert_eq!(aria, json!(if desc { "descending" } else { "ascending" }));
            }
        }
        let url = b.eval("location.search");
        assert!(url.as_str().unwrap().contains("sort=event"), "{url}");
        b.screenshot(&shots.join("status-800-jobs-sorted.png"));

        // A refresh of an unchanged page is a 304 with no body.
        let codes = b.eval(
            "(async () => { const a = await fetch('/', {cache: 'no-store'}); const tag = a.headers.get('ETag'); \
             const b = await fetch('/', {cache: 'no-store', headers: {'If-None-Match': tag}}); \
             return [a.status, b.status, tag !== null]; })()",
        );
        assert_eq!(codes, json!([200, 304, true]));

        // The sort is in the URL: the page opened at it comes sorted.
        b.open(&format!("{base}?sort=state&dir=desc"));
        let states: Vec<String> = shown(&mut b, 1).into_iter().map(|(_, k)| k).collect();
        let mut sorted = states.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(states, sorted);
    })
    .await
    .unwrap();
    d.stop().await;
}

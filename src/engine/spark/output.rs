//! What a Spark standalone cluster keeps of a run's output, for `jobkeeper logs`: the driver's
//! stderr, read from the web UI of the worker that ran it (`GET <worker UI>/log/?driverId=…
//! &logType=stderr`), found through the master's `/json/` (so the env needs `spark.ui`). The
//! master lists only its latest completed drivers and a worker may delete ended drivers' work
//! folders (`spark.worker.cleanup.enabled`): then the output says the cluster no longer has it.

use super::SparkEngine;
use crate::engine::cluster::lock;
use crate::engine::{RunHandle, RunOutput};

/// The most bytes of a driver's stderr read for one answer.
const MAX_READ: u64 = 1024 * 1024;
/// Bytes read per line asked for (a stack trace's lines are short, a launch command's long).
const BYTES_PER_LINE: u64 = 512;
/// What a worker's log page answers for a driver whose work folder it does not have.
const NO_FOLDER: &str = "Error: invalid log directory";

impl SparkEngine {
    /// [`crate::engine::Engine::run_output`] of a Spark run.
    pub(super) async fn output(&self, handle: &RunHandle, lines: usize) -> RunOutput {
        let id = &handle.engine_id;
        let view = match self.master_view().await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return RunOutput::Unavailable(format!(
                    "the stderr of spark driver {id} is read from its worker's web UI, found \
                     through the master's: set `spark.ui` (the master's web UI) on the env"
                ));
            }
            Err(e) => return RunOutput::Unavailable(e.to_string()),
        };
        let worker = match view.drivers.get(id) {
            Some(d) => d.worker.clone(),
            None => match self.driver_status(id).await {
                Ok(Some((_, worker, _))) => worker,
                Ok(None) => {
                    return RunOutput::Gone(format!(
                        "spark master {} no longer knows driver {id}: it lists only its latest \
                         completed drivers (`spark.deploy.retainedDrivers`, 200 by default) and \
                         none from before a restart without recovery; its stderr may still be \
                         in the work folder of the worker that ran it",
                        self.master
                    ));
                }
                Err(e) => return RunOutput::Unavailable(e.to_string()),
            },
        };
        let Some(worker) = worker else {
            return RunOutput::Unavailable(format!(
                "spark driver {id} has no worker yet (it waits for one): no stderr so far"
            ));
        };
        let ui = view
            .worker_uis
            .get(&worker)
            .cloned()
            .or_else(|| lock(&self.worker_uis).get(&worker).cloned());
        let Some(ui) = ui else {
            return RunOutput::Gone(format!(
                "spark driver {id} ran on worker {worker}, which the master no longer lists: its \
                 stderr is in that worker's work folder ({id}/stderr), if the worker's host kept it"
            ));
        };
        let bytes = (lines as u64)
            .saturating_mul(BYTES_PER_LINE)
            .clamp(BYTES_PER_LINE, MAX_READ);
        let len = bytes.to_string();
        let req = self.http.get(format!("{ui}/log/")).query(&[
            ("driverId", id.as_str()),
            ("logType", "stderr"),
            ("byteLength", &len),
        ]);
        let text = match req.send().await {
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(t) => t,
                Err(e) => return RunOutput::Unavailable(format!("spark worker {ui}: {e}")),
            },
            Ok(r) => {
                return RunOutput::Unavailable(format!(
                    "spark worker {ui}: GET /log/ for driver {id} answered {}",
                    r.status()
                ));
            }
            Err(e) => return RunOutput::Unavailable(format!("spark worker {ui}: {e}")),
        };
        match stderr_of(&text, lines) {
            Some(text) => RunOutput::Kept {
                source: format!("spark driver {id} stderr, from worker {ui}"),
                text,
            },
            None => RunOutput::Gone(format!(
                "spark worker {ui} no longer has the work folder of driver {id} (a worker \
                 deletes ended drivers' folders when `spark.worker.cleanup.enabled`): its \
                 stderr is gone"
            )),
        }
    }
}

/// The last `lines` lines of a worker's log page (`==== Bytes a-b of n of <file> ====` first);
/// `None` when the worker says it has no such driver folder. A read that began inside a line
/// drops that piece.
pub fn stderr_of(page: &str, lines: usize) -> Option<String> {
    let (first, rest) = page.split_once('\n').unwrap_or((page, ""));
    let (header, body) = if first.starts_with("====") {
        (first, rest)
    } else {
        ("", page)
    };
    if body.trim_start().starts_with(NO_FOLDER) {
        return None;
    }
    let from_start = header.strip_prefix("==== Bytes 0-").is_some() || header.is_empty();
    let mut body = body;
    if !from_start {
        body = body.split_once('\n').map_or("", |(_, r)| r);
    }
    let all: Vec<&str> = body.lines().collect();
    let kept = &all[all.len().saturating_sub(lines)..];
    Some(kept.iter().map(|l| format!("{l}\n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_page_gives_its_last_lines_or_says_the_folder_is_gone() {
        let page = "==== Bytes 0-20 of 20 of /w/driver-1/stderr ====\none\ntwo\nthree\n";
        assert_eq!(stderr_of(page, 2).as_deref(), Some("two\nthree\n"));
        assert_eq!(stderr_of(page, 10).as_deref(), Some("one\ntwo\nthree\n"));
        let cut = "==== Bytes 5-20 of 20 of /w/driver-1/stderr ====\nne\ntwo\nthree\n";
        assert_eq!(stderr_of(cut, 10).as_deref(), Some("two\nthree\n"));
        let gone = "==== Bytes 0-0 of 0 of /w/driver-2/stderr ====\n\
                    Error: invalid log directory /w/driver-2/\n";
        assert_eq!(stderr_of(gone, 10), None);
    }
}

//! Asking the workers about a driver the master no longer knows.
//!
//! A master restarted without recovery forgets its drivers, but their processes keep running
//! on the workers until each worker registers with the new master, which then kills the drivers
//! it does not know (Spark 4.3.0 does, a few seconds after its start). A driver the master forgot
//! is therefore only gone when no worker runs it any more; until then it is still the run, so
//! nothing is submitted beside it. A worker's web UI lists its running drivers (its `/json/`
//! does not), under "Running Drivers", before "Finished Drivers".

/// What the workers say about a driver the master does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A worker runs it (its UI's address).
    Running(String),
    /// Every worker asked answered and none runs it.
    Gone,
    /// It cannot be told yet: why.
    Unknown(String),
}

/// Whether a worker's status page lists `driver` among its running drivers.
pub fn runs_driver(page: &str, driver: &str) -> bool {
    let Some(start) = page.find("Running Drivers") else {
        return false;
    };
    let rest = &page[start..];
    let running = match rest.find("Finished Drivers") {
        Some(end) => &rest[..end],
        None => rest,
    };
    running.contains(&format!(">{driver}<"))
}

/// Asks the worker UIs `uis` (their status page, one GET each) whether one runs `driver`.
/// A worker that does not answer makes the answer [`Seen::Unknown`] unless another runs it.
pub async fn ask(http: &reqwest::Client, uis: &[String], driver: &str) -> Seen {
    if uis.is_empty() {
        return Seen::Unknown(
            "the master knows no worker yet (it may have just started)".to_string(),
        );
    }
    let mut silent = Vec::new();
    for ui in uis {
        let page = match http.get(format!("{ui}/")).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        match page {
            Some(p) if runs_driver(&p, driver) => return Seen::Running(ui.clone()),
            Some(_) => {}
            None => silent.push(ui.as_str()),
        }
    }
    if silent.is_empty() {
        Seen::Gone
    } else {
        Seen::Unknown(format!(
            "the web UI of worker {} does not answer",
            silent.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver tables of a Spark 4.3.0 worker's page (trimmed).
    const PAGE: &str = r#"<div class="row"> <!-- Executors and Drivers -->
      <a>Running Drivers (1)</a></h4></span>
      <div class="collapsible-table collapse show" id="aggregated-runningDrivers">
      <table><thead><th width="" class="">DriverID</th></thead><tbody><tr>
      <td>driver-20261203104442-0000</td><td>RUNNING</td></tr></tbody></table></div>
      <a>Finished Drivers (1)</a></h4></span>
      <table><tbody><tr><td>driver-20261203100000-0007</td><td>KILLED</td></tr></tbody></table>"#;

    #[test]
    fn running_drivers_are_read_from_the_workers_page() {
        assert!(runs_driver(PAGE, "driver-20261203104442-0000"));
        assert!(!runs_driver(PAGE, "driver-20261203100000-0007"), "finished");
        assert!(!runs_driver(PAGE, "driver-20261203104442-000"), "a prefix");
        assert!(!runs_driver("<html>nothing</html>", "driver-1"));
    }

    #[tokio::test]
    async fn without_workers_or_answers_it_cannot_be_told() {
        let http = reqwest::Client::new();
        assert!(matches!(ask(&http, &[], "d").await, Seen::Unknown(_)));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        match ask(&http, std::slice::from_ref(&url), "d").await {
            Seen::Unknown(why) => assert!(why.contains(&url), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

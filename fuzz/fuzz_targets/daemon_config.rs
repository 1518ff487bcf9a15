//! Daemon configs: `settings::parse` on arbitrary bytes.
//!
//! Properties: no panic; an error names a place in the input; parsing is deterministic; a
//! valid config needs no restart against itself, resolves a restart policy for each of its
//! envs, and can validate a job file of each env.

#![no_main]

use std::path::Path;

use jobkeeper::event::EventKind;
use jobkeeper::settings;
use jobkeeper::spec::{self, Context, RestartOverride};
use jobkeeper_fuzz::assert_located;
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/etc/jobkeeper/jobkeeper.yaml";

fuzz_target!(|data: &[u8]| {
    let base = Path::new("/etc/jobkeeper");
    let parsed = settings::parse(PATH, data, base);
    assert_eq!(
        parsed,
        settings::parse(PATH, data, base),
        "parsing is deterministic"
    );
    let s = match parsed {
        Ok(s) => s,
        Err(diags) => return assert_located(PATH, data, &diags),
    };
    assert!(settings::needs_restart(&s, &s).is_empty());
    for p in [&s.state_dir]
        .into_iter()
        .chain(&s.secrets_dir)
        .chain(&s.api_token_file)
        .chain(&s.webhook_secret_file)
    {
        assert!(p.is_absolute(), "{} is not absolute", p.display());
    }
    for name in s.envs.keys() {
        let _ = s.restart_policy(name, &RestartOverride::default());
        let job = format!(
            "env: {}\nparams: {{command: [\"true\"]}}\n",
            jobkeeper_fuzz::quoted(name)
        );
        let _ = spec::parse_job(
            "jobs/a.yaml",
            job.as_bytes(),
            Context {
                settings: Some(&s),
                files: None,
            },
        );
    }
    for channel in s.alerts.keys() {
        let _ = s.channel_wants(channel, EventKind::Failed);
    }
});

//! The `yarn` engine with `auth: kerberos` end to end: a REAL MIT KDC (Debian `krb5-kdc`) with
//! short ticket lifetimes, a REAL SPNEGO acceptor (Debian `apache2` with `mod_auth_gssapi`)
//! demanding `Authorization: Negotiate` in front of the STAND-IN ResourceManager
//! (tests/support/yarn_rm.rs: no Hadoop can be installed here) and keeping clients in a
//! `hadoop.auth` session cookie, real keytabs, the real daemon, a REAL Flink 1.20.3 cluster
//! running the job, submitted by the STAND-IN `flink` CLI (tests/support/flink_standin.py).
//!
//! Needs root, the `kerberos` feature (`cargo test --features kerberos --test yarn_kerberos`),
//! `JOBKEEPER_FLINK_1_20_URL` and `JOBKEEPER_FLINK_1_20_LIB`; fails (does not skip) without them.

mod common;
#[path = "support/kerberos.rs"]
mod kerberos;
#[path = "support/yarn_env.rs"]
mod yarn_env;
#[path = "support/yarn_rm.rs"]
mod yarn_rm;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use kerberos::{Kdc, REALM, Spnego};
use yarn_env::*;
use yarn_rm::StandinRm;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Tickets last 12 s and the RM's cookie 6 s: over 30 s of sweeps (one a second) the daemon
/// keeps its cookie between handshakes (a handshake per cookie, not per request), takes new
/// tickets from the keytab when the old ones expire (no error, no `kinit`), and keeps them in
/// its own credential cache under the state folder; the CLI gets the keytab and that cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spnego_to_the_rm_keeps_the_cookie_and_renews_tickets_from_the_keytab() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let kdc = Kdc::start(&tmp.path().join("kdc"), "12s");
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let spnego = Spnego::start(&kdc, rm.port, 6);
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let principal = format!("jobkeeper/ops-1@{REALM}");
    let auth = format!(
        ", auth: kerberos, kerberos: {{principal: \"{principal}\", keytab: \"{}\", krb5_conf: \"{}\"}}",
        kdc.client_keytab().display(),
        kdc.krb5_conf.display()
    );
    let (git, cfg) = setup(tmp.path(), &[spnego.url()], &home, &auth);
    git.write("jobs/secure.yaml", &counter(&lib, &["--tag", "s"]));
    git.commit_push("a job on a kerberized yarn");
    let d = start(tmp.path(), &cfg).await;
    let started = now_s();
    let (run, app, _) = running_app(&d, &rm, &flink, "secure", &[]).await;

    // The RM saw the principal apache authenticated; no user.name was sent.
    let users = rm.with(|s| s.remote_users.clone());
    assert!(
        users.iter().all(|u| *u == principal) && !users.is_empty(),
        "{users:?}"
    );
    assert!(rm.with(|s| s.users.is_empty()));
    // jobkeeper's own cache under the state folder, never the host's.
    let ccache = d.state_dir.join("krb5/jobkeeper_ops-1_TEST.LOCAL.cc");
    assert!(ccache.is_file(), "{}", ccache.display());
    let call = &calls(&home)[0];
    assert_eq!(
        call["env"]["KRB5CCNAME"],
        format!("FILE:{}", ccache.display())
    );
    assert_eq!(
        call["env"]["KRB5_CONFIG"],
        kdc.krb5_conf.display().to_string()
    );
    let argv = call["argv"].to_string();
    assert!(
        argv.contains(&format!(
            "-Dsecurity.kerberos.login.keytab={}",
            kdc.client_keytab().display()
        )),
        "{argv}"
    );
    assert!(
        argv.contains(&format!("-Dsecurity.kerberos.login.principal={principal}")),
        "{argv}"
    );

    // 30 s of sweeps: tickets (12 s) expire twice over and are taken again from the keytab;
    // handshakes follow the cookie's 6 s life, not the requests.
    let (req0, neg0, _) = spnego.counts();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        d.sweeps_pass(1, LIMIT).await;
    }
    let (req1, neg1, _) = spnego.counts();
    let (requests, handshakes) = (req1 - req0, neg1 - neg0);
    eprintln!(
        "steady state: {requests} RM requests, {handshakes} SPNEGO handshakes in 30 s (cookie 6 s, tickets 12 s)"
    );
    assert!(requests >= 25, "{requests} requests in 30 s");
    assert!(
        (2..=8).contains(&handshakes),
        "{handshakes} handshakes for {requests} requests"
    );
    assert!(now_s() - started > 24, "tickets of 12 s outlived twice");
    assert!(
        events_of(&d.store, "engine_unreachable").is_empty(),
        "{:?}",
        events_of(&d.store, "engine_unreachable")
    );
    assert_eq!(
        d.live_runs("secure")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![run]
    );

    // A kill goes through SPNEGO too (the stand-in refuses writes without a user).
    git.remove("jobs/secure.yaml");
    git.commit_push("remove it");
    wait_for("secure stopped", LIMIT, || {
        d.job("secure").is_some_and(|j| j.state == "stopped")
    })
    .await;
    wait_for("app over", LIMIT, || {
        rm.app(&app).is_some_and(|a| a.state != "RUNNING")
    })
    .await;
}

/// A keytab that is not there, and a principal the KDC does not know: each env's job gets a
/// clear event naming the cause, and a job running on a good env is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_keytab_and_a_wrong_principal_are_named_and_nothing_running_stops() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let kdc = Kdc::start(&tmp.path().join("kdc"), "1h");
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let spnego = Spnego::start(&kdc, rm.port, 3600);
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let good = format!(
        ", auth: kerberos, kerberos: {{principal: \"jobkeeper/ops-1@{REALM}\", keytab: \"{}\", krb5_conf: \"{}\"}}",
        kdc.client_keytab().display(),
        kdc.krb5_conf.display()
    );
    let (git, cfg) = setup(tmp.path(), &[spnego.url()], &home, &good);
    let env = |name: &str, principal: &str, keytab: &str| {
        format!(
            "  {name}:\n    engine: yarn\n    yarn: {{rm: [\"{}\"], flink_home: \"{}\", accepted_timeout: 4s, auth: kerberos, \
             kerberos: {{principal: \"{principal}\", keytab: \"{keytab}\", krb5_conf: \"{}\"}}}}\n",
            spnego.url(),
            home.display(),
            kdc.krb5_conf.display()
        )
    };
    let missing = tmp.path().join("nowhere/jk.keytab");
    let cfg = cfg.replace(
        "health: {interval: 1s}\n",
        &format!(
            "{}{}health: {{interval: 1s}}\n",
            env(
                "nokeytab",
                &format!("jobkeeper/ops-1@{REALM}"),
                &missing.display().to_string()
            ),
            env(
                "stranger",
                &format!("nobody/else@{REALM}"),
                &kdc.client_keytab().display().to_string()
            ),
        ),
    );
    git.write("jobs/good.yaml", &counter(&lib, &["--tag", "g"]));
    git.commit_push("a good job");
    let d = start(tmp.path(), &cfg).await;
    let (run, app, _) = running_app(&d, &rm, &flink, "good", &[]).await;

    git.write(
        "jobs/a.yaml",
        &counter(&lib, &["--tag", "a"]).replace("env: yarn", "env: nokeytab"),
    );
    git.write(
        "jobs/b.yaml",
        &counter(&lib, &["--tag", "b"]).replace("env: yarn", "env: stranger"),
    );
    git.commit_push("two jobs on broken envs");
    wait_for("deploy_failed of a", LIMIT, || {
        d.has_event("a", "deploy_failed")
    })
    .await;
    let e = d
        .events("a")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        e.message.contains(&format!(
            "kerberos: cannot read the keytab {}",
            missing.display()
        )),
        "{}",
        e.message
    );
    wait_for("engine_unreachable naming the principal", LIMIT, || {
        events_of(&d.store, "engine_unreachable")
            .iter()
            .any(|e| e.message.contains("nobody/else@TEST.LOCAL"))
    })
    .await;
    let e = events_of(&d.store, "engine_unreachable")
        .into_iter()
        .find(|e| e.message.contains("nobody/else"))
        .unwrap();
    assert!(
        e.message
            .contains("kerberos: no SPNEGO token for HTTP@localhost as nobody/else@TEST.LOCAL"),
        "{}",
        e.message
    );
    assert!(
        rm.apps_named("a").is_empty() && rm.apps_named("b").is_empty(),
        "nothing submitted"
    );
    d.sweeps_pass(2, LIMIT).await;
    assert_eq!(
        d.live_runs("good").iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run]
    );
    assert_eq!(rm.app(&app).unwrap().state, "RUNNING");
    assert!(!d.has_event("good", "failed"));
}

/// A JobManager that demands SPNEGO (REAL apache2 + `mod_auth_gssapi` in front of the REAL Flink
/// 1.20.3 REST API, registered as the application's address; the RM behind its own gateway):
/// the sweeps' figures, the upgrade's stop-with-savepoint and its checkpoints all go through
/// with tokens from the env's keytab, then with the gateway's session cookie. (Failed before:
/// every JobManager request got 401 and the upgrade never took its savepoint.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobmanager_demanding_spnego_is_answered_with_the_env_s_tickets() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let kdc = Kdc::start(&tmp.path().join("kdc"), "1h");
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let rm_gate = Spnego::start(&kdc, rm.port, 3600);
    let flink_port: u16 = flink.rsplit(':').next().unwrap().parse().unwrap();
    let jm_gate = Spnego::start(&kdc, flink_port, 3600);
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    set_am(&home, Some(&format!("localhost:{}", jm_gate.port)));
    let auth = format!(
        ", auth: kerberos, kerberos: {{principal: \"jobkeeper/ops-1@{REALM}\", keytab: \"{}\", krb5_conf: \"{}\"}}",
        kdc.client_keytab().display(),
        kdc.krb5_conf.display()
    );
    let (git, cfg) = setup(tmp.path(), &[rm_gate.url()], &home, &auth);
    git.write("jobs/guarded.yaml", &counter(&lib, &["--tag", "v1"]));
    git.commit_push("a job whose JobManager demands SPNEGO");
    let d = start(tmp.path(), &cfg).await;
    let (_, app1, _) = running_app(&d, &rm, &flink, "guarded", &[]).await;
    assert_eq!(
        rm.app(&app1).unwrap().am_rpc,
        format!("localhost:{}", jm_gate.port)
    );
    d.sweeps_pass(3, LIMIT).await;

    git.write("jobs/guarded.yaml", &counter(&lib, &["--tag", "v2"]));
    git.commit_push("upgrade");
    let (_, app2, jid2) =
        running_app(&d, &rm, &flink, "guarded", std::slice::from_ref(&app1)).await;
    assert_ne!(app1, app2);
    let restored = common::flink::restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    let sps = d.store.savepoints("guarded", 10).unwrap();
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str())
    );
    let (requests, negotiated, refused) = jm_gate.counts();
    eprintln!(
        "JobManager gateway: {requests} requests, {negotiated} with a token, {refused} answered 401"
    );
    assert!(negotiated >= 1, "{negotiated} tokens");
    assert!(
        requests > negotiated + refused,
        "the session cookie carried requests without a token: {requests} requests, \
         {negotiated} tokens, {refused} refused"
    );
    let log = std::fs::read_to_string(jm_gate.dir.join("access.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with("20") && l.contains(" POST /jobs/") && l.contains("/stop ")),
        "the stop-with-savepoint went through the gateway:\n{log}"
    );
}

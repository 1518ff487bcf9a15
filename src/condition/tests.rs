//! Every condition, raised by its cause and cleared the moment the cause is gone.

use super::*;

fn place(env: &str, cluster: &str, version: &str) -> Place {
    Place {
        env: Some(env.into()),
        engine: Some("flink".into()),
        cluster: Some(cluster.into()),
        version: Some(version.into()),
    }
}

fn kinds(f: &Facts<'_>) -> Vec<ConditionKind> {
    derive(f).iter().map(Condition::kind).collect()
}

/// One row: the facts that raise a condition, and the facts (one change) that clear it.
struct Row<'a> {
    name: &'a str,
    raised: Facts<'a>,
    cleared: Facts<'a>,
    kind: ConditionKind,
}

#[test]
fn every_condition_is_raised_by_its_cause_and_cleared_when_the_cause_is_gone() {
    let flink = place("flink", "http://a", "2.3.0");
    let flink_1_20 = place("flink-1-20", "http://b", "1.20.3");
    let moved_url = place("flink", "http://c", "2.3.0");
    let deploy = Failure {
        hash: "h2".into(),
        commit: Some("c2".into()),
        stage: Stage::Deploy,
        reason: "unknown option --mode bogus".into(),
    };
    let build = Failure {
        stage: Stage::Build,
        ..deploy.clone()
    };
    let moved = Failure {
        hash: "h1".into(),
        stage: Stage::Move,
        ..deploy.clone()
    };
    let running = |place| RunFacts {
        run_id: 7,
        spec_hash: "h1",
        place,
    };
    let base = Facts {
        state: Some(JobState::Running),
        desired_hash: Some("h1"),
        applied_hash: Some("h1"),
        running: Some(running(&flink)),
        file: Some(&flink),
        ..Facts::default()
    };
    let asks_h2 = Facts {
        desired_hash: Some("h2"),
        ..base.clone()
    };
    let drift = Incidents {
        drift: Some(Incident {
            run_id: 7,
            what: "parallelism 4 → 2".into(),
        }),
        unhealthy: None,
    };
    let unhealthy = Incidents {
        drift: None,
        unhealthy: Some(Incident {
            run_id: 7,
            what: "checkpoint 5 min old".into(),
        }),
    };
    let rows = [
        Row {
            name: "an invalid latest file; fixed",
            raised: Facts {
                invalid: Some("jobs/a.yaml:1:1: bad"),
                ..base.clone()
            },
            cleared: base.clone(),
            kind: ConditionKind::Invalid,
        },
        Row {
            name: "a version that did not build; reverted to what runs",
            raised: Facts {
                failed: Some(&build),
                ..asks_h2.clone()
            },
            cleared: Facts {
                failed: Some(&build),
                ..base.clone()
            },
            kind: ConditionKind::BuildFailed,
        },
        Row {
            name: "a refused version (`--mode bogus`); `git revert`",
            raised: Facts {
                failed: Some(&deploy),
                ..asks_h2.clone()
            },
            cleared: Facts {
                failed: Some(&deploy),
                ..base.clone()
            },
            kind: ConditionKind::DeployFailed,
        },
        Row {
            name: "a refused version; a newer commit deploys",
            raised: Facts {
                failed: Some(&deploy),
                ..asks_h2.clone()
            },
            cleared: Facts {
                failed: Some(&deploy),
                desired_hash: Some("h3"),
                applied_hash: Some("h3"),
                running: Some(RunFacts {
                    run_id: 8,
                    spec_hash: "h3",
                    place: &flink,
                }),
                ..base.clone()
            },
            kind: ConditionKind::DeployFailed,
        },
        Row {
            name: "a refused move to flink-1-20; env reverted to flink",
            raised: Facts {
                failed: Some(&deploy),
                file: Some(&flink_1_20),
                ..asks_h2.clone()
            },
            cleared: Facts {
                failed: Some(&deploy),
                ..base.clone()
            },
            kind: ConditionKind::DeployFailed,
        },
        Row {
            name: "an env's new cluster refused the job; the env names the old cluster again",
            raised: Facts {
                failed: Some(&moved),
                file: Some(&moved_url),
                ..base.clone()
            },
            cleared: Facts {
                failed: Some(&moved),
                ..base.clone()
            },
            kind: ConditionKind::DeployFailed,
        },
        Row {
            name: "a rolled back version; reverted",
            raised: Facts {
                refused: Some(Refused {
                    hash: "h2",
                    commit: Some("c2"),
                    reason: Some("rolled back: exit 3"),
                }),
                ..asks_h2.clone()
            },
            cleared: Facts {
                refused: Some(Refused {
                    hash: "h2",
                    commit: Some("c2"),
                    reason: Some("rolled back: exit 3"),
                }),
                ..base.clone()
            },
            kind: ConditionKind::RolledBack,
        },
        Row {
            name: "a run rescaled outside; a new run",
            raised: Facts {
                incidents: Some(&drift),
                ..base.clone()
            },
            cleared: Facts {
                incidents: Some(&drift),
                running: Some(RunFacts {
                    run_id: 8,
                    ..running(&flink)
                }),
                ..base.clone()
            },
            kind: ConditionKind::Drift,
        },
        Row {
            name: "an unhealthy run stopped; a later run starts",
            raised: Facts {
                incidents: Some(&unhealthy),
                running: None,
                ..base.clone()
            },
            cleared: Facts {
                incidents: Some(&unhealthy),
                running: Some(RunFacts {
                    run_id: 8,
                    ..running(&flink)
                }),
                ..base.clone()
            },
            kind: ConditionKind::Unhealthy,
        },
        Row {
            name: "the restart policy gave up; a restart",
            raised: Facts {
                state: Some(JobState::GaveUp),
                running: None,
                ..base.clone()
            },
            cleared: base.clone(),
            kind: ConditionKind::GaveUp,
        },
        Row {
            name: "changes held; released",
            raised: Facts {
                held: Some("max_removals"),
                ..base.clone()
            },
            cleared: base.clone(),
            kind: ConditionKind::Held,
        },
        Row {
            name: "its cluster does not answer; it answers",
            raised: Facts {
                engine_down: Some("flink cluster http://a"),
                ..base.clone()
            },
            cleared: base.clone(),
            kind: ConditionKind::WaitingOnEngine,
        },
        Row {
            name: "the host's disk is full; space again",
            raised: Facts {
                host_fault: Some("no space left on device"),
                ..base.clone()
            },
            cleared: base.clone(),
            kind: ConditionKind::WaitingOnHost,
        },
    ];
    let mut covered: Vec<ConditionKind> = rows.iter().map(|r| r.kind).collect();
    covered.sort();
    covered.dedup();
    assert_eq!(covered, ConditionKind::ALL, "every condition has a row");
    assert!(kinds(&base).is_empty(), "nothing wrong");
    for row in &rows {
        assert_eq!(kinds(&row.raised), [row.kind], "{}: raised", row.name);
        assert!(
            kinds(&row.cleared).is_empty(),
            "{}: cleared: {:?}",
            row.name,
            derive(&row.cleared)
        );
    }
}

#[test]
fn a_refused_move_says_where_the_job_runs_in_one_phrase() {
    let flink = place("flink", "http://a", "2.3.0");
    let flink_1_20 = place("flink-1-20", "http://b", "1.20.3");
    let failed = Failure {
        hash: "h2".into(),
        commit: Some("c2".into()),
        stage: Stage::Deploy,
        reason: "Flink 1.20.3 cannot read a savepoint taken on 2.3.0".into(),
    };
    let facts = Facts {
        desired_hash: Some("h2"),
        applied_hash: Some("h1"),
        running: Some(RunFacts {
            run_id: 1,
            spec_hash: "h1",
            place: &flink,
        }),
        file: Some(&flink_1_20),
        failed: Some(&failed),
        ..Facts::default()
    };
    let conditions = derive(&facts);
    let Condition::DeployFailed {
        moved,
        runs_elsewhere,
        ..
    } = &conditions[0]
    else {
        panic!("{conditions:?}");
    };
    assert!(moved);
    assert_eq!(runs_elsewhere.as_ref(), Some(&flink));
    assert_eq!(
        place_phrase(&flink, &flink_1_20, &conditions).as_deref(),
        Some("runs on flink (2.3.0); the file asks for flink-1-20: the move was refused")
    );
    assert_eq!(place_phrase(&flink, &flink, &conditions), None);
    let json = serde_json::to_value(&conditions[0]).unwrap();
    assert_eq!(json["kind"], "deploy_failed");
    assert_eq!(json["runs_elsewhere"]["version"], "2.3.0");
}

#[test]
fn rolled_back_is_shown_only_while_its_condition_holds() {
    assert_eq!(
        shown_state(JobState::RolledBack, &[], true),
        JobState::Running
    );
    let held = [Condition::RolledBack {
        bad_commit: None,
        reason: None,
    }];
    assert_eq!(
        shown_state(JobState::RolledBack, &held, true),
        JobState::RolledBack
    );
}

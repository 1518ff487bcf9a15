//! The store updates of a commit as a table: each row is a change against what was applied,
//! and the desired update, event note and poke it gives.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::diag::Diagnostic;
use crate::spec::{Overlap, Params, RestartOverride, Upgrade};

fn spec(command: &str) -> JobSpec {
    JobSpec {
        sql: None,
        adopt: None,
        savepoints: Default::default(),
        restore: None,
        max_checkpoint_age: None,
        project: None,
        env: "dev".into(),
        params: Params {
            command: vec![command.into()],
            ..Params::default()
        },
        schedule: None,
        overlap: Overlap::Forbid,
        timeout: None,
        restart: RestartOverride::default(),
        upgrade: Upgrade::Savepoint,
        alerts: None,
        suspend: false,
        guard: Default::default(),
    }
}

fn upsert(name: &str, spec: Result<JobSpec, Vec<Diagnostic>>) -> Change {
    Change::Upsert {
        name: name.into(),
        path: format!("jobs/{name}.yaml"),
        spec,
    }
}

fn bad(name: &str) -> Result<JobSpec, Vec<Diagnostic>> {
    Err(vec![Diagnostic::new(
        format!("jobs/{name}.yaml"),
        3,
        5,
        "unknown field `comand`",
    )])
}

/// An update in a form a table row can name: (kind, job, detail).
fn shape(u: &DesiredUpdate) -> (&'static str, String, String) {
    match u {
        DesiredUpdate::Spec {
            name, spec, hash, ..
        } => {
            assert_eq!(hash, &spec_hash(spec), "the hash is the spec's");
            ("spec", name.clone(), spec.clone())
        }
        DesiredUpdate::Invalid { name, errors, .. } => ("invalid", name.clone(), errors.clone()),
        DesiredUpdate::Removed { name } => ("removed", name.clone(), String::new()),
    }
}

struct Row {
    what: &'static str,
    applied: Option<JobSpec>,
    change: Change,
    update: &'static str,
    detail: &'static str,
    note: &'static str,
    message: &'static str,
    poked: bool,
}

#[test]
fn each_change_gives_its_update_note_and_poke() {
    let rows = vec![
        Row {
            what: "added file",
            applied: None,
            change: upsert("a", Ok(spec("run"))),
            update: "spec",
            detail: "\"command\":[\"run\"]",
            note: "planned",
            message: "add: new service job in env `dev`",
            poked: true,
        },
        Row {
            what: "changed file",
            applied: Some(spec("run")),
            change: upsert("a", Ok(spec("run2"))),
            update: "spec",
            detail: "\"command\":[\"run2\"]",
            note: "planned",
            message: "redeploy: ",
            poked: true,
        },
        Row {
            what: "file changed, job unchanged",
            applied: Some(spec("run")),
            change: upsert("a", Ok(spec("run"))),
            update: "spec",
            detail: "\"command\":[\"run\"]",
            note: "planned",
            message: "unchanged: the file changed, not what it asks for",
            poked: true,
        },
        Row {
            what: "removed file of a running job",
            applied: Some(spec("run")),
            change: Change::Remove {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
            },
            update: "removed",
            detail: "",
            note: "planned",
            message: "remove: job file removed: the job is stopped, its history kept",
            poked: true,
        },
        Row {
            what: "removed file of a job never applied",
            applied: None,
            change: Change::Remove {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
            },
            update: "removed",
            detail: "",
            note: "planned",
            message: "remove: job file removed (it was not running)",
            poked: true,
        },
        Row {
            what: "invalid new file",
            applied: None,
            change: upsert("a", bad("a")),
            update: "invalid",
            detail: "jobs/a.yaml:3:5: unknown field `comand`",
            note: "invalid",
            message: "job file is invalid: the job is not started\njobs/a.yaml:3:5: unknown field `comand`",
            poked: false,
        },
        Row {
            what: "invalid file of a job that had a valid version",
            applied: Some(spec("run")),
            change: upsert("a", bad("a")),
            update: "invalid",
            detail: "jobs/a.yaml:3:5: unknown field `comand`",
            note: "invalid",
            message: "job file is invalid: the previous version keeps running untouched\njobs/a.yaml:3:5",
            poked: false,
        },
    ];
    for row in rows {
        let applied: BTreeMap<String, JobSpec> = row
            .applied
            .into_iter()
            .map(|s| ("a".to_string(), s))
            .collect();
        let changes = vec![row.change];
        let out = store_updates(&changes, &plan::plan(&applied, &changes));
        let what = row.what;
        assert_eq!(out.updates.len(), 1, "{what}");
        let (kind, job, detail) = shape(&out.updates[0]);
        assert_eq!((kind, job.as_str()), (row.update, "a"), "{what}");
        assert!(detail.contains(row.detail), "{what}: {detail}");
        assert_eq!(out.notes.len(), 1, "{what}");
        let (job, note) = &out.notes[0];
        let message = note.message();
        assert_eq!(
            (job.as_str(), note.kind().as_str()),
            ("a", row.note),
            "{what}"
        );
        assert!(message.starts_with(row.message), "{what}: {message}");
        let poked: Vec<String> = if row.poked { vec!["a".into()] } else { vec![] };
        assert_eq!(out.poke, poked, "{what}");
    }
}

#[test]
fn a_commit_of_several_jobs_keeps_change_order_for_updates_and_plan_order_for_notes() {
    let changes = vec![
        upsert("b", Ok(spec("run"))),
        upsert("a", bad("a")),
        Change::Remove {
            name: "c".into(),
            path: "jobs/c.yaml".into(),
        },
    ];
    let out = store_updates(&changes, &plan::plan(&BTreeMap::new(), &changes));
    let updates: Vec<_> = out
        .updates
        .iter()
        .map(|u| (shape(u).0, shape(u).1))
        .collect();
    assert_eq!(
        updates,
        [
            ("spec", "b".to_string()),
            ("invalid", "a".to_string()),
            ("removed", "c".to_string())
        ]
    );
    let notes: Vec<_> = out
        .notes
        .iter()
        .map(|(j, e)| (j.as_str(), e.kind().as_str()))
        .collect();
    assert_eq!(
        notes,
        [("a", "invalid"), ("b", "planned"), ("c", "planned")]
    );
    assert_eq!(out.poke, ["b", "c"]);
}

#[test]
fn an_empty_commit_writes_nothing() {
    let out = store_updates(&[], &Plan::default());
    assert!(out.updates.is_empty() && out.notes.is_empty() && out.poke.is_empty());
}

#[test]
fn without_a_known_base_stored_jobs_missing_from_the_tip_are_removed() {
    let stored = |name: &str, desired: bool| StoredJob {
        name: name.into(),
        path: format!("jobs/{name}.yaml"),
        desired,
    };
    let present: HashSet<String> = ["kept".to_string()].into();
    let gone = removed_jobs(
        &present,
        &[
            stored("kept", true),
            stored("gone", true),
            stored("removed-before", false),
        ],
    );
    let names: Vec<(&str, &str)> = gone
        .iter()
        .map(|c| match c {
            Change::Remove { name, path } => (name.as_str(), path.as_str()),
            Change::Upsert { .. } => panic!("only removals"),
        })
        .collect();
    assert_eq!(names, [("gone", "jobs/gone.yaml")]);
}

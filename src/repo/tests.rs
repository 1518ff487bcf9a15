//! Tests against real repositories made with the `git` command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use git2::Oid;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::settings::RepoSettings;

/// Runs `git` in `dir` with a fixed identity and no user config; returns trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-c")
        .arg("init.defaultBranch=main")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada Tester")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Tester")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bare "origin" and a clone of it to commit in.
struct Fixture {
    tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let bare = tmp.path().join("origin.git");
        let work = tmp.path().join("work");
        git(tmp.path(), &["init", "-q", "--bare", "origin.git"]);
        git(tmp.path(), &["init", "-q", "work"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Fixture { tmp, bare, work }
    }

    /// Writes (`Some`) or deletes (`None`) files, commits everything, returns the commit id.
    fn commit(&self, files: &[(&str, Option<&str>)], msg: &str) -> Oid {
        for (path, content) in files {
            let p = self.work.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, c).unwrap();
                }
                None => std::fs::remove_file(&p).unwrap(),
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        Oid::from_str(&git(&self.work, &["rev-parse", "HEAD"])).unwrap()
    }

    fn push(&self) {
        git(
            &self.work,
            &["push", "-q", "--force", "origin", "HEAD:main"],
        );
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
}

fn settings(url: &str) -> RepoSettings {
    RepoSettings {
        url: url.to_string(),
        branch: "main".to_string(),
        path: "jobs".to_string(),
        poll: Duration::from_secs(3600),
        ssh_key: None,
        token_file: None,
    }
}

fn rels(files: &[JobFile]) -> Vec<&str> {
    files.iter().map(|f| f.rel_path.as_str()).collect()
}

/// `+a`, `~a`, `-a` for added, modified, deleted.
fn summary(changes: &[JobFileChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            JobFileChange::Added(f) => format!("+{}", f.rel_path),
            JobFileChange::Modified { old, new } => {
                assert_eq!(old.rel_path, new.rel_path);
                assert_ne!(old.blob, new.blob);
                format!("~{}", new.rel_path)
            }
            JobFileChange::Deleted(f) => format!("-{}", f.rel_path),
        })
        .collect()
}

#[test]
fn fetch_from_bare_path_lists_nested_job_files() {
    let fx = Fixture::new();
    let tip = fx.commit(
        &[
            ("jobs/a.yaml", Some("env: dev\n")),
            ("jobs/team-a/x.yml", Some("env: prod\n")),
            ("jobs/team-a/deep/y.yaml", Some("env: prod\n")),
            ("jobs/README.md", Some("not a job\n")),
            ("other/z.yaml", Some("outside\n")),
        ],
        "First jobs\n\nWith a body.",
    );
    fx.push();
    let repo = ConfigRepo::open(&settings(fx.bare.to_str().unwrap()), &fx.state()).unwrap();
    assert!(fx.state().join("repos/config.git/HEAD").exists());
    assert_eq!(repo.tip(), None);
    assert_eq!(repo.fetch().unwrap(), tip);
    assert_eq!(repo.tip(), Some(tip));

    let files = repo.list_job_files(tip, "jobs").unwrap();
    assert_eq!(
        rels(&files),
        ["a.yaml", "team-a/deep/y.yaml", "team-a/x.yml"]
    );
    assert_eq!(files[2].repo_path, "jobs/team-a/x.yml");
    assert_eq!(repo.read_blob(files[2].blob).unwrap(), b"env: prod\n");
    assert_eq!(repo.tree().blob_size(files[0].blob).unwrap(), 9);
    // Other spellings of the folder, and the root.
    assert_eq!(repo.list_job_files(tip, "/jobs/").unwrap(), files);
    assert_eq!(repo.list_job_files(tip, "./jobs").unwrap(), files);
    assert_eq!(repo.list_job_files(tip, "").unwrap().len(), 4);
    assert!(repo.list_job_files(tip, "nope").unwrap().is_empty());
    assert!(repo.list_job_files(tip, "jobs/a.yaml").unwrap().is_empty());

    let info = repo.commit_info(tip).unwrap();
    assert_eq!(info.id, tip.to_string());
    assert_eq!(info.short, tip.to_string()[..8]);
    assert_eq!(info.author, "Ada Tester <ada@example.com>");
    assert_eq!(info.subject, "First jobs");
    assert!(info.time > 1_600_000_000);
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["subject"], "First jobs");
}

#[test]
fn fetch_from_work_tree_sees_committed_state_only() {
    let fx = Fixture::new();
    let tip = fx.commit(&[("jobs/a.yaml", Some("v1\n"))], "one");
    // Uncommitted edits and new files are not part of the branch.
    std::fs::write(fx.work.join("jobs/a.yaml"), "dirty\n").unwrap();
    std::fs::write(fx.work.join("jobs/b.yaml"), "untracked\n").unwrap();
    let repo = ConfigRepo::open(&settings(fx.work.to_str().unwrap()), &fx.state()).unwrap();
    assert_eq!(repo.fetch().unwrap(), tip);
    let files = repo.list_job_files(tip, "jobs").unwrap();
    assert_eq!(rels(&files), ["a.yaml"]);
    assert_eq!(repo.read_blob(files[0].blob).unwrap(), b"v1\n");
}

#[test]
fn fetch_from_file_url() {
    let fx = Fixture::new();
    let tip = fx.commit(&[("jobs/a.yaml", Some("v1\n"))], "one");
    fx.push();
    let url = format!("file://{}", fx.bare.display());
    let repo = ConfigRepo::open(&settings(&url), &fx.state()).unwrap();
    assert_eq!(repo.fetch().unwrap(), tip);
}

#[test]
fn second_fetch_is_incremental() {
    let fx = Fixture::new();
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("jobs/job-{i}.yaml"), format!("env: dev\nn: {i}\n")))
        .collect();
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    fx.commit(&refs, "many");
    fx.push();
    let repo = ConfigRepo::open(&settings(fx.bare.to_str().unwrap()), &fx.state()).unwrap();
    let (first, received) = repo.fetch_counted().unwrap();
    assert!(received >= 52, "first fetch received {received} objects");

    let (again, received) = repo.fetch_counted().unwrap();
    assert_eq!(
        (again, received),
        (first, 0),
        "nothing new, nothing received"
    );

    let second = fx.commit(&[("jobs/job-7.yaml", Some("env: prod\n"))], "one change");
    fx.push();
    let (tip, received) = repo.fetch_counted().unwrap();
    assert_eq!(tip, second);
    // The commit, the root tree, the jobs tree and the blob.
    assert!(received <= 4, "second fetch received {received} objects");
    let changes = repo.diff_job_files(Some(first), second, "jobs").unwrap();
    assert_eq!(summary(&changes), ["~job-7.yaml"]);
}

#[test]
fn force_push_still_diffs_against_the_applied_commit() {
    let fx = Fixture::new();
    let base = fx.commit(
        &[("jobs/a.yaml", Some("a1\n")), ("jobs/b.yaml", Some("b1\n"))],
        "base",
    );
    let applied = fx.commit(&[("jobs/a.yaml", Some("a2\n"))], "change a");
    fx.push();
    let repo = ConfigRepo::open(&settings(fx.bare.to_str().unwrap()), &fx.state()).unwrap();
    assert_eq!(repo.fetch().unwrap(), applied);

    // Rewrite history: drop `applied`, build something else on `base`, force-push.
    git(&fx.work, &["reset", "-q", "--hard", &base.to_string()]);
    let rewritten = fx.commit(
        &[("jobs/b.yaml", None), ("jobs/c.yaml", Some("c1\n"))],
        "rewrite",
    );
    fx.push();
    assert_eq!(repo.fetch().unwrap(), rewritten);
    let changes = repo
        .diff_job_files(Some(applied), rewritten, "jobs")
        .unwrap();
    assert_eq!(summary(&changes), ["~a.yaml", "-b.yaml", "+c.yaml"]);
    // The old commit is still readable from the mirror.
    assert_eq!(repo.commit_info(applied).unwrap().subject, "change a");
}

#[test]
fn diff_sees_adds_modifies_deletes_and_renames_below_the_folder_only() {
    let fx = Fixture::new();
    let from = fx.commit(
        &[
            ("jobs/keep.yaml", Some("same\n")),
            ("jobs/edit.yaml", Some("old\n")),
            ("jobs/gone.yml", Some("bye\n")),
            ("jobs/team-a/old-name.yaml", Some("moving\n")),
            ("jobs/notes.txt", Some("n1\n")),
            ("src/x.yaml", Some("s1\n")),
        ],
        "before",
    );
    let to = fx.commit(
        &[
            ("jobs/edit.yaml", Some("new\n")),
            ("jobs/gone.yml", None),
            ("jobs/team-a/old-name.yaml", None),
            ("jobs/team-b/new-name.yaml", Some("moving\n")),
            ("jobs/team-a/nested/added.yaml", Some("hi\n")),
            ("jobs/notes.txt", Some("n2\n")),
            ("src/x.yaml", Some("s2\n")),
            ("src/y.yaml", Some("s3\n")),
        ],
        "after",
    );
    let tree = open_existing(&fx.work).unwrap();
    let changes = tree.diff_job_files(Some(from), to, "jobs").unwrap();
    assert_eq!(
        summary(&changes),
        [
            "~edit.yaml",
            "-gone.yml",
            "+team-a/nested/added.yaml",
            "-team-a/old-name.yaml",
            "+team-b/new-name.yaml"
        ]
    );
    let JobFileChange::Added(added) = &changes[2] else {
        panic!("{changes:?}")
    };
    assert_eq!(added.repo_path, "jobs/team-a/nested/added.yaml");
    assert_eq!(tree.read_blob(added.blob).unwrap(), b"hi\n");

    // One walk of the whole repo gives the same job files and the other changed files (not
    // job files) from the root; YAML files outside jobs/ are neither.
    for (a, b) in [(Some(from), to), (Some(to), from), (None, from)] {
        let both = tree.diff_files(a, b, "jobs").unwrap();
        assert_eq!(both.jobs, tree.diff_job_files(a, b, "jobs").unwrap());
    }
    assert_eq!(
        tree.diff_files(Some(from), to, "jobs").unwrap().others,
        ["jobs/notes.txt"]
    );
    assert_eq!(
        summary(&tree.diff_files(Some(from), to, "").unwrap().jobs),
        [
            "~jobs/edit.yaml",
            "-jobs/gone.yml",
            "+jobs/team-a/nested/added.yaml",
            "-jobs/team-a/old-name.yaml",
            "+jobs/team-b/new-name.yaml",
            "~src/x.yaml",
            "+src/y.yaml"
        ]
    );

    // Nothing changed below jobs/: no changes.
    let outside = fx.commit(&[("src/z.yaml", Some("z\n"))], "outside");
    assert!(
        tree.diff_job_files(Some(to), outside, "jobs")
            .unwrap()
            .is_empty()
    );
    // Everything is added when there is no applied commit.
    assert_eq!(
        summary(&tree.diff_job_files(None, from, "jobs").unwrap()),
        [
            "+edit.yaml",
            "+gone.yml",
            "+keep.yaml",
            "+team-a/old-name.yaml"
        ]
    );
    // Backwards works too (`from` need not be an ancestor).
    assert_eq!(
        summary(&tree.diff_job_files(Some(to), from, "jobs").unwrap()),
        [
            "~edit.yaml",
            "+gone.yml",
            "-team-a/nested/added.yaml",
            "+team-a/old-name.yaml",
            "-team-b/new-name.yaml"
        ]
    );
}

#[test]
fn diff_when_the_folder_appears_or_disappears() {
    let fx = Fixture::new();
    let empty = fx.commit(&[("README.md", Some("x\n"))], "no jobs yet");
    let with = fx.commit(&[("jobs/a.yaml", Some("a\n"))], "jobs");
    let without = fx.commit(&[("jobs/a.yaml", None)], "no jobs");
    let tree = open_existing(&fx.work).unwrap();
    assert!(tree.diff_job_files(None, empty, "jobs").unwrap().is_empty());
    assert_eq!(
        summary(&tree.diff_job_files(Some(empty), with, "jobs").unwrap()),
        ["+a.yaml"]
    );
    assert_eq!(
        summary(&tree.diff_job_files(Some(with), without, "jobs").unwrap()),
        ["-a.yaml"]
    );
}

#[test]
fn resolve_rev_takes_any_revspec() {
    let fx = Fixture::new();
    let first = fx.commit(&[("jobs/a.yaml", Some("a\n"))], "first");
    git(&fx.work, &["tag", "-a", "-m", "release", "v1"]);
    fx.push();
    git(&fx.work, &["fetch", "-q", "origin"]);
    let second = fx.commit(&[("jobs/a.yaml", Some("b\n"))], "second");
    let tree = open_existing(&fx.work.join("jobs")).unwrap();
    assert_eq!(tree.resolve_rev("HEAD").unwrap(), second);
    assert_eq!(tree.resolve_rev("main").unwrap(), second);
    assert_eq!(tree.resolve_rev("HEAD~1").unwrap(), first);
    assert_eq!(tree.resolve_rev("v1").unwrap(), first);
    assert_eq!(tree.resolve_rev("origin/main").unwrap(), first);
    assert_eq!(tree.resolve_rev(&first.to_string()[..10]).unwrap(), first);
    let err = tree.resolve_rev("no-such-branch").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
    let err = open_existing(fx.tmp.path()).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn missing_branch_is_not_found() {
    let fx = Fixture::new();
    fx.commit(&[("jobs/a.yaml", Some("a\n"))], "first");
    fx.push();
    let mut s = settings(fx.bare.to_str().unwrap());
    s.branch = "release".to_string();
    let repo = ConfigRepo::open(&s, &fx.state()).unwrap();
    let err = repo.fetch().unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("branch `release`") && msg.contains("origin.git"),
        "{msg}"
    );
}

#[test]
fn unreachable_sources_are_unreachable_and_hide_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere.git");
    let repo = ConfigRepo::open(&settings(missing.to_str().unwrap()), tmp.path()).unwrap();
    let err = repo.fetch().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains("nowhere.git"), "{err}");
    // Not "unsupported URL protocol", as libgit2 puts it.
    assert!(
        err.to_string()
            .ends_with("nowhere.git: the path does not exist"),
        "{err}"
    );

    // Nothing listens on port 1.
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let mut s = settings("https://deploy:s3cret@127.0.0.1:1/ops/jobs.git");
    s.token_file = Some(token_file);
    let repo = ConfigRepo::open(&s, &tmp.path().join("b")).unwrap();
    let err = repo.fetch().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("s3cret") && !msg.contains("tok-123"), "{msg}");
    assert!(msg.contains("127.0.0.1:1/ops/jobs.git"), "{msg}");
}

#[test]
fn a_changed_url_updates_the_mirror_without_recloning() {
    let a = Fixture::new();
    let tip_a = a.commit(&[("jobs/a.yaml", Some("a\n"))], "a");
    a.push();
    let b = Fixture::new();
    let tip_b = b.commit(&[("jobs/b.yaml", Some("b\n"))], "b");
    b.push();
    let state = a.state();
    let repo = ConfigRepo::open(&settings(a.bare.to_str().unwrap()), &state).unwrap();
    assert_eq!(repo.fetch().unwrap(), tip_a);
    drop(repo);
    let repo = ConfigRepo::open(&settings(b.bare.to_str().unwrap()), &state).unwrap();
    assert_eq!(repo.fetch().unwrap(), tip_b);
    // The old commit is still there: the mirror was kept.
    assert!(repo.commit_info(tip_a).is_ok());
}

#[test]
fn projects_resolve_branches_tags_and_commit_ids_and_check_out() {
    let fx = Fixture::new();
    let v1 = fx.commit(
        &[
            ("jobs/clicks/run.sh", Some("#!/bin/sh\necho v1\n")),
            ("jobs/clicks/conf/app.conf", Some("x=1\n")),
            ("README.md", Some("project\n")),
        ],
        "v1",
    );
    git(&fx.work, &["tag", "v1.0"]);
    git(&fx.work, &["tag", "-a", "-m", "annotated", "v1.0-a"]);
    use std::os::unix::fs::PermissionsExt;
    let script = fx.work.join("jobs/clicks/run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run.sh", fx.work.join("jobs/clicks/start")).unwrap();
    let v2 = fx.commit(&[("jobs/clicks/conf/app.conf", Some("x=2\n"))], "v2");
    git(&fx.work, &["branch", "dev", &v1.to_string()]);
    git(&fx.work, &["push", "-q", "origin", "main", "dev", "--tags"]);

    let projects = ProjectRepos::new(&fx.state(), Credentials::default());
    let url = fx.bare.to_str().unwrap();
    assert_eq!(projects.resolve(url, "main").unwrap(), v2);
    assert_eq!(projects.resolve(url, "dev").unwrap(), v1);
    assert_eq!(projects.resolve(url, "v1.0").unwrap(), v1);
    assert_eq!(projects.resolve(url, "v1.0-a").unwrap(), v1);
    assert_eq!(projects.resolve(url, &v1.to_string()).unwrap(), v1);
    let err = projects.resolve(url, "nope").unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("`nope`"),
        "{err}"
    );
    let err = projects.resolve(url, &"ab".repeat(20)).unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let dir = projects.mirror_dir(url);
    assert!(dir.starts_with(fx.state().join("repos/projects")));
    assert!(dir.join("HEAD").exists());
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(name.contains("origin.git-"), "{name}");

    // Moving the branch is seen on the next resolve; the deleted branch is pruned.
    let v3 = fx.commit(&[("jobs/clicks/conf/app.conf", Some("x=3\n"))], "v3");
    git(&fx.work, &["push", "-q", "origin", "main", ":dev"]);
    assert_eq!(projects.resolve(url, "main").unwrap(), v3);
    assert!(projects.resolve(url, "dev").unwrap_err().is_not_found());

    let dest = fx.tmp.path().join("builds/b1");
    projects.checkout(url, v2, &dest).unwrap();
    let sub = dest.join("jobs/clicks");
    assert_eq!(
        std::fs::read_to_string(sub.join("conf/app.conf")).unwrap(),
        "x=2\n"
    );
    let mode = std::fs::metadata(sub.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "run.sh is executable: {mode:o}");
    assert_eq!(
        std::fs::read_link(sub.join("start")).unwrap(),
        Path::new("run.sh")
    );
    assert!(dest.join("README.md").exists());
    assert!(!dest.join(".git").exists());
    // A non-empty destination is refused; an empty one is fine.
    assert!(projects.checkout(url, v1, &dest).is_err());
    let empty = fx.tmp.path().join("builds/b2");
    std::fs::create_dir_all(&empty).unwrap();
    projects.checkout(url, v1, &empty).unwrap();
    assert_eq!(
        std::fs::read_to_string(empty.join("jobs/clicks/conf/app.conf")).unwrap(),
        "x=1\n"
    );
    // No leftovers next to the destinations.
    let leftovers: Vec<_> = std::fs::read_dir(fx.tmp.path().join("builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn project_fetches_of_one_url_do_not_collide() {
    let fx = Fixture::new();
    let tip = fx.commit(&[("a.txt", Some("a\n"))], "a");
    fx.push();
    let projects = std::sync::Arc::new(ProjectRepos::new(&fx.state(), Credentials::default()));
    let url = fx.bare.to_str().unwrap().to_string();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (p, u) = (projects.clone(), url.clone());
            std::thread::spawn(move || p.resolve(&u, "main"))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), tip);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_sees_a_push_into_a_bare_repo() {
    let fx = Fixture::new();
    fx.commit(&[("jobs/a.yaml", Some("a\n"))], "a");
    fx.push();
    let cancel = CancellationToken::new();
    let (mut rx, control) = spawn_trigger(&settings(fx.bare.to_str().unwrap()), cancel.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(first.unwrap(), Some(TriggerReason::Startup));
    // Give the watcher a moment to be in place; nothing else is sent meanwhile.
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(quiet.is_err(), "unexpected trigger {quiet:?}");

    fx.commit(&[("jobs/a.yaml", Some("b\n"))], "b");
    let started = std::time::Instant::now();
    let work = fx.work.clone();
    tokio::task::spawn_blocking(move || git(&work, &["push", "-q", "origin", "HEAD:main"]))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(got.unwrap(), Some(TriggerReason::Watch));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Reading the repository (as a fetch does) is not a change.
    while rx.try_recv().is_ok() {}
    let repo = ConfigRepo::open(&settings(fx.bare.to_str().unwrap()), &fx.state()).unwrap();
    tokio::task::spawn_blocking(move || repo.fetch().unwrap())
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(quiet.is_err(), "a read triggered {quiet:?}");

    cancel.cancel();
    drop(control);
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(end.unwrap(), None, "the task ends and drops its senders");
}

#[tokio::test]
async fn poll_fires_and_backs_off_while_fetches_fail() {
    let mut s = settings("https://git.example.com/ops/jobs.git");
    s.poll = Duration::from_secs(1);
    let cancel = CancellationToken::new();
    let (mut rx, control) = spawn_trigger(&s, cancel.clone());
    assert_eq!(rx.recv().await, Some(TriggerReason::Startup));
    let got = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    assert_eq!(got.unwrap(), Some(TriggerReason::Poll));

    control.fetch_failed();
    assert_eq!(control.poll_interval(), Duration::from_secs(2));
    control.fetch_failed();
    assert_eq!(control.poll_interval(), Duration::from_secs(4));
    // Nothing within a second now.
    let quiet = tokio::time::timeout(Duration::from_millis(1200), rx.recv()).await;
    assert!(quiet.is_err());
    control.fetch_ok();
    assert_eq!(control.poll_interval(), Duration::from_secs(1));
    let got = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    assert_eq!(got.unwrap(), Some(TriggerReason::Poll));

    // Coalescing: a pending trigger absorbs the next ones.
    assert!(control.trigger(TriggerReason::Manual));
    assert!(!control.trigger(TriggerReason::Webhook));
    assert_eq!(rx.recv().await, Some(TriggerReason::Manual));
    cancel.cancel();
}

#[test]
fn poll_backoff_doubles_up_to_five_minutes_and_resets() {
    let mut b = PollBackoff::new(Duration::from_secs(30));
    assert_eq!(b.interval(), Duration::from_secs(30));
    let mut seen = Vec::new();
    for _ in 0..8 {
        b.failed();
        seen.push(b.interval().as_secs());
    }
    assert_eq!(seen, [60, 120, 240, 300, 300, 300, 300, 300]);
    for _ in 0..100 {
        b.failed();
    }
    assert_eq!(b.interval(), Duration::from_secs(300));
    b.succeeded();
    assert_eq!(b.interval(), Duration::from_secs(30));
    // A poll longer than the cap is never shortened.
    let mut slow = PollBackoff::new(Duration::from_secs(600));
    slow.failed();
    assert_eq!(slow.interval(), Duration::from_secs(600));
}

#[test]
fn urls_and_paths() {
    assert!(is_local("/srv/git/jobs.git"));
    assert!(is_local("./jobs"));
    assert!(is_local("jobs-repo"));
    assert!(is_local("/srv/a:b"));
    assert!(!is_local("https://git.example.com/ops/jobs.git"));
    assert!(!is_local("file:///srv/git/jobs.git"));
    assert!(!is_local("git@git.example.com:ops/jobs.git"));
    assert!(!is_local("ssh://git@git.example.com:2222/ops/jobs.git"));
    assert_eq!(
        local_path("file:///srv/x.git"),
        Some(PathBuf::from("/srv/x.git"))
    );
    assert_eq!(local_path("https://h/x.git"), None);

    assert_eq!(
        redact_url("https://user:pw@host/x.git"),
        "https://user:***@host/x.git"
    );
    assert_eq!(
        redact_url("https://tok@host/x.git"),
        "https://***@host/x.git"
    );
    assert_eq!(redact_url("https://host/a@b"), "https://host/a@b");
    assert_eq!(redact_url("git@host:x.git"), "git@host:x.git");

    assert_eq!(
        url_host("https://Git.Example.com:8443/x").as_deref(),
        Some("git.example.com")
    );
    assert_eq!(url_host("ssh://git@h:22/x").as_deref(), Some("h"));
    assert_eq!(url_host("git@h:x.git").as_deref(), Some("h"));
    assert_eq!(url_host("/srv/x.git"), None);

    let c = Credentials {
        token_file: Some(PathBuf::from("/nonexistent")),
        token_host: Some("git.example.com".into()),
        ..Credentials::default()
    };
    assert!(c.token_for("https://git.example.com/x").is_some());
    assert!(c.token_for("https://evil.example.net/x").is_none());

    assert_eq!(normalize_dir("/jobs//team/"), "jobs/team");
    assert_eq!(normalize_dir("."), "");
}

#[test]
fn repo_types_can_be_shared_with_blocking_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ConfigRepo>();
    send_sync::<ProjectRepos>();
    send_sync::<TriggerControl>();
    send_sync::<RepoError>();
    fn send<T: Send>() {}
    send::<GitTree>();
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_sees_a_commit_in_a_work_tree() {
    let fx = Fixture::new();
    fx.commit(&[("jobs/a.yaml", Some("a\n"))], "a");
    let cancel = CancellationToken::new();
    let (mut rx, _control) = spawn_trigger(&settings(fx.work.to_str().unwrap()), cancel.clone());
    assert_eq!(rx.recv().await, Some(TriggerReason::Startup));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Editing files is not a change of the branch.
    std::fs::write(fx.work.join("jobs/a.yaml"), "edited\n").unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(quiet.is_err(), "an edit triggered {quiet:?}");

    let work = fx.work.clone();
    tokio::task::spawn_blocking(move || {
        git(&work, &["commit", "-q", "-am", "b"]);
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(got.unwrap(), Some(TriggerReason::Watch));
    cancel.cancel();
}

#[test]
fn ref_events_are_told_apart_from_other_events() {
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    use notify::{Event, EventKind};
    let root = Path::new("/srv/jobs.git");
    let ev = |kind, path: &str| Event::new(kind).add_path(root.join(path));
    let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    assert!(trigger::is_ref_change(root, &ev(rename, "refs/heads/main")));
    assert!(trigger::is_ref_change(root, &ev(rename, "packed-refs")));
    assert!(!trigger::is_ref_change(
        root,
        &ev(rename, "refs/heads/main.lock")
    ));
    assert!(!trigger::is_ref_change(
        root,
        &ev(EventKind::Create(CreateKind::File), "objects/ab/cdef")
    ));
    assert!(!trigger::is_ref_change(
        root,
        &ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "refs/heads/main"
        )
    ));
    assert!(trigger::is_ref_change(
        root,
        &ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "refs/tags/v1"
        )
    ));
}

/// A port on 127.0.0.1 that nothing listens on (right after this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving every repository below a folder over `git://127.0.0.1:<port>/`;
/// killed when dropped.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        // Its own process group: `git daemon` runs `git-daemon` as a child, which forks one
        // process per connection; killing `git` alone would leave them serving.
        let child = Command::new("git")
            .process_group(0)
            .arg("daemon")
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon runs");
        let daemon = GitDaemon { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[test]
fn remote_urls_are_fetched_with_the_git_program() {
    let fx = Fixture::new();
    let first = fx.commit(&[("jobs/a.yaml", Some("a\n"))], "first");
    fx.push();
    let daemon = GitDaemon::start(fx.tmp.path());
    let url = daemon.url("origin.git");
    let repo = ConfigRepo::open(&settings(&url), &fx.state()).unwrap();
    let (tip, received) = repo.fetch_counted().unwrap();
    assert_eq!(tip, first);
    assert!(received >= 3, "first fetch received {received} objects");
    assert_eq!(rels(&repo.list_job_files(tip, "jobs").unwrap()), ["a.yaml"]);
    assert_eq!(repo.fetch_counted().unwrap(), (first, 0));

    // A force-push (a rewrite) is followed.
    git(&fx.work, &["reset", "-q", "--hard", "HEAD"]);
    let second = fx.commit(&[("jobs/b.yaml", Some("b\n"))], "second");
    fx.push();
    assert_eq!(repo.fetch().unwrap(), second);
    let changes = repo.diff_job_files(Some(first), second, "jobs").unwrap();
    assert_eq!(summary(&changes), ["+b.yaml"]);
    git(&fx.work, &["reset", "-q", "--hard", &first.to_string()]);
    let rewritten = fx.commit(&[("jobs/c.yaml", Some("c\n"))], "rewritten");
    fx.push();
    assert_eq!(repo.fetch().unwrap(), rewritten);
    assert_eq!(repo.tip(), Some(rewritten));

    // A branch the server does not have.
    let mut s = settings(&url);
    s.branch = "release".to_string();
    let missing = ConfigRepo::open(&s, &fx.tmp.path().join("other")).unwrap();
    let err = missing.fetch().unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("branch `release`") && msg.contains(&url),
        "{msg}"
    );

    // A repository the server does not have.
    let gone = ConfigRepo::open(
        &settings(&daemon.url("nowhere.git")),
        &fx.tmp.path().join("gone"),
    )
    .unwrap();
    let err = gone.fetch().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
}

#[test]
fn remote_projects_fetch_branches_and_tags_and_prune() {
    let fx = Fixture::new();
    let v1 = fx.commit(&[("run.sh", Some("echo 1\n"))], "v1");
    fx.push();
    git(&fx.work, &["tag", "-a", "-m", "v1", "v1"]);
    git(
        &fx.work,
        &["push", "-q", "origin", "v1", "HEAD:refs/heads/topic"],
    );
    let daemon = GitDaemon::start(fx.tmp.path());
    let url = daemon.url("origin.git");
    let projects = ProjectRepos::new(&fx.state(), Credentials::default());
    assert_eq!(projects.resolve(&url, "main").unwrap(), v1);
    assert_eq!(projects.resolve(&url, "v1").unwrap(), v1);
    assert_eq!(projects.resolve(&url, "topic").unwrap(), v1);
    let dest = fx.tmp.path().join("checkout");
    projects.checkout(&url, v1, &dest).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("run.sh")).unwrap(),
        "echo 1\n"
    );

    git(&fx.work, &["push", "-q", "origin", ":refs/heads/topic"]);
    let err = projects.resolve(&url, "topic").unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("`topic`"), "{err}");
}

#[test]
fn a_closed_port_is_unreachable_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("git://127.0.0.1:{}/x.git", free_port());
    let repo = ConfigRepo::open(&settings(&url), tmp.path()).unwrap();
    let started = std::time::Instant::now();
    let err = repo.fetch().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
}

#[test]
fn a_server_that_never_answers_times_out_and_git_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "git://127.0.0.1:{}/x.git",
        listener.local_addr().unwrap().port()
    );
    let accepted = std::thread::spawn(move || listener.accept().unwrap().0);
    let dir = tmp.path().join("mirror.git");
    let repo = fetch::open_or_init_mirror(&dir, &url).unwrap();
    let started = std::time::Instant::now();
    let err = remote::fetch_remote(
        &repo,
        &url,
        &["+refs/heads/main:refs/heads/main".to_string()],
        &Credentials::default(),
        false,
        Duration::from_secs(1),
    )
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains("timed out after 1s"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // git was killed: its end of the connection is closed.
    let mut stream = accepted.join().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    use std::io::Read;
    let read = stream.read_to_end(&mut buf);
    assert!(read.is_ok(), "the connection is still open: {read:?}");
}

/// Answers every HTTP request with 401 and hands back what was asked.
fn http_401_server() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        let _ = (&stream).write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        request
    });
    (port, handle)
}

#[test]
fn the_token_is_sent_as_a_header_and_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let (port, server) = http_401_server();
    let mut s = settings(&format!(
        "http://deploy:s3cret@127.0.0.1:{port}/ops/jobs.git"
    ));
    s.token_file = Some(token_file.clone());
    let repo = ConfigRepo::open(&s, tmp.path()).unwrap();
    let err = repo.fetch().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("s3cret") && !msg.contains("tok-123"), "{msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
    let request = server.join().unwrap();
    let expected = format!("Authorization: Basic {}", remote::base64(b"oauth2:tok-123"));
    assert!(request.contains(&expected), "{request}");

    // A rotated token is used at the next fetch.
    std::fs::write(&token_file, "tok-456\n").unwrap();
    let (port, server) = http_401_server();
    let mut s = settings(&format!("http://127.0.0.1:{port}/ops/jobs.git"));
    s.token_file = Some(token_file);
    let repo = ConfigRepo::open(&s, &tmp.path().join("b")).unwrap();
    assert!(repo.fetch().unwrap_err().is_unreachable());
    let expected = format!("Authorization: Basic {}", remote::base64(b"oauth2:tok-456"));
    assert!(server.join().unwrap().contains(&expected));
}

#[test]
fn credentials_stay_off_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let key = tmp.path().join("it's a key");
    let creds = Credentials {
        ssh_key: Some(key.clone()),
        token_file: Some(token_file),
        token_host: Some("git.example.com".to_string()),
    };
    let url = "https://deploy:s3cret@git.example.com/ops/jobs.git";
    let refspecs = ["+refs/heads/main:refs/heads/main".to_string()];
    let built = remote::fetch_command(tmp.path(), url, &refspecs, &creds, true).unwrap();
    let basic = remote::base64(b"oauth2:tok-123");
    let args: Vec<String> = built
        .command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for arg in &args {
        assert!(
            !arg.contains("tok-123") && !arg.contains(&basic) && !arg.contains("s3cret"),
            "{args:?}"
        );
    }
    assert!(args.contains(&"--prune".to_string()), "{args:?}");
    assert!(args.ends_with(&["origin".to_string(), refspecs[0].clone()]));
    let env = |name: &str| {
        built
            .command
            .get_envs()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    };
    assert_eq!(env("GIT_CONFIG_KEY_0").as_deref(), Some("http.extraHeader"));
    assert_eq!(
        env("GIT_CONFIG_VALUE_0"),
        Some(format!("Authorization: Basic {basic}"))
    );
    assert_eq!(env("GIT_TERMINAL_PROMPT").as_deref(), Some("0"));
    assert_eq!(
        env("GIT_SSH_COMMAND"),
        Some(format!(
            "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
            key.display().to_string().replace('\'', r"'\''")
        ))
    );

    // Errors that echo a secret are scrubbed.
    let err = remote::classify(
        &format!("fatal: unable to access '{url}/': header Authorization: Basic {basic} tok-123"),
        url,
        &built.secrets,
    );
    let msg = format!("{err} {err:?}");
    assert!(err.is_unreachable(), "{msg}");
    assert!(
        !msg.contains("tok-123") && !msg.contains(&basic) && !msg.contains("s3cret"),
        "{msg}"
    );

    // Another host never gets the token.
    let other = remote::fetch_command(
        tmp.path(),
        "https://evil.example.net/x.git",
        &refspecs,
        &creds,
        false,
    )
    .unwrap();
    assert!(
        other
            .command
            .get_envs()
            .all(|(k, _)| k != "GIT_CONFIG_VALUE_0")
    );
    assert!(other.command.get_args().all(|a| a != "--prune"));
}

#[test]
fn fetch_errors_are_classified() {
    let url = "ssh://git@git.example.com/ops/jobs.git";
    let not_found = remote::classify(
        "fatal: couldn't find remote ref refs/heads/release\n",
        url,
        &[],
    );
    assert!(not_found.is_not_found(), "{not_found:?}");
    assert!(not_found.to_string().contains("branch `release`"));
    for stderr in [
        "ssh: Could not resolve hostname git.example.com: Name or service not known\nfatal: Could not read from remote repository.\n",
        "git@git.example.com: Permission denied (publickey).\n",
        "fatal: unable to access 'https://h/x/': Failed to connect to h port 443: Connection refused\n",
        "",
    ] {
        assert!(
            remote::classify(stderr, url, &[]).is_unreachable(),
            "{stderr}"
        );
    }
    let auth = remote::classify("git@h: Permission denied (publickey).\n", url, &[]);
    assert!(auth.to_string().contains("ssh_key"), "{auth}");
    let local = remote::classify(
        "remote: Counting objects: 100% (3/3)\rerror: cannot lock ref 'refs/heads/main': unable to create lock\n",
        url,
        &[],
    );
    assert!(matches!(local, RepoError::Git { .. }), "{local:?}");
    assert!(!local.to_string().contains("Counting"), "{local}");

    assert_eq!(remote::base64(b""), "");
    assert_eq!(remote::base64(b"f"), "Zg==");
    assert_eq!(remote::base64(b"fo"), "Zm8=");
    assert_eq!(remote::base64(b"foo"), "Zm9v");
    assert_eq!(remote::base64(b"oauth2:tok"), "b2F1dGgyOnRvaw==");
    assert_eq!(remote::shell_quote("/a b/it's"), r"'/a b/it'\''s'");
}

#[test]
fn a_blob_over_the_limit_is_refused_from_its_header_before_it_is_read() {
    let fx = Fixture::new();
    let size = 50 * 1024 * 1024;
    std::fs::write(fx.work.join("big.yaml"), vec![b'#'; size]).unwrap();
    let id = git(&fx.work, &["hash-object", "-w", "big.yaml"]);
    let oid = Oid::from_str(&id).unwrap();
    let tree = GitTree::open(&fx.work).unwrap();
    match tree.read_blob(oid) {
        Err(RepoError::TooLarge { size: s, limit, .. }) => {
            assert_eq!((s, limit), (size, tree::MAX_BLOB_BYTES));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Cut the loose object after its first bytes: its header (type and size) still reads, its
    // content no longer inflates (libgit2 spins on loading it: not tried here). The size check
    // still answers, so it reads the header alone and never loads the blob.
    let path = fx.work.join(".git/objects").join(&id[..2]).join(&id[2..]);
    let bytes = std::fs::read(&path).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes[..64]).unwrap();
    let tree = GitTree::open(&fx.work).unwrap();
    assert!(
        matches!(tree.read_blob(oid), Err(RepoError::TooLarge { .. })),
        "the size is known from the header alone"
    );
}

/// Commits `files` as a commit whose author has no e-mail; returns its id.
fn commit_malformed(fx: &Fixture, files: &[(&str, &str)], subject: &str) -> Oid {
    for (path, content) in files {
        let p = fx.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    git(&fx.work, &["add", "-A"]);
    let tree = git(&fx.work, &["write-tree"]);
    let parent = git(&fx.work, &["rev-parse", "HEAD"]);
    // An author with no e-mail: git accepts it (`hash-object --literally`), libgit2 does not.
    let raw = format!(
        "tree {tree}\nparent {parent}\nauthor Nobody 1700000000 +0000\n\
         committer Ada Tester <ada@example.com> 1700000000 +0000\n\n{subject}\n"
    );
    let file = fx.tmp.path().join("raw-commit");
    std::fs::write(&file, raw).unwrap();
    let id = git(
        &fx.work,
        &[
            "hash-object",
            "--literally",
            "-t",
            "commit",
            "-w",
            file.to_str().unwrap(),
        ],
    );
    git(&fx.work, &["reset", "-q", "--soft", &id]);
    Oid::from_str(&id).unwrap()
}

#[test]
fn a_commit_libgit2_cannot_parse_is_fetched_read_and_named() {
    let fx = Fixture::new();
    let c1 = fx.commit(&[("jobs/a.yaml", Some("a"))], "one");
    let bad = commit_malformed(&fx, &[("jobs/b.yaml", "b")], "no e-mail");
    let c3 = fx.commit(&[("jobs/c.yaml", Some("c"))], "three");
    fx.push();
    let repo = ConfigRepo::open(&settings(fx.bare.to_str().unwrap()), &fx.state()).unwrap();
    assert_eq!(
        repo.fetch().unwrap(),
        c3,
        "the fetch goes past the malformed commit"
    );
    let tree = repo.tree();
    let commits = tree.commits_since(Some(c1), c3).unwrap();
    let ids: Vec<Oid> = commits.iter().map(|c| c.id).collect();
    assert_eq!(ids, [c3, bad]);
    let problem = commits[1].problem.as_deref().unwrap();
    assert!(problem.contains("failed to parse signature"), "{problem}");
    assert_eq!(commits[1].author, "Nobody 1700000000 +0000");
    assert_eq!(commits[0].problem, None);
    let names = summary(&tree.diff_job_files(Some(c1), c3, "jobs").unwrap());
    assert_eq!(names, ["+b.yaml", "+c.yaml"]);
    drop(tree);

    // The malformed commit as the tip: its tree and info are read from its raw text.
    let bad2 = commit_malformed(&fx, &[("jobs/d.yaml", "d")], "tip without e-mail");
    fx.push();
    assert_eq!(repo.fetch().unwrap(), bad2);
    let info = repo.commit_info(bad2).unwrap();
    assert_eq!(info.author, "Nobody 1700000000 +0000");
    assert_eq!(info.subject, "tip without e-mail");
    assert_eq!(info.time, 1_700_000_000);
    let files = repo.list_job_files(bad2, "jobs").unwrap();
    assert_eq!(rels(&files), ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]);
}

#[test]
fn a_job_file_whose_name_is_not_utf8_is_listed_and_diffed_not_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fixture::new();
    let c1 = fx.commit(&[("jobs/a.yaml", Some("a"))], "one");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
    std::fs::write(fx.work.join("jobs").join(name), "env: dev\n").unwrap();
    let c2 = fx.commit(&[], "latin-1 name");
    let tree = GitTree::open(&fx.work).unwrap();
    let files = tree.list_job_files(c2, "jobs").unwrap();
    assert_eq!(rels(&files), ["a.yaml", "caf\u{FFFD}.yaml"]);
    let diff = tree.diff_job_files(Some(c1), c2, "jobs").unwrap();
    assert_eq!(summary(&diff), ["+caf\u{FFFD}.yaml"]);
}

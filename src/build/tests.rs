use super::log::{CappedLog, TAIL_LINE_CHARS};
use super::*;
use std::process::Command;
use std::process::Stdio;
use std::time::Instant;

/// Checks out with the git command line.
struct GitCli;

impl SourceCheckout for GitCli {
    fn checkout(&self, repo: &str, commit: &str, dest: &Path) -> Result<(), CheckoutError> {
        let run = |args: &[&std::ffi::OsStr]| -> Result<(), CheckoutError> {
            let io = |source| CheckoutError::Io {
                what: "git".into(),
                source,
            };
            let out = Command::new("git")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(io)?;
            if out.status.success() {
                Ok(())
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                Err(io(std::io::Error::other(stderr)))
            }
        };
        run(&[
            "clone".as_ref(),
            "--quiet".as_ref(),
            "--no-checkout".as_ref(),
            repo.as_ref(),
            dest.as_os_str(),
        ])?;
        run(&[
            "-C".as_ref(),
            dest.as_os_str(),
            "checkout".as_ref(),
            "--quiet".as_ref(),
            "--detach".as_ref(),
            commit.as_ref(),
        ])
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A temp folder with a git repo (`repo/`, files under `app/`) and a state folder.
struct Fixture {
    tmp: tempfile::TempDir,
    commit: String,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("app")).unwrap();
        std::fs::write(repo.join("app/input.txt"), "hello artifact\n").unwrap();
        std::fs::write(repo.join("README"), "root\n").unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        let commit = git(&repo, &["rev-parse", "HEAD"]);
        Self { tmp, commit }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn config(&self) -> BuildConfig {
        BuildConfig {
            timeout: Duration::from_secs(60),
            ..BuildConfig::new(self.path("state"))
        }
    }

    fn request(&self, command: Option<&str>, glob: Option<&str>) -> BuildRequest {
        BuildRequest {
            job: "team-a/clicks".into(),
            repo: self.path("repo").display().to_string(),
            commit: self.commit.clone(),
            dir: "app".into(),
            command: command.map(String::from),
            artifact_glob: glob.map(String::from),
            source: Arc::new(GitCli),
        }
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[tokio::test]
async fn a_build_leaves_exactly_one_artifact_and_its_log() {
    let fx = Fixture::new();
    let b = Builder::new(fx.config());
    let req = fx.request(
        Some("mkdir -p target && cp input.txt target/app-1.0.jar && echo built"),
        Some("target/app-*.jar"),
    );
    let key = req.key();
    let a = b.build(req).await.unwrap();
    assert_eq!(a.key, key);
    assert_eq!(a.commit, fx.commit);
    let state = fx.path("state");
    assert_eq!(
        a.path,
        state.join("artifacts").join(&key).join("app-1.0.jar")
    );
    assert_eq!(
        std::fs::read_to_string(&a.path).unwrap(),
        "hello artifact\n"
    );
    assert_eq!(a.digest, hex::encode(Sha256::digest(b"hello artifact\n")));
    assert!(
        state
            .join("artifacts")
            .join(&key)
            .join("meta.json")
            .is_file()
    );
    assert_eq!(a.log, state.join("builds").join(&key).join("build.log"));
    assert!(std::fs::read_to_string(&a.log).unwrap().contains("built\n"));
    let latest = std::fs::read_to_string(b.latest_log("team-a/clicks")).unwrap();
    assert!(latest.contains("built\n"));
    // The checkout is gone once the artifact is out.
    assert!(!state.join("builds").join(&key).join("src").exists());
    assert_eq!(b.cached(&key), Some(a));
}

#[tokio::test]
async fn no_command_no_glob_keeps_the_folder_and_a_glob_works_without_a_command() {
    let fx = Fixture::new();
    let b = Builder::new(fx.config());
    let tree = b.build(fx.request(None, None)).await.unwrap();
    assert!(tree.path.ends_with("tree"));
    assert_eq!(
        std::fs::read_to_string(tree.path.join("input.txt")).unwrap(),
        "hello artifact\n"
    );
    assert_eq!(
        tree.digest,
        hex::encode(Sha256::digest(tree.key.as_bytes()))
    );

    let file = b.build(fx.request(None, Some("*.txt"))).await.unwrap();
    assert!(file.path.ends_with("input.txt"));
    assert_ne!(file.key, tree.key);
}

#[tokio::test]
async fn the_same_key_is_built_once_even_across_restarts() {
    let fx = Fixture::new();
    let counter = fx.path("counter");
    let cmd = format!("echo run >> {}", counter.display());
    let b = Builder::new(fx.config());
    let first = b.build(fx.request(Some(&cmd), None)).await.unwrap();
    let second = b.build(fx.request(Some(&cmd), None)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(lines(&counter), 1);

    let restarted = Builder::new(fx.config());
    let third = restarted.build(fx.request(Some(&cmd), None)).await.unwrap();
    assert_eq!(first, third);
    assert_eq!(lines(&counter), 1);

    // Another command is another key.
    let other = format!("{cmd}; true");
    restarted
        .build(fx.request(Some(&other), None))
        .await
        .unwrap();
    assert_eq!(lines(&counter), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_builds_run_once() {
    let fx = Fixture::new();
    let counter = fx.path("counter");
    let cmd = format!("echo run >> {}; sleep 0.5", counter.display());
    let b = Builder::new(fx.config());
    let (x, y, z) = tokio::join!(
        b.build(fx.request(Some(&cmd), None)),
        b.build(fx.request(Some(&cmd), None)),
        b.build(fx.request(Some(&cmd), None)),
    );
    let x = x.unwrap();
    assert_eq!(x, y.unwrap());
    assert_eq!(x, z.unwrap());
    assert_eq!(lines(&counter), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_over_the_limit_queue_and_never_overlap() {
    let fx = Fixture::new();
    let lock = fx.path("lock");
    let overlap = fx.path("overlap");
    let b = Builder::new(BuildConfig {
        max_concurrent: 1,
        ..fx.config()
    });
    let cmd = |n: u32| {
        format!(
            "mkdir {l} || echo {n} >> {o}; sleep 0.3; rmdir {l}",
            l = lock.display(),
            o = overlap.display()
        )
    };
    let (c1, c2, c3) = (cmd(1), cmd(2), cmd(3));
    let started = Instant::now();
    let (x, y, z) = tokio::join!(
        b.build(fx.request(Some(&c1), None)),
        b.build(fx.request(Some(&c2), None)),
        b.build(fx.request(Some(&c3), None)),
    );
    x.unwrap();
    y.unwrap();
    z.unwrap();
    assert!(!overlap.exists(), "two builds ran at once");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_failing_build_says_why_with_the_last_lines() {
    let fx = Fixture::new();
    let b = Builder::new(fx.config());
    let err = b
        .build(fx.request(
            Some("echo compiling; echo 'error: boom in Main.java' >&2; exit 3"),
            Some("*.jar"),
        ))
        .await
        .unwrap_err();
    let BuildError::Failed { code, log_tail } = &err else {
        panic!("{err}")
    };
    assert_eq!(*code, Some(3));
    // stdout and stderr are separate pipes: their relative order is not fixed.
    let last_two: Vec<&str> = log_tail.lines().rev().take(2).collect();
    assert!(
        last_two.contains(&"compiling") && last_two.contains(&"error: boom in Main.java"),
        "{log_tail}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("build command exited with code 3\n"),
        "{msg}"
    );
    assert!(msg.contains("error: boom in Main.java"), "{msg}");
    let latest = std::fs::read_to_string(b.latest_log("team-a/clicks")).unwrap();
    assert!(latest.contains("error: boom"));
}

#[tokio::test]
async fn a_hanging_build_is_killed_with_its_children() {
    let fx = Fixture::new();
    let pidfile = fx.path("grandchild.pid");
    let b = Builder::new(BuildConfig {
        timeout: Duration::from_secs(1),
        ..fx.config()
    });
    let cmd = format!(
        "echo waiting; sleep 30 & echo $! > {}; sleep 30",
        pidfile.display()
    );
    let started = Instant::now();
    let err = b.build(fx.request(Some(&cmd), None)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, BuildError::TimedOut { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("build timed out after 1s\n"), "{msg}");
    assert!(msg.contains("waiting"), "{msg}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie waiting for a reaper.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if stat.is_empty() || state == Some('Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_artifact_glob_must_match_exactly_one_file() {
    let fx = Fixture::new();
    let b = Builder::new(fx.config());
    let err = b
        .build(fx.request(Some("touch a.txt"), Some("target/*.jar")))
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Artifact(_)), "{err}");
    assert!(
        err.to_string().contains("\"target/*.jar\" matched no file"),
        "{err}"
    );

    let err = b
        .build(fx.request(Some("touch a.jar b.jar c.jar"), Some("*.jar")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("matched 3 files"), "{msg}");
    assert!(msg.contains("a.jar, b.jar, c.jar"), "{msg}");

    for bad in ["../*.jar", "/etc/passwd"] {
        let err = b.build(fx.request(None, Some(bad))).await.unwrap_err();
        assert!(matches!(err, BuildError::Artifact(_)), "{err}");
    }
    let mut req = fx.request(None, None);
    req.dir = "../outside".into();
    assert!(matches!(b.build(req).await, Err(BuildError::Checkout(_))));
    let mut req = fx.request(None, None);
    req.commit = "main".into();
    assert!(matches!(b.build(req).await, Err(BuildError::Checkout(_))));
    let mut req = fx.request(None, None);
    req.dir = "missing".into();
    let err = b.build(req).await.unwrap_err();
    assert!(
        err.to_string().contains("\"missing\" is not in commit"),
        "{err}"
    );
}

#[tokio::test]
async fn huge_output_is_capped_and_the_build_still_succeeds() {
    let fx = Fixture::new();
    let cap = 100_000;
    let b = Builder::new(BuildConfig {
        max_log_bytes: cap,
        ..fx.config()
    });
    let a = b
        .build(fx.request(
            Some("yes | head -c 200000000; echo; echo last-line-marker"),
            None,
        ))
        .await
        .unwrap();
    let size = std::fs::metadata(&a.log).unwrap().len();
    assert!(size <= cap, "log is {size} bytes");
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("build output truncated"), "no truncation note");
    assert!(
        log_tail(&a.log, 1) == "last-line-marker",
        "{}",
        log_tail(&a.log, 3)
    );
}

#[tokio::test]
async fn the_build_environment_is_clean() {
    let fx = Fixture::new();
    let b = Builder::new(fx.config());
    // cargo sets this in the test process; it must not reach the build.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let a = b
        .build(fx.request(Some("env | sort > env.txt; pwd > pwd.txt"), None))
        .await
        .unwrap();
    let env = std::fs::read_to_string(a.path.join("env.txt")).unwrap();
    assert!(!env.contains("CARGO"), "{env}");
    assert!(env.contains(&format!("PATH={BUILD_PATH}\n")), "{env}");
    assert!(env.contains("LANG=C.UTF-8\n"), "{env}");
    assert!(env.contains("JOBKEEPER_JOB=team-a/clicks\n"), "{env}");
    let pwd = std::fs::read_to_string(a.path.join("pwd.txt")).unwrap();
    assert!(pwd.trim_end().ends_with("/src/app"), "{pwd}");
    // The daemon config's `build.path` is the build's PATH.
    let b = Builder::new(BuildConfig {
        path: format!("/nonexistent:{BUILD_PATH}"),
        ..fx.config()
    });
    let a = b
        .build(fx.request(Some("echo $PATH > path.txt"), None))
        .await
        .unwrap();
    let path = std::fs::read_to_string(a.path.join("path.txt")).unwrap();
    assert_eq!(path, format!("/nonexistent:{BUILD_PATH}\n"));
}

#[tokio::test]
async fn the_capped_log_keeps_bounded_memory_and_the_last_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("log");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let cap = 200_000;
    let mut log = CappedLog::new(cap);
    let chunk = b"0123456789abcdef\n".repeat(1000);
    for i in 0..2_000 {
        log.write(&mut file, &chunk).await;
        // Odd-sized pieces too.
        log.write(&mut file, format!("piece {i}\n").as_bytes())
            .await;
        assert!(
            log.tail.capacity() <= 4 * CHUNK,
            "tail grew to {}",
            log.tail.capacity()
        );
    }
    log.write(&mut file, b"the end\n").await;
    log.finish(&mut file).await;
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= cap, "{size}");
    assert_eq!(log_tail(&path, 2), "piece 1999\nthe end");
}

#[test]
fn the_key_covers_every_input() {
    let k = |repo, commit, dir, cmd, glob| build_key(repo, commit, dir, cmd, glob);
    let base = k("r", "c", "d", Some("make"), Some("*.jar"));
    assert_eq!(base.len(), 64);
    assert_eq!(base, k("r", "c", "./d/", Some("make"), Some("*.jar")));
    for other in [
        k("r2", "c", "d", Some("make"), Some("*.jar")),
        k("r", "c2", "d", Some("make"), Some("*.jar")),
        k("r", "c", "e", Some("make"), Some("*.jar")),
        k("r", "c", "d", Some("make "), Some("*.jar")),
        k("r", "c", "d", None, Some("*.jar")),
        k("r", "c", "d", Some(""), Some("*.jar")),
        k("r", "c", "d", Some("make"), None),
    ] {
        assert_ne!(base, other);
    }
}

#[test]
fn log_tail_reads_the_last_lines_of_big_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("log");
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&format!("line {i}\n"));
    }
    std::fs::write(&path, &text).unwrap();
    assert_eq!(log_tail(&path, 2), "line 99998\nline 99999");
    std::fs::write(&path, "a\nb").unwrap();
    assert_eq!(log_tail(&path, 20), "a\nb");
    assert_eq!(log_tail(&tmp.path().join("missing"), 20), "");
    std::fs::write(&path, "x".repeat(1000)).unwrap();
    assert_eq!(log_tail(&path, 1).chars().count(), TAIL_LINE_CHARS + 1);
}

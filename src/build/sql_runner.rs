//! The SQL runner: the small Java program (`runner/sql/` of this repository, embedded in the
//! binary) that runs a SQL job's statements on a Flink cluster, built like a project through the
//! build queue and kept in the artifact cache, once per version of its source.
//!
//! A SQL job with a project gets one jar holding the runner's classes and the project's jar
//! under `lib/`, which Flink puts on the job's classpath (UDFs, connectors). That jar is made
//! once per pair of digests and kept beside the other artifacts.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::spec::{Statement, StatementKind};

use super::{Artifact, BuildRequest, CheckoutError, SourceCheckout};

/// The runner's source, as built.
pub const SOURCE: &str = include_str!("../../runner/sql/JobkeeperSqlRunner.java");
/// The runner's main class.
pub const ENTRY_CLASS: &str = "JobkeeperSqlRunner";
/// The first argument the runner expects: the version of its arguments.
pub const ARGS_VERSION: &str = "jobkeeper-sql-v1";
/// The runner's file name in its source folder.
const SOURCE_FILE: &str = "JobkeeperSqlRunner.java";
/// The jar the build leaves.
const JAR: &str = "jobkeeper-sql-runner.jar";
/// How the runner is built (in a folder holding only its source). `--release 8` keeps it
/// loadable by every JVM Flink 1.19+ runs on.
const COMMAND: &str = "mkdir -p classes && javac --release 8 -Xlint:-options -d classes \
JobkeeperSqlRunner.java && jar cf jobkeeper-sql-runner.jar -C classes .";
/// The `repo` of the runner's build requests (not a git repository: the source is embedded).
const REPO: &str = "jobkeeper:sql-runner";

/// Writes the embedded source into a build folder.
struct Embedded;

impl SourceCheckout for Embedded {
    fn checkout(&self, _repo: &str, _commit: &str, dest: &Path) -> Result<(), CheckoutError> {
        std::fs::create_dir_all(dest)
            .and_then(|()| std::fs::write(dest.join(SOURCE_FILE), SOURCE))
            .map_err(|source| CheckoutError::Io {
                what: "cannot write the SQL runner's source".into(),
                source,
            })
    }
}

/// The build request of the runner for `job` (whose build log shows the build). Its key
/// changes only with the runner's source.
pub fn request(job: &str) -> BuildRequest {
    BuildRequest {
        job: job.to_string(),
        repo: REPO.to_string(),
        commit: hex::encode(Sha256::digest(SOURCE.as_bytes())),
        dir: String::new(),
        command: Some(COMMAND.to_string()),
        artifact_glob: Some(JAR.to_string()),
        source: Arc::new(Embedded),
    }
}

/// The runner's program arguments for job `job` running `statements` (secrets already
/// replaced: never log these).
pub fn args(job: &str, statements: &[Statement]) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut out = vec![ARGS_VERSION.to_string(), b64(job)];
    for s in statements {
        out.push(match &s.kind {
            StatementKind::Set { key, value } => format!("set:{}:{}", b64(key), b64(value)),
            StatementKind::Insert => format!("insert:{}", b64(&s.text)),
            StatementKind::Other => format!("sql:{}", b64(&s.text)),
        });
    }
    out
}

/// A pre-built runner jar (the `flink.sql_runner` of an env) as an artifact.
pub fn prebuilt(path: &Path) -> std::io::Result<Artifact> {
    let bytes = std::fs::read(path)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok(Artifact {
        key: format!("prebuilt-{digest}"),
        path: path.to_path_buf(),
        digest,
        log: PathBuf::new(),
        commit: String::new(),
    })
}

/// Whether `javac` is in one of the `:`-separated folders of `path` (a build's `PATH`, the
/// daemon config's `build.path`).
pub fn javac_in(path: &str) -> bool {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .any(|dir| Path::new(dir).join("javac").is_file())
}

/// What the host needs to build the runner with builds' `PATH` `path`, for messages.
pub fn needs_jdk(path: &str) -> String {
    format!(
        "SQL jobs need the SQL runner, built with `javac` and `jar` (a JDK 8 or later) found on \
         the build PATH ({path}); install a JDK there (or add its `bin` folder to `build.path` \
         in the daemon config), or give a pre-built runner jar as \
         `sql_runner: /path/to/jobkeeper-sql-runner.jar` in the env's `flink:` block"
    )
}

/// Why the runner's jar could not be put together with a project's.
#[derive(Debug, thiserror::Error)]
pub enum SqlJarError {
    /// The project's artifact is not one jar file.
    #[error("a SQL job's project must build one jar (`project.artifact`), found {}", .0.display())]
    NotOneJar(std::path::PathBuf),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The two jars could not be merged.
    #[error("cannot put the project's jar beside the SQL runner: {0}")]
    Merge(String),
}

/// The runner's jar with the project's jar under `lib/`, made once per pair under
/// `state_dir/artifacts/sql-<digest>/`. Blocking.
pub fn with_project(
    state_dir: &Path,
    runner: &Artifact,
    project: &Artifact,
) -> Result<Artifact, SqlJarError> {
    let mut h = Sha256::new();
    h.update(runner.digest.as_bytes());
    h.update([0]);
    h.update(project.digest.as_bytes());
    let digest = hex::encode(h.finalize());
    let key = format!("sql-{}", &digest[..32]);
    let dir = state_dir.join("artifacts").join(&key);
    let stem = project
        .path
        .file_stem()
        .map_or_else(|| "project".into(), |s| s.to_string_lossy().into_owned());
    let out = dir.join(format!("{stem}-sql.jar"));
    let artifact = Artifact {
        key,
        path: out.clone(),
        digest,
        log: project.log.clone(),
        commit: project.commit.clone(),
    };
    if out.is_file() {
        return Ok(artifact);
    }
    if !project.path.is_file() {
        return Err(SqlJarError::NotOneJar(project.path.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(|source| SqlJarError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    let tmp = dir.join(".merging.jar");
    merge(&runner.path, &project.path, &tmp).map_err(|e| SqlJarError::Merge(e.to_string()))?;
    std::fs::rename(&tmp, &out).map_err(|source| SqlJarError::Io {
        what: format!("cannot keep {}", out.display()),
        source,
    })?;
    Ok(artifact)
}

/// Writes `out`: every entry of the jar `runner` as is, and `lib/<name of project>` stored.
fn merge(runner: &Path, project: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut zin = zip::ZipArchive::new(BufReader::new(File::open(runner)?))?;
    let mut zout = zip::ZipWriter::new(BufWriter::new(File::create(out)?));
    for i in 0..zin.len() {
        let entry = zin.by_index_raw(i)?;
        zout.raw_copy_file(entry)?;
    }
    let name = project.file_name().map_or_else(
        || "project.jar".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zout.start_file(format!("lib/{name}"), opts)?;
    std::io::copy(&mut BufReader::new(File::open(project)?), &mut zout)?;
    zout.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_request_is_keyed_by_its_source() {
        let a = request("a");
        let b = request("b");
        assert_eq!(a.key(), b.key(), "one build for every job");
        assert_eq!(a.commit.len(), 64);
        assert!(SOURCE.contains("public static void main"));
    }

    #[test]
    fn javac_is_looked_for_in_the_build_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_string_lossy().into_owned();
        assert!(!javac_in(&p));
        std::fs::write(dir.path().join("javac"), "").unwrap();
        assert!(javac_in(&format!("/nonexistent:{p}")));
    }

    #[test]
    fn a_project_jar_goes_under_lib_beside_the_runner_classes() {
        let dir = tempfile::tempdir().unwrap();
        let jar = |name: &str, entry: &str| {
            let path = dir.path().join(name);
            let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
            z.start_file(entry, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut z, b"content").unwrap();
            z.finish().unwrap();
            path
        };
        let artifact = |path: PathBuf, digest: &str| Artifact {
            key: digest.into(),
            path,
            digest: digest.into(),
            log: PathBuf::new(),
            commit: "c".into(),
        };
        let runner = artifact(jar("runner.jar", "JobkeeperSqlRunner.class"), "r");
        let project = artifact(jar("udf.jar", "example/Shout.class"), "p");
        let state = dir.path().join("state");
        let merged = with_project(&state, &runner, &project).unwrap();
        let again = with_project(&state, &runner, &project).unwrap();
        assert_eq!(merged, again, "made once per pair");
        let mut z = zip::ZipArchive::new(File::open(&merged.path).unwrap()).unwrap();
        let names: Vec<String> = (0..z.len())
            .map(|i| z.by_index_raw(i).unwrap().name().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["JobkeeperSqlRunner.class", "lib/udf.jar"]);
    }
}

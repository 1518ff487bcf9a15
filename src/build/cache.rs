//! The artifact cache: `state_dir/artifacts/<key>/` with the artifact and its `meta.json`,
//! finding the one file a glob names, and each job's `build-latest.log`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::queue::remove_tree;
use super::{Artifact, BuildError, CHUNK, is_inside};

/// What is stored in `artifacts/<key>/meta.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// The artifact, as it was when built.
    artifact: Artifact,
    /// The artifact's path inside `artifacts/<key>/`, so a moved state folder still works.
    file: PathBuf,
    /// The project repo, for people reading the file.
    repo: String,
    /// The folder in the repo.
    dir: String,
    /// The build command.
    command: Option<String>,
    /// The artifact glob.
    artifact_glob: Option<String>,
    /// When it was built (RFC 3339).
    built_at: String,
}

/// What a build produced.
pub(super) enum Found {
    /// The one file the glob matched.
    File(PathBuf),
    /// The project folder itself.
    Tree(PathBuf),
}

/// The one file `glob` matches in `work`.
pub(super) fn find_artifact(work: &Path, glob: &str) -> Result<PathBuf, BuildError> {
    let base = work.to_str().ok_or_else(|| {
        BuildError::Artifact(format!("build folder {} is not UTF-8", work.display()))
    })?;
    let pattern = format!("{}/{glob}", glob::Pattern::escape(base));
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let paths = glob::glob_with(&pattern, opts)
        .map_err(|e| BuildError::Artifact(format!("bad artifact glob {glob:?}: {e}")))?;
    let mut first = Vec::new();
    let mut count = 0usize;
    for p in paths.flatten() {
        if !p.is_file() {
            continue;
        }
        count += 1;
        if first.len() < 5 {
            first.push(p);
        }
    }
    let shown = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| p.strip_prefix(work).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match count {
        0 => Err(BuildError::Artifact(format!(
            "artifact glob {glob:?} matched no file"
        ))),
        1 => {
            let path = first.remove(0);
            // A symlink may not lead out of the build folder.
            let real = path
                .canonicalize()
                .map_err(|e| BuildError::io(format!("cannot resolve {}", path.display()), e))?;
            let root = work
                .canonicalize()
                .map_err(|e| BuildError::io(format!("cannot resolve {}", work.display()), e))?;
            if !real.starts_with(&root) {
                return Err(BuildError::Artifact(format!(
                    "artifact {} leads outside the project folder",
                    shown(&[path])
                )));
            }
            Ok(real)
        }
        n => Err(BuildError::Artifact(format!(
            "artifact glob {glob:?} matched {n} files, it must match exactly one: {}{}",
            shown(&first),
            if n > first.len() { ", ..." } else { "" }
        ))),
    }
}

/// Moves what was built into `artifacts/<key>/`, writes `meta.json` last and publishes the folder
/// with one rename.
pub(super) fn store_artifact(
    state: &Path,
    key: &str,
    commit: &str,
    log: &Path,
    found: Found,
    artifact_glob: Option<String>,
    (repo, dir, command): (String, String, Option<String>),
) -> Result<Artifact, BuildError> {
    let artifacts = state.join("artifacts");
    let tmp = artifacts.join(format!(".tmp-{key}"));
    let dest = artifacts.join(key);
    let io = |what: String| move |e| BuildError::io(what, e);
    remove_tree(&tmp).map_err(io(format!("cannot remove {}", tmp.display())))?;
    std::fs::create_dir_all(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
    let (file, digest) = match found {
        Found::File(path) => {
            let name = path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| "artifact".into());
            let file = if name == Path::new("meta.json") {
                Path::new("file").join(name)
            } else {
                name
            };
            let to = tmp.join(&file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("cannot create {}", parent.display())))?;
            }
            if std::fs::rename(&path, &to).is_err() {
                std::fs::copy(&path, &to).map_err(io(format!(
                    "cannot copy {} to {}",
                    path.display(),
                    to.display()
                )))?;
            }
            let digest = sha256_file(&to).map_err(io(format!("cannot read {}", to.display())))?;
            (file, digest)
        }
        Found::Tree(work) => {
            let file = PathBuf::from("tree");
            let to = tmp.join(&file);
            std::fs::rename(&work, &to).map_err(io(format!(
                "cannot move {} to {}",
                work.display(),
                to.display()
            )))?;
            (file, hex::encode(Sha256::digest(key.as_bytes())))
        }
    };
    let artifact = Artifact {
        key: key.to_string(),
        path: dest.join(&file),
        digest,
        log: log.to_path_buf(),
        commit: commit.to_string(),
    };
    let meta = Meta {
        artifact: artifact.clone(),
        file,
        repo,
        dir,
        command,
        artifact_glob,
        built_at: chrono::Utc::now().to_rfc3339(),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| BuildError::io("cannot encode meta.json", std::io::Error::other(e)))?;
    let meta_path = tmp.join("meta.json");
    std::fs::write(&meta_path, json)
        .map_err(io(format!("cannot write {}", meta_path.display())))?;
    remove_tree(&dest).map_err(io(format!("cannot remove {}", dest.display())))?;
    std::fs::rename(&tmp, &dest).map_err(io(format!(
        "cannot rename {} to {}",
        tmp.display(),
        dest.display()
    )))?;
    Ok(artifact)
}

/// Hex sha256 of a file, streamed.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The cached artifact of `key` under `state`, if its `meta.json` and artifact are there.
pub(super) fn read_cached(state: &Path, key: &str) -> Option<Artifact> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dir = state.join("artifacts").join(key);
    let bytes = std::fs::read(dir.join("meta.json")).ok()?;
    let meta: Meta = serde_json::from_slice(&bytes).ok()?;
    if meta.artifact.key != key || !is_inside(&meta.file.to_string_lossy()) {
        return None;
    }
    let path = dir.join(&meta.file);
    if !path.exists() {
        return None;
    }
    Some(Artifact {
        path,
        log: state.join("builds").join(key).join("build.log"),
        ..meta.artifact
    })
}

/// Points `logs/<job>/build-latest.log` at the build log of `key` (a hard link, else a copy),
/// and records which build that is beside it (`build-latest.json`, [`LatestBuild`]).
pub(super) fn publish_log(state: &Path, job: &str, which: &LatestBuild) -> std::io::Result<()> {
    let key = &which.key;
    let log = state.join("builds").join(key).join("build.log");
    if !log.exists() {
        return Ok(());
    }
    let dir = crate::runlogs::job_dir(&state.join("logs"), job);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".build-latest.{key}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&log, &tmp).is_err() {
        std::fs::copy(&log, &tmp)?;
    }
    let mut which = which.clone();
    which.finished_ms = std::fs::metadata(&log)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok());
    let json_tmp = dir.join(format!(".build-latest.{key}.json.tmp"));
    std::fs::write(
        &json_tmp,
        serde_json::to_vec(&which).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, dir.join("build-latest.log"))?;
    std::fs::rename(&json_tmp, dir.join(LATEST_BUILD_FILE))
}

/// The file beside `build-latest.log` that says which build it shows.
pub const LATEST_BUILD_FILE: &str = "build-latest.json";

/// Which build a job's `build-latest.log` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestBuild {
    /// The build key ([`super::build_key`]).
    pub key: String,
    /// The project's repo, as in the job file.
    pub repo: String,
    /// The project commit built.
    pub commit: String,
    /// The folder inside the repo (empty: its root).
    pub dir: String,
    /// `succeeded`, or `failed: <why, first line>`.
    pub outcome: String,
    /// True when no build ran for the job: the log is the earlier build's of the same key.
    pub cached: bool,
    /// When its log was last written (ms since the epoch).
    pub finished_ms: Option<i64>,
}

impl LatestBuild {
    /// One line naming the build (`build 1a2b3c4d5e6f of <repo> (dir x) at commit 0123abcd…:
    /// succeeded, finished <time>`).
    pub fn describe(&self) -> String {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        let dir = if self.dir.is_empty() {
            String::new()
        } else {
            format!(" (dir {})", self.dir)
        };
        let when = self
            .finished_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| {
                format!(
                    ", log written {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        let cached = if self.cached {
            " (from the build cache: no build ran for the latest deploy)"
        } else {
            ""
        };
        format!(
            "build {} of {}{dir} at commit {}: {}{when}{cached}",
            short(&self.key),
            self.repo,
            short(&self.commit),
            self.outcome
        )
    }

    /// What `dir/build-latest.json` says, when it is there and readable.
    pub fn read(dir: &Path) -> Option<LatestBuild> {
        serde_json::from_slice(&std::fs::read(dir.join(LATEST_BUILD_FILE)).ok()?).ok()
    }
}

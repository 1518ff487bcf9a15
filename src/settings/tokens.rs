//! Scoped API tokens (`api_tokens:`): each a token file and the job-name globs it may act on,
//! beside `api_token_file`, the all-jobs token.

use std::path::{Path, PathBuf};

use super::envs::{JobGlob, read_globs};
use crate::yaml::{Checker, Node, Value};

/// One scoped token.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedToken {
    /// The file holding the token (read on each request, so it can be rotated).
    pub file: PathBuf,
    /// The jobs it may restart: globs over job names (`payments/**`).
    pub folders: Vec<JobGlob>,
}

impl ScopedToken {
    /// True when job `name` is below the token's folders.
    pub fn covers(&self, name: &str) -> bool {
        self.folders.iter().any(|g| g.matches(name))
    }
}

/// The file name of a token file, as audit events name a token (never its value).
pub fn token_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The `api_tokens:` list at `n`; relative files are resolved against `base`.
pub(super) fn read_tokens(c: &mut Checker, n: &Node, base: &Path) -> Vec<ScopedToken> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`api_tokens`: expected a list of `{{file, folders}}`, found {}",
                n.kind_name()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = format!("api_tokens[{i}]");
        let Some(f) = c.mapping(item, &name, &["file", "folders"]) else {
            continue;
        };
        let file = match f.get("file") {
            Some(_) => super::read::path_field(c, &f, "file", &format!("{name}.file"), base),
            None => {
                c.missing(&f, "file", "the file holding the token");
                None
            }
        };
        let folders = match f.get("folders") {
            Some(v) => {
                let globs = read_globs(c, v, &format!("{name}.folders"));
                if matches!(&v.value, Value::Seq(s) if s.is_empty()) {
                    c.error(
                        v,
                        format!(
                            "`{name}.folders`: a scoped token needs at least one glob; the \
                             all-jobs token is `api_token_file`"
                        ),
                    );
                }
                globs
            }
            None => {
                c.missing(
                    &f,
                    "folders",
                    "globs over job names the token may act on, e.g. `[\"payments/**\"]`",
                );
                Vec::new()
            }
        };
        if let Some(file) = file
            && !folders.is_empty()
        {
            out.push(ScopedToken { file, folders });
        }
    }
    out
}

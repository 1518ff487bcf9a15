//! Reading commits leniently, from their raw text: libgit2 refuses a whole commit when one
//! header does not parse (an author without an e-mail, which git itself accepts), while its
//! tree and parents are all jobkeeper needs and its author is metadata. Also the commits a
//! sync brings (tip back to the applied commit) and the trailers their messages carry.

use std::collections::{HashSet, VecDeque};

use git2::{ObjectType, Oid};

use super::RepoError;
use super::tree::GitTree;

/// The largest commit object read (its message included); a larger one is an error.
pub const MAX_COMMIT_BYTES: usize = 1024 * 1024;

/// The most commits [`GitTree::commits_since`] reads.
pub const MAX_WALK: usize = 1000;

/// One commit read from its raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCommit {
    /// Its id.
    pub id: Oid,
    /// Its root tree.
    pub tree: Oid,
    /// Its parents, in order.
    pub parents: Vec<Oid>,
    /// `Name <email>` when the author header parses; else the header's text, or `unknown`.
    pub author: String,
    /// Committer time, seconds since the Unix epoch (0 when it does not parse).
    pub time: i64,
    /// The message (lossy UTF-8).
    pub message: String,
    /// What libgit2 says is wrong with the commit, when it cannot parse it.
    pub problem: Option<String>,
}

impl RawCommit {
    /// The first non-empty line of the message.
    pub fn subject(&self) -> String {
        self.message
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string()
    }

    /// The value of trailer `key` (compared case-insensitively) in the message: a line
    /// `Key: value` with a non-empty value, as `git commit --trailer` writes it.
    pub fn trailer(&self, key: &str) -> Option<String> {
        self.message.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim();
            (k.trim().eq_ignore_ascii_case(key) && !v.is_empty()).then(|| v.to_string())
        })
    }
}

/// `Name <email>` of a signature header's text (`Name <email> 1700000000 +0000`), when it has
/// the shape git writes; else the text itself (control characters dropped), or `unknown`.
pub fn lenient_person(text: &str) -> String {
    if let (Some(open), Some(close)) = (text.find('<'), text.rfind('>'))
        && open < close
    {
        return text[..=close].trim().to_string();
    }
    let shown: String = text.chars().filter(|c| !c.is_control()).collect();
    match shown.trim() {
        "" => "unknown".to_string(),
        s => s.to_string(),
    }
}

/// The seconds of a signature header's text (`... 1700000000 +0000`), 0 when not there.
fn seconds_of(text: &str) -> i64 {
    let mut words = text.split_whitespace().rev();
    let _zone = words.next();
    words.next().and_then(|w| w.parse().ok()).unwrap_or(0)
}

/// Parses the raw text of commit `id` (its headers, a blank line, the message).
pub fn parse_raw(id: Oid, data: &[u8]) -> Result<RawCommit, String> {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((data, &[][..]), |i| (&data[..i], &data[i + 2..]));
    let (headers, body) = split;
    let (mut tree, mut parents, mut author, mut time) = (None, Vec::new(), None, 0);
    for line in headers.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if let Some(hex) = line.strip_prefix("tree ") {
            tree = Oid::from_str(hex.trim()).ok();
        } else if let Some(hex) = line.strip_prefix("parent ") {
            parents.push(Oid::from_str(hex.trim()).map_err(|_| format!("bad parent `{hex}`"))?);
        } else if let Some(text) = line.strip_prefix("author ") {
            author.get_or_insert_with(|| lenient_person(text));
        } else if let Some(text) = line.strip_prefix("committer ") {
            time = seconds_of(text);
        }
    }
    let tree = tree.ok_or_else(|| "no `tree` header".to_string())?;
    Ok(RawCommit {
        id,
        tree,
        parents,
        author: author.unwrap_or_else(|| "unknown".to_string()),
        time,
        message: String::from_utf8_lossy(body).into_owned(),
        problem: None,
    })
}

impl GitTree {
    /// Commit `id` read from its raw text (see the module docs), with what libgit2 cannot
    /// parse in it. Its size is checked before it is read.
    pub fn read_commit(&self, id: Oid) -> Result<RawCommit, RepoError> {
        let odb = self.repository().odb().map_err(RepoError::git(format!(
            "cannot open the objects of {}",
            self.label()
        )))?;
        let missing = || RepoError::NotFound {
            url: self.label().to_string(),
            what: format!("commit {id}"),
        };
        let (size, kind) = odb.read_header(id).map_err(|_| missing())?;
        if kind != ObjectType::Commit {
            return Err(missing());
        }
        if size > MAX_COMMIT_BYTES {
            return Err(RepoError::TooLarge {
                what: format!("commit {id}"),
                size,
                limit: MAX_COMMIT_BYTES,
            });
        }
        let object = odb
            .read(id)
            .map_err(RepoError::git(format!("cannot read commit {id}")))?;
        let mut raw = parse_raw(id, object.data()).map_err(|why| RepoError::Git {
            context: format!("commit {id} cannot be read"),
            source: git2::Error::from_str(&why),
        })?;
        raw.problem = self
            .repository()
            .find_commit(id)
            .err()
            .map(|e| e.message().to_string());
        Ok(raw)
    }

    /// The root tree of commit `id`; read from its raw text when libgit2 cannot parse it.
    pub fn commit_tree(&self, id: Oid) -> Result<Oid, RepoError> {
        match self.repository().find_commit(id) {
            Ok(c) => Ok(c.tree_id()),
            Err(_) => self.read_commit(id).map(|c| c.tree),
        }
    }

    /// True when `id` is a commit in this repository (parsable or not).
    pub fn has_commit(&self, id: Oid) -> bool {
        self.repository()
            .odb()
            .and_then(|odb| odb.read_header(id))
            .is_ok_and(|(_, kind)| kind == ObjectType::Commit)
    }

    /// The commits reachable from `tip` and not from `applied`, tip first, at most
    /// [`MAX_WALK`]; with no applied commit, the tip alone. Read leniently (see
    /// [`GitTree::read_commit`]); a parent that is missing (a shallow history) ends that path.
    pub fn commits_since(
        &self,
        applied: Option<Oid>,
        tip: Oid,
    ) -> Result<Vec<RawCommit>, RepoError> {
        let Some(applied) = applied else {
            return Ok(vec![self.read_commit(tip)?]);
        };
        let (walked, reached) = self.walk(tip, Some(applied), MAX_WALK)?;
        if reached {
            return Ok(walked);
        }
        // `applied` is not an ancestor of the tip (a force push): leave out what it reaches.
        let (old, _) = self.walk(applied, None, MAX_WALK)?;
        let old: HashSet<Oid> = old.iter().map(|c| c.id).collect();
        Ok(walked
            .into_iter()
            .filter(|c| !old.contains(&c.id))
            .collect())
    }

    /// Breadth-first from `from`, not past `stop`; whether `stop` was met.
    fn walk(
        &self,
        from: Oid,
        stop: Option<Oid>,
        cap: usize,
    ) -> Result<(Vec<RawCommit>, bool), RepoError> {
        let (mut out, mut seen, mut queue) = (Vec::new(), HashSet::new(), VecDeque::from([from]));
        let mut reached = false;
        while let Some(id) = queue.pop_front() {
            if Some(id) == stop {
                reached = true;
                continue;
            }
            if out.len() >= cap || !seen.insert(id) {
                continue;
            }
            let commit = match self.read_commit(id) {
                Ok(c) => c,
                Err(RepoError::NotFound { .. }) if id != from => continue,
                Err(e) => return Err(e),
            };
            queue.extend(commit.parents.iter().copied());
            out.push(commit);
        }
        Ok((out, reached))
    }
}

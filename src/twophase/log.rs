//! The decision log: a two-phase commit's decision to commit, durable on local disk before
//! the first COMMIT PREPARED, so a pooler that dies between two shards' COMMIT PREPARED
//! commits the rest when it starts again (and never rolls back what a shard committed).
//!
//! One line per event, appended: `commit <gid>` (written and fsync'd before any shard is
//! told to commit) and `done <gid>` (every shard committed; not fsync'd: a lost `done`
//! only makes the resolver look for the gid again and find nothing). A line cut short by
//! a crash has no newline and is ignored: its fsync never returned, so no shard was told
//! to commit that transaction, and rolling it back is right. At open the file is
//! rewritten with only the decisions still pending (written to a temporary file, fsync'd,
//! renamed over the log, the directory fsync'd).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The open log.
pub struct DecisionLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl DecisionLog {
    /// Opens (creating) the log at `path`: the gids decided commit and not yet done.
    pub fn open(path: &Path) -> io::Result<(DecisionLog, BTreeSet<String>)> {
        let mut text = String::new();
        match File::open(path) {
            Ok(mut file) => {
                file.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let pending = pending(&text);
        // Compacted: only what is still pending.
        let fresh = path.with_extension("compacting");
        {
            let mut file = File::create(&fresh)?;
            for gid in &pending {
                writeln!(file, "commit {gid}")?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&fresh, path)?;
        sync_dir(path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let log = DecisionLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        };
        Ok((log, pending))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the decision to commit `gid`, on disk when this returns.
    pub fn commit(&self, gid: &str) -> io::Result<()> {
        self.append(&format!("commit {gid}\n"), true)
    }

    /// Records that every shard committed `gid`.
    pub fn done(&self, gid: &str) -> io::Result<()> {
        self.append(&format!("done {gid}\n"), false)
    }

    fn append(&self, line: &str, durable: bool) -> io::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("the decision log's lock is poisoned"))?;
        file.write_all(line.as_bytes())?;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The gids with a complete `commit` line and no `done` line after it.
fn pending(text: &str) -> BTreeSet<String> {
    let mut pending = BTreeSet::new();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for line in complete.lines() {
        match line.split_once(' ') {
            Some(("commit", gid)) => {
                pending.insert(gid.to_string());
            }
            Some(("done", gid)) => {
                pending.remove(gid);
            }
            _ => {}
        }
    }
    pending
}

/// fsyncs the directory holding `path`, so a rename or a new file survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_decisions_survive_a_reopen_and_a_torn_last_line_is_ignored() {
        assert_eq!(
            pending("commit a\ncommit b\ndone a\ncommit c"),
            BTreeSet::from(["b".to_string()])
        );
        let dir = std::env::temp_dir().join(format!("pgcat-2pc-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("decisions.log");
        let _ = std::fs::remove_file(&path);
        let (log, pending) = DecisionLog::open(&path).expect("open");
        assert!(pending.is_empty());
        log.commit("g1").expect("commit");
        log.commit("g2").expect("commit");
        log.done("g1").expect("done");
        drop(log);
        let (_, pending) = DecisionLog::open(&path).expect("reopen");
        assert_eq!(pending, BTreeSet::from(["g2".to_string()]));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "commit g2\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
